"""prune_cli.infer: CSR kernels and sparse modules give the dense model's outputs (tiny models,
Pruner masks at several sparsities), and the dense/CSR choice per layer does what it says."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prune_cli.infer.kernels import Choice, csr_linear, csr_rows, sparsity_of, time_pair, to_csr
from prune_cli.infer.modules import (SparseEmbedding, SparseLinear, SparseLSTM, SparsePointwiseConv,
                                     decisions, sparsify)
from prune_cli.pruning import ConstantSchedule, Pruner, keep_count, topk_mask

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
SPARSITIES = (0.0, 0.5, 0.9, 0.975)


def masked(shape, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    return w * topk_mask(w, keep_count(w.numel(), sparsity))


def prune(model, patterns, sparsity):
    """Mask the model with the Pruner (its real masks) and return the CSR views of the pruned weights."""
    pruner = Pruner(model, ConstantSchedule(sparsity), patterns)
    with torch.no_grad():
        pruner.update_masks({n: sparsity for n in pruner.names})
        pruner.apply_masks()
    named = dict(model.named_parameters())
    return {n: to_csr(named[n]) for n in pruner.names}


def close(a, b, rel=1e-5):
    a, b = a.detach(), b.detach()  # outputs of modules with parameters: compared as plain values
    scale = max(float(a.abs().max()), 1e-30)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rel * scale + 1e-30, float((a - b).abs().max())


# ---------------------------------------------------------------------------------- kernels
@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), out=st.integers(1, 12), inp=st.integers(1, 12),
       sparsity=st.sampled_from(SPARSITIES + (1.0,)), bias=st.booleans(), seed=st.integers(0, 100))
def test_csr_linear_equals_linear(rows, out, inp, sparsity, bias, seed):
    w = masked((out, inp), sparsity, seed)
    b = torch.randn(out) if bias else None
    x = torch.randn(rows, inp)
    y = csr_linear(x, to_csr(w), b)
    assert y.shape == (rows, out)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-6)


def test_csr_linear_keeps_leading_dims():
    w = masked((6, 4), 0.5)
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(csr_linear(x, to_csr(w)), F.linear(x, w))


@settings(max_examples=25, deadline=None)
@given(vocab=st.integers(1, 20), dim=st.integers(1, 9), n=st.integers(1, 12),
       sparsity=st.sampled_from(SPARSITIES + (1.0,)), seed=st.integers(0, 100))
def test_csr_rows_equals_lookup(vocab, dim, n, sparsity, seed):
    table = masked((vocab, dim), sparsity, seed)
    ids = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(csr_rows(to_csr(table), ids), table[ids])
    assert torch.equal(csr_rows(to_csr(table), ids[:1].view(1, 1)), table[ids[:1]].view(1, 1, dim))


def test_csr_rows_batch_shape_and_int32_indices():
    table = masked((7, 5), 0.6)
    c = to_csr(table)
    c32 = torch.sparse_csr_tensor(c.crow_indices().int(), c.col_indices().int(), c.values(), c.shape,
                                  check_invariants=True)
    ids = torch.tensor([[0, 6, 6], [3, 1, 0]])
    assert torch.equal(csr_rows(c32, ids), table[ids])


def test_sparsity_of_and_to_csr_views_2d():
    w = masked((4, 3, 1, 1), 0.5)
    c = to_csr(w)
    assert c.shape == (4, 3) and c.layout == torch.sparse_csr
    assert sparsity_of(c) == pytest.approx(0.5)


def test_time_pair_alternates_and_returns_medians():
    calls = []
    a, b = time_pair(lambda: calls.append("a"), lambda: calls.append("b"), min_pairs=4, max_pairs=4, budget_s=0)
    assert calls == ["a", "b"] + ["a", "b", "b", "a"] * 2
    assert a >= 0 and b >= 0


# ---------------------------------------------------------------------------------- choices
def test_choice_crossover_and_forced_modes():
    assert Choice("x", 0.95, "auto", crossover=0.9).decision.kernel == "sparse"
    below = Choice("x", 0.5, "auto", crossover=0.9).decision
    assert below.kernel == "dense" and below.line() == "layer x: dense (sparsity 50% below crossover 90%)"
    assert Choice("x", 0.5, "sparse").decision.kernel == "sparse"
    assert Choice("x", 0.99, "dense").decision.kernel == "dense"
    with pytest.raises(ValueError):
        Choice("x", 0.5, "fast")


def test_choice_auto_measures_once_and_keeps_the_faster():
    c = Choice("slow_csr", 0.9, "auto", budget_s=0)
    fast, slow = (lambda: None), (lambda: sum(range(20000)))
    assert c.decide(fast, slow, columns=3) == "dense"
    d = c.decision
    assert d.columns == 3 and d.speedup < 1 and "below the crossover" in d.reason
    assert c.decide(slow, fast, columns=7) == "dense" and c.decision is d  # decided once
    c2 = Choice("fast_csr", 0.9, "auto", budget_s=0)
    assert c2.decide(slow, fast, columns=1) == "sparse" and c2.decision.speedup > 1


# ---------------------------------------------------------------------------------- modules
@pytest.mark.parametrize("mode", ["sparse", "auto", "dense"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.975])
def test_sparse_linear_embedding_conv(mode, sparsity):
    torch.manual_seed(0)
    lin, emb = nn.Linear(12, 9), nn.Embedding(30, 8)
    conv = nn.Conv2d(8, 6, 1, bias=True)
    for m, name in ((lin, "weight"), (emb, "weight"), (conv, "weight")):
        with torch.no_grad():
            getattr(m, name).mul_(topk_mask(getattr(m, name), keep_count(getattr(m, name).numel(), sparsity)))
    x = torch.randn(5, 12)
    close(SparseLinear("l", lin, to_csr(lin.weight), mode, budget_s=0)(x), lin(x))
    close(SparseLinear("l", lin, to_csr(lin.weight), mode, budget_s=0)(x[:1]), lin(x[:1]))
    ids = torch.randint(0, 30, (3, 4))
    assert torch.equal(SparseEmbedding("e", emb, to_csr(emb.weight), mode, budget_s=0)(ids), emb(ids))
    for fmt in (torch.contiguous_format, torch.channels_last):
        img = torch.randn(2, 8, 3, 5).contiguous(memory_format=fmt)
        close(SparsePointwiseConv("c", conv, to_csr(conv.weight), mode, budget_s=0)(img), conv(img))
        close(SparsePointwiseConv("c", conv, to_csr(conv.weight), mode, budget_s=0)(img[:1, :, :1, :1]), conv(img[:1, :, :1, :1]))


def lstm_pairs(lstm, sparsity, mode="sparse"):
    csr = prune(lstm, ["weight_*"], sparsity)
    return SparseLSTM("lstm", lstm, csr, mode)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_sparse_lstm_equals_nn_lstm(batch_first, bidirectional, sparsity):
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=batch_first, bidirectional=bidirectional).eval()
    sparse = lstm_pairs(lstm, sparsity)
    d = 2 if bidirectional else 1
    x = torch.randn(3, 7, 6) if batch_first else torch.randn(7, 3, 6)
    hx = (torch.randn(2 * d, 3, 5), torch.randn(2 * d, 3, 5))
    with torch.no_grad():
        for args in ((x,), (x, hx), (x[:1] if batch_first else x[:, :1], None)):
            if len(args) == 2 and args[1] is None:
                args = args[:1]
            (o1, (h1, c1)), (o2, (h2, c2)) = lstm(*args), sparse(*args)
            close(o2, o1)
            close(h2, h1)
            close(c2, c1)
    assert all(d.kernel == "sparse" for d in decisions(sparse.choices))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sparse_lstm_packed_sequences(bidirectional):
    torch.manual_seed(2)
    lstm = nn.LSTM(4, 3, num_layers=2, batch_first=True, bidirectional=bidirectional).eval()
    sparse = lstm_pairs(lstm, 0.75)
    x, lengths = torch.randn(4, 6, 4), torch.tensor([3, 6, 1, 5])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    d = 2 if bidirectional else 1
    hx = (torch.randn(2 * d, 4, 3), torch.randn(2 * d, 4, 3))
    hx_copy = tuple(t.clone() for t in hx)
    with torch.no_grad():
        (o1, (h1, c1)), (o2, (h2, c2)) = lstm(packed, hx), sparse(packed, hx)
    assert torch.equal(o2.batch_sizes, o1.batch_sizes)
    close(pad_packed_sequence(o2, batch_first=True)[0], pad_packed_sequence(o1, batch_first=True)[0])
    close(h2, h1)
    close(c2, c1)
    assert all(torch.equal(a, b) for a, b in zip(hx, hx_copy))  # the caller's state is not written


def test_sparse_lstm_all_dense_hands_back_to_nn_lstm(monkeypatch):
    lstm = nn.LSTM(4, 3).eval()
    sparse = lstm_pairs(lstm, 0.5, mode="dense")
    called = []
    monkeypatch.setattr(sparse.lstm, "forward", lambda *a, **k: called.append(1) or nn.LSTM.forward(lstm, *a, **k))
    sparse(torch.randn(2, 1, 4))
    assert called == [1]


def test_sparsify_names_every_layer_and_leaves_others_dense():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 1), nn.Flatten(), nn.Linear(5 * 4, 2))
    csr = prune(model, ["0.weight", "1.weight", "3.weight"], 0.5)
    choices = sparsify(model, csr, mode="sparse")
    lines = {d.layer: d for d in decisions(choices)}
    assert isinstance(model[1], SparsePointwiseConv) and isinstance(model[3], SparseLinear)
    assert isinstance(model[0], nn.Conv2d)  # a 3x3 convolution has no CSR kernel here
    assert lines["0.weight"].kernel == "dense" and "no CSR kernel" in lines["0.weight"].reason
    assert lines["1"].kernel == "sparse" and lines["3"].kernel == "sparse"


def test_undecided_layers_are_reported_as_never_called():
    lin = nn.Linear(3, 2)
    s = SparseLinear("fc", lin, to_csr(lin.weight), "auto")
    assert [d.kernel for d in decisions(s.choices)] == ["undecided"]


# ---------------------------------------------------------------------------------- families
@pytest.mark.parametrize("mode", ["sparse", "auto"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.975])
def test_ptb_lstm_outputs_equal_dense(mode, sparsity):
    from prune_cli.models.ptb_lstm import PTBLSTM

    torch.manual_seed(4)
    model = PTBLSTM(40, 16, 2).eval()
    csr = prune(model, ["embedding.weight", "lstm.weight_*", "decoder.weight"], sparsity)
    sparse = copy.deepcopy(model)
    choices = sparsify(sparse, csr, mode, budget_s=0)
    assert isinstance(sparse.embedding, SparseEmbedding) and isinstance(sparse.lstm, SparseLSTM)
    x = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        l1, h1 = model(x)
        l2, h2 = sparse(x)
        close(l2, l1)
        l1, _ = model(x[:1, :1], tuple(t[:, :1] for t in h1))  # one token, state carried
        l2, _ = sparse(x[:1, :1], tuple(t[:, :1] for t in h2))
        close(l2, l1)
    assert len(choices) == 6 and all(d.kernel in ("sparse", "dense") for d in decisions(choices))


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.975])
def test_mobilenet_outputs_equal_dense(sparsity):
    from prune_cli.models.mobilenet import PRUNE_PATTERNS, MobileNetV1

    torch.manual_seed(5)
    model = MobileNetV1(0.25, 10, small_input=True).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the layout of the CSR output matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    csr = prune(model, PRUNE_PATTERNS, sparsity)
    sparse = copy.deepcopy(model)
    choices = sparsify(sparse, csr, "sparse")
    assert sum(isinstance(m, SparsePointwiseConv) for m in sparse.modules()) == 13
    assert isinstance(sparse.fc, SparseLinear) and len(choices) == 14
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        close(sparse(x), model(x), rel=1e-4)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_gnmt_outputs_and_greedy_translations_equal_dense(sparsity):
    gnmt = pytest.importorskip("prune_cli.models.gnmt")
    from prune_cli.decode import translate

    torch.manual_seed(6)
    model = gnmt.GNMT(30, 8, layers=3).eval()
    patterns = ["src_embedding.weight", "tgt_embedding.weight", "enc_*.weight_*", "dec_*.weight_*",
                "softmax.weight"]
    csr = prune(model, patterns, sparsity)
    sparse = copy.deepcopy(model)
    choices = sparsify(sparse, csr, "sparse")
    layers = {d.layer for d in decisions(choices)}
    assert {"dec_cell.weight_ih[:, :8]", "dec_cell.weight_ih[:, 8:]", "dec_cell.weight_hh", "softmax",
            "enc_bi.weight_hh_l0_reverse", "src_embedding"} <= layers
    assert all(d.kernel == "sparse" for d in decisions(choices))
    src, src_len = torch.randint(3, 30, (4, 6)), torch.tensor([6, 3, 5, 1])
    tgt = torch.randint(3, 30, (4, 5))
    with torch.no_grad():
        close(sparse(src, src_len, tgt), model(src, src_len, tgt))
    kw = dict(beam_size=1, alpha=1.0, max_len=8, bos_id=1, eos_id=2)
    assert translate(sparse, src, src_len, **kw) == translate(model, src, src_len, **kw)


def test_timed_sums_model_and_decoder_calls_per_batch():
    from prune_cli.infer.engine import Timed

    class Seq2seq:
        def __call__(self, x):
            return x

        def encode(self, x):
            return x

        def decode_step(self, x):
            return x

    timed = Timed(Seq2seq())
    seen = []
    for batch in timed.batches([1, 2, 3]):
        timed(batch)
        if batch != 2:
            timed.encode(batch)
            timed.decode_step(batch)
        seen.append(batch)
    assert seen == [1, 2, 3] and len(timed.times) == len(timed.cpu) == 3
    assert all(t >= 0 for t in timed.times)
