"""The table a sweep prints when it ends: one row per study point, smallest model first.

Replicate runs (`seed=0,1,2`) are one point, grouped by the report's own points.group, so the
console and `make report` agree: quality is the mean ± sample std over the seeds (`seeds` says
how many; a single seed shows no ±). Runs that diverged follow, one row each ("diverged at step
N": left out of the means), then the runs another process holds (a second copy of the sweep) as
"running elsewhere". pandas and the report are imported only when the table is
printed, not when prune-run starts.
"""
import math
from pathlib import Path

from hydra.experimental.callback import Callback

COLUMNS = ("model", "size/width", "sparsity", "NNZ", "size MB", "quality", "seeds", "wall s")
LABELS = (("val_perplexity", "valid ppl"), ("perplexity", "test ppl"), ("top1", "top-1"),
          ("top5", "top-5"), ("val_bleu", "valid BLEU"), ("bleu", "BLEU"))


def _pm(mean, std) -> str:
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _quality(p: dict) -> str:
    parts = []
    for key, label in LABELS:
        if p.get(key) is not None and not math.isnan(p[key]):
            unit = "%" if key in ("top1", "top5") else ""
            parts.append(f"{label} {_pm(p[key], p[f'{key}_std'])}{unit}")
    return ", ".join(parts)


def _base(p: dict) -> str:
    for key in ("hidden", "width", "units"):
        v = p.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return f"{key} {v:g}"
    return str(p.get("size") or p.get("base") or "")


def _running_elsewhere(coll) -> list:
    """Rows for the study's unfinished runs that another process holds now (train/folder/lock.py): a
    sweep started twice leaves them to the other copy, and they join the table when it ends."""
    from omegaconf import OmegaConf

    from prune_cli.config import effective_sparsity
    from prune_cli.train.folder.lock import held_elsewhere

    rows = []
    for run in coll.incomplete:
        folder = coll.runs_dir / run["run"]
        if not held_elsewhere(folder):
            continue
        name, base, sparsity = folder.name, "", ""
        try:  # written once the holder has passed its checks: not there in its first moments
            cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
            model = OmegaConf.to_container(cfg.model, resolve=True)
            name, base, sparsity = model["name"], _base(model), f"{100 * effective_sparsity(cfg):g}%"
        except Exception:  # a table line is not worth a failed sweep: the folder's name says which run
            pass
        step = f" (step {run['last_step']})" if run["last_step"] else ""
        rows.append([name, base, sparsity, "", "", f"running elsewhere{step}", "", ""])
    return rows


def _diverged(coll) -> list:
    """Rows for the study's diverged runs (collect.py): one each, after the points."""
    rows = []
    for r in coll.diverged.to_dict("records"):
        step = r["diverged_step"]
        at = "" if step is None or step != step else f" at step {int(step)}"
        nnz = r["params_nnz"]
        rows.append([r["model"] + (f" {r['direction']}" if r["direction"] else ""), _base(r),
                     f"{100 * r['target_sparsity']:g}%", "" if nnz != nnz else f"{nnz:,.0f}", "",
                     f"diverged{at}", f"seed {r['seed']}", ""])
    return rows


def study_table(exp_dir: Path) -> str:
    from .collect import collect
    from .frontier import build, crossover_lines
    from .points import budget_words, control, group

    exp_dir = Path(exp_dir)
    coll = collect(exp_dir.parent.parent, exp_dir.name)
    pts, runs = group(coll.runs)
    rows = []
    for p in pts.to_dict("records"):
        model = p["model"] + (f" {p['direction']}" if p["direction"] else "")
        sparsity = f"{100 * p['target_sparsity']:g}%"
        if p["pattern"] not in ("none", "unstructured"):
            sparsity += f" ({p['pattern']})"
        if control(p):
            model += f" ({control(p)})"
        if budget_words(p):
            model += f" ({budget_words(p)})"
        if p["variant"]:
            model += f" [{p['variant']}]"
        rows.append((p["params_nnz"], [model, _base(p), sparsity, f"{p['params_nnz']:,.0f}",
                                       f"{p['model_size_mb']:.2f}", _quality(p),
                                       str(p["n_seeds"]), f"{p['wall_time_s']:.0f}"]))
    body = [r for _, r in sorted(rows, key=lambda x: x[0])] + _diverged(coll) + _running_elsewhere(coll)
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *body)] if body else [len(c) for c in COLUMNS]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(COLUMNS), line("-" * w for w in widths)] + [line(r) for r in body]
    crossings = crossover_lines(build(runs, pts)) if len(pts) else []
    if crossings:   # the sweep's runs have curves (evaluations with training MACs): the frontier in words
        out += ["", "Quality vs training MACs (the frontier; make report draws it): who leads, in budget order"]
        out += [f"  {c}" for c in crossings]
    return "\n".join(out)


class PrintStudyTable(Callback):
    """After a sweep (-m), print the finished runs of its exp_name as one table (a row a point),
    then the runs another process is training now (quality: "running elsewhere")."""

    def on_multirun_end(self, config, **kwargs) -> None:
        exp_dir = Path(config.results_dir, "runs", config.exp_name)
        print(f"\n{exp_dir}: finished runs (quality measured by this tool on the held-out split; "
              "mean ± std over seeds)\n" + study_table(exp_dir))
