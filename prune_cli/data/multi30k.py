"""Multi30k (task 1, raw English-German pairs) with a joint sentencepiece vocabulary.

Files: ``<data.root>/multi30k/{train,val,test_2016_flickr}.{en,de}.gz``, as published in
github.com/multi30k/dataset (data/task1/raw): 29,000 / 1,014 / 1,000 aligned pairs, one
sentence a line. ``valid`` = val, ``test`` = test_2016_flickr (the standard test set).
Missing files are downloaded (sha256-checked) when ``data.download`` is true.

Subwords: ONE sentencepiece model trained on the training split of both languages (de lines,
then en lines; nothing from val/test), ids ``pad 0, bos 1, eos 2, unk 3``. Training is made
deterministic: one thread, every sentence used in file order (no sampling, no shuffling),
sentencepiece's random seed fixed; the model is keyed by the training files' sha256, the
settings below and the sentencepiece version, so the same key means the same pieces.
Config keys (``data`` node):

    direction           de-en | en-de                                            (de-en)
    vocab_size          pieces in the joint vocabulary incl. the 4 specials      (4000)
    model_type          bpe | unigram                                            (bpe)
    character_coverage  sentencepiece's; 1.0 keeps every training character      (1.0)
    normalization       sentencepiece's normalization_rule_name                  (nmt_nfkc)
    max_len             training pairs with more pieces on a side are dropped    (50)
    too_long            drop | truncate                                          (drop)
    batch_size / eval_batch_size / pool / max_decode_len: see translation.py
    cache_dir           null -> $PRUNE_CACHE_DIR, else ~/.cache/prune-cli
    download            fetch missing files from the dataset repository          (true)

Caches (never in the repository): ``<cache>/multi30k/spm-<key>.model`` (the sentencepiece
model) and ``<cache>/multi30k/encoded-<key>.pt`` (every split encoded, and the eval splits'
raw target lines), so a run after the first starts in well under a second.

References are the raw target lines of the corpus (BLEU: detokenized sacrebleu, 13a);
``meta["detokenize"]`` is sentencepiece decoding. nmt_nfkc normalisation only changes
whitespace on this corpus (leading/trailing/double spaces, which 13a ignores): decoding the
encoding gives back every training sentence up to whitespace.
"""
import gzip
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, List, Sequence

from . import DataBundle, DataError, files, register, sha256_file, write_atomic
from .images import cache_dir, data_root, opt, positive_int
from .translation import (EOS_ID, PAD_ID, BOS_ID, UNK_ID, Pairs, check_batching, direction,
                          load_cache, make_bundle, read_lines, save_atomic, side_from_state,
                          side_state, Side)

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
LANGS = ("de", "en")
FILES = {(s, l): f"{stem}.{l}.gz" for s, stem in SPLITS.items() for l in LANGS}
SHA256 = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}
# The published files' sizes and the sha256 of their first files.HEAD bytes: a copy cut short
# or damaged is told from a user's own file under the same name (data/files.py).
SIZE = {"train.de.gz": 637044, "train.en.gz": 568929, "val.de.gz": 24681, "val.en.gz": 21650,
        "test_2016_flickr.de.gz": 22890, "test_2016_flickr.en.gz": 21077}
HEAD_SHA256 = {
    "train.de.gz": "8adbcc6beb59eb5cce45a1406dd6a7466e61cd248c9df4e25fc1a45db091debb",
    "train.en.gz": "39f14debebd5181ef46b2ce741d0405dab52cee41543811c4defd6f0868c25f2",
    "val.de.gz": "2ca8b993d4188132dace6aa1359af95db1549633ca9bcd1f66163cb0378397ee",
    "val.en.gz": "814a5e0f7e7f02ba9e438a7b057e0af93dee3fb99155a3166eca0c3c4918a034",
    "test_2016_flickr.de.gz": "f658803ad8c978d20dbeb1b0217154b53ecdaab35132cf737a3eca38f360cab9",
    "test_2016_flickr.en.gz": "3924c51b467ad1e0cd946d602668f6113dd4200d81b53b21672184004eb60f35",
}
SIZES = {"train": 29000, "valid": 1014, "test": 1000}
URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{file}"
DOWNLOAD_TIMEOUT_S = 30
MODEL_TYPES = ("bpe", "unigram")
SPM_SEED = 0
CACHE_FORMAT = 1


# ----------------------------------------------------------------------------- files
def multi30k_dir(cfg) -> Path:
    return data_root(cfg) / "multi30k"


def _missing(directory: Path) -> List[str]:
    return [f for f in FILES.values() if not (directory / f).is_file()]


def _missing_message(directory: Path, missing: Sequence[str], reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (f"Multi30k files missing{why}: put {', '.join(missing)} (from "
            f"{URL.format(file='')}) in {directory}, or set data.root to the directory that "
            f"holds multi30k/")


def _fetch(url: str, dest: Path) -> None:
    """Download url to dest (network; replaced in tests)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(dest, "wb") as f:
        while True:
            block = r.read(1 << 20)
            if not block:
                break
            f.write(block)


def download(directory: Path, files: Sequence[str]) -> None:
    """Fetch ``files`` into ``directory``, each checked against its published sha256.

    A failed download or a wrong checksum raises DataError (one line); nothing half-written
    is left behind.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(_missing_message(directory, files, f"cannot create the directory: {e}")) from None
    for name in files:
        def fetch_checked(tmp: str, name: str = name) -> None:
            log.info("downloading %s -> %s", URL.format(file=name), directory / name)
            try:
                _fetch(URL.format(file=name), Path(tmp))
            except Exception as e:  # no network, HTTP error, timeout ...
                reason = f"download failed: {type(e).__name__}: {e}".replace("\n", " ")
                raise DataError(_missing_message(directory, files, reason)) from None
            got = sha256_file(tmp)
            if got != SHA256[name]:
                raise DataError(f"downloaded {name} has sha256 {got}, expected {SHA256[name]}; "
                                f"deleted it: put the published file in {directory}")

        write_atomic(directory / name, fetch_checked)


def spm_settings(cfg) -> Dict[str, object]:
    """The sentencepiece settings a run asks for (part of the cache key)."""
    model_type = str(opt(cfg, "model_type", "bpe"))
    if model_type not in MODEL_TYPES:
        raise DataError(f"data.model_type={model_type!r}: use {' or '.join(MODEL_TYPES)}")
    coverage = opt(cfg, "character_coverage", 1.0)
    try:
        coverage = float(coverage)
    except (TypeError, ValueError):
        coverage = -1.0
    if not 0.0 < coverage <= 1.0:
        raise DataError(f"data.character_coverage={opt(cfg, 'character_coverage')!r} must be in (0, 1]")
    vocab_size = positive_int(cfg, "vocab_size", 4000, DataError)
    if vocab_size <= 4:
        raise DataError(f"data.vocab_size={vocab_size} leaves no room beside the 4 special pieces; "
                        f"use e.g. 4000")
    return {"vocab_size": vocab_size, "model_type": model_type, "character_coverage": coverage,
            "normalization_rule_name": str(opt(cfg, "normalization", "nmt_nfkc"))}


def published(name: str) -> files.Published:
    return files.Published(SHA256[name], SIZE[name], HEAD_SHA256[name])


def _fix(name: str) -> str:
    return (f"delete it and run with data.download=true to fetch it again, or put the published {name} "
            f"({URL.format(file=name)}) there")


def check_multi30k(cfg) -> None:
    """Raise DataError (one line) on a bad key, missing files (downloaded if allowed), an empty
    file or a damaged copy of a published one (files.is_published). A gzip stream that does
    not decompress to its end is found when the file is read (_read_gz)."""
    direction(cfg)
    check_batching(cfg)
    spm_settings(cfg)
    directory = multi30k_dir(cfg)
    missing = _missing(directory)
    if missing:
        if not bool(opt(cfg, "download", True)):
            raise DataError(_missing_message(directory, missing, "data.download=false"))
        download(directory, missing)
    for name in FILES.values():
        files.is_published(directory / name, published(name), _fix(name))


# ----------------------------------------------------------------------------- sentencepiece
def _read_gz(path: Path) -> List[str]:
    """The lines of a gzip'd text file, decompressed to the end of its stream (where a copy cut
    short or damaged shows); DataError naming the file and what is wrong."""
    fix = f"expected gzip'd UTF-8 text, one sentence a line: {_fix(Path(path).name)}"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = read_lines(f.read())
    except EOFError:
        raise DataError(f"cannot read {path}: its gzip stream ends early (cut short); {fix}") from None
    except (OSError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; {fix}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start} of the text); "
                        f"{fix}") from None
    if not lines:
        raise DataError(f"{path} holds no sentences; {fix}")
    return lines


def train_sentencepiece(lines: Sequence[str], settings: Dict[str, object]) -> bytes:
    """A serialized sentencepiece model trained on ``lines``; the same input, the same bytes."""
    import sentencepiece as spm

    spm.set_random_generator_seed(SPM_SEED)
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=out,
            vocab_size=settings["vocab_size"], model_type=settings["model_type"],
            character_coverage=settings["character_coverage"],
            normalization_rule_name=settings["normalization_rule_name"],
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>", unk_piece="<unk>",
            # determinism: one thread, all sentences in order, no sampling
            num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
            minloglevel=2)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise DataError(f"sentencepiece training failed ({msg}); check data.vocab_size="
                        f"{settings['vocab_size']} against the training split") from None
    return out.getvalue()


class SentencePieceCodec:
    """encode(str) -> ids and decode(ids) -> str with one sentencepiece model.

    Calling it decodes (it is ``meta["detokenize"]``). Picklable (the model travels as bytes,
    the processor is rebuilt lazily), so it can go to worker processes.
    """

    def __init__(self, model: bytes):
        self.model = bytes(model)
        self._sp = None

    @property
    def sp(self):
        if self._sp is None:
            import sentencepiece as spm
            self._sp = spm.SentencePieceProcessor(model_proto=self.model)
        return self._sp

    def __getstate__(self):
        return {"model": self.model}

    def __setstate__(self, state):
        self.model, self._sp = state["model"], None

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text):
        """ids of a str, or a list of id lists for a list of str (no bos/eos)."""
        return self.sp.encode(text)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    __call__ = decode


# ----------------------------------------------------------------------------- corpus
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


_MEMO: Dict[str, dict] = {}
_WARNED: set = set()


def _standard(directory: Path, shas: Dict[str, str]) -> bool:
    bad = [f for f, h in shas.items() if h != SHA256[f]]
    for f in bad:
        if (str(directory / f), shas[f]) not in _WARNED:
            _WARNED.add((str(directory / f), shas[f]))
            log.warning("%s is not the published Multi30k file (sha256 differs); using it anyway",
                        directory / f)
    return not bad


def load_corpus(cfg) -> dict:
    """{"codec", "sides": {split: {lang: Side}}, "text": {split: {lang: lines}} (eval splits),
    "standard", "model_path", "cache_path", "seconds"} for the files and settings of cfg.

    Builds (and caches) the sentencepiece model and the encoded splits the first time.
    """
    t0 = time.perf_counter()
    directory = multi30k_dir(cfg)
    settings = spm_settings(cfg)
    missing = _missing(directory)
    if missing:
        raise DataError(_missing_message(directory, missing))
    shas = {f: files.digest(directory / f) for f in FILES.values()}
    import sentencepiece as spm
    model_key = _digest({"format": CACHE_FORMAT, "train": [shas[FILES["train", l]] for l in LANGS],
                         "settings": settings, "sentencepiece": spm.__version__})
    enc_key = _digest({"format": CACHE_FORMAT, "model": model_key, "files": shas})
    if enc_key in _MEMO:
        return _MEMO[enc_key]
    cache = cache_dir(cfg) / "multi30k"
    model_path = cache / f"spm-{model_key[:16]}.model"
    enc_path = cache / f"encoded-{enc_key[:16]}.pt"

    lines = None
    model = model_path.read_bytes() if model_path.is_file() else None
    if model is None:
        lines = {(s, l): _read_gz(directory / f) for (s, l), f in FILES.items()}
        t1 = time.perf_counter()
        model = train_sentencepiece(lines["train", "de"] + lines["train", "en"], settings)
        write_atomic(model_path, lambda tmp: Path(tmp).write_bytes(model))
        log.info("multi30k: trained sentencepiece (%s, %d pieces) in %.1f s -> %s",
                 settings["model_type"], settings["vocab_size"], time.perf_counter() - t1, model_path)
    codec = SentencePieceCodec(model)

    state = load_cache(enc_path, CACHE_FORMAT, enc_key)
    if state is None:
        if lines is None:
            lines = {(s, l): _read_gz(directory / f) for (s, l), f in FILES.items()}
        for s in SPLITS:
            if len(lines[s, "de"]) != len(lines[s, "en"]):
                raise DataError(f"{directory}: {FILES[s, 'de']} has {len(lines[s, 'de'])} lines but "
                                f"{FILES[s, 'en']} has {len(lines[s, 'en'])}; the files must be aligned")
        sides = {s: {l: side_state(Side.from_lists(codec.encode(lines[s, l]))) for l in LANGS}
                 for s in SPLITS}
        text = {s: {l: lines[s, l] for l in LANGS} for s in SPLITS if s != "train"}
        state = {"format": CACHE_FORMAT, "key": enc_key, "sides": sides, "text": text}
        save_atomic(state, enc_path)
        log.info("multi30k: encoded %s -> %s", directory, enc_path)
    standard = _standard(directory, shas)  # after reading: a refused file gets no warning beside its error
    corpus = {"codec": codec, "text": state["text"], "standard": standard,
              "sides": {s: {l: side_from_state(v) for l, v in d.items()} for s, d in state["sides"].items()},
              "model_path": str(model_path), "cache_path": str(enc_path),
              "seconds": time.perf_counter() - t0}
    _MEMO[enc_key] = corpus
    return corpus


# ----------------------------------------------------------------------------- builder
@register("multi30k", check=check_multi30k)
def build_multi30k(cfg, seed: int = 0) -> DataBundle:
    src, tgt = direction(cfg)
    corpus = load_corpus(cfg)
    sides = corpus["sides"]
    train = Pairs(sides["train"][src], sides["train"][tgt])
    evals = {s: Pairs(sides[s][src], sides[s][tgt], list(corpus["text"][s][tgt]))
             for s in ("valid", "test")}
    codec = corpus["codec"]
    meta = {"vocab_size": len(codec), "dataset": "multi30k", "direction": f"{src}-{tgt}",
            "synthetic": False, "detokenize": codec, "bleu_tokenize": "13a",
            "standard_files": corpus["standard"], "spm_model": corpus["model_path"],
            "cache": corpus["cache_path"]}
    return make_bundle(train, evals, cfg, seed, meta)


def _timing(cache: str = None) -> None:  # pragma: no cover - manual measurement
    """python -m prune_cli.data.multi30k [CACHE_DIR]: first build (spm + encode) vs cached start."""
    import shutil
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = Path(cache or tempfile.mkdtemp(prefix="multi30k-cache-"))
    shutil.rmtree(cache / "multi30k", ignore_errors=True)
    cfg = {"name": "multi30k", "root": os.environ.get("PRUNE_DATA_ROOT"), "cache_dir": str(cache),
           "download": False}
    for label in ("first build (sentencepiece + encode)", "cached start (new process state)"):
        _MEMO.clear()
        t0 = time.perf_counter()
        bundle = build_multi30k(cfg, 0)
        print(f"{label}: {time.perf_counter() - t0:.2f} s; {bundle.meta['train_pairs']} train pairs, "
              f"{bundle.meta['train_too_long']} longer than max_len dropped, "
              f"{bundle.steps_per_epoch} steps/epoch")
    t0 = time.perf_counter()
    n = sum(1 for _ in bundle.train_epoch(0))
    dt = time.perf_counter() - t0
    print(f"one training epoch of batches: {dt:.2f} s ({n / dt:.0f} batches/s)")
    t0 = time.perf_counter()
    n = sum(len(b[4]) for b in bundle.eval_splits["test"]())
    print(f"test split batches: {time.perf_counter() - t0:.3f} s for {n} sentences")


if __name__ == "__main__":  # pragma: no cover
    import sys
    _timing(*sys.argv[1:2])
