"""The project's sweeper (hydra/sweeper=dense_first, the default): Hydra's basic sweeper, with the
sweep's jobs launched in two waves, runs that train from scratch first, then the sparse runs
that start from a trained dense model (sparsity > 0 and init_from=auto).

Why: with init_from=auto a sparse run starts from the finished dense run of its model (section
4.1's recipe). The basic launcher runs jobs one by one in sweep order, so `sparsity=0.9,0` would
start the sparse run from scratch, and a parallel launcher (joblib, submitit) starts them all at
once, so every sparse run started from scratch, and the same sweep gave other numbers on another
launcher. Each wave is one launch (split by hydra.sweeper.max_batch_size as before); the launcher
returns when the wave is done, so the dense models exist before a sparse run looks for them.

Two copies of one sweep share its runs (train/lock.py: a run another process holds is skipped).
So before the second wave, the sweeper also waits for the first wave's runs that are running
elsewhere, and runs again, once, those left unfinished by a process that died: the sparse runs
then start from exactly the dense models a sweep alone would have given them.

Hand-written because Hydra has no ordering between jobs of a sweep, and a plugin must live in the
hydra_plugins namespace, so this module imports nothing heavy: Hydra imports it at every start.
"""
import sys
import time
from pathlib import Path
from typing import List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

POLL_S = 1.0  # how often a waiting sweep looks at the locks it waits for (a few system calls each)


def starts_from_dense(cfg: DictConfig) -> bool:
    """A sparse run that looks for a trained dense model to start from (train/run.py)."""
    from prune_cli.config import effective_sparsity
    return effective_sparsity(cfg) > 0 and str(cfg.get("init_from", "auto")) == "auto"


def run_folder(cfg: DictConfig) -> Path:
    """Where a job of the sweep writes (as train/run.py: results_dir/runs/exp_name/run_id)."""
    from prune_cli.cli import run_id
    return Path(cfg.results_dir, "runs", str(cfg.exp_name), run_id(cfg.hydra.job.override_dirname))


def wait_for(folders: dict, poll: float = POLL_S) -> list:
    """Wait while any of ``folders`` (job -> run folder) is held by another process; return the
    jobs whose runs are not finished (this sweep left them to a process that then died or gave up)."""
    from prune_cli.train.lock import held_elsewhere

    busy = [job for job, folder in folders.items() if held_elsewhere(folder)]
    if busy:
        print(f"prune-run: waiting for {len(busy)} run(s) running elsewhere, which the next runs start from: "
              + ", ".join(folders[job].name for job in busy), file=sys.stderr)
    try:
        while busy:
            time.sleep(poll)
            busy = [job for job in busy if held_elsewhere(folders[job])]
    except KeyboardInterrupt:  # nothing is being written here: leave with the status of SIGINT
        print("prune-run: stopped while waiting; the same command takes the sweep up again", file=sys.stderr)
        sys.exit(130)
    return [job for job, folder in folders.items() if not (folder / "summary.json").is_file()]


class DenseFirstSweeper(BasicSweeper):
    """BasicSweeper whose batches hold the from-scratch jobs first, then the ones that start from them."""

    def split_arguments(self, overrides: List[Override], max_batch_size) -> List[Sequence[Sequence[str]]]:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        loader = self.hydra_context.config_loader
        waves: List[list] = [[], []]
        folders = {}
        for job in jobs:
            cfg = loader.load_sweep_config(self.config, list(job))
            waves[starts_from_dense(cfg)].append(job)
            folders[tuple(job)] = run_folder(cfg)
        first = list(self.split_overrides_to_chunks(waves[0], max_batch_size)) if waves[0] else []
        second = list(self.split_overrides_to_chunks(waves[1], max_batch_size)) if waves[1] else []
        # Before the second wave's first batch: the runs it starts from, finished here or elsewhere.
        self.first_wave = {tuple(job): folders[tuple(job)] for job in waves[0]} if second else {}
        self.second_wave_at, self.rerun = len(first), set()
        return first + second

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        if self.batch_index == self.second_wave_at and self.first_wave:
            left = [job for job in wait_for(self.first_wave) if job not in self.rerun]
            if left:  # launched once more (each resumes from its checkpoint), then waited for again
                self.rerun.update(left)
                return [list(job) for job in left]
            self.first_wave = {}
        return super().get_job_batch()
