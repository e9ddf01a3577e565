#!/usr/bin/env python
"""Speed-up of CSR over dense inference vs sparsity, on this machine's CPU.

    python scripts/bench_infer.py [--out results/bench/infer.json] [--figure results/bench/infer_speedup.png]
        [--models ptb_small,ptb_medium,ptb_large,mobilenet_32,mobilenet_224,gnmt_256]
        [--sparsities 0.5,0.75,0.9,0.95,0.975] [--batches 1,32] [--threads 1,2] [--budget 2] [--quick]

One thing is measured: for each model, sparsity, batch size and thread count, the time of one
inference unit of the model with every pruned layer on CSR (prune_cli.infer's modules, forced
to CSR: what a csr file runs) against the same masked model run dense, and their ratio
(``speedup`` = dense time / CSR time). Units:

- PTB LSTM (small 200 / medium 650 / large 1500 units, vocabulary 10,000): one token step of B
  sequences (input [B, 1], the hidden state carried): embedding, 2 LSTM layers, softmax;
  ``items_per_s`` are tokens/s.
- MobileNet v1 1.0: a forward of B images, 32x32 (CIFAR-10, 10 classes; stem at stride 1 as
  the CIFAR runs) or 224x224 (ImageNet, 1000 classes; batch 1 only: batch 32 at 224 takes
  seconds a call here); images/s.
- GNMT, 256 units, 4 layers, vocabulary 36,548 (the paper's WMT16 vocabulary): greedy
  translation of B sentences of 20 source tokens for 20 target steps (encode + 20
  ``decode_step`` calls, no early stop, so both sides do the same work); sentences/s.

Dense baseline: the same masked model with torch's dense kernels. For the LSTM models that is
``nn.LSTM`` on ATen's native CPU kernels, with oneDNN switched off for them
(``torch.backends.mkldnn.flags(enabled=False)``, MobileNet keeps it for its convolutions):
oneDNN's LSTM reorders its weights at every call, which makes one PTB-large token step cost
130 ms of CPU instead of 11 ms here -- a dense baseline that slow would credit CSR with speed
it does not have.

Weights: random (the family's initialisation), masked by the Pruner itself (uniform magnitude
top-k over the family's ``model.prune`` patterns from conf/model/), so every mask has the real
shape and row distribution of a pruned model's; sparsities are raised in order on one model
(magnitude top-k sets are nested, so that equals pruning each level from scratch).

Timing: dense and CSR calls alternate pair by pair (``prune_cli.infer.kernels.time_pair``,
order swapped every pair, after a warm-up call each) for at least 5 pairs and ``--budget``
seconds, and the medians are compared; the 1-minute load average is recorded before and after
each point, because this 2-core machine is shared. Both the wall and the process CPU time of
every call are kept (``speedup``, ``speedup_cpu``); ``--clock`` picks the one the table, figure
and crossovers use: wall on a quiet machine, CPU on a loaded one at 1 thread (time spent
descheduled is not in it; at 2 threads an OpenMP region on a loaded machine waits a scheduler
slice for its second thread, which no clock corrects). The CSR output is checked against the
dense one at every point (``max_abs_diff``).

``crossover``: per model, batch and threads, the sparsity where the speed-up crosses 1,
interpolated linearly in log density between the measured points (null when CSR wins or
loses everywhere; ``crossover_note`` says which).

``kernels``: the CSR alternatives for one PTB-large gate matrix (6000 x 1500) at 90% and 95%,
batch 1 and 32, 1 thread, each against dense ``addmm`` pair by pair: the ones prune-infer uses
(``addmv`` for one row, ``addmm`` with W as CSR and x transposed otherwise) and the others
(``torch.sparse.mm`` CSR and COO, ``torch.sparse.addmm``, CSC, ``x @ W^T`` with W^T as CSR).
"""
import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import statistics  # noqa: E402

from prune_cli.infer.kernels import csr_linear, pair_samples, to_csr  # noqa: E402
from prune_cli.infer.modules import sparsify  # noqa: E402
from prune_cli.pruning import ConstantSchedule, Pruner  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")

SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.975)
PTB_VOCAB = 10000
GNMT_VOCAB = 36548
GNMT_LEN = 20
MODELS = ("ptb_small", "ptb_medium", "ptb_large", "mobilenet_32", "mobilenet_224", "gnmt_256")


def prune_patterns(family: str):
    return list(OmegaConf.load(ROOT / "conf" / "model" / f"{family}.yaml").model.prune)


# ------------------------------------------------------------------------------------------
# models and their inference unit
# ------------------------------------------------------------------------------------------
class Bench:
    """A model, its prune patterns, and how to run one inference unit at batch B."""

    def __init__(self, name: str):
        from prune_cli.models.gnmt import GNMT
        from prune_cli.models.mobilenet import MobileNetV1
        from prune_cli.models.ptb_lstm import PTBLSTM

        self.name = name
        self.channels_last = False
        self.max_batch = None
        if name.startswith("ptb_"):
            hidden = {"ptb_small": 200, "ptb_medium": 650, "ptb_large": 1500}[name]
            self.model, self.family, self.unit = PTBLSTM(PTB_VOCAB, hidden), "ptb_lstm", "tokens"
        elif name.startswith("mobilenet_"):
            self.size = int(name.split("_")[1])
            classes = 10 if self.size <= 64 else 1000
            self.model = MobileNetV1(1.0, classes, small_input=self.size <= 64)
            self.family, self.unit, self.channels_last = "mobilenet", "images", True
            self.model = self.model.to(memory_format=torch.channels_last)
            self.max_batch = 1 if self.size > 64 else None
        elif name.startswith("gnmt_"):
            self.model = GNMT(GNMT_VOCAB, int(name.split("_")[1]), layers=4)
            self.family, self.unit = "gnmt", "sentences"
        else:
            raise SystemExit(f"bench_infer: unknown model {name!r}; valid: {', '.join(MODELS)}")
        self.model.eval()

    def inputs(self, batch: int):
        g = torch.Generator().manual_seed(batch)
        if self.family == "ptb_lstm":
            x = torch.randint(0, PTB_VOCAB, (batch, 1), generator=g)
            return (x, self.model.init_hidden(batch))
        if self.family == "mobilenet":
            x = torch.randn(batch, 3, self.size, self.size, generator=g)
            return (x.contiguous(memory_format=torch.channels_last),)
        src = torch.randint(3, GNMT_VOCAB, (batch, GNMT_LEN), generator=g)
        return (src, torch.full((batch,), GNMT_LEN, dtype=torch.long))

    def run(self, model, inputs):
        """One inference unit; returns a tensor to compare. LSTM models run with oneDNN off (see
        the module docstring), so the dense side is torch's fastest dense LSTM."""
        if self.family != "mobilenet":
            with torch.backends.mkldnn.flags(enabled=False):
                return self._run(model, inputs)
        return self._run(model, inputs)

    def _run(self, model, inputs):
        if self.family == "ptb_lstm":
            logits, _ = model(*inputs)
            return logits
        if self.family == "mobilenet":
            return model(*inputs)
        src, src_len = inputs
        enc, state = model.encode(src, src_len)
        tokens = torch.ones(src.size(0), dtype=torch.long)  # bos
        outs = []
        for _ in range(GNMT_LEN):
            logits, state = model.decode_step(tokens, state, enc)
            tokens = logits.argmax(1)
            outs.append(logits)
        return torch.stack(outs, 1)


def crossover(points):
    """(sparsity where speed-up crosses 1, note) from [(sparsity, speedup)] sorted by sparsity."""
    pts = [(s, r) for s, r in points if r and r > 0]
    if not pts:
        return None, "no points"
    if pts[0][1] >= 1.0:
        return None, f"CSR faster at every measured sparsity (from {100 * pts[0][0]:g}%)"
    for (s0, r0), (s1, r1) in zip(pts, pts[1:]):
        if r0 < 1.0 <= r1:
            d0, d1 = math.log(1 - s0), math.log(1 - s1)
            frac = (0.0 - math.log(r0)) / (math.log(r1) - math.log(r0))
            return round(1 - math.exp(d0 + frac * (d1 - d0)), 4), "interpolated in log density"
    return None, f"CSR slower at every measured sparsity (up to {100 * pts[-1][0]:g}%)"


def bench_model(name, sparsities, batches, threads, budget, log):
    b = Bench(name)
    patterns = prune_patterns(b.family)
    pruner = Pruner(b.model, ConstantSchedule(max(sparsities)), patterns)
    rows = []
    for s in sorted(sparsities):
        with torch.no_grad():
            pruner.update_masks({n: s for n in pruner.names})
            pruner.apply_masks()
        named = dict(b.model.named_parameters())
        csr = {n: to_csr(named[n]) for n in pruner.names}
        sparse = copy.deepcopy(b.model)
        sparsify(sparse, csr, mode="sparse")
        achieved = 1 - sum(int(c.values().numel()) for c in csr.values()) / sum(named[n].numel() for n in csr)
        for batch in batches:
            if b.max_batch is not None and batch > b.max_batch:
                continue
            inputs = b.inputs(batch)
            for t in threads:
                torch.set_num_threads(t)
                load0 = os.getloadavg()[0]
                with torch.no_grad():
                    diff = float((b.run(b.model, inputs) - b.run(sparse, inputs)).abs().max())
                    samples = pair_samples(lambda: b.run(b.model, inputs), lambda: b.run(sparse, inputs),
                                           min_pairs=5, max_pairs=200, budget_s=budget)
                med = {k: {c: statistics.median(v) for c, v in side.items()} for k, side in samples.items()}
                t_dense, t_sparse = med["a"]["wall"], med["b"]["wall"]
                row = {"model": name, "family": b.family, "unit": b.unit, "sparsity": s,
                       "achieved_sparsity": round(achieved, 6), "batch": batch, "threads": t,
                       "dense_ms": round(1e3 * t_dense, 4), "csr_ms": round(1e3 * t_sparse, 4),
                       "speedup": round(t_dense / t_sparse, 4),
                       "dense_cpu_ms": round(1e3 * med["a"]["cpu"], 4), "csr_cpu_ms": round(1e3 * med["b"]["cpu"], 4),
                       "speedup_cpu": round(med["a"]["cpu"] / med["b"]["cpu"], 4) if med["b"]["cpu"] > 0 else None,
                       "pairs": len(samples["a"]["wall"]),
                       "dense_items_per_s": round(batch / t_dense, 2), "csr_items_per_s": round(batch / t_sparse, 2),
                       "max_abs_diff": diff, "load_before": load0, "load_after": os.getloadavg()[0]}
                rows.append(row)
                log(f"{name:14s} s={100 * s:5.1f}% B={batch:<3d} T={t}: dense {row['dense_ms']:9.3f} ms, "
                    f"CSR {row['csr_ms']:9.3f} ms -> {row['speedup']:6.2f}x (CPU time {row['speedup_cpu'] or 0:6.2f}x, "
                    f"{row['pairs']} pairs, load {load0:.1f}, diff {diff:.1e})")
        del sparse
    return rows


# ------------------------------------------------------------------------------------------
# kernel alternatives for one matrix
# ------------------------------------------------------------------------------------------
def bench_kernels(budget, log):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6000, 1500, generator=g)
    bias = torch.randn(6000, generator=g)
    out = []
    from prune_cli.pruning import keep_count, topk_mask
    for s in (0.9, 0.95):
        wm = w * topk_mask(w, keep_count(w.numel(), s))
        csr, coo = wm.to_sparse_csr(), wm.to_sparse().coalesce()
        csc, wt_csr = wm.to_sparse_csc(), wm.t().contiguous().to_sparse_csr()
        for batch in (1, 32):
            x = torch.randn(batch, 1500, generator=g)
            xt = x.t()
            variants = {
                "prune-infer (addmv for 1 row, addmm of CSR and x^T otherwise)": lambda: csr_linear(x, csr, bias),
                "torch.sparse.mm(CSR, x^T)": lambda: torch.sparse.mm(csr, xt),
                "torch.sparse.addmm(b, CSR, x^T)": lambda: torch.sparse.addmm(bias.unsqueeze(1), csr, xt),
                "torch.sparse.mm(COO, x^T)": lambda: torch.sparse.mm(coo, xt),
                "CSC @ x^T": lambda: torch.mm(csc, xt),
                "x @ (W^T as CSR)": lambda: torch.mm(x, wt_csr),
            }
            for label, fn in variants.items():
                smp = pair_samples(lambda: torch.addmm(bias, x, wm.t()), fn, min_pairs=5, max_pairs=100,
                                   budget_s=budget / 4)
                med = {k: {c: statistics.median(v) for c, v in side.items()} for k, side in smp.items()}
                out.append({"matrix": "6000x1500", "sparsity": s, "batch": batch, "threads": 1, "kernel": label,
                            "dense_ms": round(1e3 * med["a"]["wall"], 4), "sparse_ms": round(1e3 * med["b"]["wall"], 4),
                            "speedup": round(med["a"]["wall"] / med["b"]["wall"], 3),
                            "speedup_cpu": round(med["a"]["cpu"] / med["b"]["cpu"], 3) if med["b"]["cpu"] > 0 else None})
                log(f"kernels s={100 * s:g}% B={batch:<3d}: {label:64s} {out[-1]['speedup']:7.2f}x "
                    f"(CPU time {out[-1]['speedup_cpu'] or 0:.2f}x)")
    return out


# ------------------------------------------------------------------------------------------
# table and figure
# ------------------------------------------------------------------------------------------
def summarise(rows, sparsities, clock="wall"):
    key = "speedup" if clock == "wall" else "speedup_cpu"
    out = []
    keys = sorted({(r["model"], r["batch"], r["threads"]) for r in rows},
                  key=lambda k: (MODELS.index(k[0]) if k[0] in MODELS else 99, k[1], k[2]))
    for model, batch, t in keys:
        pts = sorted((r["sparsity"], r[key]) for r in rows
                     if (r["model"], r["batch"], r["threads"]) == (model, batch, t))
        cross, note = crossover(pts)
        out.append({"model": model, "batch": batch, "threads": t, "clock": clock, "speedup": {str(s): r for s, r in pts},
                    "crossover": cross, "crossover_note": note})
    return out


def table(summary, sparsities) -> str:
    head = "| model | batch | threads | " + " | ".join(f"{100 * s:g}%" for s in sparsities) + " | crossover |"
    lines = [head, "|" + "---|" * (4 + len(sparsities))]
    for e in summary:
        cells = [f"{e['speedup'][str(s)]:.2f}x" if str(s) in e["speedup"] else "" for s in sparsities]
        cross = f"{100 * e['crossover']:.1f}%" if e["crossover"] is not None else (
            "< " + f"{100 * min(sparsities):g}%" if e["crossover_note"].startswith("CSR faster")
            else "> " + f"{100 * max(sparsities):g}%")
        lines.append(f"| {e['model']} | {e['batch']} | {e['threads']} | " + " | ".join(cells) + f" | {cross} |")
    return "\n".join(lines)


def figure(summary, sparsities, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({e["threads"] for e in summary})
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.8), sharey=True, squeeze=False)
    models = [m for m in MODELS if any(e["model"] == m for e in summary)]
    colors = {m: plt.cm.tab10(i) for i, m in enumerate(models)}
    for ax, t in zip(axes[0], threads):
        for e in summary:
            if e["threads"] != t:
                continue
            pts = sorted((float(s), r) for s, r in e["speedup"].items())
            ax.plot([1 / (1 - s) for s, _ in pts], [r for _, r in pts], marker="o",
                    linestyle="-" if e["batch"] == 1 else "--", color=colors[e["model"]],
                    label=f"{e['model']}, batch {e['batch']}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1 / (1 - s) for s in sparsities])
        ax.set_xticklabels([f"{100 * s:g}%" for s in sparsities])
        ax.minorticks_off()
        ax.set_xlabel("sparsity (axis: 1 / density, log)")
        ax.set_title(f"CSR vs dense inference, {t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="major", alpha=0.3)
    clock = summary[0]["clock"] if summary else "wall"
    axes[0][0].set_ylabel(f"speed-up of CSR over dense ({clock} time, x, log)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "infer.json"))
    p.add_argument("--figure", default=str(ROOT / "results" / "bench" / "infer_speedup.png"))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timing per point (at least 5 pairs)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="which time the table, figure and crossover compare: wall (a quiet machine) or the "
                        "process CPU time (a loaded one, 1 thread: time spent descheduled is left out); both are in the JSON")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel alternatives")
    p.add_argument("--quick", action="store_true", help="small models only, short budget (a smoke run)")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    if args.quick:
        models = [m for m in models if m in ("ptb_small", "mobilenet_32")]
        args.budget = min(args.budget, 0.2)

    def log(msg):
        print(msg, flush=True)

    load = os.getloadavg()
    if load[0] > 1.5:
        log(f"warning: load average {load[0]:.1f} on {os.cpu_count()} cores: other processes share the CPU; "
            "pairs alternate so both sides see the same load, but absolute times are inflated")
    t0 = time.perf_counter()
    rows = []
    for name in models:
        rows += bench_model(name, sparsities, batches, threads, args.budget, log)
    kernels = [] if args.no_kernels or args.quick else bench_kernels(args.budget, log)
    summary = summarise(rows, sparsities, args.clock)
    result = {
        "benchmark": "infer", "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "load_start": load, "load_end": os.getloadavg(),
        "budget_s": args.budget, "clock": args.clock, "wall_s": round(time.perf_counter() - t0, 1),
        "points": rows, "summary": summary, "kernels": kernels,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    figure(summary, sparsities, Path(args.figure))
    print(table(summary, sparsities))
    print(f"wrote {out} and {args.figure} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
