"""Collect run folders under <results>/runs into one DataFrame (one row per finished run).

Only summary.json is read here (plain json); metrics.csv is touched only for its last line when
a run is incomplete. Nothing raises on bad input: broken files land in ``skipped``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# What the report knows about each family: the column naming its base model, the dataset the
# paper used (only runs on it are compared with the paper), its quality metrics (primary first).
FAMILIES = {
    "inception_v3": dict(title="InceptionV3", base_col="model", paper_dataset="imagenet",
                         metrics=["top1", "top5"], paper_table=1),
    "mobilenet": dict(title="MobileNet", base_col="width", paper_dataset="imagenet",
                      metrics=["top1", "top5"], paper_table=2),
    "ptb_lstm": dict(title="PTB LSTM language model", base_col="size", paper_dataset="ptb",
                     metrics=["perplexity", "val_perplexity"], paper_table=3),
    "gnmt": dict(title="GNMT", base_col="units", paper_dataset="wmt16",
                 metrics=["bleu"], paper_table=4),
}
QUALITY = ["perplexity", "val_perplexity", "top1", "top5", "bleu"]
LOWER_IS_BETTER = {"perplexity", "val_perplexity", "loss"}
METRIC_LABEL = {"perplexity": "perplexity", "val_perplexity": "valid perplexity",
                "top1": "top-1 (%)", "top5": "top-5 (%)", "bleu": "BLEU"}
LSTM_SIZES = {"small": 200, "medium": 650, "large": 1500}
RUN_MARKERS = {"summary.json", "metrics.csv", "sparsity.csv", "checkpoint.pt", "run.log", ".hydra"}
NUMERIC = ["target_sparsity", "achieved_sparsity", "params_total", "params_nnz", "bytes_dense",
           "bytes_bitmask", "bytes_csr", "bytes_csr_exact", "model_size_mb", "steps", "epochs",
           "wall_time_s", "lr", "hidden", "width", "units", *QUALITY]
COLUMNS = ["run", "exp_name", "run_id", "family", "model", "dataset", "synthetic", "base",
           "base_order", "pruning", "scheme", "seed", "bleu_ref", *NUMERIC, "path"]


@dataclass
class Collection:
    runs: pd.DataFrame                                   # one row per finished run
    incomplete: list = field(default_factory=list)       # {"run", "last_step", "reason"}
    skipped: list = field(default_factory=list)          # {"file", "reason"}
    runs_dir: Path | None = None


def primary_metric(family: str, row=None) -> str:
    """The quality that decides who wins: perplexity (LM), top1 (vision), bleu (translation);
    for a run that only measured its validation split (a quick study), that split's."""
    if family in FAMILIES:
        metrics = FAMILIES[family]["metrics"]
        if row is not None:
            for m in metrics:
                try:
                    if _num(row.get(m)) is not None:
                        return m
                except (TypeError, ValueError):
                    continue
        return metrics[0]
    for m in ("perplexity", "top1", "bleu"):
        if row is not None and _num(row.get(m)) is not None:
            return m
    return "perplexity"


def metrics_for(family: str, df: pd.DataFrame) -> list[str]:
    """The quality columns a family's table and figure show (only those with values)."""
    cand = FAMILIES[family]["metrics"] if family in FAMILIES else ["perplexity", "top1", "top5", "bleu"]
    have = [m for m in cand if m in df and df[m].notna().any()]
    return have or cand[:1]


def _num(x):
    """float(x) for real numbers, None for null / missing; ValueError for anything else."""
    if x is None:
        return None
    if isinstance(x, bool):
        raise ValueError(f"{x!r} is not a number")
    v = float(x)
    return None if math.isnan(v) else v


def base_of(s: dict) -> tuple[str, float]:
    """Base-model label (size / width / units) and a number that sorts it small to large."""
    fam = s.get("family")
    size, hidden, width, units = s.get("size"), s.get("hidden"), s.get("width"), s.get("units")
    if fam == "ptb_lstm" or (fam not in FAMILIES and size):
        label = str(size).lower() if size else None
        # A size names the paper's model only at its own width: model.size=small with
        # model.hidden=48 is Zaremba's small recipe on another model, labelled by its width.
        if label and (hidden is None or LSTM_SIZES.get(label) == int(hidden)):
            return label, float(hidden or LSTM_SIZES.get(label, 0))
        if hidden is not None:
            return f"hidden={int(hidden)}", float(hidden)
    if fam == "inception_v3":
        if width is None or float(width) == 1.0:
            return "standard", 1.0
        return str(float(width)), float(width)
    if width is not None and fam != "gnmt":
        return str(float(width)), float(width)
    if units is not None:
        return str(int(units)), float(units)
    if hidden is not None:
        return f"hidden={int(hidden)}", float(hidden)
    return "default", 0.0


def _bleu_ref(s: dict) -> str:
    """Which paper BLEU column a GNMT run compares with (EN-DE unless it says German->English)."""
    d = str(s.get("direction") or f"{s.get('src_lang', '')}-{s.get('tgt_lang', '')}").lower()
    return "bleu_de_en" if d.replace("_", "-").startswith("de-en") else "bleu_en_de"


def normalise(s: dict, rel: str, path: str) -> dict:
    """One summary.json -> one flat row; raises ValueError naming the bad field."""
    if not isinstance(s, dict):
        raise ValueError("not a JSON object")
    for key in ("family", "params_nnz", "target_sparsity"):
        if s.get(key) is None:
            raise ValueError(f"missing field {key!r}")
    row = {}
    for key in NUMERIC:
        try:
            row[key] = _num(s.get(key))
        except (TypeError, ValueError):
            raise ValueError(f"field {key!r} is not a number: {s.get(key)!r}") from None
    row = {k: (float("nan") if v is None else v) for k, v in row.items()}
    fam = str(s["family"])
    dataset = str(s.get("dataset") or "unknown").lower()
    synthetic = s.get("synthetic")
    if synthetic is None:
        synthetic = dataset.startswith(("fake", "synthetic", "random"))
    base, order = base_of(s)
    dense = row["target_sparsity"] == 0
    parts = rel.split("/")
    row.update(
        run=rel, exp_name=str(s.get("exp_name") or (parts[0] if len(parts) > 1 else "")),
        run_id=str(s.get("run_id") or parts[-1]), family=fam, model=str(s.get("model") or fam),
        dataset=dataset, synthetic=bool(synthetic), base=base, base_order=order,
        pruning="none" if dense else str(s.get("pruning") or "gradual"),
        scheme="none" if dense else str(s.get("scheme") or "uniform"),
        seed=s.get("seed"), bleu_ref=_bleu_ref(s), path=path,
    )
    return row


def last_step(metrics: Path) -> int | None:
    """Step of the last complete row of metrics.csv (reads only the file's tail)."""
    with open(metrics, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        text = f.read().decode("utf-8", "replace")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # a row still being written
    for line in reversed(lines):
        head = line.split(",", 1)[0].strip()
        try:
            return int(float(head))
        except ValueError:
            continue
    return None


def find_run_dirs(runs_dir: Path):
    """Yield (dir, names) for every folder that looks like a run; runs are not descended into."""
    for root, dirs, files in os.walk(runs_dir):
        names = set(files) | set(dirs)
        if names & RUN_MARKERS:
            dirs[:] = []
            yield root, names
        else:
            dirs.sort()


def collect(results_dir: str | Path) -> Collection:
    runs_dir = Path(results_dir) / "runs"
    out = Collection(runs=pd.DataFrame(columns=COLUMNS), runs_dir=runs_dir)
    if not runs_dir.is_dir():
        return out
    rows = []
    for root, names in find_run_dirs(runs_dir):
        rel = Path(root).relative_to(runs_dir).as_posix()
        if "summary.json" in names:
            f = os.path.join(root, "summary.json")
            try:
                with open(f, encoding="utf-8") as fh:
                    s = json.load(fh)
                if isinstance(s, dict) and s.get("status") not in (None, "finished"):
                    out.incomplete.append(dict(run=rel, last_step=s.get("steps"),
                                               reason=f"status {s.get('status')!r}"))
                    continue
                rows.append(normalise(s, rel, root))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                out.skipped.append(dict(file=f"{rel}/summary.json", reason=_short(e)))
            continue
        step, reason = None, "no summary.json (in progress or stopped)"
        if "metrics.csv" in names:
            try:
                step = last_step(Path(root) / "metrics.csv")
            except OSError as e:
                out.skipped.append(dict(file=f"{rel}/metrics.csv", reason=_short(e)))
        out.incomplete.append(dict(run=rel, last_step=step, reason=reason))
    if rows:
        df = pd.DataFrame(rows)
        out.runs = df[COLUMNS].sort_values(["family", "dataset", "base_order", "target_sparsity",
                                            "run"], kind="stable").reset_index(drop=True)
    return out


def _short(e: Exception) -> str:
    msg = (str(e).splitlines() or [""])[0][:200]
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON: {msg}"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, ValueError):
        return msg
    return f"{type(e).__name__}: {msg}"
