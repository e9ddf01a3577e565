"""Which finished runs a run may start from: the dense run a sparse run prunes (init_from=auto),
the mask source of a fixed-mask run (pruning.mask_from), the step it rewinds to. One test of
"that run matches my config" (``mismatch``) serves all three; run folders are read through
folder/files.py alone."""
import json
from pathlib import Path
from typing import Optional

from prune_cli.config import cfg_container
from prune_cli.pruning import parse_pattern
from prune_cli.train.folder.files import RunFolder, finished_runs


class StartError(Exception):
    """A source of weights or masks that cannot be used (exit status 2; nothing was written)."""


def _model_config(cfg) -> str:
    return json.dumps(cfg_container(cfg.model), sort_keys=True)


def _pattern(cfg) -> str:
    nm = parse_pattern(cfg.pruning.get("pattern", "unstructured"))
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


# What a source run must share with this one, in the order its mismatch is reported.
SAME_MODEL = ("model", "model_config", "dataset", "direction")
SAME_MASKS = SAME_MODEL + ("sparsity", "scheme", "pattern")


def mismatch(rec: dict, cfg, sparsity: float, keys=SAME_MASKS):
    """The first of ``keys`` in which the finished run ``rec`` (its summary.json) differs from what
    this run (``cfg`` at ``sparsity``) needs, as (key, theirs, ours); None when it fits. The one
    test of "that run matches my config" for dense starts, mask sources and named sources alike."""
    ours = {"model": cfg.model.name, "model_config": _model_config(cfg), "dataset": cfg.data.name,
            "direction": cfg.data.get("direction"), "sparsity": float(sparsity), "scheme": cfg.pruning.scheme,
            "pattern": _pattern(cfg), "seed": cfg.seed}
    theirs = {"model": rec.get("model"), "model_config": rec.get("model_config"), "dataset": rec.get("dataset"),
              "direction": rec.get("direction"), "sparsity": float(rec.get("target_sparsity") or 0),
              "scheme": rec.get("scheme") or "uniform", "pattern": rec.get("pattern") or "unstructured",
              "seed": rec.get("seed")}
    for key in keys:
        same = abs(theirs[key] - ours[key]) <= 1e-6 if key == "sparsity" else theirs[key] == ours[key]
        if not same:
            return key, theirs[key], ours[key]
    return None


def find_dense_run(cfg, seed: int) -> Optional[str]:
    """init_from=auto: the finished dense run of the same model and data (and translation
    direction), same seed preferred; its checkpoint.pt."""
    found = [(rec.get("seed") != seed, str(folder.checkpoint)) for folder, rec in finished_runs(cfg.results_dir)
             if mismatch(rec, cfg, 0.0, SAME_MODEL + ("sparsity",)) is None
             and not rec.get("budget_match")  # an equal-compute twin (plan/budget.py) is no dense start
             and folder.checkpoint.is_file()]
    return min(found)[1] if found else None


def find_mask_source(cfg) -> Path:
    """pruning.mask_from=auto: the finished magnitude-pruned run (its own masks, not fixed ones)
    of the same model, data, sparsity, scheme, pattern and seed in results_dir, one of this
    experiment first; with pruning.rewind_step=K, one that kept step K."""
    p, sparsity, rewind = cfg.pruning, float(cfg.sparsity), cfg.pruning.get("rewind_step")
    found, without_step = [], []
    for folder, rec in finished_runs(cfg.results_dir):
        if (rec.get("status") != "finished" or rec.get("mask_from") is not None
                or rec.get("criterion", "magnitude") != "magnitude"
                or mismatch(rec, cfg, sparsity, SAME_MASKS + ("seed",)) is not None or not folder.checkpoint.is_file()):
            continue
        has_step = rewind is None or folder.kept_checkpoint(rewind).is_file()
        (found if has_step else without_step).append((rec.get("exp_name") != cfg.exp_name, str(folder.path)))
    if found:
        return Path(min(found)[1])
    if without_step:
        raise StartError(f"pruning.rewind_step={rewind}: the mask source {min(without_step)[1]} did not keep step {rewind}; "
                         f"run it with trainer.keep_steps=[{rewind}], or rewind to a step it kept")
    raise StartError(f"pruning.mask_from=auto: no finished magnitude-pruned run of this model and data at sparsity "
                     f"{sparsity:g} (scheme {p.scheme}, seed {cfg.seed}) in {Path(cfg.results_dir, 'runs')}; "
                     "run it first (a prune-run -m sweep runs mask sources first), or give pruning.mask_from=RUN_DIR")


def check_source(source: Path, cfg, sparsity: float) -> dict:
    """The summary of ``source``, a finished sparse run whose masks fit this run; StartError
    (one line) otherwise. Reads summary.json only: cheap enough for every job of a sweep."""
    where = f"pruning.mask_from={source}"
    if not source.is_dir():
        raise StartError(f"{where}: no such run folder; give the folder of a finished sparse run "
                         "(it holds summary.json and checkpoint.pt), or auto")
    folder = RunFolder(source)
    rec = folder.read_summary()
    if rec is None or rec.get("status") != "finished":
        raise StartError(f"{where}: the run is not finished (no summary.json); let it finish "
                         "(the same command resumes it), or give a finished run")
    if not folder.checkpoint.is_file():
        raise StartError(f"{where}: the run has no checkpoint.pt to take its masks from; give a run folder that has one")
    model = cfg.model.name
    found = mismatch(rec, cfg, sparsity, ("model", "model_config", "sparsity", "scheme", "pattern"))
    key, theirs, ours = found or (None, None, None)
    if key == "model":
        raise StartError(f"{where} is a {theirs} run, this run trains {model}; give a run of the same model")
    if key == "model_config":
        theirs, ours = json.loads(theirs or "{}"), json.loads(ours)
        k = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise StartError(f"{where} trained another {model} (model.{k}={theirs.get(k)}, this run {ours.get(k)}); "
                         "give a run of the same model and size")
    if key == "sparsity" and theirs == 0:
        raise StartError(f"{where} is a dense run: it has no masks; give a sparse run")
    if key == "sparsity":
        raise StartError(f"sparsity={sparsity:g} disagrees with {where} (pruned to {theirs:g}); use sparsity={theirs:g}")
    if key is not None:
        raise StartError(f"pruning.{key}={ours} disagrees with {where} ({key} {theirs}); use pruning.{key}={theirs}")
    return rec


def kept_checkpoint(source: Path, step: int) -> Path:
    """``source``'s checkpoint of step ``step`` (trainer.keep_steps); StartError naming the kept ones."""
    path = RunFolder(source).kept_checkpoint(step)
    if not path.is_file():
        kept = RunFolder(source).kept_steps()
        raise StartError(f"pruning.rewind_step={step}: {source} did not keep step {step} "
                         f"(kept: {', '.join(map(str, kept)) or 'none'}); run it with trainer.keep_steps=[{step}], "
                         "or rewind to a step it kept")
    return path
