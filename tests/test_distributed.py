"""Data-parallel runs: batch shards, mask checks across ranks, one run on two gloo processes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from prune_cli.pruning import ConstantSchedule, Pruner
from prune_cli.train.engine import distributed
from test_run_e2e import TINY, data_root, prune_run, read_csv, run_dir  # noqa: F401  (data_root is a fixture)


# -- fast: the pieces ------------------------------------------------------------------------
def test_shard_takes_contiguous_rows_and_passes_other_items_whole():
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6)
    refs = ["a", "b", "c", "d", "e", "f"]
    parts = [distributed.shard((x, y, refs), r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert torch.equal(parts[1][1], torch.tensor([2, 3])) and all(p[2] is refs for p in parts)
    with pytest.raises(ValueError, match="cannot be split evenly over 4 ranks"):
        distributed.shard((x,), 0, 4)


def _pruner(seed, sparsity=0.5):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    pruner = Pruner(model, ConstantSchedule(sparsity), ["*.weight"])
    pruner.step(0)
    return pruner


def test_mask_checksum_equal_for_equal_masks_and_differs_otherwise():
    assert torch.equal(distributed.mask_checksum(_pruner(0)), distributed.mask_checksum(_pruner(0)))
    a, b = distributed.mask_checksum(_pruner(0)), distributed.mask_checksum(_pruner(1))
    assert a.shape == (2, 3) and not torch.equal(a, b)
    assert a[0, 0] == 32 and a[1, 0] == 16  # nonzeros: half of 64 and of 32


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_on_rank(rank, port, seeds, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    parallel = distributed.setup(torch.device("cpu"))
    agreed = parallel.agree(15 * rank)  # a signal rank 1 alone got (train/stop.py): every rank stops for it
    try:
        parallel.check_masks(_pruner(seeds[rank]), step=7)
        results.put((rank, f"same; agreed {agreed}"))
    except distributed.RankMismatchError as e:
        results.put((rank, f"{e}; agreed {agreed}"))
    finally:
        distributed.teardown()


@pytest.mark.slow  # two spawned processes: seconds
@pytest.mark.parametrize("seeds, verdict", [((0, 0), "same"), ((0, 1), "pruning masks differ between ranks at step 7")])
def test_check_masks_across_two_gloo_ranks(seeds, verdict):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_check_on_rank, args=(r, port, seeds, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all(verdict in got[r] for r in range(2)), got  # every rank stops, loudly
    assert all(got[r].endswith("; agreed 15") for r in range(2)), got


# -- end to end: torchrun, 2 gloo ranks ---------------------------------------------------------
ARGS = TINY + ["sparsity=0.75", "pruning.frequency=2", "model.dropout=0.3", "trainer.epochs=3",
               "trainer.checkpoint_every=3"]


def torchrun_cmd(args, results, n=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "prune_cli.cli", *args, f"results_dir={results}"]


def torchrun(args, data_root, results, n=2):
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    return subprocess.run(torchrun_cmd(args, results, n), env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_ranks_one_set_of_files_identical_masks_same_nnz_as_one_process(data_root, tmp_path):
    dense = ["sparsity=0.75", "pruning.frequency=2", "model.dropout=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert prune_run(TINY + dense, data_root, one).returncode == 0
    out = torchrun(TINY + dense, data_root, two)
    assert out.returncode == 0, out.stderr
    d1, d2 = run_dir(one), run_dir(two)
    assert d1.name == d2.name  # the number of ranks is not part of a run's identity
    assert sorted(p.name for p in d2.iterdir()) == [".hydra", "checkpoint.pt", "metrics.csv", "run.log",
                                                     "sparsity.csv", "summary.json"]
    assert (d2 / "run.log").read_text().count(" start ") == 1  # rank 0 alone logs
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (d1, d2))
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    # Masks: every update checked equal across ranks (else the run stops); NNZ exactly the single process's.
    assert read_csv(d2 / "sparsity.csv") == read_csv(d1 / "sparsity.csv")
    assert s2["params_nnz"] == s1["params_nnz"] and s2["achieved_sparsity"] == s1["achieved_sparsity"]
    # Without dropout, 2 ranks x half the batch = 1 process x the whole batch, up to float rounding.
    assert s2["perplexity"] == pytest.approx(s1["perplexity"], rel=1e-4)
    assert s2["val_perplexity"] == pytest.approx(s1["val_perplexity"], rel=1e-4)


@pytest.mark.slow
def test_two_ranks_kill_9_then_same_command_ends_with_identical_numbers(data_root, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    out = torchrun(ARGS, data_root, clean)
    assert out.returncode == 0, out.stderr
    want = json.loads((run_dir(clean) / "summary.json").read_text())

    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    proc = subprocess.Popen(torchrun_cmd(ARGS, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, ckpt = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = list(killed.glob("runs/default/*/checkpoint.pt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, at once
    proc.wait()
    # torchrun may start its ranks in process groups of their own: kill whatever still runs on
    # this results_dir, and wait until it is gone, so that no rank writes after the "kill -9".
    while subprocess.run(["pkill", "-9", "-f", str(killed)]).returncode == 0:
        time.sleep(0.2)
    assert ckpt is not None, "run ended before its first checkpoint"
    assert not (ckpt.parent / "summary.json").exists()

    # The same checkpoint on another number of ranks: refused, one line, nothing touched.
    before = ckpt.read_bytes()
    single = prune_run(ARGS, data_root, killed)
    assert single.returncode == 2 and "written by 2 rank(s), this run has 1" in single.stderr, single.stderr
    assert ckpt.read_bytes() == before

    # SIGTERM to torchrun mid-run (a cluster's first signal): torchrun passes it to both ranks, which
    # agree on the step to stop at; rank 0 writes that step's checkpoint (train/stop.py).
    proc = subprocess.Popen(torchrun_cmd(ARGS, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    inode, deadline = ckpt.stat().st_ino, time.time() + 300
    while time.time() < deadline and proc.poll() is None and ckpt.stat().st_ino == inode:
        time.sleep(0.02)  # until the resumed run writes its next checkpoint
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    step = torch.load(ckpt, weights_only=False)["loop"]["step"]
    log = (ckpt.parent / "run.log").read_text()
    assert log.count("stopped by SIGTERM") == 1 and f"stopped by SIGTERM at step {step} of " in log, err
    assert step < want["steps"] and not (ckpt.parent / "summary.json").exists()

    out = torchrun(ARGS, data_root, killed)
    assert out.returncode == 0, out.stderr
    got = json.loads((run_dir(killed) / "summary.json").read_text())
    for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps"):
        assert got[key] == want[key], key
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    assert strip(read_csv(run_dir(killed) / "metrics.csv")) == strip(read_csv(run_dir(clean) / "metrics.csv"))
    assert read_csv(run_dir(killed) / "sparsity.csv") == read_csv(run_dir(clean) / "sparsity.csv")


@pytest.mark.slow
def test_global_batch_must_split_evenly(data_root, tmp_path):
    out = torchrun(TINY + ["data.batch_size=5"], data_root, tmp_path)
    assert out.returncode != 0
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("prune-run: error:")]
    assert errors == ["prune-run: error: data.batch_size=5 (the global batch) does not split evenly over 2 ranks; "
                      "use a multiple of 2"], out.stderr
    assert not (tmp_path / "runs").exists()
