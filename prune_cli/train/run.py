"""One run, start to finish: build, resume or initialise, train, evaluate, summarise.

Everything that can refuse (a corrupt or foreign checkpoint, an init_from that does not fit)
is checked before the first byte is written into the run folder.
"""
import json
import logging
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import open_dict

from prune_cli import builders
from prune_cli import data as datasets
from prune_cli.config import ConfigError, effective_sparsity
from prune_cli.pruning import GradualSchedule, Pruner, storage_report
from prune_cli.pruning.compute import masked_nnz
from prune_cli.train import budget as budgets
from prune_cli.train import checkpoint as ckpt
from prune_cli.train import costs, distributed, watch
from prune_cli.train import start as starts
from prune_cli.train.loop import DivergedError, LoopState, cfg_container, fit
from prune_cli.train.lock import RunningElsewhere, claim
from prune_cli.train.optim import build_optimizer, recipe
from prune_cli.train.results import RunFolder, WriteError
from prune_cli.train.stop import Stopped, stop_signals
from prune_cli.train.tasks import build_task

log = logging.getLogger("prune_cli")

# Keys that may differ between a checkpoint and the command resuming it.
# data.task follows from data.name (it is there for validation), so checkpoints written before
# it existed still resume.
VOLATILE = ("results_dir", "exp_name", "device", "init_from", "trainer.progress", "trainer.threads", "data.root",
            "data.download", "data.cache_dir", "data.task", "trainer.keep_steps", "trainer.tensorboard")
# Keys added after checkpoints were written: at their default they mean what their absence did.
ADDED = {"pruning.criterion": "magnitude", "pruning.mask_from": None, "pruning.rewind_step": None}


class RunError(Exception):
    """Bad input found while preparing a run (exit status 2); nothing was written."""


def _drop(container: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        container = container.get(key, {})
    container.pop(last, None)


def comparable(container: dict) -> dict:
    container = json.loads(json.dumps(container))
    for key in VOLATILE:
        _drop(container, key)
    for key, default in ADDED.items():
        group, name = key.split(".")
        if container.get(group, {}).get(name, default) == default:
            _drop(container, key)
    return container


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def build_schedule(cfg, steps_per_epoch: int, total_steps: int, from_trained: bool,
                   planned: int = None) -> GradualSchedule:
    """``planned``: the recipe's length (optim.recipe); ``total_steps`` may be capped below it."""
    p = cfg.pruning
    sparsity = float(cfg.sparsity) if p.name != "none" else 0.0
    freq = p.frequency
    if p.begin_step is not None or p.end_step is not None:
        begin = p.begin_step if p.begin_step is not None else 0
        end = p.end_step if p.end_step is not None else begin
    else:
        # Step-counted recipes (GNMT) give the interval in steps, the others in epochs.
        warmup, span = p.get("warmup_steps"), p.get("span_steps")
        warmup = round(p.warmup_epochs * steps_per_epoch) if warmup is None else warmup
        span = round(p.span_epochs * steps_per_epoch) if span is None else span
        begin = 0 if from_trained else warmup
        end = begin + span
        planned = cfg.trainer.epochs * steps_per_epoch if planned is None else planned
        if total_steps < planned:  # a capped run: scale the schedule so it still ends at the target
            begin, end = begin * total_steps // planned, end * total_steps // planned
        end = min(end, total_steps)
        begin = min(begin, end)
        end -= (end - begin) % freq
    if p.name == "oneshot":
        return GradualSchedule(sparsity, sparsity, begin, begin, 1)
    return GradualSchedule(sparsity, min(p.initial_sparsity, sparsity), begin, end, freq)


def summary_record(cfg, run_id, model, data, pruner, state, final, init_from, device, task=None,
                   meta_keys=("num_classes", "image_size", "vocab_size")) -> dict:
    """``meta_keys``: the keys of data.meta the model builder read (builders.build_model)."""
    m = cfg.model
    report = storage_report(model, pruner.masks)
    masked = pruner.stats()
    pruned = sum(s.numel for s in masked)
    record = {
        "exp_name": cfg.exp_name, "run_id": run_id, "model": m.name, "family": m.name,
        "size": m.get("size"), "hidden": m.get("hidden"), "width": m.get("width"), "units": m.get("units"),
        "dataset": data.meta.get("dataset", cfg.data.name), "synthetic": bool(data.meta.get("synthetic", False)),
        "target_sparsity": float(cfg.sparsity), "pruning": cfg.pruning.name, "scheme": cfg.pruning.scheme,
        "pattern": pruner.pattern,
        "achieved_sparsity": 1.0 - sum(s.nnz for s in masked) / pruned if pruned else 0.0,
        **{k: v for k, v in report.as_dict().items() if k != "params_pruned"},
        "params_pruned": report.params_pruned,
        "steps": state.step, "epochs": state.step / data.steps_per_epoch, "wall_time_s": round(state.elapsed, 3),
        "seed": cfg.seed, "lr": float(state.extra.get("lr", cfg.optim.lr)), "init_from": init_from,
        "git_sha": git_sha(), "torch_version": torch.__version__, "device": str(device),
        "python": platform.python_version(), "model_config": json.dumps(cfg_container(m), sort_keys=True),
        # what the model builder read from the data: prune-export's files rebuild the model without it
        "model_meta": {k: data.meta[k] for k in sorted(meta_keys) if isinstance(data.meta.get(k), (int, float, str))},
        "status": "finished",
    }
    if "perplexity" in final.get("test", {}) or "perplexity" in final.get("valid", {}):
        record["perplexity"] = final.get("test", {}).get("perplexity")
        record["val_perplexity"] = final.get("valid", {}).get("perplexity")
    for split in ("val", "test"):
        if "top1" in final.get(split, {}):
            record["top1"], record["top5"] = final[split]["top1"], final[split]["top5"]
            record["eval_split"] = split
            break
    if "bleu" in final.get("test", {}) or "bleu" in final.get("valid", {}):
        record["bleu"] = final.get("test", {}).get("bleu")
        record["val_bleu"] = final.get("valid", {}).get("bleu")
        record["bleu_signature"] = getattr(task, "bleu_signature", None)
        record["direction"] = data.meta.get("direction")
    return record


def run(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    # Hydra makes no folder for a run (conf: hydra.run.dir=., hydra.sweep.subdir=.): the run
    # folder is made below, after every check, so a refused run leaves results/ as it was.
    run_dir = Path(cfg.results_dir, "runs", str(cfg.exp_name), cfg.run_id)
    run_id = run_dir.name
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("run_id", None)
        cfg.sparsity = effective_sparsity(cfg)  # pruning.pattern=N:M alone means sparsity 1 - N/M
    distributed.set_threads(cfg.trainer.get("threads"), hydra_cfg)
    parallel = distributed.setup(resolve_device(cfg.device))
    folder = RunFolder(run_dir, writes=parallel.is_main)
    try:
        # One writer per run folder (train/lock.py); SIGTERM and SIGINT save and leave (train/stop.py).
        with stop_signals() as stop, claim(folder, parallel):
            _run(cfg, folder, run_id, hydra_cfg, parallel, stop)
        if stop.signum:  # it came after the last step: the run is finished, the process still leaves
            sys.exit(128 + stop.signum)
    except RunningElsewhere as e:
        if parallel.is_main:
            print(f"prune-run: {e}", file=sys.stderr)
    except Stopped as e:
        if parallel.is_main:
            print(f"prune-run: {run_dir}: {e}", file=sys.stderr)
        sys.exit(e.status)
    except (RunError, ConfigError, starts.StartError, ckpt.CheckpointError, datasets.DataError,
            builders.BuildError) as e:
        if parallel.is_main:
            print(f"prune-run: error: {e}", file=sys.stderr)
        sys.exit(2)
    except WriteError as e:
        print(f"prune-run: error: {e}; stopped, the last good checkpoint is kept in {run_dir}", file=sys.stderr)
        sys.exit(1)
    except (DivergedError, distributed.RankMismatchError) as e:
        if parallel.is_main or isinstance(e, distributed.RankMismatchError):
            print(f"prune-run: error: {e}; stopped, the last good checkpoint is kept in {run_dir}", file=sys.stderr)
        sys.exit(3)
    finally:
        distributed.teardown()


def _run(cfg, folder: RunFolder, run_id: str, hydra_cfg, parallel: distributed.Parallel, stop=None) -> None:
    if folder.finished:
        if parallel.is_main:
            print(f"prune-run: {folder.path} is finished (summary.json exists): nothing to do", file=sys.stderr)
        return
    device = parallel.device
    seed_everything(cfg.seed)
    data = builders.build_data(cfg.data, cfg.seed)
    if parallel.enabled:
        if cfg.data.batch_size % parallel.world_size:
            raise RunError(f"data.batch_size={cfg.data.batch_size} (the global batch) does not split evenly over "
                           f"{parallel.world_size} ranks; use a multiple of {parallel.world_size}")
        data.train_epoch = distributed.sharded(data.train_epoch, parallel)
    meta_keys = set()  # what the builder reads from data.meta (summary.json: model_meta)
    model = builders.build_model(cfg.model, data.meta, meta_keys).to(device)
    if parallel.rank > 0:  # same initial weights everywhere; each rank its own dropout stream
        seed_everything(cfg.seed + parallel.rank)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = build_task(cfg, device, data.meta)
    spe = data.steps_per_epoch

    state = ckpt.load(folder.checkpoint) if folder.checkpoint.is_file() else None
    if state is not None and comparable(state["config"]) != comparable(cfg_container(cfg)):
        raise RunError(f"checkpoint {folder.checkpoint} was written by a different config; it was left as it is: "
                       "use another exp_name or results_dir, or move the folder away")
    if state is not None and state.get("world_size", 1) != parallel.world_size:
        raise RunError(f"checkpoint {folder.checkpoint} was written by {state.get('world_size', 1)} rank(s), this run has "
                       f"{parallel.world_size}: resume with the same number of processes (each rank's RNG and "
                       "data state is in it), or move the folder away")
    mine = state["ranks"][parallel.rank] if state is not None and parallel.enabled else state
    start = starts.decide(cfg, state)  # where the weights and masks come from (train/start.py)
    if state is None:
        start.load_weights(model, lambda: builders.build_model(cfg.model, data.meta), cfg.seed)
    init_from = start.init_from

    # Sections 4.1 and 4.3: pruning a trained model has a recipe of its own (train/optim.recipe).
    optim_cfg, planned = recipe(cfg, start.from_trained, spe)
    total = planned if cfg.trainer.max_steps is None else min(planned, cfg.trainer.max_steps)
    start.check_within(total)
    run_costs, uncounted = costs.counted(cfg, data.meta)
    budget = budgets.plan(cfg, data.meta, total, spe, run_costs)  # equal-compute runs: a longer, stretched recipe
    if budget is not None:
        optim_cfg, total = budget.stretched(optim_cfg), budget.steps
    schedule = (start.schedule(float(cfg.sparsity))
                or build_schedule(cfg, spe, total, from_trained=init_from != "scratch", planned=planned))
    optimizer = build_optimizer(optim_cfg, model.parameters())
    try:
        pruner = Pruner(model, schedule, list(cfg.model.prune), scheme=cfg.pruning.scheme, optimizer=optimizer,
                        pattern=cfg.pruning.get("pattern", "unstructured"),
                        criterion=cfg.pruning.get("criterion", "magnitude"), seed=cfg.seed, fixed=start.masks)
    except ValueError as e:
        raise RunError(str(e)) from None
    loop = LoopState(step=start.first_step, first_step=start.first_step)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            pruner.load_state_dict(state["pruner"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise RunError(f"checkpoint {folder.checkpoint} does not fit this run ({str(e).splitlines()[0][:100]}); "
                           "it was left as it is: move it away to start over") from None
        task.load_state_dict(mine["task"])
        loop = LoopState(**state["loop"])

    # -- from here on, the run folder is written ----------------------------------------
    folder.start(cfg, hydra_cfg, resume_step=loop.step if state is not None else None)
    # Rank 0 alone logs and writes; the other ranks train silently beside it.
    handler = logging.FileHandler(folder.log) if folder.writes else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    console = _TqdmHandler() if folder.writes else logging.NullHandler()
    log.addHandler(handler)
    log.addHandler(console)
    log.setLevel(logging.INFO)
    say = log.info
    try:
        watch.attach(folder, cfg.trainer, resume_step=loop.step if state is not None else None)
        say(("resume" if state else "start") + f" {folder.path} at step {loop.step}/{total} on {device}; "
            f"{sum(p.numel() for p in model.parameters()):,} params; schedule {schedule}; init {start}"
            + (f"; {parallel.world_size} ranks" if parallel.enabled else "")
            + "".join(f"; {k} {cfg.trainer[k]}" for k in ("precision", "compile") if cfg.trainer.get(k) not in (None, "fp32", False)))
        say(costs.describe(run_costs) if run_costs else f"MACs not counted: {uncounted}")
        if budget is not None:
            say(f"budget: {budget.steps} steps ({budget.stretch:.4g}x, schedule stretched) for the training MACs of "
                f"budget.match={budget.match} ({budget.train_macs:.4g}, {budget.convention})")
        if pruner.dense:
            say(f"pattern {pruner.pattern}: left dense (dimension 1 not a multiple of {pruner.nm[1]}): {', '.join(pruner.dense)}")
        if state is not None:
            ckpt.set_rng_state(mine["rng"])
        splits = list(data.eval_splits)
        eval_split = next((s for s in splits if s != "test"), None)
        loop.extra["init_from"] = init_from
        loop.extra["start"] = start.record()
        loop.extra["lr"] = float(optim_cfg.lr)
        try:
            loop = fit(model=model, task=task, data=data, optimizer=optimizer, pruner=pruner, cfg=cfg,
                       folder=folder, state=loop, total_steps=total, eval_split=eval_split, log=say,
                       parallel=parallel, optim=optim_cfg, stop=stop)
        except DivergedError as e:
            log.removeHandler(console)  # the CLI prints the one-line error
            say(f"stopped: {e}; the last good checkpoint is kept")
            raise
        except Stopped as e:
            log.removeHandler(console)  # the CLI prints the one line
            say(str(e))
            raise
        final = {}
        wanted = list(cfg.trainer.eval_splits) if cfg.trainer.eval_splits else splits
        for split in wanted:
            final[split] = task.evaluate(model.eval(), data.eval_splits[split](), final=True)
            folder.log_metrics(loop.step, loop.step / spe, split, final[split])
            say(f"final {split} " + " ".join(f"{k} {v:.4g}" for k, v in final[split].items()))
        record = summary_record(cfg, run_id, model, data, pruner, loop, final, init_from, device, task, meta_keys)
        record.update(world_size=parallel.world_size, precision=cfg.trainer.get("precision", "fp32"),
                      compile=bool(cfg.trainer.get("compile", False)), **start.summary())
        if run_costs is not None:
            record.update(costs.summary_fields(run_costs, loop.step, masked_nnz(pruner.masks), folder.sparsity, init_from,
                                              loop.first_step))
        if budget is not None:
            record.update(budget.summary())
        folder.write_summary(record)
        say(f"finished {folder.path} in {loop.elapsed:.1f} s")
        parallel.barrier()  # the other ranks end once rank 0 has written summary.json
    finally:
        for h in (handler, console):
            log.removeHandler(h)
        handler.close()
        folder.close()


class _TqdmHandler(logging.Handler):
    """Console lines that do not break the progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(f"[{record.name}] {record.getMessage()}", file=sys.stderr)
