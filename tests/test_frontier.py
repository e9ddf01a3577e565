"""The frontier (issue 25): quality vs training MACs from the evaluation rows of ordinary runs,
each large-sparse configuration against the small-dense model of its NNZ at equal training MACs
(interpolated in log MACs, never extrapolated), Welch's p, the crossover in words, the figure,
runs without curves, and the pairing table's training MACs over the whole pipeline.

The study written here has known curves: small-dense h48 (3 seeds) has perplexity
500 - 50 log2(MACs / 1e11) + offset, exactly linear in log MACs, so its interpolation is that
formula; large-sparse h384 @ 90% (3 seeds) is worse up to 6e11 MACs and better from 1.2e12."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats

from prune_cli.report import cli
from prune_cli.report.frontier import (OUTSIDE, UNKNOWN, crossover_words, final_sparsity_step, interpolate,
                                       read_evaluations, run_curve)
from prune_cli.report.study import study_table

DENSE_STEPS = (100, 200, 400, 800, 1600)         # 1e9 MACs a step: 1e11 .. 1.6e12
DENSE_OFFSETS = (-2.0, 0.0, 2.0)                  # per seed: std 2
SPARSE = {25: (600.0, 1.2e11), 50: (440.0, 1.5e11), 100: (380.0, 1.8e11), 200: (300.0, 2.4e11),
          400: (280.0, 3.6e11)}                   # step: (perplexity, sparse-kernel MACs); 6e9 MACs a step
SPARSE_OFFSETS = (-1.0, 0.0, 1.0)                 # per seed: std 1
LAYERS = [(10, 0.5, 0.5), (25, 0.9, 0.8), (50, 0.9, 0.9)]   # step, target of l1, of l2: final from step 50


def dense_ppl(macs: float) -> float:
    return 500.0 - 50.0 * math.log2(macs / 1e11)


def write_run(root, rel, hidden, sparsity, nnz, seed, evals, pruning="gradual", layers=None, tail="",
              extra_lines=(), **fields):
    """A finished run: summary.json, metrics.csv (a train loss and constant lr row at each step, then
    the evaluation: valid loss, perplexity, tokens and the three training-MAC counts) and, for a sparse
    run, sparsity.csv. evals: (step, perplexity, train_macs, sparse-kernel MACs, pipeline or None)."""
    d = root / "runs" / rel
    d.mkdir(parents=True)
    exp, rid = rel.split("/")
    s = dict(schema_version=1, exp_name=exp, run_id=rid, family="ptb_lstm", model="ptb_lstm", size="small",
             hidden=hidden, dataset="ptb", synthetic=False, pruning=pruning if sparsity else "none",
             scheme="uniform", target_sparsity=sparsity, achieved_sparsity=sparsity, params_total=nnz,
             params_nnz=nnz, model_size_mb=4 * nnz / 1e6, bytes_dense=4 * nnz, bytes_bitmask=nnz // 8,
             bytes_csr=0, bytes_csr_exact=0, seed=seed, steps=evals[-1][0] if evals else 100,
             wall_time_s=1.0, status="finished", val_perplexity=evals[-1][1] if evals else 300.0)
    s.update(fields)
    (d / "summary.json").write_text(json.dumps(s))
    lines = ["step,epoch,split,metric,value"]
    for step, ppl, macs, sk, pipe in evals:
        lines += [f"{step},0.1,train,loss,5.0", f"{step},0.1,train,lr,1.0"]
        lines += [f"{step},0.1,valid,{k},{v!r}" for k, v in (("loss", math.log(ppl)), ("perplexity", ppl),
                                                              ("tokens", 1000.0), ("train_macs", macs),
                                                              ("train_macs_sparse_kernels", sk)) if v is not None]
        if pipe is not None:
            lines.append(f"{step},0.1,valid,train_macs_pipeline,{pipe!r}")
    lines[1:1] = list(extra_lines)
    (d / "metrics.csv").write_text("\n".join(lines) + "\n" + tail)
    if layers is not None:
        rows = ["step,layer,numel,nnz,target_sparsity,sparsity"]
        rows += [f"{step},{name},1000,{round(1000 * (1 - t))},{t!r},{t!r}"
                 for step, *targets in layers for name, t in zip(("l1", "l2"), targets)]
        (d / "sparsity.csv").write_text("\n".join(rows) + "\n")
    return d


def dense_evals(offset):
    return [(st, dense_ppl(st * 1e9) + offset, st * 1e9, st * 1e9, st * 1e9) for st in DENSE_STEPS]


def sparse_evals(offset):
    return [(st, ppl + offset, st * 6e9, sk, st * 6e9) for st, (ppl, sk) in SPARSE.items()]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    for seed, off in enumerate(DENSE_OFFSETS):
        write_run(root, f"f/dense_h48,seed={seed}", 48, 0.0, 1_000_000, seed, dense_evals(off))
    for seed, off in enumerate(SPARSE_OFFSETS):
        write_run(root, f"f/sparse_h384,seed={seed}", 384, 0.9, 1_020_000, seed, sparse_evals(off), layers=LAYERS,
                  # seed 1: a cut-short row in the middle (a resumed run); seed 2: one still being written
                  extra_lines=["garbage"] if seed == 1 else (), tail="800,0.5,valid,perplex" if seed == 2 else "")
    # RigL: sparse from step 0, one seed
    write_run(root, "f/rigl_h384,seed=0", 384, 0.9, 1_020_000, 0,
              [(50, 430.0, 3e11, 1.5e11, 3e11), (100, 360.0, 6e11, 1.8e11, 6e11)], pruning="rigl",
              layers=[(0, 0.9, 0.9), (100, 0.9, 0.9)])
    # nearer in NNZ than h48, but no evaluation rows: no curve, so not the frontier's partner
    write_run(root, "f/dense_h96,seed=0", 96, 0.0, 1_030_000, 0, [])
    # a run from before the frontier was recorded: evaluations without training MACs
    old = write_run(root, "f/dense_h24,seed=0", 24, 0.0, 500_000, 0, [])
    (old / "metrics.csv").write_text("step,epoch,split,metric,value\n100,1.0,valid,perplexity,600.0\n")
    return root, cli.make_report(root, root / "report")


def rows_of(rep, large, arm):
    t = rep["tables"]["frontier"].csv
    return t[(t["large-sparse"] == large) & (t["arm"] == arm)].set_index("step")


# ---------------------------------------------------------------- reading
def test_interpolation_is_linear_in_log_macs_and_never_extrapolates():
    xs, ys = [1e11, 4e11, 1.6e12], [500.0, 400.0, 300.0]
    assert interpolate(xs, ys, 2e11) == pytest.approx(450.0, rel=1e-12)       # halfway in log
    assert interpolate(xs, ys, 1e11) == 500.0 and interpolate(xs, ys, 1.6e12) == 300.0   # the ends are measured
    assert interpolate(xs, ys, 8e11) == pytest.approx(350.0, rel=1e-12)
    assert interpolate(xs, ys, 9.9e10) is None and interpolate(xs, ys, 1.7e12) is None
    assert interpolate(xs, ys, 0.0) is None


def test_evaluation_rows_survive_cut_short_lines(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text("step,epoch,split,metric,value\n10,0.1,train,lr,0.5\n10,0.1,valid,perplexity,90.0\n"
                 "20,0.2,val\n20,0.2,valid,perplexity,80.0\n20,0.2,valid,perplexity,79.0\n30,0.3,valid,perpl")
    ev = read_evaluations(f)
    # the last of two rows at one step wins (the final evaluation, a resumed run's repeat)
    assert ev.rows == {(10, "valid"): {"perplexity": 90.0}, (20, "valid"): {"perplexity": 79.0}}
    assert ev.malformed == [4] and ev.lr == (0.5, 0.5)
    f.write_text("not,a,metrics,file\n")
    with pytest.raises(ValueError, match="bad header"):
        read_evaluations(f)


def test_final_sparsity_step_is_when_the_last_tensor_reaches_its_target(tmp_path):
    f = tmp_path / "sparsity.csv"
    f.write_text("step,layer,numel,nnz,target_sparsity,sparsity\n"
                 "10,a,10,5,0.5,0.5\n10,b,10,5,0.5,0.5\n30,a,10,1,0.9,0.9\n30,b,10,2,0.8,0.8\n"
                 "60,a,10,1,0.9,0.9\n60,b,10,1,0.9,0.9\n70,b,10,1,0.9")        # cut short: ignored
    assert final_sparsity_step(f) == 60
    f.write_text("step,layer,numel,nnz,target_sparsity,sparsity\n0,a,10,1,0.9,0.9\n")   # RigL: from step 0
    assert final_sparsity_step(f) == 0


def test_run_curve_keeps_only_evaluations_at_the_final_sparsity(study):
    root, rep = study
    runs = rep["collection"].runs.set_index("run")
    r = runs.loc["f/sparse_h384,seed=0"].to_dict() | {"run": "f/sparse_h384,seed=0"}
    curve, why, _ = run_curve(r)
    assert why == "" and list(curve["step"]) == [50, 100, 200, 400]        # step 25 is before step 50
    assert list(curve["macs_dense"]) == [3e11, 6e11, 1.2e12, 2.4e12]
    assert list(curve["macs_sparse"]) == [1.5e11, 1.8e11, 2.4e11, 3.6e11]
    assert list(curve["quality"]) == [439.0, 379.0, 299.0, 279.0]
    assert set(curve["metric"]) == {"perplexity"} and set(curve["split"]) == {"valid"}
    # a sparse run without sparsity.csv: when it reached its sparsity is unknown
    (root / "runs" / "f" / "x").mkdir()
    (root / "runs" / "f" / "x" / "metrics.csv").write_text((root / "runs" / r["run"] / "metrics.csv").read_text())
    curve, why, _ = run_curve(r | {"path": str(root / "runs" / "f" / "x")})
    assert curve is None and why == "no sparsity.csv rows: the step of its final sparsity is unknown"


def test_a_pipeline_adds_the_run_it_started_from_and_an_unknown_one_is_no_curve(tmp_path):
    d = write_run(tmp_path, "p/s,seed=0", 192, 0.5, 500_000, 0, [(100, 300.0, 1e11, 6e10, 2.1e12)],
                  layers=[(10, 0.5, 0.5)], init="trained")
    r = dict(path=str(d), family="ptb_lstm", target_sparsity=0.5, init="trained")
    curve, _, _ = run_curve(r)
    # the dense run before it cost 2e12: both axes carry it (on dense kernels: it was dense)
    assert (curve["macs_dense"].iloc[0], curve["macs_sparse"].iloc[0]) == (2.1e12, 2.06e12)
    d2 = write_run(tmp_path, "p/t,seed=0", 192, 0.5, 500_000, 0, [(100, 300.0, 1e11, 6e10, None)],
                   layers=[(10, 0.5, 0.5)])
    curve, why, _ = run_curve(r | {"path": str(d2)})
    assert curve is None and "no train_macs_pipeline" in why
    curve, _, _ = run_curve(r | {"path": str(d2), "init": "fresh"})   # from scratch: nothing before it
    assert curve["macs_dense"].iloc[0] == 1e11


# ---------------------------------------------------------------- the table
def test_frontier_table_exact_values_and_welch_p(study):
    _, rep = study
    rows = rows_of(rep, "hidden=384 @ 90%", "gradual")
    assert list(rows.index) == [50, 100, 200, 400]
    assert set(rows["small-dense"]) == {"hidden=48"} and set(rows["NNZ class"]) == {"≈1M nonzeros"}
    assert set(rows["n"]) == {3} and list(rows_of(rep, "hidden=384 @ 90%", "rigl").index) == [50, 100]
    for step, (ppl, sk) in SPARSE.items():
        if step == 25:
            continue
        r = rows.loc[step]
        assert (r["sparse quality"], r["sparse quality std"]) == (ppl, 1.0)
        for conv, x in (("dense kernels", step * 6e9), ("sparse kernels", sk)):
            assert r[f"training MACs ({conv})"] == x
            if x > 1.6e12:
                assert r[f"verdict ({conv})"] == OUTSIDE and r[f"small-dense n ({conv})"] == 0
                assert math.isnan(r[f"small-dense quality ({conv})"]) and math.isnan(r[f"p ({conv})"])
                continue
            dense = [dense_ppl(x) + o for o in DENSE_OFFSETS]        # each seed interpolated on its own
            assert r[f"small-dense quality ({conv})"] == pytest.approx(dense_ppl(x), rel=1e-12)
            assert r[f"small-dense quality std ({conv})"] == pytest.approx(2.0, rel=1e-9)
            assert r[f"advantage ({conv})"] == pytest.approx(dense_ppl(x) - ppl, rel=1e-12)   # lower is better
            p = stats.ttest_ind([ppl + o for o in SPARSE_OFFSETS], dense, equal_var=False).pvalue
            assert r[f"p ({conv})"] == pytest.approx(p, rel=1e-6)
            assert r[f"verdict ({conv})"] == ("wins" if ppl < dense_ppl(x) else "loses")
            assert r[f"small-dense measured ({conv})"] == "100G-1.6T"
    # hand value at 3e11 MACs: 500 - 50 log2(3) = 420.75 against 440: small-dense better by 19.25
    assert rows.loc[50, "advantage (dense kernels)"] == pytest.approx(-19.248125036057804, rel=1e-12)
    md = (rep["out_dir"] / "tables" / "frontier.md").read_text()
    assert "| outside the measured range (100G-1.6T) |" in md and "| 2.4T |" in md


def test_crossover_is_found_where_it_was_built(study):
    _, rep = study
    w = rep["frontier"].crossovers.set_index(["large-sparse", "arm", "convention"])["crossover"]
    assert w[("hidden=384 @ 90%", "gradual", "dense kernels")] == (
        "small-dense leads up to 600G training MACs (p < 0.05); large-sparse leads from 1.2T (p < 0.05); "
        "1 budget(s) outside the small-dense model's measured range (100G-1.6T)")
    assert w[("hidden=384 @ 90%", "gradual", "sparse kernels")] == (
        "large-sparse leads across the measured range (up to 360G) (p < 0.05)")
    assert w[("hidden=384 @ 90%", "rigl", "dense kernels")] == (
        "small-dense leads up to 300G training MACs (1 seed: no test); large-sparse leads from 600G (1 seed: no test)")


def test_crossover_words_for_other_shapes():
    def rows(advs, verdicts, xs=None):
        xs = xs or [1e12 * (i + 1) for i in range(len(advs))]
        c = "dense kernels"
        return pd.DataFrame({"step": range(len(advs)), f"training MACs ({c})": xs, f"advantage ({c})": advs,
                             f"verdict ({c})": verdicts, f"small-dense measured ({c})": "1T-14T"})
    assert crossover_words(rows([-1, -2, -3], ["loses", "within noise", "loses"], [1e12, 5e12, 1.4e13]), "dense") == \
        "small-dense leads across the measured range (up to 14T) (p < 0.05 at 2 of 3 budgets)"
    assert crossover_words(rows([2, -1, -1, 3], ["wins", "within noise", "within noise", "wins"]), "dense") == (
        "large-sparse leads up to 1T training MACs (p < 0.05); small-dense leads from 2T to 3T (within noise); "
        "large-sparse leads from 4T (p < 0.05)")
    assert crossover_words(rows([1], [OUTSIDE]), "dense") == \
        "no budget inside the small-dense model's measured range (1T-14T)"
    assert crossover_words(rows([1], [UNKNOWN]), "dense") == "training MACs on dense kernels not recorded"


def test_a_run_without_sparse_kernel_macs_or_with_a_changing_lr(tmp_path):
    for seed, off in enumerate(DENSE_OFFSETS):
        write_run(tmp_path, f"k/dense_h48,seed={seed}", 48, 0.0, 1_000_000, seed, dense_evals(off))
    write_run(tmp_path, "k/sparse_h384,seed=0", 384, 0.9, 1_020_000, 0, [(100, 380.0, 6e11, None, 6e11)],
              layers=LAYERS, extra_lines=["1,0.0,train,lr,0.5"])     # and a learning rate that changed
    rep = cli.make_report(tmp_path, tmp_path / "report")
    r = rep["tables"]["frontier"].csv.iloc[0]
    assert r["small-dense quality (dense kernels)"] == pytest.approx(dense_ppl(6e11), rel=1e-12)
    assert r["verdict (dense kernels)"] == "n/a (1 seed)" and r["verdict (sparse kernels)"] == UNKNOWN
    w = rep["frontier"].crossovers.set_index("convention")["crossover"]
    assert w["sparse kernels"] == "training MACs on sparse kernels not recorded"
    assert (tmp_path / "report" / "figures" / "frontier_ptb_lstm_ptb.png").is_file()
    assert rep["frontier"].varying_lr == ["k/sparse_h384,seed=0"]
    assert "**Learning rate not constant** in 1 run(s) (`k/sparse_h384,seed=0`)" in (
        tmp_path / "report" / "index.md").read_text()


def test_runs_without_curves_are_named_with_the_reason(study):
    _, rep = study
    nc = rep["frontier"].no_curve.set_index("run")["reason"]
    assert nc.to_dict() == {
        "f/dense_h24,seed=0": "its evaluation rows have no train_macs (written before the frontier was recorded)",
        "f/dense_h96,seed=0": "no evaluation rows in metrics.csv"}
    skipped = pd.read_csv(rep["out_dir"] / "skipped.csv")
    assert "1 unreadable line(s) left out of the frontier (line 2)" in set(skipped["reason"])
    page = (rep["out_dir"] / "index.md").read_text()
    assert "2 run(s) have no curve:" in page and "f/dense_h96,seed=0" in page
    assert pd.read_csv(rep["out_dir"] / "frontier_no_curve.csv").shape == (2, 2)


def test_report_of_runs_without_evaluation_rows_is_not_an_error(tmp_path):
    write_run(tmp_path, "o/dense_h96,seed=0", 96, 0.0, 1_030_000, 0, [])
    write_run(tmp_path, "o/sparse_h384,seed=0", 384, 0.9, 1_020_000, 0, [], layers=LAYERS)
    rep = cli.make_report(tmp_path, tmp_path / "report")
    assert len(rep["frontier"].no_curve) == 2 and rep["tables"]["frontier"].csv.empty
    assert (tmp_path / "report" / "tables" / "frontier.csv").read_text().startswith("family,dataset,")
    assert not list((tmp_path / "report" / "figures").glob("frontier_*"))
    page = (tmp_path / "report" / "index.md").read_text()
    assert "Quality vs training compute: the frontier" in page and "2 run(s) have no curve:" in page
    assert "Quality vs training MACs" not in study_table(tmp_path / "runs" / "o")


def test_figure_page_and_sweep_table(study):
    root, rep = study
    figs = rep["out_dir"] / "figures"
    assert (figs / "frontier_ptb_lstm_ptb.png").stat().st_size > 10_000
    assert (figs / "frontier_ptb_lstm_ptb.pdf").is_file()
    curves = pd.read_csv(rep["out_dir"] / "frontier_curves.csv")
    assert set(curves["arm"]) == {"small-dense", "gradual", "rigl"}
    assert curves["nnz_class"].nunique() == 1            # one NNZ class: h48 and the two h384 @ 90% arms
    # the Pareto front on dense kernels (means): nothing cheaper is better (the gradual run's 440 at 3e11
    # loses to RigL's 430 there, h48's 300 at 1.6T to the gradual run's 300 at 1.2T)
    front = curves[curves["pareto_dense"]].sort_values(["macs_dense", "quality"])
    assert list(zip(front["arm"], front["step"])) == [
        ("small-dense", 100), ("small-dense", 200), ("rigl", 50), ("small-dense", 400), ("rigl", 100),
        ("small-dense", 800), ("gradual", 200), ("gradual", 400)]
    page = (rep["out_dir"] / "index.md").read_text()
    assert ("- ptb_lstm ptb: ≈1M nonzeros, hidden=384 @ 90% (gradual) vs hidden=48, dense kernels: small-dense "
            "leads up to 600G training MACs (p < 0.05); large-sparse leads from 1.2T (p < 0.05)") in page
    assert "frontier_ptb_lstm_ptb.png" in page
    table = study_table(root / "runs" / "f")
    assert "Quality vs training MACs (the frontier" in table
    assert "hidden=384 @ 90% (rigl) vs hidden=48, sparse kernels:" in table


def test_pairing_training_macs_ratio_is_over_the_whole_pipeline(tmp_path):
    """A 192-unit model pruned after a dense run carries that run: ratio 2.3, not 1.0."""
    common = dict(family="gnmt", model="gnmt", size=None, dataset="multi30k", direction="de-en", bleu=30.0,
                  val_perplexity=None)
    write_run(tmp_path, "m/u96", 96, 0.0, 260_000, 0, [], units=96, train_macs=1e12, train_macs_pipeline=1e12,
              **common)
    write_run(tmp_path, "m/u192_s75", 192, 0.75, 250_000, 0, [], layers=LAYERS, units=192, init="trained",
              train_macs=1e12, train_macs_pipeline=2.3e12, **common)
    write_run(tmp_path, "m/u192_s50", 192, 0.5, 500_000, 0, [], layers=LAYERS, units=192,
              train_macs=1e12, **common)       # from scratch, before the pipeline was recorded: its own MACs
    t = cli.make_report(tmp_path, tmp_path / "report")["tables"]["pairing"].csv.set_index("sparsity")
    assert t.loc[0.75, "training MACs ratio"] == 2.3 and t.loc[0.5, "training MACs ratio"] == 1.0
