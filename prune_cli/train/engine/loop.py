"""The one training loop, for every family, dense and sparse alike: the step, and nothing else.

Steps are counted as optimizer updates done (``step`` = TF's global_step). The masks at step
t hold the schedule's sparsity s_t: the pruner is called once at step 0 (before any update,
so t0 = 0 prunes the initial or loaded model) and after every update. What happens after a
step (metrics rows, evaluations, kept steps, checkpoints and stop signals) is the callbacks'
(engine/callbacks.py), run in order after every step.
"""
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from prune_cli.train.engine import callbacks, distributed
from prune_cli.train.engine.optim import learning_rate
from prune_cli.train.engine.precision import autocast, compile_count, compile_model, cpu_lstm_in_fp32, grad_scaler
from prune_cli.train.folder import progress


@dataclass
class LoopState:
    step: int = 0
    first_step: int = 0  # where a fresh run starts: 0, or K for a run rewound to step K (plan/start.py)
    loss_sum: float = 0.0  # train loss since the last metrics row (kept across resume: exact rows)
    loss_count: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumes
    extra: dict = field(default_factory=dict)


@dataclass
class Training:
    """What one call of ``fit`` works with; the callbacks read and update it."""

    model: torch.nn.Module
    forward: Any                 # the model as the step calls it (DDP- or compile-wrapped)
    task: Any
    data: Any
    optimizer: torch.optim.Optimizer
    pruner: Any
    cfg: Any
    folder: Any
    state: LoopState
    total_steps: int
    optim: Any                   # the recipe (plan.optim)
    log: Callable[[str], None]
    parallel: distributed.Parallel
    scaler: Any = None
    running: Optional[torch.Tensor] = None  # this rank's train losses since the last metrics row
    started: float = 0.0
    lr: float = 0.0
    bar: Any = None
    divergence: Any = None       # callbacks.Divergence
    macs_at: Optional[Callable[[int], dict]] = None  # step -> the training MACs spent to it (evaluation rows)

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch


def fit(*, model, task, data, optimizer, pruner, cfg, folder, state: LoopState, total_steps: int,
        eval_split: Optional[str], log: Callable[[str], None],
        parallel: distributed.Parallel = distributed.Parallel(), optim=None, stop=None, macs_at=None) -> LoopState:
    """Train ``model`` to ``total_steps``. On several ranks (``parallel``) the forward goes through
    DDP and each rank sees its shard of the batch (run.py wraps the data); losses are averaged over
    ranks before they are logged; checkpoints hold every rank's RNG and task state.
    ``optim``: the run's recipe (plan/recipe.py); cfg.optim when not given.
    ``stop``: folder/stop.StopSignals; after a SIGTERM or SIGINT the step in progress ends with a
    checkpoint and ``Stopped`` is raised. ``macs_at``: step -> the training MACs spent to it, for
    the evaluation rows. A diverged run raises callbacks.DivergedError (engine/callbacks.py)."""
    t = _prepare(model, task, data, optimizer, pruner, cfg, folder, state, total_steps, log, parallel,
                 cfg.optim if optim is None else optim)
    t.macs_at = macs_at
    after_step = callbacks.standard(t, eval_split, stop)
    callbacks.at_start(t)
    t.bar = progress.bar(total_steps, state.step, cfg.trainer.progress and folder.writes, desc=f"{cfg.model.name}")
    t.started = time.perf_counter() - state.elapsed
    spe, clip = data.steps_per_epoch, t.optim.get("clip_grad_norm")
    params = [p for p in model.parameters() if p.requires_grad]
    precision, device = cfg.trainer.get("precision", "fp32"), next(model.parameters()).device
    while state.step < total_steps:
        epoch, offset = divmod(state.step, spe)
        if offset == 0:
            task.start_epoch(epoch)
        for batch in data.train_epoch(epoch, offset):
            t.lr = learning_rate(t.optim, state.step, spe, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = t.lr
            with autocast(precision, device):  # the forward only: masks and updates stay in fp32
                loss = task.loss(t.forward, batch)
            optimizer.zero_grad(set_to_none=True)
            _backward(t, loss)
            pruner.mask_gradients()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            _update(t)
            state.step += 1
            t.divergence.observe(loss, state.step)
            if pruner.step(state.step):
                callbacks.record_masks(t, state.step)
            t.running += loss.detach()
            state.loss_count += 1
            t.bar.update(1)
            for callback in after_step:
                callback(t)
            if state.step >= total_steps:
                break
    t.divergence.check(t)
    t.bar.close()
    state.elapsed = time.perf_counter() - t.started
    if cfg.trainer.get("compile", False):
        log(f"torch.compile: {compile_count()} graph(s) compiled")
    return state


def _prepare(model, task, data, optimizer, pruner, cfg, folder, state, total_steps, log, parallel, optim) -> Training:
    device = next(model.parameters()).device
    forward = distributed.wrap(model, parallel)  # evaluation and checkpoints use the bare model
    if cfg.trainer.get("compile", False):
        forward = compile_model(forward)
    precision = cfg.trainer.get("precision", "fp32")
    cpu_lstm_in_fp32(model, precision, device)
    scaler = grad_scaler(precision, device)
    if scaler is not None and "scaler" in state.extra:
        scaler.load_state_dict(state.extra["scaler"])
    model.train()
    # Each rank's train losses since the last metrics row. They travel with the checkpoint as they
    # are (a float32 sum, exact as a Python float), not added into loss_sum, so a run resumed from
    # a checkpoint between two rows (a stop at any step) writes the uninterrupted run's rows.
    running = torch.tensor(state.extra.get("running", [0.0] * parallel.world_size)[parallel.rank], device=device)
    divergence = callbacks.Divergence(cfg.trainer.get("diverge_factor"), state.extra.get("first_loss"), device)
    return Training(model, forward, task, data, optimizer, pruner, cfg, folder, state, total_steps, optim, log,
                    parallel, scaler=scaler, running=running, divergence=divergence)


def _backward(t: Training, loss) -> None:
    if t.scaler is None:
        loss.backward()
    else:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.optimizer)  # true gradients for masking and clipping


def _update(t: Training) -> None:
    if t.scaler is None:
        t.optimizer.step()
    else:
        t.scaler.step(t.optimizer)
        t.scaler.update()
