"""Mixed precision and compilation of the training forward (``trainer.precision``, ``trainer.compile``).

Only the forward (and the loss) runs under autocast; backward, the pruner's gradient and weight
masking, clipping and the optimizer step run outside it on the fp32 master weights, so pruning
is exactly as in fp32: masks are chosen from fp32 weights and applied in place. fp16 needs a
gradient scaler (GradScaler, GPU only; the config refuses fp16 on CPU); bf16 has fp32's range
and needs none. Evaluation runs in fp32, so quality numbers compare across precisions.

``torch.compile`` compiles the module the training forward goes through (the DDP wrapper when
there is one, so that DDP's optimizer splits the graph at bucket boundaries). The masks never
change a parameter's identity, shape or dtype (they multiply it in place), so a mask update does
not invalidate a compiled graph; ``compile_count`` reports how many graphs were compiled.
"""
import contextlib

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The context the training forward runs in."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_lstm_in_fp32(model: torch.nn.Module, precision: str, device: torch.device) -> None:
    """bf16 on a CPU whose oneDNN has no bf16 LSTM (no AVX512-BF16/AMX: it refuses to build the
    primitive): run each nn.LSTM/GRU/RNN in fp32 with autocast off, the rest of the forward in
    bf16. Elsewhere (GPU, or a CPU with bf16 kernels) autocast is left to choose."""
    if precision != "bf16" or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return
    for module in model.modules():
        if isinstance(module, torch.nn.RNNBase) and not getattr(module, "_prune_cli_fp32", False):
            plain = module.forward

            def forward(x, hx=None, _plain=plain):
                with torch.autocast("cpu", enabled=False):
                    hx = None if hx is None else tuple(h.float() for h in hx) if isinstance(hx, tuple) else hx.float()
                    return _plain(x.float() if x.is_floating_point() else x, hx)
            module.forward = forward
            module._prune_cli_fp32 = True


def grad_scaler(precision: str, device: torch.device):
    """A GradScaler for fp16 on GPU, else None (bf16 and fp32 need no loss scaling)."""
    if precision == "fp16":
        return torch.amp.GradScaler(device.type)
    return None


def compile_model(module: torch.nn.Module) -> torch.nn.Module:
    """torch.compile with a fresh dynamo cache, so that a reused worker process (joblib) starts
    each run without the previous run's graphs or guards."""
    torch._dynamo.reset()
    return torch.compile(module)


def compile_count() -> int:
    """Graphs dynamo has compiled since the last reset (a recompile at a mask update would add one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
