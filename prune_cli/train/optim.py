"""Optimizers, learning-rate schedules and a run's recipe, by name, from the `optim` config group.

Schedules are pure functions of (step, epoch): nothing to checkpoint, exact on resume.
"""
import math

import torch
from omegaconf import OmegaConf


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


def recipe(cfg, from_trained: bool, steps_per_epoch: int):
    """The optimizer recipe a run trains with, and its planned length in optimizer steps.

    A sparse run that starts from a trained dense model has a recipe of its own in the paper:
    the dense schedule at a smaller initial rate for MobileNet (section 4.1: ``sparse_lr_factor``
    scales ``optim.lr``), and for GNMT a shorter schedule of its own (section 4.3: lr 0.5 for 70K
    steps, then halved every 17K for 170K). The ``optim.from_trained`` block says the latter:
    its ``lr`` and ``lr_schedule`` keys replace the family's, and ``steps`` or ``epochs`` give the
    run's length. Every other run trains ``trainer.steps`` steps when the recipe counts steps
    (GNMT), else ``trainer.epochs`` epochs.

    Returns (optim config node with ``from_trained`` merged in, planned steps before
    ``trainer.max_steps`` caps them). A pure function of the config: a resumed run gets the
    same recipe again.
    """
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    block = optim.pop("from_trained", None) or {}
    length = cfg.trainer.get("steps")
    planned = int(length) if length is not None else int(cfg.trainer.epochs * steps_per_epoch)
    if from_trained:
        optim["lr"] = block.get("lr", optim["lr"] * optim.get("sparse_lr_factor", 1.0))
        optim["lr_schedule"] = {**optim["lr_schedule"], **block.get("lr_schedule", {})}
        if block.get("steps") is not None:
            planned = int(block["steps"])
        elif block.get("epochs") is not None:
            planned = int(block["epochs"] * steps_per_epoch)
    return OmegaConf.create(optim), planned


def learning_rate(cfg, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based, i.e. TF's global_step before the update).

    ``lr_schedule.stretch`` r (set by train/budget.py for a run given another run's compute):
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
