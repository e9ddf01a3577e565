"""What trainer.tensorboard=true costs a training step: prune-run with and without it.

Each side is prune-run's own figure, its summary's wall_time_s / steps (the training loop with
its metrics rows, mask updates and checkpoints; start-up, the writer's creation and the final
evaluation excluded), timed as scripts/bench_runner.py times prune-run. TensorBoard writes only
at the metrics rows (trainer.log_every) and mask updates, so the family's own log_every is kept.
Rounds alternate which side runs first, to cancel drift; the medians are compared. The issue's
rule: on by default only if it slows a step by at most 1%.

    python scripts/bench_tensorboard.py --family ptb          # PTB small
    python scripts/bench_tensorboard.py --family mobilenet    # MobileNet 1.0 on CIFAR-10
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runner import FAMILIES, through_prune_run  # noqa: E402  (prune-run's s/step, measured one way)

TARGET = 1.01  # at most 1% slower a step, or trainer.tensorboard stays off by default


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="ptb")
    ap.add_argument("--steps", type=int, default=300, help="steps a run (several metrics rows at log_every=50)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    overrides = FAMILIES[args.family]
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                times[on].append(through_prune_run([*overrides, f"trainer.tensorboard={str(on).lower()}"],
                                                   args.steps, Path(tmp)))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    result = {
        "family": args.family, "overrides": overrides, "steps": args.steps, "rounds": args.rounds,
        "off_s_per_step": times[False], "on_s_per_step": times[True], "off_median": off, "on_median": on,
        "ratio": on / off, "target": TARGET, "pass": on / off <= TARGET,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    out = Path(args.out or f"results/bench/tensorboard_{args.family}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.family}: tensorboard off {off * 1e3:.2f} ms/step, on {on * 1e3:.2f} ms/step, ratio {on / off:.4f} "
          f"(target <= {TARGET}) -> {out}")


if __name__ == "__main__":
    main()
