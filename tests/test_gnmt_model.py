"""GNMT: exact parameter counts, the prune set, init, and the forward against an independent
step-by-step reference of the architecture (padding, init states, residuals, attention)."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

import prune_cli.models as models
from prune_cli.models.gnmt import GNMT, param_count, prunable_count
from prune_cli.pruning import OneShotSchedule, Pruner, keep_count

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "gnmt.yaml"
PRUNE = list(OmegaConf.load(CONF).model.prune)
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is 10-20x faster than two on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(vocab=23, units=8, layers=2, dropout=0.0, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return GNMT(vocab, units, layers, dropout=dropout).to(dtype).eval()


def batch(lengths, vocab, seed=1):
    """Padded src [B, S] of ids >= 3 and its lengths."""
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, vocab, (n,), generator=g)
    return src, torch.tensor(lengths)


# -- an independent reference: one sentence, one token at a time, straight from the definition
def _cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (w_ih @ x + b_ih + w_hh @ h + b_hh).chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _run(xs, P, prefix, suffix=""):
    k = P[f"{prefix}.weight_hh_l0{suffix}"].size(1)
    h = c = xs[0].new_zeros(k)
    outs = []
    for x in xs:
        h, c = _cell(x, h, c, *(P[f"{prefix}.{n}_l0{suffix}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        outs.append(h)
    return outs, (h, c)


def reference_logits(model, src, tgt_in):
    """Logits [T, V] for one unpadded sentence (model in eval mode)."""
    P = dict(model.named_parameters())
    emb = [P["src_embedding.weight"][w] for w in src]
    fw, _ = _run(emb, P, "enc_bi")
    bw, bw_state = _run(emb[::-1], P, "enc_bi", "_reverse")
    xs = [torch.cat([f, b]) for f, b in zip(fw, bw[::-1])]
    init = [bw_state]
    for i in range(model.layers - 1):
        ys, state = _run(xs, P, f"enc_uni.{i}")
        xs = [y + x for y, x in zip(ys, xs)] if i >= 1 else ys  # residual on the last layers-2
        init.append(state)
    memory = torch.stack(xs)  # [S, k]
    keys = memory @ P["attention.memory.weight"].T + P["attention.b"]
    v = P["attention.g"] * P["attention.v"] / P["attention.v"].norm()
    (h1, c1), upper = init[0], list(init[1:])
    context = memory.new_zeros(model.units)
    cell = [P[f"dec_cell.{n}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    out = []
    for y in tgt_in:
        h1, c1 = _cell(torch.cat([P["tgt_embedding.weight"][y], context]), h1, c1, *cell)
        align = torch.softmax(torch.tanh(keys + P["attention.query.weight"] @ h1) @ v, dim=0)
        context = align @ memory
        below = h1
        for j in range(model.layers - 1):
            names = (f"dec_layers.{j}.{n}_l0" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            h, c = _cell(torch.cat([below, context]), *upper[j], *(P[n] for n in names))
            upper[j] = (h, c)
            below = h + below if j >= 1 else h
        out.append(P["softmax.weight"] @ below)
    return torch.stack(out)


# -- counts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab,units,layers", [(7, 3, 2), (23, 8, 2), (50, 16, 4), (37, 5, 3), (11, 4, 6)])
def test_param_count_exact(vocab, units, layers):
    m = GNMT(vocab, units, layers)
    assert sum(p.numel() for p in m.parameters()) == param_count(vocab, units, layers)
    k, L = units, layers
    lstm = lambda i, h: 4 * h * (i + h) + 8 * h  # noqa: E731 (PyTorch: two bias vectors)
    by_parts = (3 * vocab * k + 2 * lstm(k, k) + lstm(2 * k, k) + (L - 2) * lstm(k, k)
                + L * lstm(2 * k, k) + 2 * k * k + 2 * k + 1)
    assert param_count(vocab, units, layers) == by_parts
    if layers == 4:
        assert param_count(vocab, units, 4) == 3 * vocab * k + 94 * k * k + 74 * k + 1


def test_paper_sizes():
    v = 36_548
    ks = (256, 512, 768, 1024)
    assert [round((3 * v * k + 94 * k * k) / 1e6, 1) for k in ks] == [34.2, 80.8, 139.7, 210.8]  # the 3Vk + 94k^2
    assert [round(param_count(v, k, 4) / 1e6) for k in ks] == [34, 81, 140, 211]  # the paper's, biases included
    assert [round(param_count(v, k, 4) / 1e6, 1) for k in ks] == [34.2, 80.8, 139.7, 210.9]
    assert [param_count(v, k, 4) for k in ks] == [34_248_193, 80_817_153, 139_706_881, 210_917_377]
    m = GNMT(v, 256, 4)  # built at the smallest paper size; the others follow from the formula
    assert sum(p.numel() for p in m.parameters()) == param_count(v, 256, 4) == 34_248_193
    assert sum(p.numel() for n, p in m.named_parameters() if n in Pruner(m, OneShotSchedule(0.5), PRUNE).names) \
        == prunable_count(v, 256, 4)


def expected_pruned(layers):
    names = ["src_embedding.weight", "tgt_embedding.weight", "softmax.weight",
             "enc_bi.weight_ih_l0", "enc_bi.weight_hh_l0", "enc_bi.weight_ih_l0_reverse", "enc_bi.weight_hh_l0_reverse",
             "dec_cell.weight_ih", "dec_cell.weight_hh"]
    for i in range(layers - 1):
        names += [f"enc_uni.{i}.weight_ih_l0", f"enc_uni.{i}.weight_hh_l0",
                  f"dec_layers.{i}.weight_ih_l0", f"dec_layers.{i}.weight_hh_l0"]
    return sorted(names)


@pytest.mark.parametrize("layers", [2, 4])
def test_prune_globs_select_exactly_embeddings_lstm_weights_softmax(layers):
    m = GNMT(29, 6, layers)
    pruner = Pruner(m, OneShotSchedule(0.5), PRUNE)
    assert sorted(pruner.names) == expected_pruned(layers)
    assert not any(n.startswith("attention") or "bias" in n for n in pruner.names)
    assert sum(p.numel() for p in pruner.params) == prunable_count(29, 6, layers)
    dense = sorted(set(dict(m.named_parameters())) - set(pruner.names))
    assert [n for n in dense if n.startswith("attention")] == [
        "attention.b", "attention.g", "attention.memory.weight", "attention.query.weight", "attention.v"]
    assert all("bias" in n for n in dense if not n.startswith("attention"))


def test_table4_nnz_at_1024_units():
    """Table 4: 80 / 85 / 90 % sparsity at k = 1024 leaves 44M / 33M / 23M nonzeros."""
    v, k, L = 36_548, 1024, 4
    # the pruned tensors' shapes, as GNMT builds them (checked at small size above)
    shapes = [v * k] * 3 + [4 * k * k] * 4 + [4 * k * 2 * k] + [4 * k * k] + [4 * k * k] * 2 * (L - 2) \
        + [4 * k * 2 * k, 4 * k * k] * L
    assert sum(shapes) == prunable_count(v, k, L)
    dense = param_count(v, k, L) - prunable_count(v, k, L)
    assert dense == 2 * k * k + 2 * k + 1 + 8 * k * (2 * L + 1)
    nnz = [dense + sum(keep_count(n, s) for n in shapes) for s in (0.8, 0.85, 0.9)]
    assert [round(x / 1e6) for x in nnz] == [44, 33, 23]
    assert [round(x / 1e6, 2) for x in nnz] == [43.92, 33.48, 23.05]


# -- init, structure, registry ------------------------------------------------------------------
def test_init_as_tf_nmt():
    torch.manual_seed(0)
    k = 16
    m = GNMT(40, k, 4, init_range=0.05, forget_bias=1.0)
    for name, p in m.named_parameters():
        if ".bias_ih" in name:
            assert torch.equal(p[k:2 * k], torch.ones(k)) and p[:k].abs().sum() == 0 and p[2 * k:].abs().sum() == 0, name
        elif ".bias_hh" in name or name == "attention.b":
            assert p.abs().sum() == 0, name
        elif name == "attention.g":
            assert p.item() == pytest.approx(math.sqrt(1 / k))
        else:
            assert p.abs().max().item() <= 0.05 * (1 + 1e-6), name
            assert p.abs().max().item() > 0.04, name


def test_registered_builder_and_errors():
    assert "gnmt" in models.names()
    cfg = OmegaConf.create({"name": "gnmt", "units": 8, "layers": 2, "dropout": 0.3, "init_range": 0.1})
    m = models.build(cfg, {"vocab_size": 31, "pad_id": 0})
    assert isinstance(m, GNMT) and (m.vocab, m.units, m.layers, m.pad_id) == (31, 8, 2, 0) and m.drop.p == 0.3
    assert m.softmax.bias is None and isinstance(m.enc_bi, nn.LSTM) and m.enc_bi.bidirectional
    with pytest.raises(ValueError, match="model.units"):
        models.build(OmegaConf.create({"name": "gnmt"}), {"vocab_size": 31})
    with pytest.raises(ValueError, match="layers must be >= 2"):
        GNMT(31, 8, 1)
    with pytest.raises(ValueError, match="units"):
        GNMT(31, 0, 2)


def test_conf_keys():
    conf = OmegaConf.load(CONF)
    m = conf.model
    assert (m.name, m.task, m.units, m.layers, m.dropout, m.init_range, m.beam_size, m.length_penalty) == \
        ("gnmt", "translation", 1024, 4, 0.2, 0.1, 10, 1.0)
    assert m.max_decode_ratio > 0 and m.max_decode_extra >= 0


# -- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [2, 3, 4])
def test_forward_equals_reference_with_padding(layers):
    m = small(vocab=23, units=6, layers=layers, seed=layers)
    src, src_len = batch([5, 2, 7, 1], 23)
    tgt_lens = [4, 6, 3, 2]
    tgt, _ = batch(tgt_lens, 23, seed=5)
    tgt[:, 0] = BOS
    logits = m(src, src_len, tgt)
    assert logits.shape == (4, 6, 23) and logits.dtype == torch.float64
    for i in range(4):
        ref = reference_logits(m, src[i, :src_len[i]].tolist(), tgt[i, :tgt_lens[i]].tolist())
        torch.testing.assert_close(logits[i, :tgt_lens[i]], ref, atol=1e-12, rtol=0)


def test_padding_invariance_float32():
    m = small(vocab=30, units=12, layers=3, dtype=torch.float32)
    src, src_len = batch([3, 9, 6], 30)
    tgt, _ = batch([5, 8, 8], 30, seed=2)
    with torch.no_grad():
        together = m(src, src_len, tgt)
        alone = m(src[:1, :3], src_len[:1], tgt[:1, :5])
    torch.testing.assert_close(together[0, :5], alone[0], atol=1e-6, rtol=0)


def test_encoder_state_initialises_the_decoder():
    m = small(vocab=23, units=6, layers=3)
    src, src_len = batch([5], 23)
    enc, state = m.encode(src, src_len)
    emb = m.src_embedding(src)
    bi_out, (h, c) = m.enc_bi(emb)
    assert torch.equal(state[0], h[1]) and torch.equal(state[1], c[1])  # backward direction
    assert torch.equal(state[2], torch.zeros(1, 6, dtype=torch.float64))  # first context
    out0, (h0, c0) = m.enc_uni[0](bi_out)
    out1, (h1, c1) = m.enc_uni[1](out0)
    assert torch.equal(state[3], h0[0]) and torch.equal(state[4], c0[0])
    assert torch.equal(state[5], h1[0]) and torch.equal(state[6], c1[0])
    torch.testing.assert_close(enc.memory, out1 + out0, atol=1e-14, rtol=0)  # residual top layer
    assert len(state) == 3 + 2 * (m.layers - 1)


def test_teacher_forcing_equals_decode_steps():
    m = small(vocab=19, units=7, layers=4)
    src, src_len = batch([4, 6, 2], 19)
    tgt, _ = batch([5, 5, 5], 19, seed=3)
    full = m(src, src_len, tgt)
    enc, state = m.encode(src, src_len)
    steps = []
    for t in range(5):
        logits, state = m.decode_step(tgt[:, t], state, enc)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-12, rtol=0)


def test_backward_reaches_every_parameter():
    m = small(vocab=17, units=5, layers=3, dropout=0.2, dtype=torch.float32).train()
    src, src_len = batch([4, 2], 17)
    tgt, _ = batch([3, 3], 17)
    m(src, src_len, tgt).logsumexp(-1).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # padding gets no gradient through the source embedding (packed encoder)
    assert m.src_embedding.weight.grad[PAD].abs().sum() == 0


def test_dropout_train_vs_eval():
    m = small(vocab=17, units=5, layers=2, dropout=0.5, dtype=torch.float32)
    src, src_len = batch([4, 2], 17)
    tgt, _ = batch([3, 3], 17)
    assert torch.equal(m(src, src_len, tgt), m(src, src_len, tgt))
    m.train()
    assert not torch.equal(m(src, src_len, tgt), m(src, src_len, tgt))


def test_determinism():
    a, b = small(seed=3, dtype=torch.float32), small(seed=3, dtype=torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    src, src_len = batch([4, 3], 23)
    tgt, _ = batch([3, 2], 23)
    assert torch.equal(a(src, src_len, tgt), b(src, src_len, tgt))


def test_masks_hold_in_forward_and_decode_steps():
    """The pruner zeroes weights in place; the stepped decoder cell must read those tensors."""
    from prune_cli.decode import translate
    m = small(vocab=21, units=8, layers=3, seed=4)
    src, src_len = batch([5, 3], 21)
    tgt, _ = batch([4, 4], 21)
    dense = m(src, src_len, tgt)
    pruner = Pruner(m, OneShotSchedule(0.5), PRUNE)
    pruner.update_masks({n: 0.6 for n in pruner.names})
    pruner.apply_masks()
    for name, p in zip(pruner.names, pruner.params):
        assert int(p.ne(0).sum()) == keep_count(p.numel(), 0.6), name
    fresh = small(vocab=21, units=8, layers=3, seed=99)
    fresh.load_state_dict(m.state_dict())  # the masked weights, copied
    pruned = m(src, src_len, tgt)
    assert not torch.allclose(pruned, dense)
    assert torch.equal(pruned, fresh(src, src_len, tgt))
    kw = dict(beam_size=3, alpha=1.0, max_len=6, bos_id=BOS, eos_id=EOS)
    assert translate(m, src, src_len, **kw) == translate(fresh, src, src_len, **kw)
    # a cell whose recurrent weights are all pruned behaves as one without them
    only = Pruner(m, OneShotSchedule(0.5), ["dec_cell.weight_hh"])
    only.update_masks({"dec_cell.weight_hh": 1.0})
    only.apply_masks()
    assert m.dec_cell.weight_hh.abs().sum() == 0
    fresh.dec_cell.weight_hh.data.zero_()
    assert torch.equal(m(src, src_len, tgt), fresh(src, src_len, tgt))
