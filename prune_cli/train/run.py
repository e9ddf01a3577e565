"""One run, start to finish: plan, build, resume or initialise, fit, finish.

Everything that can refuse (a bad plan, a corrupt or foreign checkpoint, an init_from that does
not fit) is checked before the first byte is written into the run folder.
"""
import logging
import sys
from pathlib import Path

from prune_cli import builders
from prune_cli import data as datasets
from prune_cli.config import ConfigError, cfg_container, run_config
from prune_cli.train.engine import distributed
from prune_cli.train.engine.build import build, build_training
from prune_cli.train.engine.callbacks import DivergedError
from prune_cli.train.engine.finish import finish, record_divergence
from prune_cli.train.engine.loop import LoopState, fit
from prune_cli.train.folder import checkpoint as ckpt
from prune_cli.train.folder import watch
from prune_cli.train.folder.files import RunFolder, WriteError
from prune_cli.train.folder.lock import RunningElsewhere, claim
from prune_cli.train.folder.progress import RunLog
from prune_cli.train.folder.stop import Stopped, stop_signals
from prune_cli.train.plan import costs
from prune_cli.train.plan.plan import make_plan
from prune_cli.train.plan.sources import StartError

log = logging.getLogger("prune_cli")


class Diverged(Exception):
    """The run diverged before (its summary.json says so): it is not trained again."""


# exception -> (exit status, what rank 0 prints); a rank mismatch is printed by every rank.
BAD_INPUT = (ConfigError, StartError, ckpt.CheckpointError, datasets.DataError, builders.BuildError)
EXIT = ((BAD_INPUT, 2, "error: {e}"),
        ((WriteError,), 1, "error: {e}; stopped, the last good checkpoint is kept in {dir}"),
        ((DivergedError, Diverged), 1, "{dir}: {e}"),
        ((distributed.RankMismatchError,), 3, "error: {e}; stopped, the last good checkpoint is kept in {dir}"))



def run(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig  # the job's Hydra node, when Hydra launched it

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    # Hydra makes no folder for a run (conf: hydra.run.dir=., hydra.sweep.subdir=.): the run
    # folder is made below, after every check, so a refused run leaves results/ as it was.
    run_dir = Path(cfg.results_dir, "runs", str(cfg.exp_name), cfg.run_id)
    cfg = run_config(cfg)
    distributed.set_threads(cfg.trainer.get("threads"), hydra_cfg)
    parallel = distributed.setup(distributed.resolve_device(cfg.device))
    folder = RunFolder(run_dir, writes=parallel.is_main)
    try:
        # One writer per run folder (folder/lock.py); SIGTERM and SIGINT save and leave (folder/stop.py).
        with stop_signals() as stop, claim(folder, parallel):
            _run(cfg, folder, hydra_cfg, parallel, stop)
        if stop.signum:  # it came after the last step: the run is finished, the process still leaves
            sys.exit(128 + stop.signum)
    except RunningElsewhere as e:
        if parallel.is_main:
            print(f"prune-run: {e}", file=sys.stderr)
    except Stopped as e:
        if parallel.is_main:
            print(f"prune-run: {run_dir}: {e}", file=sys.stderr)
        sys.exit(e.status)
    except tuple(kind for kinds, _, _ in EXIT for kind in kinds) as e:
        status, text = next((status, text) for kinds, status, text in EXIT if isinstance(e, kinds))
        if isinstance(e, WriteError) and not run_dir.is_dir():  # someone removed it (a clean-up mid-sweep)
            text = "error: {dir} was deleted while the run was writing into it; stopped (the same command starts it over)"
        if parallel.is_main or isinstance(e, (WriteError, distributed.RankMismatchError)):
            print("prune-run: " + text.format(e=e, dir=run_dir), file=sys.stderr)
        sys.exit(status)
    finally:
        distributed.teardown()


def _run(cfg, folder: RunFolder, hydra_cfg, parallel: distributed.Parallel, stop) -> None:
    if folder.finished:
        rec = folder.read_summary() or {}
        if rec.get("status") == "diverged":  # deterministic: it would diverge again
            raise Diverged(f"diverged at step {rec.get('diverged_step')} (summary.json); not trained again: it would "
                           "diverge again the same way. Change the recipe, or delete the folder to train it again")
        if parallel.is_main:
            print(f"prune-run: {folder.path} is finished (summary.json exists): nothing to do", file=sys.stderr)
        return
    model, data, task, meta_keys = build(cfg, parallel)  # under the run's seed, on its device
    state = ckpt.load(folder.checkpoint) if folder.checkpoint.is_file() else None
    if state is not None:
        ckpt.check_resumable(state, folder.checkpoint, cfg_container(cfg), parallel.world_size)
    plan = make_plan(cfg, data.meta, data.steps_per_epoch, state)
    if state is None:
        plan.start.load_weights(model, lambda: builders.build_model(cfg.model, data.meta), cfg.seed)
    optimizer, pruner = build_training(cfg, plan, model)
    loop = LoopState(step=plan.start.first_step, first_step=plan.start.first_step)
    mine = state["ranks"][parallel.rank] if state is not None and parallel.enabled else state
    if state is not None:
        ckpt.restore(state, folder.checkpoint, model, optimizer, pruner)
        task.load_state_dict(mine["task"])
        loop = LoopState(**state["loop"])

    # -- from here on, the run folder is written ----------------------------------------
    folder.start(cfg, hydra_cfg, resume_step=loop.step if state is not None else None)
    say = RunLog(folder, log)
    try:
        watch.attach(folder, cfg.trainer, resume_step=loop.step if state is not None else None)
        say(("resume" if state else "start") + f" {folder.path} at step {loop.step}/{plan.total} on {parallel.device}; "
            f"{sum(p.numel() for p in model.parameters()):,} params; schedule {plan.schedule}; init {plan.start}"
            + (f"; {parallel.world_size} ranks" if parallel.enabled else "")
            + "".join(f"; {k} {cfg.trainer[k]}" for k in ("precision", "compile") if cfg.trainer.get(k) not in (None, "fp32", False)))
        for line in plan.describe(pruner):
            say(line)
        if state is not None:
            ckpt.set_rng_state(mine["rng"])
        loop.extra.update(init_from=plan.start.init_from, start=plan.start.record(), lr=plan.lr)
        splits = list(data.eval_splits)
        macs_at = (lambda step: costs.macs_to(plan.costs, step, folder.read_updates(), plan.start.init_from,
                                              loop.first_step, plan.dense_gradients(step))) if plan.costs else None
        try:
            loop = fit(model=model, task=task, data=data, optimizer=optimizer, pruner=pruner, cfg=cfg, folder=folder,
                       state=loop, total_steps=plan.total, eval_split=next((s for s in splits if s != "test"), None),
                       log=say, parallel=parallel, optim=plan.optim, stop=stop, macs_at=macs_at)
        except (DivergedError, Stopped) as e:
            say.quiet()  # the command prints the one line
            say(f"stopped: {e}; the last good checkpoint is kept" if isinstance(e, DivergedError) else str(e))
            if isinstance(e, DivergedError):
                record_divergence(cfg, folder, model, data, pruner, loop, plan, parallel, e)
            raise
        finish(cfg, folder, model, data, task, pruner, loop, plan, parallel, meta_keys, macs_at, say)
    finally:
        say.close()
        folder.close()
