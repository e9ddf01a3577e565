"""What tells a run composed from the user's own config folders apart from another.

A run is named by the overrides on its command line (cli.run_id): enough while every config
it composes is the package's, which changes only with prune-cli itself. A config folder of the
user's own (``--config-dir``, ``hydra.searchpath``) changes under the same command line: a new
``hidden: 128`` in my_conf/model/my_net.yaml must make a new run, not find the old one finished
and skip it. Such runs therefore carry a fingerprint of their composed config in their name.
"""
import hashlib
import json
from pathlib import Path
from typing import Iterable, List


def user_dirs(config_sources) -> List[Path]:
    """The config folders the user added (Hydra's ``runtime.config_sources`` of schema file)."""
    return [Path(s["path"]) for s in config_sources or [] if s.get("schema") == "file"]


def _drop(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def fingerprint(job_cfg, excluded: Iterable[str] = ()) -> str:
    """8 hex digits of the composed job config (interpolations as written), without the keys
    that do not change what a run computes (``excluded``: conf/config.yaml's exclude_keys)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(job_cfg, resolve=False)
    for key in ("hydra", "run_id", *excluded):
        _drop(tree, key)
    return hashlib.sha1(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:8]


def suffix(job_cfg) -> str:
    """",config=<fingerprint>" for a run composed with a user's config folder, else ""."""
    from hydra.core.hydra_config import HydraConfig

    # A job's config as a sweeper loads it still has its hydra node (the sweeper names the run
    # folders it waits for, prune_cli/sweeper); the task's has not, and HydraConfig is its job's.
    if "hydra" in job_cfg:
        hydra = job_cfg.hydra
    elif HydraConfig.initialized():
        hydra = HydraConfig.get()
    else:
        return ""
    if not user_dirs(hydra.runtime.config_sources):
        return ""
    return ",config=" + fingerprint(job_cfg, hydra.job.config.override_dirname.exclude_keys)
