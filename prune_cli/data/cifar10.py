"""CIFAR-10, decoded once to a uint8 cache and served from memory with batched torch ops.

Sources, in this order (``data.root`` defaults to $PRUNE_DATA_ROOT, else <cache_dir>/data):

1. ``<root>/cifar10_jpg.tar.gz`` (train/<class>/NNNN.jpg 5,000 a class, test/<class>/NNNN.jpg
   1,000 a class; a JPEG re-encoding of CIFAR-10): decoded once into
   ``<cache_dir>/cifar10_jpg_uint8.pt``. The cache records the archive's sha256 and is
   rebuilt when the archive changes (hashing 19 MB costs ~0.05 s a run).
2. A cache made earlier: ``cifar10_jpg_uint8.pt`` (archive since removed), else
   ``cifar10_uint8.pt`` (from torchvision's canonical batches).
3. torchvision's ``CIFAR10`` in ``<root>`` (``<root>/cifar-10-batches-py``; downloaded there when
   ``data.download`` is true), converted once into ``<cache_dir>/cifar10_uint8.pt``.

``cache_dir``: ``data.cache_dir``, else $PRUNE_CACHE_DIR, else ~/.cache/prune-cli (never the
repository). ``scripts/prepare_cifar10.py`` (or :func:`prepare`) builds the cache ahead of time;
otherwise the first run does it and logs one line.

Class indices: sorted class-folder names = torchvision's order (airplane, automobile, bird,
cat, deer, dog, frog, horse, ship, truck). Image order inside a split: (class, file name).

Keys read from the ``data`` node: root, cache_dir, batch_size (128), eval_batch_size (256),
augment (true: 4-pixel zero-pad random 32x32 crop + horizontal flip, per image),
download (true), channels_last (true: batches are channels_last tensors -- see below).

Batches: ``(images, labels)``, images float32 ``[B, 3, 32, 32]`` normalised with the CIFAR-10
mean/std below, labels int64 ``[B]``. The whole split stays in memory as uint8 NHWC; a batch
is one gather + crop/flip + normalise, all vectorised torch ops (no per-image PIL). Training
order: ``torch.randperm`` with a generator seeded by (seed, epoch); augmentation of batch ``b``
uses a generator seeded by (seed, epoch, b), so ``train_epoch(epoch, start)`` skips to batch
``start`` at no cost and yields exactly the batches an uninterrupted epoch would. The last
partial training batch is dropped; evaluation ("val" = the 10,000 test images, in order)
keeps every image.

channels_last: the float batch is produced in NHWC storage (shape NCHW) because it comes
for free from the NHWC cache and MobileNet trains ~3.5x faster on CPU with channels_last
(the model must be converted too: ``model.to(memory_format=torch.channels_last)``).
``data.channels_last: false`` gives contiguous NCHW batches.
"""
import hashlib
import io
import logging
import pickle
import re
import tarfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from . import DataBundle, DataError, files, register, save_atomic, sha256_file  # noqa: F401 - c10.sha256_file
from .images import (Normalizer, cache_dir as _cache_dir, data_root, generator, opt,
                     positive_int, random_crop_flip)

log = logging.getLogger(__name__)

CLASSES: Tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
ARCHIVE = "cifar10_jpg.tar.gz"
ARCHIVE_SHA256 = "1fde636a137192241399fe9928af8c30ba7c867ca7901121faa671a7363be792"
ARCHIVE_SIZE = 19432465
ARCHIVE_HEAD_SHA256 = "93411eb87cd59bf900ec66ec62e6f410c1842e2b2291e3a49b7640a9360069c5"  # first files.HEAD bytes
JPG_CACHE = "cifar10_jpg_uint8.pt"
TV_CACHE = "cifar10_uint8.pt"
TV_DIR = "cifar-10-batches-py"
CACHE_FORMAT = 1
# Per-channel statistics of the CIFAR-10 training set (the usual constants).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
SPLITS = ("train", "test")
BATCH_RECORDS, RECORD_BYTES = 10000, 3 * IMAGE_SIZE * IMAGE_SIZE   # one torchvision batch file
_MEMBER = re.compile(r"^(?:\./)?(train|test)/([^/]+)/([^/]+\.jpe?g)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- sources

def _missing_message(root: Path, cache: Path) -> str:
    return (f"CIFAR-10 not found: put {ARCHIVE} in {root} (data.root or $PRUNE_DATA_ROOT), "
            f"or set data.download=true to fetch it with torchvision (no cache in {cache})")


def _decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [H, W, 3] (PIL; torchvision.io's decoder is deprecated since 0.29)."""
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))


def decode_archive(path) -> Dict[str, object]:
    """Read the JPEG archive into {"classes", "<split>_images" uint8 [N,32,32,3], "<split>_labels"}."""
    path = Path(path)
    files: Dict[str, List[Tuple[str, str, bytes]]] = {s: [] for s in SPLITS}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                m = _MEMBER.match(member.name)
                if m is None or not member.isfile():
                    continue
                split, cls, name = m.group(1).lower(), m.group(2), m.group(3)
                files[split].append((cls, name, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e} (expected a .tar.gz of train/<class>/*.jpg "
                        f"and test/<class>/*.jpg)") from None
    out: Dict[str, object] = {}
    classes = sorted({cls for cls, _, _ in files["train"]})
    if tuple(classes) != CLASSES:
        raise DataError(f"{path}: train/ class folders are {classes}, expected the 10 CIFAR-10 classes "
                        f"{list(CLASSES)}")
    index = {c: i for i, c in enumerate(classes)}
    for split in SPLITS:
        items = sorted(files[split], key=lambda t: (t[0], t[1]))
        bad = sorted({cls for cls, _, _ in items} - set(classes))
        if bad or not items:
            raise DataError(f"{path}: {split}/ has {'unknown classes ' + str(bad) if bad else 'no images'}")
        images = torch.empty((len(items), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8)
        for i, (cls, name, data) in enumerate(items):
            img = _decode_jpeg(data)
            if tuple(img.shape) != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise DataError(f"{path}: {split}/{cls}/{name} is {tuple(img.shape)}, expected 32x32 RGB")
            images[i] = img
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64)
    out["classes"] = list(classes)
    return out


def published_archive() -> files.Published:
    return files.Published(ARCHIVE_SHA256, ARCHIVE_SIZE, ARCHIVE_HEAD_SHA256)


def _archive_fix(root: Path) -> str:
    return (f"put the published {ARCHIVE} (sha256 {ARCHIVE_SHA256[:12]}...) in {root}, or remove it to use "
            f"torchvision's CIFAR-10 files (data.download=true)")


def _batch_problem(raw: bytes, name: str, md5: str) -> str:
    """What is wrong with one of torchvision's batch files (its md5 is not the published one)."""
    try:
        obj = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - a cut pickle raises any of several errors
        return f"is not a whole pickle ({type(e).__name__}: {' '.join(str(e).split())[:80]}): cut short or not a batch"
    if name == "batches.meta":
        if not (isinstance(obj, dict) and len(obj.get("label_names", ())) == len(CLASSES)):
            return "is a pickle but not CIFAR-10's batches.meta (no 10 label_names)"
    elif not (isinstance(obj, dict) and "data" in obj and "labels" in obj):
        return "is a pickle but not a CIFAR-10 batch (no data and labels)"
    else:
        shape, n = tuple(getattr(obj["data"], "shape", ())), len(obj["labels"])
        if shape != (BATCH_RECORDS, RECORD_BYTES) or n != BATCH_RECORDS:
            return (f"has data of shape {shape} and {n} labels, expected {BATCH_RECORDS} records of "
                    f"{RECORD_BYTES} bytes (32x32x3) and {BATCH_RECORDS} labels")
    return f"has md5 {hashlib.md5(raw).hexdigest()}, not the published {md5}: a modified copy"


def diagnose_batches(directory: Path) -> Optional[str]:
    """The first problem with torchvision's CIFAR-10 files in ``directory`` ("<file> is empty",
    "... is not a whole pickle", "... has data of shape ..."), or None. Called only after
    torchvision refused them, so a conversion that works reads the 180 MB as before (once for
    torchvision's md5 check, once to load), and only a broken one reads them a third time."""
    from torchvision.datasets.cifar import CIFAR10  # the class itself carries the published md5s

    for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]:
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        raw = path.read_bytes()
        if not raw:
            return f"{path} is empty (0 bytes)"
        if hashlib.md5(raw).hexdigest() != md5:
            return f"{path} {_batch_problem(raw, name, md5)}"
    return None


def convert_torchvision(root, download: bool) -> Dict[str, object]:
    """torchvision's CIFAR10 (canonical python batches) in ``root`` -> the cache dict."""
    import torchvision

    out: Dict[str, object] = {}
    for split in SPLITS:
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=download)
        except Exception as e:  # network errors, corrupt files, ...
            problem = diagnose_batches(Path(root) / TV_DIR) if (Path(root) / TV_DIR).is_dir() else None
            if problem:
                raise DataError(f"CIFAR-10 batch {problem}; delete {Path(root) / TV_DIR} and run with "
                                f"data.download=true to fetch it again, or put {ARCHIVE} in {root}") from None
            msg = " ".join(str(e).split())
            raise DataError(f"CIFAR-10 via torchvision in {root} failed ({msg}); put {ARCHIVE} in "
                            f"{root} instead") from None
        if tuple(ds.classes) != CLASSES:
            raise DataError(f"torchvision CIFAR10 classes {ds.classes} differ from {list(CLASSES)}")
        out[f"{split}_images"] = torch.as_tensor(ds.data, dtype=torch.uint8).contiguous()
        out[f"{split}_labels"] = torch.as_tensor(ds.targets, dtype=torch.int64)
    out["classes"] = list(CLASSES)
    return out


def _load_cache(path: Path, unreadable: Optional[List[str]] = None) -> Optional[Dict[str, object]]:
    """The cache's dict, or None (with a warning, and a note in ``unreadable``) when it cannot
    be used: it is then rebuilt from its source, if there is one."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        why = None if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else "unknown format"
    except Exception as e:  # noqa: BLE001 - a cut or foreign file raises any of several errors
        data, why = None, " ".join(str(e).split())[:100] or type(e).__name__
    if why is not None:
        log.warning("ignoring CIFAR-10 cache %s (%s)", path, why)
        if unreadable is not None:
            unreadable.append(f"{path} is unreadable ({why}): delete it")
        return None
    return data


def _archive_state(root: Path):
    archive = root / ARCHIVE
    return archive if archive.is_file() else None


def prepare(root=None, cache_dir=None, download: bool = False, force: bool = False) -> Path:
    """Make sure a decoded cache exists (decode the archive / convert torchvision's files).

    Returns the cache path. Raises DataError (one line) when no source is available.
    """
    path, _ = _ensure_cache(Path(root) if root else data_root(None),
                            Path(cache_dir) if cache_dir else _cache_dir(None), download, force)
    return path


def _ensure_cache(root: Path, cache: Path, download: bool, force: bool = False):
    """-> (cache path, loaded dict)."""
    archive = _archive_state(root)
    if archive is not None:
        files.is_published(archive, published_archive(), _archive_fix(root))  # empty or damaged: refused
        digest = files.digest(archive)
        path = cache / JPG_CACHE
        if path.is_file() and not force:
            data = _load_cache(path)
            if data is not None and data.get("sha256") == digest:
                return path, data
        t0 = time.perf_counter()
        data = decode_archive(archive)
        data.update(format=CACHE_FORMAT, source=str(archive), sha256=digest)
        if digest != ARCHIVE_SHA256:
            log.warning("%s has sha256 %s, not the published %s", archive, digest, ARCHIVE_SHA256)
        save_atomic(data, path)
        log.info("CIFAR-10: decoded %s (%d train / %d test images) into %s in %.1f s", archive,
                 len(data["train_labels"]), len(data["test_labels"]), path, time.perf_counter() - t0)
        return path, data
    unreadable: List[str] = []
    if not force:
        for name in (JPG_CACHE, TV_CACHE):
            path = cache / name
            if path.is_file():
                data = _load_cache(path, unreadable)
                if data is not None:
                    return path, data
    if download or (root / TV_DIR).is_dir():
        t0 = time.perf_counter()
        data = convert_torchvision(root, download)
        data.update(format=CACHE_FORMAT, source=f"torchvision:{root / TV_DIR}", sha256=None)
        path = cache / TV_CACHE
        save_atomic(data, path)
        log.info("CIFAR-10: converted torchvision's files in %s into %s in %.1f s", root, path,
                 time.perf_counter() - t0)
        return path, data
    raise DataError("; ".join([_missing_message(root, cache), *unreadable]))


def check_cifar10(cfg) -> None:
    """Raise DataError (one line) on bad batch sizes, no source, or an empty or damaged archive
    (its sha256, ~40 ms for 19 MB, is kept for the builder: files.digest)."""
    root, cache = data_root(cfg), _cache_dir(cfg)
    for key, default in (("batch_size", 128), ("eval_batch_size", 256)):
        positive_int(cfg, key, default, DataError)
    archive = _archive_state(root)
    if archive is not None:
        files.is_published(archive, published_archive(), _archive_fix(root))
        return
    if (root / TV_DIR).is_dir():
        return
    if any((cache / n).is_file() for n in (JPG_CACHE, TV_CACHE)):
        return
    if bool(opt(cfg, "download", True)):
        return
    raise DataError(_missing_message(root, cache))


# ----------------------------------------------------------------------------- batches

class CIFAR10Batches:
    """In-memory uint8 CIFAR-10 with deterministic, skippable, vectorised batching."""

    def __init__(self, data: Dict[str, object], seed: int, batch_size: int = 128,
                 eval_batch_size: int = 256, augment: bool = True, channels_last: bool = True):
        self.train_images: torch.Tensor = data["train_images"]
        self.train_labels: torch.Tensor = data["train_labels"]
        self.test_images: torch.Tensor = data["test_images"]
        self.test_labels: torch.Tensor = data["test_labels"]
        self.classes = list(data["classes"])
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.augment = bool(augment)
        self.normalize = Normalizer(MEAN, STD, channels_last)
        self.steps_per_epoch = len(self.train_labels) // self.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"data.batch_size {batch_size} exceeds the {len(self.train_labels)} "
                            f"training images")

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.train_labels), generator=generator(self.seed, epoch))

    def train_epoch(self, epoch: int, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        perm = self.order(epoch)
        b = self.batch_size
        for i in range(max(0, int(start)), self.steps_per_epoch):
            idx = perm[i * b:(i + 1) * b]
            images = self.train_images.index_select(0, idx)  # ~100x faster than [idx] here
            if self.augment:
                images = random_crop_flip(images, 4, generator(self.seed, epoch, i))
            yield self.normalize(images), self.train_labels[idx]

    def eval_batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        b = self.eval_batch_size
        for i in range(0, len(self.test_labels), b):
            yield self.normalize(self.test_images[i:i + b]), self.test_labels[i:i + b]


@register("cifar10", check=check_cifar10)
def build_cifar10(cfg, seed: int = 0) -> DataBundle:
    root, cache = data_root(cfg), _cache_dir(cfg)
    batch_size = positive_int(cfg, "batch_size", 128, DataError)
    eval_batch_size = positive_int(cfg, "eval_batch_size", 256, DataError)
    path, data = _ensure_cache(root, cache, bool(opt(cfg, "download", True)))
    ds = CIFAR10Batches(data, seed, batch_size, eval_batch_size, bool(opt(cfg, "augment", True)),
                        bool(opt(cfg, "channels_last", True)))
    meta = {"num_classes": len(ds.classes), "image_size": IMAGE_SIZE, "dataset": "cifar10",
            "synthetic": False, "classes": ds.classes, "train_size": len(ds.train_labels),
            "eval_size": len(ds.test_labels), "source": str(data.get("source")), "cache": str(path)}
    return DataBundle(train_epoch=ds.train_epoch, steps_per_epoch=ds.steps_per_epoch,
                      eval_splits={"val": ds.eval_batches}, meta=meta)


def _timing(root=None, cache_dir=None, batches: int = 200) -> None:  # pragma: no cover - manual
    """python -m prune_cli.data.cifar10 [root] [cache_dir]: decode time and loader speed."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(root) if root else data_root(None)
    cache = Path(cache_dir) if cache_dir else _cache_dir(None)
    t0 = time.perf_counter()
    _, data = _ensure_cache(root, cache, False, force=True)
    print(f"decode {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    path, data = _ensure_cache(root, cache, False)
    print(f"load cache {time.perf_counter() - t0:.2f} s")
    for cl in (True, False):
        ds = CIFAR10Batches(data, 0, channels_last=cl)
        it = ds.train_epoch(0)
        t0 = time.perf_counter()
        n = 0
        for _, (x, _) in zip(range(batches), it):
            n += x.shape[0]
        dt = time.perf_counter() - t0
        print(f"train loader channels_last={cl}: {n / dt:.0f} images/s ({n / dt / 128:.0f} batches/s)")


if __name__ == "__main__":  # pragma: no cover
    import sys
    _timing(*sys.argv[1:3])
