"""One page, index.md (+ index.html), showing every table and figure with a sentence on what it
shows and which runs it came from. The page is a list of blocks rendered twice."""
from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from .frontier import crossover_lines
from .tables import to_markdown


def runs_sentence(runs: list, synthetic: set) -> str:
    """'From 3 runs: a/1, a/2, b/1.' or, for many, the experiments with counts."""
    if not runs:
        return "No runs."
    syn = [r for r in runs if r in synthetic]
    tail = f" ({len(syn)} on synthetic data)" if syn else ""
    if len(runs) <= 8:
        return f"From {len(runs)} run(s){tail}: " + ", ".join(f"`{r}`" for r in runs) + "."
    exps = Counter(r.split("/")[0] for r in runs)
    top = ", ".join(f"`{e}` ({n})" for e, n in exps.most_common(10))
    more = f" and {len(exps) - 10} more experiments" if len(exps) > 10 else ""
    return (f"From {len(runs)} runs{tail} in experiments {top}{more}; the run ids of each "
            "configuration are in the `runs` column of the CSV tables.")


def diverged_sentence(diverged: pd.DataFrame | None, most: int = 8) -> str:
    """'2 runs diverged: `a/1` at step 120, `b/3` at step 40 (...).' or "" when none did."""
    if diverged is None or diverged.empty:
        return ""
    at = [f"`{r}`" + (f" at step {_int(s)}" if _int(s) else "")
          for r, s in zip(diverged["run"], diverged["diverged_step"])]
    more = f" and {len(at) - most} more" if len(at) > most else ""
    n = len(at)
    return (f"**{n} run{'s' if n > 1 else ''} diverged:** {', '.join(at[:most])}{more}. They are left out of "
            "every mean, pairing, verdict and curve (a point's mean is over its finished seeds only), "
            "listed in `runs.csv` with status `diverged` and below with their loss and reason, and marked "
            "with a red x at the top of the quality figures.")


def _int(x) -> str:
    """"120" for a step, "" for a missing one (None or NaN)."""
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return ""


def diverged_blocks(ctx: dict) -> list:
    """The section listing the diverged runs (none: no section)."""
    div = ctx.get("diverged")
    if div is None or div.empty:
        return []
    rows = [{"run": r["run"], "step": _int(r["diverged_step"]),
             "loss": "not finite" if r["diverged_loss"] != r["diverged_loss"] else f"{r['diverged_loss']:.4g}",
             "reason": r["diverged_reason"]} for r in div.to_dict("records")]
    return [("h2", "Diverged runs"),
            ("p", "Runs whose training diverged (their summary.json has `\"status\": \"diverged\"`): the step, "
                  "the last loss (`not finite` when it was NaN or inf) and the reason training gave. Each is left "
                  "out of the means of its configuration (`n_diverged` and `diverged_runs` in `points.csv`)."),
            ("table", pd.DataFrame(rows, columns=["run", "step", "loss", "reason"]))]


def blocks_for(ctx: dict) -> list:
    """ctx: counts, tables, summary, figures, incomplete, skipped, notes, synthetic, paper_dir,
    diverged (collect.py's frame of diverged runs, optional)."""
    b = [("h1", "prune-cli report: large-sparse vs small-dense (Zhu & Gupta 2017)")]
    n_div = 0 if ctx.get("diverged") is None else len(ctx["diverged"])
    b.append(("p", f"Generated from `{ctx['runs_dir']}`: {ctx['n_finished']} finished run(s) in "
                   f"{ctx['n_configs']} configuration(s), " + (f"{n_div} diverged, " if n_div else "")
                   + f"{len(ctx['incomplete'])} incomplete, {len(ctx['skipped'])} skipped file(s)."))
    if n_div:
        b.append(("p", diverged_sentence(ctx["diverged"])))
    dup = ctx.get("n_duplicates", 0)
    b.append(("p", "Seeds: runs that differ only in their seed (`prune-run -m ... seed=0,1,2`) "
                   "are one point (configuration); `points.csv` has one row per point with "
                   "`n_seeds` and `<metric>_mean` / `<metric>_std` (sample standard deviation, "
                   "empty for a single seed), `runs.csv` one row per run with its `point_id`. "
                   + (f"Up to {ctx.get('max_seeds', 0)} seeds per point here. "
                      if ctx.get("max_seeds", 0) > 1 else "Every point here has one seed. ")
                   + (f"{dup} run(s) repeat a (configuration, seed) already counted (e.g. a run "
                      "without a seed override, which has seed 0, beside its `seed=0` twin) and "
                      "are left out of the means: see `duplicate_of` in `runs.csv`."
                      if dup else "No (configuration, seed) was found twice.")))
    if ctx["n_finished"] == 0:
        b.append(("p", "**No finished runs yet.** Start some with `prune-run ...` and run "
                       "`make report` again; incomplete runs are listed below."))
    if ctx["synthetic"]:
        b.append(("p", f"**Synthetic data:** {len(ctx['synthetic'])} run(s) used synthetic data "
                       "(e.g. `fake_imagenet`); they are marked `(synthetic)` in tables and "
                       "`SYNTHETIC DATA` in figures, get no paper values, and their quality "
                       "says nothing about the paper's claims."))
    else:
        b.append(("p", "Synthetic data: none of the runs shown used synthetic data."))
    b.append(("p", "The paper's published numbers (`" + str(ctx["paper_dir"]) + "`, typed from "
                   "Zhu & Gupta 2017, Tables 1-6) appear only in columns named `paper ...`, and "
                   "`Δ vs paper` is measured minus paper. They are given only where family, "
                   "base model, target sparsity and dataset (ptb / imagenet / wmt16, not "
                   "synthetic) all match; for GNMT (Table 4) only on WMT16 and in the run's own "
                   "translation direction. Quality is shown as mean ± sample standard deviation "
                   "(n = number of seeds); a single seed shows no ±."))
    for note in ctx["notes"]:
        b.append(("p", note))
    tables = {t.name: t for t in ctx["tables"]}
    b.append(("h2", "Per-family results (the paper's Tables 1-4)"))
    fam = [t for t in ctx["tables"] if t.name.startswith("table_")]
    if not fam:
        b.append(("p", "No finished runs, so no family tables."))
    for t in fam:
        text = ("One row per configuration (dataset, base model, pruning scheme, target "
                "sparsity): NNZ parameters and quality, with the paper's value and the "
                "difference where the configuration matches.")
        if t.name == "table_gnmt":
            text = ("The paper's Table 4: one row per translation direction, units and "
                    "sparsity: NNZ parameters, test BLEU (and validation BLEU) as mean ± std over "
                    "seeds, and the paper's BLEU for that direction where the dataset is WMT16.")
        b += _table_blocks(t, text, ctx)
    sections = [
        ("table5_storage", "Storage overhead (Table 5)",
         "Bit-mask and CSR(C) storage per configuration in MB, from the runs' `bytes_*` fields "
         "(the core's storage accounting); model size = 4 B x NNZ + the smaller overhead."),
        ("table6_size_vs_quality", "Small-dense vs large-sparse by model size (Table 6)",
         "Dense models smaller than the pruned base (small-dense) and the pruned models "
         "(large-sparse) side by side: model size including sparse-storage overhead, and quality."),
        ("pairing", "Large-sparse or small-dense? (the paper's question)",
         "Each sparse model paired with the dense model of another size nearest in NNZ and the "
         "one nearest in model size (log scale), both trained as many steps (`verdict at equal "
         "steps` is the NNZ pair's), and with the dense twin trained for its training MACs "
         "(`budget=equal_compute`, Liu et al.'s Scratch-B: `verdict at equal compute`, when the "
         "study has one; twins are never the equal-steps partner). The advantage is the "
         "difference of the two means on the primary quality, signed so that positive means the "
         "large-sparse model is better (perplexity lower, top-1 / BLEU higher); SE = sqrt(s1²/n1 + "
         "s2²/n2) from the sample standard deviations over seeds (in the CSV). Verdict: Welch's "
         "t-test at 95% (Welch-Satterthwaite degrees of freedom): `wins` or `loses` when p < 0.05, "
         "else `within noise`; with one seed on either side there is no test, and the verdict is "
         "`n/a (1 seed)` (run the study with `seed=0,1,2`). `inference MACs ratio` and `training "
         "MACs ratio` are the sparse model's MACs over its NNZ partner's: inference with the "
         "final masks (what sparse kernels would run), training on dense kernels (what masked "
         "training runs) for the whole pipeline (`train_macs_pipeline`: a model pruned from a trained "
         "dense model includes that model's training); see docs/compute.md."),
        ("export_sizes", "Exported files vs the storage accounting",
         "For each run with an `exports.json` (written by `prune-export`): the size of each "
         "exported file (dense, bit-mask, CSR, int8 bit-mask) beside the run's own estimates: "
         "Table 5's bit-mask and CSR(C) overheads, Table 6's model size (4 B x NNZ + the smaller "
         "overhead) and the dense size. The CSV also has each export's predicted size."),
    ]
    for name, head, text in sections:
        if name not in tables:
            continue
        b.append(("h2", head))
        if name == "pairing" and len(ctx["summary"]):
            b.append(("p", "Per family: how often the large-sparse model wins."))
            b.append(("table", ctx["summary"]))
        b += _table_blocks(tables[name], text, ctx, heading=False)
    b += frontier_blocks(ctx)
    b.append(("h2", "Figures"))
    if not ctx["figures"]:
        b.append(("p", "No figures."))
    for f in ctx["figures"]:
        b.append(("h3", f.title + (" (synthetic data)" if f.synthetic else "")))
        b.append(("img", f.paths[0], f.title))
        links = " · ".join(f"[{p.suffix[1:].upper()}]({_rel(p, ctx)})" for p in f.paths)
        src = runs_sentence(f.runs, ctx["synthetic"]) if f.runs else ""
        b.append(("p", f"{f.caption} {src} {links}".strip()))
    b += diverged_blocks(ctx)
    b.append(("h2", "Incomplete runs"))
    b.append(("p", "Run folders without summary.json (still running, stopped or failed), with "
                   "the last step in their metrics.csv."))
    inc = [{**r, "last_step": "" if r.get("last_step") is None else str(r["last_step"])}
           for r in ctx["incomplete"]]
    b.append(("table", pd.DataFrame(inc, columns=["run", "last_step", "reason"])))
    b.append(("h2", "Skipped files"))
    b.append(("p", "Files that could not be read (empty, malformed JSON or CSV, or gone while the report "
                   "read them) and files read only in part (`partial`: a finished run's CSV that ends "
                   "mid-line, its last row cut short); the rest of the report is built without them."))
    b.append(("table", pd.DataFrame(ctx["skipped"], columns=["file", "reason"])))
    return b


def frontier_blocks(ctx: dict) -> list:
    """The frontier section (report/frontier.py): protocol, crossover per NNZ class, the table,
    and the runs that have no curve, with the reason."""
    fr = ctx.get("frontier")
    if fr is None or ctx["n_finished"] == 0:
        return []
    b = [("h2", "Quality vs training compute: the frontier"),
         ("p", "Each configuration's evaluations during training, at its final sparsity, on the validation "
               "split, against the training MACs spent to that step (dense kernels, including the run it "
               "started from; and sparse kernels). The protocol: one run per configuration under a constant "
               "learning rate, evaluated at log-spaced steps, so the model at step B is what a run of budget B "
               "gives. Each large-sparse configuration meets the small-dense model of its NNZ (as in the "
               "pairing table) at the same training MACs, that model's quality interpolated per seed linearly "
               "in log MACs between its own evaluations, never extrapolated; the verdict is Welch's t-test at "
               "95% over seeds. `frontier_curves.csv` has every curve (mean, std, n per step, Pareto front); "
               "see docs/report.md.")]
    if len(fr.crossovers):
        b.append(("p", "**The crossover, per NNZ class** (who leads, in budget order):"))
        b += [("p", "- " + line) for line in crossover_lines(fr)]
    if len(fr.table.show):
        b += _table_blocks(fr.table, "One row per large-sparse configuration and evaluated budget.", ctx,
                           heading=False)
    if fr.varying_lr:
        b.append(("p", f"**Learning rate not constant** in {len(fr.varying_lr)} run(s) ("
                       + ", ".join(f"`{r}`" for r in fr.varying_lr[:8]) + (" ..." if len(fr.varying_lr) > 8 else "")
                       + "): with a decaying rate the model at step B of a long run is not what a run of "
                         "budget B gives, so their curves are not a frontier."))
    n = len(fr.no_curve)
    if n:
        b.append(("p", f"{n} run(s) have no curve" + (" (the first 20; all in `frontier_no_curve.csv`)" if n > 20
                                                       else "") + ":"))
        b.append(("table", fr.no_curve.head(20)))
    else:
        b.append(("p", "Every finished run has a curve."))
    return b


def _rel(p: Path, ctx: dict) -> str:
    return Path(p).relative_to(ctx["out_dir"]).as_posix()


def _table_blocks(t, text: str, ctx: dict, heading: bool = True) -> list:
    b = [("h3", t.title)] if heading else []
    files = " · ".join(f"[{e.upper()}](tables/{t.name}.{e})" for e in ("csv", "md", "tex"))
    b.append(("p", f"{text} {runs_sentence(t.runs, ctx['synthetic'])} {files}"))
    b.append(("table", t.show))
    return b


# ---------------------------------------------------------------- renderers
def _blank(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype(object)
    return df.where(df.notna(), "")


def render_md(blocks: list, out_dir: Path) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + rest[0] + "\n")
        elif kind == "p":
            out.append(rest[0] + "\n")
        elif kind == "table":
            out.append(to_markdown(_blank(rest[0])))
        elif kind == "img":
            out.append(f"![{rest[1]}]({Path(rest[0]).relative_to(out_dir).as_posix()})\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', t)


def render_html(blocks: list, out_dir: Path) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>prune-cli report</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
           "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
           "padding:2px 6px}img{max-width:100%}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(rest[0])}</p>")
        elif kind == "table":
            df = _blank(rest[0])
            if df.empty:
                out.append("<p><i>(no rows)</i></p>")
                continue
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
                           + "</tr>" for row in df.itertuples(index=False))
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            src = Path(rest[0]).relative_to(out_dir).as_posix()
            out.append(f'<img src="{html.escape(src)}" alt="{html.escape(rest[1])}">')
    return "\n".join(out + ["</body></html>\n"])


def write_page(ctx: dict) -> list[Path]:
    out_dir = Path(ctx["out_dir"])
    blocks = blocks_for(ctx)
    md, htm = out_dir / "index.md", out_dir / "index.html"
    md.write_text(render_md(blocks, out_dir), encoding="utf-8")
    htm.write_text(render_html(blocks, out_dir), encoding="utf-8")
    return [md, htm]
