"""WMT16 English-German exactly as the TensorFlow NMT tutorial's script leaves it (the paper's data).

``nmt/scripts/wmt16_en_de.sh`` of github.com/tensorflow/nmt downloads Europarl v7, Common
Crawl and News Commentary v11, tokenizes with Moses, cleans the training pairs to 1..80
tokens, learns 32,000 joint BPE merges and writes a joint vocabulary file. This module reads
its output folder as ``<data.root>/wmt16/``:

    train.tok.clean.bpe.32000.{en,de}     training pairs (train)
    newstest2013.tok.bpe.32000.{en,de}    dev set (valid), as the paper
    newstest2015.tok.bpe.32000.{en,de}    test set (test), as the paper
    vocab.bpe.32000                       one token a line, first <unk>, <s>, </s>

Ids: the vocabulary file's tokens in file order after the four specials: ``pad 0`` (ours:
TF NMT pads with eos and has no pad token), ``<s> 1``, ``</s> 2``, ``<unk> 3``, then the
file's fourth line on as 4, 5, ... (a file that does not start with the three specials gets
them put in front, as TF NMT's check_vocab does). So ``vocab_size`` = lines of the file + 1.
Tokens not in the vocabulary map to ``<unk>`` (only possible in dev/test).

Length: TF NMT trains with src_max_len = tgt_max_len = 50 and *cuts* longer pairs to 50
tokens (iterator_utils: ``src[:src_max_len]``); ``data.too_long`` is ``truncate`` here for that
reason (``drop`` leaves them out instead); empty pairs are left out, as TF NMT filters them.
Dev and test are never filtered or cut.

BLEU follows the paper's convention (TF NMT's, multi-bleu's): tokenized BLEU on BPE-joined
text, so ``refs`` are the tokenized target lines with every "@@ " removed (TF NMT: ``sed
s/@@ //g``), ``meta["detokenize"]`` joins the hypothesis tokens with spaces and removes "@@ "
the same way, and ``bleu_tokenize`` is "none".

Encoding the 4.5M training pairs takes minutes of pure Python, once: the encoded splits are
cached in ``<cache>/wmt16/encoded-<key>.pt``, keyed by the files' sha256.
"""
import hashlib
import json
import logging
import time
from array import array
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from . import DataBundle, DataError, register, sha256_file
from .images import cache_dir, data_root
from .translation import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, Pairs, Side, check_batching, direction,
                          load_cache, make_bundle, save_atomic, side_from_state, side_state)

log = logging.getLogger(__name__)

BPE = "32000"
SPLITS = {"train": "train.tok.clean", "valid": "newstest2013.tok", "test": "newstest2015.tok"}
LANGS = ("de", "en")
FILES = {(s, l): f"{stem}.bpe.{BPE}.{l}" for s, stem in SPLITS.items() for l in LANGS}
VOCAB = f"vocab.bpe.{BPE}"
SPECIALS = ("<unk>", "<s>", "</s>")  # TF NMT's vocabulary head, in this order
SCRIPT = "nmt/scripts/wmt16_en_de.sh of the TensorFlow NMT tutorial (github.com/tensorflow/nmt)"
CACHE_FORMAT = 1


def wmt16_dir(cfg) -> Path:
    return data_root(cfg) / "wmt16"


def all_files() -> List[str]:
    return [FILES[s, l] for s in SPLITS for l in LANGS] + [VOCAB]


def _missing(directory: Path) -> List[str]:
    return [f for f in all_files() if not (directory / f).is_file()]


def check_wmt16(cfg) -> None:
    """Raise DataError (one line) on a bad key or any missing file (never downloaded: the
    script needs Moses, subword-nmt and hours)."""
    direction(cfg)
    check_batching(cfg)
    directory = wmt16_dir(cfg)
    missing = _missing(directory)
    if missing:
        raise DataError(f"WMT16 files missing in {directory}: {', '.join(missing)}; produce them "
                        f"with {SCRIPT} and put its output folder there as wmt16/ (or set "
                        f"data.root to the directory holding wmt16/)")


# ----------------------------------------------------------------------------- vocabulary
def read_vocab(path: Path) -> List[str]:
    """Tokens in id order: ``["<pad>", "<s>", "</s>", "<unk>", <the file's other tokens>...]``."""
    with open(path, "r", encoding="utf-8") as f:
        tokens = [ln.strip() for ln in f.read().split("\n")]
    while tokens and tokens[-1] == "":
        tokens.pop()
    if tuple(tokens[:3]) != SPECIALS:
        tokens = list(SPECIALS) + tokens
    itos = [""] * 4
    itos[UNK_ID], itos[BOS_ID], itos[EOS_ID], itos[PAD_ID] = "<unk>", "<s>", "</s>", "<pad>"
    return itos + tokens[3:]


class BPEDetokenizer:
    """ids -> the string tokenized BLEU scores: tokens joined by spaces, "@@ " removed."""

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)

    def tokens(self, ids) -> List[str]:
        return [self.itos[int(i)] for i in ids]

    def __call__(self, ids) -> str:
        return debpe(" ".join(self.tokens(ids)))


def debpe(line: str) -> str:
    """Remove BPE joins exactly as TF NMT does for BLEU (``sed s/@@ //g``)."""
    return line.replace("@@ ", "")


def _encode_file(path: Path, stoi: Dict[str, int], keep_lines: bool = True) -> Tuple[Side, List[str]]:
    """(ids of every line, the lines if keep_lines else []) -- lines split on "\\n" only,
    tokens on whitespace. The 4.5M training lines are not kept (about 1 GB of str)."""
    flat = array("i")
    lens = array("q")
    lines: List[str] = []
    get = stoi.get
    with open(path, "r", encoding="utf-8", newline="\n") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            ids = [get(t, UNK_ID) for t in line.split()]
            flat.extend(ids)
            lens.append(len(ids))
            if keep_lines:
                lines.append(line)
    lens_t = torch.tensor(lens, dtype=torch.int64) if len(lens) else torch.zeros(0, dtype=torch.int64)
    starts = torch.zeros_like(lens_t)
    if len(lens_t) > 1:
        starts[1:] = torch.cumsum(lens_t[:-1], 0)
    flat_t = torch.frombuffer(flat, dtype=torch.int32).clone() if len(flat) else torch.zeros(0, dtype=torch.int32)
    return Side(flat_t, starts, lens_t), lines


_MEMO: Dict[str, dict] = {}


def load_corpus(cfg) -> dict:
    """{"itos", "sides": {split: {lang: Side}}, "refs": {split: {lang: lines}}, "cache_path"}."""
    directory = wmt16_dir(cfg)
    missing = _missing(directory)
    if missing:
        check_wmt16(cfg)
    shas = {f: sha256_file(directory / f) for f in all_files()}
    key = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "files": shas},
                                    sort_keys=True).encode()).hexdigest()
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir(cfg) / "wmt16" / f"encoded-{key[:16]}.pt"
    state = load_cache(path, CACHE_FORMAT, key)
    if state is None:
        t0 = time.perf_counter()
        itos = read_vocab(directory / VOCAB)
        stoi: Dict[str, int] = {}
        for i, tok in enumerate(itos):
            stoi.setdefault(tok, i)
        del stoi["<pad>"]  # not a token of TF NMT's files: "<pad>" in text is unknown
        sides, refs = {}, {}
        for s in SPLITS:
            sides[s], refs[s] = {}, {}
            for l in LANGS:
                side, lines = _encode_file(directory / FILES[s, l], stoi, keep_lines=s != "train")
                sides[s][l] = side_state(side)
                if s != "train":
                    refs[s][l] = [debpe(x) for x in lines]
            n = {l: len(sides[s][l][2]) for l in LANGS}
            if n["de"] != n["en"]:
                raise DataError(f"{directory}: {FILES[s, 'de']} has {n['de']} lines but "
                                f"{FILES[s, 'en']} has {n['en']}; the files must be aligned")
        state = {"format": CACHE_FORMAT, "key": key, "itos": itos, "sides": sides, "refs": refs}
        save_atomic(state, path)
        log.info("wmt16: encoded %s in %.1f s -> %s", directory, time.perf_counter() - t0, path)
    corpus = {"itos": state["itos"], "refs": state["refs"], "cache_path": str(path),
              "sides": {s: {l: side_from_state(v) for l, v in d.items()} for s, d in state["sides"].items()}}
    _MEMO[key] = corpus
    return corpus


@register("wmt16", check=check_wmt16)
def build_wmt16(cfg, seed: int = 0) -> DataBundle:
    src, tgt = direction(cfg)
    corpus = load_corpus(cfg)
    sides = corpus["sides"]
    train = Pairs(sides["train"][src], sides["train"][tgt])
    evals = {s: Pairs(sides[s][src], sides[s][tgt], list(corpus["refs"][s][tgt]))
             for s in ("valid", "test")}
    meta = {"vocab_size": len(corpus["itos"]), "dataset": "wmt16", "direction": f"{src}-{tgt}",
            "synthetic": False, "detokenize": BPEDetokenizer(corpus["itos"]),
            "bleu_tokenize": "none", "cache": corpus["cache_path"]}
    return make_bundle(train, evals, cfg, seed, meta, too_long="truncate")
