"""Inference modules that run pruned weights stored in CSR, and the swap that puts them in a model.

:func:`sparsify` replaces, in a model loaded with dense weights, every module whose pruned
weight is given in CSR:

- ``nn.Linear`` (softmax layers, classifiers) -> :class:`SparseLinear`: ``(W @ x^T)^T``;
- ``nn.Embedding`` -> :class:`SparseEmbedding`: the looked-up rows read out of the CSR arrays;
- 1x1 ``nn.Conv2d`` (MobileNet's pointwise convolutions) -> :class:`SparsePointwiseConv`: the
  NCHW input viewed as a matrix ``[N*H*W, C]`` (free for channels_last input), one CSR product;
- ``nn.LSTM`` -> :class:`SparseLSTM`: the LSTM written out step by step (below).

Each such layer holds a :class:`~prune_cli.infer.kernels.Choice` and runs CSR or dense as it
decides (measured at its first call, or by a configured crossover). Every other module is left
as it is. The modules are for inference (``eval()``, no autograd); their outputs equal the dense
model's up to float rounding (the sums run in another order).

Why a hand-written LSTM: ``nn.LSTM`` (and cuDNN, oneDNN, ``torch.lstm_cell``) take dense weight
tensors only -- their fused kernels call a dense GEMM inside -- and no library ships an LSTM over
sparse weights (torch.sparse has products, not recurrent layers; DeepSparse, TVM and the like
compile whole graphs for their own runtimes). So :class:`SparseLSTM` does what the fused kernel
does, with the products swapped: the input projection ``W_ih x_t + b`` of every time step in one
product (all ``T*B`` columns at once, as torch's CPU LSTM does), then per step one product
``W_hh h_{t-1}`` of ``B`` columns and the gate arithmetic. When every matrix of it ends up dense
it hands the calls back to the original ``nn.LSTM``.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from .kernels import Choice, Decision, csr_linear, csr_rows, sparsity_of, to_csr


class _Matrix:
    """One pruned weight ``[out, in]``: dense and CSR copies until its Choice is made, then one."""

    def __init__(self, layer: str, dense: torch.Tensor, csr: torch.Tensor, choice: Choice):
        self.layer, self.dense, self.csr, self.choice = layer, dense, csr, choice

    def kernel(self, dense_fn, sparse_fn, columns: int) -> str:
        kernel = self.choice.decide(dense_fn, sparse_fn, columns)
        if kernel == "sparse":
            self.dense = None  # the dense copy is no longer needed
        else:
            self.csr = None
        return kernel

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        columns = x.numel() // max(x.shape[-1], 1)
        kernel = self.kernel(lambda: F.linear(x, self.dense, bias), lambda: csr_linear(x, self.csr, bias), columns)
        return csr_linear(x, self.csr, bias) if kernel == "sparse" else F.linear(x, self.dense, bias)


def _choice(layer: str, csr: torch.Tensor, mode: str, crossover: Optional[float], budget_s: float) -> Choice:
    return Choice(layer, sparsity_of(csr), mode, crossover, budget_s)


class SparseLinear(nn.Module):
    """``nn.Linear`` with a CSR weight: ``y = (W @ x^T)^T + b``."""

    def __init__(self, layer: str, linear: nn.Linear, csr: torch.Tensor, mode="auto", crossover=None, budget_s=0.3):
        super().__init__()
        self.matrix = _Matrix(layer, linear.weight.detach(), csr, _choice(layer, csr, mode, crossover, budget_s))
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.choices = [self.matrix.choice]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix.linear(x, self.bias)


class SparseEmbedding(nn.Module):
    """``nn.Embedding`` lookup from a CSR table: the looked-up rows' nonzeros, nothing densified."""

    def __init__(self, layer: str, embedding: nn.Embedding, csr: torch.Tensor, mode="auto", crossover=None,
                 budget_s=0.3):
        super().__init__()
        if embedding.max_norm is not None:
            raise ValueError(f"{layer}: embeddings with max_norm rescale rows; no CSR lookup for them")
        self.matrix = _Matrix(layer, embedding.weight.detach(), csr, _choice(layer, csr, mode, crossover, budget_s))
        self.choices = [self.matrix.choice]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.matrix
        kernel = m.kernel(lambda: F.embedding(ids, m.dense), lambda: csr_rows(m.csr, ids), ids.numel())
        return csr_rows(m.csr, ids) if kernel == "sparse" else F.embedding(ids, m.dense)


def is_pointwise(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding in ((0, 0), "valid") and conv.dilation == (1, 1) and conv.groups == 1)


class SparsePointwiseConv(nn.Module):
    """A 1x1, stride-1, ungrouped ``nn.Conv2d`` as one CSR product.

    The input ``[N, C, H, W]`` is viewed as ``X = [N*H*W, C]`` (a free view of channels_last
    input, a copy otherwise), ``Y = (W @ X^T)^T`` and Y is returned as ``[N, C', H, W]`` -- a
    strided view (channel-major storage) that BatchNorm, ReLU and the next convolution accept.
    """

    def __init__(self, layer: str, conv: nn.Conv2d, csr: torch.Tensor, mode="auto", crossover=None, budget_s=0.3):
        super().__init__()
        if not is_pointwise(conv):
            raise ValueError(f"{layer}: not a 1x1 stride-1 ungrouped convolution")
        self.conv = conv
        self.matrix = _Matrix(layer, conv.weight.detach(), csr, _choice(layer, csr, mode, crossover, budget_s))
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.choices = [self.matrix.choice]

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = csr_linear(x.permute(0, 2, 3, 1).reshape(n * h * w, c), self.matrix.csr, self.bias)
        return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kernel = self.matrix.kernel(lambda: self.conv(x), lambda: self._sparse(x), n * h * w)
        if kernel == "sparse":
            return self._sparse(x)
        return self.conv(x)


class SparseLSTM(nn.Module):
    """``nn.LSTM`` (any layers, batch_first or not, bidirectional or not; no proj_size) written out
    over time so that each of its weight matrices can be a CSR product (see the module docstring).

    Gates in torch's order (input, forget, cell, output); ``b_ih + b_hh`` folded into the input
    projection. PackedSequence input (GNMT's encoder) runs step t over its ``batch_sizes[t]``
    live rows, as cuDNN does. Dropout between layers is an identity in eval mode, which is all this runs.
    """

    def __init__(self, layer: str, lstm: nn.LSTM, csr: Dict[str, torch.Tensor], mode="auto", crossover=None,
                 budget_s=0.3):
        super().__init__()
        if lstm.proj_size:
            raise ValueError(f"{layer}: LSTMs with proj_size are not supported")
        self.lstm = lstm
        self.directions = 2 if lstm.bidirectional else 1
        self.cells = []  # per (layer, direction): (ih matrix, hh matrix, bias)
        self.choices: List[Choice] = []
        for k in range(lstm.num_layers):
            for d in range(self.directions):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                pair = []
                for kind in ("ih", "hh"):
                    pname = f"weight_{kind}{sfx}"
                    w = getattr(lstm, pname).detach()
                    if pname in csr:
                        choice = _choice(f"{layer}.{pname}", csr[pname], mode, crossover, budget_s)
                    else:
                        choice = Choice(f"{layer}.{pname}", 0.0, "dense")
                        choice.decision = Decision(choice.layer, "dense", 0.0, reason="stored dense")
                    self.choices.append(choice)
                    pair.append(_Matrix(f"{layer}.{pname}", w, csr.get(pname), choice))
                bias = None
                if lstm.bias:
                    bias = (getattr(lstm, f"bias_ih{sfx}") + getattr(lstm, f"bias_hh{sfx}")).detach()
                self.cells.append((pair[0], pair[1], bias))

    def _all_dense(self) -> bool:
        return all(c.decision is not None and c.decision.kernel == "dense" for c in self.choices)

    def forward(self, x, hx=None):
        """As ``nn.LSTM.forward``: a tensor or a PackedSequence, optional (h_0, c_0)."""
        if self._all_dense():
            return self.lstm(x, hx)
        lstm = self.lstm
        packed = isinstance(x, PackedSequence)
        if packed:  # time-major rows, longest sequences first; batch_sizes[t] rows at step t
            data, batch_sizes = x.data, [int(b) for b in x.batch_sizes]
            batch = batch_sizes[0]
        else:
            seq = x.transpose(0, 1) if lstm.batch_first else x  # [T, B, in]
            steps, batch = seq.shape[0], seq.shape[1]
            data, batch_sizes = seq.reshape(steps * batch, seq.shape[2]), [batch] * steps
        if hx is None:
            zeros = data.new_zeros(lstm.num_layers * self.directions, batch, lstm.hidden_size)
            hx = (zeros, zeros)
        elif packed and x.sorted_indices is not None:
            hx = tuple(t.index_select(1, x.sorted_indices) for t in hx)
        h0, c0 = hx
        h_n, c_n = [], []
        for k in range(lstm.num_layers):
            outs = []
            for d in range(self.directions):
                idx = k * self.directions + d
                ih, hh, bias = self.cells[idx]
                out, h, c = self._direction(data, batch_sizes, ih, hh, bias, h0[idx], c0[idx], reverse=bool(d))
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            data = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if packed:
            if x.unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, x.unsorted_indices), c_n.index_select(1, x.unsorted_indices)
            return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices), (h_n, c_n)
        out = data.view(len(batch_sizes), batch, -1)
        return (out.transpose(0, 1) if lstm.batch_first else out), (h_n, c_n)

    @staticmethod
    def _direction(data, batch_sizes, ih: _Matrix, hh: _Matrix, bias, h, c, reverse: bool):
        """One direction of one layer over time-major rows ``data`` (``batch_sizes[t]`` rows at
        step t, a non-increasing count): the rows of a sequence that has ended keep its final
        state; run backwards, a sequence starts from ``(h, c)`` at its own last step."""
        hidden, full = h.shape[-1], h.shape[0]
        pre = ih.linear(data, bias)  # every step's input projection in one product
        out = data.new_empty(data.shape[0], hidden)
        starts = [0]
        for b in batch_sizes[:-1]:
            starts.append(starts[-1] + b)
        ragged = any(b != full for b in batch_sizes)
        if ragged:  # rows are updated in place: work on copies of the caller's state
            h, c = h.clone(), c.clone()
            if hh.choice.decision is None:  # decide at the full batch, not at the first (shortest) step
                hh.linear(h, None)
        for t in (range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))):
            a, b = starts[t], batch_sizes[t]
            gates = pre[a:a + b] + hh.linear(h[:b] if ragged else h, None)
            act = gates.sigmoid()
            i, f, o = act[:, :hidden], act[:, hidden:2 * hidden], act[:, 3 * hidden:]
            c_t = f * (c[:b] if ragged else c) + i * gates[:, 2 * hidden:3 * hidden].tanh()
            h_t = o * c_t.tanh()
            if ragged:
                h[:b], c[:b] = h_t, c_t
            else:
                h, c = h_t, c_t
            out[a:a + b] = h_t
        return out, h, c


def _gnmt_decoder_cell(model: nn.Module, csr: Dict[str, torch.Tensor], mode, crossover, budget_s) -> List[Choice]:
    """GNMT's decoder layer 1 is an ``nn.LSTMCell`` whose weights the model slices itself (the
    embedding columns of ``weight_ih`` for all steps at once in ``_embed_gates``, the context
    columns and ``weight_hh`` every step in ``_attend_step``), so no module can be swapped:
    this replaces those two methods on the instance by the same arithmetic over three matrices
    (embedding columns, context columns, recurrent), each with its own dense/CSR choice."""
    cell, k = model.dec_cell, model.units
    if not ({"dec_cell.weight_ih", "dec_cell.weight_hh"} & set(csr)):
        return []

    def matrix(layer, dense, stored):
        if stored:
            sub = to_csr(dense)
            choice = _choice(layer, sub, mode, crossover, budget_s)
        else:
            sub, choice = None, Choice(layer, 0.0, "dense")
            choice.decision = Decision(layer, "dense", 0.0, reason="stored dense")
        return _Matrix(layer, dense, sub, choice)

    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    has_ih = "dec_cell.weight_ih" in csr
    emb = matrix(f"dec_cell.weight_ih[:, :{k}]", w_ih[:, :k], has_ih)
    ctx = matrix(f"dec_cell.weight_ih[:, {k}:]", w_ih[:, k:], has_ih)
    rec = matrix("dec_cell.weight_hh", w_hh, "dec_cell.weight_hh" in csr)
    bias = (cell.bias_ih + cell.bias_hh).detach()

    def _embed_gates(tokens):
        return emb.linear(model.drop(model.tgt_embedding(tokens)), bias)

    def _attend_step(gates_x, context, h, c, enc, weights):
        normed_v = weights[2]
        gates = gates_x + ctx.linear(model.drop(context), None) + rec.linear(h, None)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c, model.attention(h, enc, normed_v)

    model._embed_gates, model._attend_step = _embed_gates, _attend_step
    for name in ("dec_cell.weight_ih", "dec_cell.weight_hh"):
        csr.pop(name, None)
    return [emb.choice, ctx.choice, rec.choice]


# Models whose forward reads a pruned weight directly (not through a module): by class name.
SPECIAL = {"GNMT": _gnmt_decoder_cell}


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def sparsify(model: nn.Module, csr: Dict[str, torch.Tensor], mode: str = "auto",
             crossover: Optional[float] = None, budget_s: float = 0.3) -> List[Choice]:
    """Swap the modules whose weights are in ``csr`` (parameter name -> CSR 2-D view) for the
    sparse modules above, in place. Returns every layer's Choice (decided at its first call,
    unless forced or given a crossover); a CSR weight of a module with no CSR kernel here stays
    dense and says so."""
    csr = dict(csr)
    special = SPECIAL.get(type(model).__name__)
    choices: List[Choice] = special(model, csr, mode, crossover, budget_s) if special else []
    handled = set()
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        mine = {p: csr[prefix + p] for p, _ in module.named_parameters(recurse=False) if prefix + p in csr}
        if not mine:
            continue
        new = None
        if isinstance(module, nn.LSTM):
            new = SparseLSTM(name, module, mine, mode, crossover, budget_s)
        elif "weight" in mine and isinstance(module, nn.Linear):
            new = SparseLinear(name, module, mine["weight"], mode, crossover, budget_s)
        elif "weight" in mine and isinstance(module, nn.Embedding):
            new = SparseEmbedding(name, module, mine["weight"], mode, crossover, budget_s)
        elif "weight" in mine and is_pointwise(module):
            new = SparsePointwiseConv(name, module, mine["weight"], mode, crossover, budget_s)
        if new is not None:
            _set(model, name, new)
            choices.extend(new.choices)
            handled.update(prefix + p for p in mine if p.startswith("weight"))
    for pname in sorted(set(csr) - handled):
        c = Choice(pname, sparsity_of(csr[pname]), "dense")
        c.decision = Decision(pname, "dense", c.sparsity, reason=f"sparsity {100 * c.sparsity:.4g}%, "
                              "no CSR kernel for this layer type (run dense)")
        choices.append(c)
    return choices


def decisions(choices: List[Choice]) -> List[Decision]:
    """Every layer's decision; a layer the input never reached is listed as not run."""
    out = []
    for c in choices:
        out.append(c.decision if c.decision is not None
                   else Decision(c.layer, "undecided", c.sparsity, reason="never called"))
    return out
