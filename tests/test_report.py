"""prune-report on generated run folders: exact table values, figures, page, CLI, paper CSVs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from prune_cli.report import cli
from prune_cli.report.collect import collect

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"
SEED_DOC = REPO.parent / "shared" / "seeds" / "001_8c9c1356fbef50c6.txt"


def summary(**kw) -> dict:
    d = dict(schema_version=1, model=kw.get("family"), size=None, hidden=None, width=None,
             units=None, synthetic=False, pruning="gradual", scheme="uniform",
             achieved_sparsity=kw.get("target_sparsity"), steps=100, epochs=1.0, wall_time_s=1.0,
             seed=1, git_sha="abc", torch_version="x", device="cpu", status="finished",
             init_from="none", lr=0.1, perplexity=None, val_perplexity=None, top1=None,
             top5=None, bleu=None)
    d.update(kw)
    if d["target_sparsity"] == 0:
        d["pruning"] = "none"
    return d


# (exp/run_id, summary fields, metrics.csv rows)
RUNS = [
    ("ptb/small_dense", dict(family="ptb_lstm", size="small", hidden=200, dataset="ptb",
     target_sparsity=0.0, params_total=4_600_000, params_nnz=4_600_000, perplexity=120.0,
     bytes_dense=18_400_000, bytes_bitmask=575_000, bytes_csr=2_300_000,
     bytes_csr_exact=2_300_100, model_size_mb=18.4), 5),
    ("ptb/medium_dense", dict(family="ptb_lstm", size="medium", hidden=650, dataset="ptb",
     target_sparsity=0.0, params_total=19_800_000, params_nnz=19_800_000, perplexity=85.0,
     bytes_dense=79_200_000, bytes_bitmask=2_475_000, bytes_csr=9_900_000,
     bytes_csr_exact=9_900_100, model_size_mb=79.2), 5),
    ("ptb/medium_s90_seed1", dict(family="ptb_lstm", size="medium", hidden=650, dataset="ptb",
     target_sparsity=0.9, params_total=19_800_000, params_nnz=2_000_000, perplexity=88.0,
     bytes_dense=79_200_000, bytes_bitmask=2_475_000, bytes_csr=1_000_000,
     bytes_csr_exact=1_000_100, model_size_mb=9.0, seed=1), 30),
    ("ptb/medium_s90_seed2", dict(family="ptb_lstm", size="medium", hidden=650, dataset="ptb",
     target_sparsity=0.9, params_total=19_800_000, params_nnz=2_000_002, perplexity=90.0,
     bytes_dense=79_200_000, bytes_bitmask=2_475_000, bytes_csr=1_000_001,
     bytes_csr_exact=1_000_101, model_size_mb=9.000009, seed=2), None),  # corrupt metrics
    ("mobile/w025", dict(family="mobilenet", width=0.25, dataset="cifar10", target_sparsity=0.0,
     params_total=200_000, params_nnz=200_000, top1=80.0, top5=98.0, bytes_dense=800_000,
     bytes_bitmask=25_000, bytes_csr=100_000, bytes_csr_exact=100_010, model_size_mb=0.8), 5),
    ("mobile/w05", dict(family="mobilenet", width=0.5, dataset="cifar10", target_sparsity=0.0,
     params_total=800_000, params_nnz=800_000, top1=85.0, top5=99.0, bytes_dense=3_200_000,
     bytes_bitmask=100_000, bytes_csr=400_000, bytes_csr_exact=400_010, model_size_mb=3.2), 5),
    ("mobile/w1", dict(family="mobilenet", width=1.0, dataset="cifar10", target_sparsity=0.0,
     params_total=3_200_000, params_nnz=3_200_000, top1=90.0, top5=99.5,
     bytes_dense=12_800_000, bytes_bitmask=400_000, bytes_csr=1_600_000,
     bytes_csr_exact=1_600_010, model_size_mb=12.8), 5),
    ("mobile/w1_s75", dict(family="mobilenet", width=1.0, dataset="cifar10",
     target_sparsity=0.75, params_total=3_200_000, params_nnz=800_000, top1=84.0, top5=97.0,
     bytes_dense=12_800_000, bytes_bitmask=400_000, bytes_csr=400_000,
     bytes_csr_exact=400_010, model_size_mb=3.6), 5),
    ("mobile/w1_s90", dict(family="mobilenet", width=1.0, dataset="cifar10",
     target_sparsity=0.9, params_total=3_200_000, params_nnz=320_000, top1=83.0, top5=96.0,
     bytes_dense=12_800_000, bytes_bitmask=400_000, bytes_csr=600_000,
     bytes_csr_exact=600_010, model_size_mb=1.68), 5),
    ("imnet/w1_s50", dict(family="mobilenet", width=1.0, dataset="imagenet",
     target_sparsity=0.5, params_total=4_210_000, params_nnz=2_130_000, top1=69.0, top5=89.0,
     bytes_dense=16_840_000, bytes_bitmask=526_250, bytes_csr=1_065_000,
     bytes_csr_exact=1_065_010, model_size_mb=9.04625), 5),
    ("smoke/fake_s90", dict(family="mobilenet", width=1.0, dataset="fake_imagenet",
     synthetic=True, target_sparsity=0.9, params_total=4_210_000, params_nnz=421_000,
     top1=0.1, top5=0.5, bytes_dense=16_840_000, bytes_bitmask=526_250, bytes_csr=210_500,
     bytes_csr_exact=210_510, model_size_mb=1.8945), 5),
    ("nmt/u1024_s80", dict(family="gnmt", units=1024, dataset="wmt16", direction="en-de", target_sparsity=0.8,
     params_total=211_000_000, params_nnz=44_000_000, bleu=26.0, bytes_dense=844_000_000,
     bytes_bitmask=26_375_000, bytes_csr=22_000_000, bytes_csr_exact=22_000_010,
     model_size_mb=198.0), 5),
]


def metrics_rows(n: int, s: float) -> str:
    rows = ["step,epoch,split,metric,value"]
    for i in range(n):
        rows += [f"{i * 10},0,train,lr,{0.1 / (i + 1)}", f"{i * 10},0,train,sparsity,{s * i / n}",
                 f"{i * 10},0,train,loss,{5 - i / n}", f"{i * 10},0,valid,perplexity,{200 - i}"]
    return "\n".join(rows) + "\n"


def make_tree(root: Path) -> Path:
    runs = root / "runs"
    for rel, fields, n in RUNS:
        exp, rid = rel.split("/")
        d = runs / exp / rid
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(summary(exp_name=exp, run_id=rid, **fields)))
        s = fields["target_sparsity"]
        if n is None:   # corrupt metrics.csv, and the largest, so Figure 2 tries it first
            (d / "metrics.csv").write_text("step,epoch,split,metric,value\n" + "x,y\n" * 2000)
        else:
            (d / "metrics.csv").write_text(metrics_rows(n, s))
        if s > 0:
            (d / "sparsity.csv").write_text(
                "step,layer,numel,nnz,target_sparsity,sparsity\n"
                f"0,enc.weight,100,100,{s},0.0\n0,dec.weight,100,100,{s},0.0\n"
                f"50,enc.weight,100,10,{s},0.9\n50,dec.weight,100,20,{s},0.8\n")
    inc = runs / "ptb" / "running"  # in progress: last row half written
    inc.mkdir(parents=True)
    (inc / "metrics.csv").write_text(metrics_rows(31, 0.9) + "310,1,tr")
    (runs / "ptb" / "killed" / ".hydra").mkdir(parents=True)
    bad = runs / "ptb" / "broken"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text('{"family": "ptb_lstm", "params_nnz": ')
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("results"))
    return cli.make_report(root, root / "report", paper_dir=PAPER)


def row(df: pd.DataFrame, **kw) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for k, v in kw.items():
        m &= (df[k] - v).abs() < 1e-12 if isinstance(v, float) else df[k] == v
    hit = df[m]
    assert len(hit) == 1, (kw, hit)
    return hit.iloc[0]


# ---------------------------------------------------------------- collection
def test_counts_incomplete_and_skipped(report):
    assert report["n_finished"] == 12
    coll = report["collection"]
    inc = {r["run"]: r["last_step"] for r in coll.incomplete}
    assert inc == {"ptb/running": 300, "ptb/killed": None}
    skipped = {r["file"] for r in coll.skipped}
    assert "ptb/broken/summary.json" in skipped
    assert "ptb/medium_s90_seed2/metrics.csv" in skipped
    out = report["out_dir"]
    assert set(pd.read_csv(out / "incomplete.csv")["run"]) == {"ptb/running", "ptb/killed"}
    assert "ptb/broken/summary.json" in set(pd.read_csv(out / "skipped.csv")["file"])


def test_a_run_in_progress_is_not_a_partial_file(report):
    """Its metrics.csv ends mid-line because it is being written: incomplete, not partial; only a
    run that has ended (summary.json) has files that should end with a newline."""
    coll = report["collection"]
    assert not [r for r in coll.skipped if r["file"].startswith("ptb/running")]
    assert coll.folders == 15 and coll.n_read == 14 and coll.diverged.empty   # ptb/broken: skipped
    assert set(coll.runs["status"]) == {"finished"}


def test_bad_summary_fields_are_named(tmp_path):
    d = tmp_path / "runs" / "e" / "r"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary(family="gnmt", target_sparsity=0.5,
                                                       params_nnz="lots")))
    c = collect(tmp_path)
    assert c.runs.empty
    assert c.skipped == [dict(file="e/r/summary.json",
                              reason="field 'params_nnz' is not a number: 'lots'")]


# ---------------------------------------------------------------- Tables 1-4
def test_ptb_mean_std_and_paper(report):
    t = report["tables"]["table_ptb_lstm"].csv
    r = row(t, size="medium", sparsity=0.9)
    assert r["n"] == 2
    assert r["perplexity"] == 89.0
    assert r["perplexity std"] == pytest.approx(math.sqrt(2), abs=1e-12)
    assert r["NNZ params"] == 2_000_001
    assert r["paper NNZ params"] == 2_000_000
    assert r["NNZ params Δ vs paper"] == 1
    assert r["paper perplexity"] == 87.86
    assert r["perplexity Δ vs paper"] == pytest.approx(1.14, abs=1e-9)
    assert r["runs"] == "ptb/medium_s90_seed1;ptb/medium_s90_seed2"
    r = row(t, size="small", sparsity=0.0)
    assert (r["n"], r["perplexity"], r["paper perplexity"]) == (1, 120.0, 115.3)
    assert math.isnan(r["perplexity std"])
    assert r["perplexity Δ vs paper"] == pytest.approx(4.7, abs=1e-9)
    md = (report["out_dir"] / "tables" / "table_ptb_lstm.md").read_text()
    assert "| ptb | medium | gradual, uniform | 90% | 2M | 2M | 89.00 ± 1.41 (n=2) | 87.86 | +1.14 |" in md
    tex = (report["out_dir"] / "tables" / "table_ptb_lstm.tex").read_text()
    assert "89.00 $\\pm$ 1.41" in tex and "\\begin{tabular}" in tex


def test_no_paper_values_for_cifar_or_synthetic(report):
    t = report["tables"]["table_mobilenet"].csv
    cifar = t[t["dataset"] == "cifar10"]
    assert len(cifar) == 5
    assert cifar["paper top-1"].isna().all() and cifar["paper NNZ params"].isna().all()
    assert cifar["top-1 Δ vs paper"].isna().all()
    fake = row(t, dataset="fake_imagenet")
    assert bool(fake["synthetic"]) and math.isnan(fake["paper top-1"])
    im = row(t, dataset="imagenet", sparsity=0.5)
    assert (im["paper top-1"], im["paper top-5"], im["paper NNZ params"]) == (69.5, 89.5, 2_130_000)
    assert im["top-1 Δ vs paper"] == pytest.approx(-0.5, abs=1e-9)
    assert im["top-5 Δ vs paper"] == pytest.approx(-0.5, abs=1e-9)


def test_gnmt_bleu_vs_paper(report):
    r = row(report["tables"]["table_gnmt"].csv, units="1024", sparsity=0.8)
    assert (r["direction"], r["BLEU"], r["paper BLEU"]) == ("en-de", 26.0, 26.86)
    assert r["BLEU Δ vs paper"] == pytest.approx(-0.86, abs=1e-9)


# ---------------------------------------------------------------- Tables 5, 6, pairing
def test_table5_from_bytes_fields(report):
    t = report["tables"]["table5_storage"].csv
    r = row(t, family="mobilenet", dataset="cifar10", sparsity=0.9)
    assert (r["bit-mask (MB)"], r["CSR(C) (MB)"], r["model size (MB)"]) == (0.4, 0.6, 1.68)
    assert r["CSR(C) exact (MB)"] == 0.60001 and r["dense (MB)"] == 12.8
    assert math.isnan(r["paper bit-mask (MB)"])
    r = row(t, family="mobilenet", dataset="imagenet", sparsity=0.5)
    assert (r["bit-mask (MB)"], r["CSR(C) (MB)"]) == (0.52625, 1.065)
    assert (r["paper bit-mask (MB)"], r["paper CSR(C) (MB)"]) == (0.52, 1.06)
    assert r["bit-mask Δ vs paper"] == pytest.approx(0.00625, abs=1e-12)
    r = row(t, family="ptb_lstm", **{"base model": "medium"}, sparsity=0.9)
    assert r["CSR(C) (MB)"] == pytest.approx(1.0000005, abs=1e-12)   # mean of 2 seeds


def test_table6_small_dense_vs_large_sparse(report):
    t = report["tables"]["table6_size_vs_quality"].csv
    c = t[t["dataset"] == "cifar10"]
    assert list(zip(c["kind"], c["base model"], c["sparsity"], c["model size (MB)"], c["quality"])) == [
        ("small-dense", "0.5", 0.0, 3.2, 85.0), ("small-dense", "0.25", 0.0, 0.8, 80.0),
        ("large-sparse", "1.0", 0.75, 3.6, 84.0), ("large-sparse", "1.0", 0.9, 1.68, 83.0)]
    r = row(t, dataset="imagenet", kind="large-sparse")
    assert (r["paper model size (MB)"], r["paper quality"]) == (9.04, 69.5)
    assert r["quality Δ vs paper"] == pytest.approx(-0.5, abs=1e-9)
    p = row(t, family="ptb_lstm", kind="small-dense", **{"base model": "small"})
    assert (p["metric"], p["quality"]) == ("perplexity", 120.0)


def test_pairing_winners(report):
    t = report["tables"]["pairing"].csv
    r = row(t, dataset="cifar10", sparsity=0.75)
    assert (r["dense by NNZ"], r["winner by NNZ"], r["sparse advantage by NNZ"]) == ("0.5", "small-dense", -1.0)
    assert (r["dense by size"], r["winner by size"]) == ("0.5", "small-dense")
    r = row(t, dataset="cifar10", sparsity=0.9)   # NNZ and size pick different dense models
    assert (r["dense by NNZ"], r["winner by NNZ"], r["sparse advantage by NNZ"]) == ("0.25", "large-sparse", 3.0)
    assert (r["dense by size"], r["winner by size"], r["sparse advantage by size"]) == ("0.5", "small-dense", -2.0)
    r = row(t, family="ptb_lstm", sparsity=0.9)   # perplexity: lower is better
    assert (r["dense by NNZ"], r["winner by NNZ"], r["sparse advantage by NNZ"]) == ("small", "large-sparse", 31.0)
    r = row(t, family="gnmt")                      # no dense GNMT run: nothing to pair with
    assert r["winner by NNZ"] == "" and pd.isna(r["dense by NNZ"])
    s = report["out_dir"] / "tables" / "pairing.md"
    md = s.read_text()   # one seed a side: the difference, but no SE and no verdict
    assert "| +3.00 | n/a (1 seed) | n/a (1 seed) |" in md and "| -2.00 | n/a (1 seed) | n/a (1 seed) |" in md


# ---------------------------------------------------------------- figures and page
def test_figures_written(report):
    figs = report["out_dir"] / "figures"
    names = ["quality_vs_nnz_ptb_lstm_ptb", "quality_vs_nnz_mobilenet_cifar10",
             "quality_vs_nnz_mobilenet_imagenet", "quality_vs_nnz_mobilenet_fake_imagenet_synthetic",
             "quality_vs_nnz_gnmt_wmt16_en-de", "fig1_sparsity_function", "fig2_schedule_and_quality",
             "layer_sparsity"]
    for n in names:
        for ext in ("png", "pdf"):
            f = figs / f"{n}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (figs / "fig2_schedule_and_quality.png").read_bytes()[:4] == b"\x89PNG"
    assert (figs / "layer_sparsity.pdf").read_bytes()[:4] == b"%PDF"


def test_page(report):
    md = (report["out_dir"] / "index.md").read_text()
    assert (report["out_dir"] / "index.html").is_file()
    assert "12 finished run(s)" in md and "2 incomplete" in md
    assert "**Synthetic data:** 1 run(s)" in md and "fake_imagenet (synthetic)" in md
    assert "SYNTHETIC DATA" in md or "(synthetic data)" in md
    # Figure 2 skips the corrupt (largest) metrics.csv and falls back to the next sparse run
    assert "Training of run `ptb/medium_s90_seed1`" in md
    assert "Sparsity of each pruned tensor of run `ptb/medium_s90_seed1`" in md
    for n in ("table_ptb_lstm", "table_mobilenet", "table_gnmt", "table5_storage",
              "table6_size_vs_quality", "pairing"):
        assert f"(tables/{n}.csv)" in md
    assert "![" in md and "figures/quality_vs_nnz_ptb_lstm_ptb.png" in md
    assert "ptb/broken/summary.json" in md and "ptb/running" in md


# ---------------------------------------------------------------- CLI
def test_cli_no_runs(tmp_path, capsys):
    assert cli.main(["--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 finished, 0 incomplete, 0 skipped" in out
    assert "No finished runs yet" in (tmp_path / "report" / "index.md").read_text()


@pytest.mark.parametrize("argv", [["--bogus"], ["--results-dir", "/nonexistent/x"]])
def test_cli_bad_args(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-report: error:")


def test_cli_run_option(tmp_path, capsys):
    root = make_tree(tmp_path)
    assert cli.main(["--results-dir", str(root), "--run", "ptb/nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (root / "report").exists()
    out = tmp_path / "rep"
    assert cli.main(["--results-dir", str(root), "--out", str(out), "--run", "ptb/running"]) == 0
    assert "Training of run `ptb/running`" in (out / "index.md").read_text()
    assert not (out / "figures" / "layer_sparsity.png").exists()  # that run has no sparsity.csv


# ---------------------------------------------------------------- paper reference CSVs
def test_paper_csvs_shape():
    cols = {1: "model,sparsity,nnz,top1,top5,source", 2: "width,sparsity,nnz,top1,top5,source",
            3: "size,sparsity,nnz,perplexity,source", 4: "units,sparsity,nnz,bleu_en_de,bleu_de_en,source",
            5: "sparsity,nnz,bitmask_mb,csr_mb,source", 6: "kind,width,sparsity,size_mb,top1,source"}
    rows = {1: 4, 2: 8, 3: 13, 4: 7, 5: 5, 6: 7}
    for n in range(1, 7):
        f = PAPER / f"table{n}.csv"
        assert f.read_text().splitlines()[0] == cols[n]
        df = pd.read_csv(f)
        assert len(df) == rows[n] and (df["source"] == f"Zhu & Gupta 2017, Table {n}").all()


def test_paper_csvs_match_seed_document():
    if not SEED_DOC.exists():
        pytest.skip("seed document not in this checkout")
    doc = SEED_DOC.read_text()
    t = {n: pd.read_csv(PAPER / f"table{n}.csv") for n in range(1, 7)}
    r = row(t[3], size="large", sparsity=0.9)
    assert (r["nnz"], r["perplexity"]) == (6_600_000, 80.24) and "90%\t6.6M\t80.24" in doc
    r = row(t[3], size="medium", sparsity=0.975)
    assert (r["nnz"], r["perplexity"]) == (500_000, 113.6) and "97.5%\t0.5M\t113.6" in doc
    r = row(t[1], sparsity=0.875)
    assert (r["nnz"], r["top1"], r["top5"]) == (3_300_000, 74.6, 92.5)
    assert "87.5%\t3.3M\t74.6%\t92.5%" in doc
    r = row(t[2], width=0.5, sparsity=0.0)
    assert (r["nnz"], r["top1"], r["top5"]) == (1_320_000, 63.7, 85.4)
    assert "0.5\t0%\t1.32M\t63.7%\t85.4%" in doc
    r = row(t[2], width=1.0, sparsity=0.9)
    assert (r["nnz"], r["top1"], r["top5"]) == (460_000, 61.8, 84.7) and "90%\t0.46M\t61.8%\t84.7%" in doc
    # Table 4 is garbled in the seed; check against section 4.3's prose
    r = row(t[4], units=1024, sparsity=0.9)
    assert (r["nnz"], r["bleu_en_de"], r["bleu_de_en"]) == (23_000_000, 26.19, 28.81)
    r = row(t[4], units=512, sparsity=0.0)
    assert (r["nnz"], r["bleu_en_de"], r["bleu_de_en"]) == (81_000_000, 26.05, 28.88)
    assert "26.19 vs 26.05 for EN-DE and 28.81 vs 28.88 for DE-EN" in doc and "(23M vs 81M)" in doc
    base = row(t[4], units=1024, sparsity=0.0)["bleu_en_de"]
    assert base - row(t[4], units=1024, sparsity=0.85)["bleu_en_de"] == pytest.approx(0.25)
    r = row(t[5], sparsity=0.9)
    assert (r["nnz"], r["bitmask_mb"], r["csr_mb"]) == (460_000, 0.52, 0.23) and "90%\t0.46M\t0.52\t0.23" in doc
    r = row(t[6], kind="small-dense", width=0.75)
    assert (r["size_mb"], r["top1"]) == (10.28, 68.4) and "10.28\t68.4\t9.04\t69.5" in doc
    r = row(t[6], kind="large-sparse", sparsity=0.95)
    assert (r["size_mb"], r["top1"]) == (1.13, 53.6) and "\t\t\t1.13\t53.6" in doc
    # Table 6's sizes follow from Tables 2 and 5: 4 B x NNZ (+ the smaller overhead)
    for s in (0.5, 0.75, 0.9, 0.95):
        p5, p6 = row(t[5], sparsity=s), row(t[6], kind="large-sparse", sparsity=s)
        mb = 4 * p5["nnz"] / 1e6 + min(p5["bitmask_mb"], p5["csr_mb"])
        assert mb == pytest.approx(p6["size_mb"], abs=0.006)


# ---------------------------------------------------------------- Figure 1 and reruns
def test_figure1_uses_the_core_schedule_and_eq1():
    from prune_cli.report import figures
    f, src = figures.schedule_fn(0.9, 0.0, 100, 1100, 100)
    eq1 = figures._eq1(0.9, 0.0, 100, 1100, 100)
    assert "GradualSchedule" in src
    for t in range(0, 1300, 7):
        assert f(t) == pytest.approx(eq1(t), abs=1e-12)
    assert (f(0), f(100), f(1100), f(5000)) == (0.0, 0.0, pytest.approx(0.9), pytest.approx(0.9))
    assert f(200) == pytest.approx(0.9 * (1 - 0.9 ** 3))


def test_rerun_removes_stale_outputs(tmp_path):
    root = make_tree(tmp_path)
    out = tmp_path / "rep"
    cli.make_report(root, out, paper_dir=PAPER)
    gnmt = out / "figures" / "quality_vs_nnz_gnmt_wmt16_en-de.png"
    assert gnmt.is_file()
    keep = out / "notes.txt"
    keep.write_text("mine")
    (root / "runs" / "nmt" / "u1024_s80" / "summary.json").unlink()
    r = cli.make_report(root, out, paper_dir=PAPER)
    assert r["n_finished"] == 11 and "nmt/u1024_s80" in {i["run"] for i in r["collection"].incomplete}
    assert not gnmt.exists() and not (out / "tables" / "table_gnmt.csv").exists()
    assert keep.read_text() == "mine"   # only files the report wrote are removed


def test_lstm_base_label_and_validation_only_primary_metric():
    from prune_cli.report.collect import base_of, primary_metric

    assert base_of({"family": "ptb_lstm", "size": "small", "hidden": 200}) == ("small", 200.0)
    # Zaremba's small recipe on another width is that width, not the paper's small model.
    assert base_of({"family": "ptb_lstm", "size": "small", "hidden": 48}) == ("hidden=48", 48.0)
    assert primary_metric("ptb_lstm", {"perplexity": 80.0, "val_perplexity": 83.0}) == "perplexity"
    assert primary_metric("ptb_lstm", {"perplexity": None, "val_perplexity": 83.0}) == "val_perplexity"
    assert primary_metric("mobilenet", {"top1": 70.0}) == "top1"


def test_the_sweeps_table_callback_loads_without_pandas_or_matplotlib():
    """prune-run instantiates report.study.PrintStudyTable at every start (conf/config.yaml's
    hydra.callbacks): the report's heavy imports wait until a table is printed."""
    import subprocess
    import sys
    code = ("import sys, prune_cli.report.study, prune_cli.report as r; "
            "print('pandas' in sys.modules, 'matplotlib' in sys.modules, callable(r.make_report))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr
