"""Replicate runs -> study points (mean and sample std over seeds), and the noise rule.

`prune-run -m ... seed=0,1,2` makes one run folder per seed. A *point* is what those runs share:
everything a run computes except its seed. Runs are grouped on KEYS: family, model, dataset,
translation direction, synthetic, base model (width / size / hidden / units), target sparsity,
N:M pattern, pruning, scheme, the controls of issue 18 (criterion, own or fixed masks, init:
fresh / trained / rewind step K), and the fingerprint of the run's composed config without its
seed and identity-free keys (collect.config_key). A fixed-mask run's source differs per seed
(its seed's magnitude run), so it is not a key: the point lists its runs' sources in
`mask_sources`. So two runs that differ in anything but the seed (a
learning rate, a step count) are two points even where every column a table shows agrees; such
points get a `variant` naming the config keys that tell them apart.

The same (point, seed) can be found twice: `prune-run -m experiment=E` runs seed 0 (the default)
in a folder without `seed=` in its name, and `... seed=0,1,2` runs it again in `...,seed=0`.
It counts once: the run whose run_id names its seed is used (else the first by path); the other
is listed under `duplicates` (points.csv) and `duplicate_of` (runs.csv), and left out.

Std is the sample standard deviation (ddof 1), and NaN (an empty cell) for a single seed: one run
says nothing about the spread, and 0 would claim there is none.

This is the report's one grouping: tables, figures, points.csv and the study table printed after
a sweep all read the frame `group` returns.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .collect import MACS, NOT_IDENTITY, QUALITY

KEYS = ["family", "model", "dataset", "direction", "synthetic", "base", "skey", "pattern",
        "pruning", "scheme", "criterion", "masks", "init", "config_key"]
MEANS = ["target_sparsity", "achieved_sparsity", "params_total", "params_nnz", "bytes_dense",
         "bytes_bitmask", "bytes_csr", "bytes_csr_exact", "model_size_mb", "base_order",
         "wall_time_s", "steps", *QUALITY, *MACS, "budget_train_macs", "budget_stretch"]
STDS = ["params_nnz", "model_size_mb", *QUALITY]
FIRST = ["bleu_ref", "size", "width", "hidden", "units", "macs_unit", "budget_match", "budget_convention",
         "partner_key"]
ORDER = ["family", "dataset", "synthetic", "direction", "base_order", "base", "target_sparsity",
         "pattern", "pruning", "scheme", "criterion", "masks", "init", "variant"]
NA_ONE_SEED = "n/a (1 seed)"


def _names_seed(run_id: str, seed) -> bool:
    return seed is not None and f"seed={seed}" in str(run_id).split(",")


def _point_id(key: tuple) -> str:
    return hashlib.sha1("|".join(map(str, key)).encode()).hexdigest()[:10]


def group(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, runs): one row per point with n_seeds, means (plain metric names), `<col>_std`,
    `<metric>_n` (seeds that measured it), seeds, runs, duplicates, variant; and the runs with
    their `point_id` and `duplicate_of` (empty for the run that is counted)."""
    cols = [*KEYS, "point_id", "n_seeds", "seeds", "runs", "mask_sources", "duplicates", "variant", "control", *MEANS,
            *[f"{c}_std" for c in STDS], *[f"{m}_n" for m in QUALITY], *FIRST]
    if runs.empty:
        return pd.DataFrame(columns=cols), runs.assign(point_id="", duplicate_of="")
    df = runs.assign(skey=runs["target_sparsity"].round(9),
                     seed_key=runs["seed"].map(lambda s: "" if s is None or s != s else str(s)),
                     _named=[_names_seed(r, s) for r, s in zip(runs["run_id"], runs["seed"])])
    df = df.sort_values(["_named", "run"], ascending=[False, True], kind="stable")
    kept_run = df.groupby([*KEYS, "seed_key"], sort=False, dropna=False)["run"].transform("first")
    df["duplicate_of"] = np.where(kept_run == df["run"], "", kept_run)
    df["point_id"] = [_point_id(k) for k in df[KEYS].itertuples(index=False, name=None)]
    kept, dups = df[df["duplicate_of"] == ""], df[df["duplicate_of"] != ""]

    g = kept.groupby(KEYS, sort=False, dropna=False)
    out = g[MEANS].mean()
    out = out.join(g[STDS].std(ddof=1).add_suffix("_std"))
    out = out.join(g[QUALITY].count().add_suffix("_n"))
    out["n_seeds"] = g.size()
    out["seeds"] = g["seed_key"].agg(lambda s: ";".join(sorted(s, key=_seed_order)))
    out["runs"] = g["run"].agg(lambda s: ";".join(sorted(s)))
    out["mask_sources"] = g["mask_source"].agg(lambda s: ";".join(sorted(x for x in s if x)))
    out = out.join(g[["point_id", *FIRST]].first())
    dup = dups.groupby("point_id")["run"].agg(lambda s: ";".join(sorted(s))).to_dict()
    out = out.reset_index()
    out["duplicates"] = [dup.get(i, "") for i in out["point_id"]]
    out["variant"] = _variants(out, kept)
    out["control"] = [control(r) for r in out[["masks", "init", "criterion"]].to_dict("records")]
    out = out.sort_values(ORDER, kind="stable").reset_index(drop=True)
    back = df.drop(columns=["skey", "seed_key", "_named"]).loc[runs.index]
    return out[cols], back


def point_ids(runs: pd.DataFrame) -> pd.Series:
    """The point_id each run has, or would have: a diverged run (collect.py) is named by the
    point it was to be a seed of, though the point's means leave it out."""
    if runs.empty:
        return pd.Series([], index=runs.index, dtype=object)
    df = runs.assign(skey=runs["target_sparsity"].round(9))
    return pd.Series([_point_id(k) for k in df[KEYS].itertuples(index=False, name=None)], index=runs.index,
                     dtype=object)


def runs_frame(runs: pd.DataFrame, diverged: pd.DataFrame) -> pd.DataFrame:
    """runs.csv: every run with a summary and its `status`: the finished ones (group's runs,
    with `point_id` and `duplicate_of`), then the diverged ones with the point they belong to
    and `diverged_step`, `diverged_loss` (empty: not finite), `diverged_reason`."""
    out = runs
    if diverged is not None and len(diverged):
        div = diverged.assign(point_id=point_ids(diverged), duplicate_of="",
                              diverged_step=diverged["diverged_step"].astype("Int64"))
        out = pd.concat([runs, div], ignore_index=True) if len(runs) else div
    first = ["run", "status"]
    return out[first + [c for c in out.columns if c not in first and c != "path"]]


def _seed_order(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


# ---------------------------------------------------------------- variants
def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        elif key not in NOT_IDENTITY:
            out[key] = v
    return out


def _config_of(run_path: str) -> dict:
    """The run's config, flat (only for points that need telling apart: parsing is slow)."""
    import yaml
    f = Path(run_path) / ".hydra" / "config.yaml"
    try:
        return _flat(yaml.safe_load(f.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    try:
        s = json.loads((Path(run_path) / "summary.json").read_text(encoding="utf-8"))
        return _flat({"model": json.loads(s.get("model_config") or "{}")})
    except (OSError, ValueError, AttributeError):
        return {}


def _variants(points: pd.DataFrame, kept: pd.DataFrame) -> pd.Series:
    """For points that agree on every key but the config fingerprint: the config keys whose
    values differ among them ("optim.lr=0.5, trainer.max_steps=800"); "" elsewhere."""
    out = pd.Series("", index=points.index, dtype=object)
    # an equal-compute twin is told apart by its budget (tables and the study table say so in words)
    shown = [k for k in KEYS if k != "config_key"] + ["budget_match", "budget_convention"]
    clash = points[points.duplicated(shown, keep=False)]
    if clash.empty:
        return out
    path = kept.drop_duplicates("point_id").set_index("point_id")["path"]
    for _, grp in clash.groupby(shown, sort=False, dropna=False):
        confs = {i: _config_of(path[pid]) for i, pid in zip(grp.index, grp["point_id"])}
        keys = sorted(set().union(*confs.values()))
        differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str)
                                          for c in confs.values()}) > 1]
        for i, c in confs.items():
            label = ", ".join(f"{k}={c.get(k)}" for k in differ[:4]) + (" ..." if len(differ) > 4 else "")
            out[i] = label or f"config {points.at[i, 'config_key'] or 'unknown'}"
    return out


# ---------------------------------------------------------------- points.csv
def to_csv_frame(points: pd.DataFrame, diverged: pd.DataFrame | None = None) -> pd.DataFrame:
    """points.csv: identity columns, n_seeds, then `<metric>_mean` / `<metric>_std` for every
    quality metric and for NNZ and model size (std empty for a single seed), then the runs, and
    the point's diverged runs (`n_diverged`, `diverged_runs`: seeds its means lack)."""
    ident = ["point_id", "family", "model", "dataset", "direction", "synthetic", "size", "width",
             "hidden", "units", "base", "target_sparsity", "pattern", "pruning", "scheme",
             "criterion", "masks", "init", "control", "variant", "config_key", "n_seeds", "seeds"]
    out = points[ident].copy()
    for c in [*QUALITY, "params_nnz", "model_size_mb"]:
        out[f"{c}_mean"] = points[c]
        out[f"{c}_std"] = points[f"{c}_std"]
    for c in ("achieved_sparsity", "params_total", "bytes_dense", "bytes_bitmask", "bytes_csr",
              "wall_time_s", *MACS, "budget_train_macs", "budget_stretch"):
        out[f"{c}_mean"] = points[c]
    for c in ("macs_unit", "budget_match", "budget_convention"):
        out[c] = points[c]
    out["runs"] = points["runs"]
    out["mask_sources"] = points["mask_sources"]
    out["duplicates"] = points["duplicates"]
    lost = {}
    if diverged is not None and len(diverged):
        for pid, run in zip(point_ids(diverged), diverged["run"]):
            lost.setdefault(pid, []).append(run)
    out["n_diverged"] = [len(lost.get(i, [])) for i in points["point_id"]]
    out["diverged_runs"] = [";".join(sorted(lost.get(i, []))) for i in points["point_id"]]
    return out


def budget_words(p) -> str:
    """An equal-compute twin's budget in words, "" for any other point: "training MACs of
    hidden 384 @ 90%" (+ ", sparse_kernels" when that is the convention)."""
    match = p.get("budget_match")
    if not isinstance(match, str) or not match:
        return ""
    try:
        flat = _flat(json.loads(match))
    except ValueError:
        return f"training MACs of {match}"
    sparsity = flat.pop("sparsity", None)
    words = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in flat.items())
    words += f" @ {100 * float(sparsity):g}%" if sparsity else ""
    conv = "" if p.get("budget_convention") in (None, "", "dense_kernels") else f", {p['budget_convention']}"
    return f"training MACs of {words}{conv}"


def control(p) -> str:
    """A sparse point's control (issue 18) in words, "" for one pruned the paper's way (its own
    magnitude masks, from scratch or from a trained model): "random", "fixed masks, fresh init",
    "fixed masks, rewind step 50", "fixed masks, trained init"."""
    if p["masks"] == "fixed":
        init = str(p["init"])
        return "fixed masks, " + (init if init.startswith("rewind") else f"{init} init")
    return "random" if p["criterion"] == "random" else ""


# ---------------------------------------------------------------- the noise rule
ALPHA = 0.05   # Welch's t-test at 95%


def compare(advantage: float, std_a: float, n_a: int, std_b: float, n_b: int) -> tuple[float, float, str]:
    """(standard error of a difference of two means, Welch's two-sided p, verdict for side a).

    SE = sqrt(s_a^2 / n_a + s_b^2 / n_b) with sample stds; p is Welch's t-test of the two means
    (t = advantage / SE with the Welch-Satterthwaite degrees of freedom, scipy's
    ttest_ind_from_stats(equal_var=False)). `advantage` is how much a beats b, already signed by
    the metric (positive: a is better, whatever the metric's direction). Verdict: "wins" /
    "loses" when p < 0.05, else "within noise"; with one seed on either side there is no SE:
    (NaN, NaN, "n/a (1 seed)"). With 2-3 seeds a side the test has few degrees of freedom, so it
    asks for a large difference before it calls one, unlike the old "> 2 SE" rule of thumb.
    Identical seeds on both sides (SE 0): any difference is a verdict (p = 0), none is not (p = 1).
    """
    if advantage is None or not math.isfinite(advantage):
        return math.nan, math.nan, ""
    if min(_int(n_a), _int(n_b)) < 2:
        return math.nan, math.nan, NA_ONE_SEED
    se = math.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)
    if se == 0:
        p = 0.0 if advantage != 0 else 1.0
    else:
        from scipy.stats import ttest_ind_from_stats   # on first use: the report loads fast without it

        p = float(ttest_ind_from_stats(advantage, std_a, n_a, 0.0, std_b, n_b, equal_var=False).pvalue)
    if p < ALPHA:
        return se, p, "wins" if advantage > 0 else "loses"
    return se, p, "within noise"


def _int(n) -> int:
    try:
        return 0 if n is None or n != n else int(n)
    except (TypeError, ValueError):
        return 0
