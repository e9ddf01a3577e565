#!/usr/bin/env python
"""Benchmark `prune-report` end to end on generated run folders.

    python scripts/bench_report.py [--runs 1000] [--out results/bench/report.json] [--keep DIR]

Generates N finished runs (summary.json, .hydra/config.yaml and a small metrics.csv and
sparsity.csv each, as prune-run writes them) spread over all four families (GNMT in both
directions), sizes, sparsities and seeds (so points have 1 to N/configurations seeds), a few runs
that repeat a (config, seed), exports.json on some sparse runs, plus a few incomplete and corrupt
runs, then times `prune_cli.report.cli.main` in-process (collect -> points -> tables -> figures ->
page).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (family, dataset, synthetic, base field, base value, NNZ of the dense base, sparsities, quality)
GRID = [
    ("ptb_lstm", "ptb", False, "size", "small", 4.6e6, [0.0], 115.0),
    ("ptb_lstm", "ptb", False, "size", "medium", 19.8e6, [0, .8, .85, .9, .95, .975], 83.0),
    ("ptb_lstm", "ptb", False, "size", "large", 66e6, [0, .8, .85, .9, .95, .975], 78.0),
    *[("mobilenet", ds, False, "width", w, 4.21e6 * w * w, [0.0], 70.0 * w ** 0.2)
      for ds in ("imagenet", "cifar10") for w in (0.25, 0.5, 0.75)],
    *[("mobilenet", ds, False, "width", 1.0, 4.21e6, [0, .5, .75, .9, .95], 70.0)
      for ds in ("imagenet", "cifar10")],
    ("mobilenet", "fake_imagenet", True, "width", 1.0, 4.21e6, [0, .9], 0.1),
    ("inception_v3", "imagenet", False, "width", None, 27.1e6, [0, .5, .75, .875], 78.0),
    *[("gnmt", "wmt16", False, "units", u, 211e6 * (u / 1024) ** 2, [0.0], 26.0)
      for u in (256, 512, 768)],
    ("gnmt", "wmt16", False, "units", 1024, 211e6, [0, .8, .85, .9], 26.7),
]
# the composed config, as .hydra/config.yaml holds it (about the size of a real one: 2 KB)
CONFIG = """sparsity: {s}
seed: {seed}
device: auto
results_dir: results
exp_name: {exp}
init_from: auto
trainer:
  epochs: 13
  max_steps: 1000
  checkpoint_every: 100
  eval_every: 1000000
  log_every: 50
  eval_splits:
  - valid
  progress: false
pruning:
  name: gradual
  scheme: uniform
  initial_sparsity: 0.0
  begin_step: 60
  end_step: 300
  frequency: 20
data:
  name: {ds}
  root: ${{oc.env:PRUNE_DATA_ROOT,${{data_home:}}}}
  download: true
  batch_size: 20
optim:
  name: sgd
  lr: 1.0
  momentum: 0.0
  weight_decay: 0.0
  lr_schedule:
    name: epoch_decay
    decay: 0.5
    constant_epochs: 4
model:
  name: {fam}
  {key}: {val}
  layers: 2
  prune:
  - embedding.weight
  - lstm.weight_*
  - decoder.weight
""" + "".join(f"  preset_{i}:\n    hidden: {i}\n    dropout: 0.{i}\n    bptt: 35\n" for i in range(12))


def summary(fam, ds, syn, key, val, nnz0, s, q, seed, rng) -> dict:
    nnz = int(nnz0 * (1 - s))
    bitmask, csr = int(nnz0 / 8), int(nnz * 0.5)
    quality = q * (1 - 0.3 * s ** 4) + rng.gauss(0, 0.3)
    d = dict(schema_version=1, family=fam, model=fam, dataset=ds, synthetic=syn,
             size=None, hidden=None, width=None, units=None, target_sparsity=s,
             achieved_sparsity=s, pruning="gradual" if s else "none", scheme="uniform",
             params_total=int(nnz0), params_nnz=nnz, bytes_dense=int(4 * nnz0),
             bytes_bitmask=bitmask, bytes_csr=csr, bytes_csr_exact=csr + 17,
             model_size_mb=(4 * nnz + (min(bitmask, csr) if s else 0)) / 1e6,
             steps=1000, epochs=1.0, wall_time_s=12.0, seed=seed, git_sha="bench",
             torch_version="bench", device="cpu", status="finished", init_from="none", lr=0.1)
    d[key] = val
    if fam == "ptb_lstm":
        d.update(perplexity=quality + 40 * s ** 3, val_perplexity=quality + 41 * s ** 3)
    elif fam == "gnmt":
        d.update(bleu=quality, val_bleu=quality - 1, direction=("de-en", "en-de")[seed % 2],
                 bleu_signature="nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:2")
    else:
        d.update(top1=quality, top5=min(99.0, quality + 18))
    return d


def write_run(d: Path, summ: dict | None, rows: int, layers: int) -> None:
    d.mkdir(parents=True)
    if summ is not None:
        (d / ".hydra").mkdir()
        (d / ".hydra" / "config.yaml").write_text(CONFIG.format(
            s=summ["target_sparsity"], seed=summ["seed"], exp=summ["exp_name"],
            ds=summ["dataset"], fam=summ["family"], key="units" if summ["family"] == "gnmt" else "hidden",
            val=summ.get("units") or summ.get("hidden") or 0))
        if summ["target_sparsity"] > 0 and summ["seed"] == 0:
            nnz, tot = summ["params_nnz"], summ["params_total"]
            (d / "exports.json").write_text(json.dumps([
                dict(format=f, dtype=t, file=f"model.{f}.{t}.safetensors", bytes=b, predicted_bytes=b)
                for f, t, b in (("dense", "float32", 4 * tot), ("bitmask", "float32", 4 * nnz + tot // 8),
                                ("csr", "float32", 8 * nnz), ("bitmask", "int8", nnz + tot // 8))]))
    s = (summ or {}).get("target_sparsity", 0.5)
    m = ["step,epoch,split,metric,value"]
    for i in range(rows):
        t = i * 10
        m += [f"{t},0,train,loss,{5 - i / rows:.4f}", f"{t},0,train,lr,{0.1 * 0.99 ** i:.6f}",
              f"{t},0,train,sparsity,{s * min(1, i / (rows / 2)):.4f}"]
        if i % 10 == 0:
            m.append(f"{t},0,val,top1,{50 + i / 10:.3f}")
    (d / "metrics.csv").write_text("\n".join(m) + "\n")
    sp = ["step,layer,numel,nnz,target_sparsity,sparsity"]
    for step in (0, 500, 1000):
        sp += [f"{step},layer{j}.weight,1000,{int(1000 * (1 - s * step / 1000))},{s},"
               f"{s * step / 1000:.4f}" for j in range(layers)]
    (d / "sparsity.csv").write_text("\n".join(sp) + "\n")
    if summ is not None:
        (d / "summary.json").write_text(json.dumps(summ))


def generate(root: Path, n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    configs = [(g, s) for g in GRID for s in g[6]]
    runs = root / "runs"
    twins = 0
    for i in range(n):
        (fam, ds, syn, key, val, nnz0, _, q), s = configs[i % len(configs)]
        rep = i // len(configs)
        summ = summary(fam, ds, syn, key, val, nnz0, s, q, rep, rng)
        exp = f"bench_{fam}_{ds}"
        run_id = f"{key}={val},sparsity={s},seed={rep}"
        summ.update(exp_name=exp, run_id=run_id)
        write_run(runs / exp / run_id, summ, rows=40, layers=12)
        if rep == 0 and i % 10 == 0:   # the same (config, seed 0) again, without seed= in its name
            summ = dict(summ, run_id=run_id.replace(",seed=0", ""))
            write_run(runs / exp / summ["run_id"], summ, rows=40, layers=12)
            twins += 1
    for j in range(10):  # in progress
        write_run(runs / "bench_incomplete" / f"run{j}", None, rows=20, layers=4)
    for j in range(5):  # corrupt summary.json
        d = runs / "bench_corrupt" / f"run{j}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text('{"family": "ptb_lstm", "params_nnz": ')
    return dict(finished=n + twins, seed_twins=twins, incomplete=10, corrupt=5,
                configurations=len(configs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--out", default="results/bench/report.json")
    ap.add_argument("--keep", default=None, help="generate into this folder and keep it")
    ap.add_argument("--no-subprocess", action="store_true",
                    help="skip the second timing through the prune-report console script")
    a = ap.parse_args(argv)

    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        t0 = time.perf_counter()
        gen = generate(tmp, a.runs)
        t_gen = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        from prune_cli.report.cli import main as report_main  # import counted: end to end
        rc = report_main(["--results-dir", str(tmp), "--out", str(tmp / "report")])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_files = sum(1 for p in (tmp / "report").rglob("*") if p.is_file())
        sub = None
        if not a.no_subprocess:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from prune_cli.report.cli import "
                            "main; sys.exit(main())", "--results-dir", str(tmp), "--out",
                            str(tmp / "report2")], check=True, stdout=subprocess.DEVNULL)
            sub = round(time.perf_counter() - t0, 3)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res = dict(benchmark="prune-report end to end (imports included), in-process", runs=a.runs,
               **gen, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
               subprocess_seconds=sub, generate_seconds=round(t_gen, 3), exit_code=rc,
               report_files=n_files, budget_seconds=10.0, within_budget=seconds < 10.0,
               cpus=os.cpu_count(), load_avg_1min=round(os.getloadavg()[0], 2),
               python=platform.python_version(), machine=platform.machine(),
               time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"prune-report on {a.runs} runs: {seconds:.2f} s in-process (cpu {cpu:.2f} s), "
          f"{sub} s as a subprocess (budget 10 s) -> {out}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
