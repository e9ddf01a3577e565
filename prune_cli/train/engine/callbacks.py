"""What happens after a training step, in order: a metrics row of the train loss, an evaluation,
a kept step, a checkpoint (and a stop). Each callback takes the loop's Training (engine/loop.py)
and decides from its step whether it has anything to do; the per-step checks are plain ints, no
config-node lookups on the hot path (open_lth's standard_callbacks are the model).

Divergence: every step's loss is compared on the device with the bound (non-finite, or above
``trainer.diverge_factor`` times the run's first loss), the first step past it remembered there;
it is read (one device sync) at each metrics row and before each checkpoint, so a diverged run
stops at its next row, names the step it diverged at, and never checkpoints a diverged model.
"""
import time

import torch

from prune_cli.config import cfg_container
from prune_cli.train.engine.optim import learning_rate
from prune_cli.train.folder import checkpoint as ckpt
from prune_cli.train.folder.stop import Stopped


class DivergedError(Exception):
    """The training loss became non-finite or passed the divergence bound at ``step``; the last
    good checkpoint is kept."""

    def __init__(self, step: int, loss: float, lr: float):
        self.step, self.loss, self.lr = step, loss, lr
        super().__init__(f"diverged at step {step}: train loss {loss:.4g} (lr {lr:.4g}); "
                         "lower optim.lr or set optim.clip_grad_norm")


class Divergence:
    """Watches every step's loss without a device sync (module docstring). ``factor``: None
    checks for non-finite losses only. ``first``: the run's first loss (a resumed run's, from its
    checkpoint), which sets the bound."""

    def __init__(self, factor, first, device):
        self.factor, self.first = factor, first
        self.step = torch.full((), -1, dtype=torch.long, device=device)  # the first step past the bound, -1: none
        self.loss = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        if self.first is None:
            self.first = float(loss)  # once per run: the bound's reference
        bad = ~torch.isfinite(loss)
        if self.factor is not None:
            bad |= loss > self.factor * abs(self.first)
        new = bad & (self.step < 0)
        self.step = torch.where(new, step, self.step)
        self.loss = torch.where(new, loss, self.loss)

    def check(self, t) -> None:
        """Raise DivergedError (on every rank alike) when any rank saw a step past the bound."""
        step = t.parallel.agree(int(self.step))
        if step >= 0:
            mine = int(self.step) == step
            loss = float(self.loss) if mine else float("nan")
            raise DivergedError(step, loss, learning_rate(t.optim, step - 1, t.steps_per_epoch, t.total_steps))


def standard(t, eval_split, stop) -> list:
    """The callbacks of a run, in the order they run after every step."""
    trainer = t.cfg.trainer
    spe = t.steps_per_epoch
    return [TrainRows(trainer.log_every, spe), Evaluations(eval_split, trainer.eval_every or spe, trainer.get("eval_at")),
            KeptSteps(trainer.get("keep_steps") or ()), Checkpoints(trainer.checkpoint_every, spe, stop)]


def at_start(t) -> None:
    """A fresh run (a resumed one has trained past its first step): prune at its first step, keep it."""
    if t.state.step == t.state.first_step:
        if t.pruner.step(t.state.step):
            record_masks(t, t.state.step)
        KeptSteps(t.cfg.trainer.get("keep_steps") or ())(t)


def record_masks(t, step: int) -> None:
    t.parallel.check_masks(t.pruner, step)
    if t.pruner.masks:  # a dense run (or a dense start) has no masks to report
        t.folder.log_sparsity(step, t.pruner.stats())


class TrainRows:
    """Every ``log_every`` steps, at each epoch's end and at the last step: the mean train loss."""

    def __init__(self, every: int, steps_per_epoch: int):
        self.every, self.spe = every, steps_per_epoch

    def __call__(self, t) -> None:
        state, step = t.state, t.state.step
        if not (step % self.every == 0 or step % self.spe == 0 or step == t.total_steps):
            return
        t.divergence.check(t)
        state.loss_sum += float(t.parallel.mean(t.running))  # one device sync per metrics row, not per step
        t.running.zero_()
        mean = state.loss_sum / state.loss_count
        row = {**t.task.train_metrics(mean), "lr": t.lr, "sparsity": t.pruner.schedule.sparsity_at(step)}
        t.folder.log_metrics(step, step / self.spe, "train", row)
        t.bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "lr"}, refresh=False)
        state.loss_sum, state.loss_count = 0.0, 0


class Evaluations:
    """Every ``every`` steps and at the steps ``at`` (trainer.eval_at), before the last (the end
    has its own evaluation): the held-out split, and the training MACs spent so far."""

    def __init__(self, split, every: int, at=None):
        self.split, self.every, self.at = split, every, frozenset(at or ())

    def __call__(self, t) -> None:
        step = t.state.step
        if not (self.split and (step % self.every == 0 or step in self.at) and step < t.total_steps):
            return
        metrics = evaluate(t, self.split, final=False)
        t.log(f"step {step} epoch {step / t.steps_per_epoch:.2f} {self.split} "
              + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


def evaluate(t, split: str, final: bool) -> dict:
    """One evaluation of ``split`` into metrics.csv, with the cumulative training MACs at its step
    (``t.macs_at``). The RNG streams are put back afterwards: training goes on exactly as it would
    have without it (a data loader's workers draw their seed from the global stream)."""
    rng = ckpt.rng_state()
    metrics = t.task.evaluate(t.model.eval(), t.data.eval_splits[split](), final=final)
    ckpt.set_rng_state(rng)
    t.model.train()
    t.folder.log_metrics(t.state.step, t.state.step / t.steps_per_epoch, split,
                         {**metrics, **(t.macs_at(t.state.step) if t.macs_at else {})})
    return metrics


def _state_now(t, ranks) -> dict:
    """What a checkpoint holds; ``ranks``: every rank's RNG and task state (parallel.gather)."""
    return {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(), "pruner": t.pruner.state_dict(),
            "task": ranks[0]["task"], "rng": ranks[0]["rng"], "loop": t.state.__dict__,
            "config": cfg_container(t.cfg),
            **({"world_size": t.parallel.world_size, "ranks": ranks} if t.parallel.enabled else {})}


class KeptSteps:
    """trainer.keep_steps: this step's state under a name of its own, for rewinding to it. It is
    never resumed from, so the unflushed losses stay where they are (the numbers of a run do not
    depend on the steps it keeps)."""

    def __init__(self, steps):
        self.steps = frozenset(steps)

    def __call__(self, t) -> None:
        if t.state.step not in self.steps:
            return
        ranks = t.parallel.gather({"rng": ckpt.rng_state(), "task": t.task.state_dict()})
        if t.folder.writes:
            ckpt.save(t.folder.kept_checkpoint(t.state.step), {**_state_now(t, ranks), "kept_step": t.state.step})


class Checkpoints:
    """Every ``every`` steps, at each epoch's end, at the last step and when a stop signal came
    (``stop``: folder/stop.StopSignals, which every rank agrees on): the checkpoint; then, after a
    signal, ``Stopped``."""

    def __init__(self, every: int, steps_per_epoch: int, stop):
        self.every, self.spe, self.stop = every, steps_per_epoch, stop

    def __call__(self, t) -> None:
        step = t.state.step
        signum = self.stop.agreed(t.parallel) if self.stop is not None else 0
        if step % self.every == 0 or step % self.spe == 0 or step == t.total_steps or signum:
            t.divergence.check(t)
            t.state.elapsed = time.perf_counter() - t.started
            save(t)
        if signum:
            t.bar.close()
            raise Stopped(signum, step, t.total_steps)


def save(t) -> None:
    ranks = t.parallel.gather({"rng": ckpt.rng_state(), "task": t.task.state_dict(), "running": float(t.running)})
    t.state.extra["running"] = [r.pop("running") for r in ranks]
    t.state.extra["first_loss"] = t.divergence.first
    if t.scaler is not None:
        t.state.extra["scaler"] = t.scaler.state_dict()
    if t.folder.writes:
        ckpt.save(t.folder.checkpoint, _state_now(t, ranks))
