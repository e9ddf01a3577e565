"""One run folder (DESIGN.md "Results"): the only code that names, writes and reads the files of
results/runs/EXP/RUN_ID/ (open_lth's foundations/paths.py: one name per file, here)."""
import csv
import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

METRICS_HEADER = ["step", "epoch", "split", "metric", "value"]
SPARSITY_HEADER = ["step", "layer", "numel", "nnz", "target_sparsity", "sparsity", "dropped", "regrown"]
SCHEMA_VERSION = 1


class WriteError(Exception):
    """A file of the run folder could not be written (no space left, permission lost): the run
    stops with one line naming the file and the reason (exit status 1)."""


@contextmanager
def writing(path: Path, tmp: Path = None):
    """Turn a failed write into WriteError naming ``path``; remove ``tmp`` (a half-written copy)
    on any failure, a kill by exception included."""
    try:
        yield
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """A temporary file, flushed to the disk, renamed over ``path``: the old or the new text, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def kept_step_of(checkpoint: Path) -> Optional[int]:
    """K for a checkpoint a run kept at step K (checkpoint_step<K>.pt); None for any other file."""
    kept = re.fullmatch(r"checkpoint_step(\d+)\.pt", Path(checkpoint).name)
    return None if kept is None else int(kept.group(1))


def finished_runs(results_dir) -> Iterator[Tuple["RunFolder", dict]]:
    """(folder, summary) of every run under results_dir/runs/EXP/ that has a readable summary, by path."""
    for summary in sorted(Path(results_dir, "runs").glob("*/*/summary.json")):
        folder = RunFolder(summary.parent)
        rec = folder.read_summary()
        if rec is not None:
            yield folder, rec


class RunFolder:
    """``writes=False``: a data-parallel rank other than 0, which reads the folder but never writes it.

    ``watchers``: more places every metrics and sparsity row goes to, beside the CSV files (a
    TensorBoard log, train/folder/watch.py): objects with ``metrics(step, split, row)``,
    ``sparsity(step, stats)`` and ``close()``.
    """

    def __init__(self, path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.watchers = []
        self.metrics = self.path / "metrics.csv"
        self.sparsity = self.path / "sparsity.csv"
        self.checkpoint = self.path / "checkpoint.pt"
        self.summary = self.path / "summary.json"
        self.log = self.path / "run.log"

    def kept_checkpoint(self, step: int) -> Path:
        """The state at ``step`` kept by trainer.keep_steps, for rewinding (plan/start.py)."""
        return self.path / f"checkpoint_step{int(step)}.pt"

    def kept_steps(self) -> List[int]:
        """The steps this run kept (trainer.keep_steps), in order."""
        return sorted(step for step in map(kept_step_of, self.path.glob("checkpoint_step*.pt")) if step is not None)

    @property
    def finished(self) -> bool:
        return self.summary.is_file()

    def read_summary(self) -> Optional[dict]:
        """summary.json as a dict; None when it is missing, unreadable or not a JSON object."""
        try:
            rec = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def start(self, job_cfg, hydra_cfg, resume_step: int = None) -> None:
        """Create the folder (fresh run) or drop rows written after the checkpoint (resume)."""
        if not self.writes:
            return
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            record = self.path / ".hydra"
            with writing(record):
                record.mkdir(exist_ok=True)
                OmegaConf.save(job_cfg, record / "config.yaml")
                if hydra_cfg is not None:
                    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), record / "hydra.yaml")
                    OmegaConf.save(hydra_cfg.overrides.task, record / "overrides.yaml")
            for path, header in ((self.metrics, METRICS_HEADER), (self.sparsity, SPARSITY_HEADER)):
                atomic_write_text(path, ",".join(header) + "\n")
        else:
            # A killed run may have appended rows past its last checkpoint: the resumed run
            # writes them again, so keep only what the checkpoint had seen.
            for path, header in ((self.metrics, METRICS_HEADER), (self.sparsity, SPARSITY_HEADER)):
                self._keep_rows_until(path, header, resume_step)

    @staticmethod
    def _keep_rows_until(path: Path, header: Sequence[str], step: int) -> None:
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                for row in csv.reader(f):
                    if len(row) == 6 and len(header) == 8:  # sparsity.csv before dropped,regrown: none moved
                        row = row + ["0", "0"]
                    if len(row) == len(header) and row[0].isdigit() and int(row[0]) <= step:
                        rows.append(row)
        lines = [",".join(header)] + [",".join(r) for r in rows]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def _append(self, path: Path, rows: Iterable[List]) -> None:
        if not self.writes:
            return
        with writing(path), open(path, "a", newline="") as f:
            csv.writer(f).writerows(rows)

    def log_metrics(self, step: int, epoch: float, split: str, metrics: dict) -> None:
        self._append(self.metrics, [[step, f"{epoch:.4f}", split, k, repr(float(v))] for k, v in metrics.items()])
        for w in self.watchers:
            w.metrics(step, split, metrics)

    def log_sparsity(self, step: int, stats) -> None:
        self._append(self.sparsity, [[step, s.name, s.numel, s.nnz, repr(s.target_sparsity), repr(s.sparsity),
                                      getattr(s, "dropped", 0), getattr(s, "regrown", 0)] for s in stats])
        for w in self.watchers:
            w.sparsity(step, stats)

    def read_last_metrics(self, before: int) -> dict:
        """split -> {"step": S, metric: value} of each split's last row at or before step ``before``
        in metrics.csv, finite values only (a diverged run's summary; a half-written last line is skipped)."""
        last: Dict[str, dict] = {}
        if self.metrics.is_file():
            with open(self.metrics, newline="") as f:
                for row in csv.reader(f):
                    if len(row) != len(METRICS_HEADER) or not row[0].isdigit() or int(row[0]) > before:
                        continue
                    try:
                        value = float(row[4])
                    except ValueError:
                        continue
                    seen = last.setdefault(row[2], {"step": int(row[0])})
                    if int(row[0]) != seen["step"]:
                        seen = last[row[2]] = {"step": int(row[0])}
                    if math.isfinite(value):
                        seen[row[3]] = value
        return last

    def read_updates(self) -> List[Tuple[int, Dict[str, int]]]:
        """(step, nnz per tensor) of every mask update in sparsity.csv, in step order."""
        updates: Dict[int, Dict[str, int]] = {}
        if self.sparsity.is_file():
            with open(self.sparsity, newline="") as f:
                for row in csv.DictReader(f):
                    updates.setdefault(int(row["step"]), {})[row["layer"]] = int(row["nnz"])
        return sorted(updates.items())

    def close(self) -> None:
        while self.watchers:
            self.watchers.pop().close()

    def write_summary(self, record: dict) -> None:
        if not self.writes:
            return
        atomic_write_text(self.summary, json.dumps({"schema_version": SCHEMA_VERSION, **record}, indent=1) + "\n")
