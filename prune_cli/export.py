"""`prune-export`: a finished run's model as one safetensors file that is really sparse.

A pruned model saved with ``torch.save`` is exactly as large as the dense one: the zeros are
stored. This module writes the run's checkpoint (weights, buffers and the Pruner's masks) as
one safetensors file in a documented layout that any safetensors reader (Python, Rust, C++,
JavaScript) can decode without prune-cli, and reads it back. safetensors gives the container
(a JSON header, raw little-endian tensors, no pickle, so loading a file runs no code); the
sparse encodings on top of it are ours because no library defines a sparse layout for
safetensors (torch's own sparse tensors cannot be saved in it).

File layout, format version 1
-----------------------------
For every *sparse-stored* tensor NAME (a tensor the run pruned, i.e. one with a mask in the
checkpoint), by ``--format``:

- ``bitmask``: ``NAME.values``, the weights at the mask's set positions in row-major order
  (a kept weight that happens to be 0.0 is stored too: the mask, not the value, says what is
  kept); ``NAME.bitmask``, uint8, the mask of all ``numel`` positions in row-major order,
  packed 8 to a byte, least significant bit first (``numpy.packbits(mask, bitorder="little")``;
  the last byte is padded with zero bits).
- ``csr``: the tensor viewed as 2-D, (shape[0], product of the other dimensions):
  ``NAME.crow_indices`` (int32, shape[0] + 1 row pointers), ``NAME.col_indices`` (int32, one
  per kept weight) and ``NAME.values`` (row-major order), as in torch's and scipy's CSR.
- ``dense``: ``NAME``, the plain tensor with its zeros; no tensor is sparse-stored.

Every other tensor of the model's state_dict (unpruned weights, biases, BatchNorm's
parameters and running statistics, ...) is stored dense under its own name, so the model can
be rebuilt completely. Tensors are contiguous and row-major (a channels_last convolution is
stored in its logical NCHW order).

``--dtype`` (the values' type): ``float32`` (exact); ``float16`` (every floating tensor, dense
or sparse, rounded to float16); ``int8`` (bitmask or csr only): the values of each
sparse-stored tensor become symmetric int8 with one float32 scale per output row (row = index
along dimension 0), ``NAME.scales`` = max |value| of the row / 127 (0 for an empty row), value
≈ int8 * scale, error at most half a step (scale / 2) per element. int8 leaves the
dense-stored tensors float32: they are the small ones (biases, BatchNorm, depthwise
convolutions, about 1% of MobileNet), where quantizing saves little and BatchNorm's 1-D
statistics have no rows to scale. ``--format dense --dtype int8`` is refused for the same
reason: it would quantize nothing.

Metadata (safetensors' string -> string header, JSON where structured): ``producer``
("prune-cli"), ``format_version`` ("1"), ``format``, ``dtype``, ``shapes`` (JSON: NAME -> shape
of every sparse-stored tensor), ``config`` (JSON: the run's composed config, as in its
checkpoint), ``model_meta`` (JSON: the dataset facts the model builder reads, e.g.
num_classes, image_size, vocab_size; ``{}`` for runs that predate it) and ``summary`` (JSON: the
run's summary.json).

Sizes: the payload (file size minus safetensors' 8-byte length and JSON header) is what the
run's storage accounting predicts (``predicted_bytes``): bitmask = 4 bytes per nonzero + 1 bit
per element of each pruned tensor (Table 5's bit-mask) + the dense tensors; csr = 4-byte value
+ 4-byte column index per nonzero + 4 bytes per row pointer + the dense tensors (the paper's
CSR(C) with 4-bit relative indices is a compression estimate; this is the CSR that sparse
kernels read directly); int8 = 1 byte per nonzero + a 4-byte scale per row. Every export is
recorded in ``RUN_DIR/exports.json``.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

FORMAT_VERSION = "1"
PRODUCER = "prune-cli"
FORMATS = ("dense", "bitmask", "csr")
DTYPES = ("float32", "float16", "int8")
LAYOUTS = ("dense", "csr")
_FLOAT = {"float32": torch.float32, "float16": torch.float16, "int8": torch.float32}


class ExportError(Exception):
    """Bad input or a file that cannot be read; the message is one line (what, and what to do)."""


@dataclass
class Exported:
    """A file written by prune-export, decoded.

    ``state_dict``: name -> tensor, ready for ``model.load_state_dict``: floating tensors are
    float32 (float16 upcast, int8 dequantized), integer buffers as stored. With
    ``layout="csr"`` each sparse-stored tensor is instead a torch sparse CSR tensor of its 2-D
    view (shape[0], product of the rest), float32 values and int32 indices as the file stores
    them; ``shapes`` gives its real shape.

    Why int32 and not torch's default int64: MKL's sparse BLAS (torch's CPU CSR products) is
    built with 32-bit indices, so torch converts int64 indices to int32 on every product --
    a copy of both index arrays per call, 43% of a 95%-sparse PTB-large token step
    (torch.profiler; docs/inference.md).
    """
    state_dict: Dict[str, torch.Tensor]
    config: dict
    shapes: Dict[str, List[int]]
    format: str
    dtype: str
    metadata: Dict[str, str]


# -- encoding ------------------------------------------------------------------------------
def _rows(shape) -> int:
    return int(shape[0]) if len(shape) else 1


def _quantize(w2: torch.Tensor, keep2: torch.Tensor):
    """Symmetric per-row int8 of the kept values of a 2-D view: (int8 tensor, float32 scales)."""
    kept = w2 * keep2
    scales = kept.abs().amax(dim=1) / 127.0 if w2.shape[1] else torch.zeros(w2.shape[0])
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(kept / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales.float()


def encode(state: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor], format: str,
           dtype: str) -> Dict[str, torch.Tensor]:
    """The tensors of the file for ``state`` (a state_dict) whose tensors in ``masks`` were pruned."""
    out = {}
    sparse = masks if format != "dense" else {}
    for name, t in state.items():
        t = t.detach().cpu()
        if name not in sparse:
            if t.is_floating_point():
                t = t.to(_FLOAT[dtype])  # int8 maps to float32: dense-stored tensors are not quantized
            t = t.contiguous()
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()  # a view into a shared buffer (cuDNN's flat LSTM weights): safetensors refuses those
            out[name] = t
            continue
        w = t.float().contiguous()
        keep = sparse[name].cpu().reshape(w.shape).bool()
        w2, keep2 = w.reshape(_rows(w.shape), -1), keep.reshape(_rows(w.shape), -1)
        if dtype == "int8":
            q, out[f"{name}.scales"] = _quantize(w2, keep2)
            values = q[keep2]
        else:
            values = w2[keep2].to(_FLOAT[dtype])
        out[f"{name}.values"] = values.contiguous()
        if format == "bitmask":
            bits = np.packbits(keep.reshape(-1).numpy(), bitorder="little")
            out[f"{name}.bitmask"] = torch.from_numpy(bits)
        else:
            if values.numel() >= 2**31:
                raise ExportError(f"{name} keeps {values.numel()} weights, more than int32 CSR indices "
                                  "can address; use --format bitmask")
            counts = keep2.sum(dim=1)
            out[f"{name}.crow_indices"] = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
            out[f"{name}.col_indices"] = keep2.nonzero()[:, 1].to(torch.int32).contiguous()
    return out


def predicted_bytes(state: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor], format: str,
                    dtype: str) -> int:
    """Payload bytes the storage accounting predicts, from element and nonzero counts alone."""
    value = {"float32": 4, "float16": 2, "int8": 1}[dtype]
    dense_value = 4 if dtype == "int8" else value
    total = 0
    for name, t in state.items():
        if format == "dense" or name not in masks:
            total += t.numel() * (dense_value if t.is_floating_point() else t.element_size())
            continue
        nnz, rows = int(masks[name].count_nonzero()), _rows(t.shape)
        total += nnz * value + (4 * rows if dtype == "int8" else 0)
        total += math.ceil(t.numel() / 8) if format == "bitmask" else 4 * nnz + 4 * (rows + 1)
    return total


# -- decoding ------------------------------------------------------------------------------
def _positions(bitmask: torch.Tensor, numel: int) -> torch.Tensor:
    bits = np.unpackbits(bitmask.numpy(), count=numel, bitorder="little")
    return torch.from_numpy(bits.astype(bool))


def _int32(index: torch.Tensor) -> torch.Tensor:
    """``index`` as int32 when every value fits (always, for files this module writes), else as it is."""
    if index.dtype == torch.int32 or (index.numel() and not (-2**31 <= int(index.min()) and int(index.max()) < 2**31)):
        return index
    return index.to(torch.int32)


def _decode_one(name: str, get, shape: List[int], dtype: str, format: str, layout: str) -> torch.Tensor:
    numel = math.prod(shape)
    rows = _rows(shape)
    cols = numel // rows if rows else 0
    values = get(f"{name}.values")
    if format == "bitmask":
        keep = _positions(get(f"{name}.bitmask"), numel)
        if int(keep.sum()) != values.numel():
            raise ExportError(f"{name}: {int(keep.sum())} mask bits but {values.numel()} values; the file is corrupt")
        keep2 = keep.view(rows, cols)
        index = torch.int32 if values.numel() < 2**31 and cols < 2**31 else torch.int64
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), keep2.sum(dim=1).cumsum(0)]).to(index)
        col = keep2.nonzero()[:, 1].to(index)
    else:
        crow, col = get(f"{name}.crow_indices"), get(f"{name}.col_indices")
        if crow.dtype not in (torch.int32, torch.int64) or col.dtype not in (torch.int32, torch.int64):
            raise ExportError(f"{name}: CSR indices are {crow.dtype} / {col.dtype}, not integers; the file is corrupt")
        if crow.numel() != rows + 1 or col.numel() != values.numel() or int(crow[-1]) != values.numel():
            raise ExportError(f"{name}: CSR indices do not match its shape {shape}; the file is corrupt")
        crow, col = _int32(crow), _int32(col)  # the writer's int32; a wider file is narrowed once, here
    values = values.float()
    if dtype == "int8":
        scales = get(f"{name}.scales")
        if scales.numel() != rows:
            raise ExportError(f"{name}: {scales.numel()} scales for {rows} rows; the file is corrupt")
        values = values * scales[torch.repeat_interleave(torch.arange(rows), crow.diff().long())]
    if layout == "csr":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            try:
                return torch.sparse_csr_tensor(crow, col, values, size=(rows, cols), check_invariants=True)
            except RuntimeError as e:
                raise ExportError(f"{name}: invalid CSR structure ({str(e).splitlines()[0][:80]}); the file is corrupt") from None
    dense = torch.zeros(rows, cols)
    if format == "bitmask":
        dense[keep2] = values
    else:
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= cols or bool((crow.diff() < 0).any())):
            raise ExportError(f"{name}: CSR indices out of range for shape {shape}; the file is corrupt")
        dense[torch.repeat_interleave(torch.arange(rows), crow.diff().long()), col.long()] = values
    return dense.view(shape)


def load(path, layout: str = "dense") -> Exported:
    """Read a prune-export file. Raises ExportError (one line) for a missing, corrupt or foreign file."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file; give a file written by prune-export")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("producer") != PRODUCER:
                raise ExportError(f"{path} was not written by prune-export (no producer={PRODUCER} in its metadata)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ExportError(f"{path} has format version {meta.get('format_version')}; this prune-cli reads "
                                  f"version {FORMAT_VERSION}: use the prune-cli that wrote it")
            fmt, dtype = meta.get("format"), meta.get("dtype")
            if fmt not in FORMATS or dtype not in DTYPES:
                raise ExportError(f"{path}: format '{fmt}' / dtype '{dtype}' unknown; the file is corrupt")
            shapes = json.loads(meta["shapes"])
            config = json.loads(meta["config"])
            keys = set(f.keys())

            def get(key):
                if key not in keys:
                    raise ExportError(f"{path}: tensor '{key}' is missing; the file is corrupt")
                return f.get_tensor(key)

            owned = {f"{n}.{part}" for n in shapes for part in ("values", "bitmask", "crow_indices", "col_indices", "scales")}
            state = {}
            for key in sorted(keys - owned):
                t = f.get_tensor(key)
                state[key] = t.float() if t.is_floating_point() else t
            for name, shape in shapes.items():
                state[name] = _decode_one(name, get, list(shape), dtype, fmt, layout)
    except ExportError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise ExportError(f"{path} cannot be read as a prune-export file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:80] if str(e) else 'no detail'}); export the run again") from None
    return Exported(state_dict={n: state[n] for n in sorted(state)}, config=config, shapes={n: list(s) for n, s in shapes.items()},
                    format=fmt, dtype=dtype, metadata=meta)


def build_model(exported: Exported) -> torch.nn.Module:
    """The run's model rebuilt from the file's config and model_meta, with its weights loaded (dense layout)."""
    from omegaconf import OmegaConf

    from prune_cli import builders
    meta = json.loads(exported.metadata.get("model_meta") or "{}")
    model = builders.build_model(OmegaConf.create(exported.config["model"]), meta)
    state = {n: t.to_dense().view(exported.shapes[n]) if t.layout == torch.sparse_csr else t
             for n, t in exported.state_dict.items()}
    model.load_state_dict(state)
    return model.eval()


# -- a run folder -> a file ----------------------------------------------------------------
def _check_output(out: Path) -> None:
    if out.is_dir():
        raise ExportError(f"output {out} is a directory; give a file name, e.g. -o {out / 'model.safetensors'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"output directory {parent} does not exist; create it or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ExportError(f"output {out} cannot be written; choose another -o")


def read_run(run_dir):
    """(summary, checkpoint state) of a finished run; ExportError when it is missing or unfinished."""
    from prune_cli.train.folder import checkpoint as ckpt
    from prune_cli.train.folder.files import RunFolder

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {run_dir} does not exist; give a folder under results/runs/EXP/")
    summary_path, ckpt_path = RunFolder(run_dir).summary, RunFolder(run_dir).checkpoint
    if not summary_path.is_file():
        raise ExportError(f"run {run_dir} has not finished (no summary.json); let it finish (run the same prune-run command again)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{summary_path} cannot be read ({type(e).__name__}); run the run again") from None
    if not ckpt_path.is_file():
        raise ExportError(f"run {run_dir} has no checkpoint.pt; run it again to export it")
    try:
        state = ckpt.load(ckpt_path)
    except ckpt.CheckpointError as e:
        raise ExportError(str(e)) from None
    return summary, state


def export_run(run_dir, out_path, format: str = "bitmask", dtype: str = "float32", record: bool = True) -> dict:
    """Write the finished run in ``run_dir`` to ``out_path``; returns (and records) its sizes.

    The file is written to a temporary name beside ``out_path`` and renamed, so a failed or
    interrupted export leaves nothing behind. ``record``: append the returned record to
    ``run_dir/exports.json`` (an earlier record of the same file is replaced).
    """
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise ExportError(f"unknown format '{format}'; use one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    if format == "dense" and dtype == "int8":
        raise ExportError("--dtype int8 quantizes sparse-stored tensors only, and --format dense has none; "
                          "use --format bitmask or csr with int8, or float32/float16 with dense")
    out = Path(out_path)
    _check_output(out)
    summary, state = read_run(run_dir)
    weights = state["model"]
    masks = {n: m for n, m in (state.get("pruner") or {}).get("masks", {}).items()}
    tensors = encode(weights, masks, format, dtype)
    metadata = {
        "producer": PRODUCER, "format_version": FORMAT_VERSION, "format": format, "dtype": dtype,
        "shapes": json.dumps({n: list(weights[n].shape) for n in masks} if format != "dense" else {}),
        "config": json.dumps(state.get("config", {}), sort_keys=True),
        "model_meta": json.dumps(summary.get("model_meta") or {}, sort_keys=True),
        "summary": json.dumps(summary, sort_keys=True),
    }
    fd, tmp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    size = out.stat().st_size
    with open(out, "rb") as f:
        header = 8 + int.from_bytes(f.read(8), "little")
    rec = {"format": format, "dtype": dtype, "file": str(out.absolute()), "bytes": size,
           "predicted_bytes": predicted_bytes(weights, masks, format, dtype), "header_bytes": header,
           "sparse_tensors": len(masks) if format != "dense" else 0}
    rec["recorded"] = _record(Path(run_dir), rec) if record else False
    return rec


def _record(run_dir: Path, rec: dict) -> bool:
    """Add ``rec`` to run_dir/exports.json (atomically); False when the folder is read-only."""
    from prune_cli.train.folder.files import atomic_write_text

    path = run_dir / "exports.json"
    try:
        entries = json.loads(path.read_text()) if path.is_file() else []
        if not isinstance(entries, list):
            entries = []
    except (OSError, ValueError):
        entries = []
    entries = [e for e in entries if e.get("file") != rec["file"]] + [{k: v for k, v in rec.items() if k != "recorded"}]
    try:
        atomic_write_text(path, json.dumps(entries, indent=1) + "\n")
        return True
    except OSError:
        return False


# -- command line --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + message is two lines and exit 2; make it one
        print(f"prune-export: error: {message}; see prune-export --help", file=sys.stderr)
        sys.exit(2)


def main(argv: Optional[List[str]] = None) -> None:
    parser = _Parser(
        prog="prune-export",
        description="Write a finished run's model as one safetensors file: dense, bit-mask or CSR, "
                    "float32, float16 or int8 (layout: prune_cli/export.py).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (results/runs/EXP/RUN_ID)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="how pruned tensors are stored")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="value type (int8: per-row scales, bitmask or csr only; default float32)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    try:
        rec = export_run(args.run_dir, args.output, args.format, args.dtype)
    except ExportError as e:
        print(f"prune-export: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.output}: {rec['bytes']:,} bytes ({args.format}, {args.dtype}; predicted payload "
          f"{rec['predicted_bytes']:,} + header {rec['header_bytes']:,})"
          + ("" if rec["recorded"] else f"; not recorded: {args.run_dir} is read-only"))


if __name__ == "__main__":
    main()
