"""Scaling out on one machine: a sweep on the basic vs the joblib launcher, and one run on 1 vs N ranks.

Both through `prune-run` on the real PTB (small LSTM recipe, every run capped at --steps
optimizer steps, evaluated on the validation split only), so what is timed is what a user
waits for, start-up included. Pairs alternate (A, B, A, B, ...) to cancel drift on a busy
machine; the medians are compared.

    python scripts/bench_scale.py sweep   # 4-job sweep: basic vs hydra/launcher=joblib n_jobs=2
    python scripts/bench_scale.py ranks   # one run: 1 process vs torchrun --nproc_per_node=2 (gloo)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["model=ptb_lstm", "model.size=small", "trainer.progress=false", "trainer.eval_splits=[valid]",
       "data.eval_bptt=2000", "init_from=none"]


def timed(cmd, results):
    env = {**os.environ}
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [f"results_dir={results}"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    runs = [json.loads(p.read_text()) for p in Path(results).glob("runs/*/*/summary.json")]
    return wall, runs


def prune_run(*args):
    return [sys.executable, "-m", "prune_cli.cli", *args]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["sweep", "ranks"])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", default="results/bench/scale.json")
    args = ap.parse_args()
    base = RUN + [f"trainer.max_steps={args.steps}"]
    if args.what == "sweep":
        sweep = ["-m", *base, "sparsity=0,0.5,0.8,0.9", "pruning.begin_step=0", f"pruning.end_step={args.steps // 2}",
                 "pruning.frequency=10"]
        pair = {"basic": prune_run(*sweep),
                "joblib n_jobs=2": prune_run(*sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")}
    else:
        pair = {"1 process": prune_run(*base),
                f"{args.ranks} ranks (gloo)": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               f"--nproc_per_node={args.ranks}", "-m", "prune_cli.cli", *base]}
    walls = {k: [] for k in pair}
    train = {k: [] for k in pair}
    quality = {}
    for _ in range(args.rounds):
        for name, cmd in pair.items():
            with tempfile.TemporaryDirectory() as tmp:
                wall, runs = timed(cmd, tmp)
            walls[name].append(wall)
            train[name].append(sum(r["wall_time_s"] for r in runs))
            quality[name] = sorted((r["target_sparsity"], r["params_nnz"], round(r["val_perplexity"], 3)) for r in runs)
    a, b = pair
    record = {
        "what": args.what, "steps_per_run": args.steps, "threads": os.cpu_count(), "load_avg": os.getloadavg(),
        "wall_s": {k: statistics.median(v) for k, v in walls.items()},
        "training_loop_s_summed_over_runs": {k: statistics.median(v) for k, v in train.items()},
        "speedup_wall": statistics.median(walls[a]) / statistics.median(walls[b]),
        "runs (sparsity, nnz, val ppl)": quality,
    }
    print(json.dumps(record, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_name(f"scale_{args.what}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
