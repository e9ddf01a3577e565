"""One pruned weight matrix in an inference model: CSR or dense, chosen once.

A :class:`Matrix` holds the dense and the CSR copy of a weight until its
:class:`~prune_cli.infer.kernels.Choice` is made (forced, by a crossover, or measured on the
first input it multiplies), then only the chosen one: after that a product is one attribute
test and one call, with no closure built per call. :func:`fuse_columns` joins matrices that
multiply parts of one input vector (an LSTM layer's ``[W_ih | W_hh]``) into one product.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .kernels import Choice, Decision, csr_linear, hstack, take_rows


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight^T + bias`` for a dense weight; ``bias`` ``[out]`` or an addend ``[n, out]``
    (as :func:`~prune_cli.infer.kernels.csr_linear`)."""
    if bias is None or bias.dim() == 1:
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    return torch.addmm(bias.reshape(-1, weight.shape[0]), x.reshape(-1, x.shape[-1]), weight.t()).reshape(
        *lead, weight.shape[0])


class Matrix:
    """A weight ``[out, in]`` with its kernel choice; ``sparse`` is None until decided."""

    def __init__(self, layer: str, dense: Optional[torch.Tensor], csr: Optional[torch.Tensor], choice: Choice):
        self.layer, self.dense, self.csr, self.choice = layer, dense, csr, choice
        self.sparse: Optional[bool] = None
        if choice.decision is not None:
            self._keep(choice.decision.kernel == "sparse")

    @classmethod
    def stored_dense(cls, layer: str, dense: torch.Tensor) -> "Matrix":
        """A weight the file stores dense (not pruned): always the dense kernel."""
        choice = Choice(layer, 0.0, "dense")
        choice.decision = Decision(layer, "dense", 0.0, reason="stored dense")
        return cls(layer, dense, None, choice)

    def _keep(self, sparse: bool) -> None:
        self.sparse = sparse
        if sparse:
            self.dense = None  # the other copy is no longer needed
        else:
            self.csr = None

    def decide(self, dense_fn, sparse_fn, columns: int) -> bool:
        """True for CSR; measured (``dense_fn`` against ``sparse_fn``) when not yet decided."""
        if self.sparse is None:
            self._keep(self.choice.decide(dense_fn, sparse_fn, columns) == "sparse")
        return self.sparse

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x @ W^T + bias`` on the chosen kernel (``bias``: ``[out]`` or an ``[n, out]`` addend)."""
        if self.sparse is None:
            self.decide(lambda: dense_linear(x, self.dense, bias), lambda: csr_linear(x, self.csr, bias),
                        x.numel() // max(x.shape[-1], 1))
        return csr_linear(x, self.csr, bias) if self.sparse else dense_linear(x, self.dense, bias)

    def tensor(self) -> torch.Tensor:
        """The weight as the chosen kernel reads it (CSR or dense)."""
        return self.csr if self.sparse else self.dense


def fuse_columns(matrices: List[Matrix], rows: Optional[torch.Tensor] = None) -> Optional[Tuple[torch.Tensor, bool]]:
    """``([M_1 | M_2 | ...], sparse)``: the decided matrices side by side (rows reordered by
    ``rows`` when given), CSR when every one chose CSR, dense when every one chose dense;
    None when they chose differently (the caller keeps separate products). Built through a
    once per model; a product with it sums the same terms as the separate products, in
    another order (float rounding only)."""
    kinds = {m.sparse for m in matrices}
    if len(kinds) != 1 or None in kinds:
        return None
    if kinds.pop():
        joined = hstack([m.csr for m in matrices])
        return (joined if rows is None else take_rows(joined, rows)), True
    joined = torch.cat([m.dense for m in matrices], dim=1)
    return (joined if rows is None else joined[rows]).contiguous(), False
