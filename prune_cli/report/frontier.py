"""The frontier: quality against training compute, and where large-sparse overtakes small-dense.

Read from the evaluation rows of ordinary runs (no second kind of run, no second results file):
every evaluation appends to metrics.csv the task's metrics for its split and the cumulative
training MACs so far (`train_macs`, dense kernels; `train_macs_sparse_kernels`;
`train_macs_pipeline`, which adds the run it started from). Under the protocol (one run per
configuration, a constant learning rate, evaluations at log-spaced steps) the model at step B
is what a run of budget B gives, so one run draws a whole curve.

- A point on a curve: one evaluation on the validation split (`valid` / `val`) of the family's
  primary metric (perplexity, top1, bleu; collect.LOWER_IS_BETTER says which way is better),
  at the run's final sparsity: a sparse run's evaluations count from the step its last tensor
  reached its final target (sparsity.csv), a dense run's all of them.
- Two MAC axes: dense kernels (train_macs + the pipeline before the run: what masked training
  runs) and sparse kernels (train_macs_sparse_kernels + the same pipeline, on dense kernels).
- A configuration is a study point (points.group: its seeds together); its curve is the mean
  and sample std over seeds at each evaluated step.
- Each large-sparse configuration meets the small-dense model of its NNZ (tables._nearest, as
  the pairing table pairs them): that model's quality at the same training MACs, interpolated
  per seed linearly in log MACs between its own two evaluations around it, never extrapolated;
  then the advantage, Welch's p over seeds and the verdict (points.compare).
- An NNZ class is a small-dense model and the large-sparse configurations paired with it: one
  colour in the figure, one crossover sentence per configuration and convention.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .collect import FAMILIES, LOWER_IS_BETTER
from .points import NA_ONE_SEED, budget_words, compare
from .tables import (GROUP, SHORT, Table, _nearest, better, fmt_dataset, fmt_macs, fmt_nnz, fmt_p,
                     fmt_pm, fmt_sparsity, is_twin)

EVAL_MACS = ("train_macs", "train_macs_sparse_kernels", "train_macs_pipeline")
CONVENTIONS = {"dense": "dense kernels", "sparse": "sparse kernels"}
OUTSIDE = "outside the measured range"
UNKNOWN = "MACs not recorded"          # e.g. no train_macs_sparse_kernels in the evaluation rows
HEADER = ["step", "epoch", "split", "metric", "value"]
TOL = 1e-9   # relative: a budget equal to a measured one up to rounding is inside the range


@dataclass
class Evaluations:
    """metrics.csv's evaluation rows: {(step, split): {metric: value}} (a later row of the same
    step and split wins: a resumed run's repeat, or the final evaluation), the numbers of the
    lines that could not be read, and the range of the logged learning rate."""
    rows: dict
    malformed: list = field(default_factory=list)
    lr: tuple | None = None


@dataclass
class Frontier:
    table: Table                     # one row per large-sparse configuration and evaluated budget
    curves: pd.DataFrame             # one row per configuration and evaluated step (mean, std)
    crossovers: pd.DataFrame         # one sentence per (group, configuration, convention)
    no_curve: pd.DataFrame           # run, reason
    varying_lr: list = field(default_factory=list)     # runs whose learning rate changed
    skipped: list = field(default_factory=list)        # {"file", "reason"}: unreadable lines


# ---------------------------------------------------------------- reading one run
def _lines(path: Path) -> list[str]:
    """The complete lines of a CSV that may still be written: a last line without its newline
    is a row cut short (a run killed mid-write), and is dropped."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return lines


def read_evaluations(path: Path) -> Evaluations:
    """metrics.csv -> its evaluation rows (split other than "train"). A line that does not read
    as five fields with a numeric step and value is skipped and its number kept (a resumed run
    can leave a cut-short row in the middle); ValueError for a file that is not metrics.csv."""
    lines = _lines(path)
    if not lines or lines[0].split(",")[:5] != HEADER:
        raise ValueError(f"bad header {lines[0][:60] if lines else ''!r}")
    rows, bad, lrs = {}, [], set()
    for i, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        if len(parts) == 5 and parts[2] == "train":
            if parts[3] == "lr":    # a few distinct values: parsed once, at the end
                lrs.add(parts[4])
            continue            # most of the file: the loss logged between evaluations
        try:
            if len(parts) != 5:
                raise ValueError
            step, value = int(float(parts[0])), float(parts[4])
        except ValueError:
            if line.strip():
                bad.append(i)
            continue
        rows.setdefault((step, parts[2]), {})[parts[3]] = value
    lr = [v for v in map(_float, lrs) if v is not None]
    return Evaluations(rows, bad, (min(lr), max(lr)) if lr else None)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def final_sparsity_step(path: Path) -> int | None:
    """The step from which every pruned tensor is at its final target (the target of its last
    row in sparsity.csv, which has every mask update): the largest, over tensors, of the first
    step of the tensor's last unbroken stretch at that target. None when there are no rows."""
    lines = _lines(path)
    if not lines:
        return None
    head = lines[0].split(",")
    try:
        i_step, i_layer, i_target = head.index("step"), head.index("layer"), head.index("target_sparsity")
    except ValueError:
        raise ValueError(f"bad header {lines[0][:60]!r}") from None
    per_layer: dict[str, list[tuple[int, float]]] = {}
    for line in lines[1:]:
        parts = line.split(",")
        try:
            per_layer.setdefault(parts[i_layer], []).append((int(float(parts[i_step])), float(parts[i_target])))
        except (ValueError, IndexError):
            continue
    reached = []
    for updates in per_layer.values():
        updates.sort()
        final = updates[-1][1]
        first = updates[-1][0]
        for step, target in reversed(updates):
            if abs(target - final) > TOL:
                break
            first = step
        reached.append(first)
    return max(reached) if reached else None


def validation_split(splits) -> str | None:
    """The held-out split a run evaluates during training (train/run.py: the first that is not
    test): valid (PTB, translation) or val (vision)."""
    held = [s for s in splits if s not in ("train", "test")]
    for name in ("valid", "val", "validation"):
        if name in held:
            return name
    return sorted(held)[0] if held else None


def frontier_metric(family: str, found) -> str | None:
    """The primary metric of the family as metrics.csv names it (perplexity, top1, bleu); for a
    family the report does not know, the first of those the run measured."""
    if family in FAMILIES:
        return FAMILIES[family]["metrics"][0]
    return next((m for m in ("perplexity", "top1", "bleu") if m in found), None)


def run_curve(run: dict) -> tuple[pd.DataFrame | None, str, Evaluations | None]:
    """(curve, reason, evaluations) of one finished run (a row of collect's frame): the curve has
    step, macs_dense, macs_sparse, quality, split, metric, one row per counted evaluation, or is
    None with the reason in words."""
    folder = Path(run["path"])
    if not (folder / "metrics.csv").is_file():
        return None, "no metrics.csv", None
    ev = read_evaluations(folder / "metrics.csv")
    if not ev.rows:
        return None, "no evaluation rows in metrics.csv", ev
    split = validation_split({s for _, s in ev.rows})
    if split is None:
        return None, "no evaluation on a validation split (test only)", ev
    found = {m for (_, s), r in ev.rows.items() if s == split for m in r}
    metric = frontier_metric(run["family"], found)
    if metric not in found:
        return None, f"no {metric or 'quality metric'} at its {split} evaluations", ev
    if "train_macs" not in found:
        return None, "its evaluation rows have no train_macs (written before the frontier was recorded)", ev
    pts = sorted((step, r) for (step, s), r in ev.rows.items() if s == split and metric in r and "train_macs" in r)
    sparse = run["target_sparsity"] > 0
    if sparse:
        final = final_sparsity_step(folder / "sparsity.csv") if (folder / "sparsity.csv").is_file() else None
        if final is None:
            return None, "no sparsity.csv rows: the step of its final sparsity is unknown", ev
        pts = [(step, r) for step, r in pts if step >= final]
        if not pts:
            return None, f"no evaluation at its final sparsity (reached at step {final})", ev
    fresh = run.get("init", "fresh") == "fresh"
    out = []
    for step, r in pts:
        own, pipe = r["train_macs"], r.get("train_macs_pipeline")
        before = pipe - own if pipe is not None and math.isfinite(pipe) else 0.0 if fresh else math.nan
        kernels = r.get("train_macs_sparse_kernels", own if not sparse else math.nan)
        out.append((step, own + before, kernels + before, r[metric]))
    df = pd.DataFrame(out, columns=["step", "macs_dense", "macs_sparse", "quality"])
    df = df[(df["macs_dense"] > 0) & np.isfinite(df["quality"])]
    if df.empty:
        why = ("the training MACs of the run it started from are unknown (no train_macs_pipeline)"
               if not fresh else "no evaluation with training MACs above 0 and a finite quality")
        return None, why, ev
    return df.assign(split=split, metric=metric).reset_index(drop=True), "", ev


# ---------------------------------------------------------------- comparing
def interpolate(xs, ys, x: float) -> float | None:
    """ys at x, linear in log x between the two measured xs around it (xs ascending, > 0); None
    outside [xs[0], xs[-1]]: the frontier never extrapolates."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
    xs, ys = xs[ok], ys[ok]
    if not len(xs) or not x > 0 or x < xs[0] * (1 - TOL) or x > xs[-1] * (1 + TOL):
        return None
    return float(np.interp(math.log(min(max(x, xs[0]), xs[-1])), np.log(xs), ys))


def _mean_std(values) -> tuple[float, float, int]:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def at_budget(seed_curves: list, axis: str, x: float) -> tuple[float, float, int, str]:
    """A small-dense configuration at training MACs x on an axis: (mean, sample std, seeds, range)
    over the seeds whose measured range holds x, each interpolated in log MACs; range is the
    measured span in words ("1.2T-9.8T"); n 0 when no seed's range holds x. seed_curves: one
    {"macs_dense", "macs_sparse", "quality"} of arrays per seed."""
    vals = [v for c in seed_curves if (v := interpolate(c[f"macs_{axis}"], c["quality"], x)) is not None]
    lo = min(np.nanmin(c[f"macs_{axis}"], initial=math.inf) for c in seed_curves)
    hi = max(np.nanmax(c[f"macs_{axis}"], initial=-math.inf) for c in seed_curves)
    return (*_mean_std(vals), f"{fmt_macs(lo)}-{fmt_macs(hi)}")


def aggregate(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-seed curves of one configuration -> one row per step: n, mean and sample std of the
    quality, mean MACs on each axis."""
    df = pd.concat(curves, ignore_index=True)
    g = df.groupby("step", sort=True)
    out = g[["macs_dense", "macs_sparse"]].mean()
    out["quality"] = g["quality"].mean()
    out["quality_std"] = g["quality"].std(ddof=1)
    out["n"] = g["quality"].count()
    return out.reset_index()


def arm(p) -> str:
    """small-dense, or how a sparse configuration got its masks: gradual (the paper's), oneshot,
    rigl / set (dynamic sparse training, sparse from step 0): summary.json's `pruning`."""
    return "small-dense" if p["target_sparsity"] == 0 else str(p["pruning"] or "gradual")


def label(p) -> str:
    """"hidden=384 @ 90%" (+ N:M pattern, control, variant); a dense model its base, and for an
    equal-compute twin whose compute it was given."""
    if p["target_sparsity"] == 0:
        s = str(p["base"]) + (f" ({budget_words(p)})" if budget_words(p) else "")
    else:
        s = f"{p['base']} @ {fmt_sparsity(p['target_sparsity'])}"
        if p["pattern"] not in ("none", "unstructured"):
            s += f" ({p['pattern']})"
        if p.get("control"):
            s += f" ({p['control']})"
    return s + (f" [{p['variant']}]" if p.get("variant") else "")


# ---------------------------------------------------------------- the crossover in words
def _tag(verdicts: list[str], leader: str) -> str:
    """How sure a stretch of budgets led by one side is: "(p < 0.05)" when Welch's test says so
    at every budget of it, "(p < 0.05 at k of n budgets)", "(within noise)", "(1 seed: no test)"."""
    sure = sum(v == ("wins" if leader == "large-sparse" else "loses") for v in verdicts)
    if sure == len(verdicts):
        return " (p < 0.05)"
    if sure:
        return f" (p < 0.05 at {sure} of {len(verdicts)} budgets)"
    if all(v == NA_ONE_SEED for v in verdicts):
        return " (1 seed: no test)"
    return " (within noise)"


def crossover_words(rows: pd.DataFrame, conv: str) -> str:
    """Who leads where, in budget order, for one large-sparse configuration on one convention:
    "small-dense leads up to 4.1T training MACs (p < 0.05); large-sparse leads from 9.8T (p <
    0.05)", or "small-dense leads across the measured range (up to 14T) (within noise)"; budgets
    outside the small-dense model's measured range are counted, never compared."""
    c = CONVENTIONS[conv]
    rows = rows.sort_values("step")
    x, adv, verdict = rows[f"training MACs ({c})"], rows[f"advantage ({c})"], rows[f"verdict ({c})"]
    inside = ~verdict.isin([OUTSIDE, UNKNOWN])
    outside = int((verdict == OUTSIDE).sum())
    span = rows[f"small-dense measured ({c})"].iloc[0] if len(rows) else ""
    tail = (f"; {outside} budget(s) outside the small-dense model's measured range ({span})" if outside else "")
    if not inside.any():
        return (f"training MACs on {c} not recorded" if not outside else
                f"no budget inside the small-dense model's measured range ({span})")
    segs = []   # [leader, first x, last x, verdicts]
    for xi, a, v in zip(x[inside], adv[inside], verdict[inside]):
        lead = "tie" if abs(a) < 1e-12 else "large-sparse" if a > 0 else "small-dense"
        if segs and segs[-1][0] == lead:
            segs[-1][2] = xi
            segs[-1][3].append(v)
        else:
            segs.append([lead, xi, xi, [v]])
    if len(segs) == 1:
        lead, lo, hi, vs = segs[0]
        who = "neither side leads" if lead == "tie" else f"{lead} leads"
        sure = _tag(vs, lead) if lead != "tie" else ""
        return f"{who} across the measured range (up to {fmt_macs(hi)}){sure}{tail}"
    words = []
    for i, (lead, lo, hi, vs) in enumerate(segs):
        who = "tied" if lead == "tie" else f"{lead} leads"
        where = (f"up to {fmt_macs(hi)} training MACs" if i == 0 else
                 f"from {fmt_macs(lo)}" if i == len(segs) - 1 else
                 f"from {fmt_macs(lo)} to {fmt_macs(hi)}" if lo != hi else f"at {fmt_macs(lo)}")
        words.append(f"{who} {where}{_tag(vs, lead) if lead != 'tie' else ''}")
    return "; ".join(words) + tail


# ---------------------------------------------------------------- the frontier of a report
def read_curves(runs: pd.DataFrame) -> tuple[dict, list, list, list]:
    """(curves by point_id: one frame per seed, runs without a curve with the reason, unreadable
    files and lines, runs whose learning rate changed) for the counted runs of points.group."""
    per_point, no_curve, skipped, varying = {}, [], [], []
    counted = runs[runs["duplicate_of"] == ""] if "duplicate_of" in runs else runs
    for r in counted.to_dict("records"):
        try:
            curve, why, ev = run_curve(r)
        except (OSError, ValueError) as e:
            curve, why, ev = None, f"unreadable: {(str(e).splitlines() or [''])[0][:160]}", None
            skipped.append(dict(file=f"{r['run']}/metrics.csv", reason=why))
        if ev is not None and ev.malformed:
            skipped.append(dict(file=f"{r['run']}/metrics.csv",
                                reason=f"{len(ev.malformed)} unreadable line(s) left out of the frontier "
                                       f"(line {', '.join(map(str, ev.malformed[:5]))})"))
        if curve is None:
            no_curve.append(dict(run=r["run"], reason=why))
            continue
        if ev.lr and ev.lr[1] > ev.lr[0] * (1 + TOL):
            varying.append(r["run"])
        per_point.setdefault(r["point_id"], []).append(curve)
    return per_point, no_curve, skipped, sorted(varying)


def build(runs: pd.DataFrame, points: pd.DataFrame) -> Frontier:
    """runs, points: points.group's frames. Reads each counted run's metrics.csv (and a sparse
    run's sparsity.csv), and compares every large-sparse configuration with the small-dense
    model of its NNZ (the nearest in NNZ among those with a curve) at each of its evaluated
    budgets, on both MAC conventions."""
    per_point, no_curve, skipped, varying = read_curves(runs)
    have = points[points["point_id"].isin(per_point)]
    rows, show, curves, words = [], [], [], []
    for key, grp in have.groupby(GROUP, sort=True):
        where = dict(zip(GROUP, key))
        dense = grp[(grp["target_sparsity"] == 0) & ~is_twin(grp)]
        klass = {p: p for p in grp["point_id"]}     # NNZ class: the id of its small-dense point
        for c in grp[grp["target_sparsity"] > 0].to_dict("records"):
            d = _nearest(dense[dense["base"] != c["base"]], "params_nnz", c["params_nnz"])
            klass[c["point_id"]] = c["point_id"] if d is None else d["point_id"]
            r_c, s_c = _compare(c, d, per_point)
            rows += r_c
            show += s_c
            words += _words(where, c, pd.DataFrame(r_c))
        nnz_of = grp.set_index("point_id")["params_nnz"]
        for p in grp.to_dict("records"):
            first = per_point[p["point_id"]][0]
            curves.append(aggregate(per_point[p["point_id"]]).assign(
                **where, point_id=p["point_id"], configuration=label(p), arm=arm(p), params_nnz=p["params_nnz"],
                nnz_class=klass[p["point_id"]], nnz_class_nnz=nnz_of[klass[p["point_id"]]],
                metric=first["metric"].iloc[0], split=first["split"].iloc[0], runs=p["runs"]))
    cdf = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    for conv in CONVENTIONS:
        cdf[f"pareto_{conv}"] = pareto(cdf, conv) if len(cdf) else pd.Series(dtype=bool)
    table = Table("frontier", "The frontier: each large-sparse configuration at each evaluated budget against the "
                  "small-dense model of its NNZ at equal training MACs (interpolated in log MACs, never "
                  "extrapolated); advantage, Welch's p over seeds, verdict; on dense and on sparse kernels",
                  pd.DataFrame(rows, columns=ROW_COLUMNS), pd.DataFrame(show),
                  sorted(r for s in have["runs"] for r in str(s).split(";") if r))
    return Frontier(table, cdf[CURVE_COLUMNS + ["pareto_dense", "pareto_sparse"]],
                    pd.DataFrame(words, columns=WORD_COLUMNS), pd.DataFrame(no_curve, columns=["run", "reason"]),
                    varying, skipped)


def _words(where: dict, c: dict, rows: pd.DataFrame) -> list[dict]:
    """The crossover records of large-sparse configuration c: one per convention, or one saying
    that no small-dense model of another size has a curve."""
    who = {**where, "large-sparse": label(c), "arm": arm(c)}
    if rows.empty:
        return [{**who, "NNZ class": f"≈{fmt_nnz(c['params_nnz'])} nonzeros", "small-dense": "", "convention": "",
                 "crossover": "no small-dense model of another size with a curve"}]
    return [{**who, "NNZ class": rows["NNZ class"].iloc[0], "small-dense": rows["small-dense"].iloc[0],
             "convention": name, "crossover": crossover_words(rows, conv)} for conv, name in CONVENTIONS.items()]


CURVE_COLUMNS = ["family", "dataset", "synthetic", "direction", "point_id", "configuration", "arm", "params_nnz",
                 "nnz_class", "nnz_class_nnz", "metric", "split", "step", "n", "macs_dense", "macs_sparse",
                 "quality", "quality_std", "runs"]
WORD_COLUMNS = [*GROUP, "NNZ class", "large-sparse", "arm", "small-dense", "convention", "crossover"]
ROW_COLUMNS = ["family", "dataset", "synthetic", "direction", "metric", "split", "NNZ class", "large-sparse", "arm",
               "sparse NNZ", "step", "n", "sparse quality", "sparse quality std", "small-dense", "small-dense NNZ",
               *[f"{k} ({c})" for c in CONVENTIONS.values() for k in (
                   "training MACs", "small-dense measured", "small-dense quality", "small-dense quality std",
                   "small-dense n", "advantage", "SE", "p", "verdict")], "runs"]


def _compare(c: dict, d, per_point: dict) -> tuple[list, list]:
    """The frontier rows of one large-sparse configuration c against small-dense point d (None:
    no rows; the crossover says why)."""
    if d is None:
        return [], []
    sparse = aggregate(per_point[c["point_id"]])
    m, split = per_point[d["point_id"]][0]["metric"].iloc[0], per_point[d["point_id"]][0]["split"].iloc[0]
    dense_seeds = [{k: seed[k].to_numpy(dtype=float) for k in ("macs_dense", "macs_sparse", "quality")}
                   for seed in per_point[d["point_id"]]]
    klass = f"≈{fmt_nnz(d['params_nnz'])} nonzeros"
    rows, show = [], []
    for s in sparse.to_dict("records"):
        r = {**{k: c[k] for k in GROUP}, "metric": m, "split": split, "NNZ class": klass,
             "large-sparse": label(c), "arm": arm(c), "sparse NNZ": c["params_nnz"], "step": int(s["step"]),
             "n": int(s["n"]), "sparse quality": s["quality"], "sparse quality std": s["quality_std"],
             "small-dense": label(d), "small-dense NNZ": d["params_nnz"]}
        v = {"family": c["family"], "dataset": fmt_dataset(c, True), "NNZ class": klass,
             "large-sparse": f"{label(c)} ({arm(c)})", "step": int(s["step"]),
             "quality": f"{split} {SHORT.get(m, m)} {fmt_pm(s['quality'], s['quality_std'], s['n'])}",
             "small-dense": label(d)}
        for conv, cname in CONVENTIONS.items():
            x = s[f"macs_{conv}"]
            mean, std, n, span = at_budget(dense_seeds, conv, x) if x == x else (math.nan, math.nan, 0, "")
            adv = better(m, s["quality"], mean) if n else math.nan
            se, p, verdict = compare(adv, s["quality_std"], s["n"], std, n) if n else \
                (math.nan, math.nan, OUTSIDE if x == x else UNKNOWN)
            r.update({f"training MACs ({cname})": x, f"small-dense measured ({cname})": span,
                      f"small-dense quality ({cname})": mean, f"small-dense quality std ({cname})": std,
                      f"small-dense n ({cname})": n, f"advantage ({cname})": adv, f"SE ({cname})": se,
                      f"p ({cname})": p, f"verdict ({cname})": verdict})
            tag = "" if conv == "dense" else " (sparse kernels)"
            v[f"training MACs{tag}"] = fmt_macs(x)
            v[f"small-dense at equal MACs{tag}"] = fmt_pm(mean, std, n) if n else \
                f"{OUTSIDE} ({span})" if verdict == OUTSIDE else UNKNOWN
            v[f"advantage{tag}"] = "" if not n else f"{adv:+.2f}"
            v[f"p{tag}"] = NA_ONE_SEED if verdict == NA_ONE_SEED else fmt_p(p)
            v[f"verdict{tag}"] = verdict
        r["runs"] = c["runs"]
        rows.append(r)
        show.append(v)
    return rows, show


def pareto(curves: pd.DataFrame, conv: str) -> pd.Series:
    """Whether each (configuration, step) is on its group's Pareto front on an axis: no other
    evaluated budget of the group reaches a better mean quality at no more training MACs."""
    out = pd.Series(False, index=curves.index)
    x = f"macs_{conv}"
    for _, g in curves[curves[x].notna()].groupby(GROUP, sort=False):
        lower = g["metric"].iloc[0] in LOWER_IS_BETTER
        q = g["quality"] if lower else -g["quality"]
        best = math.inf
        for i in g.assign(_q=q).sort_values([x, "_q"], kind="stable").index:
            if q[i] < best:
                out[i], best = True, q[i]
    return out


# ---------------------------------------------------------------- the figure
LINESTYLE = {"small-dense": "-", "rigl": ":", "set": ":"}     # every other sparse arm: dashed


def draw(fr: Frontier, out_dir: Path) -> list:
    """figures/frontier_<family>_<dataset>[_<direction>][_synthetic].{png,pdf}: two panels,
    quality vs training MACs (log x) on dense kernels and on sparse kernels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .figures import FigureInfo, _figure, _save

    infos = []
    for (fam, ds, syn, dr), g in fr.curves.groupby(GROUP, sort=True):
        m, split = g["metric"].iloc[0], g["split"].iloc[0]
        classes = sorted(g["nnz_class"].unique(), key=lambda k: g.loc[g["nnz_class"] == k, "nnz_class_nnz"].iloc[0])
        colour = {k: f"C{i % 10}" for i, k in enumerate(classes)}
        fig = _figure(12.4, 4.6, 2, wspace=1.0)
        for i, conv in enumerate(CONVENTIONS):
            ax = fig.add_subplot(1, 2, i + 1)
            for pid, c in g.groupby("point_id", sort=False):
                c = c[c[f"macs_{conv}"].notna()]
                if c.empty:
                    continue
                a = c["arm"].iloc[0]
                ax.errorbar(c[f"macs_{conv}"], c["quality"], yerr=np.nan_to_num(c["quality_std"].to_numpy(float)),
                            color=colour[c["nnz_class"].iloc[0]], ls=LINESTYLE.get(a, "--"),
                            marker="o" if a == "small-dense" else "s", ms=3.5, capsize=2,
                            label=f"{c['configuration'].iloc[0]} ({a})")
            front = g[g[f"pareto_{conv}"]].sort_values(f"macs_{conv}")
            if len(front):
                ax.plot(front[f"macs_{conv}"], front["quality"], color="k", lw=5, alpha=0.15,
                        drawstyle="steps-post", label="Pareto front")
                ax.plot(front[f"macs_{conv}"], front["quality"], ls="none", marker="o", ms=9, mfc="none",
                        mec="k", mew=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_macs(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"training MACs, {CONVENTIONS[conv]}" + (", whole pipeline" if conv == "dense" else "")
                          + " (log scale)")
            arrow = "lower is better" if m in LOWER_IS_BETTER else "higher is better"
            ax.set_ylabel(f"{split} {SHORT.get(m, m)} ({arrow})")
            ax.set_title(f"({'ab'[i]}) on {CONVENTIONS[conv]}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        where = f"{ds} {dr.upper()}" if dr else ds
        where = f"{where}, SYNTHETIC DATA" if syn else where
        title = FAMILIES.get(fam, {}).get("title", fam)
        fig.suptitle(f"{title}: quality vs training compute ({where})", fontsize=10)
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "-", f"frontier_{fam}_{ds}" + (f"_{dr}" if dr else "")) + \
            ("_synthetic" if syn else "")
        cap = (f"{split} {SHORT.get(m, m)} against cumulative training MACs (log x) for {title} on {where}: one "
               "curve per configuration, its evaluations at its final sparsity, each point the mean over seeds "
               "with error bars of ± one sample standard deviation where there are 2 or more; a colour per NNZ "
               "class (a small-dense model and the large-sparse configurations of its NNZ), small-dense solid, "
               "gradually pruned dashed, dynamic sparse training (rigl, set) dotted; the grey band and ringed "
               "points are the Pareto front. (a) dense kernels, including the run a model started from; (b) "
               "sparse kernels (each step at its masks' sparsity). Under a constant learning rate a point at "
               "budget B is what a run of budget B gives.")
        runs = sorted({r for s in g["runs"] for r in str(s).split(";") if r})
        infos.append(FigureInfo(name, f"{title}: quality vs training compute, the frontier ({where})", cap,
                                _save(fig, out_dir, name), runs, bool(syn)))
    return infos


def crossover_lines(fr: Frontier) -> list[str]:
    """The crossover sentences, one a line: "≈1M nonzeros, hidden=384 @ 90% (gradual) vs hidden=48,
    dense kernels: small-dense leads up to 4.1T training MACs; large-sparse leads from 9.8T (p < 0.05)"."""
    out = []
    for w in fr.crossovers.to_dict("records"):
        where = f"{w['dataset']} {w['direction']}".strip() + (" (synthetic)" if w["synthetic"] else "")
        versus = f" vs {w['small-dense']}" if w["small-dense"] else ""
        conv = f", {w['convention']}" if w["convention"] else ""
        out.append(f"{w['family']} {where}: {w['NNZ class']}, {w['large-sparse']} ({w['arm']}){versus}{conv}: "
                   f"{w['crossover']}")
    return out
