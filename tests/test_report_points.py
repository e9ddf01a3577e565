"""Seeds and error bars (issue 13): replicate runs -> points, sample std, the verdict rule, the
report with mixed single- and multi-seed points; Table 4 / Figure 5 per direction; export sizes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from prune_cli.report import cli
from prune_cli.report.collect import NOT_IDENTITY, collect, config_key
from prune_cli.report.points import NA_ONE_SEED, compare, group
from prune_cli.report.study import study_table

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"

BASE_CFG = {"sparsity": 0.0, "seed": 0, "device": "auto", "results_dir": "results",
            "exp_name": "e", "init_from": "auto",
            "trainer": {"max_steps": 500, "progress": False, "eval_splits": ["valid"]},
            "pruning": {"name": "gradual", "scheme": "uniform"},
            "data": {"name": "ptb", "root": "${oc.env:PRUNE_DATA_ROOT}", "download": True},
            "model": {"name": "ptb_lstm", "hidden": 48, "prune": ["embedding.weight"]}}


def write_run(root: Path, rel: str, cfg_over: dict | None = None, exports=None, **fields) -> Path:
    """A finished run folder: summary.json and, unless cfg_over is False, .hydra/config.yaml."""
    d = root / "runs" / rel
    d.mkdir(parents=True)
    exp, rid = rel.split("/")
    s = dict(schema_version=1, exp_name=exp, run_id=rid, family="ptb_lstm", model="ptb_lstm",
             size="small", dataset="ptb", synthetic=False, pruning="gradual", scheme="uniform",
             seed=0, steps=500, wall_time_s=10.0, status="finished", bytes_dense=4_000_000,
             bytes_bitmask=125_000, bytes_csr=0, bytes_csr_exact=0)
    s.update(fields)
    s.setdefault("achieved_sparsity", s["target_sparsity"])
    (d / "summary.json").write_text(json.dumps(s))
    if cfg_over is not False:
        cfg = OmegaConf.merge(BASE_CFG, {"seed": s["seed"], "sparsity": s["target_sparsity"],
                                         "model": {"hidden": s.get("hidden")}}, cfg_over or {})
        (d / ".hydra").mkdir()
        (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if exports is not None:
        (d / "exports.json").write_text(exports if isinstance(exports, str) else json.dumps(exports))
    return d


def lm(root, rel, hidden, sparsity, nnz, ppl, seed, **kw):
    return write_run(root, rel, hidden=hidden, target_sparsity=sparsity, params_nnz=nnz,
                     params_total=nnz, model_size_mb=4 * nnz / 1e6, val_perplexity=ppl,
                     seed=seed, **kw)


def one(df: pd.DataFrame, **kw) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for k, v in kw.items():
        m &= (df[k] - v).abs() < 1e-12 if isinstance(v, float) else df[k] == v
    assert m.sum() == 1, (kw, df[m])
    return df[m].iloc[0]


# ---------------------------------------------------------------- grouping, mean, sample std
def test_mean_and_sample_std_hand_computed(tmp_path):
    for seed, ppl, nnz in ((0, 100.0, 1000), (1, 104.0, 1002), (2, 108.0, 1004)):
        lm(tmp_path, f"e/+point=h48,seed={seed}", 48, 0.0, nnz, ppl, seed)
    lm(tmp_path, "e/+point=h96,seed=0", 96, 0.0, 2000, 90.0, 0)
    pts, runs = group(collect(tmp_path).runs)
    assert len(pts) == 2 and len(runs) == 4
    p = one(pts, base="hidden=48")
    assert (p["n_seeds"], p["seeds"], p["val_perplexity"]) == (3, "0;1;2", 104.0)
    # sample std, ddof 1: sqrt(((-4)^2 + 0^2 + 4^2) / (3 - 1)) = 4
    assert p["val_perplexity_std"] == 4.0
    assert (p["params_nnz"], p["params_nnz_std"]) == (1002.0, 2.0)
    assert p["runs"] == "e/+point=h48,seed=0;e/+point=h48,seed=1;e/+point=h48,seed=2"
    q = one(pts, base="hidden=96")
    assert q["n_seeds"] == 1 and math.isnan(q["val_perplexity_std"]) and math.isnan(q["params_nnz_std"])
    assert set(runs["point_id"]) == set(pts["point_id"]) and (runs["duplicate_of"] == "").all()


def test_same_config_and_seed_twice_counts_once(tmp_path):
    # `prune-run -m experiment=E` (seed 0 by default, no seed= in the folder name) and later
    # `... seed=0,1`: seed 0 is there twice; the run that names its seed is the one used
    lm(tmp_path, "e/+point=h48", 48, 0.0, 1000, 500.0, 0)
    lm(tmp_path, "e/+point=h48,seed=0", 48, 0.0, 1000, 100.0, 0)
    lm(tmp_path, "e/+point=h48,seed=1", 48, 0.0, 1000, 110.0, 1)
    pts, runs = group(collect(tmp_path).runs)
    p = one(pts, base="hidden=48")
    assert (p["n_seeds"], p["seeds"], p["val_perplexity"]) == (2, "0;1", 105.0)
    assert p["val_perplexity_std"] == pytest.approx(math.sqrt(50), abs=1e-12)
    assert p["duplicates"] == "e/+point=h48"
    dup = runs.set_index("run")["duplicate_of"]
    assert dup["e/+point=h48"] == "e/+point=h48,seed=0" and dup["e/+point=h48,seed=1"] == ""


def test_replicates_that_differ_in_anything_but_the_seed_are_not_grouped(tmp_path):
    lm(tmp_path, "e/a,seed=0", 48, 0.0, 1000, 100.0, 0)
    lm(tmp_path, "e/a,seed=1", 48, 0.0, 1000, 102.0, 1,          # where results go: same point
       cfg_over={"results_dir": "/elsewhere", "device": "cpu", "exp_name": "other",
                 "data": {"root": "/data", "download": False}, "trainer": {"progress": True}})
    lm(tmp_path, "e/b,seed=1", 48, 0.0, 1000, 90.0, 1, cfg_over={"trainer": {"max_steps": 800}})
    lm(tmp_path, "e/c,seed=2", 48, 0.0, 1000, 95.0, 2, cfg_over={"optim": {"lr": 0.5}})
    lm(tmp_path, "e/s,seed=0", 48, 0.5, 500, 120.0, 0)
    lm(tmp_path, "e/s24,seed=1", 48, 0.5, 500, 130.0, 1, pattern="2:4")   # issue 11's N:M pattern
    pts, _ = group(collect(tmp_path).runs)
    assert len(pts) == 5
    a = one(pts, runs="e/a,seed=0;e/a,seed=1")
    assert (a["n_seeds"], a["val_perplexity"], a["val_perplexity_std"]) == (2, 101.0, math.sqrt(2))
    variants = {r: v for r, v in zip(pts["runs"], pts["variant"])}
    assert variants["e/a,seed=0;e/a,seed=1"] == "optim.lr=None, trainer.max_steps=500"
    assert variants["e/b,seed=1"] == "optim.lr=None, trainer.max_steps=800"
    assert variants["e/c,seed=2"] == "optim.lr=0.5, trainer.max_steps=500"
    assert set(pts.loc[pts["target_sparsity"] > 0, "pattern"]) == {"unstructured", "2:4"}
    assert (pts.loc[pts["target_sparsity"] > 0, "variant"] == "").all()


def test_without_hydra_record_the_model_config_tells_runs_apart(tmp_path):
    for seed, hid in ((0, 48), (1, 48), (2, 64)):
        write_run(tmp_path, f"e/r{seed}", cfg_over=False, hidden=48, target_sparsity=0.0,
                  params_nnz=1000, params_total=1000, model_size_mb=0.004, val_perplexity=100.0 + seed,
                  seed=seed, model_config=json.dumps({"hidden": 48, "layers": 2 if hid == 48 else 3}))
    pts, _ = group(collect(tmp_path).runs)
    assert sorted(pts["n_seeds"]) == [1, 2]
    assert set(pts["variant"]) == {"model.layers=2", "model.layers=3"}


def test_not_identity_matches_the_run_id_exclusions():
    cfg = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    excluded = cfg["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert set(NOT_IDENTITY) == {*excluded, "seed", "run_id"}


def _drop(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if f"{prefix}{k}" in NOT_IDENTITY:
            continue
        out[k] = _drop(v, f"{prefix}{k}.") if isinstance(v, dict) else v
    return out


_scalar = st.one_of(st.integers(-5, 5), st.booleans(), st.none(), st.text("ab :-#", max_size=6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
_value = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=3),
                      st.dictionaries(st.sampled_from(["root", "seed", "x", "progress"]), c, max_size=3)),
                      max_leaves=6)
# Hydra's configs always have a `name` in each group and top-level keys such as `sparsity`
_section = st.fixed_dictionaries({"name": _scalar}, optional={
    k: _value for k in ("root", "download", "progress", "max_steps", "seed", "lr")})
_config = st.fixed_dictionaries({"sparsity": _scalar}, optional={
    **{k: _value for k in ("seed", "device", "results_dir", "exp_name", "init_from", "run_id")},
    **{k: _section for k in ("trainer", "data", "optim", "model")}})


@settings(max_examples=60, deadline=None)
@given(_config, _config)
def test_config_key_agrees_with_a_full_parse(a, b):
    """Two configs get one key exactly when they agree after dropping NOT_IDENTITY (as YAML
    parses them), on text written the way Hydra writes .hydra/config.yaml."""
    ta, tb = OmegaConf.to_yaml(OmegaConf.create(a)), OmegaConf.to_yaml(OmegaConf.create(b))
    same = (json.dumps(_drop(yaml.safe_load(ta)), sort_keys=True)      # typed: 0 is not False
            == json.dumps(_drop(yaml.safe_load(tb)), sort_keys=True))
    assert (config_key(ta) == config_key(tb)) == same


# ---------------------------------------------------------------- the verdict rule
def test_verdict_rule_is_welchs_t_test_against_closed_forms():
    """Welch's t with 1 and 2 degrees of freedom has closed-form p-values: two seeds a side with
    equal stds give df = 2, p = 1 - t / sqrt(t^2 + 2); two seeds against two identical ones
    give df = 1 (Cauchy), p = 1 - (2 / pi) atan(|t|)."""
    se, p, v = compare(3.0, 1.0, 2, 1.0, 2)                  # SE = sqrt(1/2 + 1/2) = 1, t = 3
    assert se == 1.0 and p == pytest.approx(1 - 3 / math.sqrt(11), rel=1e-9) and v == "within noise"   # p = 0.095
    se, p, v = compare(5.0, 1.0, 2, 1.0, 2)                  # t = 5: p = 0.038
    assert p == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9) and v == "wins"
    assert compare(-5.0, 1.0, 2, 1.0, 2)[1:] == (pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9), "loses")
    t = 10.0 / math.sqrt(0.5)
    se, p, v = compare(10.0, 0.0, 2, 1.0, 2)                 # df = 1
    assert p == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-9) and v == "wins"   # p = 0.045
    se, p, v = compare(8.0, 0.0, 2, 1.0, 2)                  # p = 0.056
    assert p == pytest.approx(1 - 2 / math.pi * math.atan(8.0 / math.sqrt(0.5)), rel=1e-9) and v == "within noise"
    # "> 2 SE" called 2.1 SE a win; with 3 seeds against 2 identical ones (df = 2) p = 0.17
    se, p, v = compare(2.1 * math.sqrt(3.0), 3.0, 3, 0.0, 2)
    assert p == pytest.approx(1 - 2.1 / math.sqrt(2.1 ** 2 + 2), rel=1e-9) and v == "within noise"
    for n_a, n_b in ((1, 3), (3, 1), (1, 1)):
        se1, p1, v = compare(100.0, float("nan") if n_a == 1 else 3.0, n_a, 4.0, n_b)
        assert math.isnan(se1) and math.isnan(p1) and v == NA_ONE_SEED == "n/a (1 seed)"
    assert compare(float("nan"), 3.0, 3, 4.0, 4)[2] == ""
    assert compare(0.5, 0.0, 2, 0.0, 2) == (0.0, 0.0, "wins")   # identical seeds: no noise at all
    assert compare(0.0, 0.0, 2, 0.0, 2) == (0.0, 1.0, "within noise")


# ---------------------------------------------------------------- the report, mixed seeds
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """PTB: dense h48 (3 seeds), h96 (1 seed), h192 (2 seeds); h384 pruned to four sparsities."""
    root = tmp_path_factory.mktemp("mixed")
    for h, nnz, ppls in ((48, 1_000_000, [400, 410, 420]), (96, 2_000_000, [380]),
                         (192, 4_400_000, [300, 340])):
        for seed, p in enumerate(ppls):
            lm(root, f"ptb_laptop/+point=dense_h{h},seed={seed}", h, 0.0, nnz, float(p), seed)
    for s, nnz, ppls in ((0.9, 1_020_000, [300, 305, 310]), (0.8, 2_020_000, [330, 350]),
                         (0.55, 4_500_000, [310, 320]), (0.97, 310_000, [600, 602])):
        for seed, p in enumerate(ppls):
            lm(root, f"ptb_laptop/+point=sparse_h384_{s},seed={seed}", 384, s, nnz, float(p), seed)
    lm(root, "ptb_laptop/+point=sparse_h384_0.9", 384, 0.9, 1_020_000, 999.0, 0)  # seed-0 twin
    return root, cli.make_report(root, root / "report", paper_dir=PAPER)


def test_report_pairing_verdicts(mixed):
    _, rep = mixed
    t = rep["tables"]["pairing"].csv
    r = one(t, sparsity=0.9)        # 410 - 305 = 105 > 2 sqrt(10^2/3 + 5^2/3)
    assert (r["dense by NNZ"], r["sparse advantage by NNZ"]) == ("hidden=48", 105.0)
    assert r["SE by NNZ"] == pytest.approx(math.sqrt(125 / 3), abs=1e-12)
    assert r["p by NNZ"] < 0.001 and r["verdict at equal steps"] == "wins" and (r["sparse n"], r["dense by NNZ: n"]) == (3, 3)
    r = one(t, sparsity=0.8)        # dense h96 has one seed: no SE
    assert (r["dense by NNZ"], r["sparse advantage by NNZ"]) == ("hidden=96", 40.0)
    assert math.isnan(r["SE by NNZ"]) and r["verdict at equal steps"] == NA_ONE_SEED
    r = one(t, sparsity=0.55)       # 320 - 315 = 5 < 2 sqrt(800/2 + 50/2)
    assert (r["dense by NNZ"], r["sparse advantage by NNZ"]) == ("hidden=192", 5.0)
    assert r["SE by NNZ"] == pytest.approx(math.sqrt(425), abs=1e-12)
    assert r["verdict at equal steps"] == "within noise"
    r = one(t, sparsity=0.97)       # 410 - 601 = -191, far beyond the noise
    assert (r["sparse advantage by NNZ"], r["verdict at equal steps"]) == (-191.0, "loses")
    md = (rep["out_dir"] / "tables" / "pairing.md").read_text()
    assert "| +105.00 | <0.001 | wins |" in md and "| +40.00 | n/a (1 seed) | n/a (1 seed) |" in md
    assert "| hidden=96 (2M, 380.00 (n=1)) |" in md
    page = (rep["out_dir"] / "index.md").read_text()
    assert "wins 1, loses 1, within noise 1, n/a (1 seed) 1" in page


def test_report_points_csv_and_runs_csv(mixed):
    root, rep = mixed
    out = rep["out_dir"]
    pts = pd.read_csv(out / "points.csv")
    assert len(pts) == 7 and list(pts.columns[:3]) == ["point_id", "family", "model"]
    for c in ("perplexity", "val_perplexity", "top1", "top5", "bleu", "val_bleu", "params_nnz",
              "model_size_mb"):
        assert f"{c}_mean" in pts and f"{c}_std" in pts
    p = one(pts, hidden=48.0)
    assert (p["n_seeds"], p["val_perplexity_mean"], p["val_perplexity_std"]) == (3, 410.0, 10.0)
    p = one(pts, hidden=96.0)
    assert p["n_seeds"] == 1 and math.isnan(p["val_perplexity_std"])
    line = next(x for x in (out / "points.csv").read_text().splitlines() if ",hidden=96," in x)
    assert ",380.0,," in line                          # std: an empty cell, never 0
    p = one(pts, hidden=384.0, target_sparsity=0.9)    # the seed-0 twin (999) is not counted
    assert (p["n_seeds"], p["val_perplexity_mean"]) == (3, 305.0)
    assert p["duplicates"] == "ptb_laptop/+point=sparse_h384_0.9"
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert len(runs) == 16 and set(runs["point_id"]) == set(pts["point_id"])
    assert runs.set_index("run").at["ptb_laptop/+point=sparse_h384_0.9", "duplicate_of"] == \
        "ptb_laptop/+point=sparse_h384_0.9,seed=0"
    md = (out / "tables" / "table_ptb_lstm.md").read_text()
    assert "| 410.00 ± 10.00 (n=3) |" in md and "| 380.00 (n=1) |" in md
    page = (out / "index.md").read_text()
    assert "Up to 3 seeds per point" in page and "1 run(s) repeat a (configuration, seed)" in page


def test_study_table_one_row_per_point(mixed):
    root, _ = mixed
    text = study_table(root / "runs" / "ptb_laptop")
    lines = text.splitlines()
    assert len(lines) == 2 + 7 and lines[0].split()[:2] == ["model", "size/width"]
    row48 = next(x for x in lines if "hidden 48 " in x)
    assert "valid ppl 410.00 ± 10.00" in row48 and row48.split()[-2:] == ["3", "10"]
    row96 = next(x for x in lines if "hidden 96 " in x)
    assert "valid ppl 380.00  " in row96 + "  " and "±" not in row96
    # smallest NNZ first
    assert "97%" in lines[2] and "hidden 48 " in lines[3]


# ---------------------------------------------------------------- Table 4 and Figure 5
def test_table4_and_figure5_per_direction(tmp_path):
    def nmt(rel, units, s, nnz, bleu, seed, direction, dataset="wmt16"):
        write_run(tmp_path, rel, cfg_over={"model": {"name": "gnmt", "units": units}}, family="gnmt",
                  model="gnmt", size=None, units=units, dataset=dataset, direction=direction,
                  target_sparsity=s, params_nnz=nnz, params_total=nnz, model_size_mb=4 * nnz / 1e6,
                  bleu=bleu, val_bleu=bleu - 1, seed=seed, bleu_signature="nrefs:1|tok:none")
    for d, base in (("de-en", 28.0), ("en-de", 25.0)):
        for seed in range(10):       # the paper's Figure 5 error bar: 10 seeds
            nmt(f"t4_{d}/units=1024,sparsity=0.9,seed={seed}", 1024, 0.9, 23_000_000,
                base + (seed - 4.5) / 10, seed, d)
        nmt(f"t4_{d}/units=512,seed=0", 512, 0.0, 81_000_000, base + 0.5, 0, d)
        nmt(f"t4_{d}/units=512,seed=1", 512, 0.0, 81_000_000, base + 0.7, 1, d)
    nmt("m30k/units=128,seed=0", 128, 0.0, 5_000_000, 16.0, 0, "de-en", dataset="multi30k")
    rep = cli.make_report(tmp_path, tmp_path / "report", paper_dir=PAPER)
    t = rep["tables"]["table_gnmt"].csv
    r = one(t, direction="de-en", sparsity=0.9, dataset="wmt16")
    assert (r["n"], r["BLEU"], r["paper BLEU"], r["units"]) == (10, 28.0, 28.81, "1024")
    assert r["BLEU std"] == pytest.approx(math.sqrt(sum(((i - 4.5) / 10) ** 2 for i in range(10)) / 9))
    assert r["valid BLEU"] == pytest.approx(27.0)
    r = one(t, direction="en-de", sparsity=0.9)
    assert (r["paper BLEU"], r["NNZ params"], r["paper NNZ params"]) == (26.19, 23_000_000, 23_000_000)
    r = one(t, direction="en-de", sparsity=0.0)
    assert (r["n"], r["BLEU"], r["paper BLEU"]) == (2, pytest.approx(25.6), 26.05)
    r = one(t, dataset="multi30k")           # not the paper's dataset: no paper columns
    assert math.isnan(r["paper BLEU"]) and math.isnan(r["paper NNZ params"])
    md = (rep["out_dir"] / "tables" / "table_gnmt.md").read_text()
    assert "| wmt16 | de-en | 1024 | gradual, uniform | 90% | 23M | 23M | 28.00 ± 0.30 (n=10) | 28.81 | -0.81 |" in md
    p = one(rep["tables"]["pairing"].csv, direction="de-en")   # never across directions
    assert (p["dense by NNZ"], p["sparse advantage by NNZ"]) == ("512", pytest.approx(28.0 - 28.6))
    assert p["verdict at equal steps"] == "loses"
    figs = rep["out_dir"] / "figures"
    for n in ("quality_vs_nnz_gnmt_wmt16_de-en", "quality_vs_nnz_gnmt_wmt16_en-de",
              "quality_vs_nnz_gnmt_multi30k_de-en"):
        assert (figs / f"{n}.png").stat().st_size > 1000 and (figs / f"{n}.pdf").is_file()
    page = (rep["out_dir"] / "index.md").read_text()
    assert "GNMT on wmt16 DE-EN" in page and "mean over 10 seeds" not in page
    assert "means over 1 to 10 seeds" in page and "hollow labelled markers" in page


# ---------------------------------------------------------------- export sizes
def test_export_sizes_table(tmp_path):
    ex = [dict(format="dense", dtype="float32", file="m.dense.safetensors", bytes=4_000_000,
               predicted_bytes=4_000_000),
          dict(format="bitmask", dtype="float32", file="m.bitmask.safetensors", bytes=525_300,
               predicted_bytes=525_000),
          dict(format="csr", dtype="float32", file="m.csr.safetensors", bytes=800_900,
               predicted_bytes=800_000),
          dict(format="bitmask", dtype="int8", file="m.int8.safetensors", bytes=230_000,
               predicted_bytes=None)]
    lm(tmp_path, "e/s90,seed=0", 384, 0.9, 100_000, 300.0, 0, exports=ex)
    lm(tmp_path, "e/s80,seed=0", 384, 0.8, 200_000, 290.0, 0, exports='{"format": "dense"}')
    lm(tmp_path, "e/d,seed=0", 48, 0.0, 1_000_000, 400.0, 0)
    rep = cli.make_report(tmp_path, tmp_path / "report", paper_dir=PAPER)
    t = rep["tables"]["export_sizes"].csv
    assert list(t["run"]) == ["e/s90,seed=0"]
    r = t.iloc[0]
    assert (r["dense file (bytes)"], r["bitmask file (bytes)"], r["csr file (bytes)"],
            r["int8 bitmask file (bytes)"]) == (4_000_000, 525_300, 800_900, 230_000)
    assert r["bitmask predicted (bytes)"] == 525_000 and math.isnan(r["int8 bitmask predicted (bytes)"])
    assert (r["estimate: dense (bytes)"], r["estimate: bit-mask overhead (bytes)"],
            r["estimate: model size (MB)"]) == (4_000_000, 125_000, 0.4)
    assert r["bitmask file / model size"] == pytest.approx(525_300 / 400_000)
    md = (rep["out_dir"] / "tables" / "export_sizes.md").read_text()
    assert "| e/s90,seed=0 | 90% | 100K | 0.125 / 0.000 | 0.400 | 4.000 | 0.525 | 0.801 | 0.230 | 4.000 | 1.313 |" in md
    skipped = pd.read_csv(rep["out_dir"] / "skipped.csv")
    assert ("e/s80,seed=0/exports.json", "exports.json is not a list") in set(
        zip(skipped["file"], skipped["reason"]))
    assert "(tables/export_sizes.csv)" in (rep["out_dir"] / "index.md").read_text()


def test_no_exports_no_table(tmp_path):
    lm(tmp_path, "e/d,seed=0", 48, 0.0, 1_000_000, 400.0, 0)
    rep = cli.make_report(tmp_path, tmp_path / "report", paper_dir=PAPER)
    assert "export_sizes" not in rep["tables"]
    assert not (tmp_path / "report" / "tables" / "export_sizes.csv").exists()
