"""One writer per run folder, signals that save and leave, disk trouble in one line (issue 20)."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prune_cli.report.study import study_table
from prune_cli.train.folder import checkpoint as ckpt
from prune_cli.train.folder.lock import RunLock, held_elsewhere
from prune_cli.train.folder.files import RunFolder, WriteError
from prune_cli.train.folder.stop import stop_signals
from test_run_e2e import TINY, data_root, prune_run, read_csv, run_dir  # noqa: F401  (data_root is a fixture)

# What another process sees.
TRY_LOCK = "import sys; from prune_cli.train.folder.lock import RunLock, held_elsewhere, holder; " \
           "print(held_elsewhere(sys.argv[1]), RunLock(sys.argv[1]).acquire(), holder(sys.argv[1]), sep='|')"


def other_process(*args):
    out = subprocess.run([sys.executable, "-c", TRY_LOCK, *map(str, args)], capture_output=True, text=True, timeout=120)
    return out.stdout.strip().split("|")


def snapshot(root):
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in Path(root).rglob("*") if p.is_file()}


# -- fast: the pieces ------------------------------------------------------------------------
def test_a_held_run_folder_is_refused_to_another_process_and_free_after_release(tmp_path):
    folder = tmp_path / "runs" / "exp" / "run"
    lock = RunLock(folder)
    assert lock.acquire() and lock.note.startswith(f"pid {os.getpid()} on {os.uname().nodename} since ")
    assert (folder / ".lock").read_text() == lock.note
    assert other_process(folder) == ["True", "False", lock.note]
    lock.release()
    # Nothing was written into the folder: the folders the lock made are gone again.
    assert list(tmp_path.iterdir()) == []
    held, got, note = other_process(folder)
    assert (held, got) == ("False", "True") and note.startswith("pid ") and str(os.getpid()) not in note


def test_a_released_lock_keeps_a_folder_that_was_written_into(tmp_path):
    folder = tmp_path / "run"
    lock = RunLock(folder)
    assert lock.acquire()
    (folder / "metrics.csv").write_text("step\n")
    lock.release()
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv"]


KILLED_HOLDER = """
import os, signal, sys, time
from prune_cli.train.folder.lock import RunLock
assert RunLock(sys.argv[1]).acquire()
child = os.fork()  # as a DataLoader worker: it outlives its parent for a while
if child == 0:  # the at-fork handlers have run when fork() returns here; say so, then live on
    open(sys.argv[2] + ".tmp", "w").write(str(os.getpid()))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    time.sleep(60)
    os._exit(0)
while not os.path.exists(sys.argv[2]):  # under load the child may not have run yet
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_left_by_a_killed_process_never_blocks_even_while_its_forked_child_lives(tmp_path):
    folder, pid_file = tmp_path / "run", tmp_path / "child.pid"
    out = subprocess.run([sys.executable, "-c", KILLED_HOLDER, str(folder), str(pid_file)], timeout=120,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = int(pid_file.read_text())
    try:
        assert out.returncode == -signal.SIGKILL and (folder / ".lock").is_file()  # left behind
        os.kill(child, 0)  # the holder's child still runs, with the lock file open
        assert not held_elsewhere(folder)
        lock = RunLock(folder)
        assert lock.acquire(grace=0)
        lock.release()
        assert not (folder / ".lock").exists()
    finally:
        os.kill(child, signal.SIGKILL)


def test_stop_signals_record_the_first_signal_and_restore_the_previous_handlers():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script inherits it
    try:
        with stop_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # Python runs handlers between bytecodes
            assert stop.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


class FullDisk(io.FileIO):
    """A file on a disk that fills up after 100 bytes."""

    def write(self, b):
        if self.tell() + len(b) > 100:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"model": {"w": torch.arange(3.0)}})
    good = path.read_bytes()
    monkeypatch.setattr(ckpt, "open", lambda p, mode: FullDisk(p, "w"), raising=False)
    with pytest.raises(WriteError) as e:
        ckpt.save(path, {"model": {"w": torch.zeros(1000)}})
    assert str(e.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == good and torch.equal(ckpt.load(path)["model"]["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no half-written copy left


def test_a_summary_that_cannot_be_written_is_one_error_naming_it(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "summary.json.tmp").mkdir()  # something in the way of the temporary file
    with pytest.raises(WriteError, match=f"^cannot write {tmp_path / 'summary.json'}: Is a directory$"):
        folder.write_summary({"status": "finished"})
    assert not folder.finished


def test_the_sweep_table_lists_the_runs_another_process_holds(tmp_path):
    folder = tmp_path / "runs" / "exp" / "model.hidden=24,sparsity=0.5"
    (folder / ".hydra").mkdir(parents=True)
    # as Hydra saves it: interpolations left in (a size's preset width, here 24)
    model = {"name": "ptb_lstm", "size": "small", "presets": {"small": {"hidden": 24}},
             "hidden": "${model.presets.${model.size}.hidden}"}
    OmegaConf.save(OmegaConf.create({"sparsity": 0.5, "model": model, "pruning": {"pattern": "unstructured"}}),
                   folder / ".hydra" / "config.yaml")
    (folder / "metrics.csv").write_text("step,epoch,split,metric,value\n12,0.5,train,loss,3.0\n")
    lock = RunLock(folder)
    assert lock.acquire()
    lines = study_table(folder.parent).splitlines()
    assert len(lines) == 3 and lines[2].split() == ["ptb_lstm", "hidden", "24", "50%", "running", "elsewhere",
                                                    "(step", "12)"]
    lock.release()
    assert len(study_table(folder.parent).splitlines()) == 2  # stopped, not running: no row


# -- end to end ----------------------------------------------------------------------------------
def start(args, data_root, results):
    """prune-run in the background, with SIGINT's default disposition whatever this shell gave us."""
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    return subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={results}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def new_checkpoint(results, proc, after=None, timeout=120):
    """Wait for a checkpoint other than ``after`` (an inode) to appear; its path and inode."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for path in Path(results).glob("runs/default/*/checkpoint.pt"):
            try:
                ino = path.stat().st_ino
            except FileNotFoundError:
                continue
            if ino != after:
                return path, ino
        time.sleep(0.01)
    raise AssertionError(f"no new checkpoint; the run ended first: {proc.communicate()}")


def said(stderr):
    return [line for line in stderr.splitlines() if line.startswith("prune-run:")]


def saved_step(path):
    return ckpt.load(path)["loop"]["step"]


@pytest.mark.slow
def test_sigint_and_sigterm_save_and_leave_a_full_disk_stops_in_one_line_and_the_run_resumes_exactly(
        data_root, tmp_path):
    args = TINY + ["sparsity=0.75", "pruning.frequency=2", "model.dropout=0.3", "trainer.epochs=2",
                   "trainer.checkpoint_every=10"]
    clean, results = tmp_path / "clean", tmp_path / "stopped"
    assert prune_run(args, data_root, clean).returncode == 0
    want = json.loads((run_dir(clean) / "summary.json").read_text())

    ino = None
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        proc = start(args, data_root, results)
        path, ino = new_checkpoint(results, proc, after=ino)  # mid-run (first checkpoint written)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == status, err
        step = saved_step(path)  # the step in progress when the signal came, saved
        assert said(err) == [f"prune-run: {path.parent}: stopped by {sig.name} at step {step} of {want['steps']}; "
                              "its checkpoint is saved and the same command resumes it"], err
        assert 10 <= step < want["steps"] and not (path.parent / "summary.json").exists()
        assert not (path.parent / ".lock").exists()
        ino = path.stat().st_ino

    # The disk refuses the next checkpoint: one line naming it, exit 1, the last good one kept.
    before = path.read_bytes()
    (path.parent / "checkpoint.pt.tmp").mkdir()
    out = prune_run(args, data_root, results)
    assert out.returncode == 1 and said(out.stderr) == [
        f"prune-run: error: cannot write {path}: Is a directory; stopped, the last good checkpoint is kept in "
        f"{path.parent}"], out.stderr
    assert path.read_bytes() == before and saved_step(path) == step
    (path.parent / "checkpoint.pt.tmp").rmdir()

    out = prune_run(args, data_root, results)
    assert out.returncode == 0, out.stderr
    got = json.loads((path.parent / "summary.json").read_text())
    for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps"):
        assert got[key] == want[key], key
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    assert strip(read_csv(path.parent / "metrics.csv")) == strip(read_csv(run_dir(clean) / "metrics.csv"))
    assert read_csv(path.parent / "sparsity.csv") == read_csv(run_dir(clean) / "sparsity.csv")
    log = (path.parent / "run.log").read_text()
    assert log.count(" start ") == 1 and log.count(" resume ") == 3 and log.count("stopped by SIG") == 2


def run_id(args):
    """A run's folder name: Hydra's override_dirname (the last value of each key, sorted, without
    the keys conf/config.yaml excludes), which cli.run_id leaves as it is when it is this short."""
    excluded = ("trainer.progress", "data.download", "trainer.threads")
    last = dict(a.split("=", 1) for a in args)
    return ",".join(sorted(f"{k}={v}" for k, v in last.items() if k not in excluded))


@pytest.mark.slow
def test_runs_another_process_holds_are_left_to_it_and_a_sweep_waits_for_those_it_starts_from(data_root, tmp_path):
    # A single run: one line, exit 0, its folder untouched.
    folder = tmp_path / "runs" / "default" / run_id(TINY)
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("step,epoch,split,metric,value\n")
    held = RunLock(folder)
    assert held.acquire()
    before = snapshot(tmp_path)
    out = prune_run(TINY, data_root, tmp_path)
    assert out.returncode == 0 and said(out.stderr) == [
        f"prune-run: {folder} is running elsewhere ({held.note}): left to that process"], out.stderr
    assert snapshot(tmp_path) == before
    held.release()

    # A sweep whose dense run (first wave) and sparse run (second wave) another process holds: it
    # waits for the dense run; that process dies without finishing it, so the sweep trains it and
    # starts the sparse run from it... except that the sparse run is held too: skipped, listed.
    sweep = TINY + ["trainer.epochs=1", "trainer.max_steps=8", "pruning.frequency=2"]
    dense, sparse = (tmp_path / "sweep" / "runs" / "default" / run_id(sweep + [f"sparsity={s}"]) for s in (0, 0.5))
    locks = [RunLock(dense), RunLock(sparse)]
    assert all(lock.acquire() for lock in locks)
    proc = start(["-m", *sweep, "sparsity=0.5,0"], data_root, tmp_path / "sweep")
    try:
        lines = []
        while not any("waiting for" in line for line in lines):
            lines.append(proc.stderr.readline())
            assert lines[-1], "the sweep ended without waiting: " + "".join(lines)
        assert lines[-1] == f"prune-run: waiting for 1 run(s) running elsewhere, which the next runs start from: " \
                            f"{dense.name}\n"
        locks[0].release()  # its holder is gone, the run unfinished
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    err = "".join(lines) + err
    elsewhere = "prune-run: {} is running elsewhere ({}): left to that process"
    assert said(err) == [elsewhere.format(dense, locks[0].note), lines[-1].strip(),
                         elsewhere.format(sparse, locks[1].note)], err
    assert json.loads((dense / "summary.json").read_text())["init_from"] == "scratch"
    assert (dense / "run.log").read_text().count(" start ") == 1
    row = [line for line in out.splitlines() if line.startswith(sparse.name)]  # no .hydra/ yet: named by its folder
    assert len(row) == 1 and row[0].split()[1:] == ["running", "elsewhere"], out
    assert sorted(p.name for p in sparse.iterdir()) == [".lock"]
    locks[1].release()


@pytest.mark.slow
def test_two_copies_of_a_sweep_train_each_run_once_and_give_what_one_alone_gives(data_root, tmp_path):
    sweep = ["-m", *TINY, "trainer.epochs=1", "trainer.max_steps=30", "model.hidden=8,16", "sparsity=0,0.5",
             "pruning.frequency=4", "trainer.threads=1"]
    solo, shared = tmp_path / "solo", tmp_path / "shared"
    out = prune_run(sweep, data_root, solo)
    assert out.returncode == 0, out.stderr
    copies = [start(sweep, data_root, shared) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in copies]
    assert [p.returncode for p in copies] == [0, 0], outs
    # Every run trained once between the two copies: four "finished" lines in all, one start each.
    assert sum(err.count("] finished ") for _, err in outs) == 4, outs
    want = {p.parent.name: json.loads(p.read_text()) for p in solo.glob("runs/default/*/summary.json")}
    got = {p.parent.name: json.loads(p.read_text()) for p in shared.glob("runs/default/*/summary.json")}
    assert len(want) == 4 and sorted(got) == sorted(want)
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    for run, s in want.items():
        for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps"):
            assert got[run][key] == s[key], (run, key)
        assert got[run]["init_from"] == s["init_from"].replace(str(solo), str(shared))  # the same dense start
        d, e = solo / "runs/default" / run, shared / "runs/default" / run
        assert strip(read_csv(e / "metrics.csv")) == strip(read_csv(d / "metrics.csv"))  # no row twice
        assert read_csv(e / "sparsity.csv") == read_csv(d / "sparsity.csv")
        log = (e / "run.log").read_text()
        assert log.count(" start ") == 1 and " resume " not in log
