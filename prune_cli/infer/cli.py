"""`prune-infer FILE`: run a prune-export file on its dataset's validation split; quality and speed.

    prune-infer FILE [--batch-size B] [--max-batches N] [--threads T] [--json]
                     [--kernels auto|sparse|dense] [--crossover S] [--bptt T] [--data-root DIR]

Bad input (a missing, corrupt, truncated or foreign file, bad options, missing data) is one
line on stderr, ``prune-infer: error: ...``, and exit status 2.
"""
import argparse
import json
import math
import sys
import warnings

from .engine import QUALITY, UNITS, InferError, evaluate, load
from .kernels import MODES

PROG = "prune-infer"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"{PROG}: error: {message}; see {PROG} --help", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=(
        "Run a model file written by prune-export on the validation split of its dataset and report "
        "its quality (perplexity | top1/top5 | bleu) and speed. csr files run their pruned layers "
        "with sparse (CSR) kernels where those are faster; dense and bitmask files run dense."))
    p.add_argument("file", help="a .safetensors file written by prune-export")
    p.add_argument("--batch-size", type=int, default=None,
                   help="evaluation batch size (default: the run's data.eval_batch_size; PTB: rows of the stream)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after N batches (default: the whole split)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own, $OMP_NUM_THREADS if set, else one per physical "
                        "core); the JSON reports the count used")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--kernels", default="auto", choices=MODES,
                   help="auto: per layer, CSR or dense, whichever is faster (measured at the first batch, "
                        "or by --crossover); sparse / dense: force one (csr files)")
    p.add_argument("--crossover", type=float, default=None,
                   help="with --kernels auto: run CSR exactly for layers at or above this sparsity instead of measuring")
    p.add_argument("--bptt", type=int, default=None,
                   help="language models: tokens per batch and row (default: the run's data.eval_bptt; "
                        "1 = token by token, the streaming latency)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $PRUNE_DATA_ROOT, else the run's data.root)")
    return p


def _check(args) -> None:
    for name in ("batch_size", "max_batches", "threads", "bptt"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InferError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.crossover is not None and not (0.0 <= args.crossover <= 1.0):
        raise InferError(f"--crossover must be a sparsity in [0, 1], got {args.crossover}")


def readable(result: dict) -> str:
    unit = next(u for u in UNITS.values() if f"{u}_per_s" in result or u in result)
    names = dict.fromkeys(k for ks in QUALITY.values() for k in ks if k != "loss")  # each once, in order
    quality = " ".join(f"{k} {result[k]:.4f}" for k in names if k in result)
    sparse = sum(1 for d in result["layers"] if d["kernel"] == "sparse")
    dense = len(result["layers"]) - sparse
    shape = f"batch {result['batch_size']}" + (f" x {result['bptt']} tokens" if "bptt" in result else "")
    return (f"{result['model']} on {result['dataset']} {result['split']}: {quality} over {result.get(unit, 0):,} {unit} "
            f"({result['batches']} batches, {shape}) | {result.get(unit + '_per_s', math.nan):,.1f} {unit}/s, "
            f"latency {result['latency_ms']:.3f} ms/batch (CPU {result['cpu_latency_ms']:.3f} ms) | "
            f"{result['format']} {result['dtype']}, "
            f"{result['threads']} thread{'s' if result['threads'] != 1 else ''}"
            + (f" on {result['cpu']}" if result.get("cpu") else "") + f", decode {result['decode_s']:.3f} s"
            + (f" | {sparse} layers sparse, {dense} dense" if result["layers"] else ""))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    try:
        _check(args)
        import torch
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        loaded = load(args.file, data_root=args.data_root, batch_size=args.batch_size, bptt=args.bptt,
                      kernels=args.kernels, crossover=args.crossover)
        result = evaluate(loaded, args.max_batches)
    except InferError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    result["file"] = str(args.file)
    result["kernels"] = args.kernels
    if args.json:
        print(json.dumps(result))
    else:
        for d in result["layers"]:
            print(f"layer {d['layer']}: {d['kernel']} ({d['reason']})")
        print(readable(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
