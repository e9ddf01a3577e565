"""A dataset's files, checked before a run starts: one line naming the file, what is wrong
with it and what to do, raised as DataError (prune-run prints it and exits with status 2,
nothing written).

What is checked is what is known of a file. A published file (its sha256, size and first
bytes are carried by the loader): the file itself, a user's own data under the same name
(another file: the loader warns and uses it), or a damaged copy of it (refused): the size of
the published file with other bytes, or its first HEAD bytes and fewer after them (a
download cut short). A file of a format (text, gzip, pickle) is read by its loader, which
says in the same way where it ends early or holds bytes its format does not allow.

Digests are kept per (path, size, mtime) for the life of the process: prune-run checks a
dataset twice (when it validates the config, then when it builds the data), and hashing a
file once is enough.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from . import DataError, sha256_file

HEAD = 4096  # bytes: a copy that starts with the published file's first HEAD bytes is a copy of it

_DIGESTS: Dict[Tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Published:
    """What the loader knows of a published file."""

    sha256: str
    size: int
    head_sha256: str  # sha256 of its first HEAD bytes


def digest(path) -> str:
    """sha256 of a file, hashed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def require_nonempty(path, fix: str) -> int:
    """The file's size; DataError when it has none."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror}); {fix}") from None
    if size == 0:
        raise DataError(f"{path} is empty (0 bytes); {fix}")
    return size


def _head_sha256(path, n: int = HEAD) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def _ends_with_newline(path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def is_published(path, known: Published, fix: str, whole_lines_are_a_cut: bool = False) -> bool:
    """True for the published file, False for another (a user's own data under its name).

    Raises DataError for an empty file and for a damaged copy of the published one: its size
    with other bytes, or its first HEAD bytes and fewer bytes than it has (cut short).
    ``whole_lines_are_a_cut``: a text file whose shorter copy ends at a line's end is taken for
    a deliberate cut (``head -n 1000 ptb.train.txt``), not for a broken download.
    """
    size = require_nonempty(path, fix)
    got = digest(path)
    if got == known.sha256:
        return True
    name = Path(path).name
    if size == known.size:
        raise DataError(f"{path} has the size of the published {name} but other bytes (sha256 {got[:12]}..., "
                        f"expected {known.sha256[:12]}...): a damaged copy; {fix}")
    if (size < known.size and size >= HEAD and _head_sha256(path) == known.head_sha256
            and not (whole_lines_are_a_cut and _ends_with_newline(path))):
        raise DataError(f"{path} is the first {size:,} of the {known.size:,} bytes of the published {name}: "
                        f"cut short (an interrupted download or copy); {fix}")
    return False
