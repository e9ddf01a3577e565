#!/usr/bin/env python
"""prune-infer end to end: a pruned model's dense file against its CSR file, on this CPU.

    python scripts/bench_infer.py                    # the whole table, threads 1 and 2 (~5 min on 2 cores)
    python scripts/bench_infer.py --threads 1 --models ptb_large --sparsities 0.95   # a subset
        [--rounds 3] [--out results/bench/infer.json] [--keep DIR] [--data-root DIR]

One thing is measured: what ``prune-infer`` reports (``prune_cli.infer.engine``: ``load`` then
``evaluate``, the command's own code) for two files of one model -- exported by prune-export
as ``dense`` and as ``csr`` -- at batch 1:

- ``ptb_large`` (PTB LSTM, 1500 units, vocabulary 10,000): token by token (``--bptt 1``) on
  the real PTB validation text (``$PRUNE_DATA_ROOT/ptb``); tokens/s;
- ``mobilenet_224`` (MobileNet v1 1.0, 224x224, 1000 classes, ``data=fake_imagenet``); images/s;
- ``gnmt_256`` / ``gnmt_1024`` (GNMT, 4 layers, vocabulary 36,548, ``data=fake_wmt16``): the
  translation evaluation with greedy decoding (prune-infer's: a teacher-forced pass and a
  greedy translation of each sentence); sentences/s.
- also ``ptb_small`` and ``ptb_medium`` when asked for.

Models: composed from conf/ as ``prune-run`` composes them, random weights (the family's
initialisation), masked by the Pruner to the sparsity (uniform magnitude top-k over the
family's ``model.prune``), written as a finished run folder (checkpoint + summary) and
exported through ``prune_cli.export.export_run`` -- the real prune-export path. No training:
speed does not depend on the values, and quality is compared between the two files (equal up
to float rounding), not against a trained number.

Timing: for each thread count both files are loaded afresh (``--kernels auto``: each CSR
layer's dense/CSR choice is measured at that thread count), then ``--rounds`` rounds each run
both sides over the same first N units of the split, the order swapped every round (dense
first, then CSR first, ...), so that load from other processes falls on both alike. A
round's figure is prune-infer's throughput (units / wall seconds of the model's calls); the
table gives the median over rounds per side, their ratio at each thread count, and
**best vs best**: the CSR side at its fastest thread count against the dense side at its
fastest. The CPU model, torch version and load average are recorded; the JSON keeps every
round, every layer's kernel choice and both sides' quality figures.
"""
import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from prune_cli import data as datasets  # noqa: E402
from prune_cli import export, models  # noqa: E402
from prune_cli.infer.engine import InferError, cpu_model, evaluate, load  # noqa: E402
from prune_cli.pruning import ConstantSchedule, Pruner  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")

# name -> (overrides composed like a prune-run command line, units per round)
MODELS = {
    "ptb_small": (["model=ptb_lstm", "model.size=small", "data.eval_batch_size=1", "data.eval_bptt=1"], 400),
    "ptb_medium": (["model=ptb_lstm", "model.size=medium", "data.eval_batch_size=1", "data.eval_bptt=1"], 300),
    "ptb_large": (["model=ptb_lstm", "model.size=large", "data.eval_batch_size=1", "data.eval_bptt=1"], 200),
    "mobilenet_224": (["model=mobilenet", "model.width=1.0", "data=fake_imagenet", "data.eval_batch_size=1",
                       "data.val_size=64"], 30),
    "gnmt_256": (["model=gnmt", "model.units=256", "data=fake_wmt16", "data.eval_batch_size=1",
                  "data.valid_size=16"], 4),
    "gnmt_1024": (["model=gnmt", "model.units=1024", "data=fake_wmt16", "data.eval_batch_size=1",
                   "data.valid_size=16"], 2),
}
DEFAULT = (("ptb_large", 0.9), ("ptb_large", 0.95), ("mobilenet_224", 0.9), ("gnmt_256", 0.9), ("gnmt_1024", 0.9))
QUALITY = ("perplexity", "top1", "bleu")


def compose(overrides) -> dict:
    """The run config ``prune-run`` would compose from these overrides (resolved, no run_id)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from prune_cli.config import data_home
    if not OmegaConf.has_resolver("data_home"):
        OmegaConf.register_new_resolver("data_home", data_home)
    with initialize_config_module(config_module="prune_cli.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "run_id"]), resolve=True)


def make_files(name: str, sparsity: float, workdir: Path, data_root: str):
    """(dense file, csr file) of ``name`` at ``sparsity``: random weights masked by the Pruner,
    a finished run folder as prune-run leaves it, exported by prune-export."""
    overrides = MODELS[name][0] + [f"sparsity={sparsity}"]
    if name.startswith("ptb"):  # the real validation text; the synthetic datasets have no files
        overrides += [f"data.root={data_root}", "data.download=false"]
    config = compose(overrides)
    cfg = OmegaConf.create(config)
    data = datasets.build(cfg.data, int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    model = models.build(cfg.model, data.meta)
    pruner = Pruner(model, ConstantSchedule(sparsity), list(cfg.model.prune))
    pruner.step(0)
    run = workdir / f"{name}_{sparsity:g}"
    run.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "pruner": pruner.state_dict(), "config": config}, run / "checkpoint.pt")
    meta = {k: v for k, v in data.meta.items() if isinstance(v, (bool, int, float, str))}
    (run / "summary.json").write_text(json.dumps({"run_id": run.name, "model_meta": meta,
                                                  "achieved_sparsity": pruner.sparsity()}))
    del model, pruner
    files = {}
    for fmt in ("dense", "csr"):
        files[fmt] = workdir / f"{name}_{sparsity:g}_{fmt}.safetensors"
        export.export_run(run, files[fmt], fmt, "float32", record=False)
    (run / "checkpoint.pt").unlink()  # the files are what is measured
    return files


def unit_of(result: dict) -> str:
    return next(k[:-len("_per_s")] for k in result if k.endswith("_per_s") and not k.endswith("_per_cpu_s"))


def measure(files: dict, threads: int, rounds: int, units: int, data_root: str, log) -> dict:
    """Both files loaded at ``threads`` threads, then ``rounds`` alternated rounds of ``units`` units."""
    torch.set_num_threads(threads)
    loaded = {side: load(path, data_root=data_root, kernels="auto") for side, path in files.items()}
    runs = {side: [] for side in files}
    for r in range(rounds):
        for side in (("dense", "csr") if r % 2 == 0 else ("csr", "dense")):
            res = evaluate(loaded[side], units)
            runs[side].append(res)
            unit = unit_of(res)
            log(f"    T={threads} round {r + 1} {side:5s}: {res[unit + '_per_s']:9.2f} {unit}/s "
                f"(median latency {res['latency_ms']:.3f} ms)")
    del loaded
    gc.collect()
    return runs


def side_summary(results) -> dict:
    unit = unit_of(results[0])
    per_s = [r[unit + "_per_s"] for r in results]
    first = results[0]
    return {"unit": unit, "per_s": round(statistics.median(per_s), 3), "rounds": [round(x, 3) for x in per_s],
            "latency_ms": round(statistics.median(r["latency_ms"] for r in results), 4),
            "quality": {k: first[k] for k in QUALITY if k in first}, "threads_used": first["threads"],
            "layers": first["layers"]}


def summarise(name: str, sparsity: float, by_threads: dict) -> dict:
    row = {"model": name, "sparsity": sparsity, "threads": {}}
    for t, runs in sorted(by_threads.items()):
        d, c = side_summary(runs["dense"]), side_summary(runs["csr"])
        rel = {k: abs(c["quality"][k] - v) / max(abs(v), 1e-30) for k, v in d["quality"].items()
               if k in c["quality"] and math.isfinite(v)}
        row["threads"][str(t)] = {"dense": d, "csr": c, "speedup": round(c["per_s"] / d["per_s"], 3),
                                  "quality_rel_diff": rel}
    sides = row["threads"].values()
    best_dense = max(sides, key=lambda e: e["dense"]["per_s"])
    best_csr = max(sides, key=lambda e: e["csr"]["per_s"])
    row["best_vs_best"] = {"speedup": round(best_csr["csr"]["per_s"] / best_dense["dense"]["per_s"], 3),
                           "dense_threads": best_dense["dense"]["threads_used"],
                           "csr_threads": best_csr["csr"]["threads_used"]}
    row["unit"] = next(iter(sides))["dense"]["unit"]
    return row


def _rate(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(rows, threads) -> str:
    """The markdown table of docs/inference.md: every figure with its thread count (``T``)."""
    head = ["model", "sparsity", "unit"]
    for t in threads:
        head += [f"dense {t}T", f"CSR {t}T", f"CSR/dense {t}T"]
    head += ["best vs best", "quality, dense vs CSR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], f"{100 * row['sparsity']:g}%", f"{row['unit']}/s"]
        for t in threads:
            e = row["threads"].get(str(t))
            cells += ([_rate(e["dense"]["per_s"]), _rate(e["csr"]["per_s"]), f"**{e['speedup']:.2f}x**"]
                      if e else ["", "", ""])
        b = row["best_vs_best"]
        cells.append(f"{b['speedup']:.2f}x (CSR {b['csr_threads']}T / dense {b['dense_threads']}T)")
        rel = {}
        for e in row["threads"].values():
            for k, v in e["quality_rel_diff"].items():
                rel[k] = max(rel.get(k, 0.0), v)
        cells.append(", ".join(f"{k} rel. diff {v:.1e}" for k, v in rel.items()) or "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_cases(models_arg, sparsities_arg):
    if not models_arg and not sparsities_arg:
        return list(DEFAULT)
    names = models_arg.split(",") if models_arg else list(dict.fromkeys(n for n, _ in DEFAULT))
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise SystemExit(f"bench_infer: unknown model(s) {', '.join(bad)}; valid: {', '.join(MODELS)}")
    if sparsities_arg:
        sparsities = [float(s) for s in sparsities_arg.split(",")]
        if any(not 0.0 < s < 1.0 for s in sparsities):
            raise SystemExit("bench_infer: --sparsities must lie in (0, 1)")
        return [(n, s) for n in names for s in sparsities]
    return [(n, s) for n, s in DEFAULT if n in names] or [(n, 0.9) for n in names]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    p.add_argument("--models", default="", help=f"subset of {','.join(MODELS)} (default: the issue's five cases)")
    p.add_argument("--sparsities", default="", help="sparsities for every chosen model (default: 0.9 and 0.95 for "
                                                    "ptb_large, 0.9 for the others)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds per thread count (default 3)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every model's units per round")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "infer.json"))
    p.add_argument("--keep", default=None, help="write the run folders and files here and keep them")
    p.add_argument("--data-root", default=os.environ.get("PRUNE_DATA_ROOT") or str(ROOT.parent / "shared" / "data"),
                   help="holds ptb/ for the PTB models (default $PRUNE_DATA_ROOT, else ../shared/data)")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",") if t]
    if not threads or min(threads) < 1 or args.rounds < 1:
        raise SystemExit("bench_infer: --threads and --rounds take positive integers")
    cases = parse_cases(args.models, args.sparsities)

    def log(msg):
        print(msg, flush=True)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"benchmark": "infer", "cpu": cpu_model(), "cores_available": cores, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "load_start": os.getloadavg(),
            "rounds": args.rounds, "threads": threads}
    log(f"CPU: {info['cpu']} ({cores} cores available), torch {torch.__version__}, load {info['load_start'][0]:.2f}")
    if max(threads) > cores:
        log(f"warning: {max(threads)} threads on {cores} available cores: those threads share cores")
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_infer.") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        for name, sparsity in cases:
            log(f"{name} at {100 * sparsity:g}%: exporting")
            try:
                files = make_files(name, sparsity, workdir, args.data_root)
                units = max(1, round(MODELS[name][1] * args.scale))
                by_threads = {t: measure(files, t, args.rounds, units, args.data_root, log) for t in threads}
            except (InferError, datasets.DataError, export.ExportError) as e:
                raise SystemExit(f"bench_infer: {name}: {e}") from None
            rows.append(summarise(name, sparsity, by_threads))
            if not args.keep:
                for f in files.values():
                    f.unlink()
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info["load_end"] = os.getloadavg()
    result = {**info, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nprune-infer, dense file vs csr file, batch 1, median of {args.rounds} alternated rounds; "
          f"CPU: {info['cpu']}; torch {torch.__version__}")
    print(table(rows, threads))
    print(f"wrote {out} in {info['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
