"""Where a run's weights and masks come from: one decision, made before the run folder is.

Weights (``Start.init``):
  fresh    the model's own initialiser under the run's seed. A fixed-mask run draws it from a
           stream derived from the seed (``stream_seed(seed, "reinit")``): with the seed itself it
           would be its mask source's very initialisation (same seed, same model), a lottery
           ticket at step 0 rather than the re-initialised "scratch" control of Liu et al. (2019).
  trained  a checkpoint's weights: ``init_from=PATH``, or ``init_from=auto``, the finished dense
           run of the same model (a sparse run pruning a trained model, section 4.1).
  rewind   a checkpoint a run kept at step K (``trainer.keep_steps``), for a fixed-mask run: its
           weights times the mask, and the run's step counter, learning rate and data order
           start at K and run to the end of the recipe; the optimizer and the task's carried
           state (an LM's hidden state) start afresh (OpenLTH's rewinding: only the model's
           state is taken from step K).

Masks: the run's own pruning (``pruning.criterion`` magnitude | random, eq. 1), or fixed: the
final masks of a finished sparse run (``pruning.mask_from=RUN_DIR`` or ``auto``), set at the run's
first step and never changed. A fixed-mask run trains the recipe a dense run of its model would.

A resumed run keeps the start it began with (recorded in its checkpoint), masks included, so
it needs neither its mask source nor its init checkpoint again.
"""
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from prune_cli.pruning import OneShotSchedule, stream_seed
from prune_cli.pruning.dynamic import is_dynamic
from prune_cli.train.folder import checkpoint as ckpt
from prune_cli.train.folder.files import RunFolder
from prune_cli.train.plan.sources import StartError, check_source, find_dense_run, find_mask_source, kept_checkpoint


@dataclass(frozen=True)
class Start:
    init: str = "fresh"                 # fresh | trained | rewind
    init_from: str = "scratch"          # the checkpoint the weights come from, or "scratch"
    first_step: int = 0                 # the rewind step K; 0 otherwise
    from_trained: bool = False          # the sparse-from-trained recipe (train/optim.recipe) applies
    criterion: str = "magnitude"        # how the masks were chosen (a fixed-mask run: its source's criterion)
    mask_from: Optional[str] = None     # a fixed-mask run's source run folder
    mask_source: Optional[str] = None   # the same as EXP/RUN_ID (results/runs-relative), for the report
    masks: Optional[dict] = field(default=None, repr=False, compare=False)    # the source's pruner state
    weights: Optional[dict] = field(default=None, repr=False, compare=False)  # the init checkpoint's model state

    @property
    def fixed(self) -> bool:
        return self.mask_from is not None

    def record(self) -> dict:
        """What a checkpoint keeps of the start (loop.extra["start"]): all but the tensors."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("masks", "weights")}

    def summary(self) -> dict:
        """The start's fields in summary.json."""
        return {"init": self.init, "init_from": self.init_from,
                "rewind_step": self.first_step if self.init == "rewind" else None,
                "criterion": self.criterion, "mask_from": self.mask_from, "mask_source": self.mask_source}

    def check_within(self, total_steps: int) -> None:
        if self.first_step >= total_steps:
            raise StartError(f"the run rewinds to step {self.first_step} ({self.init_from}), which is not before the end "
                             f"of its training ({total_steps} steps); rewind to an earlier step")

    def schedule(self, sparsity: float):
        """A fixed-mask run's schedule: one update, at its first step, that sets its source's masks."""
        return OneShotSchedule(sparsity, step=self.first_step) if self.fixed else None

    def load_weights(self, model, build: Callable[[], torch.nn.Module], seed: int) -> None:
        """Put the start's weights into ``model`` (a fresh run's model, built under the run's ``seed``).
        ``build``: makes the model again (same initialiser), for a fixed-mask run's re-initialisation."""
        if self.weights is not None:
            try:
                model.load_state_dict(self.weights)
            except RuntimeError as e:
                raise StartError(f"init_from={self.init_from} does not fit this model "
                                 f"({str(e).splitlines()[0][:100]}); give a checkpoint of the same model and size") from None
        elif self.fixed:
            with torch.random.fork_rng(devices=[]):  # the run's own RNG streams go on untouched
                torch.manual_seed(stream_seed(seed, "reinit"))
                model.load_state_dict(build().state_dict())

    def __str__(self):
        text = {"fresh": "fresh", "trained": f"trained ({self.init_from})",
                "rewind": f"rewind to step {self.first_step} ({self.init_from})"}[self.init]
        return text + (f"; masks fixed from {self.mask_from}" if self.fixed else "")


def decide(cfg, state: Optional[dict] = None) -> Start:
    """The start of a run with config ``cfg`` (sparsity already effective); ``state``: its own
    checkpoint when it resumes. Raises StartError (one line) for a source that cannot be used."""
    if state is not None:
        extra = state.get("loop", {}).get("extra", {})
        recorded = extra.get("start")
        if recorded is None:  # a checkpoint from before train/plan/start.py: it recorded init_from only
            init_from = extra.get("init_from", "scratch")
            recorded = {"init": "fresh" if init_from == "scratch" else "trained", "init_from": init_from,
                        "from_trained": init_from != "scratch" and float(cfg.sparsity) > 0}
        start = Start(**recorded)
        return replace(start, masks=state["pruner"]) if start.fixed else start
    if cfg.pruning.get("mask_from") is None:
        return _own_masks(cfg)
    return _fixed_masks(cfg)


def _own_masks(cfg) -> Start:
    criterion = cfg.pruning.get("criterion", "magnitude")
    sparse = float(cfg.sparsity) > 0
    init = str(cfg.init_from)
    if init == "auto":  # a dynamic sparse run (RigL, SET) trains sparse from its first step, from scratch
        path = find_dense_run(cfg, cfg.seed) if sparse and not is_dynamic(cfg.pruning) else None
    else:
        path = None if init == "none" else str(Path(init).expanduser())
    if path is None:
        return Start(criterion=criterion)
    # Sections 4.1 and 4.3: pruning a trained model has a recipe of its own.
    return Start(init="trained", init_from=path, from_trained=sparse, criterion=criterion,
                 weights=ckpt.load(Path(path))["model"])


def _fixed_masks(cfg) -> Start:
    p = cfg.pruning
    source = find_mask_source(cfg) if str(p.mask_from) == "auto" else Path(str(p.mask_from)).expanduser()
    summary = check_source(source, cfg, float(cfg.sparsity))
    pruner_state = ckpt.load(RunFolder(source).checkpoint).get("pruner") or {}
    if not pruner_state.get("masks"):
        raise StartError(f"pruning.mask_from={source}: its checkpoint.pt holds no masks; give a finished sparse run")
    rewind, init = p.get("rewind_step"), str(cfg.init_from)
    path = kept_checkpoint(source, rewind) if rewind is not None else (
        None if init in ("auto", "none") else Path(init).expanduser())
    common = dict(criterion=summary.get("criterion") or "magnitude", mask_from=str(source),
                  mask_source=_relative(source, cfg), masks=pruner_state)
    if path is None:
        return Start(**common)
    state = ckpt.load(path)
    kept = state.get("kept_step")
    if kept is None:  # a trained model's checkpoint: its weights, the recipe from step 0
        return Start(init="trained", init_from=str(path), weights=state["model"], **common)
    if (state.get("pruner") or {}).get("masks"):
        raise StartError(f"{path} was kept at step {kept}, after its run began pruning: its weights are already "
                         "pruned; rewind to a step before pruning began, or to a dense run's kept checkpoint")
    return Start(init="rewind", init_from=str(path), first_step=int(kept), weights=state["model"], **common)


def _relative(source: Path, cfg) -> str:
    """EXP/RUN_ID when ``source`` lies in this results_dir, else the folder's own path."""
    try:
        return source.resolve().relative_to(Path(cfg.results_dir, "runs").resolve()).as_posix()
    except ValueError:
        return str(source)
