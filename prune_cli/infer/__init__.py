"""`prune-infer`: rebuild a model from a prune-export file and run it with sparse (CSR) kernels
where they pay; measure its quality and speed.

- :mod:`.kernels`: the CSR products, the embedding lookup from CSR, pair-by-pair timing and the
  per-layer dense/CSR choice;
- :mod:`.modules`: sparse Linear / Embedding / 1x1 Conv / LSTM modules and :func:`sparsify`;
- :mod:`.engine`: file -> model -> the family's evaluation, timed;
- :mod:`.cli`: the command.
"""
from .kernels import Choice, Decision, csr_linear, csr_rows, time_pair, to_csr
from .modules import SparseEmbedding, SparseLinear, SparseLSTM, SparsePointwiseConv, decisions, sparsify

__all__ = ["Choice", "Decision", "csr_linear", "csr_rows", "time_pair", "to_csr", "SparseEmbedding",
           "SparseLinear", "SparseLSTM", "SparsePointwiseConv", "decisions", "sparsify"]
