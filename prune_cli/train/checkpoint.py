"""Checkpoints: everything a run needs to continue exactly where it stopped."""
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from prune_cli.train.results import writing


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do. The file is never touched."""


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Sink(io.RawIOBase):
    """The file torch.save writes through, keeping the OSError of a failed write: torch reports
    it as a RuntimeError that does not say why (no space left, permission lost)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise


def save(path: Path, state: dict) -> None:
    """Write atomically and durably: a temporary file, flushed to the disk (fsync), renamed over
    the previous checkpoint. A kill or a full disk at any moment leaves the previous one intact;
    a failed write raises results.WriteError naming the file and the reason."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tmp):
        with open(tmp, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(state, sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:80]}); "
                              "it was left as it is: move it away to start this run over") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a prune-cli checkpoint; it was left as it is: move it away to start over")
    return state
