"""Greedy decoding and batched beam search against brute force and straightforward references."""
import itertools

import pytest
import torch

from prune_cli.decode import length_penalty, translate
from prune_cli.models.gnmt import GNMT

PAD, BOS, EOS = 0, 1, 2


def model(vocab=9, units=6, layers=2, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    m = GNMT(vocab, units, layers, dropout=0.1, init_range=1.0)  # wide init: peaked, varied distributions
    return m.to(dtype).eval()


def sources(lengths, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, vocab, (n,), generator=g)
    return src, torch.tensor(lengths)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is 10-20x faster than two on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def log_probs(m, src, src_len, y):
    """Per-step log-probabilities [len(y), V] of continuing bos + y[:-1] (pad and bos banned)."""
    with torch.no_grad():
        logits = m(src, src_len, torch.tensor([[BOS] + y[:-1]]))[0]
    logits[:, [PAD, BOS]] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def scores(m, src, src_len, hyps, alpha):
    """GNMT score log P / lp(|hyp|) of each (hyp without eos, finished) for one source, in one forward."""
    ys = [hyp + [EOS] if finished else hyp for hyp, finished in hyps]
    width = max(1, max(len(y) for y in ys))
    tgt_in = torch.tensor([([BOS] + y + [PAD] * width)[:width] for y in ys])
    with torch.no_grad():
        logits = m(src.expand(len(ys), -1), src_len.expand(len(ys)), tgt_in)
    logits[:, :, [PAD, BOS]] = float("-inf")
    lp = torch.log_softmax(logits, dim=-1)
    return [sum(float(lp[i, t, w]) for t, w in enumerate(y)) / float(length_penalty(torch.tensor(len(hyp)), alpha))
            for i, (y, (hyp, _)) in enumerate(zip(ys, hyps))]


def greedy_reference(m, src, src_len, max_len):
    """Arg max one token at a time, recomputing the whole teacher-forced forward each step."""
    y = []
    for _ in range(max_len):
        w = int(log_probs(m, src, src_len, y + [EOS])[len(y)].argmax())
        if w == EOS:
            return y
        y.append(w)
    return y


def kw(beam, alpha=1.0, max_len=8):
    return dict(beam_size=beam, alpha=alpha, max_len=max_len, bos_id=BOS, eos_id=EOS)


def test_greedy_equals_reference():
    lengths = []
    for seed in range(4):
        m = model(seed=seed, layers=2 + seed % 2)
        src, src_len = sources([4, 1, 6, 3, 5], 9, seed=seed)
        got = translate(m, src, src_len, **kw(1, max_len=7))
        for i in range(5):
            assert got[i] == greedy_reference(m, src[i:i + 1, :src_len[i]], src_len[i:i + 1], 7)
        lengths += [len(h) for h in got]
    assert min(lengths) < 7 and max(lengths) == 7  # both stop rules exercised (eos, max_len)


@pytest.mark.parametrize("seed,alpha", [(0, 1.0), (1, 0.0), (2, 0.6), (3, 2.0), (4, 1.0)])
def test_exhaustive_beam_equals_brute_force(seed, alpha):
    """V = 6 (tokens 3, 4, 5 and eos), 3 steps: 13 finished + 27 cut-off hypotheses; a beam of 40
    keeps them all, so beam search must return the best of all of them."""
    m = model(vocab=6, units=5, seed=seed)
    src, src_len = sources([3, 2], 6, seed=seed)
    got = translate(m, src, src_len, **kw(40, alpha, max_len=3))
    for i in range(2):
        s, n = src[i:i + 1, :src_len[i]], src_len[i:i + 1]
        hyps = [(list(y), True) for r in range(3) for y in itertools.product([3, 4, 5], repeat=r)]
        hyps += [(list(y), False) for y in itertools.product([3, 4, 5], repeat=3)]
        assert len(hyps) == 40
        scored = sorted(zip(scores(m, s, n, hyps, alpha), (y for y, _ in hyps)), reverse=True)
        assert scored[0][0] > scored[1][0] + 1e-9  # a unique best
        assert got[i] == scored[0][1]


def test_small_beam_on_the_tiny_vocabulary_is_not_exhaustive_but_valid():
    m = model(vocab=6, units=5, seed=0)
    src, src_len = sources([3], 6)
    for beam in (2, 3, 5):
        hyp = translate(m, src, src_len, **kw(beam, max_len=3))[0]
        assert len(hyp) <= 3 and all(w in (3, 4, 5) for w in hyp)


def test_beam_scores_at_least_greedy():
    """Beam 10 returns a hypothesis scoring at least as well as greedy's, sentence by sentence.

    Not a theorem: with TF NMT's beam semantics (finished hypotheses compete for beam slots,
    ranked by the penalised score, which punishes very short ones) a small beam can lose a
    short finished hypothesis that greedy keeps; on these untrained models beam 2 does so for
    12 of the 48 sentences. The exhaustive test above is the exact check of the search."""
    for seed in range(6):
        m = model(vocab=12, seed=seed)
        src, src_len = sources([5, 2, 7, 4, 3, 6, 8, 1], 12, seed=seed)
        greedy = translate(m, src, src_len, **kw(1, max_len=12))
        found = translate(m, src, src_len, **kw(10, max_len=12))
        for i in range(8):
            s, n = src[i:i + 1, :src_len[i]], src_len[i:i + 1]
            b, g = scores(m, s, n, [(h, len(h) < 12) for h in (found[i], greedy[i])], 1.0)
            assert b >= g - 1e-12


@pytest.mark.parametrize("beam", [1, 4])
def test_batch_equals_one_sentence_at_a_time(beam):
    """Padding, batching and dropping finished sentences change nothing."""
    m = model(vocab=11, layers=3, seed=7)
    lengths = [2, 7, 4, 1, 5, 3]
    src, src_len = sources(lengths, 11, seed=3)
    limits = torch.tensor([9, 3, 6, 9, 0, 5])
    got = translate(m, src, src_len, **{**kw(beam), "max_len": limits})
    for i, n in enumerate(lengths):
        alone = translate(m, src[i:i + 1, :n], src_len[i:i + 1], **kw(beam, max_len=int(limits[i])))
        assert got[i] == alone[0]
        assert len(got[i]) <= limits[i]
    assert got[4] == []  # max_len 0: nothing decoded


def test_never_emits_pad_or_bos_and_respects_max_len():
    m = model(vocab=9, seed=2)
    with torch.no_grad():  # make pad and bos the model's favourites
        m.softmax.weight[PAD] = 50 * m.softmax.weight[3].sign()
        m.softmax.weight[BOS] = 50 * m.softmax.weight[4].sign()
    src, src_len = sources([3, 5], 9)
    for beam in (1, 3):
        for hyp in translate(m, src, src_len, **kw(beam, max_len=6)):
            assert len(hyp) <= 6 and PAD not in hyp and BOS not in hyp and EOS not in hyp


def test_deterministic_no_grad_and_mode_restored():
    m = model(vocab=10, seed=3, dtype=torch.float32).train()
    src, src_len = sources([4, 6, 2], 10)
    a = translate(m, src, src_len, **kw(3))
    assert m.training  # restored
    b = translate(m, src, src_len, **kw(3))
    assert a == b
    assert all(p.grad is None for p in m.parameters())
    m.eval()
    assert translate(m, src, src_len, **kw(3)) == a and not m.training


def test_bad_arguments():
    m = model()
    src, src_len = sources([3], 9)
    with pytest.raises(ValueError, match="beam_size"):
        translate(m, src, src_len, **kw(0))
    with pytest.raises(ValueError, match="max_len has 2 entries"):
        translate(m, src, src_len, **{**kw(2), "max_len": torch.tensor([3, 4])})


def test_length_penalty_values():
    n = torch.tensor([0, 1, 7])
    assert torch.equal(length_penalty(n, 0.0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(length_penalty(n, 1.0), torch.tensor([5 / 6, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(length_penalty(n, 0.6), (torch.tensor([5., 6., 12.], dtype=torch.float64) / 6) ** 0.6)
