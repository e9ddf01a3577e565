"""Training-step time under trainer.precision=bf16 and trainer.compile=true vs fp32 eager, and recompiles.

The step is the loop's (prune_cli/train/loop.py): forward (+ loss) under autocast, backward,
gradient masking, clipping, optimizer step, pruner step; the model is 90% pruned, and a mask
update lands every --update steps, so a recompile at a mask update would show in the count.
Variants alternate in blocks to cancel drift on a busy machine; medians are compared.

    python scripts/bench_precision.py --family mobilenet   # MobileNet 1.0, 32x32, batch 64
    python scripts/bench_precision.py --family ptb         # PTB small (200 hidden), batch 20 x 20
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from prune_cli import models
from prune_cli.pruning import GradualSchedule, Pruner
from prune_cli.train.engine.precision import autocast, compile_count, compile_model, cpu_lstm_in_fp32


def build(family, batch):
    torch.manual_seed(0)
    if family == "mobilenet":
        from omegaconf import OmegaConf
        cfg = OmegaConf.create({"name": "mobilenet", "width": 1.0, "num_classes": None, "small_input": None, "stride1_blocks": [],
                                "dropout": 0.0, "prune": ["blocks.*.pw.weight", "fc.weight"]})
        model = models.build(cfg, {"num_classes": 10, "image_size": 32}).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        return model, list(cfg.prune), lambda m: F.cross_entropy(m(x), y)
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"name": "ptb_lstm", "hidden": 200, "layers": 2, "dropout": 0.0, "init_range": 0.1,
                            "prune": ["embedding.weight", "lstm.weight_*", "decoder.weight"]})
    model = models.build(cfg, {"vocab_size": 10_000})
    x = torch.randint(0, 10_000, (batch, 20))
    y = torch.randint(0, 10_000, (batch, 20))

    def loss(m):
        logits, _ = m(x, None)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum") / batch
    return model, list(cfg.prune), loss


def variant(family, batch, precision, compiled, update):
    model, prune, loss_fn = build(family, batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = Pruner(model, GradualSchedule(0.9, 0.5, 0, 10_000 * update, update), prune, optimizer=opt)
    pruner.step(0)
    device = torch.device("cpu")
    cpu_lstm_in_fp32(model, precision, device)
    forward = compile_model(model) if compiled else model
    state = {"step": 0}

    def step():
        with autocast(precision, device):
            loss = loss_fn(forward)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pruner.mask_gradients()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state["step"] += 1
        pruner.step(state["step"])
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["mobilenet", "ptb"], default="mobilenet")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int, default=10, help="steps a block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--update", type=int, default=5, help="steps between mask updates")
    ap.add_argument("--out", default="results/bench/precision.json")
    args = ap.parse_args()
    batch = args.batch or (64 if args.family == "mobilenet" else 20)
    names = {"fp32 eager": ("fp32", False), "bf16 eager": ("bf16", False), "fp32 compiled": ("fp32", True)}
    steps, compile_s, graphs = {}, {}, {}
    for name, (precision, compiled) in names.items():
        t0 = time.perf_counter()
        steps[name] = variant(args.family, batch, precision, compiled, args.update)
        steps[name]()  # warm-up (the compile, for the compiled variant)
        compile_s[name] = time.perf_counter() - t0
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, step in steps.items():
            if name == "fp32 compiled":
                before = compile_count()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
            if name == "fp32 compiled":
                graphs.setdefault("new graphs while timing (mask updates included)", 0)
                graphs["new graphs while timing (mask updates included)"] += compile_count() - before
    med = {n: statistics.median(v) for n, v in times.items()}
    record = {
        "family": args.family, "batch": batch, "threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
        "step_s": med, "vs_fp32_eager": {n: med[n] / med["fp32 eager"] for n in med},
        "first_step_s (incl. compile)": compile_s, "graphs_compiled_total": compile_count(), **graphs,
        "mask_updates_while_timing": args.rounds * args.steps // args.update,
    }
    print(json.dumps(record, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(f"precision_{args.family}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
