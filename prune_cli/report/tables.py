"""Points (mean/std over seeds, points.py) -> the paper's tables, with paper values beside.

Every table is a pair: ``csv`` (raw numbers, full precision) and ``show`` (formatted strings for
Markdown / LaTeX / the page). Paper values only ever sit in columns named ``paper ...`` and
differences in ``... Δ vs paper``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .collect import FAMILIES, LOWER_IS_BETTER, QUALITY, metrics_for, pair_key, primary_metric
from .points import NA_ONE_SEED, compare

SHORT = {"perplexity": "perplexity", "val_perplexity": "valid perplexity", "top1": "top-1",
         "top5": "top-5", "bleu": "BLEU", "val_bleu": "valid BLEU"}
# the groups a comparison stays inside: never a DE->EN model against an EN->DE one
GROUP = ["family", "dataset", "synthetic", "direction"]
TOL = 1e-9


@dataclass
class Table:
    name: str          # file stem
    title: str
    csv: pd.DataFrame
    show: pd.DataFrame
    runs: list = field(default_factory=list)


# ---------------------------------------------------------------- paper reference values
def load_paper(paper_dir: Path | None, skipped: list) -> dict:
    """results/paper/table1..6.csv -> {"rows": [dict, ...] (tables 1-4), "table5", "table6"}."""
    paper = {"rows": [], "table5": None, "table6": None}
    if paper_dir is None or not Path(paper_dir).is_dir():
        return paper
    base_of = {1: lambda r: "standard", 2: lambda r: str(float(r["width"])),
               3: lambda r: str(r["size"]).lower(), 4: lambda r: str(int(r["units"]))}
    fam_of = {FAMILIES[f]["paper_table"]: f for f in FAMILIES}
    for n in range(1, 7):
        f = Path(paper_dir) / f"table{n}.csv"
        if not f.exists():
            continue
        try:
            df = pd.read_csv(f)
            df["sparsity"] = df["sparsity"].astype(float)
            if n <= 4:
                for r in df.to_dict("records"):
                    paper["rows"].append({**r, "family": fam_of[n], "base": base_of[n](r)})
            elif n == 5:
                paper["table5"] = df
            else:
                df["base"] = df["width"].astype(float).map(str)
                paper["table6"] = df
        except Exception as e:  # noqa: BLE001 - a broken reference file must not stop the report
            skipped.append(dict(file=str(f), reason=f"{type(e).__name__}: {e}"[:200]))
    return paper


def _paper_row(paper: dict, c: dict) -> dict | None:
    fam = FAMILIES.get(c["family"])
    if fam is None or c["synthetic"] or c["dataset"] != fam["paper_dataset"]:
        return None
    for r in paper["rows"]:
        if (r["family"] == c["family"] and r["base"] == c["base"]
                and abs(r["sparsity"] - c["target_sparsity"]) <= TOL):
            return r
    return None


# ---------------------------------------------------------------- points + paper
def with_paper(points: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """The points (points.group) with the paper's values beside, where they match: `n` is the
    number of seeds, every metric its mean and `<metric>_std` its sample std."""
    out = points.assign(n=points["n_seeds"]).reset_index(drop=True)
    pcols = {"paper_nnz": [], "paper_source": [], **{f"paper_{m}": [] for m in QUALITY},
             "paper_bleu_en_de": [], "paper_bleu_de_en": []}
    for c in out.to_dict("records"):
        r = _paper_row(paper, c) or {}
        pcols["paper_nnz"].append(r.get("nnz", np.nan))
        pcols["paper_source"].append(r.get("source", ""))
        for m in QUALITY:
            col = (c["bleu_ref"] or "-") if m == "bleu" else "-" if m == "val_bleu" else m
            pcols[f"paper_{m}"].append(r.get(col, np.nan))
        pcols["paper_bleu_en_de"].append(r.get("bleu_en_de", np.nan))
        pcols["paper_bleu_de_en"].append(r.get("bleu_de_en", np.nan))
    for k, v in pcols.items():
        out[k] = pd.Series(v, index=out.index, dtype=object if k == "paper_source" else float)
    return out


def better(metric: str, a: float, b: float) -> float:
    """How much a beats b on metric (positive: a is better), honouring lower-is-better."""
    return (b - a) if metric in LOWER_IS_BETTER else (a - b)


# ---------------------------------------------------------------- formatting
def fmt_nnz(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if abs(x) >= 1e6:
        return f"{x / 1e6:.3g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.3g}K"
    return f"{x:.0f}"


def fmt_macs(x) -> str:
    """3.72T, 517K: multiply-accumulates with an SI prefix."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


def fmt_num(x, digits=2, sign=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_pm(mean, std, n=None, digits=2) -> str:
    """"89.00 ± 1.41 (n=2)"; a single seed has no std: "120.00 (n=1)"."""
    s = fmt_num(mean, digits)
    if not s:
        return s
    if not (std is None or math.isnan(std)):
        s = f"{s} ± {std:.{digits}f}"
    return s if n is None else f"{s} (n={int(n)})"


def fmt_sparsity(x) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.4g}%"


def fmt_dataset(c, direction: bool = False) -> str:
    ds = f"{c['dataset']} {c['direction']}" if direction and c.get("direction") else c["dataset"]
    return f"{ds} (synthetic)" if c["synthetic"] else ds


def fmt_pruning(c) -> str:
    return "dense" if c["target_sparsity"] == 0 else f"{c['pruning']}, {c['scheme']}"


# ---------------------------------------------------------------- Tables 1-4
def family_table(configs: pd.DataFrame, family: str) -> Table:
    spec = FAMILIES.get(family, dict(title=family, base_col="base"))
    sub = configs[configs["family"] == family]
    metrics = metrics_for(family, sub)
    bc = spec["base_col"]
    by_direction = family == "gnmt" or bool((sub["direction"] != "").any())
    patterns = bool((~sub["pattern"].isin(["none", "unstructured"])).any())
    variants = bool((sub["variant"] != "").any())
    rows, show = [], []
    for c in sub.to_dict("records"):
        r = {"dataset": c["dataset"], "synthetic": c["synthetic"]}
        d = {"dataset": fmt_dataset(c)}
        if by_direction:   # Table 4: the paper's two directions are two sets of models
            r["direction"] = d["direction"] = c["direction"] or "unknown"
        r.update({bc: c["base"], "pruning": c["pruning"], "scheme": c["scheme"],
                  "pattern": c["pattern"], "variant": c["variant"],
                  "sparsity": c["target_sparsity"], "achieved sparsity": c["achieved_sparsity"],
                  "n": c["n"], "NNZ params": c["params_nnz"], "NNZ params std": c["params_nnz_std"],
                  "paper NNZ params": c["paper_nnz"],
                  "NNZ params Δ vs paper": c["params_nnz"] - c["paper_nnz"]})
        d.update({bc: c["base"], "pruning": fmt_pruning(c)})
        if patterns:
            d["pattern"] = c["pattern"]
        if variants:
            d["variant"] = c["variant"]
        d.update({"sparsity": fmt_sparsity(c["target_sparsity"]),
                  "NNZ params": fmt_nnz(c["params_nnz"]), "paper NNZ params": fmt_nnz(c["paper_nnz"])})
        for m in metrics:
            s = SHORT[m]
            r.update({s: c[m], f"{s} std": c[f"{m}_std"]})
            d[s] = fmt_pm(c[m], c[f"{m}_std"], c[f"{m}_n"])
            if m.startswith("val_"):   # the paper gives test perplexity and test BLEU only
                continue
            r[f"paper {s}"] = c[f"paper_{m}"]
            d[f"paper {s}"] = fmt_num(c[f"paper_{m}"])
            r[f"{s} Δ vs paper"] = c[m] - c[f"paper_{m}"]
            d[f"{s} Δ vs paper"] = fmt_num(r[f"{s} Δ vs paper"], sign=True)
        r.update({"model size (MB)": c["model_size_mb"], "paper source": c["paper_source"],
                  "runs": c["runs"]})
        rows.append(r)
        show.append(d)
    title = f"{spec['title']}: sparsity, NNZ and quality per configuration"
    return Table(f"table_{family}", title, pd.DataFrame(rows), pd.DataFrame(show),
                 _runs(sub))


# ---------------------------------------------------------------- Table 5: storage
def storage_table(configs: pd.DataFrame, paper: dict) -> Table:
    p5 = paper.get("table5")
    rows, show = [], []
    for c in configs.to_dict("records"):
        ref = {}
        if (p5 is not None and c["family"] == "mobilenet" and c["base"] == "1.0"
                and c["dataset"] == "imagenet" and not c["synthetic"]):
            hit = p5[(p5["sparsity"] - c["target_sparsity"]).abs() <= TOL]
            ref = hit.iloc[0].to_dict() if len(hit) else {}
        mb = {k: c[f"bytes_{k}"] / 1e6 for k in ("dense", "bitmask", "csr", "csr_exact")}
        pb, pc = ref.get("bitmask_mb", np.nan), ref.get("csr_mb", np.nan)
        rows.append({"family": c["family"], "dataset": c["dataset"], "synthetic": c["synthetic"],
                     "base model": c["base"], "pattern": c["pattern"],
                     "sparsity": c["target_sparsity"], "n": c["n"],
                     "NNZ params": c["params_nnz"], "dense (MB)": mb["dense"],
                     "bit-mask (MB)": mb["bitmask"], "CSR(C) (MB)": mb["csr"],
                     "CSR(C) exact (MB)": mb["csr_exact"], "model size (MB)": c["model_size_mb"],
                     "paper NNZ params": ref.get("nnz", np.nan), "paper bit-mask (MB)": pb,
                     "paper CSR(C) (MB)": pc, "bit-mask Δ vs paper": mb["bitmask"] - pb,
                     "CSR(C) Δ vs paper": mb["csr"] - pc, "runs": c["runs"]})
        show.append({"family": c["family"], "dataset": fmt_dataset(c), "base model": c["base"],
                     "sparsity": fmt_sparsity(c["target_sparsity"]),
                     "NNZ params": fmt_nnz(c["params_nnz"]),
                     "bit-mask (MB)": fmt_num(mb["bitmask"], 3),
                     "CSR(C) (MB)": fmt_num(mb["csr"], 3),
                     "model size (MB)": fmt_num(c["model_size_mb"], 3),
                     "paper NNZ params": fmt_nnz(ref.get("nnz", np.nan)),
                     "paper bit-mask (MB)": fmt_num(pb), "paper CSR(C) (MB)": fmt_num(pc)})
    return Table("table5_storage", "Storage: bit-mask vs CSR(C) overhead per sparsity (Table 5)",
                 pd.DataFrame(rows), pd.DataFrame(show), _runs(configs))


# ---------------------------------------------------------------- Table 6: size vs quality
def size_table(configs: pd.DataFrame, paper: dict) -> Table:
    p6 = paper.get("table6")
    rows, show = [], []
    for _, grp in configs.groupby(GROUP, sort=True):
        # equal-compute twins share a small-dense model's size; the pairing table shows them
        dense, sparse = grp[(grp["target_sparsity"] == 0) & ~is_twin(grp)], grp[grp["target_sparsity"] > 0]
        if len(sparse) and len(dense):
            biggest = dense.loc[dense["params_total"].fillna(dense["params_nnz"]).idxmax()]
            if biggest["base"] in set(sparse["base"]):
                dense = dense.drop(index=biggest.name)
        for kind, part in (("small-dense", dense), ("large-sparse", sparse)):
            for c in part.sort_values("model_size_mb", ascending=False).to_dict("records"):
                m = primary_metric(c["family"], c)
                ref = {}
                if (p6 is not None and c["family"] == "mobilenet" and c["dataset"] == "imagenet"
                        and not c["synthetic"]):
                    hit = p6[(p6["kind"] == kind) & (p6["base"] == c["base"])
                             & ((p6["sparsity"] - c["target_sparsity"]).abs() <= TOL)]
                    ref = hit.iloc[0].to_dict() if len(hit) else {}
                ps, pq = ref.get("size_mb", np.nan), ref.get(m, np.nan)
                rows.append({"family": c["family"], "dataset": c["dataset"],
                             "synthetic": c["synthetic"], "direction": c["direction"],
                             "kind": kind, "base model": c["base"],
                             "sparsity": c["target_sparsity"], "n": c["n"],
                             "NNZ params": c["params_nnz"], "model size (MB)": c["model_size_mb"],
                             "metric": m, "quality": c[m], "quality std": c[f"{m}_std"],
                             "paper model size (MB)": ps, "paper quality": pq,
                             "model size Δ vs paper": c["model_size_mb"] - ps,
                             "quality Δ vs paper": c[m] - pq, "runs": c["runs"]})
                show.append({"family": c["family"], "dataset": fmt_dataset(c, True), "kind": kind,
                             "base model": c["base"], "sparsity": fmt_sparsity(c["target_sparsity"]),
                             "model size (MB)": fmt_num(c["model_size_mb"], 3),
                             "quality": f"{SHORT[m]} {fmt_pm(c[m], c[f'{m}_std'], c[f'{m}_n'])}",
                             "paper model size (MB)": fmt_num(ps),
                             "paper quality": fmt_num(pq, 1),
                             "quality Δ vs paper": fmt_num(c[m] - pq, sign=True)})
    return Table("table6_size_vs_quality",
                 "Small-dense vs large-sparse: model size (incl. sparse-storage overhead) and quality (Table 6)",
                 pd.DataFrame(rows), pd.DataFrame(show), _runs(configs))


# ---------------------------------------------------------------- pairing
def _nearest(dense: pd.DataFrame, col: str, x: float):
    """Dense config nearest to x in col on a log scale (ties: the smaller dense model)."""
    d = dense[dense[col] > 0]
    if d.empty or not x > 0:
        return None
    dist = (np.log(d[col]) - math.log(x)).abs().round(12)
    return d.loc[dist.sort_values(kind="stable").index[0]]


# the column that holds each comparison's verdict
VERDICT = {"NNZ": "verdict at equal steps", "size": "verdict by size", "compute": "verdict at equal compute"}


def is_twin(points: pd.DataFrame) -> pd.Series:
    """Dense points trained for another configuration's compute (budget=equal_compute)."""
    return points["budget_match"].fillna("").astype(str) != ""


def _twin_for(twins: pd.DataFrame, c: dict, nearest) -> dict | None:
    """The equal-compute twin of sparse point c: a dense point trained for c's training MACs, of
    the base the equal-steps verdict compares with when there is one (h48 for h384 @ 90%), on
    dense kernels before sparse ones."""
    key = pair_key(c["base"], c["target_sparsity"], c["pattern"], c["scheme"])
    hits = twins[twins["partner_key"] == key]
    if hits.empty:
        return None
    order = hits.assign(_other=hits["base"] != (None if nearest is None else nearest["base"]),
                        _conv=hits["budget_convention"] != "dense_kernels")
    return order.sort_values(["_other", "_conv", "params_nnz"], kind="stable").iloc[0].to_dict()


def _magnitude_for(points: pd.DataFrame, c: dict) -> dict | None:
    """The point a control (random masks, fixed masks) answers to: the same base model pruned the
    paper's way (its own magnitude masks) to the same sparsity, scheme and pattern; the one with
    the most seeds."""
    same = points[(points["target_sparsity"] > 0) & (points["control"] == "") & (points["base"] == c["base"])
                  & (points["skey"] == c["skey"]) & (points["scheme"] == c["scheme"])
                  & (points["pattern"] == c["pattern"])]
    if same.empty:
        return None
    return same.sort_values("n_seeds", ascending=False, kind="stable").iloc[0].to_dict()


def _ratio(a, b) -> float:
    return a / b if b and b > 0 and not math.isnan(b) else np.nan


def pipeline_macs(p) -> float:
    """Training MACs of a point's whole pipeline: `train_macs_pipeline` (its own training plus the
    run it started from: a model pruned after a 10-epoch dense run carries that run); a run from
    scratch made before the pipeline was recorded has only `train_macs`; otherwise unknown (NaN)."""
    pipe = p.get("train_macs_pipeline")
    if pipe is not None and pipe == pipe:
        return pipe
    return p.get("train_macs", np.nan) if p.get("init", "fresh") == "fresh" else np.nan


def fmt_p(p) -> str:
    return "" if p is None or math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def pairing_table(configs: pd.DataFrame) -> Table:
    """Each sparse point vs the dense point (other base) nearest in NNZ and in model size, both
    trained as many steps (the verdict at equal steps is the NNZ one), and vs the dense twin
    trained for its training MACs (budget=equal_compute), when the study has one: the difference
    of their means on the primary metric (signed: positive = large-sparse better), its standard
    error over seeds, Welch's p and the verdict of points.compare. Per pair also the ratios of
    inference and training MACs (sparse / nearest dense by NNZ; training over the whole pipeline)."""
    rows, show = [], []
    for _, grp in configs.groupby(GROUP, sort=True):
        twin = is_twin(grp)
        dense = grp[(grp["target_sparsity"] == 0) & ~twin].sort_values("params_nnz")
        twins = grp[(grp["target_sparsity"] == 0) & twin]
        for c in grp[grp["target_sparsity"] > 0].to_dict("records"):
            m = primary_metric(c["family"], c)
            r = {"family": c["family"], "dataset": c["dataset"], "synthetic": c["synthetic"],
                 "direction": c["direction"], "metric": m, "sparse model": c["base"],
                 "scheme": c["scheme"], "pattern": c["pattern"], "variant": c["variant"],
                 "sparsity": c["target_sparsity"], "sparse NNZ": c["params_nnz"],
                 "sparse size (MB)": c["model_size_mb"], "sparse quality": c[m],
                 "sparse quality std": c[f"{m}_std"], "sparse n": c[f"{m}_n"]}
            label = f"{c['base']} @ {fmt_sparsity(c['target_sparsity'])}"
            if c["pattern"] not in ("none", "unstructured"):
                label += f" ({c['pattern']})"
            if c["control"]:
                label += f" ({c['control']})"
            if c["variant"]:
                label += f" [{c['variant']}]"
            r["control"] = c["control"]
            d = {"family": c["family"], "dataset": fmt_dataset(c, True), "sparse model": label,
                 "NNZ / size": f"{fmt_nnz(c['params_nnz'])} / {fmt_num(c['model_size_mb'], 2)} MB",
                 "quality": f"{SHORT[m]} {fmt_pm(c[m], c[f'{m}_std'], c[f'{m}_n'])}"}
            cand = dense[dense["base"] != c["base"]]
            nearest = _nearest(cand, "params_nnz", c["params_nnz"])
            for by, col, unit in (("NNZ", "params_nnz", None), ("size", "model_size_mb", "MB"),
                                  ("compute", "train_macs", None)):
                o = nearest if by == "NNZ" else _nearest(cand, col, c[col]) if by == "size" else \
                    _twin_for(twins, c, nearest)
                adv = better(m, c[m], o[m]) if o is not None else np.nan
                win = ("" if o is None or math.isnan(adv) else
                       "tie" if abs(adv) < 1e-12 else "large-sparse" if adv > 0 else "small-dense")
                se, p, verdict = (np.nan, np.nan, "") if o is None else compare(
                    adv, c[f"{m}_std"], c[f"{m}_n"], o[f"{m}_std"], o[f"{m}_n"])
                what = {"NNZ": "NNZ", "size": "size (MB)", "compute": "training MACs"}[by]
                r.update({f"dense by {by}": None if o is None else o["base"],
                          f"dense by {by}: {what}": np.nan if o is None else o[col],
                          f"dense by {by}: quality": np.nan if o is None else o[m],
                          f"dense by {by}: quality std": np.nan if o is None else o[f"{m}_std"],
                          f"dense by {by}: n": np.nan if o is None else o[f"{m}_n"],
                          f"winner by {by}": win, f"sparse advantage by {by}": adv,
                          f"SE by {by}": se, f"p by {by}": p, VERDICT[by]: verdict})
                if by == "NNZ":
                    r["inference MACs ratio"] = _ratio(c["infer_macs"], np.nan if o is None else o["infer_macs"])
                    r["training MACs ratio"] = _ratio(pipeline_macs(c), np.nan if o is None else pipeline_macs(o))
                if by == "compute":
                    r["dense by compute: convention"] = "" if o is None else o["budget_convention"]
                val = "" if o is None else (f"{fmt_macs(o[col])} training MACs" if by == "compute" else
                                            fmt_nnz(o[col]) if unit is None else f"{fmt_num(o[col], 2)} MB")
                head = {"NNZ": "nearest dense by NNZ", "size": "nearest dense by size",
                        "compute": "equal-compute twin"}[by]
                d[head] = "none" if o is None else \
                    f"{o['base']} ({val}, {fmt_pm(o[m], o[f'{m}_std'], o[f'{m}_n'])})"
                d[f"large-sparse advantage by {by}"] = fmt_num(adv, sign=True)
                d[f"p by {by}"] = (NA_ONE_SEED if verdict == NA_ONE_SEED else fmt_p(p))
                d[VERDICT[by]] = verdict
                if by == "NNZ":
                    d["inference MACs ratio"] = fmt_num(r["inference MACs ratio"])
                    d["training MACs ratio"] = fmt_num(r["training MACs ratio"])
            if c["control"]:  # issue 18: a control against the paper's magnitude pruning at its NNZ
                o = _magnitude_for(grp, c)
                adv = better(m, c[m], o[m]) if o is not None else np.nan
                se, p, verdict = (np.nan, np.nan, "") if o is None else compare(
                    adv, c[f"{m}_std"], c[f"{m}_n"], o[f"{m}_std"], o[f"{m}_n"])
                r.update({"magnitude-pruned: quality": np.nan if o is None else o[m],
                          "magnitude-pruned: quality std": np.nan if o is None else o[f"{m}_std"],
                          "magnitude-pruned: n": np.nan if o is None else o[f"{m}_n"],
                          "advantage over magnitude": adv, "SE vs magnitude": se, "p vs magnitude": p,
                          "verdict vs magnitude": verdict})
                d["magnitude-pruned"] = "none" if o is None else fmt_pm(o[m], o[f"{m}_std"], o[f"{m}_n"])
                d["advantage over magnitude"] = fmt_num(adv, sign=True)
                d["p vs magnitude"] = NA_ONE_SEED if verdict == NA_ONE_SEED else fmt_p(p)
                d["verdict vs magnitude"] = verdict
            r["runs"] = c["runs"]
            rows.append(r)
            show.append(d)
    return Table("pairing", "Large-sparse vs small-dense: the nearest dense model in NNZ and in size at "
                 "equal steps, the dense twin at equal training compute; difference, its standard error "
                 "over seeds, Welch's p, verdict; MACs ratios",
                 pd.DataFrame(rows), pd.DataFrame(show), _runs(configs))


def pairing_summary(pairing: pd.DataFrame) -> pd.DataFrame:
    """Per family/dataset/direction: how often large-sparse wins, and the verdicts (Welch's t-test
    at 95%) at equal steps (by NNZ), by size and at equal training compute."""
    out = []
    if pairing.empty:
        return pd.DataFrame(out)
    for (fam, ds, syn, dr), g in pairing.groupby(GROUP, sort=True):
        name = f"{ds} {dr}" if dr else ds
        r = {"family": fam, "dataset": f"{name} (synthetic)" if syn else name}
        for by in ("NNZ", "size", "compute"):
            w = g[f"winner by {by}"]
            n = int((w != "").sum())
            if by == "compute" and not n:
                continue            # no equal-compute twins in this study
            r[f"large-sparse wins by {by}"] = (f"{int((w == 'large-sparse').sum())} of {n}" if n
                                               else "no dense model of another size")
            r[f"mean sparse advantage by {by}"] = fmt_num(g[f"sparse advantage by {by}"].mean(),
                                                          sign=True)
            v = g[VERDICT[by]]
            r[VERDICT[by].replace("verdict", "verdicts", 1)] = ", ".join(
                f"{k} {int((v == k).sum())}" for k in ("wins", "loses", "within noise", NA_ONE_SEED)
                if (v == k).any()) or "none"
        out.append(r)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- export file sizes
EXPORT_ORDER = ["dense", "bitmask", "csr", "int8 bitmask"]
EXPORT_TITLE = {"dense": "dense", "bitmask": "bitmask", "csr": "CSR", "int8 bitmask": "int8 bitmask"}


def _export_label(e: dict) -> str:
    return e["format"] if e["dtype"] == "float32" else f"{e['dtype']} {e['format']}"


def export_table(runs: pd.DataFrame, exports: dict) -> Table | None:
    """Per exported run (exports.json, written by prune-export): the measured file sizes of each
    format beside the run's own storage accounting (Tables 5 and 6). None when nothing was
    exported."""
    if not exports:
        return None
    labels = {_export_label(e) for es in exports.values() for e in es}
    labels = [x for x in EXPORT_ORDER if x in labels] + sorted(labels - set(EXPORT_ORDER))
    rows, show = [], []
    for c in runs[runs["run"].isin(exports)].to_dict("records"):
        files = {_export_label(e): e for e in exports[c["run"]]}   # the last of a kind counts
        r = {"run": c["run"], "family": c["family"], "base model": c["base"],
             "dataset": c["dataset"], "direction": c["direction"], "synthetic": c["synthetic"],
             "sparsity": c["target_sparsity"], "pattern": c["pattern"],
             "NNZ params": c["params_nnz"], "estimate: dense (bytes)": c["bytes_dense"],
             "estimate: bit-mask overhead (bytes)": c["bytes_bitmask"],
             "estimate: CSR(C) overhead (bytes)": c["bytes_csr"],
             "estimate: model size (MB)": c["model_size_mb"]}
        d = {"run": c["run"], "sparsity": fmt_sparsity(c["target_sparsity"]),
             "NNZ params": fmt_nnz(c["params_nnz"]),
             "Table 5: bit-mask / CSR(C) overhead (MB)":
                 f"{fmt_num(c['bytes_bitmask'] / 1e6, 3)} / {fmt_num(c['bytes_csr'] / 1e6, 3)}",
             "Table 6: model size (MB)": fmt_num(c["model_size_mb"], 3)}
        for x in labels:
            e = files.get(x, {})
            r[f"{x} file (bytes)"] = e.get("bytes", np.nan)
            r[f"{x} predicted (bytes)"] = e.get("predicted_bytes", np.nan)
            r[f"{x} file"] = e.get("file", "")
            d[f"{EXPORT_TITLE.get(x, x)} file (MB)"] = fmt_num(e.get("bytes", np.nan) / 1e6, 3)
        d["dense estimate (MB)"] = fmt_num(c["bytes_dense"] / 1e6, 3)
        bm, mb = files.get("bitmask", {}).get("bytes", np.nan), c["model_size_mb"]
        r["bitmask file / model size"] = bm / (mb * 1e6) if mb > 0 else np.nan
        d["bitmask file / model size"] = fmt_num(r["bitmask file / model size"], 3)
        rows.append(r)
        show.append(d)
    return Table("export_sizes", "Exported files: dense vs bitmask vs CSR vs int8-bitmask sizes "
                 "beside the storage accounting (Tables 5 and 6)", pd.DataFrame(rows),
                 pd.DataFrame(show), sorted(exports))


def _runs(df: pd.DataFrame) -> list:
    return sorted(r for s in df.get("runs", []) for r in str(s).split(";") if r)


def build(configs: pd.DataFrame, paper: dict) -> list[Table]:
    fams = sorted(configs["family"].unique(), key=lambda f: (FAMILIES.get(f, {}).get("paper_table", 9), f))
    tables = [family_table(configs, f) for f in fams]
    return tables + [storage_table(configs, paper), size_table(configs, paper),
                     pairing_table(configs)]


# ---------------------------------------------------------------- writers
def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(_md_cell, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$",
        "Δ": r"$\Delta$", "@": "@"}


def _tex(x) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(x))


def to_latex(df: pd.DataFrame, title: str) -> str:
    cols = list(df.columns)
    out = [f"% {title}", "\\begin{tabular}{" + "l" * max(1, len(cols)) + "}", "\\hline",
           " & ".join(map(_tex, cols)) + " \\\\", "\\hline"]
    out += [" & ".join(_tex(v) for v in row) + " \\\\" for row in df.itertuples(index=False)]
    return "\n".join(out + ["\\hline", "\\end{tabular}", ""])


def write(table: Table, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    table.csv.to_csv(paths[0], index=False)
    paths[1].write_text(f"# {table.title}\n\n" + to_markdown(table.show), encoding="utf-8")
    paths[2].write_text(to_latex(table.show, table.title), encoding="utf-8")
    return paths
