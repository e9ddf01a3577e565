"""RigL and SET through prune-run (issue 28): the one loop, the one pruner, the results contract."""
import json

import pytest

from test_run_e2e import TINY, data_root, clean_and_resumed, prune_run, read_csv, run_dir  # noqa: F401

pytestmark = pytest.mark.slow
DST = TINY + ["sparsity=0.75", "pruning.update_every=3", "pruning.end_fraction=0.5"]


def test_rigl_holds_every_tensors_nnz_and_records_each_move(data_root, tmp_path):
    out = prune_run(DST + ["pruning=rigl"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    d = run_dir(tmp_path)
    s = json.loads((d / "summary.json").read_text())
    assert s["pruning"] == "rigl" and s["grow"] == "gradient" and s["achieved_sparsity"] == 0.75
    assert s["init_from"] == "scratch"
    rows = read_csv(d / "sparsity.csv")
    steps = sorted({int(r["step"]) for r in rows})
    t_end = round(0.5 * s["steps"])
    assert steps == [0] + list(range(3, t_end, 3))            # the start, then every ΔT until T_end
    nnz = {}
    for r in rows:
        assert nnz.setdefault(r["layer"], r["nnz"]) == r["nnz"]     # per-tensor NNZ never changes
        assert r["dropped"] == r["regrown"]
    assert all(int(r["dropped"]) == 0 for r in rows if r["step"] == "0")
    assert any(int(r["dropped"]) > 0 for r in rows if r["step"] == "3")


def test_rigl_pays_its_dense_gradients_on_sparse_kernels_and_set_does_not(data_root, tmp_path):
    """Same sparsity, same per-tensor counts: the two runs' sparse-kernel MACs differ by exactly
    examples x (f_D - f_S) at each RigL update (RigL's appendix)."""
    for method in ("rigl", "set"):
        assert prune_run(DST + [f"pruning={method}"], data_root, tmp_path / method).returncode == 0
    rigl, set_ = (json.loads((run_dir(tmp_path / m) / "summary.json").read_text()) for m in ("rigl", "set"))
    assert rigl["train_macs"] == set_["train_macs"]                 # dense kernels: what masked training runs
    steps, eps = rigl["steps"], rigl["examples_per_step"]
    f_d = rigl["train_macs"] / (3 * eps * steps)
    f_s = set_["train_macs_sparse_kernels"] / (3 * eps * steps)
    updates = len(range(3, round(0.5 * steps), 3))
    assert rigl["train_macs_sparse_kernels"] - set_["train_macs_sparse_kernels"] == pytest.approx(
        eps * updates * (f_d - f_s), rel=1e-12)


def test_a_killed_rigl_run_resumes_bit_identically(data_root, tmp_path):
    args = DST + ["pruning=rigl", "pruning.distribution=erk", "trainer.checkpoint_every=4", "model.dropout=0.3"]
    clean, killed = clean_and_resumed(args, data_root, tmp_path)
    want, got = (json.loads((d / "summary.json").read_text()) for d in (clean, killed))
    for key in ("perplexity", "val_perplexity", "params_nnz", "train_macs_sparse_kernels"):
        assert got[key] == want[key], key
    assert read_csv(killed / "sparsity.csv") == read_csv(clean / "sparsity.csv")


@pytest.mark.parametrize("bad, message", [
    (["pruning=rigl", "pruning.pattern=2:4", "sparsity=0"], "drop and regrow move single weights"),
    (["pruning=rigl", "sparsity=0"], "pruning=rigl with sparsity=0"),
    (["pruning=set", "sparsity=0.5", "pruning.update_every=0"], "pruning.update_every=0 must be a positive integer"),
    (["pruning=rigl", "sparsity=0.5", "pruning.drop_fraction=1.5"], "pruning.drop_fraction=1.5 must be a fraction in (0, 1]"),
    (["pruning=rigl", "sparsity=0.5", "pruning.distribution=gaussian"], "unknown pruning.distribution 'gaussian'"),
    (["pruning=rigl", "sparsity=0.5", "init_from=/etc/hostname"], "pruning=rigl with init_from=/etc/hostname"),
])
def test_bad_dst_input_is_one_line_exit_2(data_root, tmp_path, bad, message):
    out = prune_run(TINY + bad, data_root, tmp_path)
    said = [ln for ln in out.stderr.splitlines() if ln.startswith("prune-run:")]
    assert out.returncode == 2 and len(said) == 1 and message in said[0], out.stderr
    assert not (tmp_path / "runs").exists()
