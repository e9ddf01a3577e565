#!/usr/bin/env python
"""GNMT through the project's own pieces: masked vs dense training step, and decoding speed.

    python scripts/bench_gnmt.py [--out results/bench/gnmt.json] [--quick] [--units 256]
        [--layers 4] [--batch 32] [--repeats N] [--checkpoint RUN/checkpoint.pt]

1. masked_step: a training step of GNMT on fake_wmt16 (the paper's vocabulary, 36,548) with
   the TranslationTask's loss, SGD lr 1.0, clip 5 (the paper's recipe), dense vs masked (masks
   at 90% on every pruned tensor of conf/model/gnmt.yaml, no update due): the timed A/B rounds
   and the post-backward helper of scripts/bench_pruning.py (``run_ab``, ``masked_update``), so
   the ratio means what it means there. Target masked / dense <= 1.03.
2. decoding: ``prune_cli.decode.translate`` over the whole Multi30k test set (test_2016_flickr,
   1,000 sentences; needs $PRUNE_DATA_ROOT), greedy and beam 5 and 10, sentences per second
   (wall and per process-CPU second). With ``--checkpoint`` (a multi30k run's checkpoint.pt)
   the trained model decodes as in evaluation (limit ratio * source length + extra, it stops
   at eos); without, an untrained model of the same shape decodes exactly as many steps as
   each reference has pieces (+ eos), the work of a model that stops where the reference does.

Timings on a shared machine: the load average is recorded with every figure.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench_pruning import machine_info, masked_update, run_ab  # noqa: E402  (the shared timing helper)
from prune_cli import data as datasets  # noqa: E402
from prune_cli import models  # noqa: E402
from prune_cli.pruning import ConstantSchedule, Pruner  # noqa: E402

TARGET_STEP_RATIO = 1.03


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import prune_cli.cli  # noqa: F401  (registers the resolvers)
    with initialize_config_module(config_module="prune_cli.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "run_id"])


class GNMTStep:
    """One training step of the project's GNMT with its TranslationTask, for run_ab."""

    def __init__(self, units, layers, batch, sparsity=0.9, seed=0):
        from prune_cli.train.engine.tasks import TranslationTask

        cfg = compose(["model=gnmt", "data=fake_wmt16", f"model.units={units}", f"model.layers={layers}",
                       f"data.batch_size={batch}", f"seed={seed}"])
        torch.manual_seed(seed)
        data = datasets.build(cfg.data, seed)
        self.model = models.build(cfg.model, data.meta)
        self.model.train()
        self.task = TranslationTask(cfg, torch.device("cpu"), data.meta)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr)
        self.clip = cfg.optim.clip_grad_norm
        # One batch for every step: batches bucketed by length differ in work by 2x, which
        # would fall unevenly on the dense and masked blocks.
        self.batch = next(data.train_epoch(0, 0))
        self.pruner = Pruner(self.model, ConstantSchedule(sparsity), list(cfg.model.prune), optimizer=self.opt)
        self.pruner.step(0)  # the one update: masks at `sparsity` from here on
        self.desc = {
            "model": f"GNMT units {units}, layers {layers}, vocab {data.meta['vocab_size']} (fake_wmt16)",
            "params": sum(p.numel() for p in self.model.parameters()),
            "batch": f"{batch} sentence pairs, {int((self.batch[3] != 0).sum())} target tokens",
            "optimizer": f"SGD lr {cfg.optim.lr}, clip_grad_norm {self.clip} (the paper's recipe)",
            "pruned_tensors": self.pruner.names,
        }

    def step(self, i, masked):
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.task.loss(self.model, self.batch).backward()
        return masked_update(self.pruner, self.opt, i, masked, t0,
                             clip=lambda: torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip))


def bench_masked_step(args):
    rounds = args.repeats or (2 if args.quick else 10)
    units, layers, batch = (64, 2, 8) if args.quick else (args.units, args.layers, args.batch)
    print(f"[1] GNMT units {units} layers {layers} batch {batch} on fake_wmt16: {rounds} rounds x 2 steps ...",
          flush=True)
    task = GNMTStep(units, layers, batch)
    r = run_ab(task, warmup=1, rounds=rounds, block=1 if args.quick else 2)
    r.update(task.desc)
    r.update({"units": units, "layers": layers, "sparsity_achieved": task.pruner.sparsity(),
              "target_ratio": TARGET_STEP_RATIO, "pass": r["ratio"] <= TARGET_STEP_RATIO,
              "pass_direct": 1.0 + r["mask_calls_fraction_of_dense"] <= TARGET_STEP_RATIO})
    return r


def bench_decoding(args):
    from prune_cli.decode import translate
    from prune_cli.train.engine.tasks import TranslationTask

    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        cfg = OmegaConf.create(state["config"])
        if cfg.data.name != "multi30k":
            raise SystemExit(f"--checkpoint {args.checkpoint} is a {cfg.data.name} run; give a multi30k one")
        cfg.data.root = os.environ.get("PRUNE_DATA_ROOT", cfg.data.root)
    else:
        units = 64 if args.quick else args.decode_units
        cfg = compose(["model=gnmt", "data=multi30k", f"model.units={units}", "model.layers=2"])
    data = datasets.build(cfg.data, 0)
    model = models.build(cfg.model, data.meta)
    if args.checkpoint:
        model.load_state_dict(state["model"])
    model.eval()
    task = TranslationTask(cfg, torch.device("cpu"), data.meta)
    batches = list(data.eval_splits["test"]())
    if args.quick:
        batches = batches[-1:]  # the shortest sentences
    sentences = sum(b[0].size(0) for b in batches)
    out = {"model": f"GNMT units {cfg.model.units}, layers {cfg.model.layers}, vocab {data.meta['vocab_size']}",
           "trained": bool(args.checkpoint), "checkpoint": args.checkpoint, "sentences": sentences,
           "limit": "ratio * source + extra (evaluation)" if args.checkpoint else "reference pieces + 1 (eos)",
           "beams": {}}
    for beam in ((1, 5) if args.quick else (1, 5, 10)):
        w, c = time.perf_counter(), time.process_time()
        for src, src_len, _, tgt_out, _ in batches:
            limit = task.max_len(src_len) if args.checkpoint else (tgt_out != 0).sum(1)
            translate(model, src, src_len, beam_size=beam, alpha=task.alpha, max_len=limit,
                      bos_id=task.bos_id, eos_id=task.eos_id)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        out["beams"][str(beam)] = {"wall_s": wall, "cpu_s": cpu, "sentences_per_s": sentences / wall,
                                   "sentences_per_cpu_s": sentences / cpu, "loadavg_1min": os.getloadavg()[0]}
        print(f"[2] beam {beam:2d}: {sentences / wall:7.1f} sentences/s ({sentences / cpu:7.1f} per CPU s)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/bench/gnmt.json", help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--units", type=int, default=256, help="GNMT units for the training step (default 256)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32, help="sentence pairs a training step (default 32)")
    ap.add_argument("--repeats", type=int, default=None, help="dense/masked rounds (default 10, quick 2)")
    ap.add_argument("--decode-units", type=int, default=192, help="units of the untrained decoding model")
    ap.add_argument("--checkpoint", default=None, help="a multi30k run's checkpoint.pt to decode with")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    res = {"meta": machine_info()}
    res["meta"].update({"quick": args.quick})
    res["masked_step"] = bench_masked_step(args)
    try:
        datasets.check(compose(["model=gnmt", "data=multi30k", "data.download=false"]).data)
        res["decoding"] = bench_decoding(args)
    except datasets.DataError as e:
        print(f"[2] decoding skipped: {e}", flush=True)
        res["decoding"] = {"skipped": str(e)}
    res["targets"] = {"masked_step": res["masked_step"]["pass"]}
    res["failed"] = [k for k, v in res["targets"].items() if not v]
    res["all_pass"] = not res["failed"]
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["runtime_s"] = time.perf_counter() - t0

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    r = res["masked_step"]
    print(f"\nGNMT masked/dense step: ratio {r['ratio']:.4f} (paired rounds [{r['round_ratio_min']:.3f}, "
          f"{r['round_ratio_max']:.3f}]), dense {r['dense_median_s']:.3f} s, masked {r['masked_median_s']:.3f} s, "
          f"mask calls {100 * r['mask_calls_fraction_of_dense']:.2f}% of the dense step; target <= "
          f"{TARGET_STEP_RATIO}: {'pass' if r['pass'] else 'FAIL'}")
    print(f"wrote {out} in {res['meta']['runtime_s']:.0f} s (load average {res['meta']['loadavg_start'][0]:.2f} -> "
          f"{res['meta']['loadavg_end'][0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
