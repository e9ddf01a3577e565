"""Datasets, one builder a dataset, found by name.

A builder takes the composed ``data`` config node (``data.root`` already resolved to a
path) and the run's seed, and returns a :class:`DataBundle`. Builders check their files
in :func:`check` *before* any work, so that a missing file is one clear line, not a
traceback half-way through a run. A user's dataset is found the other way, by the ``_target_``
its config names (prune_cli.builders), and returns the same DataBundle.
"""
import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator

_BUILDERS: Dict[str, Callable[..., "DataBundle"]] = {}
_CHECKS: Dict[str, Callable[..., None]] = {}
_MODULES = ("ptb", "cifar10", "imagenet", "fake_imagenet", "multi30k", "wmt16", "fake_wmt16")


class DataError(Exception):
    """Data that is missing or malformed; the message is one line saying what to do."""


@dataclass
class DataBundle:
    """What the training loop needs from a dataset.

    train_epoch(epoch, start): the batches of one training epoch, from batch ``start`` on;
        deterministic given the seed and the epoch, so that a resumed run sees exactly the
        batches an uninterrupted run would have seen.
    steps_per_epoch: number of batches train_epoch(epoch, 0) yields.
    eval_splits: split name -> zero-argument callable returning an iterable of batches
        ("valid", "test" for PTB; "val" for images).
    meta: facts models and tasks need: vocab_size / num_classes, image_size, synthetic.
    """

    train_epoch: Callable[[int, int], Iterator[Any]]
    steps_per_epoch: int
    eval_splits: Dict[str, Callable[[], Iterable[Any]]]
    meta: Dict[str, Any] = field(default_factory=dict)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (downloads and caches are checked against it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename: a cache is either whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path) -> None:
    """torch.save, atomically (write_atomic)."""
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def register(name: str, check: Callable[..., None] = None):
    def wrap(fn):
        _BUILDERS[name] = fn
        if check is not None:
            _CHECKS[name] = check
        return fn
    return wrap


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def names():
    _load_all()
    return sorted(_BUILDERS)


def check(data_cfg) -> None:
    """Raise DataError (one line) if the dataset's files are not where data_cfg says."""
    _load_all()
    if data_cfg.name not in _BUILDERS:
        raise DataError(f"unknown data '{data_cfg.name}'; valid: {', '.join(names())}")
    if data_cfg.name in _CHECKS:
        _CHECKS[data_cfg.name](data_cfg)


def builder(name: str) -> Callable[..., DataBundle]:
    """The registered builder of dataset ``name`` (after :func:`check`)."""
    _load_all()
    return _BUILDERS[name]


def build(data_cfg, seed: int) -> DataBundle:
    check(data_cfg)
    return _BUILDERS[data_cfg.name](data_cfg, seed)
