#!/usr/bin/env python
"""Time what counting MACs adds to a run's start (issue 17: under 1 s for the largest models).

    python scripts/bench_compute.py [--repeats 5] [--out results/bench/compute.json]

A run counts its MACs once, before training (prune_cli/train/plan/costs.counted): it builds its
model again on the meta device and runs the training-mode and the evaluation-mode forward of
one small example there. Timed for InceptionV3 at 299x299 (1000 classes) and GNMT at 1024 units
(4 layers, the paper's 36,548 pieces), the largest of the four families, and for an
equal-compute run's plan (train/plan/plan.make_plan: GNMT 512 given GNMT 1024 @ 90%'s training MACs,
on dense and on sparse kernels, which also walks the partner's whole eq. 1 schedule). The family's
module (torchvision for InceptionV3) is imported first: a run imports it anyway to build its
model. ``cold`` is the first call in the process (it pays torch's lazy set-up of the meta
device), ``median`` the median of the next ``--repeats``. Quiet machine only.
"""
import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prune_cli.config import run_config  # noqa: E402
from prune_cli.train.plan import budget, costs  # noqa: E402
from prune_cli.train.plan.plan import make_plan  # noqa: E402

GNMT_META = {"vocab_size": 36_548, "mean_lengths": {"train": [27.0, 28.0], "test": [25.0, 26.0]}}
CASES = {
    "inception_v3_299": ("inception",
                         {"model": {"name": "inception_v3", "task": "classification", "num_classes": 1000,
                                    "aux_logits": True}, "data": {"batch_size": 32}},
                         {"image_size": 299, "num_classes": 1000}),
    "gnmt_1024": ("gnmt", {"model": {"name": "gnmt", "task": "translation", "units": 1024, "layers": 4},
                           "data": {"batch_size": 128}}, GNMT_META),
}


def timed(fn, repeats: int) -> dict:
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
    return {"cold_s": cold, "median_s": statistics.median(warm), "runs_s": warm}


def gnmt_plan(convention: str):
    """The plan of GNMT 512 matched to GNMT 1024 @ 90% (composed like prune-run composes it)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("prune_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=gnmt", "data=fake_wmt16", "model.units=512", "budget=equal_compute",
                                           "budget.match={model:{units:1024},sparsity:0.9}",
                                           f"budget.convention={convention}"])
    cfg = run_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "run_id")]))
    spe = 4_500_000 // 128  # WMT16's training pairs at batch 128
    return lambda: make_plan(cfg, GNMT_META, spe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "compute.json"))
    a = p.parse_args()
    res = {"meta": {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "torch_num_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}, "counted": {}}
    for name, (module, cfg, meta) in CASES.items():
        importlib.import_module(f"prune_cli.models.{module}")
        cfg = OmegaConf.create(cfg)
        r = timed(lambda: costs.counted(cfg, meta), a.repeats)
        c, why = costs.counted(cfg, meta)
        r.update({"infer_macs_dense": c.infer.dense if c else None, "why_not": why, "target_s": 1.0,
                  "pass": r["cold_s"] < 1.0})
        res["counted"][name] = r
        print(f"{name}: cold {r['cold_s']:.3f} s, median {r['median_s']:.3f} s "
              f"({c.infer.dense:,.0f} MACs per {c.unit})", flush=True)
    for convention in budget.CONVENTIONS:
        r = timed(gnmt_plan(convention), a.repeats)
        res[f"plan_gnmt_512_for_1024_90_{convention}"] = r
        print(f"plan ({convention}): cold {r['cold_s']:.3f} s, median {r['median_s']:.3f} s", flush=True)
    res["meta"]["loadavg_end"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out} (load average {res['meta']['loadavg_start'][0]:.2f} -> {res['meta']['loadavg_end'][0]:.2f})")


if __name__ == "__main__":
    main()
