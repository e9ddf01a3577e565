#!/usr/bin/env python
"""Speed and memory benchmarks of the pruning core, measured on this machine's CPU.

    python scripts/bench_pruning.py [--out results/bench/pruning.json] [--quick] [--repeats N]

1. masked_step: a masked training step vs the same dense step (masked = dense step +
   ``pruner.mask_gradients()`` before clipping + ``pruner.step(step)`` after the optimizer
   step, masks already at 90% and no update due), for a PTB-medium LSTM LM (Zaremba: SGD
   lr 1, clip 5, batch 20 x 35) and MobileNet v1 (width 1.0, 32x32 input, 10 classes).
   Dense and masked blocks are interleaved (A B A B ..., order swapped every round) on the
   same model, optimizer and batch, so that drift on a noisy shared CPU falls on both alike.
   ``ratio`` (judged against the target masked / dense <= 1.02) is the median over rounds of
   masked-block median / dense-block median; also reported: ratio of overall medians, of
   25th percentiles and of minima, process-CPU-time ratio, and the two masking calls timed
   inside the masked steps (the masked step is the dense step plus exactly these calls, so
   their share of the dense step is a direct, low-noise estimate: ``pass_direct``), a
   torch.profiler breakdown, and the calls alone and alternatives out of the loop.
   Other processes on a 2-core machine distort everything (an OpenMP parallel region then
   waits a scheduler slice for its second thread): the 1-min load average is recorded per
   round and a warning printed when the machine is busy at the start.
2. mask_update: one ``Pruner.update_masks`` call over PTB-large shapes (66.0M weights),
   schemes uniform and global, 0 -> 0.5 (first call) and 0.8 -> 0.85; compared with 100
   PTB-large training steps (measured directly in the full run; in --quick estimated from
   the PTB step measured in section 1, scaled by matmul FLOPs). Target: < 1% of training.
3. global_threshold_memory: peak RSS growth during ``global_topk_masks`` over GNMT-sized
   weights (211M float32, 843 MB), in a fresh child process; sampled from /proc/self/status
   (VmRSS every 5 ms, and VmHWM after a clear_refs reset). Target: < 1000 MB extra. Also the
   storage of the Pruner's float masks (4 bytes per pruned weight), and a profiler check that
   the selection runs no sort/topk/kthvalue (it is a two-pass 16-bit radix select).
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from prune_cli.pruning import ConstantSchedule, Pruner, global_topk_masks, keep_count, topk_mask  # noqa: E402

TARGET_STEP_RATIO = 1.02
TARGET_UPDATE_FRACTION = 0.01  # one update every UPDATE_EVERY steps, as a fraction of those steps
UPDATE_EVERY = 100
TARGET_EXTRA_MB = 1000.0
SORT_OPS = ("sort", "argsort", "msort", "topk", "kthvalue", "median", "quantile", "nanquantile")
MB = 1e6


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------
# models: through the registry when it is there, else the same architectures inline
# ------------------------------------------------------------------------------------------
class _InlinePTB(nn.Module):
    def __init__(self, vocab, hidden, layers=2, dropout=0.0, init_range=0.1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)
        self.layers, self.hidden = layers, hidden
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range)

    def init_hidden(self, batch):
        w = self.decoder.weight
        return w.new_zeros(self.layers, batch, self.hidden), w.new_zeros(self.layers, batch, self.hidden)

    def forward(self, x, hidden=None):
        out, hidden = self.lstm(self.drop(self.embedding(x)), hidden)
        return self.decoder(self.drop(out)), hidden


_MBV1 = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
         (512, 1), (512, 1), (1024, 2), (1024, 1))


class _InlineDS(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.pw_bn(self.pw(torch.relu(self.dw_bn(self.dw(x))))))


class _InlineMobileNet(nn.Module):
    def __init__(self, width=1.0, num_classes=10):
        super().__init__()
        c = max(int(32 * width), 8)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        blocks = []
        for cout, stride in _MBV1:
            cout = max(int(cout * width), 8)
            blocks.append(_InlineDS(c, cout, stride))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def build_ptb(hidden, dropout, init_range, vocab=10_000):
    try:
        from omegaconf import OmegaConf

        from prune_cli.models import build
        cfg = OmegaConf.create({"name": "ptb_lstm", "hidden": hidden, "layers": 2, "dropout": dropout,
                                "init_range": init_range})
        return build(cfg, {"vocab_size": vocab}), "prune_cli.models (ptb_lstm)"
    except Exception as e:  # registry or family not there (yet): same architecture inline
        return _InlinePTB(vocab, hidden, 2, dropout, init_range), f"inline ({type(e).__name__}: {e})"


def build_mobilenet(width, num_classes=10, image_size=32):
    try:
        from omegaconf import OmegaConf

        from prune_cli.models import build
        cfg = OmegaConf.create({"name": "mobilenet", "width": width, "num_classes": num_classes})
        return build(cfg, {"image_size": image_size, "num_classes": num_classes}), "prune_cli.models (mobilenet)"
    except Exception as e:
        return _InlineMobileNet(width, num_classes), f"inline ({type(e).__name__}: {e})"


def ptb_step_flops(hidden, vocab=10_000, layers=2, tokens=700):
    """Matmul FLOPs of one training step (forward 2*MACs, backward 2x forward)."""
    macs_per_token = layers * 4 * hidden * (hidden + hidden) + hidden * vocab
    return 3 * 2 * macs_per_token * tokens


# ------------------------------------------------------------------------------------------
# 1. masked vs dense training step
# ------------------------------------------------------------------------------------------
def masked_update(pruner, opt, i, masked, t0, clip=None):
    """The part of a step after backward; times the two masking calls when ``masked``."""
    tg = ts = 0.0
    if masked:
        a = time.perf_counter()
        pruner.mask_gradients()
        tg = time.perf_counter() - a
    if clip:
        clip()
    opt.step()
    if masked:
        a = time.perf_counter()
        if pruner.step(i):
            raise RuntimeError("a mask update fell inside the timed steps")
        ts = time.perf_counter() - a
    return time.perf_counter() - t0, tg, ts


class PTBTask:
    def __init__(self, hidden, dropout, init_range, batch=20, bptt=35, sparsity=0.9, seed=0, vocab=10_000):
        torch.manual_seed(seed)
        self.model, self.source = build_ptb(hidden, dropout, init_range, vocab)
        self.model.train()
        self.hidden_size = hidden
        self.vocab = vocab
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1.0)
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randint(0, self.vocab, (batch, bptt), generator=g),
                         torch.randint(0, self.vocab, (batch, bptt), generator=g)) for _ in range(4)]
        self.h = self.model.init_hidden(batch)
        self.patterns = ["embedding.weight", "lstm.weight_*", "decoder.weight"]
        self.pruner = Pruner(self.model, ConstantSchedule(sparsity), self.patterns, optimizer=self.opt)
        self.pruner.step(0)  # the one update: masks at `sparsity` from here on
        self.desc = {
            "model": f"PTB LSTM LM, vocab {vocab}, embedding {hidden}, nn.LSTM 2 x {hidden} batch_first, "
                     f"untied decoder {hidden}->{vocab}, dropout {dropout}",
            "built_by": self.source,
            "batch": f"{batch} x {bptt} tokens",
            "optimizer": "SGD lr 1.0, clip_grad_norm 5 (Zaremba)",
            "pruned_tensors": self.pruner.names,
        }

    def step(self, i, masked):
        x, y = self.batches[i % len(self.batches)]
        t0 = time.perf_counter()
        self.h = tuple(t.detach() for t in self.h)
        self.opt.zero_grad(set_to_none=True)
        out, self.h = self.model(x, self.h)
        loss = nn.functional.cross_entropy(out.reshape(-1, self.vocab), y.reshape(-1))
        loss.backward()
        return masked_update(self.pruner, self.opt, i, masked, t0,
                             clip=lambda: nn.utils.clip_grad_norm_(self.model.parameters(), 5.0))


class MobileNetTask:
    def __init__(self, width, batch, sparsity=0.9, seed=0):
        torch.manual_seed(seed)
        self.model, self.source = build_mobilenet(width)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-5)
        self.set_batch(batch, seed)
        self.patterns = ["blocks.*.pw.weight", "fc.weight"]
        self.pruner = Pruner(self.model, ConstantSchedule(sparsity), self.patterns, optimizer=self.opt)
        self.pruner.step(0)
        self.width = width
        self.desc = {
            "model": f"MobileNet v1 width {width}, 32x32 input (stem conv stride 1), 13 depthwise-separable "
                     "blocks with BN+ReLU, avgpool, fc ->10",
            "built_by": self.source,
            "optimizer": "SGD lr 0.1, momentum 0.9, weight_decay 4e-5, no clipping",
            "memory_format": "contiguous (NCHW)",
            "pruned_tensors": self.pruner.names,
        }

    def set_batch(self, batch, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.batch = batch
        self.x = torch.randn(batch, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (batch,), generator=g)

    def step(self, i, masked):
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        return masked_update(self.pruner, self.opt, i, masked, t0)


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def run_ab(task, warmup, rounds, block):
    """Warm-up, then rounds of [dense block, masked block] (order alternating by round).

    Ratios: ``paired`` is the median over rounds of (masked block median / dense block
    median), the estimate that best cancels drift (primary); also the ratio of the overall
    medians, of the 25th percentiles and of the minima (load from other processes only ever
    adds time, so low percentiles are the least contaminated). ``mask_calls`` are the two
    pruner calls timed inside the masked steps: the masked step is the dense step plus
    exactly these calls, so their share of the dense step is a direct, low-noise estimate.
    """
    step = 1  # step 0 was the mask update; every later step is a non-update step
    for _ in range(warmup):
        task.step(step, False)
        task.step(step + 1, True)
        step += 2
    dense, masked, dense_cpu, masked_cpu, t_grad, t_step, loads = [], [], [], [], [], [], []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        order = (False, True) if r % 2 == 0 else (True, False)
        for is_masked in order:
            walls, cpus = [], []
            for _ in range(block):
                c0 = time.process_time()
                wall, tg, ts = task.step(step, is_masked)
                cpus.append(time.process_time() - c0)
                walls.append(wall)
                if is_masked:
                    t_grad.append(tg)
                    t_step.append(ts)
                step += 1
            (masked if is_masked else dense).append(walls)
            (masked_cpu if is_masked else dense_cpu).append(cpus)
    flat = lambda xss: [x for xs in xss for x in xs]  # noqa: E731
    fd, fm = flat(dense), flat(masked)
    d_med, m_med = median(fd), median(fm)
    round_ratios = [median(m) / median(d) for d, m in zip(dense, masked)]
    paired = median(round_ratios)
    calls = [a + b for a, b in zip(t_grad, t_step)]
    call_med = median(calls)
    return {
        "warmup_pairs": warmup, "rounds": rounds, "block_steps": block, "loadavg_1min_per_round": loads,
        "dense_step_s": dense, "masked_step_s": masked,
        "mask_gradients_s": t_grad, "pruner_step_s": t_step,
        "dense_step_cpu_s": dense_cpu, "masked_step_cpu_s": masked_cpu,
        "dense_median_s": d_med, "masked_median_s": m_med,
        "dense_min_s": min(fd), "masked_min_s": min(fm),
        "ratio_of_medians": m_med / d_med,
        "ratio_of_p25": _pct(fm, 0.25) / _pct(fd, 0.25),
        "ratio_of_minima": min(fm) / min(fd),
        "round_ratios": round_ratios, "ratio_paired_median": paired,
        "round_ratio_min": min(round_ratios), "round_ratio_max": max(round_ratios),
        "ratio": paired,
        "cpu_ratio_of_medians": median(flat(masked_cpu)) / median(flat(dense_cpu)),
        "mask_gradients_median_s": median(t_grad), "pruner_step_median_s": median(t_step),
        "mask_calls_median_s": call_med,
        "mask_calls_fraction_of_dense": call_med / d_med,
        "mask_calls_fraction_of_dense_min": min(calls) / min(fd),
        "target_ratio": TARGET_STEP_RATIO,
        "pass": paired <= TARGET_STEP_RATIO,
        "pass_direct": 1.0 + call_med / d_med <= TARGET_STEP_RATIO,
    }


class _quiet_stderr:
    """Silence C-level stderr (the profiler's kineto start/stop and no-GPU lines) for a block."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


def profile_masked_step(task, steps=2):
    """Top aten ops (self CPU time) over a few masked steps, and the time in the mask multiplies.

    On CPU ``torch._foreach_mul_`` runs one ``mul_`` per tensor (its children), so its
    inclusive time is what the masking costs; ``mul_`` in the top list mixes those with the
    model's own multiplies.
    """
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for i in range(steps):
            task.step(1000 + i, True)
        wall = (time.perf_counter() - t) / steps
    ev = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:12]
    fe = sum(e.cpu_time_total for e in ev if e.key == "aten::_foreach_mul_") / 1e6 / steps
    return {"steps": steps, "step_wall_s": wall,
            "top_ops_self_cpu": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3 / steps,
                                  "calls_per_step": e.count / steps} for e in top],
            "foreach_mul_inclusive_s_per_step": fe, "foreach_mul_share_of_step_wall": fe / wall}


def mask_profile(pruner, model, repeats=15):
    """Where the masking time goes, out of the training loop: each call alone and alternatives."""
    params, masks = pruner._masked_params, pruner._mask_list
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    numel = sum(p.numel() for p in params)
    inv_bool = [m == 0 for m in masks]
    keep_bool = [m != 0 for m in masks]

    def timed(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return median(ts)

    out = {
        "masked_elements": numel,
        "float_mask_bytes": sum(m.numel() * m.element_size() for m in masks),
        "mask_gradients_s": timed(pruner.mask_gradients),
        "apply_masks_s": timed(pruner.apply_masks),
        "pruner_step_non_update_s": timed(lambda: pruner.step(1)),
        "is_update_step_s": timed(lambda: pruner.is_update_step(1)),
        "alt_foreach_mul_float_grads_s": timed(lambda: torch._foreach_mul_(grads, masks)),
        "alt_loop_mul_float_grads_s": timed(lambda: [g.mul_(m) for g, m in zip(grads, masks)]),
        "alt_masked_fill_bool_grads_s": timed(lambda: [g.masked_fill_(b, 0) for g, b in zip(grads, inv_bool)]),
        "alt_mul_bool_grads_s": timed(lambda: [g.mul_(b) for g, b in zip(grads, keep_bool)]),
        "ref_copy_grads_s": timed(lambda: [g.copy_(m) for g, m in zip(grads, masks)]),
    }
    out["bytes_moved_per_mask_call"] = 12 * numel  # read grad/weight + read mask + write, float32
    out["effective_GBps_mask_gradients"] = out["bytes_moved_per_mask_call"] / out["mask_gradients_s"] / 1e9
    return out


def bench_masked_step(args):
    quick = args.quick
    rounds = args.repeats or (3 if quick else 20)
    block = args.block or (1 if quick else 2)
    warmup = 1 if quick else 3
    res = {}

    hidden, vocab = (128, 2000) if quick else (650, 10_000)
    print(f"[1a] PTB LSTM hidden {hidden}: {rounds} rounds x {block} steps per mode ...", flush=True)
    task = PTBTask(hidden, 0.0 if quick else 0.5, 0.1 if quick else 0.05, vocab=vocab)
    r = run_ab(task, warmup, rounds, block)
    r.update(task.desc)
    r["hidden"], r["vocab"] = hidden, vocab
    r["sparsity_achieved"] = task.pruner.sparsity()
    if not quick:
        r["torch_profile"] = profile_masked_step(task)
    r["profile"] = mask_profile(task.pruner, task.model, 3 if quick else 15)
    res["ptb_lstm"] = r
    del task
    gc.collect()

    width = 0.25 if quick else 1.0
    batch = 16 if quick else 128
    print(f"[1b] MobileNet v1 width {width}: {rounds} rounds x {block} steps per mode ...", flush=True)
    task = MobileNetTask(width, batch)
    probe = [task.step(1 + i, False)[0] for i in range(1 if quick else 3)]
    if not quick and min(probe[1:]) > 3.0:  # the first step pays one-off initialisation
        task.set_batch(32)
    r = run_ab(task, warmup, rounds, block)
    r.update(task.desc)
    r["batch"] = task.batch
    r["batch_probe_s_at_first_batch"] = probe
    r["width"] = width
    r["sparsity_achieved"] = task.pruner.sparsity()
    if not quick:
        r["torch_profile"] = profile_masked_step(task)
    r["profile"] = mask_profile(task.pruner, task.model, 3 if quick else 15)
    res["mobilenet_v1"] = r
    del task
    gc.collect()
    return res


# ------------------------------------------------------------------------------------------
# 2. mask update time at PTB-large scale
# ------------------------------------------------------------------------------------------
class ParamBag(nn.Module):
    def __init__(self, shapes, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.names = []
        for name, shape in shapes:
            setattr(self, name, nn.Parameter(torch.randn(*shape, generator=g)))
            self.names.append(name)


def ptb_shapes(hidden, vocab=10_000, layers=2):
    shapes = [("embedding_weight", (vocab, hidden))]
    for k in range(layers):
        shapes += [(f"lstm_weight_ih_l{k}", (4 * hidden, hidden)), (f"lstm_weight_hh_l{k}", (4 * hidden, hidden))]
    return shapes + [("decoder_weight", (vocab, hidden))]


def measure_large_step(hidden, steps, warmup):
    task = PTBTask(hidden, 0.65, 0.04)
    for i in range(warmup):
        task.step(1 + i, False)
    times = [task.step(10 + i, False)[0] for i in range(steps)]
    del task
    gc.collect()
    return times


def time_updates(shapes, reps, first_level, start, levels, **pruner_kw):
    """Seconds of a Pruner's first mask update (0 -> first_level), then, ``reps`` times from a
    snapshot at ``start``, of each update in ``levels`` (applied in order); the final NNZ."""
    bag = ParamBag(shapes)
    pruner = Pruner(bag, ConstantSchedule(levels[-1]), bag.names, **pruner_kw)
    at = lambda s: {n: s for n in pruner.names}  # noqa: E731
    t = time.perf_counter()
    pruner.update_masks(at(first_level))
    first = time.perf_counter() - t
    pruner.update_masks(at(start))
    snap = pruner.state_dict()
    times = [[] for _ in levels]
    for _ in range(reps):
        pruner.load_state_dict(snap)
        for level, out in zip(levels, times):
            t = time.perf_counter()
            pruner.update_masks(at(level))
            out.append(time.perf_counter() - t)
    return first, times, sum(s.nnz for s in pruner.stats()), pruner


def bench_mask_update(args, ptb_step):
    quick = args.quick
    hidden = 300 if quick else 1500
    reps = 1 if quick else 3
    shapes = ptb_shapes(hidden)
    total = sum(a * b for _, (a, b) in shapes)
    print(f"[2] mask updates over {total / 1e6:.1f}M weights (PTB hidden {hidden} shapes) ...", flush=True)
    out = {"hidden": hidden, "weights": total, "shapes": {n: list(s) for n, s in shapes}, "schemes": {}}
    for scheme in ("uniform", "global"):
        first, (times,), nnz, pruner = time_updates(shapes, reps, 0.5, 0.8, [0.85], scheme=scheme)
        expect = (keep_count(total, 0.85) if scheme == "global"
                  else sum(keep_count(p.numel(), 0.85) for p in pruner.params))
        out["schemes"][scheme] = {
            "first_update_0_to_0.5_s": first, "update_0.8_to_0.85_s": times,
            "update_0.8_to_0.85_median_s": median(times), "nnz_exact": nnz == expect,
        }
        del pruner
        gc.collect()

    # N:M (issue 11): uniform 2:4 on the same shapes, on the way to 50% (0.3 -> 0.4) and the
    # final update (0.4 -> 0.5, where the group tops are the mask and no select runs)
    out["patterns"] = {}
    for pattern in ("2:4",):
        first, (mid, final), nnz, pruner = time_updates(shapes, reps, 0.25, 0.3, [0.4, 0.5], pattern=pattern)
        out["patterns"][pattern] = {
            "first_update_0_to_0.25_s": first, "update_0.3_to_0.4_s": mid, "update_0.4_to_0.5_s": final,
            "update_0.3_to_0.4_median_s": median(mid), "update_0.4_to_0.5_median_s": median(final),
            "nnz_exact": nnz == sum(p.numel() // 2 for p in pruner.params),
        }
        del pruner
        gc.collect()

    # one PTB-large training step: measured (full run) and FLOP-scaled from section 1's PTB step
    flops_ratio = ptb_step_flops(1500) / ptb_step_flops(ptb_step["hidden"], ptb_step["vocab"])
    est = ptb_step["dense_median_s"] * flops_ratio
    step = {"estimated_s": est, "estimated_from": f"PTB hidden {ptb_step['hidden']} vocab {ptb_step['vocab']} "
            f"dense step median "
            f"{ptb_step['dense_median_s']:.3f} s x matmul-FLOP ratio {flops_ratio:.2f}"}
    if not quick:
        print("[2] one PTB-large (hidden 1500) dense training step, measured ...", flush=True)
        times = measure_large_step(1500, steps=4, warmup=1)
        step.update({"measured_s": times, "measured_median_s": median(times)})
        step["used"], step_s = "measured", median(times)
    else:
        step["used"], step_s = "estimated", est
    step["step_s"] = step_s
    out["ptb_large_step"] = step
    out["update_every_steps"] = UPDATE_EVERY
    out["target_fraction"] = TARGET_UPDATE_FRACTION
    for scheme, r in out["schemes"].items():
        worst = max(r["first_update_0_to_0.5_s"], r["update_0.8_to_0.85_median_s"])
        # weights in quick mode are fewer than PTB-large: scale the update time linearly to 66M
        scale = sum(a * b for _, (a, b) in ptb_shapes(1500)) / total
        r["update_s_at_66M"] = worst * scale
        r["fraction_of_100_steps"] = worst * scale / (UPDATE_EVERY * step_s)
        r["pass"] = r["fraction_of_100_steps"] < TARGET_UPDATE_FRACTION
        if quick:
            r["note"] = f"quick: update time scaled linearly x{scale:.2f} to 66M weights"
    for pattern, r in out["patterns"].items():
        worst = max(r["first_update_0_to_0.25_s"], r["update_0.3_to_0.4_median_s"], r["update_0.4_to_0.5_median_s"])
        scale = sum(a * b for _, (a, b) in ptb_shapes(1500)) / total
        r["update_s_at_66M"] = worst * scale
        r["fraction_of_100_steps"] = worst * scale / (UPDATE_EVERY * step_s)
        r["pass"] = r["fraction_of_100_steps"] < TARGET_UPDATE_FRACTION
    return out


# ------------------------------------------------------------------------------------------
# 3. peak memory of a global threshold over GNMT-sized weights (child process)
# ------------------------------------------------------------------------------------------
def gnmt_shapes(hidden=1024, vocab=36_549):
    """3 vocab x hidden tensors (embeddings, softmax) + GNMT-style 8-layer LSTM stacks + attention."""
    h4 = 4 * hidden
    shapes = [("src_embedding", (vocab, hidden)), ("tgt_embedding", (vocab, hidden)), ("softmax", (vocab, hidden))]
    for d in ("fw", "bw"):  # encoder layer 0 is bidirectional
        shapes += [(f"enc0_{d}_ih", (h4, hidden)), (f"enc0_{d}_hh", (h4, hidden))]
    shapes += [("enc1_ih", (h4, 2 * hidden)), ("enc1_hh", (h4, hidden))]
    for k in (2, 3):
        shapes += [(f"enc{k}_ih", (h4, hidden)), (f"enc{k}_hh", (h4, hidden))]
    for k in range(4):  # decoder layers take [input, attention context]
        shapes += [(f"dec{k}_ih", (h4, 2 * hidden)), (f"dec{k}_hh", (h4, hidden))]
    return shapes + [("att_query", (hidden, hidden)), ("att_memory", (hidden, hidden))]


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


class PeakRSS:
    """Peak VmRSS while the block runs: a 5 ms sampling thread, and VmHWM after clear_refs."""

    def __init__(self, interval=0.005):
        self.interval = interval

    def __enter__(self):
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.hwm_ok = True
        except OSError:
            self.hwm_ok = False
        self.base_kb = _status_kb("VmRSS")
        self.peak_kb = self.base_kb
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("VmRSS"))
            self.samples += 1
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.end_kb = _status_kb("VmRSS")
        hwm = _status_kb("VmHWM") if self.hwm_ok else -1
        self.peak_kb = max(self.peak_kb, self.end_kb, hwm)
        self.hwm_kb = hwm
        return False

    def report(self, output_bytes):
        extra = (self.peak_kb - self.base_kb) * 1024 / MB
        return {"seconds": self.seconds, "baseline_rss_MB": self.base_kb * 1024 / MB,
                "peak_rss_MB": self.peak_kb * 1024 / MB, "vmhwm_MB": self.hwm_kb * 1024 / MB if self.hwm_ok else None,
                "samples": self.samples, "peak_extra_MB": extra,
                "returned_bool_masks_MB": output_bytes / MB,
                "peak_extra_beyond_returned_masks_MB": extra - output_bytes / MB}


def memory_child(quick):
    torch.manual_seed(0)
    shapes = gnmt_shapes(128, 36_549 // 8) if quick else gnmt_shapes()
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(*s, generator=g) for _, s in shapes]
    total = sum(w.numel() for w in weights)
    out = {"shapes": {n: list(s) for n, s in shapes}, "weights": total,
           "weights_MB": total * 4 / MB, "target_extra_MB": TARGET_EXTRA_MB,
           "method": "two-pass 16-bit radix select on int32 magnitude keys (torch.bincount histograms, "
                     "one tensor's keys at a time, 4M-element chunks), then one compare pass; no sort/topk",
           "lstm_weights": sum(a * b for n, (a, b) in shapes if n[:3] in ("enc", "dec")),
           "vocab_weights": sum(a * b for n, (a, b) in shapes if n.endswith(("embedding", "softmax")))}

    # (a) first threshold, no existing masks: keep 50%
    with PeakRSS() as pk:
        new = global_topk_masks(weights, keep_count(total, 0.5))
    out["first_0_to_0.5"] = pk.report(sum(m.numel() for m in new))
    assert all(m.dtype == torch.bool for m in new)
    assert sum(int(m.sum()) for m in new) == keep_count(total, 0.5)
    del new
    gc.collect()

    # (b) with the Pruner's float masks at 0.8 passed in (what Pruner.update_masks does): -> 0.85
    old = [m.float() for m in global_topk_masks(weights, keep_count(total, 0.8))]
    out["float_masks_storage_MB"] = sum(m.numel() * m.element_size() for m in old) / MB
    gc.collect()
    with PeakRSS() as pk:
        new = global_topk_masks(weights, keep_count(total, 0.85), old)
    out["update_0.8_to_0.85_with_float_masks"] = pk.report(sum(m.numel() for m in new))
    assert sum(int(m.sum()) for m in new) == keep_count(total, 0.85)
    worst = max(out["first_0_to_0.5"]["peak_extra_MB"], out["update_0.8_to_0.85_with_float_masks"]["peak_extra_MB"])
    out["worst_peak_extra_MB"] = worst
    out["pass"] = worst < TARGET_EXTRA_MB
    del new, old, weights
    out["sort_check"] = sort_free_check()
    return out


def sort_free_check():
    """Profile a selection and list the aten ops it ran: none may be a sort."""
    from torch.profiler import ProfilerActivity, profile
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(1000, 700, generator=g), torch.randn(3000, 100, generator=g)]
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        masks = global_topk_masks(ws, 300_000)
        topk_mask(ws[0], 1234, masks[0].float())
    ops = sorted({e.key for e in prof.key_averages() if e.key.startswith("aten::")})
    hits = [o for o in ops if o.split("::")[1].lstrip("_").split(".")[0] in SORT_OPS]
    return {"aten_ops": ops, "sort_like_ops_found": hits, "sort_free": not hits}


def bench_memory(args):
    print("[3] global threshold over GNMT-sized weights, in a child process ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child"] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(), "loadavg_start": os.getloadavg()}


def print_table(res):
    ms = res["masked_step"]
    print("\n== masked vs dense training step (target masked/dense <= %.2f; ratio = median of paired rounds) =="
          % TARGET_STEP_RATIO)
    print(f"{'model':13s} {'batch':>8s} {'dense med':>9s} {'masked med':>10s} {'ratio':>7s} {'[min,max] rounds':>16s}"
          f" {'med/med':>7s} {'p25':>6s} {'min':>6s} {'cpu':>6s} {'calls %':>7s} {'pass':>5s}")
    for name, r in ms.items():
        batch = str(r["batch"]).replace(" tokens", "")
        print(f"{name:13s} {batch:>8s} {r['dense_median_s']:9.4f} {r['masked_median_s']:10.4f} {r['ratio']:7.4f} "
              f"[{r['round_ratio_min']:.3f},{r['round_ratio_max']:.3f}] {r['ratio_of_medians']:7.4f} "
              f"{r['ratio_of_p25']:6.3f} {r['ratio_of_minima']:6.3f} {r['cpu_ratio_of_medians']:6.3f} "
              f"{100 * r['mask_calls_fraction_of_dense']:6.2f}% {str(r['pass']):>5s}")
    for name, r in ms.items():
        p = r["profile"]
        line = (f"  {name}: in-loop mask_gradients {1e3 * r['mask_gradients_median_s']:.2f} ms + pruner.step "
                f"{1e3 * r['pruner_step_median_s']:.2f} ms = {100 * r['mask_calls_fraction_of_dense']:.2f}% of the "
                f"dense step ({100 * r['mask_calls_fraction_of_dense_min']:.2f}% min/min); "
                f"{p['masked_elements'] / 1e6:.2f}M masked weights. Out of loop: mask_gradients "
                f"{1e3 * p['mask_gradients_s']:.2f} ms, apply_masks {1e3 * p['apply_masks_s']:.2f} ms, is_update_step "
                f"{1e6 * p['is_update_step_s']:.1f} us; alternatives on the grads: loop mul_ "
                f"{1e3 * p['alt_loop_mul_float_grads_s']:.2f} ms, bool masked_fill_ "
                f"{1e3 * p['alt_masked_fill_bool_grads_s']:.2f} ms, bool mul_ {1e3 * p['alt_mul_bool_grads_s']:.2f} ms")
        if "torch_profile" in r:
            tp = r["torch_profile"]
            top = ", ".join(f"{o['op'][6:]} {o['self_cpu_ms']:.1f}" for o in tp["top_ops_self_cpu"][:6])
            line += (f"\n    profiler: _foreach_mul_ (both mask calls) {1e3 * tp['foreach_mul_inclusive_s_per_step']:.2f} ms"
                     f" = {100 * tp['foreach_mul_share_of_step_wall']:.2f}% of a profiled masked step; "
                     f"top ops (self, ms/step): {top}")
        print(line)
    mu = res["mask_update"]
    st = mu["ptb_large_step"]
    print(f"\n== mask update over {mu['weights'] / 1e6:.1f}M weights (PTB hidden {mu['hidden']}); "
          f"PTB-large step {st['step_s']:.3f} s ({st['used']}; FLOP estimate {st['estimated_s']:.3f} s) ==")
    print(f"{'scheme':8s} {'0->0.5 s':>9s} {'0.8->0.85 s':>12s} {'@66M s':>8s} {'/100 steps':>11s} {'pass':>5s}")
    for scheme, r in mu["schemes"].items():
        print(f"{scheme:8s} {r['first_update_0_to_0.5_s']:9.3f} {r['update_0.8_to_0.85_median_s']:12.3f} "
              f"{r['update_s_at_66M']:8.3f} {100 * r['fraction_of_100_steps']:10.3f}% {str(r['pass']):>5s}")
    for pattern, r in mu.get("patterns", {}).items():
        print(f"N:M {pattern}: 0->0.25 {r['first_update_0_to_0.25_s']:.3f} s, 0.3->0.4 {r['update_0.3_to_0.4_median_s']:.3f} s, "
              f"0.4->0.5 (final) {r['update_0.4_to_0.5_median_s']:.3f} s; worst at 66M {r['update_s_at_66M']:.3f} s "
              f"= {100 * r['fraction_of_100_steps']:.3f}% of 100 steps, pass {r['pass']}, exact NNZ {r['nnz_exact']}")
    gm = res["global_threshold_memory"]
    print(f"\n== global threshold over {gm['weights'] / 1e6:.1f}M weights ({gm['weights_MB']:.0f} MB float32); "
          f"target extra < {TARGET_EXTRA_MB:.0f} MB ==")
    for key in ("first_0_to_0.5", "update_0.8_to_0.85_with_float_masks"):
        r = gm[key]
        print(f"{key:38s} {r['seconds']:7.2f} s  peak extra {r['peak_extra_MB']:7.1f} MB "
              f"(returned bool masks {r['returned_bool_masks_MB']:.0f} MB, beyond them "
              f"{r['peak_extra_beyond_returned_masks_MB']:.1f} MB)")
    print(f"Pruner float masks (storage, 4 B / pruned weight, not threshold cost): "
          f"{gm['float_masks_storage_MB']:.0f} MB for these {gm['weights'] / 1e6:.1f}M weights; "
          f"{mu['weights'] * 4 / MB:.0f} MB for the {mu['weights'] / 1e6:.1f}M of section 2; "
          + ", ".join(f"{n} {r['profile']['float_mask_bytes'] / MB:.1f} MB" for n, r in ms.items()))
    sc = gm["sort_check"]
    print(f"selection method: {gm['method']}; profiler sort-like ops: {sc['sort_like_ops_found'] or 'none'}; "
          f"pass: {gm['pass']}")
    print("\nall targets pass:", res["all_pass"], "| failed:", ", ".join(res["failed"]) or "none")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/bench/pruning.json", help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run (< 60 s)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved dense/masked rounds per model (default 20, quick 3)")
    ap.add_argument("--block", type=int, default=None,
                    help="steps per dense or masked block (default 2, quick 1)")
    ap.add_argument("--_memory-child", dest="memory_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.quick)))
        return 0

    t0 = time.perf_counter()
    res = {"meta": machine_info()}
    res["meta"].update({"quick": args.quick, "repeats": args.repeats, "block": args.block})
    if res["meta"]["loadavg_start"][0] > (os.cpu_count() or 1) * 0.75:
        print(f"warning: load average {res['meta']['loadavg_start'][0]:.2f} on {os.cpu_count()} CPUs: "
              "other processes are competing; timings will be noisy", flush=True)
    res["masked_step"] = bench_masked_step(args)
    res["mask_update"] = bench_mask_update(args, res["masked_step"]["ptb_lstm"])
    res["global_threshold_memory"] = bench_memory(args)
    targets = {f"masked_step.{n}": r["pass"] for n, r in res["masked_step"].items()}
    targets.update({f"mask_update.{s}": r["pass"] for s, r in res["mask_update"]["schemes"].items()})
    targets.update({f"mask_update.{p}": r["pass"] for p, r in res["mask_update"].get("patterns", {}).items()})
    targets["global_threshold_memory"] = res["global_threshold_memory"]["pass"]
    targets["sort_free"] = res["global_threshold_memory"]["sort_check"]["sort_free"]
    res["targets"] = targets
    res["failed"] = [k for k, v in targets.items() if not v]
    res["all_pass"] = not res["failed"]
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["runtime_s"] = time.perf_counter() - t0

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print_table(res)
    print(f"\nwrote {out} in {res['meta']['runtime_s']:.0f} s "
          f"(load average {res['meta']['loadavg_start'][0]:.2f} -> {res['meta']['loadavg_end'][0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
