"""Synthetic translation pairs with the paper's WMT16 vocabulary, for smoke tests, parameter
counts and throughput only (runs are marked ``synthetic``).

The vocabulary has the paper's 36,548 entries, the four specials (pad 0, bos 1, eos 2,
unk 3) included, so ``model=gnmt data=fake_wmt16`` has exactly the paper's parameter counts.
The corpus is a fixed function of ``data.data_seed`` (the run's seed only orders the
batches, as for real data):

- source lengths: lognormal with median ``len_median`` and shape ``len_sigma``, rounded and
  clipped to [1, max_len] -- like BPE sentences of WMT (median ~25 tokens, a long tail),
  so batches pad and bucket as real ones do;
- source tokens: Zipf-distributed over the content ids 4 .. V-1 (p ~ 1/rank^zipf, id 4 the
  most frequent), so frequent tokens are seen often enough in a few hundred steps;
- target = a fixed permutation of the content ids applied to the source, reversed: a mapping
  an attention model can learn, so a smoke run shows the loss falling and BLEU rising.

Tokens are written ``w<id>`` for BLEU: refs are the target tokens joined with spaces, the
same string ``meta["detokenize"]`` makes of the right ids; ``bleu_tokenize`` is "none".
"""
from typing import List

import torch

from . import DataBundle, DataError, register
from .images import generator, opt, positive_int
from .translation import Pairs, Side, check_batching, direction, make_bundle

VOCAB_SIZE = 36548   # the paper's joint BPE vocabulary (section 4.3), specials included
N_SPECIAL = 4
_SPLIT_TAG = {"train": 1, "valid": 2, "test": 3}


def check_fake_wmt16(cfg) -> None:
    direction(cfg)
    check_batching(cfg)
    for key, default in (("train_size", 2560), ("valid_size", 64), ("test_size", 64),
                         ("vocab_size", VOCAB_SIZE), ("len_median", 24)):
        positive_int(cfg, key, default, DataError)
    if positive_int(cfg, "vocab_size", VOCAB_SIZE, DataError) <= N_SPECIAL + 1:
        raise DataError(f"data.vocab_size must exceed the {N_SPECIAL} special ids")
    for key, default in (("len_sigma", 0.5), ("zipf", 1.0)):
        try:
            ok = float(opt(cfg, key, default)) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"data.{key}={opt(cfg, key)!r} must be a number >= 0")


class FakeDetokenizer:
    """ids -> "w<id> w<id> ..." (the form of the synthetic references)."""

    def __call__(self, ids) -> str:
        return " ".join(f"w{int(i)}" for i in ids)


class FakeCorpus:
    """The synthetic splits of one (vocab_size, lengths, zipf, data_seed) setting."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, len_median: float = 24, len_sigma: float = 0.5,
                 max_len: int = 50, zipf: float = 1.0, data_seed: int = 0):
        self.vocab_size, self.max_len, self.data_seed = int(vocab_size), int(max_len), int(data_seed)
        self.len_median, self.len_sigma, self.zipf = float(len_median), float(len_sigma), float(zipf)
        content = self.vocab_size - N_SPECIAL
        self.probs = torch.arange(1, content + 1, dtype=torch.float64).pow(-self.zipf)
        # mapping[id] = the target id of source id (identity on the specials)
        perm = torch.randperm(content, generator=generator(self.data_seed, 0)) + N_SPECIAL
        self.mapping = torch.cat([torch.arange(N_SPECIAL), perm])

    def split(self, name: str, size: int, refs: bool = True) -> Pairs:
        g = generator(self.data_seed, _SPLIT_TAG[name])
        z = torch.randn(size, generator=g, dtype=torch.float64)
        lens = (self.len_median * torch.exp(self.len_sigma * z)).round().clamp(1, self.max_len).long()
        ids = torch.multinomial(self.probs, int(lens.sum()), replacement=True, generator=g) + N_SPECIAL
        parts = lens.tolist()
        src: List[List[int]] = [s.tolist() for s in ids.split(parts)]
        tgt = [t.flip(0).tolist() for t in self.mapping[ids].split(parts)]
        detok = FakeDetokenizer()
        return Pairs(Side.from_lists(src), Side.from_lists(tgt), [detok(t) for t in tgt] if refs else None)


@register("fake_wmt16", check=check_fake_wmt16)
def build_fake_wmt16(cfg, seed: int = 0) -> DataBundle:
    check_fake_wmt16(cfg)
    src, tgt = direction(cfg)
    corpus = FakeCorpus(vocab_size=positive_int(cfg, "vocab_size", VOCAB_SIZE, DataError),
                        len_median=positive_int(cfg, "len_median", 24, DataError),
                        len_sigma=float(opt(cfg, "len_sigma", 0.5)),
                        max_len=positive_int(cfg, "max_len", 50, DataError),
                        zipf=float(opt(cfg, "zipf", 1.0)),
                        data_seed=int(opt(cfg, "data_seed", 0)))
    train = corpus.split("train", positive_int(cfg, "train_size", 2560, DataError), refs=False)
    evals = {s: corpus.split(s, positive_int(cfg, f"{s}_size", 64, DataError)) for s in ("valid", "test")}
    meta = {"vocab_size": corpus.vocab_size, "dataset": "fake_wmt16", "direction": f"{src}-{tgt}",
            "synthetic": True, "detokenize": FakeDetokenizer(), "bleu_tokenize": "none"}
    return make_bundle(train, evals, cfg, seed, meta)
