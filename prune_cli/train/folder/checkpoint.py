"""Checkpoints: everything a run needs to continue exactly where it stopped, and whether a
checkpoint may be resumed by the command at hand."""
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from prune_cli.train.folder.files import writing

# Keys that may differ between a checkpoint and the command resuming it.
# data.task follows from data.name (it is there for validation), so checkpoints written before
# it existed still resume.
VOLATILE = ("results_dir", "exp_name", "device", "init_from", "trainer.progress", "trainer.threads", "data.root",
            "data.download", "data.cache_dir", "data.task", "trainer.keep_steps", "trainer.tensorboard")
# Keys added after checkpoints were written: at their default they mean what their absence did.
ADDED = {"pruning.criterion": "magnitude", "pruning.mask_from": None, "pruning.rewind_step": None,
         "trainer.eval_at": [], "trainer.diverge_factor": 10}


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do. The file is never touched."""


def _drop(container: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        container = container.get(key, {})
    container.pop(last, None)


def comparable(container: dict) -> dict:
    """A run's config (as plain Python) less what may change between a checkpoint and its resume."""
    container = json.loads(json.dumps(container))
    for key in VOLATILE:
        _drop(container, key)
    for key, default in ADDED.items():
        group, name = key.split(".")
        if container.get(group, {}).get(name, default) == default:
            _drop(container, key)
    return container


def check_resumable(state: dict, path: Path, config: dict, world_size: int) -> None:
    """CheckpointError (one line) when the checkpoint ``state`` at ``path`` was written by another
    config (``config``: the run's, as plain Python) or another number of ranks."""
    if comparable(state["config"]) != comparable(config):
        raise CheckpointError(f"checkpoint {path} was written by a different config; it was left as it is: "
                              "use another exp_name or results_dir, or move the folder away")
    if state.get("world_size", 1) != world_size:
        raise CheckpointError(f"checkpoint {path} was written by {state.get('world_size', 1)} rank(s), this run has "
                              f"{world_size}: resume with the same number of processes (each rank's RNG and "
                              "data state is in it), or move the folder away")


def restore(state: dict, path: Path, model, optimizer, pruner) -> None:
    """Load a checkpoint's model, optimizer and pruner states; CheckpointError when they do not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        pruner.load_state_dict(state["pruner"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this run ({str(e).splitlines()[0][:100]}); "
                              "it was left as it is: move it away to start over") from None


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
