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
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from prune_cli.pruning import OneShotSchedule, stream_seed
from prune_cli.train import checkpoint as ckpt
from prune_cli.train.results import RunFolder


class StartError(Exception):
    """A source of weights or masks that cannot be used (exit status 2; nothing was written)."""


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
        if recorded is None:  # a checkpoint from before train/start.py: it recorded init_from only
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
    if init == "auto":
        path = find_dense_run(cfg, cfg.seed) if sparse else None
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
    pruner_state = ckpt.load(source / "checkpoint.pt").get("pruner") or {}
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


def _summary(folder: Path) -> Optional[dict]:
    try:
        rec = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _model_config(cfg) -> str:
    from prune_cli.train.loop import cfg_container
    return json.dumps(cfg_container(cfg.model), sort_keys=True)


def find_dense_run(cfg, seed: int) -> Optional[str]:
    """init_from=auto: the finished dense run of the same model and data (and translation
    direction), same seed preferred; its checkpoint.pt."""
    want_model = _model_config(cfg)
    found = []
    for summary in sorted(Path(cfg.results_dir, "runs").glob("*/*/summary.json")):
        rec = _summary(summary.parent)
        ckpt_path = summary.parent / "checkpoint.pt"
        if (rec is not None and rec.get("target_sparsity") == 0 and rec.get("model_config") == want_model
                and not rec.get("budget_match")  # an equal-compute twin (train/budget.py) is no dense start
                and rec.get("dataset") == cfg.data.name and rec.get("direction") == cfg.data.get("direction")
                and ckpt_path.is_file()):
            found.append((rec.get("seed") != seed, str(ckpt_path)))
    return min(found)[1] if found else None


def find_mask_source(cfg) -> Path:
    """pruning.mask_from=auto: the finished magnitude-pruned run (its own masks, not fixed ones)
    of the same model, data, sparsity, scheme, pattern and seed in results_dir, one of this
    experiment first; with pruning.rewind_step=K, one that kept step K."""
    p, sparsity = cfg.pruning, float(cfg.sparsity)
    want_model, rewind = _model_config(cfg), p.get("rewind_step")
    found, without_step = [], []
    for summary in sorted(Path(cfg.results_dir, "runs").glob("*/*/summary.json")):
        rec = _summary(summary.parent)
        if (rec is None or rec.get("status") != "finished" or rec.get("mask_from") is not None
                or rec.get("criterion", "magnitude") != "magnitude" or rec.get("model_config") != want_model
                or rec.get("dataset") != cfg.data.name or rec.get("direction") != cfg.data.get("direction")
                or abs(float(rec.get("target_sparsity") or 0) - sparsity) > 1e-9 or rec.get("seed") != cfg.seed
                or rec.get("scheme") != p.scheme or rec.get("pattern", "unstructured") != _pattern(cfg)
                or not (summary.parent / "checkpoint.pt").is_file()):
            continue
        has_step = rewind is None or RunFolder(summary.parent).kept_checkpoint(rewind).is_file()
        (found if has_step else without_step).append((rec.get("exp_name") != cfg.exp_name, str(summary.parent)))
    if found:
        return Path(min(found)[1])
    if without_step:
        raise StartError(f"pruning.rewind_step={rewind}: the mask source {min(without_step)[1]} did not keep step {rewind}; "
                         f"run it with trainer.keep_steps=[{rewind}], or rewind to a step it kept")
    raise StartError(f"pruning.mask_from=auto: no finished magnitude-pruned run of this model and data at sparsity "
                     f"{sparsity:g} (scheme {p.scheme}, seed {cfg.seed}) in {Path(cfg.results_dir, 'runs')}; "
                     "run it first (a prune-run -m sweep runs mask sources first), or give pruning.mask_from=RUN_DIR")


def _pattern(cfg) -> str:
    from prune_cli.pruning import parse_pattern
    nm = parse_pattern(cfg.pruning.get("pattern", "unstructured"))
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


def check_source(source: Path, cfg, sparsity: float) -> dict:
    """The summary of ``source``, a finished sparse run whose masks fit this run; StartError
    (one line) otherwise. Reads summary.json only: cheap enough for every job of a sweep."""
    where = f"pruning.mask_from={source}"
    if not source.is_dir():
        raise StartError(f"{where}: no such run folder; give the folder of a finished sparse run "
                         "(it holds summary.json and checkpoint.pt), or auto")
    rec = _summary(source)
    if rec is None or rec.get("status") != "finished":
        raise StartError(f"{where}: the run is not finished (no summary.json); let it finish "
                         "(the same command resumes it), or give a finished run")
    if not (source / "checkpoint.pt").is_file():
        raise StartError(f"{where}: the run has no checkpoint.pt to take its masks from; give a run folder that has one")
    model = cfg.model.name
    if rec.get("model") != model:
        raise StartError(f"{where} is a {rec.get('model')} run, this run trains {model}; give a run of the same model")
    theirs, ours = json.loads(rec.get("model_config") or "{}"), json.loads(_model_config(cfg))
    differ = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if differ:
        k = differ[0]
        raise StartError(f"{where} trained another {model} (model.{k}={theirs.get(k)}, this run {ours.get(k)}); "
                         "give a run of the same model and size")
    theirs_sparsity = float(rec.get("target_sparsity") or 0)
    if theirs_sparsity == 0:
        raise StartError(f"{where} is a dense run: it has no masks; give a sparse run")
    if abs(theirs_sparsity - sparsity) > 1e-6:
        raise StartError(f"sparsity={sparsity:g} disagrees with {where} (pruned to {theirs_sparsity:g}); "
                         f"use sparsity={theirs_sparsity:g}")
    for key, ours_value, default in (("scheme", cfg.pruning.scheme, "uniform"), ("pattern", _pattern(cfg), "unstructured")):
        if (rec.get(key) or default) != ours_value:
            raise StartError(f"pruning.{key}={ours_value} disagrees with {where} ({key} {rec.get(key) or default}); "
                             f"use pruning.{key}={rec.get(key) or default}")
    return rec


def kept_checkpoint(source: Path, step: int) -> Path:
    """``source``'s checkpoint of step ``step`` (trainer.keep_steps); StartError naming the kept ones."""
    path = RunFolder(source).kept_checkpoint(step)
    if not path.is_file():
        kept = sorted(int(f.stem[len("checkpoint_step"):]) for f in source.glob("checkpoint_step*.pt")
                      if f.stem[len("checkpoint_step"):].isdigit())
        raise StartError(f"pruning.rewind_step={step}: {source} did not keep step {step} "
                         f"(kept: {', '.join(map(str, kept)) or 'none'}); run it with trainer.keep_steps=[{step}], "
                         "or rewind to a step it kept")
    return path
