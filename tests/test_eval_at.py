"""Evaluation along the way (issue 25): trainer.eval_at, the training MACs on every evaluation
row, and the protocol of the frontier study (the model at step B of a constant-rate run is the
model a run of budget B gives)."""
import json
from collections import defaultdict

import pytest

from test_run_e2e import TINY, data_root, clean_and_resumed, prune_run, read_csv, run_dir  # noqa: F401

pytestmark = pytest.mark.slow


def evaluations(folder):
    """step -> split -> metric -> value, held-out splits only."""
    out = defaultdict(lambda: defaultdict(dict))
    for r in read_csv(folder / "metrics.csv"):
        if r["split"] != "train":
            out[int(r["step"])][r["split"]][r["metric"]] = float(r["value"])
    return out


def test_eval_at_adds_rows_with_their_macs_and_changes_nothing(data_root, tmp_path):
    sparse = TINY + ["sparsity=0.5", "pruning.frequency=2", "model.dropout=0.3"]
    with_eval, without = tmp_path / "with", tmp_path / "without"
    assert prune_run(sparse + ["trainer.eval_at=[2,5,11]"], data_root, with_eval).returncode == 0
    assert prune_run(sparse, data_root, without).returncode == 0
    a, b = (json.loads((run_dir(r) / "summary.json").read_text()) for r in (with_eval, without))
    for key in ("perplexity", "val_perplexity", "params_nnz", "steps", "train_macs", "train_macs_sparse_kernels"):
        assert a[key] == b[key], key  # dropout draws from the RNG: evaluating must not touch it
    rows = evaluations(run_dir(with_eval))
    assert {2, 5, 11, a["steps"]} <= set(rows)
    per_step = a["train_macs"] / a["steps"]
    for step in (2, 5, 11):
        valid = rows[step]["valid"]
        assert valid["train_macs"] == per_step * step and valid["train_macs_pipeline"] == valid["train_macs"]
        assert valid["train_macs_sparse_kernels"] <= valid["train_macs"] and "perplexity" in valid
    final = rows[a["steps"]]
    assert final["test"]["train_macs"] == a["train_macs"] and final["valid"]["perplexity"] == a["val_perplexity"]
    assert final["valid"]["train_macs_sparse_kernels"] == a["train_macs_sparse_kernels"]
    # on sparse kernels the steps cost less once the masks thin out (pruning begins after an epoch)
    sparse_kernels = [rows[step]["valid"]["train_macs_sparse_kernels"] for step in (2, 5, 11, a["steps"])]
    assert sparse_kernels == sorted(sparse_kernels) and sparse_kernels[-1] < a["train_macs"]


def test_the_model_at_step_b_is_what_a_run_of_budget_b_gives(data_root, tmp_path):
    """Zaremba's small recipe keeps its rate constant for 4 epochs: a 12-step run evaluated at step 6
    holds exactly the model of a 6-step run (dense; the same seed, data order and rate)."""
    long, short = tmp_path / "long", tmp_path / "short"
    assert prune_run(TINY + ["trainer.max_steps=12", "trainer.eval_at=[6]"], data_root, long).returncode == 0
    assert prune_run(TINY + ["trainer.max_steps=6"], data_root, short).returncode == 0
    assert evaluations(run_dir(long))[6]["valid"]["perplexity"] == \
        json.loads((run_dir(short) / "summary.json").read_text())["val_perplexity"]


def test_resume_keeps_the_evaluation_rows_exact(data_root, tmp_path):
    args = TINY + ["sparsity=0.5", "pruning.frequency=2", "trainer.eval_at=[3,9,15]", "trainer.checkpoint_every=4"]
    clean, killed = clean_and_resumed(args, data_root, tmp_path)
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    assert strip(read_csv(killed / "metrics.csv")) == strip(read_csv(clean / "metrics.csv"))


@pytest.mark.parametrize("bad, message", [
    (["trainer.eval_at=[0,5]"], "trainer.eval_at=[0, 5] must be a list of steps (positive integers)"),
    (["trainer.eval_at=5"], "trainer.eval_at=5 must be a list of steps"),
    (["trainer.eval_at=[5,1000]"], "trainer.eval_at=[5, 1000] holds step 1000, beyond the run's"),
])
def test_bad_eval_at_is_one_line_before_any_work(data_root, tmp_path, bad, message):
    out = prune_run(TINY + bad, data_root, tmp_path)
    said = [ln for ln in out.stderr.splitlines() if ln.startswith("prune-run:")]
    assert out.returncode == 2 and len(said) == 1 and message in said[0], out.stderr
    assert not list(tmp_path.glob("runs/*/*/metrics.csv"))
