"""Machinery shared by the translation datasets (multi30k, wmt16, fake_wmt16).

A dataset module turns its files into :class:`Pairs` (token ids of source and target, one
row a sentence pair, plus the reference strings BLEU scores against) and hands them to
:func:`make_bundle`; everything after that is the same for every translation dataset:

Ids: ONE joint vocabulary for source and target, with ``pad = 0, bos = 1, eos = 2, unk = 3``
(the contract of issue 9; the paper's V = 36,548 is a joint BPE vocabulary).

Training batches ``(src, src_len, tgt_in, tgt_out)``, int64, batch first (data-parallel
ranks slice dim 0): ``src [B, S]`` the source ids without bos/eos (as TF NMT), padded with 0;
``src_len [B]`` their true lengths (>= 1); ``tgt_in [B, T]`` = bos + target ids and
``tgt_out [B, T]`` = target ids + eos, both padded with 0 (``T`` = longest target + 1).

Training order, epoch ``e``: a permutation from (seed, e) drops ``N mod B`` random pairs (a
different few every epoch), is cut into pools of ``pool`` batches, each pool is sorted by
(target length, then source length) and cut into batches of exactly ``B`` pairs, and the
batch order is permuted again from the same generator. Target first because the decoder (its
LSTM layers, attention and the V-wide softmax and loss) runs over every padded target
position, while a packed encoder skips source padding: on Multi30k, pools of 100 batches fill
98% of the target cells and 80% of the source cells with real tokens (source first: 81% / 98%;
no sorting: 45% / 42%). Why this and not TF NMT's length buckets
(group_by_window): every batch is full, so the loss scale (sum over tokens / B) and the
step count are the same every epoch (``steps_per_epoch = N // B`` exactly), target padding
is near zero (a pool of 100 batches of Multi30k holds every length many times over), and the whole
plan of an epoch is a pure function of (seed, epoch), so ``train_epoch(e, start)`` yields
exactly batches ``start ..`` of ``train_epoch(e, 0)`` -- exact resume -- at the cost of two
permutations and one sort (20 ms for Multi30k, seconds for WMT16's 4.5M pairs).

Evaluation batches ``(src, src_len, tgt_in, tgt_out, refs)``: every pair of the split once
(no length filter), ordered by source length, longest first (decoding a batch costs its
longest sentence, so similar lengths together are fastest, and the largest batch comes
first so an out-of-memory shows at once); ``refs[i]`` is the reference of row ``i``.
A pair whose source is empty (never in the shipped corpora) gets the single source token
``eos`` so that ``src_len >= 1`` holds for the encoder.

Corpora are stored as one flat int32 tensor of ids and per-sentence offsets per side (WMT16's
4.5M pairs stay about 1 GB, not the several GB of Python lists); a batch is one vectorised
gather.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from . import DataBundle, DataError, save_atomic  # noqa: F401  (multi30k and wmt16 import it from here)
from .images import generator, opt, positive_int

log = logging.getLogger(__name__)

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
DIRECTIONS = ("de-en", "en-de")
TOO_LONG = ("drop", "truncate")

TrainBatch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
EvalBatch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, List[str]]


# ----------------------------------------------------------------------------- config
def direction(cfg) -> Tuple[str, str]:
    """(source language, target language) of ``data.direction``; DataError if unknown."""
    value = str(opt(cfg, "direction", "de-en"))
    if value not in DIRECTIONS:
        raise DataError(f"data.direction={value!r} is not a translation direction of "
                        f"{opt(cfg, 'name', 'this dataset')}; use {' or '.join(DIRECTIONS)}")
    src, tgt = value.split("-")
    return src, tgt


def check_batching(cfg, max_len_default: int = 50) -> None:
    """The batching keys every translation dataset reads, checked before any work."""
    for key, default in (("batch_size", 128), ("eval_batch_size", 128), ("pool", 100),
                         ("max_len", max_len_default), ("max_decode_len", 2 * max_len_default)):
        positive_int(cfg, key, default, DataError)
    mode = str(opt(cfg, "too_long", "drop"))
    if mode not in TOO_LONG:
        raise DataError(f"data.too_long={mode!r}: use drop (leave training pairs longer than "
                        f"data.max_len out) or truncate (cut them to data.max_len, as TF NMT does)")


def read_lines(text: str) -> List[str]:
    """Lines of a corpus file: split on "\\n" only (str.splitlines would also split on
    U+2028, U+0085, ... inside a sentence and misalign source and target); a final newline
    does not make an extra empty line; a trailing "\\r" is dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


# ----------------------------------------------------------------------------- pairs
def _flatten(seqs: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    starts = torch.zeros(len(seqs), dtype=torch.int64)
    if len(seqs) > 1:
        starts[1:] = torch.cumsum(lens[:-1], 0)
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.int32)
    return flat, starts, lens


@dataclass
class Side:
    """One language of a split: ids of sentence i are ``flat[starts[i] : starts[i] + lens[i]]``."""

    flat: torch.Tensor    # int32 [total tokens]
    starts: torch.Tensor  # int64 [N]
    lens: torch.Tensor    # int64 [N]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> "Side":
        return cls(*_flatten(seqs))

    def __len__(self) -> int:
        return int(self.lens.numel())

    def row(self, i: int) -> List[int]:
        a = int(self.starts[i])
        return self.flat[a:a + int(self.lens[i])].tolist()

    def truncated(self, max_len: int) -> "Side":
        return Side(self.flat, self.starts, self.lens.clamp(max=max_len))

    def gather(self, idx: torch.Tensor, width: int) -> torch.Tensor:
        """int64 [len(idx), width]: rows ``idx``, zero-padded (pad = 0) past their lengths."""
        lens = self.lens[idx]
        cols = torch.arange(width)
        inside = cols < lens[:, None]
        if self.flat.numel() == 0:
            return torch.zeros((len(idx), width), dtype=torch.int64)
        pos = (self.starts[idx][:, None] + cols).clamp_(max=self.flat.numel() - 1)
        return torch.where(inside, self.flat[pos].long(), torch.zeros((), dtype=torch.int64))


@dataclass
class Pairs:
    """Aligned sentence pairs of one split; ``refs`` only for evaluation splits."""

    src: Side
    tgt: Side
    refs: Optional[List[str]] = None

    def __post_init__(self):
        if len(self.src) != len(self.tgt):
            raise ValueError(f"{len(self.src)} source and {len(self.tgt)} target sentences")
        if self.refs is not None and len(self.refs) != len(self.src):
            raise ValueError(f"{len(self.refs)} references for {len(self.src)} pairs")

    @classmethod
    def from_lists(cls, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]],
                   refs: Optional[List[str]] = None) -> "Pairs":
        return cls(Side.from_lists(src), Side.from_lists(tgt), refs)

    def __len__(self) -> int:
        return len(self.src)


def prepare_train(pairs: Pairs, max_len: int, too_long: str = "drop") -> Tuple[Pairs, Dict[str, int]]:
    """Training pairs as the model sees them, and counts of what was left out.

    Pairs with an empty side are dropped (TF NMT filters them too). Pairs with more than
    ``max_len`` ids on a side are dropped (``too_long="drop"``) or cut to ``max_len``
    (``"truncate"``: TF NMT's src_max_len / tgt_max_len). Returns (pairs, {"pairs", "empty",
    "too_long"}), "too_long" counting the pairs dropped or cut.
    """
    empty = (pairs.src.lens == 0) | (pairs.tgt.lens == 0)
    long = ((pairs.src.lens > max_len) | (pairs.tgt.lens > max_len)) & ~empty
    keep = ~empty
    if too_long == "drop":
        keep &= ~long
    idx = torch.nonzero(keep).flatten()
    src, tgt = pairs.src, pairs.tgt
    if too_long == "truncate":
        src, tgt = src.truncated(max_len), tgt.truncated(max_len)
    if len(idx) < len(pairs):
        src, tgt = _subset(src, idx), _subset(tgt, idx)
    out = Pairs(src, tgt)
    return out, {"pairs": len(out), "empty": int(empty.sum()), "too_long": int(long.sum())}


def _subset(side: Side, idx: torch.Tensor) -> Side:
    # Keep the flat ids (shared, no copy); only the row index changes.
    return Side(side.flat, side.starts[idx], side.lens[idx])


# ----------------------------------------------------------------------------- batches
def make_batch(pairs: Pairs, idx: torch.Tensor) -> TrainBatch:
    """The four int64 tensors of the rows ``idx`` (see the module docstring)."""
    src_len = pairs.src.lens[idx]
    src = pairs.src.gather(idx, max(1, int(src_len.max())))
    empty = src_len == 0
    if bool(empty.any()):  # eval only: training pairs are never empty
        src[empty, 0] = EOS_ID
        src_len = src_len.clamp(min=1)
    tgt_len = pairs.tgt.lens[idx]
    width = int(tgt_len.max()) + 1
    body = pairs.tgt.gather(idx, width)          # last column is always pad
    tgt_in = torch.empty_like(body)
    tgt_in[:, 0] = BOS_ID
    tgt_in[:, 1:] = body[:, :-1]
    tgt_out = body
    tgt_out[torch.arange(len(idx)), tgt_len] = EOS_ID
    return src, src_len.clone(), tgt_in, tgt_out


def epoch_plan(src_lens: torch.Tensor, tgt_lens: torch.Tensor, batch_size: int, pool: int,
               seed: int, epoch: int) -> torch.Tensor:
    """Row indices of every training batch of epoch ``epoch``: int64 [steps, batch_size],
    row ``i`` = batch ``i`` (module docstring). One permutation, one sort of all pools at once
    (pool number first, then target length, then source length) and one permutation of the
    batches: 5 s for 4.5M pairs (WMT16) on the loaded 2-core machine, once an epoch."""
    n = int(src_lens.numel())
    steps = n // batch_size
    g = generator(seed, epoch)
    perm = torch.randperm(n, generator=g)[:steps * batch_size]
    key = tgt_lens * (int(src_lens.max()) + 1) + src_lens if n else tgt_lens
    k = key[perm]
    pool_id = torch.arange(len(perm)) // (batch_size * pool)
    rows = perm[torch.sort(pool_id * (int(k.max()) + 1 if n else 1) + k, stable=True).indices]
    order = torch.randperm(steps, generator=g)
    return rows.view(steps, batch_size)[order]


def eval_order(src_lens: torch.Tensor) -> torch.Tensor:
    """Rows by source length, longest first; ties in corpus order."""
    return torch.sort(-src_lens, stable=True).indices


class TranslationBatches:
    """Deterministic, resumable training batches and length-ordered evaluation batches."""

    def __init__(self, train: Pairs, evals: Dict[str, Pairs], seed: int, batch_size: int = 128,
                 eval_batch_size: int = 128, pool: int = 100):
        self.train, self.evals = train, evals
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.eval_batch_size, self.pool = int(eval_batch_size), int(pool)
        self.steps_per_epoch = len(train) // self.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"data.batch_size={batch_size} exceeds the {len(train)} training pairs; "
                            f"lower data.batch_size")

    def plan(self, epoch: int) -> torch.Tensor:
        return epoch_plan(self.train.src.lens, self.train.tgt.lens, self.batch_size, self.pool,
                          self.seed, epoch)

    def train_epoch(self, epoch: int, start: int = 0) -> Iterator[TrainBatch]:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        for idx in self.plan(epoch)[start:]:
            yield make_batch(self.train, idx)

    def eval_batches(self, split: str) -> Iterator[EvalBatch]:
        pairs = self.evals[split]
        order = eval_order(pairs.src.lens)
        for idx in order.split(self.eval_batch_size):
            yield make_batch(pairs, idx) + ([pairs.refs[i] for i in idx.tolist()],)


# ----------------------------------------------------------------------------- bundle
def mean_lengths(pairs: Pairs) -> List[float]:
    """[source tokens, target positions] of an average pair, as the model sees it: a source of
    at least one token (make_batch), the target plus eos (tgt_out's positions). The unit of a
    translation model's MACs (prune_cli/train/plan/costs.py)."""
    if not len(pairs):
        return [0.0, 0.0]
    return [float(pairs.src.lens.clamp(min=1).double().mean()), float(pairs.tgt.lens.double().mean()) + 1.0]


def make_bundle(train: Pairs, evals: Dict[str, Pairs], cfg, seed: int, meta: Dict,
                too_long: str = "drop") -> DataBundle:
    """DataBundle from prepared pairs; ``meta`` gets the ids and sizes every dataset shares.

    ``train`` is filtered here with data.max_len / data.too_long (eval splits never are);
    ``too_long`` is the dataset's default when the config has no data.too_long.
    """
    check_batching(cfg)
    max_len = positive_int(cfg, "max_len", 50, DataError)
    too_long = str(opt(cfg, "too_long", too_long))
    train, dropped = prepare_train(train, max_len, too_long)
    ds = TranslationBatches(train, evals, seed,
                            batch_size=positive_int(cfg, "batch_size", 128, DataError),
                            eval_batch_size=positive_int(cfg, "eval_batch_size", 128, DataError),
                            pool=positive_int(cfg, "pool", 100, DataError))
    meta = dict(meta)
    meta.update(pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
                max_decode_len=positive_int(cfg, "max_decode_len", 2 * max_len, DataError),
                train_pairs=len(train), train_empty=dropped["empty"],
                train_too_long=dropped["too_long"], too_long=too_long,
                eval_pairs={s: len(p) for s, p in evals.items()},
                mean_lengths={s: mean_lengths(p) for s, p in {"train": train, **evals}.items()})
    if dropped["empty"] or dropped["too_long"]:
        log.info("%s: %d training pairs; %d empty left out, %d longer than %d %s",
                 meta.get("dataset"), len(train), dropped["empty"], dropped["too_long"], max_len,
                 "left out" if too_long == "drop" else "cut")

    def _eval(split: str) -> Callable[[], Iterator[EvalBatch]]:
        return lambda: ds.eval_batches(split)

    return DataBundle(train_epoch=ds.train_epoch, steps_per_epoch=ds.steps_per_epoch,
                      eval_splits={s: _eval(s) for s in evals}, meta=meta)


# ----------------------------------------------------------------------------- caches


def load_cache(path: Path, fmt: int, key: str) -> Optional[dict]:
    """The cache dict at ``path`` if it is readable and has this format and key, else None."""
    if not Path(path).is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("key") != key:
        return None
    return data


def side_state(side: Side) -> List[torch.Tensor]:
    """A Side as plain tensors (what torch.load(weights_only=True) reads back)."""
    return [side.flat, side.starts, side.lens]


def side_from_state(state: Sequence[torch.Tensor]) -> Side:
    return Side(*state)
