"""prune_cli.infer's fast paths (issue 26): int32 CSR built without dense copies, the fused
one-step LSTM, BatchNorm folded into pointwise CSR products. Each equals the plain dense
arithmetic it replaces, up to float rounding."""
import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from prune_cli.infer.kernels import Choice, as_int32, csr_linear, hstack, take_rows, to_csr
from prune_cli.infer.lstm import OneStep, SparseLSTM, ifog_rows
from prune_cli.infer.matrix import Matrix, dense_linear, fuse_columns
from prune_cli.infer.modules import SparsePointwiseConv, batchnorm_after, fold_batchnorm, sparsify
from prune_cli.pruning import keep_count, topk_mask

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def masked(shape, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    return w * topk_mask(w, keep_count(w.numel(), sparsity))


def close(a, b, rel=1e-5):
    scale = max(float(b.abs().max()), 1e-30)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max()) / scale


# ------------------------------------------------------------------------------- int32 CSR
def test_to_csr_and_as_int32_give_int32_indices_and_the_same_matrix():
    w = masked((7, 5), 0.6)
    c = to_csr(w)
    assert c.crow_indices().dtype == c.col_indices().dtype == torch.int32
    assert torch.equal(c.to_dense(), w)
    wide = w.to_sparse_csr()  # torch's default: int64
    assert wide.crow_indices().dtype == torch.int64
    narrow = as_int32(wide)
    assert narrow.col_indices().dtype == torch.int32 and torch.equal(narrow.to_dense(), w)
    assert as_int32(narrow) is narrow


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 8), widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]), seed=st.integers(0, 50))
def test_hstack_and_take_rows_equal_their_dense_versions(rows, widths, sparsity, seed):
    mats = [masked((rows, w), sparsity, seed + i) for i, w in enumerate(widths)]
    joined = hstack([to_csr(m) for m in mats])
    assert joined.crow_indices().dtype == torch.int32
    assert torch.equal(joined.to_dense(), torch.cat(mats, dim=1))
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(take_rows(joined, order).to_dense(), torch.cat(mats, dim=1)[order])


@pytest.mark.parametrize("rows", [1, 4])
def test_products_add_a_per_row_addend(rows):
    w, x, add = masked((6, 5), 0.5), torch.randn(rows, 5), torch.randn(rows, 6)
    want = x @ w.t() + add
    close(csr_linear(x, to_csr(w), add), want)
    close(dense_linear(x, w, add), want)
    close(csr_linear(x, to_csr(w), add[0]), x @ w.t() + add[0])


def test_fuse_columns_only_when_the_choices_agree():
    a, b = masked((4, 3), 0.5, 1), masked((4, 2), 0.5, 2)

    def matrix(w, kernel):
        return Matrix("m", w, to_csr(w), Choice("m", 0.5, kernel))

    rows = torch.tensor([3, 0, 2, 1])
    fused, sparse = fuse_columns([matrix(a, "sparse"), matrix(b, "sparse")], rows)
    assert sparse and fused.layout == torch.sparse_csr and torch.equal(fused.to_dense(), torch.cat([a, b], 1)[rows])
    fused, sparse = fuse_columns([matrix(a, "dense"), matrix(b, "dense")])
    assert not sparse and torch.equal(fused, torch.cat([a, b], 1))
    assert fuse_columns([matrix(a, "sparse"), matrix(b, "dense")]) is None
    assert fuse_columns([matrix(a, "auto"), matrix(b, "dense")]) is None  # not decided yet


# ------------------------------------------------------------------------------ one step
def sparse_lstm(lstm, sparsity, mode="sparse", skip=()):
    """SparseLSTM over ``lstm`` masked to ``sparsity``; parameters in ``skip`` stay stored dense."""
    csr = {}
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("weight_") and name not in skip:
                p.mul_(topk_mask(p, keep_count(p.numel(), sparsity)))
                csr[name] = to_csr(p)
    return SparseLSTM("lstm", lstm, csr, mode)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("skip", [(), ("weight_hh_l0",)])
def test_one_step_path_equals_nn_lstm_over_many_steps(layers, batch, batch_first, skip):
    """Token by token with the state carried (the streaming case): after the first call decides
    the kernels, every later step runs OneStep; a layer whose matrices chose differently (one
    stored dense) runs two products."""
    torch.manual_seed(layers * 10 + batch)
    lstm = nn.LSTM(6, 5, num_layers=layers, batch_first=batch_first).eval()
    sparse = sparse_lstm(lstm, 0.75, skip=skip)
    state_dense = state_sparse = None
    with torch.no_grad():
        for t in range(6):
            x = torch.randn(batch, 1, 6) if batch_first else torch.randn(1, batch, 6)
            o1, state_dense = lstm(x, state_dense)
            o2, state_sparse = sparse(x, state_sparse)
            close(o2, o1)
            close(state_sparse[0], state_dense[0])
            close(state_sparse[1], state_dense[1])
            if t == 0:
                assert sparse._step is not None  # decided on one step: the step path is built at once
    assert isinstance(sparse._step, OneStep)
    kinds = [len(products) for _, products in sparse._step.plan]
    assert kinds == ([2] + [1] * (layers - 1) if skip else [1] * layers)


def test_one_step_returns_new_tensors_and_leaves_the_callers_state_alone():
    torch.manual_seed(7)
    lstm = nn.LSTM(4, 3, num_layers=2, batch_first=True).eval()
    sparse = sparse_lstm(lstm, 0.5)
    hx = (torch.randn(2, 1, 3), torch.randn(2, 1, 3))
    kept = tuple(t.clone() for t in hx)
    with torch.no_grad():
        sparse(torch.randn(1, 1, 4), hx)  # decides; the next calls run the step path
        out1, (h1, c1) = sparse(torch.randn(1, 1, 4), hx)
        saved = out1.clone(), h1.clone(), c1.clone()
        out2, (h2, c2) = sparse(torch.randn(1, 1, 4), (h1, c1))
    assert all(torch.equal(a, b) for a, b in zip(hx, kept))
    assert torch.equal(out1, saved[0]) and torch.equal(h1, saved[1]) and torch.equal(c1, saved[2])
    assert not torch.equal(h2, h1)
    assert h1.is_contiguous() and h1.shape == (2, 1, 3) and out1.shape == (1, 1, 3)
    storages = {t.untyped_storage().data_ptr() for t in (out1, h1, c1, out2, h2, c2)}
    assert len(storages) == 6  # nothing shares memory with another output or with the step's buffers


def test_one_step_without_state_starts_from_zeros_and_sequences_still_work():
    torch.manual_seed(8)
    lstm = nn.LSTM(4, 3, num_layers=2).eval()
    sparse = sparse_lstm(lstm, 0.5)
    with torch.no_grad():
        for x in (torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(5, 2, 4), torch.randn(1, 2, 4)):
            (o1, (h1, c1)), (o2, (h2, c2)) = lstm(x), sparse(x)
            close(o2, o1)
            close(h2, h1)
            close(c2, c1)


def test_ifog_rows_puts_the_sigmoid_gates_first():
    assert ifog_rows(2).tolist() == [0, 1, 2, 3, 6, 7, 4, 5]


# ---------------------------------------------------------------------- BatchNorm folding
def bn_with_statistics(channels, seed=0, affine=True):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=g))
            bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_fold_batchnorm_equals_bn_after_conv(affine, conv_bias):
    conv = nn.Conv2d(5, 4, 1, bias=conv_bias).eval()
    with torch.no_grad():
        conv.weight.mul_(topk_mask(conv.weight, keep_count(conv.weight.numel(), 0.5)))
    bn = bn_with_statistics(4, affine=affine)
    csr = to_csr(conv.weight)
    folded, bias = fold_batchnorm(csr, None if conv.bias is None else conv.bias.detach(), bn)
    assert torch.equal(folded.col_indices(), csr.col_indices())  # the same nonzeros, rescaled
    x = torch.randn(2, 5, 3, 4)
    with torch.no_grad():
        want = bn(conv(x))
        got = torch.stack([(folded @ x[i].reshape(5, 12) + bias[:, None]).view(4, 3, 4) for i in range(2)])
    close(got, want)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
def test_sparse_pointwise_conv_with_batchnorm(fmt, mode):
    conv = nn.Conv2d(6, 5, 1, bias=False).eval()
    with torch.no_grad():
        conv.weight.mul_(topk_mask(conv.weight, keep_count(conv.weight.numel(), 0.7)))
    bn = bn_with_statistics(5, 3)
    layer = SparsePointwiseConv("pw", conv, to_csr(conv.weight), mode, budget_s=0, bn=bn)
    x = torch.randn(3, 6, 4, 5).contiguous(memory_format=fmt)
    with torch.no_grad():
        y = layer(x)
        close(y, bn(conv(x)))
    assert y.is_contiguous() or layer.matrix.sparse is False  # CSR writes NCHW
    reason = layer.choices[0].decision.reason
    assert ("BatchNorm2d folded in" in reason) == (layer.matrix.sparse is True)


def test_batchnorm_after_pairs_each_pointwise_conv_with_its_batchnorm():
    from prune_cli.models.mobilenet import MobileNetV1

    model = MobileNetV1(0.25, 10, small_input=True).eval()
    pairs = batchnorm_after(model, [f"blocks.{i}.pw" for i in range(13)])
    assert pairs == {f"blocks.{i}.pw": f"blocks.{i}.pw_bn" for i in range(13)}

    class Branches(nn.Module):  # the conv's output also feeds an addition: not foldable
        def __init__(self):
            super().__init__()
            self.pw, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.pw(x)
            return self.bn(y) + y

    assert batchnorm_after(Branches().eval(), ["pw"]) == {}
    assert batchnorm_after(Branches().train(), ["pw"]) == {}

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.pw(x))

    assert batchnorm_after(Untraceable().eval(), ["pw"]) == {}


def test_sparsify_folds_the_batchnorm_and_keeps_the_output():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
            self.pw, self.pw_bn, self.relu = nn.Conv2d(4, 6, 1, bias=False), bn_with_statistics(6, 4), nn.ReLU()

        def forward(self, x):
            return self.relu(self.pw_bn(self.pw(self.dw(x))))

    torch.manual_seed(9)
    model = Block().eval()
    with torch.no_grad():
        model.pw.weight.mul_(topk_mask(model.pw.weight, keep_count(model.pw.weight.numel(), 0.6)))
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
    sparsify(model, {"pw.weight": to_csr(model.pw.weight)}, "sparse")
    assert isinstance(model.pw, SparsePointwiseConv) and isinstance(model.pw_bn, nn.Identity)
    assert model.dw.weight.is_contiguous()  # the remaining convolutions run NCHW
    with torch.no_grad():
        close(model(x), want)
