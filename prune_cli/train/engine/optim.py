"""Optimizers and learning-rate schedules, by name, from the `optim` config group (a run's
recipe, which picks them, is plan/recipe.py).

Schedules are pure functions of (step, epoch): nothing to checkpoint, exact on resume.
"""
import math

import torch


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    name = cfg.name
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.get("momentum", 0.0),
                               nesterov=cfg.get("nesterov", False), weight_decay=cfg.get("weight_decay", 0.0))
    if name == "rmsprop":
        # TF's RMSProp: decay=0.9, epsilon=1.0 for the Inception/MobileNet recipes.
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.get("alpha", 0.9), eps=cfg.get("eps", 1.0),
                                   momentum=cfg.get("momentum", 0.9), weight_decay=cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.get("weight_decay", 0.0))
    raise ValueError(f"unknown optim.name '{name}'; valid: sgd, rmsprop, adam")


def learning_rate(cfg, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based, i.e. TF's global_step before the update).

    ``lr_schedule.stretch`` r (set by plan/budget.py for a run given another run's compute):
    the schedule of a run r times shorter, read at step / r, so every decay lands at the same
    fraction of training."""
    lr, sched = cfg.lr, cfg.lr_schedule
    stretch = sched.get("stretch")
    if stretch is not None:
        step, total_steps = step / stretch, total_steps / stretch
    epoch = step // steps_per_epoch
    name = sched.name
    if name == "constant":
        return lr
    if name == "epoch_decay":  # Zaremba et al.: constant, then times `decay` every epoch
        return lr * sched.decay ** max(0, epoch + 1 - sched.constant_epochs)
    if name == "exponential":  # TF-slim: decay every `decay_epochs`, staircase
        return lr * sched.decay ** math.floor(step / (sched.decay_epochs * steps_per_epoch))
    if name == "step_decay":  # TF NMT ("luong10"): constant, then times `decay` every `decay_steps`, staircase
        if step < sched.constant_steps:
            return lr
        return lr * sched.decay ** ((step - sched.constant_steps) // sched.decay_steps)
    if name == "cosine":
        warmup = sched.get("warmup_steps", 0)
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown optim.lr_schedule.name '{name}'; valid: constant, epoch_decay, exponential, "
                     "step_decay, cosine")
