"""CSR kernels for inference, and the measured choice between a sparse and a dense kernel.

A pruned weight ``W [out, in]`` in CSR multiplies activations ``x [n, in]`` as
``(W @ x^T)^T``: torch's CSR x dense product (MKL's sparse BLAS on CPU, cuSPARSE on GPU)
is the fast one; dense x CSR (``x @ W^T`` with ``W^T`` stored as CSR, or ``W`` as CSC) and
COO were 3-25x slower still when measured (docs/inference.md, before issue 26). For a single
row (batch 1: a matrix-vector product)
``torch.addmv`` beats ``addmm`` with one column by about 1.5-2x, so one row takes that path.
The transposed result is returned as a view, not copied: every consumer here (gate
arithmetic, bias, cross-entropy) takes strided input.

Indices are int32 (:func:`to_csr`, :func:`as_int32`): torch's default int64 indices cost a
conversion to MKL's 32-bit indices -- a copy of both index arrays -- on every product, which
was 40% of a 95%-sparse PTB-large token step (torch.profiler: ``aten::copy_``).

Whether CSR pays depends on the matrix, its sparsity, the number of columns it multiplies, the
threads and the CPU (one row, one thread, int32 indices, on a 2-core Xeon with the matrix in
cache: a 6000x1500 or a 2600x650 matrix wins from ~60% sparsity, 3.6x / 2.5x at 90%; a
10x1024 classifier never). No fixed rule predicts that well, so
:class:`Choice` measures it: dense and sparse timed pair by pair (alternating, so that load
from other processes falls on both alike) on the real input, and the faster one kept.
"""
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch

MODES = ("auto", "sparse", "dense")


def as_int32(csr: torch.Tensor) -> torch.Tensor:
    """``csr`` with int32 indices (itself when they already are, or when they would not fit)."""
    crow, col = csr.crow_indices(), csr.col_indices()
    if crow.dtype == torch.int32 or csr.values().numel() >= 2**31 or csr.shape[1] >= 2**31:
        return csr
    # invariants hold: the same structure, narrowed (check_invariants given, else torch warns)
    return torch.sparse_csr_tensor(crow.to(torch.int32), col.to(torch.int32), csr.values(), csr.shape,
                                   check_invariants=False)


def to_csr(weight: torch.Tensor) -> torch.Tensor:
    """Sparse CSR tensor (int32 indices) of the 2-D view ``(shape[0], prod(rest))`` of a dense weight."""
    return as_int32(weight.detach().reshape(weight.shape[0], -1).to_sparse_csr())


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    # built from a valid CSR's arrays by the functions below: no check needed (and torch warns without the flag)
    return as_int32(torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False))


def _row_of_each(crow: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(crow.numel() - 1), crow.diff())


def hstack(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[A_1 | A_2 | ...]`` of CSR matrices with equal row counts, as CSR (int32): each row's
    nonzeros in order, in O(nonzeros) -- no dense copy."""
    crows = [m.crow_indices().long() for m in mats]
    crow = torch.stack(crows).sum(0)
    total = int(crow[-1])
    col = torch.empty(total, dtype=torch.long)
    values = torch.empty(total, dtype=mats[0].values().dtype)
    before = torch.zeros(crow.numel() - 1, dtype=torch.long)  # nonzeros already placed in each row
    offset = 0
    for m, c in zip(mats, crows):
        rows = _row_of_each(c)
        pos = torch.arange(int(c[-1])) - c[rows] + crow[rows] + before[rows]
        col[pos] = m.col_indices().long() + offset
        values[pos] = m.values()
        before += c.diff()
        offset += m.shape[1]
    return _csr(crow, col, values, (crow.numel() - 1, offset))


def take_rows(csr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The CSR matrix whose row i is row ``rows[i]`` of ``csr`` (int32), in O(nonzeros)."""
    crow = csr.crow_indices().long()
    counts = crow.diff()[rows]
    new_crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    row = _row_of_each(new_crow)
    pos = torch.arange(int(new_crow[-1])) - new_crow[row] + crow[rows][row]
    return _csr(new_crow, csr.col_indices()[pos], csr.values()[pos], (rows.numel(), csr.shape[1]))


def sparsity_of(csr: torch.Tensor) -> float:
    rows, cols = csr.shape
    return 1.0 - csr.values().numel() / float(rows * cols) if rows * cols else 0.0


def csr_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight^T + bias`` for a CSR ``weight [out, in]`` and dense ``x [..., in]``; ``bias``
    is ``[out]``, or ``[n, out]`` with one row per row of ``x`` (an addend: an LSTM step's input
    projection, added by the product itself instead of by one more operation)."""
    lead, n_in = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, n_in)
    if x2.shape[0] == 1:
        add = None if bias is None else bias.reshape(-1)
        y = (torch.mv(weight, x2[0]) if add is None else torch.addmv(add, weight, x2[0])).unsqueeze(0)
    else:
        add = None if bias is None else (bias.unsqueeze(1) if bias.dim() == 1 else bias.t())
        y = (torch.sparse.mm(weight, x2.t()) if add is None else torch.addmm(add, weight, x2.t())).t()
    return y.reshape(*lead, weight.shape[0])


def csr_rows(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Dense rows ``weight[ids]`` of a CSR matrix (an embedding lookup), read from the CSR
    arrays directly: only the looked-up rows' nonzeros are touched, nothing is densified."""
    crow, col, val = weight.crow_indices(), weight.col_indices(), weight.values()
    flat = ids.reshape(-1)
    if flat.numel() == 1:  # one token (batch-1 decoding): slice its row, a few ops instead of ten
        i = int(flat[0])
        a, b = int(crow[i]), int(crow[i + 1])
        out = val.new_zeros(1, weight.shape[1])
        out[0, col[a:b].to(torch.long)] = val[a:b]
        return out.reshape(*ids.shape, weight.shape[1])
    starts, ends = crow[flat], crow[flat + 1]
    lengths = (ends - starts).to(torch.long)
    out = val.new_zeros(flat.numel(), weight.shape[1])
    total = int(lengths.sum())
    if total:
        row = torch.repeat_interleave(torch.arange(flat.numel(), device=ids.device), lengths, output_size=total)
        # position of each gathered nonzero: its row's start + its rank inside the row
        first = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(total, device=ids.device) - first[row] + starts.to(torch.long)[row]
        out[row, col[pos].to(torch.long)] = val[pos]
    return out.reshape(*ids.shape, weight.shape[1])


def pair_samples(fa: Callable[[], object], fb: Callable[[], object], min_pairs: int = 3,
                 max_pairs: int = 25, budget_s: float = 0.5):
    """Wall and process-CPU seconds of ``fa`` and ``fb``, timed pair by pair (a, b, b, a, ...: the
    order is swapped every pair so neither always runs right after the other) after one warm-up
    call each; stops after ``max_pairs`` pairs or when ``budget_s`` is spent (at least
    ``min_pairs``). Returns ``{"a": {"wall": [...], "cpu": [...]}, "b": ...}``.

    CPU time is the load-robust one on a shared machine (time spent descheduled is not in it);
    with more than one thread it also counts the helper threads' spinning."""
    fa()
    fb()
    out = {k: {"wall": [], "cpu": []} for k in "ab"}
    start = time.perf_counter()
    for i in range(max_pairs):
        for key, f in (("a", fa), ("b", fb)) if i % 2 == 0 else (("b", fb), ("a", fa)):
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            t1, c1 = time.perf_counter(), time.process_time()
            out[key]["wall"].append(t1 - t0)
            out[key]["cpu"].append(c1 - c0)
        if i + 1 >= min_pairs and time.perf_counter() - start > budget_s:
            break
    return out


def time_pair(fa: Callable[[], object], fb: Callable[[], object], min_pairs: int = 3,
              max_pairs: int = 25, budget_s: float = 0.5, clock: str = "wall") -> Tuple[float, float]:
    """Median seconds (``clock`` "wall" or "cpu") of ``fa`` and ``fb``, timed by :func:`pair_samples`."""
    s = pair_samples(fa, fb, min_pairs, max_pairs, budget_s)
    return statistics.median(s["a"][clock]), statistics.median(s["b"][clock])


@dataclass
class Decision:
    """What one layer runs: ``kernel`` "sparse" (CSR) or "dense", and why."""

    layer: str
    kernel: str
    sparsity: float
    columns: Optional[int] = None      # columns of the product it was measured at
    speedup: Optional[float] = None    # dense time / CSR time, where measured
    reason: str = ""

    def line(self) -> str:
        return f"layer {self.layer}: {self.kernel} ({self.reason})"

    def as_dict(self) -> dict:
        return {"layer": self.layer, "kernel": self.kernel, "sparsity": round(self.sparsity, 6),
                "columns": self.columns, "speedup": None if self.speedup is None else float(f"{self.speedup:.4g}"),
                "reason": self.reason}


class Choice:
    """Dense or CSR for one layer, decided once, at its first call.

    ``mode`` "sparse" / "dense" force a kernel; "auto" with a ``crossover`` sparsity picks CSR
    at or above it; "auto" without one measures both on the first input the layer sees (the
    real batch shape) and keeps the faster. ``budget_s`` bounds that measurement.
    """

    def __init__(self, layer: str, sparsity: float, mode: str = "auto", crossover: Optional[float] = None,
                 budget_s: float = 0.3):
        if mode not in MODES:
            raise ValueError(f"kernel mode must be one of {MODES}, got {mode!r}")
        self.layer, self.sparsity, self.mode = layer, float(sparsity), mode
        self.crossover, self.budget_s = crossover, budget_s
        self.decision: Optional[Decision] = None
        pct = f"sparsity {100 * self.sparsity:.4g}%"
        if mode != "auto":
            self.decision = Decision(layer, mode, self.sparsity, reason=f"{pct}, forced by --kernels {mode}")
        elif crossover is not None:
            kernel = "sparse" if self.sparsity >= crossover else "dense"
            rel = "at or above" if kernel == "sparse" else "below"
            self.decision = Decision(layer, kernel, self.sparsity,
                                     reason=f"{pct} {rel} crossover {100 * crossover:.4g}%")

    def decide(self, dense: Callable[[], object], sparse: Callable[[], object], columns: int) -> str:
        """The kernel to run; measured on the first call when the mode is auto."""
        if self.decision is None:
            # one thread: CPU time, which time spent descheduled on a shared machine does not inflate;
            # more: wall time (CPU time would count the helper threads' spinning)
            clock = "cpu" if torch.get_num_threads() == 1 else "wall"
            t_dense, t_sparse = time_pair(dense, sparse, budget_s=self.budget_s, clock=clock)
            if t_sparse <= 0 or t_dense <= 0:  # below the CPU clock's resolution: fall back to wall time
                t_dense, t_sparse = time_pair(dense, sparse, budget_s=self.budget_s)
            speedup = t_dense / t_sparse
            kernel = "sparse" if speedup > 1.0 else "dense"
            pct = f"sparsity {100 * self.sparsity:.4g}%"
            why = (f"{pct}, CSR {speedup:.3g}x dense at {columns} columns"
                   + ("" if kernel == "sparse" else ": below the crossover"))
            self.decision = Decision(self.layer, kernel, self.sparsity, columns, speedup, why)
        return self.decision.kernel
