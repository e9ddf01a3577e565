"""One writer per run folder: an exclusive lock on RUN/.lock, taken before anything is written
into the folder and held until the run ends.

The lock is the ``filelock`` package's (pinned; torch depends on it too): on Unix an ``flock(2)``
on the file, which the kernel drops the moment its process dies, however it dies (kill -9
included), so a lock left by a dead process never blocks the next start. What makes the package
worth having over a hand-written ``fcntl`` call: a forked child (ImageNet's DataLoader workers)
would inherit a bare flock and keep a killed run's lock until it noticed and exited, and the
restart would be told the run is "running elsewhere"; filelock closes the lock in every forked
child. ``fcntl``'s other lock, POSIX ``lockf``, is not inherited, but any close of any descriptor
of the file drops it, a trap for any code that reads the folder. On NFS, the file system a
cluster's nodes share, Linux sends flock to the server as a POSIX lock, so nodes exclude each
other, and a lost node's lock ends with its NFSv4 lease. ``fallback_to_soft=False``: where the
file system has no flock, fail rather than use a lock file a killed run would leave blocking.

The .lock file exists only while a run holds it (or was killed holding it): its holder unlinks it
before letting go (filelock's next taker sees the unlinked file and takes the new one), and
removes the folders it made if the run wrote nothing into them. It holds the holder's pid, host
and start time, for the others' "running elsewhere" line.
"""
import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from prune_cli.train.folder.files import WriteError

NAME = ".lock"
# A probe (held_elsewhere) holds a shared lock for microseconds: a start that meets one tries again
# for this long before it concludes that another run holds the folder.
GRACE_S = 0.25


class RunningElsewhere(Exception):
    """Another process holds the run folder's lock: the run is left to it (exit status 0)."""


class RunLock:
    """The exclusive claim on one run folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.note = ""   # what acquire() wrote into .lock
        self._lock = None
        self._made = []  # folders that acquire() created: removed again if nothing was written in them

    def acquire(self, grace: float = GRACE_S) -> bool:
        """Take the lock without waiting for a holder; False if another process holds it."""
        self.note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        lock = FileLock(self.path, fallback_to_soft=False, on_acquired=self._write_note)
        while True:
            missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()][::-1]
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made += [p for p in missing if p not in self._made]
            try:
                lock.acquire(timeout=grace, poll_interval=0.02)
            except Timeout:
                return False
            except FileNotFoundError:  # a refused run's folder was removed since mkdir: make it again
                continue
            self._lock = lock
            return True

    def _write_note(self, fd: int) -> None:
        try:  # who holds it, for the others' message; the lock does not depend on it
            os.ftruncate(fd, 0)
            os.write(fd, self.note.encode())
        except OSError:
            pass

    def release(self) -> None:
        """Unlink .lock, then let go; remove the folders acquire() made if they are still empty
        (a run refused before its first write leaves results/ as it was)."""
        if self._lock is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None
        for folder in reversed(self._made):
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote into it, or another process did
                break
        self._made = []


def holder(folder) -> str:
    """Who holds ``folder``'s lock, as its holder wrote it ("" if unknown)."""
    try:
        return (Path(folder) / NAME).read_text().strip()
    except OSError:
        return ""


def held_elsewhere(folder) -> bool:
    """Whether a process holds ``folder``'s lock now (one that is not this very call's). Creates
    nothing, and asks with a shared flock, which conflicts only with a holder's exclusive one."""
    try:
        fd = os.open(Path(folder) / NAME, os.O_RDONLY)
    except OSError:  # no lock file (nobody holds it), or one this user cannot read (cannot tell)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def claim(folder, parallel):
    """Hold ``folder`` (a RunFolder) for the duration of the block, or raise RunningElsewhere.

    Rank 0 alone takes the lock (it alone writes) and tells the other ranks what it found. A
    finished folder is not locked: nothing will be written into it (run.py says so and returns)."""
    lock = RunLock(folder.path) if parallel.is_main and not folder.finished else None
    try:
        got = lock is None or lock.acquire()
    except OSError as e:
        raise WriteError(f"cannot write {folder.path / NAME}: {e.strerror or e}") from None
    if not parallel.gather(got)[0]:
        raise RunningElsewhere(f"{folder.path} is running elsewhere ({holder(folder.path) or 'another process'}): "
                               "left to that process")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
