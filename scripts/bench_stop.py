#!/usr/bin/env python
"""How long a run takes to save and leave after SIGTERM (issue 20: one step plus a checkpoint).

    python scripts/bench_stop.py [--size medium] [--after 60] [--rounds 3] [--out results/bench/stop.json]

Starts `prune-run` on the real PTB ($PRUNE_DATA_ROOT) with the LSTM of --size, waits until its
metrics.csv shows step --after (train rows every 10 steps; regular checkpoints are off, so the
stop writes the only one), sends SIGTERM and times the process from the signal to its exit.
Beside it: the run's mean training step (the checkpoint's elapsed time over its steps) and the
time to write that checkpoint again with the project's own writer (train/checkpoint.save), so
the figure can be read against "one step plus a checkpoint". Quiet machine only.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from prune_cli.train.folder import checkpoint as ckpt


def one_stop(size: str, after: int, results: Path) -> dict:
    cmd = [sys.executable, "-m", "prune_cli.cli", "model=ptb_lstm", f"model.size={size}", "sparsity=0.9",
           "init_from=none", "trainer.max_steps=100000", "trainer.checkpoint_every=100000", "trainer.log_every=10",
           "trainer.progress=false", "pruning.begin_step=0", "pruning.end_step=400", "pruning.frequency=20",
           f"results_dir={results}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = None
    while proc.poll() is None:
        metrics = metrics or next(results.glob("runs/*/*/metrics.csv"), None)
        if metrics is not None:
            steps = [int(line.split(",", 1)[0]) for line in metrics.read_text().splitlines()[1:] if line[:1].isdigit()]
            if steps and max(steps) >= after:
                break
        time.sleep(0.05)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    exit_s = time.perf_counter() - sent
    state = ckpt.load(metrics.parent / "checkpoint.pt")
    step_s = state["loop"]["elapsed"] / state["loop"]["step"]
    t0 = time.perf_counter()
    ckpt.save(metrics.parent / "again.pt", state)
    save_s = time.perf_counter() - t0
    return {"status": proc.returncode, "stopped_at_step": state["loop"]["step"], "exit_s": exit_s,
            "mean_step_s": step_s, "checkpoint_save_s": save_s,
            "checkpoint_mb": (metrics.parent / "checkpoint.pt").stat().st_size / 1e6,
            "line": [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln][-1:]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--after", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="results/bench/stop.json")
    args = ap.parse_args()
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_stop(args.size, args.after, Path(tmp)))
    record = {"size": args.size, "threads": torch.get_num_threads(), "load_avg": os.getloadavg(), "rounds": rounds,
              "median_exit_s": statistics.median(r["exit_s"] for r in rounds),
              "median_step_plus_checkpoint_s": statistics.median(r["mean_step_s"] + r["checkpoint_save_s"]
                                                                 for r in rounds)}
    print(json.dumps(record, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
