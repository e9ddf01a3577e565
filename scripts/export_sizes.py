"""Measured file sizes of prune-export for finished runs, beside the paper's Table 5/6 estimates.

    python scripts/export_sizes.py results/runs/EXP/RUN_ID [RUN_DIR ...]

Exports every format/dtype of each run into a temporary folder (deleted afterwards; the sizes
are recorded in each run's exports.json) and prints one markdown table: one row a run, file
sizes in MB (1e6 bytes) and, from summary.json, the run's storage accounting: Table 6's model
size (4 bytes a nonzero + the smaller of bit-mask and CSR(C) overhead) and Table 5's bit-mask
and CSR(C) overheads. Files include safetensors' header (the config and summary, a few KB)
and the tensors the accounting leaves out (BatchNorm's, running statistics).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from prune_cli.export import ExportError, export_run

COMBOS = [("dense", "float32"), ("dense", "float16"), ("bitmask", "float32"), ("csr", "float32"),
          ("bitmask", "float16"), ("bitmask", "int8"), ("csr", "int8")]


def mb(n) -> str:
    return f"{n / 1e6:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args(argv)
    head = (["run", "sparsity", "pattern", "NNZ"] + [f"{f} {d}" for f, d in COMBOS]
            + ["Table 6 model size", "Table 5 bit-mask", "Table 5 CSR(C)"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    with tempfile.TemporaryDirectory(prefix="export_sizes.") as tmp:
        for i, run in enumerate(args.runs):
            try:
                sizes = [export_run(run, Path(tmp, f"{i}-{f}-{d}.safetensors"), f, d)["bytes"] for f, d in COMBOS]
            except ExportError as e:
                print(f"export_sizes: error: {e}", file=sys.stderr)
                sys.exit(2)
            s = json.loads(Path(run, "summary.json").read_text())
            row = [s.get("run_id", Path(run).name), f"{s.get('achieved_sparsity', 0):.4g}", s.get("pattern", "unstructured"),
                   f"{s.get('params_nnz', 0):,}"] + [mb(n) for n in sizes]
            row += [f"{s.get('model_size_mb', 0):.3f}", mb(s.get("bytes_bitmask", 0)), mb(s.get("bytes_csr", 0))]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
