"""Figures (PNG + PDF each): quality vs NNZ (log x; paper Figs 3-5), eq. 1 (Fig 1), one run's
schedule and quality during training (Fig 2), and that run's per-layer sparsity.

A run with no quality to draw is marked, never dropped without a trace: a diverged run
(collect.py) is a red x at the top of the axis at its NNZ (or MACs), and a configuration
whose quality is not finite (a perplexity of inf) a triangle there; the curves join the
finite points only.

Uses matplotlib's object API with the Agg/PDF canvases only (never pyplot), so it is headless
and does not touch any global backend state.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .collect import FAMILIES, LOWER_IS_BETTER, metrics_for, primary_metric
from .tables import GROUP, SHORT, fmt_nnz, fmt_sparsity

DPI = 110


class NothingToDraw(ValueError):
    """A well-formed file with nothing to draw (a dense run's sparsity.csv has no rows): the
    report tries the next run, and does not list the file as skipped."""


@dataclass
class FigureInfo:
    name: str
    title: str
    caption: str
    paths: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    synthetic: bool = False


def _figure(w: float, h: float, ncols: int = 1, left=0.8, right=0.3, bottom=0.6, top=0.55,
            wspace=0.9) -> Figure:
    """A Figure with fixed margins in inches: no tight/constrained layout pass, which would
    cost one more full draw per figure (the report draws each figure twice: PNG and PDF)."""
    fig = Figure(figsize=(w, h))
    axes_w = (w - left - right - wspace * (ncols - 1)) / ncols
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace / axes_w)
    return fig


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


def _yerr(s: pd.Series):
    return np.nan_to_num(s.to_numpy(dtype=float), nan=0.0)


def _finite_rows(df: pd.DataFrame, col: str) -> pd.Series:
    """Rows whose ``col`` is a finite number (not NaN, not inf)."""
    return pd.Series(np.isfinite(df[col].to_numpy(dtype=float)), index=df.index)


def _in_group(runs: pd.DataFrame | None, key: tuple) -> pd.DataFrame:
    """The runs (e.g. the diverged ones) of one figure's group: family, dataset, synthetic, direction."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=GROUP)
    fam, ds, syn, dr = key
    return runs[(runs["family"] == fam) & (runs["dataset"] == ds) & (runs["synthetic"].astype(bool) == bool(syn))
                & (runs["direction"] == dr)]


OFF_SCALE = {"diverged": dict(marker="x", color="red", label="diverged (no quality)"),
             "inf": dict(marker="^", color="0.3", mfc="none", label="quality not finite (inf)")}


def _mark_top(ax, xs, kind: str) -> int:
    """Runs with no quality to draw, as markers at the top of the axis at their x (a blended
    transform: x in data, y in axes units, so the y range stays that of the finite points)."""
    xs = [float(x) for x in xs if x is not None and np.isfinite(float(x)) and float(x) > 0]
    if xs:
        ax.plot(xs, [0.97] * len(xs), transform=ax.get_xaxis_transform(), ls="none", ms=8, mew=1.5,
                **OFF_SCALE[kind])
    return len(xs)


def _off_scale_caption(n_diverged: int, n_inf: int) -> str:
    parts = []
    if n_diverged:
        parts.append(f"red x at the top: {n_diverged} diverged run(s), left out of the means and curves "
                     "(named in runs.csv and in the list of diverged runs)")
    if n_inf:
        parts.append(f"triangle at the top: {n_inf} configuration(s) whose quality is not finite (inf)")
    return (" Marked " + "; ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------- Figures 3-5
def quality_vs_nnz(configs: pd.DataFrame, paper: dict, out_dir: Path,
                   diverged: pd.DataFrame | None = None) -> list[FigureInfo]:
    """One figure per family, dataset and translation direction (Figure 5 is per direction);
    ``diverged``: the diverged runs (collect.py), marked at their NNZ."""
    infos = []
    for (fam, ds, syn, dr), grp in configs.groupby(GROUP, sort=True):
        lost = _in_group(diverged, (fam, ds, syn, dr))
        marked = (0, 0)
        spec = FAMILIES.get(fam, {})
        metrics = [m for m in metrics_for(fam, grp) if grp[m].notna().any()]
        if fam == "gnmt":
            metrics = metrics[:1]   # Figure 5 is test BLEU (validation BLEU only when no test)
        if not metrics:
            continue
        # a GNMT run is compared with the paper only when it says which direction it translated
        overlay = (bool(spec) and not syn and ds == spec["paper_dataset"]
                   and (fam != "gnmt" or bool(grp["bleu_ref"].iloc[0])))
        prow = [r for r in paper["rows"] if r["family"] == fam] if overlay else []
        fig = _figure(5.2 * len(metrics), 4.0, len(metrics))
        for i, m in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), i + 1)
            _draw_family(ax, grp, m, prow)
            ax.set_xscale("log")
            now = (_mark_top(ax, lost.get("params_nnz", []), "diverged"),
                   _mark_top(ax, grp.loc[~_finite_rows(grp, m) & grp[m].notna(), "params_nnz"], "inf"))
            marked = (max(marked[0], now[0]), max(marked[1], now[1]))
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_nnz(x)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("NNZ params (log scale)")
            arrow = "lower is better" if m in LOWER_IS_BETTER else "higher is better"
            ax.set_ylabel(f"{SHORT[m]} ({arrow})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        where = f"{ds} {dr.upper()}" if dr else ds
        label = f"{where}, SYNTHETIC DATA" if syn else where
        fig.suptitle(f"{spec.get('title', fam)} sparse vs dense ({label})", fontsize=10)
        stem = f"quality_vs_nnz_{fam}_{ds}" + (f"_{dr}" if dr else "")
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "-", stem) + ("_synthetic" if syn else "")
        runs = sorted(r for s in grp["runs"] for r in s.split(";"))
        n = grp["n_seeds"]
        seeds = (f"each point is the mean over {n.min()} seeds with error bars of ± one sample "
                 "standard deviation" if n.min() == n.max() and n.min() > 1 else
                 f"points are means over 1 to {n.max()} seeds, error bars ± one sample standard "
                 "deviation where there are 2 or more (n in the tables)" if n.max() > 1 else
                 "one seed per point, so no error bars")
        cap = (f"{', '.join(SHORT[m] for m in metrics)} against NNZ parameters (log x) for "
               f"{spec.get('title', fam)} on {label}: the dense models of growing size form one "
               f"curve, each pruned base model another (sparsity rising along it; an N:M pattern or a "
               f"control such as random pruning is a curve of its own); {seeds}"
               + ("; hollow labelled markers are the paper's published values." if prow else
                  "; no paper values are overlaid (the paper used another dataset"
                  + (" or the runs do not say their direction" if fam == "gnmt" else "") + ").")
               + _off_scale_caption(*marked))
        infos.append(FigureInfo(name, f"{spec.get('title', fam)}: quality vs NNZ ({label})", cap,
                                _save(fig, out_dir, name), runs, bool(syn)))
    return infos


# ---------------------------------------------------------------- quality vs MACs (issue 17)
MAC_AXES = {"infer_macs": ("inference", "inference MACs per {unit}, with the final masks (log scale)"),
            "train_macs": ("training", "training MACs, dense kernels (log scale)")}


def quality_vs_macs(configs: pd.DataFrame, out_dir: Path,
                    diverged: pd.DataFrame | None = None) -> list[FigureInfo]:
    """Quality against inference MACs and against training MACs, one figure each per family,
    dataset and direction that has MAC counts: the dense models, each pruned base model, and
    the equal-compute twins (budget=equal_compute) as points of their own; ``diverged``: the
    diverged runs (collect.py), marked at their MACs where their summary has them."""
    from .tables import fmt_macs, is_twin

    infos = []
    for (fam, ds, syn, dr), grp in configs.groupby(GROUP, sort=True):
        spec = FAMILIES.get(fam, {})
        metric = next((m for m in metrics_for(fam, grp) if grp[m].notna().any()), None)
        lost = _in_group(diverged, (fam, ds, syn, dr))
        for col, (kind, xlabel) in MAC_AXES.items():
            have = grp[grp[col].notna() & (grp[col] > 0)] if metric else grp.iloc[:0]
            if have.empty:
                continue
            unit = next((u for u in have["macs_unit"] if u), "example")
            fig = _figure(6.2, 4.2)
            ax = fig.add_subplot(1, 1, 1)
            off_scale = have.loc[~_finite_rows(have, metric) & have[metric].notna(), col]
            have = have[_finite_rows(have, metric)]
            twin = is_twin(have)
            dense = have[(have["target_sparsity"] == 0) & ~twin].sort_values(col)
            if len(dense):
                ax.errorbar(dense[col], dense[metric], yerr=_yerr(dense[f"{metric}_std"]), marker="o",
                            capsize=3, label="dense (growing size)")
            for (base, ctl), part in have[have["target_sparsity"] > 0].groupby(["base", "control"], sort=False):
                part = pd.concat([dense[dense["base"] == base], part.sort_values("target_sparsity")])
                ax.errorbar(part[col], part[metric], yerr=_yerr(part[f"{metric}_std"]), marker="s",
                            capsize=3, label=f"pruned from {base}" + (f", {ctl}" if ctl else ""))
            if twin.any():
                t = have[twin]
                ax.errorbar(t[col], t[metric], yerr=_yerr(t[f"{metric}_std"]), marker="D", ls="none",
                            capsize=3, label="dense at a sparse model's training MACs")
            ax.set_xscale("log")
            marked = (_mark_top(ax, lost.get(col, []), "diverged"), _mark_top(ax, off_scale, "inf"))
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_macs(x)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel.format(unit=unit))
            arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
            ax.set_ylabel(f"{SHORT[metric]} ({arrow})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            where = f"{ds} {dr.upper()}" if dr else ds
            label = f"{where}, SYNTHETIC DATA" if syn else where
            fig.suptitle(f"{spec.get('title', fam)}: quality vs {kind} MACs ({label})", fontsize=10)
            stem = f"quality_vs_{col}_{fam}_{ds}" + (f"_{dr}" if dr else "")
            name = re.sub(r"[^A-Za-z0-9_.=-]+", "-", stem) + ("_synthetic" if syn else "")
            cap = (f"{SHORT[metric]} against {kind} multiply-accumulates (log x) for {spec.get('title', fam)} on "
                   f"{label}: " + ("MACs of one forward pass per " + unit + ", a pruned tensor counting its "
                                   "nonzeros (what sparse kernels would do)" if col == "infer_macs" else
                                   "3 x the forward of every " + unit + " of every step on dense kernels (what "
                                   "masked training runs); runs trained for another model's compute sit at "
                                   "its training MACs") +
                   "; points are means over seeds, error bars ± one sample standard deviation where there "
                   "are 2 or more. Runs made before MACs were counted are not drawn." + _off_scale_caption(*marked))
            runs = sorted(r for x in have["runs"] for r in x.split(";"))
            infos.append(FigureInfo(name, f"{spec.get('title', fam)}: quality vs {kind} MACs ({label})", cap,
                                    _save(fig, out_dir, name), runs, bool(syn)))
    return infos


def _draw_family(ax, grp: pd.DataFrame, m: str, prow: list) -> None:
    from .tables import is_twin

    grp = grp[_finite_rows(grp, m)]   # NaN: not measured; inf: marked at the top (_mark_top)
    twin = is_twin(grp)
    dense = grp[(grp["target_sparsity"] == 0) & ~twin].sort_values("params_nnz")
    color = {}
    if len(dense):
        line = ax.errorbar(dense["params_nnz"], dense[m], yerr=_yerr(dense[f"{m}_std"]),
                           marker="o", capsize=3, label="dense (growing size)")
        color["dense"] = line[0].get_color()
    twins = grp[twin]
    if len(twins):   # budget=equal_compute: same NNZ as a dense model, longer training
        ax.errorbar(twins["params_nnz"], twins[m], yerr=_yerr(twins[f"{m}_std"]), marker="D", ls="none",
                    capsize=3, label="dense at a sparse model's training MACs")
    sparse = grp[grp["target_sparsity"] > 0]
    schemes = sparse["scheme"].nunique() > 1
    # one curve per way of pruning: scheme, N:M pattern, and issue 18's controls (random masks,
    # fixed masks from scratch or rewound), each starting from its base model's dense point
    for (base, pr, sch, pat, ctl), part in sparse.groupby(["base", "pruning", "scheme", "pattern", "control"],
                                                           sort=False):
        part = pd.concat([dense[dense["base"] == base], part.sort_values("target_sparsity")])
        lab = (f"pruned from {base}" + (f" ({sch})" if schemes else "")
               + (f" {pat}" if pat not in ("none", "unstructured") else "") + (f", {ctl}" if ctl else ""))
        line = ax.errorbar(part["params_nnz"], part[m], yerr=_yerr(part[f"{m}_std"]),
                           marker="s", capsize=3, label=lab)
        color.setdefault(base, line[0].get_color())
    pm = m
    if m == "bleu" and len(grp):
        pm = grp["bleu_ref"].iloc[0]
    elif m == "val_bleu":
        return          # the paper gives test BLEU only
    pts = [r for r in prow if _finite(r.get(pm)) and _finite(r.get("nnz"))]
    if not pts:
        return
    pd_dense = sorted((r for r in pts if r["sparsity"] == 0), key=lambda r: r["nnz"])
    ax.plot([r["nnz"] for r in pd_dense], [r[pm] for r in pd_dense], ls=":", marker="o",
            mfc="none", color=color.get("dense", "k"), label="paper: dense")
    for base in sorted({r["base"] for r in pts if r["sparsity"] > 0}):
        ser = sorted((r for r in pts if r["base"] == base), key=lambda r: r["sparsity"])
        ax.plot([r["nnz"] for r in ser], [r[pm] for r in ser], ls=":", marker="s", mfc="none",
                color=color.get(base, "grey"), label=f"paper: pruned from {base}")
    if m != "bleu":
        return
    # Figure 5: label each reference point with the paper's model (few points; text is the
    # costly part of drawing, so the busier Figures 3-4 rely on their legend)
    for r in pts:
        text = r["base"] if r["sparsity"] == 0 else f"{r['base']} @ {fmt_sparsity(r['sparsity'])}"
        ax.annotate(text, (r["nnz"], r[pm]), textcoords="offset points", xytext=(3, 3),
                    fontsize=6, color="0.35")


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- Figure 1
def _eq1(final, initial, begin, end, freq):
    n_dt = end - begin

    def at(step):
        if step < begin:
            return initial
        t = begin + ((min(step, end) - begin) // freq) * freq
        return final + (initial - final) * (1 - (t - begin) / n_dt) ** 3
    return at


def _core_schedule():
    """The core's GradualSchedule. prune_cli.pruning's __init__ imports torch (seconds); its
    schedule.py needs only math, so load that file alone when it can, else the package."""
    if "prune_cli.pruning" not in sys.modules:
        try:
            spec = importlib.util.find_spec("prune_cli.pruning")
            path = Path(spec.submodule_search_locations[0]) / "schedule.py"
            mspec = importlib.util.spec_from_file_location("_prune_report_schedule", path)
            mod = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(mod)
            return mod.GradualSchedule
        except Exception:  # noqa: BLE001 - fall back to the package import
            pass
    from prune_cli.pruning import GradualSchedule
    return GradualSchedule


def schedule_fn(final, initial=0.0, begin=0, end=10000, freq=100):
    """(sparsity_at, source): the core's GradualSchedule when importable, else eq. 1 here."""
    try:
        s = _core_schedule()(final, initial_sparsity=initial, begin_step=begin, end_step=end,
                             frequency=freq)
        return s.sparsity_at, "the core's `prune_cli.pruning.GradualSchedule`"
    except Exception:  # noqa: BLE001 - the core may not exist yet; eq. 1 is three lines
        return _eq1(final, initial, begin, end, freq), "the report's own eq. 1 (core unavailable)"


def sparsity_function(out_dir: Path) -> FigureInfo:
    begin, end, freq = 2000, 12000, 500
    fig = _figure(6, 4, top=0.45)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(0, 15001, 25)
    src = ""
    for sf in (0.5, 0.75, 0.875, 0.95):
        f, src = schedule_fn(sf, 0.0, begin, end, freq)
        ax.plot(steps, [float(f(int(t))) for t in steps], label=f"$s_f$ = {sf:g}")
    ax.axvline(begin, ls=":", color="grey")
    ax.axvline(end, ls=":", color="grey")
    ax.text(begin, 0.02, " $t_0$", fontsize=8)
    ax.text(end, 0.02, r" $t_0 + n\Delta t$", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(r"Eq. 1: $s_t = s_f + (s_i - s_f)(1 - \frac{t - t_0}{n\Delta t})^3$, "
                 f"$s_i$=0, $t_0$={begin}, $\\Delta t$={freq}, n={(end - begin) // freq}",
                 fontsize=9)
    cap = ("The gradual sparsity function of eq. 1 (the paper's Figure 1) for four final "
           "sparsities: pruning is fast at first and slows as fewer weights remain. Computed by "
           f"{src}; no run data.")
    return FigureInfo("fig1_sparsity_function", "Figure 1: sparsity function (eq. 1)", cap,
                      _save(fig, out_dir, "fig1_sparsity_function"))


# ---------------------------------------------------------------- Figure 2 and layers
def read_metrics(path: Path) -> dict:
    """metrics.csv -> {(split, metric): (steps, values)}; ValueError when malformed."""
    series = {}
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # a run in progress may be writing its last row
    rd = csv.reader(lines)
    head = next(rd, None)
    if head is None or head[:5] != ["step", "epoch", "split", "metric", "value"]:
        raise ValueError(f"bad header {head!r}")
    for i, row in enumerate(rd, 2):
        if not row:
            continue
        try:
            step, val = int(float(row[0])), float(row[4])
        except (ValueError, IndexError):
            raise ValueError(f"line {i} is malformed: {','.join(row)[:80]!r}") from None
        s = series.setdefault((row[2], row[3]), ([], []))
        s[0].append(step)
        s[1].append(val)
    if not series:
        raise ValueError("no rows")
    return series


def training_curves(run_dir: Path, run: str, family: str, synthetic: bool,
                    out_dir: Path) -> FigureInfo:
    series = read_metrics(run_dir / "metrics.csv")
    # a perplexity of inf (or a NaN loss) is a gap in its curve, not a point off every scale
    gaps = sum(not math.isfinite(v) for _, vals in series.values() for v in vals)
    series = {k: (steps, [v if math.isfinite(v) else math.nan for v in vals]) for k, (steps, vals) in series.items()}
    m = primary_metric(family)
    found = {k[1] for k in series if k[0] != "train"}
    if m not in found:  # e.g. an unfinished run whose family is unknown
        m = next((x for x in ("perplexity", "top1", "bleu", "loss") if x in found), m)
    fig = _figure(11.5, 4, 2, right=0.3, wspace=1.9)
    ax = fig.add_subplot(1, 2, 1)
    if ("train", "sparsity") in series:
        ax.plot(*series[("train", "sparsity")], color="C0", label="target sparsity")
    ax.set_xlabel("step")
    ax.set_ylabel("sparsity", color="C0")
    ax.set_ylim(0, 1)
    if ("train", "lr") in series:
        ax2 = ax.twinx()
        ax2.plot(*series[("train", "lr")], color="C3", label="learning rate")
        ax2.set_ylabel("learning rate", color="C3")
    ax.set_title("(a) sparsity schedule and learning rate", fontsize=9)
    bx = fig.add_subplot(1, 2, 2)
    evals = [k for k in series if k[0] != "train" and k[1] == m]
    if ("train", m) in series:  # the LM logs its training perplexity too: the curve between evaluations
        bx.plot(*series[("train", m)], color="0.6", lw=1, label=f"train {SHORT.get(m, m)}")
    for k in sorted(evals):
        bx.plot(*series[k], marker=".", label=f"{k[0]} {SHORT.get(m, m)}")
    if not evals and ("train", "loss") in series:
        bx.plot(*series[("train", "loss")], label="train loss")
    bx.set_xlabel("step")
    bx.set_ylabel(SHORT.get(m, m))
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3)
    bx.set_title("(b) quality during training", fontsize=9)
    fig.suptitle(f"run {run}" + (" (SYNTHETIC DATA)" if synthetic else ""), fontsize=10)
    cap = (f"Training of run `{run}` (the paper's Figure 2): (a) the target sparsity of the "
           "schedule and the learning rate per step, (b) quality during training (evaluations; for "
           "language models also the training perplexity)."
           + (f" {gaps} value(s) that are not finite (inf or NaN) are gaps in the curves." if gaps else ""))
    return FigureInfo("fig2_schedule_and_quality", "Figure 2: schedule and quality of one run",
                      cap, _save(fig, out_dir, "fig2_schedule_and_quality"), [run], synthetic)


def read_layer_rows(path: Path) -> tuple[dict, dict]:
    """sparsity.csv -> ({layer: (last step, sparsity, target, nnz)}, {layer: regrown summed over
    every update}). A dynamic rule (RigL, SET) moves connections at constant sparsity: the sum
    is how many it moved; pruning rows (and files from before the column) count 0."""
    last, moved = {}, {}
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # a run in progress may be writing its last row
    rd = csv.DictReader(lines)
    if not {"step", "layer", "sparsity"} <= set(rd.fieldnames or ()):
        raise ValueError(f"bad header {rd.fieldnames!r}")
    for i, row in enumerate(rd, 2):
        try:
            step, sp = int(float(row["step"])), float(row["sparsity"])
            tgt = float(row.get("target_sparsity") or "nan")
            nnz = float(row.get("nnz") or "nan")
            regrown = int(float(row.get("regrown") or 0))
        except (TypeError, ValueError):
            raise ValueError(f"line {i} is malformed") from None
        layer = row["layer"]
        if layer not in last or step >= last[layer][0]:
            last[layer] = (step, sp, tgt, nnz)
        moved[layer] = moved.get(layer, 0) + regrown
    return last, moved


def layer_sparsity(run_dir: Path, run: str, synthetic: bool, out_dir: Path) -> FigureInfo:
    """Bar chart of each pruned tensor's sparsity at the last mask update in sparsity.csv; for a
    run whose rule moved connections (RigL, SET) a second panel: how many it regrew, summed over
    its updates, as a multiple of the tensor's nonzeros."""
    last, moved = read_layer_rows(run_dir / "sparsity.csv")
    if not last:
        raise NothingToDraw("no rows")
    layers = list(last)
    dynamic = any(moved.values())
    size = 6 if len(layers) > 30 else 8
    left = min(0.3 + 0.075 * size / 8 * max(len(k) for k in layers), 4.0)
    height = min(1.2 + 0.22 * len(layers), 30)
    fig = (_figure(9 + left, height, ncols=2, left=left, top=0.4, wspace=0.3) if dynamic
           else _figure(5 + left, height, left=left, top=0.4))
    ax = fig.add_subplot(1, 2 if dynamic else 1, 1)
    y = np.arange(len(layers))
    ax.barh(y, [last[k][1] for k in layers], color="C0", label="final sparsity")
    ax.scatter([last[k][2] for k in layers], y, marker="|", s=120, color="C3", label="target")
    ax.set_yticks(y, layers, fontsize=size)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity")
    ax.legend(fontsize=8, loc="lower right")
    title = f"per-layer sparsity, run {run}" + (" (SYNTHETIC DATA)" if synthetic else "")
    ax.set_title(title, fontsize=9)
    step = max(v[0] for v in last.values())
    cap = (f"Sparsity of each pruned tensor of run `{run}` at its last mask update (step {step}; "
           f"{len(layers)} tensors), with the target as a red tick.")
    if dynamic:
        frac = [moved[k] / last[k][3] if last[k][3] > 0 else 0.0 for k in layers]
        mv = fig.add_subplot(1, 2, 2, sharey=ax)
        mv.barh(y, frac, color="C2")
        mv.tick_params(axis="y", labelleft=False)
        mv.set_xlabel("connections regrown, all updates / nonzeros")
        mv.set_title("connections moved", fontsize=9)
        cap += (f" Its rule moved connections at constant sparsity: right, the weights regrown "
                f"(as many were dropped) summed over its updates, as a multiple of each tensor's "
                f"nonzeros ({sum(moved.values()):,} in all).")
    return FigureInfo("layer_sparsity", "Per-layer sparsity of one run", cap,
                      _save(fig, out_dir, "layer_sparsity"), [run], synthetic)

