"""`prune-run`: Hydra entry point. Composes conf/, validates every job before any work, runs."""
import hashlib
import io
import re
import sys
from typing import List

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from prune_cli import identity
from prune_cli.checks import check_family_choices, validate
from prune_cli.config import GROUPS, ConfigError, data_home, group_options, search_dirs


def run_id(override_dirname: str, *, _root_=None) -> str:
    """Folder name of a run: its identifying overrides, made path-safe (long ones hashed); a run
    composed with a config folder of the user's also names its config's fingerprint (identity.py)."""
    ident = (override_dirname or "defaults") + (identity.suffix(_root_) if _root_ is not None else "")
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", ident)
    if len(name) > 200:  # file names stop at 255 bytes
        name = name[:180] + "-" + hashlib.sha1(ident.encode()).hexdigest()[:12]
    return name


def gpus(device: str, tasks: int = 1) -> int:
    """GPUs a launcher job asks for (hydra/launcher/submitit_*.yaml): one a task when ``device``
    wants CUDA (auto: when the launching machine has one), else none: submitit hides every GPU
    from a job that requested none."""
    device = str(device)
    if device.startswith("cuda"):
        return int(tasks)
    if device == "auto":
        import torch
        return int(tasks) if torch.cuda.is_available() else 0
    return 0


def config_groups() -> str:
    """The help's list of config groups: every option a user types, and the sweep points (a
    study's internals, one file each) counted under the experiment they belong to."""
    dirs = search_dirs(sys.argv[1:])
    lines = [f"{g}: {', '.join(group_options(g, dirs))}" for g in sorted(GROUPS) if g != "point" and group_options(g, dirs)]
    experiments, points = group_options("experiment", dirs), group_options("point", dirs)
    owner = lambda p: max((e for e in experiments if p.startswith(e + "_")), key=len, default="other")
    counts = {}
    for p in points:
        counts[owner(p)] = counts.get(owner(p), 0) + 1
    lines.append(f"point: {len(points)} sweep points of the experiments above, in conf/point/<experiment>_*.yaml ("
                 + ", ".join(f"{e} {n}" for e, n in sorted(counts.items())) + "); `prune-run -m experiment=NAME` runs them")
    return "\n".join(lines) + "\n"


OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("config_groups", config_groups, replace=True)
OmegaConf.register_new_resolver("data_home", data_home, replace=True)
OmegaConf.register_new_resolver("gpus", gpus, replace=True)


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

    def on_multirun_start(self, config: DictConfig, config_name: str = None, **kwargs) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        loader = GlobalHydra.instance().hydra.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + task)
        dirs = search_dirs() + identity.user_dirs(config.hydra.runtime.config_sources)
        for batch in BasicSweeper.split_arguments(parsed, None):
            for overrides in batch:
                check_group_choices(overrides, dirs)
                job = loader.load_sweep_config(config, list(overrides))
                try:
                    validate(job_config(job))
                except ConfigError as e:
                    fail(f"{e} (in job: {' '.join(overrides)})")


def check_group_choices(args: List[str], dirs=None) -> None:
    """`model=nope` would be Hydra's multi-line error; make it one line listing the valid names
    (the package's and those in the user's config folders, ``dirs``)."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("null", ""):
            continue
        valid = group_options(key, dirs)
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


def _task(cfg: DictConfig) -> int:
    """One job. In a sweep a run that fails (diverged, a broken file: exit status 1 or 2) returns
    its status instead of ending the process, so the sweep goes on with its other runs and ends
    with status 1 (the sweeper counts them); a stop signal (128 + N) ends the sweep at once."""
    global _started
    if not _started:
        _started = True
        _stderr.write(_release_stderr())
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from prune_cli.train.run import run
    try:
        run(cfg)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
        if status in (0, None) or status >= 128 or HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        return status
    return 0


def _one_line(text: str) -> str:
    # A job in another process (a submitit job) that stopped with its one-line error: Hydra
    # relays the launcher's report, which quotes the job's stderr; repeat the job's own line.
    said = [ln.split("prune-run: error: ", 1)[1] for ln in text.splitlines() if "prune-run: error: " in ln]
    if said:
        return said[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and not ln.startswith(("Set the environment variable HYDRA_FULL_ERROR", "    full_key", "    object_type"))]
    return "; ".join(lines) or "invalid arguments"


def register_sweeper():
    """Hydra discovers plugins by listing the hydra_plugins folders, which an editable install
    does not have: register the project's sweeper (conf/hydra/sweeper/dense_first.yaml) by hand.
    After Hydra's scan, which re-executes modules already imported (the sweeper's base class with them).
    Returns the class registered (its ``failed`` lists the sweep's failed jobs)."""
    plugins = Plugins.instance()
    from hydra_plugins.prune_cli_sweeper.dense_first import DenseFirstSweeper
    plugins.register(DenseFirstSweeper)
    return DenseFirstSweeper


LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm")  # conf/hydra/launcher/NAME.yaml


def extend_launcher_schemas() -> None:
    """conf/hydra/launcher/NAME.yaml holds the project's defaults for the plugin Hydra stores under
    the same NAME: a config file named like a schema is deprecated since Hydra 1.1 (its "automatic
    schema matching" warning). Hydra's migration (upgrades/1.0_to_1.1/automatic_schema_matching):
    store the schema under another name and extend it in the file's defaults list
    (``defaults: [NAME_schema, _self_]``), so that users still type hydra/launcher=NAME. The
    plugins store their schemas when Hydra scans them (Plugins.instance()); rename them after it."""
    from hydra.core.config_store import ConfigStore

    Plugins.instance()
    store = ConfigStore.instance()
    group = store.repo.get("hydra", {}).get("launcher", {})
    for name in LAUNCHERS:
        node = group.pop(f"{name}.yaml", None)
        if node is not None:
            store.store(name=f"{name}_schema", node=node.node, group="hydra/launcher", package=node.package,
                        provider=node.provider)


def main() -> None:
    dirs = search_dirs(sys.argv[1:])
    check_group_choices(sys.argv[1:], dirs)
    try:
        check_family_choices(sys.argv[1:], dirs)
    except ConfigError as e:
        fail(str(e))
    sweeper = register_sweeper()
    extend_launcher_schemas()
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
    if sweeper.failed:  # a sweep whose runs all ran: 1 if some failed or diverged (2 if one refused its input)
        sys.exit(max(status for _, status in sweeper.failed))


if __name__ == "__main__":
    # `python -m prune_cli.cli`: run the importable module's main, so that the joblib and submitit
    # launchers pickle the task function by reference (prune_cli.cli._task), never by value from
    # __main__ (which would drag this module's globals, open files included, into every job).
    from prune_cli.cli import main as importable_main
    importable_main()
