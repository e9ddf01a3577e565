"""Collect run folders under <results>/runs into one DataFrame (one row per finished run).

summary.json is read here (plain json), plus two small files when a run has them: the composed
config (.hydra/config.yaml), only to fingerprint it (`config_key`: replicate runs of one study
point share it, see points.py), and exports.json (the files prune-export wrote). metrics.csv is
touched only at its end: its last line when a run is incomplete, its last byte (and
sparsity.csv's) when a run has ended (a file that ends mid-line was cut short: listed as
partial). Nothing raises on bad input:
broken files, and folders that vanish while they are read, land in ``skipped``.

A run that diverged (train/: its summary.json says ``"status": "diverged"`` with the step, the
loss and the reason) is a row of ``diverged``, not of ``runs``: everything that averages,
pairs or draws curves reads ``runs`` and so sees finished runs only, and the report names the
diverged ones where it lists runs (runs.csv, index.md) and marks them in its figures.
"""
from __future__ import annotations

import hashlib
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
                 metrics=["bleu", "val_bleu"], paper_table=4),
}
QUALITY = ["perplexity", "val_perplexity", "top1", "top5", "bleu", "val_bleu"]
LOWER_IS_BETTER = {"perplexity", "val_perplexity", "loss"}
METRIC_LABEL = {"perplexity": "perplexity", "val_perplexity": "valid perplexity",
                "top1": "top-1 (%)", "top5": "top-5 (%)", "bleu": "BLEU", "val_bleu": "valid BLEU"}
LSTM_SIZES = {"small": 200, "medium": 650, "large": 1500}
# .lock: a run that holds its folder (train/folder/lock.py), found from its first moment
RUN_MARKERS = {"summary.json", "metrics.csv", "sparsity.csv", "checkpoint.pt", "run.log", ".hydra", ".lock"}
# Config keys that do not change what a run computes: the seed (replicates differ only in it) and
# the keys conf/config.yaml excludes from a run's identity (hydra.job.config.override_dirname.
# exclude_keys; a test keeps the two lists equal), plus run_id, which is derived from the rest.
NOT_IDENTITY = ("seed", "run_id", "results_dir", "exp_name", "experiment", "device",
                "trainer.progress", "trainer.tensorboard", "trainer.threads", "data.root", "data.download",
                "data.cache_dir", "trainer.keep_steps")
_DEEPEST = 2 * max(k.count(".") for k in NOT_IDENTITY)   # indent of the deepest such key
# issue 17: what a run costs (train/plan/costs.py) and, for an equal-compute run, its budget
MACS = ["infer_macs_dense", "infer_macs", "train_macs", "train_macs_sparse_kernels", "train_macs_pipeline"]
NUMERIC = ["target_sparsity", "achieved_sparsity", "params_total", "params_nnz", "bytes_dense",
           "bytes_bitmask", "bytes_csr", "bytes_csr_exact", "model_size_mb", "steps", "epochs",
           "wall_time_s", "lr", "hidden", "width", "units", *QUALITY, *MACS, "budget_train_macs",
           "budget_stretch"]
COLUMNS = ["run", "exp_name", "run_id", "family", "model", "dataset", "direction", "synthetic",
           "size", "base", "base_order", "pruning", "scheme", "pattern", "criterion", "masks", "init",
           "mask_source", "seed", "config_key", "bleu_ref", "macs_unit", "budget_match", "budget_convention",
           "partner_key", *NUMERIC, "status", "path"]
# what a diverged run's summary adds (train/: the step, the loss, or null when not finite, the reason)
DIVERGED = ["diverged_step", "diverged_loss", "diverged_reason"]


@dataclass
class Collection:
    runs: pd.DataFrame                                   # one row per finished run
    incomplete: list = field(default_factory=list)       # {"run", "last_step", "reason"}
    skipped: list = field(default_factory=list)          # {"file", "reason"}: unreadable or partial
    exports: dict = field(default_factory=dict)          # run -> exports.json's list
    runs_dir: Path | None = None
    diverged: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS + DIVERGED))
    folders: int = 0                                     # run folders found, read or not

    @property
    def n_read(self) -> int:
        """Run folders the report could read something of (finished, diverged or incomplete)."""
        return len(self.runs) + len(self.diverged) + len(self.incomplete)


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


# Keys of a model config that do not tell one base model of a family from another.
NOT_BASE = ("_target_", "name", "task", "prune")


def config_base(model_config) -> str:
    """A family the report does not know (a user's model, prune-run --config-dir): its base model
    is named by the scalar keys of its model config, e.g. "depth=2,hidden=64" (a sweep over any
    model.<key> gives bases that differ in it). "" when there is no usable model config."""
    try:
        spec = json.loads(model_config) if isinstance(model_config, str) else None
    except ValueError:
        return ""
    if not isinstance(spec, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(spec.items())
                    if k not in NOT_BASE and isinstance(v, (int, float, str, bool)))


def base_of(s: dict) -> tuple[str, float]:
    """Base-model label (size / width / units) and a number that sorts it small to large."""
    fam = s.get("family")
    size, hidden, width, units = s.get("size"), s.get("hidden"), s.get("width"), s.get("units")
    if fam not in FAMILIES and config_base(s.get("model_config")):
        # sorted by the dense model's size: a base's dense and sparse runs have the same params_total
        return config_base(s.get("model_config")), float(_num(s.get("params_total")) or 0.0)
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


def pair_key(base: str, sparsity: float, pattern: str, scheme: str) -> str:
    """What pairs an equal-compute run with the sparse point it was given the compute of."""
    return f"{base}|{round(float(sparsity), 9)}|{pattern}|{scheme}"


def partner_key(s: dict) -> str:
    """pair_key of the partner an equal-compute run was matched to ("" for other runs)."""
    p = s.get("budget_partner")
    if not s.get("budget_match") or not isinstance(p, dict):
        return ""
    dense = not p.get("target_sparsity")
    base, _ = base_of({**p, "family": s.get("family")})
    return pair_key(base, p.get("target_sparsity") or 0.0, "none" if dense else str(p.get("pattern") or "unstructured"),
                    "none" if dense else str(p.get("scheme") or "uniform"))


def direction_of(s: dict) -> str:
    """A translation run's direction as "de-en" / "en-de" ("" when the run does not say)."""
    d = s.get("direction")
    if not d and s.get("src_lang") and s.get("tgt_lang"):
        d = f"{s['src_lang']}-{s['tgt_lang']}"
    return str(d or "").strip().lower().replace("_", "-").replace(">", "")


def _bleu_ref(direction: str) -> str:
    """The paper's BLEU column a GNMT run of that direction compares with ("" if unknown)."""
    return {"de-en": "bleu_de_en", "en-de": "bleu_en_de"}.get(direction, "")


def init_of(s: dict) -> str:
    """Where a run's weights came from: "fresh", "trained" or "rewind step K" (train/plan/start.py);
    summaries from before issue 18 say it with init_from alone ("scratch" or a checkpoint)."""
    init = s.get("init")
    if init is None:
        return "fresh" if s.get("init_from") in (None, "scratch") else "trained"
    return f"rewind step {s.get('rewind_step')}" if init == "rewind" else str(init)


def config_key(text: str | None) -> str:
    """Fingerprint of a composed config (Hydra's .hydra/config.yaml) without NOT_IDENTITY keys.

    Works on the text, line by line, instead of parsing the YAML: Hydra writes block-style YAML
    (OmegaConf.to_yaml) where every mapping key starts its own line at its nesting depth, so a
    key's path follows from the indentation, and dropping a key means dropping its line and the
    lines of its value (deeper, or "- " items at the same depth); lines deeper than any such key
    are kept unread. yaml's C parser costs about 1 ms a run here (a tenth of the report's 10 s
    budget for 1,000 runs), this about a tenth of that. tests/test_report_points.py checks it
    against yaml.safe_load on generated configs.
    """
    if text is None:
        return ""
    keep, stack, skip = [], [], None        # stack: (indent, key) of the enclosing mappings
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        indent = len(line) - len(body)
        if skip is not None:
            if indent > skip or (indent == skip and body.startswith("-")):
                continue
            skip = None
        if indent > _DEEPEST:
            keep.append(line)
            continue
        if not body.startswith("-") and ":" in body:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = body.split(":", 1)[0].strip().strip("'\"")
            path = ".".join([k for _, k in stack] + [key])
            if path in NOT_IDENTITY:
                skip = indent
                continue
            stack.append((indent, key))
        keep.append(line)
    return hashlib.sha1("\n".join(keep).encode()).hexdigest()[:12]


def normalise(s: dict, rel: str, path: str, config_text: str | None = None) -> dict:
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
    direction = direction_of(s)
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
        dataset=dataset, direction=direction, synthetic=bool(synthetic),
        size=str(s.get("size") or ""), base=base, base_order=order,
        pruning="none" if dense else str(s.get("pruning") or "gradual"),
        scheme="none" if dense else str(s.get("scheme") or "uniform"),
        # issue 11: N:M pruning; older summaries have no pattern and were unstructured
        pattern="none" if dense else str(s.get("pattern") or "unstructured"),
        # issue 18: the controls. criterion: how the masks were chosen (a fixed-mask run: its
        # source's); masks: "own" (pruned by the run) or "fixed" (a finished run's final masks,
        # the source in mask_source, EXP/RUN_ID); init: fresh | trained | rewind step K.
        criterion="none" if dense else str(s.get("criterion") or "magnitude"),
        masks="none" if dense else ("fixed" if s.get("mask_from") else "own"),
        init=init_of(s), mask_source=str(s.get("mask_source") or ""),
        seed=s.get("seed"), bleu_ref=_bleu_ref(direction), path=path,
        macs_unit=str(s.get("macs_unit") or ""), budget_match=str(s.get("budget_match") or ""),
        budget_convention=str(s.get("budget_convention") or ""), partner_key=partner_key(s),
        # without Hydra's record of the config, the model's own config tells runs apart
        config_key=config_key(s.get("model_config") if config_text is None else config_text),
        status=str(s.get("status") or "finished"),
    )
    return row


def diverged_fields(s: dict) -> dict:
    """A diverged run's step, loss (NaN when null: not finite) and reason, from its summary."""
    try:
        step, loss = _num(s.get("diverged_step")), _num(s.get("diverged_loss"))
    except (TypeError, ValueError):
        raise ValueError(f"diverged_step / diverged_loss are not numbers: {s.get('diverged_step')!r}, "
                         f"{s.get('diverged_loss')!r}") from None
    return dict(diverged_step=None if step is None else int(step),
                diverged_loss=float("nan") if loss is None else loss,
                diverged_reason=" ".join(str(s.get("diverged_reason") or "").split()))


def ends_mid_line(path) -> bool:
    """A file whose last byte is not a newline (an ended run's file cut short)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


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


def read_exports(path: str) -> list:
    """exports.json (written by prune-export): a list of {format, dtype, file, bytes,
    predicted_bytes}; ValueError naming what is wrong."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError("exports.json is not a list")
    out = []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not e.get("format"):
            raise ValueError(f"exports.json entry {i} has no format")
        try:
            size, pred = _num(e.get("bytes")), _num(e.get("predicted_bytes"))
        except (TypeError, ValueError):
            raise ValueError(f"exports.json entry {i}: bytes are not numbers") from None
        if size is None:
            raise ValueError(f"exports.json entry {i} has no bytes")
        out.append(dict(format=str(e["format"]).lower(), dtype=str(e.get("dtype") or "float32").lower(),
                        file=str(e.get("file") or ""), bytes=size,
                        predicted_bytes=float("nan") if pred is None else pred))
    return out


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f".hydra/config.yaml unreadable: {_short(e)}") from None


def collect(results_dir: str | Path, exp_name: str | None = None) -> Collection:
    """All runs under <results_dir>/runs (or only <results_dir>/runs/<exp_name>)."""
    runs_dir = Path(results_dir) / "runs"
    out = Collection(runs=pd.DataFrame(columns=COLUMNS), runs_dir=runs_dir)
    top = runs_dir / exp_name if exp_name else runs_dir
    if not top.is_dir():
        return out
    rows, diverged = [], []
    for root, names in find_run_dirs(top):
        out.folders += 1
        rel = Path(root).relative_to(runs_dir).as_posix()
        if "summary.json" in names:
            f = os.path.join(root, "summary.json")
            try:
                with open(f, encoding="utf-8") as fh:
                    s = json.load(fh)
                if isinstance(s, dict) and s.get("status") not in (None, "finished", "diverged"):
                    out.incomplete.append(dict(run=rel, last_step=s.get("steps"),
                                               reason=f"status {s.get('status')!r}"))
                    continue
                cfg = _read_text(os.path.join(root, ".hydra", "config.yaml")) if ".hydra" in names else None
                row = normalise(s, rel, root, cfg)
                if row["status"] == "diverged":
                    diverged.append({**row, **diverged_fields(s)})
                else:
                    rows.append(row)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                out.skipped.append(dict(file=f"{rel}/summary.json", reason=_short(e, f)))
                continue
            for name in ("metrics.csv", "sparsity.csv"):
                if name in names:
                    _check_ended(os.path.join(root, name), f"{rel}/{name}", out.skipped)
            if "exports.json" in names:
                try:
                    out.exports[rel] = read_exports(os.path.join(root, "exports.json"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                    out.skipped.append(dict(file=f"{rel}/exports.json", reason=_short(e)))
            continue
        step, reason = None, "no summary.json (in progress or stopped)"
        if "metrics.csv" in names:
            try:
                step = last_step(Path(root) / "metrics.csv")
            except OSError as e:
                out.skipped.append(dict(file=f"{rel}/metrics.csv", reason=_short(e)))
        out.incomplete.append(dict(run=rel, last_step=step, reason=reason))
    order = ["family", "dataset", "base_order", "target_sparsity", "run"]
    if rows:
        out.runs = pd.DataFrame(rows)[COLUMNS].sort_values(order, kind="stable").reset_index(drop=True)
    if diverged:
        out.diverged = (pd.DataFrame(diverged)[COLUMNS + DIVERGED].sort_values(order, kind="stable")
                        .reset_index(drop=True))
    return out


PARTIAL = "partial: ends mid-line (cut short); its last, incomplete row is left out"


def _check_ended(path: str, file: str, skipped: list) -> None:
    """An ended run's metrics.csv or sparsity.csv that ends mid-line is listed as partial (its
    complete rows are still read where the report reads them); one that cannot be opened, as
    skipped."""
    try:
        if ends_mid_line(path):
            skipped.append(dict(file=file, reason=PARTIAL))
    except OSError as e:
        skipped.append(dict(file=file, reason=_short(e)))


def _short(e: Exception, path: str | None = None) -> str:
    msg = (str(e).splitlines() or [""])[0][:200]
    if isinstance(e, FileNotFoundError):
        return "vanished while the report read it (deleted or moved)"
    if isinstance(e, json.JSONDecodeError):
        if path is not None and _empty(path):
            return "empty file (0 bytes)"
        return f"invalid JSON: {msg}"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, ValueError):
        return msg
    return f"{type(e).__name__}: {msg}"


def _empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
