"""The shared vocabulary of a run's config: its errors, where configs live, and the few facts
every layer reads the same way (the effective sparsity, the task, the model's width keys).

Checks of a composed config live in checks.py; this module imports nothing from train/.
"""
import os
from pathlib import Path
from typing import List

from omegaconf import OmegaConf, open_dict

from prune_cli.pruning import parse_pattern, pattern_sparsity

GROUPS = ("model", "data", "pruning", "optim", "trainer", "budget", "experiment", "point", "control")
# The keys that say how big a model is, one per family (summary.json, budgets and the report use them).
WIDTH_KEYS = ("size", "hidden", "width", "units")


class ConfigError(Exception):
    """Bad input. The message is one line: what is wrong, what is allowed."""


def data_home() -> str:
    """Default data root when PRUNE_DATA_ROOT is unset: a per-user cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prune-cli", "data")


def conf_dir() -> Path:
    import prune_cli.conf
    return Path(list(prune_cli.conf.__path__)[0])


def search_dirs(args=()) -> List[Path]:
    """The config folders a command line composes from: the package's conf/, then the folder
    given with --config-dir / -cd (Hydra searches them in that order; the last one given wins)."""
    given, args = None, list(args)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            given = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return [conf_dir()] + ([Path(given).expanduser().absolute()] if given else [])


def group_options(group: str, dirs=None):
    """The options of a config group, over ``dirs`` (default: the package's conf/ alone)."""
    found = set()
    for folder in dirs or [conf_dir()]:
        found.update(p.stem for p in (Path(folder) / group).glob("*.yaml"))
    return sorted(found)


def cfg_container(cfg) -> dict:
    """A config as plain, resolved Python (what checkpoints and summaries record)."""
    return OmegaConf.to_container(cfg, resolve=True)


def effective_sparsity(cfg) -> float:
    """The run's final sparsity: ``sparsity``, or 1 - N/M when pruning.pattern=N:M leaves it 0."""
    pattern = cfg.pruning.get("pattern", "unstructured")
    return pattern_sparsity(pattern) if parse_pattern(pattern) else float(cfg.sparsity)


def run_config(cfg):
    """The config a run trains with: a copy without Hydra's run_id, its sparsity made effective."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("run_id", None)
        cfg.sparsity = effective_sparsity(cfg)  # pruning.pattern=N:M alone means sparsity 1 - N/M
    return cfg


def task_name(cfg) -> str:
    """The run's task: the model's ``task`` where it says one (the built-in families do), else the
    one its data declares (``data.task``: a user's model trains on what its data is for)."""
    return cfg.model.get("task") or cfg.data.get("task")


def model_widths(model_cfg) -> dict:
    """{size, hidden, width, units} of a model config (None where the family has no such key)."""
    return {key: model_cfg.get(key) for key in WIDTH_KEYS}
