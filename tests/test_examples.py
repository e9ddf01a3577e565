"""examples/mlp end to end: a user's model and dataset, defined outside the package, through a fresh
install of prune-cli run from another folder: sweep, skip, resume after kill -9, report, export, infer."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["trainer.max_steps=48", "trainer.checkpoint_every=8", "trainer.log_every=8"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A new virtual environment with prune-cli installed from a copy of the source (not editable),
    the pinned dependencies reused from this one (a .pth file): what `pip install .` gives a user."""
    tmp = tmp_path_factory.mktemp("fresh")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "build",
                                                             "*.egg-info", ".pytest_cache", ".hypothesis"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_reused_dependencies.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()) + "\n")
    python = venv / "bin" / "python"
    out = subprocess.run([str(python), "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                          str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "is absent from the `packages` configuration" not in log and "SetuptoolsDeprecationWarning" not in log
    where = subprocess.run([str(python), "-c", "import prune_cli; print(prune_cli.__file__)"],
                           capture_output=True, text=True, cwd=tmp, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not this checkout
    example = src / "examples" / "mlp"
    env = {**os.environ, "PYTHONPATH": str(example)}  # the user's code: importable, not installed
    return dict(bin=venv / "bin", example=example, env=env, cwd=tmp)


def run(fresh, tool, *args, **kw):
    cmd = [str(fresh["bin"] / tool), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=fresh["env"], cwd=fresh["cwd"], timeout=300, **kw)


def example_run(fresh, results, *args):
    """prune-run [-m] --config-dir examples/mlp/conf model=mlp ARGS (flags first: Hydra's parser wants them so)."""
    flags = [a for a in args if a.startswith("-")]
    return run(fresh, "prune-run", *flags, "--config-dir", fresh["example"] / "conf", "model=mlp", *QUICK,
               *[a for a in args if a not in flags], f"results_dir={results}")


def summaries(results):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(results).glob("runs/default/*/summary.json")}


def test_the_example_sweeps_skips_reports_exports_and_infers_from_a_fresh_install(fresh, tmp_path):
    results = tmp_path / "results"
    out = example_run(fresh, results, "-m", "sparsity=0,0.75")
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr and "\r" not in out.stderr  # stderr is a pipe: plain progress lines
    got = summaries(results)
    assert len(got) == 2 and {s["family"] for s in got.values()} == {"mlp"}
    (sparse,) = [s for s in got.values() if s["target_sparsity"] == 0.75]
    (dense,) = [s for s in got.values() if s["target_sparsity"] == 0]
    assert abs(sparse["achieved_sparsity"] - 0.75) < 0.01 and sparse["params_nnz"] < dense["params_nnz"]
    assert sparse["init_from"].endswith(f"{dense['run_id']}/checkpoint.pt")  # init_from=auto, dense first
    assert sparse["model_meta"] == {"num_classes": 8, "num_features": 16} and sparse["dataset"] == "blobs"
    assert all(",config=" in run_id for run_id in got)  # the user's config is part of the run's identity

    again = example_run(fresh, results, "-m", "sparsity=0,0.75")
    assert again.returncode == 0 and again.stderr.count("nothing to do") == 2, again.stderr

    report = run(fresh, "prune-report", "--results-dir", results)
    assert report.returncode == 0, report.stderr
    table = (results / "report" / "tables" / "table_mlp.csv").read_text()
    assert "depth=2,hidden=64" in table

    folder = results / "runs" / "default" / sparse["run_id"]
    exported = tmp_path / "mlp.safetensors"
    assert run(fresh, "prune-export", folder, "-o", exported, "--format", "csr").returncode == 0
    infer = run(fresh, "prune-infer", exported, "--json")
    assert infer.returncode == 0, infer.stderr
    assert json.loads(infer.stdout)["top1"] == pytest.approx(sparse["top1"], abs=1e-9)


def last_row_step(run_dir):
    try:
        rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    except OSError:
        return 0
    return int(rows[-1].split(",")[0]) if rows and rows[-1].count(",") == 4 else 0


def test_kill_9_then_the_same_command_resumes_exactly_and_tensorboard_has_each_point_once(tmp_path):
    from test_watch import scalars

    example = ROOT / "examples" / "mlp"
    env = {**os.environ, "PYTHONPATH": str(example)}
    args = [sys.executable, "-m", "prune_cli.cli", "--config-dir", str(example / "conf"), "model=mlp", "sparsity=0.8",
            "trainer.max_steps=128", "trainer.checkpoint_every=16", "trainer.log_every=4", "trainer.tensorboard=true",
            "trainer.progress=false"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert subprocess.run(args + [f"results_dir={clean}"], env=env, capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(args + [f"results_dir={killed}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # killed once it has written rows past a checkpoint (rows every 4 steps, checkpoints every 16)
    deadline, folder = time.time() + 120, None
    while time.time() < deadline and proc.poll() is None:
        ckpt = next(iter(killed.glob("runs/default/*/checkpoint.pt")), None)
        if ckpt is not None and last_row_step(ckpt.parent) % 16:
            folder = ckpt.parent
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert folder is not None and not (folder / "summary.json").exists(), "run ended before it was killed"
    out = subprocess.run(args + [f"results_dir={killed}"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (want,), (got,) = summaries(clean).values(), summaries(killed).values()
    for key in ("top1", "top5", "params_nnz", "achieved_sparsity", "steps"):
        assert got[key] == want[key], key
    # TensorBoard: the points the killed run wrote after its checkpoint are purged, each step's
    # value is there once, and they are the uninterrupted run's numbers
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # the killed process's file, the resumed one's
    tb_clean, tb_killed = scalars(next(clean.glob("runs/default/*/"))), scalars(folder)
    assert tb_killed.keys() == tb_clean.keys() >= {"train/loss", "train/lr", "val/top1", "sparsity/achieved",
                                                   "sparsity_layer/0.weight"}
    for tag in tb_clean:
        assert tb_killed[tag] == tb_clean[tag], tag
