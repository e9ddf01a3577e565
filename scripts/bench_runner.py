"""Runner overhead: a training step through prune-run vs a minimal plain PyTorch loop.

Same model, same data, same optimizer, same threads. prune-run's time is its summary's
wall_time_s (the training loop with its metrics rows, progress bar and checkpoints; start-up
and the final evaluation excluded) divided by its steps; the plain loop is timed the same
way, from its first step to its last. Blocks alternate plain / prune-run
to cancel drift on a busy machine; the medians are compared.

    python scripts/bench_runner.py --family ptb          # PTB small, target <= 1.05x
    python scripts/bench_runner.py --family mobilenet    # MobileNet 1.0 on CIFAR-10, images/s
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

FAMILIES = {
    "ptb": ["model=ptb_lstm", "model.size=small"],
    "mobilenet": ["model=mobilenet", "model.width=1.0", "data=cifar10"],
}


def compose(overrides):
    from hydra import compose, initialize_config_module

    import prune_cli.cli  # noqa: F401  (registers the resolvers)
    with initialize_config_module(config_module="prune_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "run_id"])


def plain_loop(cfg, steps: int) -> float:
    """The loop a researcher would write by hand: seconds per step."""
    from prune_cli import data as datasets
    from prune_cli import models

    torch.manual_seed(0)
    data = datasets.build(cfg.data, 0)
    model = models.build(cfg.model, data.meta)
    lm = cfg.model.task == "language_model"
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.get("momentum", 0.0),
                          weight_decay=cfg.optim.get("weight_decay", 0.0))
    clip = cfg.optim.get("clip_grad_norm")
    channels_last = cfg.trainer.get("channels_last", False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    batches = data.train_epoch(0, 0)
    hidden = None
    t0 = time.perf_counter()  # from the first step, as prune-run's wall_time_s
    for _ in range(steps):
        x, y = next(batches)
        if lm:
            logits, hidden = model(x, hidden)
            hidden = tuple(h.detach() for h in hidden)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                                   reduction="sum") / x.size(0)  # as LanguageModelTask
        else:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return (time.perf_counter() - t0) / steps


def through_prune_run(overrides, steps: int, results: Path) -> float:
    args = [sys.executable, "-m", "prune_cli.cli", *overrides, f"trainer.max_steps={steps}", "trainer.eval_splits=[]",
            f"results_dir={results}", "trainer.progress=true"]
    subprocess.run(args, check=True, capture_output=True)
    summary = next(results.glob("runs/*/*/summary.json"))
    s = json.loads(summary.read_text())
    for p in sorted(results.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    return s["wall_time_s"] / s["steps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="ptb")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    overrides = FAMILIES[args.family]
    cfg = compose(overrides)
    plain, runner = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            plain.append(plain_loop(cfg, args.steps))
            runner.append(through_prune_run(overrides, args.steps, Path(tmp)))
    p, r = statistics.median(plain), statistics.median(runner)
    batch = cfg.data.batch_size
    result = {
        "family": args.family, "overrides": overrides, "steps": args.steps, "rounds": args.rounds,
        "plain_s_per_step": plain, "prune_run_s_per_step": runner,
        "plain_median": p, "prune_run_median": r, "ratio": r / p, "target": 1.05, "pass": r / p <= 1.05,
        "items_per_s": {"plain": batch / p, "prune_run": batch / r}, "batch_size": batch,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    out = Path(args.out or f"results/bench/runner_{args.family}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.family}: plain {p * 1e3:.1f} ms/step, prune-run {r * 1e3:.1f} ms/step, ratio {r / p:.3f} "
          f"(target <= 1.05); {batch / p:.0f} vs {batch / r:.0f} items/s -> {out}")


if __name__ == "__main__":
    main()
