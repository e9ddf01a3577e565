"""prune-run end to end on tiny generated PTB-format data (runs anywhere, in seconds)."""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TINY = ["model.size=small", "model.hidden=16", "data.batch_size=4", "data.bptt=5", "data.eval_bptt=50",
        "trainer.epochs=3", "trainer.checkpoint_every=7", "trainer.log_every=5", "trainer.progress=false",
        "data.download=false"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "ptb").mkdir()
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>"]
    for split, lines in (("train", 120), ("valid", 20), ("test", 20)):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(lines))
        (root / "ptb" / f"ptb.{split}.txt").write_text(text + "\n")
    return root


def prune_run(args, data_root, results, **kw):
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    cmd = [sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={results}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)


def killed_at_first_checkpoint(args, data_root, results):
    """Start ``prune-run args`` and kill -9 it once its first checkpoint is on disk."""
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    proc = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={results}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(Path(results).glob("runs/*/*/checkpoint.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def clean_and_resumed(args, data_root, tmp_path):
    """The run folders of ``args`` run straight through and run again after a kill -9 at its first
    checkpoint (the same command resumes it)."""
    assert prune_run(args, data_root, tmp_path / "clean").returncode == 0
    killed_at_first_checkpoint(args, data_root, tmp_path / "killed")
    out = prune_run(args, data_root, tmp_path / "killed")
    assert out.returncode == 0, out.stderr
    return run_dir(tmp_path / "clean"), run_dir(tmp_path / "killed")


def run_dir(results, exp="default"):
    dirs = [d for d in (Path(results) / "runs" / exp).iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fresh_run_writes_the_results_contract(data_root, tmp_path):
    out = prune_run(TINY + ["sparsity=0.5", "pruning.frequency=4"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    d = run_dir(tmp_path)
    assert d.name == "data.batch_size=4,data.bptt=5,data.eval_bptt=50,model.hidden=16," \
                     "model.size=small,pruning.frequency=4,sparsity=0.5,trainer.checkpoint_every=7," \
                     "trainer.epochs=3,trainer.log_every=5"
    for name in ("metrics.csv", "sparsity.csv", "checkpoint.pt", "summary.json", "run.log",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"):
        assert (d / name).is_file(), name
    s = json.loads((d / "summary.json").read_text())
    for key in ("schema_version", "exp_name", "run_id", "model", "family", "size", "hidden", "dataset",
                "target_sparsity", "achieved_sparsity", "params_total", "params_nnz", "bytes_dense",
                "bytes_bitmask", "bytes_csr", "model_size_mb", "perplexity", "val_perplexity", "steps",
                "epochs", "wall_time_s", "seed", "git_sha", "torch_version", "device", "status", "init_from"):
        assert key in s, key
    assert s["status"] == "finished" and s["target_sparsity"] == 0.5 and s["init_from"] == "scratch"
    assert s["epochs"] == 3 and s["steps"] % 3 == 0 and s["run_id"] == d.name
    # Pruned tensors: embedding, the 4 LSTM weight matrices, the softmax; each exactly half kept at the end.
    rows = read_csv(d / "sparsity.csv")
    last = [r for r in rows if int(r["step"]) == max(int(x["step"]) for x in rows)]
    assert [r["layer"] for r in last] == ["embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                          "lstm.weight_ih_l1", "lstm.weight_hh_l1", "decoder.weight"]
    assert all(int(r["nnz"]) == int(r["numel"]) // 2 for r in last)
    assert s["achieved_sparsity"] == 0.5
    assert s["params_nnz"] == s["params_total"] - sum(int(r["numel"]) // 2 for r in last)
    # Updates land every 4 steps of the schedule; the masks at each hold eq. 1's level.
    steps = sorted({int(r["step"]) for r in rows})
    assert all((b - a) % 4 == 0 for a, b in zip(steps, steps[1:]))
    metrics = read_csv(d / "metrics.csv")
    assert {(m["split"], m["metric"]) for m in metrics} >= {("train", "loss"), ("train", "lr"), ("train", "sparsity"),
                                                            ("valid", "perplexity"), ("test", "perplexity")}
    test_ppl = [float(m["value"]) for m in metrics if m["split"] == "test" and m["metric"] == "perplexity"]
    assert test_ppl == [s["perplexity"]]


def test_finished_run_is_skipped_and_nothing_rewritten(data_root, tmp_path):
    args = TINY + ["trainer.epochs=1"]
    assert prune_run(args, data_root, tmp_path).returncode == 0
    d = run_dir(tmp_path)
    assert read_csv(d / "sparsity.csv") == []  # dense: no masks, no rows
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.rglob("*") if p.is_file()}
    out = prune_run(args, data_root, tmp_path)
    assert out.returncode == 0 and "nothing to do" in out.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.rglob("*") if p.is_file()} == before


def test_kill_9_then_same_command_ends_with_identical_numbers(data_root, tmp_path):
    args = TINY + ["sparsity=0.75", "pruning.frequency=2", "model.dropout=0.3", "trainer.epochs=4", "trainer.checkpoint_every=3"]
    clean = tmp_path / "clean"
    assert prune_run(args, data_root, clean).returncode == 0
    want = json.loads((run_dir(clean) / "summary.json").read_text())

    killed = tmp_path / "killed"
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    proc = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={killed}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(killed.glob("runs/default/*/checkpoint.pt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "run ended before its first checkpoint"
    assert not (ckpt.parent / "summary.json").exists()
    assert (ckpt.parent / ".lock").is_file()  # the killed run's lock file (train/lock.py): it must not block
    out = prune_run(args, data_root, killed)
    assert out.returncode == 0, out.stderr
    assert not (ckpt.parent / ".lock").exists()
    got = json.loads((run_dir(killed) / "summary.json").read_text())
    for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps", "model_size_mb"):
        assert got[key] == want[key], key
    # The metrics history is the same as if it had never been interrupted.
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    assert strip(read_csv(run_dir(killed) / "metrics.csv")) == strip(read_csv(run_dir(clean) / "metrics.csv"))
    assert read_csv(run_dir(killed) / "sparsity.csv") == read_csv(run_dir(clean) / "sparsity.csv")


@pytest.mark.parametrize("bad, message", [
    (["sparsity=1.0"], "sparsity=1.0 is outside [0, 1)"),
    (["model=resnet"], "unknown model 'resnet'; valid:"),
    (["model.size=huge"], "unknown model.size 'huge' for ptb_lstm; valid: small, medium, large"),
    (["init_from=/no/such.pt"], "init_from=/no/such.pt: no such checkpoint file"),
    (["data.root=/no/such/dir"], "/no/such/dir/ptb"),
    (["nokey=1"], "Could not override 'nokey'"),
    (["-m", "sparsity=0.5,2"], "sparsity=2.0 is outside [0, 1)"),
])
def test_bad_input_one_line_exit_2_results_untouched(data_root, tmp_path, bad, message):
    keep = tmp_path / "runs" / "old" / "r" / "summary.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    flags = [a for a in bad if a.startswith("-")]
    out = prune_run(flags + TINY + [a for a in bad if a not in flags], data_root, tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and keep.read_text() == "{}"


def test_unwritable_results_dir(data_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = prune_run(TINY, data_root, blocker / "results")
    assert out.returncode == 2 and "is a file, not a directory" in out.stderr


def test_corrupt_and_foreign_checkpoints_refused_and_kept(data_root, tmp_path):
    args = TINY + ["trainer.epochs=1"]
    assert prune_run(args, data_root, tmp_path).returncode == 0
    d = run_dir(tmp_path)
    (d / "summary.json").unlink()  # as if killed after its last checkpoint
    good = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(b"garbage")
    out = prune_run(args, data_root, tmp_path)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("prune-run: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "cannot be read" in errors[0]
    assert (d / "checkpoint.pt").read_bytes() == b"garbage"

    state = torch.load(__import__("io").BytesIO(good), weights_only=False)
    state["config"]["seed"] = 99  # written by another config
    torch.save(state, d / "checkpoint.pt")
    foreign = (d / "checkpoint.pt").read_bytes()
    out = prune_run(args, data_root, tmp_path)
    assert out.returncode == 2 and "written by a different config" in out.stderr
    assert (d / "checkpoint.pt").read_bytes() == foreign


def test_init_from_auto_starts_from_the_dense_run_and_prunes_at_once(data_root, tmp_path):
    assert prune_run(TINY + ["exp_name=dense"], data_root, tmp_path).returncode == 0
    dense = run_dir(tmp_path, "dense")
    out = prune_run(TINY + ["exp_name=sparse", "sparsity=0.8", "pruning.frequency=2"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads((run_dir(tmp_path, "sparse") / "summary.json").read_text())
    assert s["init_from"] == str(dense / "checkpoint.pt")
    # From a trained model pruning begins at step 0 (s_i = 0 there, so the first mask is at 0 + dt).
    assert "begin_step=0," in (run_dir(tmp_path, "sparse") / "run.log").read_text()
    assert read_csv(run_dir(tmp_path, "sparse") / "sparsity.csv")[0]["step"] == "2"
    out = prune_run(TINY + ["exp_name=scratch", "sparsity=0.8", "init_from=none"], data_root, tmp_path)
    assert json.loads((run_dir(tmp_path, "scratch") / "summary.json").read_text())["init_from"] == "scratch"
    bad = prune_run(TINY + ["exp_name=x", "model.hidden=8", f"init_from='{dense / 'checkpoint.pt'}'"], data_root, tmp_path)
    assert bad.returncode == 2 and "does not fit this model" in bad.stderr
    assert not (tmp_path / "runs" / "x").exists()


def test_multirun_sweeps_sizes_and_sparsities(data_root, tmp_path):
    out = prune_run(["-m", *TINY, "trainer.epochs=1", "model.hidden=8,16", "sparsity=0,0.5"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    runs = sorted(p.parent.name for p in (tmp_path / "runs" / "default").glob("*/summary.json"))
    assert len(runs) == 4 and all("model.hidden=" in r and "sparsity=" in r for r in runs)


def test_divergence_stops_with_a_clear_message(data_root, tmp_path):
    """Issue 29: one line naming the step, summary.json with status diverged, exit status 1; the
    same command again does not train it (it would diverge the same way) and says so."""
    args = TINY + ["optim.lr=1e38", "optim.clip_grad_norm=null"]
    out = prune_run(args, data_root, tmp_path)
    lines = [ln for ln in out.stderr.splitlines() if "diverged at step" in ln]
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "(lr 1e+38); lower optim.lr or set optim.clip_grad_norm" in lines[0] and "Traceback" not in out.stderr
    d = run_dir(tmp_path)
    assert "stopped: diverged at step" in (d / "run.log").read_text()
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "diverged" and s["diverged_step"] == s["steps"] >= 1 and s.get("perplexity") is None
    assert f"diverged at step {s['diverged_step']}:" in lines[0] and s["diverged_reason"] in lines[0]
    before = (d / "summary.json").read_bytes()
    again = prune_run(args, data_root, tmp_path)
    assert again.returncode == 1 and "not trained again" in again.stderr and "Traceback" not in again.stderr
    assert (d / "summary.json").read_bytes() == before