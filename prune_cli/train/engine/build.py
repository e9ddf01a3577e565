"""A run's model, data and task, built under its seed on its device (ranks: a shard of each batch),
and its optimizer and pruner, built from its plan."""
import random

import numpy as np
import torch

from prune_cli import builders
from prune_cli.config import ConfigError
from prune_cli.pruning import Pruner
from prune_cli.train.engine import distributed
from prune_cli.train.engine.optim import build_optimizer
from prune_cli.train.engine.tasks import build_task


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global streams, from the run's seed (a checkpoint restores
    them on resume: folder/checkpoint.py)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(cfg, parallel: distributed.Parallel):
    """The run's model, data and task, on its device, under its seed (the model's meta_keys: what
    its builder read from data.meta)."""
    seed_everything(cfg.seed)
    data = builders.build_data(cfg.data, cfg.seed)
    if parallel.enabled:
        if cfg.data.batch_size % parallel.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) does not split evenly over "
                              f"{parallel.world_size} ranks; use a multiple of {parallel.world_size}")
        data.train_epoch = distributed.sharded(data.train_epoch, parallel)
    meta_keys = set()
    model = builders.build_model(cfg.model, data.meta, meta_keys).to(parallel.device)
    if parallel.rank > 0:  # same initial weights everywhere; each rank its own dropout stream
        seed_everything(cfg.seed + parallel.rank)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, data, build_task(cfg, parallel.device, data.meta), meta_keys


def build_training(cfg, plan, model):
    """The optimizer of the plan's recipe and the pruner of its schedule and start (fixed masks)."""
    optimizer = build_optimizer(plan.optim, model.parameters())
    try:
        pruner = Pruner(model, plan.schedule, list(cfg.model.prune), scheme=cfg.pruning.scheme, optimizer=optimizer,
                        pattern=cfg.pruning.get("pattern", "unstructured"),
                        criterion=cfg.pruning.get("criterion", "magnitude"), seed=cfg.seed, fixed=plan.start.masks, rule=plan.rule)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return optimizer, pruner
