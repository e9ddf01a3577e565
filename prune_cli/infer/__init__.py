"""`prune-infer`: rebuild a model from a prune-export file and run it with sparse (CSR) kernels
where they pay; measure its quality and speed.

- :mod:`.kernels`: int32 CSR tensors, the CSR products, the embedding lookup from CSR,
  pair-by-pair timing and the per-layer dense/CSR choice;
- :mod:`.matrix`: one pruned weight with its choice, made once; matrices fused side by side;
- :mod:`.lstm`: the sparse LSTM (a fused one-step path and a sequence path) and GNMT's
  stepped decoder cell;
- :mod:`.modules`: sparse Linear / Embedding / 1x1 Conv (+ folded BatchNorm) and :func:`sparsify`;
- :mod:`.engine`: file -> model -> the family's evaluation, timed;
- :mod:`.cli`: the command.
"""
from .kernels import Choice, Decision, as_int32, csr_linear, csr_rows, time_pair, to_csr
from .lstm import OneStep, SparseLSTM
from .matrix import Matrix, fuse_columns
from .modules import SparseEmbedding, SparseLinear, SparsePointwiseConv, decisions, sparsify

__all__ = ["Choice", "Decision", "as_int32", "csr_linear", "csr_rows", "time_pair", "to_csr", "OneStep",
           "SparseLSTM", "Matrix", "fuse_columns", "SparseEmbedding", "SparseLinear", "SparsePointwiseConv",
           "decisions", "sparsify"]
