"""The one training loop, for every family, dense and sparse alike.

Steps are counted as optimizer updates done (``step`` = TF's global_step). The masks at step
t hold the schedule's sparsity s_t: the pruner is called once at step 0 (before any update,
so t0 = 0 prunes the initial or loaded model) and after every update.
"""
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from prune_cli.train import checkpoint as ckpt
from prune_cli.train import distributed, progress
from prune_cli.train.optim import learning_rate
from prune_cli.train.precision import autocast, compile_count, compile_model, cpu_lstm_in_fp32, grad_scaler
from prune_cli.train.stop import Stopped


class DivergedError(Exception):
    """Training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class LoopState:
    step: int = 0
    first_step: int = 0  # where a fresh run starts: 0, or K for a run rewound to step K (train/start.py)
    loss_sum: float = 0.0  # train loss since the last metrics row (kept across resume: exact rows)
    loss_count: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumes
    extra: dict = field(default_factory=dict)


def fit(*, model, task, data, optimizer, pruner, cfg, folder, state: LoopState, total_steps: int,
        eval_split: Optional[str], log: Callable[[str], None],
        parallel: distributed.Parallel = distributed.Parallel(), optim=None, stop=None) -> LoopState:
    """Train ``model`` to ``total_steps``. On several ranks (``parallel``) the forward goes through
    DDP and each rank sees its shard of the batch (run.py wraps the data); losses are averaged over
    ranks before they are logged; checkpoints hold every rank's RNG and task state.
    ``optim``: the run's recipe (train/optim.recipe); cfg.optim when not given.
    ``stop``: train/stop.StopSignals; after a SIGTERM or SIGINT the step in progress ends with a
    checkpoint and ``Stopped`` is raised."""
    optim = cfg.optim if optim is None else optim
    t = cfg.trainer
    spe = data.steps_per_epoch
    clip = optim.get("clip_grad_norm")
    params = [p for p in model.parameters() if p.requires_grad]
    # Plain ints for the per-step checks: no config-node lookups on the hot path.
    eval_every, log_every, checkpoint_every = t.eval_every or spe, t.log_every, t.checkpoint_every
    keep_steps = frozenset(t.get("keep_steps") or ())
    device = next(model.parameters()).device
    forward = distributed.wrap(model, parallel)  # evaluation and checkpoints use the bare model
    if t.get("compile", False):
        forward = compile_model(forward)
    precision = t.get("precision", "fp32")
    cpu_lstm_in_fp32(model, precision, device)
    scaler = grad_scaler(precision, device)
    if scaler is not None and "scaler" in state.extra:
        scaler.load_state_dict(state.extra["scaler"])
    model.train()

    def record_masks(step):
        parallel.check_masks(pruner, step)
        if pruner.masks:  # a dense run (or a dense start) has no masks to report
            folder.log_sparsity(step, pruner.stats())

    # Each rank's train losses since the last metrics row. They travel with the checkpoint as they
    # are (a float32 sum, exact as a Python float), not added into loss_sum, so a run resumed from
    # a checkpoint between two rows (a stop at any step) writes the uninterrupted run's rows.
    running = torch.tensor(state.extra.get("running", [0.0] * parallel.world_size)[parallel.rank], device=device)

    def state_now(ranks):
        """What a checkpoint holds; ``ranks``: every rank's RNG and task state (parallel.gather)."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict(),
                "task": ranks[0]["task"], "rng": ranks[0]["rng"], "loop": state.__dict__,
                "config": cfg_container(cfg),
                **({"world_size": parallel.world_size, "ranks": ranks} if parallel.enabled else {})}

    def save():
        ranks = parallel.gather({"rng": ckpt.rng_state(), "task": task.state_dict(), "running": float(running)})
        partial = state.extra["running"] = [r.pop("running") for r in ranks]
        mean = (state.loss_sum + sum(partial) / len(partial)) / max(1, state.loss_count)
        if not math.isfinite(mean):
            raise DivergedError(f"training loss is {mean} at step {state.step}")
        if scaler is not None:
            state.extra["scaler"] = scaler.state_dict()
        if folder.writes:
            ckpt.save(folder.checkpoint, state_now(ranks))

    def keep():
        # trainer.keep_steps: this step's state under a name of its own, for rewinding to it. It is
        # never resumed from, so the unflushed losses stay where they are (the numbers of a run do
        # not depend on the steps it keeps).
        ranks = parallel.gather({"rng": ckpt.rng_state(), "task": task.state_dict()})
        if folder.writes:
            ckpt.save(folder.kept_checkpoint(state.step), {**state_now(ranks), "kept_step": state.step})

    if state.step == state.first_step:  # a fresh run (a resumed one has trained past its first step)
        if pruner.step(state.step):
            record_masks(state.step)
        if state.step in keep_steps:
            keep()

    bar = progress.bar(total_steps, state.step, t.progress and folder.writes, desc=f"{cfg.model.name}")  # rank 0
    started = time.perf_counter() - state.elapsed
    while state.step < total_steps:
        epoch, offset = divmod(state.step, spe)
        if offset == 0:
            task.start_epoch(epoch)
        for batch in data.train_epoch(epoch, offset):
            lr = learning_rate(optim, state.step, spe, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(precision, device):  # the forward only: masks and updates stay in fp32
                loss = task.loss(forward, batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # true gradients for masking and clipping
            pruner.mask_gradients()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            state.step += 1
            if pruner.step(state.step):
                record_masks(state.step)
            running += loss.detach()
            state.loss_count += 1
            bar.update(1)

            step = state.step
            end_of_epoch = step % spe == 0
            if step % log_every == 0 or end_of_epoch or step == total_steps:
                state.loss_sum += float(parallel.mean(running))  # one device sync per metrics row, not per step
                running.zero_()
                mean = state.loss_sum / state.loss_count
                if not math.isfinite(mean):
                    raise DivergedError(f"training loss is {mean} at step {step}")
                row = {**task.train_metrics(mean), "lr": lr, "sparsity": pruner.schedule.sparsity_at(step)}
                folder.log_metrics(step, step / spe, "train", row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "lr"}, refresh=False)
                state.loss_sum, state.loss_count = 0.0, 0
            if eval_split and step % eval_every == 0 and step < total_steps:  # the end has its own evaluation
                metrics = task.evaluate(model.eval(), data.eval_splits[eval_split]())
                model.train()
                folder.log_metrics(step, step / spe, eval_split, metrics)
                log(f"step {step} epoch {step / spe:.2f} {eval_split} "
                    + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            if step in keep_steps:
                keep()
            signum = stop.agreed(parallel) if stop is not None else 0
            if step % checkpoint_every == 0 or end_of_epoch or step == total_steps or signum:
                state.elapsed = time.perf_counter() - started
                save()
            if signum:
                bar.close()
                raise Stopped(signum, step, total_steps)
            if step >= total_steps:
                break
    bar.close()
    state.elapsed = time.perf_counter() - started
    if t.get("compile", False):
        log(f"torch.compile: {compile_count()} graph(s) compiled")
    return state


def cfg_container(cfg) -> dict:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg, resolve=True)
