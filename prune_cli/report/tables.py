"""Runs -> configurations (mean/std over seeds) -> the paper's tables, with paper values beside.

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

from .collect import FAMILIES, LOWER_IS_BETTER, QUALITY, metrics_for, primary_metric

KEYS = ["family", "dataset", "synthetic", "base", "pruning", "scheme", "skey"]
MEANS = ["target_sparsity", "achieved_sparsity", "params_total", "params_nnz", "bytes_dense",
         "bytes_bitmask", "bytes_csr", "bytes_csr_exact", "model_size_mb", "base_order", *QUALITY]
STDS = ["params_nnz", "model_size_mb", *QUALITY]
SHORT = {"perplexity": "perplexity", "val_perplexity": "valid perplexity", "top1": "top-1",
         "top5": "top-5", "bleu": "BLEU"}
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


# ---------------------------------------------------------------- configurations
def aggregate(runs: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """One row per configuration: means, stds (ddof=1, NaN for a single seed), n, runs."""
    if runs.empty:
        return pd.DataFrame(columns=[*KEYS, "n", "runs", *MEANS])
    df = runs.assign(skey=runs["target_sparsity"].round(9))
    g = df.groupby(KEYS, sort=False, dropna=False)
    out = g[MEANS].mean()
    out = out.join(g[STDS].std(ddof=1).add_suffix("_std"))
    out["n"] = g.size()
    out["runs"] = g["run"].agg(lambda s: ";".join(sorted(s)))
    out["bleu_ref"] = g["bleu_ref"].first()
    out = out.reset_index().sort_values(
        ["family", "dataset", "synthetic", "base_order", "base", "target_sparsity", "pruning",
         "scheme"], kind="stable").reset_index(drop=True)
    pcols = {"paper_nnz": [], "paper_source": [], **{f"paper_{m}": [] for m in QUALITY},
             "paper_bleu_en_de": [], "paper_bleu_de_en": []}
    for c in out.to_dict("records"):
        r = _paper_row(paper, c) or {}
        pcols["paper_nnz"].append(r.get("nnz", np.nan))
        pcols["paper_source"].append(r.get("source", ""))
        for m in QUALITY:
            pcols[f"paper_{m}"].append(r.get(c["bleu_ref"] if m == "bleu" else m, np.nan))
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


def fmt_num(x, digits=2, sign=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_pm(mean, std, digits=2) -> str:
    s = fmt_num(mean, digits)
    return f"{s} ± {std:.{digits}f}" if s and not (std is None or math.isnan(std)) else s


def fmt_sparsity(x) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.4g}%"


def fmt_dataset(c) -> str:
    return f"{c['dataset']} (synthetic)" if c["synthetic"] else c["dataset"]


def fmt_pruning(c) -> str:
    return "dense" if c["target_sparsity"] == 0 else f"{c['pruning']}, {c['scheme']}"


# ---------------------------------------------------------------- Tables 1-4
def family_table(configs: pd.DataFrame, family: str) -> Table:
    spec = FAMILIES.get(family, dict(title=family, base_col="base"))
    sub = configs[configs["family"] == family]
    metrics = metrics_for(family, sub)
    bc = spec["base_col"]
    rows, show = [], []
    for c in sub.to_dict("records"):
        r = {"dataset": c["dataset"], "synthetic": c["synthetic"], bc: c["base"],
             "pruning": c["pruning"], "scheme": c["scheme"], "sparsity": c["target_sparsity"],
             "achieved sparsity": c["achieved_sparsity"], "n": c["n"],
             "NNZ params": c["params_nnz"], "NNZ params std": c["params_nnz_std"],
             "paper NNZ params": c["paper_nnz"],
             "NNZ params Δ vs paper": c["params_nnz"] - c["paper_nnz"]}
        d = {"dataset": fmt_dataset(c), bc: c["base"], "pruning": fmt_pruning(c),
             "sparsity": fmt_sparsity(c["target_sparsity"]), "n": str(c["n"]),
             "NNZ params": fmt_nnz(c["params_nnz"]), "paper NNZ params": fmt_nnz(c["paper_nnz"])}
        for m in metrics:
            s = SHORT[m]
            r.update({s: c[m], f"{s} std": c[f"{m}_std"]})
            d[s] = fmt_pm(c[m], c[f"{m}_std"])
            if m == "bleu":
                r.update({"paper BLEU (EN-DE)": c["paper_bleu_en_de"],
                          "paper BLEU (DE-EN)": c["paper_bleu_de_en"]})
                d.update({"paper BLEU (EN-DE)": fmt_num(c["paper_bleu_en_de"]),
                          "paper BLEU (DE-EN)": fmt_num(c["paper_bleu_de_en"])})
            else:
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
                     "base model": c["base"], "sparsity": c["target_sparsity"], "n": c["n"],
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
    for _, grp in configs.groupby(["family", "dataset", "synthetic"], sort=True):
        dense, sparse = grp[grp["target_sparsity"] == 0], grp[grp["target_sparsity"] > 0]
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
                             "synthetic": c["synthetic"], "kind": kind, "base model": c["base"],
                             "sparsity": c["target_sparsity"], "n": c["n"],
                             "NNZ params": c["params_nnz"], "model size (MB)": c["model_size_mb"],
                             "metric": m, "quality": c[m], "quality std": c[f"{m}_std"],
                             "paper model size (MB)": ps, "paper quality": pq,
                             "model size Δ vs paper": c["model_size_mb"] - ps,
                             "quality Δ vs paper": c[m] - pq, "runs": c["runs"]})
                show.append({"family": c["family"], "dataset": fmt_dataset(c), "kind": kind,
                             "base model": c["base"], "sparsity": fmt_sparsity(c["target_sparsity"]),
                             "model size (MB)": fmt_num(c["model_size_mb"], 3),
                             "quality": f"{SHORT[m]} {fmt_pm(c[m], c[f'{m}_std'])}",
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


def pairing_table(configs: pd.DataFrame) -> Table:
    """Each sparse config vs the dense config (other base) nearest in NNZ and in model size."""
    rows, show = [], []
    for _, grp in configs.groupby(["family", "dataset", "synthetic"], sort=True):
        dense = grp[grp["target_sparsity"] == 0].sort_values("params_nnz")
        for c in grp[grp["target_sparsity"] > 0].to_dict("records"):
            m = primary_metric(c["family"], c)
            r = {"family": c["family"], "dataset": c["dataset"], "synthetic": c["synthetic"],
                 "metric": m, "sparse model": c["base"], "scheme": c["scheme"],
                 "sparsity": c["target_sparsity"], "sparse NNZ": c["params_nnz"],
                 "sparse size (MB)": c["model_size_mb"], "sparse quality": c[m]}
            d = {"family": c["family"], "dataset": fmt_dataset(c), "sparse model":
                 f"{c['base']} @ {fmt_sparsity(c['target_sparsity'])}",
                 "NNZ / size": f"{fmt_nnz(c['params_nnz'])} / {fmt_num(c['model_size_mb'], 2)} MB",
                 "quality": f"{SHORT[m]} {fmt_num(c[m])}"}
            cand = dense[dense["base"] != c["base"]]
            for by, col, unit in (("NNZ", "params_nnz", None), ("size", "model_size_mb", "MB")):
                o = _nearest(cand, col, c[col])
                adv = better(m, c[m], o[m]) if o is not None else np.nan
                win = ("" if o is None or math.isnan(adv) else
                       "tie" if abs(adv) < 1e-12 else "large-sparse" if adv > 0 else "small-dense")
                r.update({f"dense by {by}": None if o is None else o["base"],
                          f"dense by {by}: {'NNZ' if by == 'NNZ' else 'size (MB)'}":
                              np.nan if o is None else o[col],
                          f"dense by {by}: quality": np.nan if o is None else o[m],
                          f"winner by {by}": win, f"sparse advantage by {by}": adv})
                val = "" if o is None else (fmt_nnz(o[col]) if unit is None else
                                            f"{fmt_num(o[col], 2)} MB")
                d[f"nearest dense by {by}"] = "none" if o is None else \
                    f"{o['base']} ({val}, {fmt_num(o[m])})"
                d[f"winner by {by}"] = f"{win} by {fmt_num(abs(adv))}" if win and win != "tie" else win
            r["runs"] = c["runs"]
            rows.append(r)
            show.append(d)
    return Table("pairing", "Large-sparse vs small-dense: nearest dense model in NNZ and in size",
                 pd.DataFrame(rows), pd.DataFrame(show), _runs(configs))


def pairing_summary(pairing: pd.DataFrame) -> pd.DataFrame:
    """Per family/dataset: how often large-sparse wins at equal NNZ and at equal size."""
    out = []
    if pairing.empty:
        return pd.DataFrame(out)
    for (fam, ds, syn), g in pairing.groupby(["family", "dataset", "synthetic"], sort=True):
        r = {"family": fam, "dataset": f"{ds} (synthetic)" if syn else ds}
        for by in ("NNZ", "size"):
            w = g[f"winner by {by}"]
            n = int((w != "").sum())
            r[f"large-sparse wins by {by}"] = (f"{int((w == 'large-sparse').sum())} of {n}" if n
                                               else "no dense model of another size")
            r[f"mean sparse advantage by {by}"] = fmt_num(g[f"sparse advantage by {by}"].mean(),
                                                          sign=True)
        out.append(r)
    return pd.DataFrame(out)


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
