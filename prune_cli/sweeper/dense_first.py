"""The project's sweeper (hydra/sweeper=dense_first, the default): Hydra's basic sweeper, with the
sweep's jobs launched in waves: runs that train from scratch first, then the sparse runs that
start from a trained dense model (sparsity > 0 and init_from=auto), then the fixed-mask runs
that take their masks from a finished sparse run of the sweep (pruning.mask_from=auto).

Why: with init_from=auto a sparse run starts from the finished dense run of its model (section
4.1's recipe). The basic launcher runs jobs one by one in sweep order, so `sparsity=0.9,0` would
start the sparse run from scratch, and a parallel launcher (joblib, submitit) starts them all at
once, so every sparse run started from scratch, and the same sweep gave other numbers on another
launcher. Each wave is one launch (split by hydra.sweeper.max_batch_size as before); the launcher
returns when the wave is done, so the dense models exist before a sparse run looks for them, and
the mask sources (which may themselves start from a dense model) before the runs that use them.

Hand-written because Hydra has no ordering between jobs of a sweep, and a plugin must live in the
hydra_plugins namespace, so this module imports nothing heavy: Hydra imports it at every start.
"""
from typing import List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig


def starts_from_dense(cfg: DictConfig) -> bool:
    """A sparse run that looks for a trained dense model to start from (train/start.py)."""
    from prune_cli.config import effective_sparsity
    return (effective_sparsity(cfg) > 0 and str(cfg.get("init_from", "auto")) == "auto"
            and cfg.pruning.get("mask_from") is None)


def wave(cfg: DictConfig) -> int:
    """0: trains from scratch; 1: starts from a trained dense model; 2: takes its masks from a
    finished sparse run that it finds in results_dir (mask_from=auto), made by waves 0 and 1."""
    if str(cfg.pruning.get("mask_from")) == "auto":
        return 2
    return int(starts_from_dense(cfg))


class DenseFirstSweeper(BasicSweeper):
    """BasicSweeper whose batches hold the from-scratch jobs first, then the ones that start from them,
    then the ones that take their masks from them."""

    def split_arguments(self, overrides: List[Override], max_batch_size) -> List[Sequence[Sequence[str]]]:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        loader = self.hydra_context.config_loader
        waves: List[list] = [[], [], []]
        for job in jobs:
            waves[wave(loader.load_sweep_config(self.config, list(job)))].append(job)
        return [chunk for wave in waves if wave for chunk in self.split_overrides_to_chunks(wave, max_batch_size)]
