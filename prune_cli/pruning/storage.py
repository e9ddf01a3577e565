"""Storage accounting for sparse models, section 5 and Tables 5-6 of the paper.

Sizes are in bytes; the paper's MB is 1e6 bytes. Values are 32-bit (``value_bytes=4``).

- bit-mask: 1 bit for every element of each pruned tensor, plus the nonzero values.
- CSR(C), as the paper estimates it: each nonzero carries a ``bits``-bit count of the zeros
  before it. Table 5's figures are reproduced by charging that count to every nonzero of
  the model (e.g. 2.13M NNZ * 4 bit = 1.06 MB at 50%), so that is what ``csr`` is.
- CSR(C), exact: a tensor's nonzeros are stored in flat order; a run of zeros longer than
  2**bits - 1 needs filler entries (an explicit zero with a full count), each costing one
  more value and one more count. Only pruned tensors are stored this way; the others dense.
- BatchNorm parameters are not counted: at inference they fold into the preceding convolution.
  This is the convention behind the paper's counts (MobileNet 4.21M / 2.57M / 1.32M / 0.46M,
  InceptionV3 27.1M); counting BN would put MobileNet 0.25 at 0.47M.
- model size = value_bytes * NNZ + the smaller of the bit-mask and CSR(C) estimate overheads
  (how Table 6 counts it: e.g. 2.13M * 4 B + 0.52 MB = 9.04 MB).
"""
import math
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn as nn


@dataclass(frozen=True)
class StorageReport:
    params_total: int
    params_nnz: int
    params_pruned: int  # elements in tensors that are stored sparse
    bytes_dense: int  # every parameter as a dense value
    bytes_bitmask: int  # overhead of the bit-mask representation
    bytes_csr: int  # overhead of CSR(C), the paper's estimate
    bytes_csr_exact: int  # overhead of CSR(C) with filler entries counted exactly
    model_size_bytes: int

    @property
    def model_size_mb(self) -> float:
        return self.model_size_bytes / 1e6

    def as_dict(self) -> dict:
        return {**asdict(self), "model_size_mb": self.model_size_mb}


def csr_fillers(mask: torch.Tensor, bits: int = 4) -> int:
    """Filler entries CSR(C) needs: a gap of g zeros before a nonzero costs g // 2**bits."""
    positions = mask.reshape(-1).nonzero().squeeze(1)
    if positions.numel() == 0:
        return 0
    gaps = torch.diff(positions, prepend=positions.new_tensor([-1])) - 1
    return int(torch.div(gaps, 1 << bits, rounding_mode="floor").sum())


def counted_parameters(model: nn.Module) -> dict:
    """name -> parameter, for every parameter that is stored (BatchNorm's fold away)."""
    folded = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False)}
    return {n: p for n, p in model.named_parameters() if id(p) not in folded}


def storage_report(model: nn.Module, masks: Mapping[str, torch.Tensor] = None, bits: int = 4,
                   value_bytes: int = 4) -> StorageReport:
    """Storage of ``model`` whose tensors named in ``masks`` are stored sparse (mask != 0 kept)."""
    if bits <= 0:
        raise ValueError(f"bits={bits}: the CSR(C) zero-run count needs at least 1 bit")
    masks = dict(masks or {})
    named = counted_parameters(model)
    unknown = set(masks) - set(named)
    if unknown:
        raise ValueError(f"masks name parameters the model does not store: {', '.join(sorted(unknown))}")
    total = sum(p.numel() for p in named.values())
    pruned = sum(named[n].numel() for n in masks)
    nnz_sparse = {n: int(m.count_nonzero()) for n, m in masks.items()}
    nnz = total - pruned + sum(nnz_sparse.values())
    if masks:
        bitmask = math.ceil(pruned / 8)
        csr = math.ceil(nnz * bits / 8)
        fillers = sum(csr_fillers(m, bits) for m in masks.values())
        csr_exact = math.ceil((sum(nnz_sparse.values()) + fillers) * bits / 8) + fillers * value_bytes
        overhead = min(bitmask, csr)
    else:
        bitmask = csr = csr_exact = overhead = 0
    return StorageReport(
        params_total=total, params_nnz=nnz, params_pruned=pruned,
        bytes_dense=total * value_bytes, bytes_bitmask=bitmask, bytes_csr=csr,
        bytes_csr_exact=csr_exact, model_size_bytes=nnz * value_bytes + overhead,
    )
