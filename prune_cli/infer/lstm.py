"""Sparse LSTMs: ``nn.LSTM`` written out over time so that each weight matrix can be a CSR product.

Why a hand-written LSTM: ``nn.LSTM`` (and cuDNN, oneDNN, ``torch.lstm_cell``) take dense weight
tensors only -- their fused kernels call a dense GEMM inside -- and no library ships an LSTM over
sparse weights (torch.sparse has products, not recurrent layers). So :class:`SparseLSTM` does
what the fused kernel does, with the products swapped. Two paths:

- **one step** (one time step, unidirectional, not packed: token-by-token language modelling,
  every decoding step of a translator) -- :class:`OneStep`: per layer ONE product
  ``[W_ih | W_hh] @ [x_t; h_{t-1}] + b`` (3 CSR products a PTB token with the softmax instead
  of 5), into preallocated buffers laid out so that layer k's new ``h`` is written where layer
  k+1 reads its input and where layer k reads it at the next step (no copies between layers),
  gate rows reordered to (i, f, o, g) so that two in-place activations cover them;
- **a sequence** (several steps, packed, bidirectional): every step's input projection
  ``W_ih x_t + b`` in one product (all ``T*B`` columns at once, as torch's CPU LSTM does),
  then per step one product ``W_hh h_{t-1}`` that adds the step's projection itself.

Each matrix's dense/CSR choice is made once, at the first call (which runs the sequence path);
when every matrix ends up dense the calls go back to the original ``nn.LSTM``. Outputs equal
``nn.LSTM``'s up to float rounding: the fused product sums ``W_ih x`` and ``W_hh h`` in one
dot product instead of two.

:func:`gnmt_decoder_cell` does the same for GNMT's stepped first decoder layer, whose weights
the model slices itself.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence

from .kernels import Choice, csr_linear, sparsity_of, take_rows, to_csr
from .matrix import Matrix, dense_linear, fuse_columns


def _choice(layer: str, csr: torch.Tensor, mode: str, crossover: Optional[float], budget_s: float) -> Choice:
    return Choice(layer, sparsity_of(csr), mode, crossover, budget_s)


def ifog_rows(hidden: int) -> torch.Tensor:
    """Row order that turns torch's gate blocks (i, f, g, o) into (i, f, o, g): the three
    sigmoid gates contiguous, then the tanh one."""
    h = hidden
    return torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])


class OneStep:
    """One time step of a unidirectional LSTM stack for B rows, on decided matrices.

    Buffers (per batch size, reused): ``Z [in + L*H, B]`` holds ``[x; h_0; ...; h_{L-1}]``, so
    layer 0 reads ``Z[0 : in+H]`` and layer k >= 1 reads ``[h_{k-1}; h_k] = Z[in+(k-1)H : in+(k+1)H]``,
    and writes its new ``h_k`` in place; ``C [L, H, B]`` the cell states, ``G [4H, B]`` the gates.
    A layer whose two matrices chose differently runs two products (the second accumulating).
    """

    def __init__(self, cells, input_size: int, hidden: int):
        self.input_size, self.hidden, self.layers = input_size, hidden, len(cells)
        rows = ifog_rows(hidden)
        self.plan = []  # per layer: (bias, [(weight, sparse, first row of Z it reads, last + 1)])
        for k, (ih, hh, bias) in enumerate(cells):
            start = 0 if k == 0 else input_size + (k - 1) * hidden
            width = input_size if k == 0 else hidden
            fused = fuse_columns([ih, hh], rows)
            if fused is not None:
                products = [(fused[0], fused[1], start, start + width + hidden)]
            else:
                products = [(self._rows(ih, rows), ih.sparse, start, start + width),
                            (self._rows(hh, rows), hh.sparse, start + width, start + width + hidden)]
            b = (bias[rows] if bias is not None else torch.zeros(4 * hidden, dtype=products[0][0].dtype)).contiguous()
            self.plan.append((b, products))
        self._buffers = {}

    @staticmethod
    def _rows(m: Matrix, rows: torch.Tensor) -> torch.Tensor:
        return take_rows(m.csr, rows) if m.sparse else m.dense[rows].contiguous()

    def buffers(self, batch: int, dtype: torch.dtype):
        key = (batch, dtype)
        if key not in self._buffers:
            h = self.hidden
            self._buffers[key] = (torch.zeros(self.input_size + self.layers * h, batch, dtype=dtype),
                                  torch.zeros(self.layers, h, batch, dtype=dtype),
                                  torch.empty(4 * h, batch, dtype=dtype), torch.empty(h, batch, dtype=dtype))
        return self._buffers[key]

    def __call__(self, x: torch.Tensor, hx):
        """``x [B, in]``, ``hx`` None or ``(h_0, c_0)`` each ``[L, B, H]`` -> (out ``[B, H]``,
        (h_n, c_n)); the outputs are new tensors, the caller's state is not touched."""
        batch, h, n_in = x.shape[0], self.hidden, self.input_size
        z, cells, gates, tmp = self.buffers(batch, x.dtype)
        z[:n_in].copy_(x.t())
        hidden_rows = z[n_in:].view(self.layers, h, batch)
        if hx is None:
            hidden_rows.zero_()
            cells.zero_()
        else:
            hidden_rows.copy_(hx[0].transpose(1, 2))
            cells.copy_(hx[1].transpose(1, 2))
        for k, (bias, products) in enumerate(self.plan):
            for j, (w, _, lo, hi) in enumerate(products):
                add = bias if j == 0 else None
                if batch == 1:
                    torch.addmv(add if add is not None else gates[:, 0], w, z[lo:hi, 0], out=gates[:, 0])
                else:
                    torch.addmm(add.unsqueeze(1) if add is not None else gates, w, z[lo:hi], out=gates)
            gates[:3 * h].sigmoid_()
            gates[3 * h:].tanh_()
            c = cells[k]
            c.mul_(gates[h:2 * h]).addcmul_(gates[:h], gates[3 * h:])
            torch.tanh(c, out=tmp)
            torch.mul(gates[2 * h:3 * h], tmp, out=z[n_in + k * h:n_in + (k + 1) * h])
        h_n = hidden_rows.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        c_n = cells.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        return h_n[-1].clone(), (h_n, c_n)  # the output shares no memory with the state, as nn.LSTM's


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
                        m = Matrix(f"{layer}.{pname}", w, csr[pname], _choice(f"{layer}.{pname}", csr[pname], mode,
                                                                               crossover, budget_s))
                    else:
                        m = Matrix.stored_dense(f"{layer}.{pname}", w)
                    self.choices.append(m.choice)
                    pair.append(m)
                bias = None
                if lstm.bias:
                    bias = (getattr(lstm, f"bias_ih{sfx}") + getattr(lstm, f"bias_hh{sfx}")).detach()
                self.cells.append((pair[0], pair[1], bias))
        self._step: Optional[OneStep] = None  # built at the first one-step call after every choice is made
        self._decided = False
        self._all_dense = self._settle()

    def _settle(self) -> bool:
        """Whether every matrix is decided and dense (then ``nn.LSTM`` itself runs)."""
        matrices = [m for ih, hh, _ in self.cells for m in (ih, hh)]
        self._decided = self._decided or all(m.sparse is not None for m in matrices)
        return self._decided and not any(m.sparse for m in matrices)

    def _one_step(self, x) -> bool:
        """Whether ``x`` is one time step of batched, unpacked input to a unidirectional LSTM."""
        if isinstance(x, PackedSequence) or self.directions != 1 or x.dim() != 3:
            return False
        return x.shape[1 if self.lstm.batch_first else 0] == 1

    def forward(self, x, hx=None):
        """As ``nn.LSTM.forward``: a tensor or a PackedSequence, optional (h_0, c_0)."""
        if self._all_dense:
            return self.lstm(x, hx)
        if self._decided and self._one_step(x):
            if self._step is None:
                self._step = OneStep(self.cells, self.lstm.input_size, self.lstm.hidden_size)
            out, state = self._step(x.reshape(x.shape[0] * x.shape[1], x.shape[2]), hx)
            return out.unsqueeze(1 if self.lstm.batch_first else 0), state
        result = self._sequence(x, hx)  # decides every matrix at its first call
        self._all_dense = self._settle()
        if self._decided and not self._all_dense and self._step is None and self._one_step(x):
            # decided on one step: more will follow, so build the step path now (in the caller's
            # warm-up), not inside the first step it times
            self._step = OneStep(self.cells, self.lstm.input_size, self.lstm.hidden_size)
        return result

    def _sequence(self, x, hx):
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
                out, h, c = _direction(data, batch_sizes, ih, hh, bias, h0[idx], c0[idx], reverse=bool(d))
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


def _direction(data, batch_sizes, ih: Matrix, hh: Matrix, bias, h, c, reverse: bool):
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
        if hh.sparse is None:  # decide at the full batch, not at the first (shortest) step
            hh.linear(h)
    for t in (range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))):
        a, b = starts[t], batch_sizes[t]
        gates = hh.linear(h[:b] if ragged else h, pre[a:a + b])  # the step's projection added by the product
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


def gnmt_decoder_cell(model: nn.Module, csr: Dict[str, torch.Tensor], mode, crossover, budget_s) -> List[Choice]:
    """GNMT's decoder layer 1 is an ``nn.LSTMCell`` whose weights the model slices itself (the
    embedding columns of ``weight_ih`` for all steps at once in ``_embed_gates``, the context
    columns and ``weight_hh`` every step in ``_attend_step``), so no module can be swapped:
    this replaces those two methods on the instance by the same arithmetic over three matrices
    (embedding columns, context columns, recurrent), each with its own dense/CSR choice. Once
    the context and recurrent matrices are decided alike, a step runs them as one product
    ``[W_ctx | W_hh] @ [context; h]`` that adds the embedding's part itself."""
    cell, k = model.dec_cell, model.units
    if not ({"dec_cell.weight_ih", "dec_cell.weight_hh"} & set(csr)):
        return []

    def matrix(layer, dense, stored):
        if not stored:
            return Matrix.stored_dense(layer, dense)
        sub = to_csr(dense)
        return Matrix(layer, dense, sub, _choice(layer, sub, mode, crossover, budget_s))

    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    has_ih = "dec_cell.weight_ih" in csr
    emb = matrix(f"dec_cell.weight_ih[:, :{k}]", w_ih[:, :k], has_ih)
    ctx = matrix(f"dec_cell.weight_ih[:, {k}:]", w_ih[:, k:], has_ih)
    rec = matrix("dec_cell.weight_hh", w_hh, "dec_cell.weight_hh" in csr)
    bias = (cell.bias_ih + cell.bias_hh).detach()
    fused = {}

    def _embed_gates(tokens):
        return emb.linear(model.drop(model.tgt_embedding(tokens)), bias)

    def _attend_step(gates_x, context, h, c, enc, weights):
        normed_v = weights[2]
        if fused.get("both") is not None:
            w, sparse = fused["both"]
            gates = (csr_linear if sparse else dense_linear)(torch.cat([model.drop(context), h], dim=1), w, gates_x)
        else:  # the first step decides both matrices; from then on one product where they agree
            gates = rec.linear(h, ctx.linear(model.drop(context), gates_x))
            if "both" not in fused and ctx.sparse is not None and rec.sparse is not None:
                fused["both"] = fuse_columns([ctx, rec])
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c, model.attention(h, enc, normed_v)

    model._embed_gates, model._attend_step = _embed_gates, _attend_step
    for name in ("dec_cell.weight_ih", "dec_cell.weight_hh"):
        csr.pop(name, None)
    return [emb.choice, ctx.choice, rec.choice]
