"""The report at equal compute (issue 17): MAC columns, the equal-compute twin as its own point
and pairing partner, Welch's verdicts in the pairing table, quality-vs-MACs figures, and runs
made before MACs were counted."""
import math

import pandas as pd
import pytest

from prune_cli.report import cli
from test_report_points import PAPER, lm, one

H48, H384 = 2 * 4 * 48 * 96 + 48 * 10000, 2 * 4 * 384 * 768 + 384 * 10000   # MACs a token
TWIN = {"budget_match": '{"model": {"hidden": 384}, "sparsity": 0.9}', "budget_convention": "dense_kernels",
        "budget_partner": {"size": "small", "hidden": 384, "width": None, "units": None, "target_sparsity": 0.9,
                           "scheme": "uniform", "pattern": "unstructured", "steps": 500}}


def macs(per_token, steps=500, infer=None):
    train = 3 * steps * 400 * per_token
    return dict(macs_unit="token", infer_macs_dense=per_token, infer_macs=infer or per_token, train_macs=train,
                train_macs_sparse_kernels=train, train_macs_pipeline=train, steps=steps)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    for seed, (plain, twin, s90, s80) in enumerate(((400, 290, 300, 330), (402, 292, 302, 332))):
        lm(root, f"b/+point=dense_h48,seed={seed}", 48, 0.0, 1_000_000, float(plain), seed, **macs(H48))
        lm(root, f"b/+point=twin_h48,seed={seed}", 48, 0.0, 1_000_000, float(twin), seed,
           cfg_over={"budget": {"match": {"model": {"hidden": 384}, "sparsity": 0.9}}},
           **macs(H48, steps=5997), **TWIN, budget_train_macs=3 * 500 * 400 * H384, budget_stretch=11.994)
        lm(root, f"b/+point=sparse_h384_0.9,seed={seed}", 384, 0.9, 1_020_000, float(s90), seed,
           **macs(H384, infer=620_000))
        lm(root, f"b/+point=sparse_h384_0.8,seed={seed}", 384, 0.8, 2_020_000, float(s80), seed,
           **macs(H384, infer=1_300_000))
    lm(root, "b/+point=dense_h96,seed=0", 96, 0.0, 2_000_000, 380.0, 0)   # a run from before MACs were counted
    return root, cli.make_report(root, root / "report", paper_dir=PAPER)


def test_pairing_at_equal_steps_and_at_equal_compute(study):
    _, rep = study
    t = rep["tables"]["pairing"].csv
    r = one(t, sparsity=0.9)
    # the twin has h48's NNZ but is never the equal-steps partner
    assert (r["dense by NNZ"], r["sparse advantage by NNZ"], r["verdict at equal steps"]) == ("hidden=48", 100.0, "wins")
    assert r["inference MACs ratio"] == 620_000 / H48 and r["training MACs ratio"] == H384 / H48
    # at equal compute: 291 vs 301, SE sqrt(2/2 + 2/2); 2 seeds a side, equal stds: df 2, p = 1 - t / sqrt(t^2 + 2)
    t_stat = 10 / math.sqrt(2)
    assert (r["dense by compute"], r["dense by compute: convention"]) == ("hidden=48", "dense_kernels")
    assert r["dense by compute: training MACs"] == 3 * 5997 * 400 * H48 and r["sparse advantage by compute"] == -10.0
    assert r["p by compute"] == pytest.approx(1 - t_stat / math.sqrt(t_stat ** 2 + 2), rel=1e-9)   # 0.019
    assert r["verdict at equal compute"] == "loses" and r["dense by compute: quality"] == 291.0
    r = one(t, sparsity=0.8)        # no twin for this one
    assert pd.isna(r["dense by compute"]) and r["verdict at equal compute"] == ""
    assert r["dense by NNZ"] == "hidden=96" and math.isnan(r["inference MACs ratio"])  # h96 has no MACs
    md = (rep["out_dir"] / "tables" / "pairing.md").read_text()
    head = md.splitlines()[2]
    for col in ("verdict at equal steps", "verdict at equal compute", "inference MACs ratio", "training MACs ratio",
                "equal-compute twin", "p by compute"):
        assert f"| {col} |" in head
    assert "| hidden=48 (3.72T training MACs, 291.00 ± 1.41 (n=2)) | -10.00 | 0.019 | loses |" in md
    page = (rep["out_dir"] / "index.md").read_text()
    assert "Welch's t-test at 95%" in page and "verdicts at equal compute" in page


def test_points_csv_carries_the_mac_means_and_old_runs_leave_them_empty(study):
    _, rep = study
    pts = pd.read_csv(rep["out_dir"] / "points.csv")
    for c in ("infer_macs_dense", "infer_macs", "train_macs", "train_macs_sparse_kernels", "train_macs_pipeline"):
        assert f"{c}_mean" in pts
    twin = one(pts, budget_match=TWIN["budget_match"])
    assert (twin["train_macs_mean"], twin["budget_convention"], twin["macs_unit"]) == (3 * 5997 * 400 * H48,
                                                                                       "dense_kernels", "token")
    plain = pts[(pts["hidden"] == 48) & pts["budget_match"].isna()].iloc[0]
    assert plain["point_id"] != twin["point_id"] and plain["infer_macs_mean"] == H48
    old = one(pts, hidden=96)       # empty cells
    assert pd.isna(old["infer_macs_mean"]) and pd.isna(old["train_macs_mean"]) and pd.isna(old["macs_unit"])
    assert len(rep["tables"]["table6_size_vs_quality"].csv.query("kind == 'small-dense'")) == 2   # h48, h96: no twin


def test_quality_vs_mac_figures(study):
    _, rep = study
    figs = rep["out_dir"] / "figures"
    for name in ("quality_vs_infer_macs_ptb_lstm_ptb", "quality_vs_train_macs_ptb_lstm_ptb"):
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").is_file()
    page = (rep["out_dir"] / "index.md").read_text()
    assert "quality vs training MACs (ptb)" in page and "Runs made before MACs were counted are not drawn" in page


def test_the_sweep_table_names_the_twin_by_its_budget(study):
    """The table a sweep prints: the twin's row says whose training MACs it had; the plain dense
    model of the same size is a row of its own with no config keys in its name."""
    from prune_cli.report.study import study_table
    root, _ = study
    rows = [line for line in study_table(root / "runs" / "b").splitlines() if "hidden 48" in line]
    assert len(rows) == 2 and not any("budget" in line or "[" in line for line in rows)
    assert sum("ptb_lstm (training MACs of hidden 384 @ 90%)" in line for line in rows) == 1
    assert "291.00 ± 1.41" in next(line for line in rows if "MACs of" in line)
