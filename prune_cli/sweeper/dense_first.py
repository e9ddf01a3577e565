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

Two copies of one sweep share its runs (train/folder/lock.py: a run another process holds is skipped).
So before each later wave, the sweeper also waits for the earlier waves' runs that are running
elsewhere, and runs again, once, those left unfinished by a process that died: the sparse runs
then start from exactly the dense models (and the fixed-mask runs take exactly the masks) a
sweep alone would have given them.

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
    """A sparse run that looks for a trained dense model to start from (train/plan/start.py)."""
    from prune_cli.config import effective_sparsity
    return (effective_sparsity(cfg) > 0 and str(cfg.get("init_from", "auto")) == "auto"
            and cfg.pruning.get("mask_from") is None
            and cfg.pruning.get("grow") is None)  # RigL / SET train sparse from scratch (pruning/dynamic.py)


def wave(cfg: DictConfig) -> int:
    """0: trains from scratch; 1: starts from a trained dense model; 2: takes its masks from a
    finished sparse run that it finds in results_dir (mask_from=auto), made by waves 0 and 1."""
    if str(cfg.pruning.get("mask_from")) == "auto":
        return 2
    return int(starts_from_dense(cfg))


def run_folder(cfg: DictConfig) -> Path:
    """Where a job of the sweep writes (as train/run.py: results_dir/runs/exp_name/run_id)."""
    from prune_cli.cli import run_id
    return Path(cfg.results_dir, "runs", str(cfg.exp_name), run_id(cfg.hydra.job.override_dirname, _root_=cfg))


def wait_for(folders: dict, poll: float = POLL_S) -> list:
    """Wait while any of ``folders`` (job -> run folder) is held by another process; return the
    jobs whose runs are not finished (this sweep left them to a process that then died or gave up)."""
    from prune_cli.train.folder.files import RunFolder
    from prune_cli.train.folder.lock import held_elsewhere

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
    return [job for job, folder in folders.items() if not RunFolder(folder).finished]


class DenseFirstSweeper(BasicSweeper):
    """BasicSweeper whose batches hold the from-scratch jobs first, then the ones that start from them,
    then the ones that take their masks from them. A job that failed or diverged returns its exit
    status (prune_cli.cli._task); ``failed`` lists them, (overrides, status), once the sweep is done,
    and prune-run then exits with the largest status (1: failed or diverged; 2: refused its input)."""

    failed: list = []  # set on the class by the sweep of this process (prune-run's main reads it)

    def sweep(self, arguments):
        returns = super().sweep(arguments)
        type(self).failed = [(" ".join(r.overrides), r.return_value) for batch in returns for r in batch
                             if isinstance(r.return_value, int) and r.return_value != 0]
        return returns

    def split_arguments(self, overrides: List[Override], max_batch_size) -> List[Sequence[Sequence[str]]]:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        loader = self.hydra_context.config_loader
        waves: List[list] = [[], [], []]
        folders = {}
        for job in jobs:
            cfg = loader.load_sweep_config(self.config, list(job))
            waves[wave(cfg)].append(job)
            folders[tuple(job)] = run_folder(cfg)
        batches, earlier = [], []
        # Before each later wave's first batch: the runs of the waves before it, finished here or elsewhere.
        self.wait_at, self.rerun = {}, set()
        for jobs_of_wave in waves:
            if not jobs_of_wave:
                continue
            if earlier:
                self.wait_at[len(batches)] = {tuple(job): folders[tuple(job)] for job in earlier}
            batches += self.split_overrides_to_chunks(jobs_of_wave, max_batch_size)
            earlier += jobs_of_wave
        return batches

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        waiting = self.wait_at.get(self.batch_index)
        if waiting:
            left = [job for job in wait_for(waiting) if job not in self.rerun]
            if left:  # launched once more (each resumes from its checkpoint), then waited for again
                self.rerun.update(left)
                return [list(job) for job in left]
            del self.wait_at[self.batch_index]
        return super().get_job_batch()
