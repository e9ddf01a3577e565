"""A run's recipe (optimizer, learning-rate schedule, length) and its pruning schedule, from its config.

Both are pure functions of the config and the data's steps per epoch: a resumed run gets the
same recipe and schedule again, and a Scratch-B partner is planned by the same code.
"""
from omegaconf import OmegaConf

from prune_cli.pruning import GradualSchedule


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
    ``trainer.max_steps`` caps them).
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


def run_length(cfg, planned: int) -> int:
    """The steps a run trains: its recipe's ``planned`` length, capped by ``trainer.max_steps``."""
    return planned if cfg.trainer.max_steps is None else min(planned, cfg.trainer.max_steps)


def build_schedule(cfg, steps_per_epoch: int, total_steps: int, from_trained: bool,
                   planned: int = None) -> GradualSchedule:
    """Eq. 1's schedule of the run. ``planned``: the recipe's length (``recipe``); ``total_steps``
    may be capped below it, and the schedule then scales so it still ends at the target."""
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
