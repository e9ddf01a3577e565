"""`prune-run`: Hydra entry point. Composes conf/, validates every job before any work, runs."""
import hashlib
import io
import re
import sys
from pathlib import Path
from typing import List

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from prune_cli.config import GROUPS, ConfigError, check_family_choices, data_home, group_options, validate


def run_id(override_dirname: str) -> str:
    """Folder name of a run: its identifying overrides, made path-safe (long ones hashed)."""
    name = override_dirname or "defaults"
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", name)
    if len(name) > 200:  # file names stop at 255 bytes
        name = name[:180] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:12]
    return name


OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("data_home", data_home, replace=True)


def fail(message: str) -> None:
    print(f"prune-run: error: {message}", file=_stderr)
    sys.exit(2)


def job_config(cfg: DictConfig) -> DictConfig:
    """The run's own config: without Hydra's node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "run_id")])


class ValidateFirst(Callback):
    """Validates the composed config of every job before Hydra creates any folder."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            validate(job_config(config))
        except ConfigError as e:
            fail(str(e))
        note_existing(config)

    def on_multirun_start(self, config: DictConfig, config_name: str = None, **kwargs) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        loader = GlobalHydra.instance().hydra.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + task)
        for batch in BasicSweeper.split_arguments(parsed, None):
            for overrides in batch:
                check_group_choices(overrides)
                job = loader.load_sweep_config(config, list(overrides))
                try:
                    validate(job_config(job))
                except ConfigError as e:
                    fail(f"{e} (in job: {' '.join(overrides)})")
                note_existing(job)


def note_existing(cfg: DictConfig) -> None:
    """Remember which result folders exist before Hydra creates a run's folder, so that a run
    refused later (a checkpoint that does not fit) can leave results/ exactly as it found it."""
    from prune_cli.train import run as run_module

    base = Path(cfg.results_dir)
    for folder in (base, base / "runs", base / "runs" / str(cfg.exp_name)):
        if folder.exists():
            run_module.PREEXISTING.add(folder.absolute())


def check_group_choices(args: List[str]) -> None:
    """`model=nope` would be Hydra's multi-line error; make it one line listing the valid names."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("null", ""):
            continue
        valid = group_options(key)
        for choice in re.split(r",(?![^(]*\))", value):
            if re.match(r"^\w+\(", choice):  # a sweep function such as glob(...)
                continue
            if choice not in valid:
                fail(f"unknown {key} '{choice}'; valid: {', '.join(valid)}")


_stderr = sys.stderr
_started = False


def _release_stderr() -> str:
    held, sys.stderr = sys.stderr, _stderr
    return held.getvalue() if isinstance(held, io.StringIO) else ""


def _task(cfg: DictConfig) -> None:
    global _started
    if not _started:
        _started = True
        _stderr.write(_release_stderr())
    from prune_cli.train.run import run
    run(cfg)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and not ln.startswith(("Set the environment variable HYDRA_FULL_ERROR", "    full_key", "    object_type"))]
    return "; ".join(lines) or "invalid arguments"


def main() -> None:
    check_group_choices(sys.argv[1:])
    try:
        check_family_choices(sys.argv[1:])
    except ConfigError as e:
        fail(str(e))
    entry = hydra.main(config_path="pkg://prune_cli.conf", config_name="config", version_base="1.3")(_task)
    # Until the first job starts, hold Hydra's stderr: a malformed override (a key the config
    # lacks, bad syntax) is several lines and exit 1 there; here it is one line and exit 2.
    sys.stderr = io.StringIO()
    try:
        entry()
    except SystemExit as e:
        if not _started:
            held = _release_stderr()
            if e.code == 1:
                fail(_one_line(held))
            _stderr.write(held)
        raise
    except Exception as e:  # Hydra's own argument checks (e.g. --cfg with -m) raise before any job
        if not _started:
            _release_stderr()
            fail(str(e).splitlines()[0])
        raise
    finally:
        if not _started:
            _stderr.write(_release_stderr())


if __name__ == "__main__":
    main()
