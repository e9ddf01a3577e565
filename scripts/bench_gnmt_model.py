#!/usr/bin/env python
"""Speed of the GNMT model itself on synthetic batches (no data set, no training loop).

    python scripts/bench_gnmt_model.py [--units 128 256] [--layers 2] [--vocab 8000]
        [--batch 64] [--len 15] [--threads N] [--steps 10] [--beams 1 10] [--out FILE.json]

1. train step: forward + cross-entropy (summed / batch, as the task does) + backward, batch
   ``--batch`` x ``--len`` tokens (source and target lengths drawn in len +- 30%), median of
   ``--steps`` after 2 warm-up steps (wall), and process CPU seconds per step (mean): with one
   thread (``--threads 1``) the CPU time is the work done, much less distorted by other load.
2. decoding: ``prune_cli.decode.translate`` over the same batch for each ``--beams`` (1 =
   greedy), max_len 2 * source length + 10, sentences per wall second (median of 3) and per process-CPU second. An
   untrained model rarely emits eos, so every sentence runs to its limit: a worst case.

Timings on a shared machine: the 1-minute load average is printed with each figure.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from prune_cli.decode import translate  # noqa: E402
from prune_cli.models.gnmt import GNMT  # noqa: E402


def synthetic_batch(batch, length, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = max(1, int(length * 0.7)), int(length * 1.3) + 1
    src_len = torch.randint(lo, hi, (batch,), generator=g)
    tgt_len = torch.randint(lo, hi, (batch,), generator=g)
    src = torch.zeros(batch, int(src_len.max()), dtype=torch.long)
    tgt = torch.zeros(batch, int(tgt_len.max()) + 1, dtype=torch.long)
    for i in range(batch):
        src[i, :src_len[i]] = torch.randint(3, vocab, (int(src_len[i]),), generator=g)
        tgt[i, :tgt_len[i] + 1] = torch.randint(3, vocab, (int(tgt_len[i]) + 1,), generator=g)
    tgt_in, tgt_out = tgt[:, :-1].clone(), tgt[:, 1:].clone()
    tgt_in[:, 0] = 1
    return src, src_len, tgt_in, tgt_out


def train_step_s(model, batch, steps):
    """(median wall seconds, mean process CPU seconds) of a training step."""
    src, src_len, tgt_in, tgt_out = batch
    times = []
    for i in range(steps + 2):
        if i == 2:
            cpu = time.process_time()
        t = time.perf_counter()
        logits = model(src, src_len, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                               ignore_index=0, reduction="sum") / src.size(0)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times), (time.process_time() - cpu) / steps


def decode_sps(model, batch, beam):
    """(sentences per wall second, per process-CPU second)."""
    src, src_len = batch[:2]
    times = []
    cpu = time.process_time()
    for _ in range(3):
        t = time.perf_counter()
        translate(model, src, src_len, beam_size=beam, alpha=1.0, max_len=2 * src_len + 10, bos_id=1, eos_id=2)
        times.append(time.perf_counter() - t)
    return src.size(0) / statistics.median(times), 3 * src.size(0) / (time.process_time() - cpu)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--units", type=int, nargs="+", default=[128, 256])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--len", type=int, default=15)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--beams", type=int, nargs="*", default=[1, 10])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = synthetic_batch(args.batch, args.len, args.vocab)
    rows = []
    for k in args.units:
        torch.manual_seed(0)
        model = GNMT(args.vocab, k, args.layers, dropout=0.2).train()
        row = {"units": k, "layers": args.layers, "vocab": args.vocab, "batch": args.batch,
               "tokens": int((batch[3] != 0).sum()), "threads": args.threads,
               "load_1min": os.getloadavg()[0]}
        wall, cpu = train_step_s(model, batch, args.steps)
        row.update(train_step_s=round(wall, 4), train_step_cpu_s=round(cpu, 4))
        for beam in args.beams:
            wall, cpu = decode_sps(model, batch, beam)
            row.update({f"beam{beam}_sent_per_s": round(wall, 1), f"beam{beam}_sent_per_cpu_s": round(cpu, 1)})
        row["load_1min_end"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
