"""`prune-report`: results/runs -> results/report (tables, figures, index.md / index.html)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from . import figures, frontier, page, points, tables
from .collect import collect

MANIFEST = ".report-manifest"
REPO_PAPER = Path(__file__).resolve().parents[2] / "results" / "paper"


class UsageError(Exception):
    """Bad arguments: one line on stderr, exit status 2, nothing written."""


def default_paper_dir(results_dir: Path) -> Path | None:
    for d in (results_dir / "paper", REPO_PAPER):
        if (d / "table1.csv").exists():
            return d
    return None


def _candidates(coll, want: str | None) -> list[tuple[str, str, bool]]:
    """(run, family, synthetic) to draw Figure 2 / layer sparsity from, best first."""
    runs = coll.runs
    if want:
        hit = runs[runs["run"] == want]
        fam, syn = (hit["family"].iloc[0], bool(hit["synthetic"].iloc[0])) if len(hit) else ("", False)
        return [(want, fam, syn)]
    pool = runs[runs["target_sparsity"] > 0]
    pool = pool if len(pool) else runs
    sized = []
    for r in pool.itertuples(index=False):
        try:
            sized.append((-os.stat(os.path.join(r.path, "metrics.csv")).st_size, r.run,
                          r.family, bool(r.synthetic)))
        except OSError:
            continue
    return [(run, fam, syn) for _, run, fam, syn in sorted(sized)]


def _first_ok(cands, fname: str, draw, coll) -> object | None:
    for run, fam, syn in cands:
        f = coll.runs_dir / run / fname
        if not f.exists():
            continue
        try:
            return draw(f.parent, run, fam, syn)
        except figures.NothingToDraw:
            continue
        except (OSError, ValueError, UnicodeDecodeError) as e:
            coll.skipped.append(dict(file=f"{run}/{fname}", reason=str(e)[:200]))
    return None


def _clear_previous(out_dir: Path) -> None:
    """Remove the files the previous report wrote (and only those), so nothing stale remains."""
    man = out_dir / MANIFEST
    if not man.exists():
        return
    for line in man.read_text(encoding="utf-8").splitlines():
        p = (out_dir / line).resolve()
        if line and out_dir.resolve() in p.parents and p.is_file():
            p.unlink()


def make_report(results_dir="results", out_dir=None, run: str | None = None,
                paper_dir=None) -> dict:
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "report"
    coll = collect(results_dir)
    if run and not (coll.runs_dir / run).is_dir():
        raise UsageError(f"--run {run}: no such run folder under {coll.runs_dir}")
    paper_dir = Path(paper_dir) if paper_dir else default_paper_dir(results_dir)
    paper = tables.load_paper(paper_dir, coll.skipped)
    pts, runs = points.group(coll.runs)
    front = frontier.build(runs, pts)       # reads each run's evaluation rows (metrics.csv)
    coll.skipped.extend(front.skipped)
    configs = tables.with_paper(pts, paper)
    tbls = tables.build(configs, paper)
    summary = tables.pairing_summary(tbls[-1].csv)
    exports = tables.export_table(runs, coll.exports)
    if exports is not None:
        tbls.append(exports)
    tbls.append(front.table)

    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    written = [p for t in tbls for p in tables.write(t, out_dir / "tables")]
    for name, df in (("runs", points.runs_frame(runs, coll.diverged)),
                     ("points", points.to_csv_frame(pts, coll.diverged)),
                     ("frontier_curves", front.curves), ("frontier_no_curve", front.no_curve),
                     ("incomplete", pd.DataFrame(coll.incomplete, columns=["run", "last_step", "reason"])),
                     ("skipped", pd.DataFrame(coll.skipped, columns=["file", "reason"]))):
        df.to_csv(out_dir / f"{name}.csv", index=False)
        written.append(out_dir / f"{name}.csv")

    fig_dir = out_dir / "figures"
    figs = (figures.quality_vs_nnz(configs, paper, fig_dir, coll.diverged)
            + figures.quality_vs_macs(configs, fig_dir, coll.diverged))
    figs += frontier.draw(front, fig_dir)
    figs.append(figures.sparsity_function(fig_dir))
    cands = _candidates(coll, run)
    for fname, draw in (
            ("metrics.csv", lambda d, r, f, s: figures.training_curves(d, r, f, s, fig_dir)),
            ("sparsity.csv", lambda d, r, f, s: figures.layer_sparsity(d, r, s, fig_dir))):
        info = _first_ok(cands, fname, draw, coll)
        if info is not None:
            figs.append(info)  # the per-layer chart prefers the run that Figure 2 shows
            cands.sort(key=lambda c: c[0] != info.runs[0])
    # skipped.csv again: drawing may have found more broken files
    pd.DataFrame(coll.skipped, columns=["file", "reason"]).to_csv(out_dir / "skipped.csv", index=False)
    written += [p for f in figs for p in f.paths]

    notes = []
    if paper_dir is None:
        notes.append("The paper's reference CSVs were not found, so no paper values are shown.")
    synthetic = set(coll.runs.loc[coll.runs["synthetic"].astype(bool), "run"])
    ctx = dict(runs_dir=coll.runs_dir, out_dir=out_dir, n_finished=len(coll.runs),
               n_configs=len(configs), n_duplicates=int((runs["duplicate_of"] != "").sum()),
               max_seeds=int(pts["n_seeds"].max()) if len(pts) else 0, tables=tbls, summary=summary, figures=figs,
               incomplete=coll.incomplete, skipped=coll.skipped, notes=notes, diverged=coll.diverged,
               synthetic=synthetic, paper_dir=paper_dir or "(not found)", frontier=front)
    written += page.write_page(ctx)
    (out_dir / MANIFEST).write_text(
        "\n".join(Path(p).relative_to(out_dir).as_posix() for p in written) + "\n", encoding="utf-8")
    return dict(out_dir=out_dir, index=out_dir / "index.md", n_finished=len(coll.runs),
                n_incomplete=len(coll.incomplete), n_skipped=len(coll.skipped),
                n_diverged=len(coll.diverged), n_folders=coll.folders, n_read=coll.n_read,
                n_tables=len(tbls), n_figures=len(figs), files=written,
                configs=configs, tables={t.name: t for t in tbls}, collection=coll, frontier=front)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"prune-report: error: {message} (see prune-report --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="prune-report", description="Tables and log-scale figures from the runs "
                "under RESULTS_DIR/runs, with the paper's numbers alongside.")
    p.add_argument("--results-dir", default="results", help="folder holding runs/ (default: results)")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/report)")
    p.add_argument("--run", default=None, metavar="EXP/RUN_ID",
                   help="run for Figure 2 and per-layer sparsity (default: the sparse run with "
                        "the largest metrics.csv)")
    p.add_argument("--paper-dir", default=None,
                   help="the paper's reference CSVs (default: RESULTS_DIR/paper, else the repo's)")
    a = p.parse_args(argv)
    if not Path(a.results_dir).is_dir():
        p.error(f"--results-dir {a.results_dir}: not a folder")
    if a.out and Path(a.out).exists() and not Path(a.out).is_dir():
        p.error(f"--out {a.out}: exists and is not a folder")
    if a.paper_dir and not Path(a.paper_dir).is_dir():
        p.error(f"--paper-dir {a.paper_dir}: not a folder")
    if a.run:
        a.run = a.run.strip("/")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        r = make_report(a.results_dir, a.out, a.run, a.paper_dir)
    except UsageError as e:
        print(f"prune-report: error: {e}", file=sys.stderr)
        return 2
    print(f"prune-report: wrote {r['index']} ({r['n_tables']} tables, {r['n_figures']} figures "
          f"in {r['out_dir']})")
    print(f"  {r['n_finished']} finished, {r['n_incomplete']} incomplete, {r['n_skipped']} skipped"
          + (f", {r['n_diverged']} diverged" if r["n_diverged"] else ""))
    if r["n_folders"] and not r["n_read"]:  # run folders, and not one could be read: say so, and fail
        print(f"prune-report: error: none of the {r['n_folders']} run folder(s) under {a.results_dir} could be "
              f"read; the reasons are in {r['out_dir'] / 'skipped.csv'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
