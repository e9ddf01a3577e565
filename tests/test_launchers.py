"""Sweeps on Hydra's joblib and submitit launchers: same runs, same folders, same promises as the basic one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prune_cli.cli import extend_launcher_schemas, gpus
from prune_cli.train.engine.distributed import set_threads
from test_run_e2e import TINY, data_root, prune_run, read_csv  # noqa: F401  (data_root is a fixture)

SWEEP = TINY + ["trainer.epochs=1", "trainer.max_steps=12", "sparsity=0,0.5", "pruning.frequency=4"]
COMPARED = ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps", "run_id")


def summaries(results, exp="default"):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(results, "runs", exp).glob("*/summary.json")}


def snapshot(root):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in Path(root).rglob("*") if p.is_file()}


# -- fast: the pieces ------------------------------------------------------------------------
def test_gpus_requested_only_when_device_wants_cuda():
    assert gpus("cuda", 1) == 1 and gpus("cuda:1", 4) == 4 and gpus("cpu", 4) == 0
    import torch
    assert gpus("auto", 2) == (2 if torch.cuda.is_available() else 0)


def test_threads_split_between_joblib_jobs_and_set_at_every_run(monkeypatch):
    import torch
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        joblib = OmegaConf.create({"launcher": {"_target_": "x.JoblibLauncher", "n_jobs": 2}})
        assert set_threads(None, joblib) == max(1, cores // 2) == torch.get_num_threads()
        every_core = OmegaConf.create({"launcher": {"_target_": "x.JoblibLauncher", "n_jobs": -1}})
        assert set_threads(None, every_core) == 1
        assert set_threads(3, joblib) == 3 == torch.get_num_threads()  # trainer.threads wins
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this node
        assert set_threads(None, None) == max(1, cores // 2)
    finally:
        torch.set_num_threads(before)


def test_launcher_defaults_compose_with_project_values():
    from hydra import compose, initialize_config_module

    extend_launcher_schemas()  # as prune-run does: the plugins' schemas under NAME_schema (no warning)
    with initialize_config_module("prune_cli.conf", version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=submitit_slurm", "device=cpu",
                                             "hydra.launcher.tasks_per_node=4"], return_hydra_config=True)
        local = compose("config", overrides=["hydra/launcher=submitit_local", "device=cpu"], return_hydra_config=True)
        joblib = compose("config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert slurm.hydra.launcher.timeout_min == local.hydra.launcher.timeout_min == 1440  # not the plugin's 60
    assert slurm.hydra.launcher.max_num_timeout > 0 and slurm.hydra.launcher.gpus_per_node == 0
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and local.hydra.launcher._target_.endswith("LocalLauncher")
    assert joblib.hydra.launcher.n_jobs == 2 and joblib.hydra.launcher._target_.endswith("JoblibLauncher")
    # Launcher keys are hydra.* keys: never part of a run's identity.
    excluded = set(slurm.hydra.job.config.override_dirname.exclude_keys)
    assert "trainer.threads" in excluded


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_joblib_sweep_equals_basic_and_either_launcher_skips_the_others_runs(data_root, tmp_path):
    basic, joblib = tmp_path / "basic", tmp_path / "joblib"
    assert prune_run(["-m", *SWEEP], data_root, basic).returncode == 0
    out = prune_run(["-m", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], data_root, joblib)
    assert out.returncode == 0, out.stderr
    want, got = summaries(basic), summaries(joblib)
    assert len(want) == 2 and sorted(got) == sorted(want)  # launcher keys do not enter run_id
    (sparse,) = [s for s in want.values() if s["target_sparsity"] > 0]
    assert sparse["init_from"].endswith("sparsity=0,trainer.checkpoint_every=7,trainer.epochs=1,"
                                        "trainer.log_every=5,trainer.max_steps=12/checkpoint.pt")
    for run, s in want.items():
        for key in COMPARED:
            if isinstance(s[key], float):
                assert got[run][key] == pytest.approx(s[key], rel=1e-3), key  # threads differ: float rounding
            else:
                assert got[run][key] == s[key], key
        assert read_csv(joblib / "runs/default" / run / "sparsity.csv") == read_csv(basic / "runs/default" / run / "sparsity.csv")
    # A sweep finished with the basic launcher, started again with joblib: every run skipped.
    before = snapshot(basic / "runs/default")
    out = prune_run(["-m", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], data_root, basic)
    assert out.returncode == 0 and out.stderr.count("nothing to do") == 2, out.stderr
    after = snapshot(basic / "runs/default")
    assert {p: v for p, v in after.items() if p.name != "multirun.yaml"} == \
           {p: v for p, v in before.items() if p.name != "multirun.yaml"}


@pytest.mark.slow
def test_a_sweep_runs_its_dense_runs_before_the_sparse_runs_that_start_from_them(data_root, tmp_path):
    """Listed sparse first, launched dense first (hydra/sweeper=dense_first): the sparse run starts
    from the dense run of its sweep (init_from=auto); init_from=none stays in the first wave."""
    sweep = TINY + ["trainer.epochs=1", "trainer.max_steps=8", "pruning.frequency=2"]
    out = prune_run(["-m", *sweep, "sparsity=0.5,0", "init_from=auto,none"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    got = {(s["target_sparsity"], "init_from=none" in s["run_id"]): s for s in summaries(tmp_path).values()}
    assert len(got) == 4
    dense_ckpt = Path(tmp_path, "runs/default", got[0.0, False]["run_id"], "checkpoint.pt")
    assert got[0.5, False]["init_from"] == str(dense_ckpt)
    assert got[0.5, True]["init_from"] == "scratch" and got[0.0, True]["init_from"] == "scratch"


@pytest.mark.slow
def test_joblib_refuses_a_bad_job_before_any_starts(data_root, tmp_path):
    out = prune_run(["-m", *TINY, "hydra/launcher=joblib", "seed=1,notanint"], data_root, tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "seed='notanint' must be an integer" in lines[0] and "(in job:" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no folder made


@pytest.mark.slow
def test_job_refused_in_a_joblib_worker_leaves_no_run_folder(data_root, tmp_path):
    dense = tmp_path / "dense"
    assert prune_run(TINY + ["trainer.max_steps=2"], data_root, dense).returncode == 0
    ckpt = next(dense.glob("runs/default/*/checkpoint.pt"))
    out = prune_run(["-m", *TINY, "hydra/launcher=joblib", "model.hidden=8,12", f"init_from='{ckpt}'", "exp_name=x"],
                    data_root, tmp_path)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("prune-run: error:")]
    assert out.returncode == 2 and errors and all("does not fit this model" in e for e in errors), out.stderr
    # The workers found the checkpoint unfit before writing anything. A refused job removes the
    # folder its lock made (train/lock.py); but joblib terminates the other worker as soon as one
    # job exits with an error, and a worker killed while it held its lock leaves that folder,
    # empty but for .lock (which never blocks: its holder is dead). Nothing else is written.
    left = [p.relative_to(tmp_path / "runs" / "x") for p in (tmp_path / "runs" / "x").rglob("*") if p.is_file()]
    assert {p.name for p in left} <= {"multirun.yaml", ".lock"} and Path("multirun.yaml") in left


def _children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's process in /proc")
def test_submitit_local_job_requeued_after_preemption_resumes_from_its_checkpoint(data_root, tmp_path):
    args = TINY + ["sparsity=0.75", "pruning.frequency=2", "model.dropout=0.3", "trainer.epochs=3",
                   "trainer.checkpoint_every=3"]
    clean = tmp_path / "clean"
    assert prune_run(args, data_root, clean).returncode == 0
    want = next(iter(summaries(clean).values()))

    results = tmp_path / "submitit"
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    sweep = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", "-m", *args, "hydra/launcher=submitit_local",
                              f"results_dir={results}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, task = time.time() + 240, None
        while time.time() < deadline and sweep.poll() is None:  # the job's first checkpoint, then its process
            if list(results.glob("runs/default/*/checkpoint.pt")):
                jobs = [int(p.name) for p in results.glob("runs/default/.submitit/*") if p.name.isdigit()]
                tasks = [c for j in jobs for c in _children(j)]
                if tasks:
                    task = tasks[0]
                    break
            time.sleep(0.05)
        assert task is not None, "the job ended before its first checkpoint"
        os.kill(task, signal.SIGUSR2)  # what SLURM sends before preempting; submitit requeues the job
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, err
    run = next(results.glob("runs/default/*/summary.json")).parent
    log = (run / "run.log").read_text()
    assert " start " in log and " resume " in log, log
    resumed_at = int(log.split("resume ")[1].split(" at step ")[1].split("/")[0])
    assert resumed_at > 0 and resumed_at % 3 == 0  # from a checkpoint, losing < checkpoint_every steps
    got = json.loads((run / "summary.json").read_text())
    for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps"):
        assert got[key] == want[key], key
    assert read_csv(run / "sparsity.csv") == read_csv(next(clean.glob("runs/default/*/sparsity.csv")))
    # One job, started twice by submitit ("start" then "resume" in run.log above): the requeue.
    # (submitit's own "requeued" log line is not asserted: how much of it is flushed before the
    # job is killed depends on the machine's load.)
