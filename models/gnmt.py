"""GNMT-style attentional seq2seq, the translation model of Zhu & Gupta (2017), section 4.3.

The paper trained the TensorFlow NMT tutorial's GNMT configuration (``gnmt_v2`` attention
architecture, ``normed_bahdanau`` attention, the wmt16 4-layer hparams). This is that
architecture in PyTorch, written from the tutorial's definition (no code of it is reused):

Encoder: embedding; 1 bidirectional LSTM layer; ``layers - 1`` unidirectional LSTM layers (the
first reads the 2k-wide bidirectional output); residual connections on the last
``layers - 2`` layers (TF NMT's ``num_encoder_residual_layers = num_layers - 2``: the first
unidirectional layer cannot add its 2k-wide input). Every encoder LSTM is an ``nn.LSTM``
(cuDNN on GPU) run once over a PackedSequence, so padding never reaches a state or an output.

Decoder, per target position t:
  layer 1: LSTM on [embedding(y_{t-1}); context_{t-1}] (input feeding); its output h1_t is the
           attention query; context_t = normed_bahdanau(h1_t, memory = top encoder output)
  layer j = 2..L: LSTM on [output of layer j-1; context_t] (``gnmt_v2``: the CURRENT context),
           residual (output + the layer's non-context input) on the last L-2 layers
  logits = softmax projection (k -> V, no bias) of the top output.
Decoder layer 1 starts from the backward direction's final state of the bidirectional layer,
decoder layer j >= 2 from the final state of unidirectional encoder layer j - 1 (TF NMT's
``pass_hidden_state`` for GNMT); the first context is zero.

normed_bahdanau: score_s = g * v/|v| . tanh(W_m m_s + W_q h + b), padded s masked out; softmax
over s; context = sum_s a_s m_s. W_m and W_q are k x k without bias.

Dropout (p = ``dropout``) sits where TF NMT's DropoutWrapper(input_keep_prob) puts it: on the
input of every LSTM layer (for decoder layers that input includes the context), never on an
output; residual connections add the undropped input.

Speed: only layer 1 and the attention depend on the previous step. The forward runs them
step by step (the embedding part of layer 1's input projection is one matmul over all steps;
the attention's memory projection is done once per batch) and then runs layers 2..L over the
whole sequence as ``nn.LSTM`` calls, since with teacher forcing all contexts are known by
then. ``decode_step`` runs the same layer-1 step for decoding.

Initialisation, as TF NMT does it: every weight matrix, embedding and the attention vector v
uniform(-init_range, init_range); LSTM biases zero except the forget gate's, which is
``forget_bias`` (1.0; TF's BasicLSTMCell adds it to a zero-initialised bias); attention g =
sqrt(1/k) and b = 0 (TF's normalised Bahdanau attention).

Parameters: ``param_count``: 3Vk + (20L + 14)k^2 + 8k(2L + 1) + 2k + 1 (PyTorch LSTMs keep two
bias vectors); 4 layers: 3Vk + 94k^2 + 74k + 1. With V = 36,548: 34.2M / 80.8M / 139.7M /
210.8M at k = 256 / 512 / 768 / 1024. Pruned (``model.prune``): both embeddings, every LSTM
weight matrix (``*.weight_ih*`` / ``*.weight_hh*``, decoder layer 1 included) and the softmax:
``prunable_count`` = 3Vk + (20L + 12)k^2; not the attention, not the biases.
"""
import math
from typing import List, NamedTuple, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import register

State = Tuple[torch.Tensor, ...]  # (h1, c1, context, h2, c2, ..., hL, cL), each [N, k]


def _opt(cfg, key: str, default=None):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def param_count(vocab: int, units: int, layers: int = 4) -> int:
    """Exact number of parameters of GNMT(vocab, units, layers)."""
    k, L = units, layers
    # k^2: encoder bi 2*4k*2k, first uni 4k*3k, others 4k*2k; decoder L * 4k*3k; attention 2k^2
    return 3 * vocab * k + (20 * L + 14) * k * k + 8 * k * (2 * L + 1) + 2 * k + 1


def prunable_count(vocab: int, units: int, layers: int = 4) -> int:
    """Elements in the pruned tensors: embeddings, LSTM weight matrices, softmax."""
    return 3 * vocab * units + (20 * layers + 12) * units * units


class Encoded(NamedTuple):
    """What the decoder attends to; every field has the batch as dimension 0."""
    memory: torch.Tensor  # [B, S, k] top encoder output, zero at padding
    keys: torch.Tensor  # [B, S, k] W_m memory + b, computed once per batch
    pad: torch.Tensor  # [B, S] bool, True at padding


class NormedBahdanau(nn.Module):
    """TF's BahdanauAttention(normalize=True): weight-normalised v, a bias b inside the tanh."""

    def __init__(self, units: int):
        super().__init__()
        self.query = nn.Linear(units, units, bias=False)
        self.memory = nn.Linear(units, units, bias=False)
        self.v = nn.Parameter(torch.empty(units))
        self.g = nn.Parameter(torch.empty(()))
        self.b = nn.Parameter(torch.empty(units))

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, memory.reshape(-1, memory.size(-1)),
                           self.memory.weight.t()).view(memory.shape[:-1] + (-1,))

    def normed_v(self) -> torch.Tensor:
        return self.v * (self.g / self.v.norm())

    def forward(self, query: torch.Tensor, enc: Encoded, normed_v: torch.Tensor) -> torch.Tensor:
        """query [N, k] -> context [N, k]."""
        energy = torch.tanh(enc.keys + self.query(query).unsqueeze(1))  # [N, S, k]
        score = torch.matmul(energy, normed_v).masked_fill_(enc.pad, float("-inf"))
        align = torch.softmax(score, dim=1)
        return torch.bmm(align.unsqueeze(1), enc.memory).squeeze(1)


class GNMT(nn.Module):
    def __init__(self, vocab: int, units: int, layers: int = 4, dropout: float = 0.2,
                 init_range: float = 0.1, pad_id: int = 0, forget_bias: float = 1.0):
        super().__init__()
        if vocab < 1 or units < 1:
            raise ValueError(f"vocab and units must be >= 1, got {vocab}, {units}")
        if layers < 2:
            raise ValueError(f"layers must be >= 2 (1 bidirectional + at least 1 unidirectional encoder layer), got {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        k = units
        self.vocab, self.units, self.layers, self.pad_id = vocab, units, layers, pad_id
        self.init_range, self.forget_bias = init_range, forget_bias
        self.src_embedding = nn.Embedding(vocab, k)
        self.tgt_embedding = nn.Embedding(vocab, k)
        self.enc_bi = nn.LSTM(k, k, batch_first=True, bidirectional=True)
        self.enc_uni = nn.ModuleList([nn.LSTM(2 * k if i == 0 else k, k, batch_first=True)
                                      for i in range(layers - 1)])
        self.dec_cell = nn.LSTMCell(2 * k, k)  # layer 1, stepped: input feeding needs the last context
        self.dec_layers = nn.ModuleList([nn.LSTM(2 * k, k, batch_first=True) for _ in range(layers - 1)])
        self.attention = NormedBahdanau(k)
        self.softmax = nn.Linear(k, vocab, bias=False)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = self.units
        with torch.no_grad():
            for name, p in self.named_parameters():
                if ".bias_" in name:
                    p.zero_()
                    if ".bias_ih" in name:  # gates i, f, g, o: f gets TF's forget_bias
                        p[k:2 * k] = self.forget_bias
                elif name == "attention.g":
                    p.fill_(math.sqrt(1.0 / k))
                elif name == "attention.b":
                    p.zero_()
                else:
                    p.uniform_(-self.init_range, self.init_range)

    # -- encoder --------------------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Tuple[Encoded, State]:
        """src [B, S] (padded), src_len [B] (>= 1) -> (Encoded, the decoder's initial state)."""
        packed = pack_padded_sequence(self.src_embedding(src), src_len.cpu(), batch_first=True,
                                      enforce_sorted=False)
        x = packed.data  # [sum of lengths, k]: dropout and residuals act on real tokens only
        out, (h, c) = self.enc_bi(packed._replace(data=self.drop(x)))
        x = out.data
        init = [h[1], c[1]]  # the backward direction's final state -> decoder layer 1
        for i, lstm in enumerate(self.enc_uni):
            out, (h, c) = lstm(packed._replace(data=self.drop(x)))
            x = out.data + x if i >= 1 else out.data
            init += [h[0], c[0]]
        memory, _ = pad_packed_sequence(packed._replace(data=x), batch_first=True,
                                        total_length=src.size(1))
        pad = torch.arange(src.size(1), device=src.device) >= src_len.to(src.device).unsqueeze(1)
        context = memory.new_zeros(memory.size(0), self.units)
        return Encoded(memory, self.attention.keys(memory), pad), (init[0], init[1], context, *init[2:])

    # -- decoder --------------------------------------------------------------------------
    def _step_weights(self):
        """Views of layer 1's weights used by every step (taken once per sequence, so autograd
        sums the steps' gradients before a single slice-backward)."""
        k = self.units
        return self.dec_cell.weight_ih[:, k:].t(), self.dec_cell.weight_hh.t(), self.attention.normed_v()

    def _embed_gates(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding's part of layer 1's gates (+ both biases), for any token shape."""
        emb = self.drop(self.tgt_embedding(tokens))
        cell = self.dec_cell
        return F.linear(emb, cell.weight_ih[:, :self.units], cell.bias_ih + cell.bias_hh)

    def _attend_step(self, gates_x, context, h, c, enc: Encoded, weights):
        """Layer 1 (an LSTM cell on [embedding; previous context]) and the attention, one step."""
        w_ctx, w_hh, normed_v = weights
        gates = torch.addmm(torch.addmm(gates_x, self.drop(context), w_ctx), h, w_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c, self.attention(h, enc, normed_v)

    def _upper(self, j: int, below, context, hc):
        """Decoder layer j+2 over a whole sequence [N, T, k] (or one step, T = 1)."""
        out, hc = self.dec_layers[j](self.drop(torch.cat([below, context], dim=-1)), hc)
        return (out + below if j >= 1 else out), hc

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (src [B, S], src_len [B], tgt_in [B, T]) -> logits [B, T, V]."""
        enc, state = self.encode(src, src_len)
        # unbind, not gates[:, t]: one backward for all steps instead of a zero-filled
        # [B, T, 4k] gradient per step
        gates_x = self._embed_gates(tgt_in).unbind(1)  # T x [B, 4k]
        weights = self._step_weights()
        h, c, context = state[:3]
        hs: List[torch.Tensor] = []
        contexts: List[torch.Tensor] = []
        for gates_t in gates_x:
            h, c, context = self._attend_step(gates_t, context, h, c, enc, weights)
            hs.append(h)
            contexts.append(context)
        below, context = torch.stack(hs, dim=1), torch.stack(contexts, dim=1)
        for j in range(self.layers - 1):
            hc = (state[3 + 2 * j].unsqueeze(0), state[4 + 2 * j].unsqueeze(0))
            below, _ = self._upper(j, below, context, hc)
        return self.softmax(below)

    def mac_uses(self, src_len: float, tgt_len: float):
        """MACs of the teacher-forced forward of one sentence pair with ``src_len`` source tokens
        and ``tgt_len`` target positions (prune_cli.pruning.compute's rule for models whose
        forward calls weights functionally): (multiplications per element of each weight, MACs
        on activations). Per source token: every encoder LSTM matrix and the attention's memory
        projection; per target position: decoder layer 1 (the stepped cell), the upper decoder
        LSTMs, the query projection and the softmax; per (target position, source position):
        the score v . tanh(...) (k, on v) and the context sum (k, on the memory). Embedding
        lookups, biases, tanh, softmax and v's normalisation (once a batch) are left out."""
        s, t = float(src_len), float(tgt_len)
        uses = {}
        for name, _ in self.named_parameters():
            if name.startswith("enc_") and ".weight_" in name or name == "attention.memory.weight":
                uses[name] = s
            elif name.startswith("dec_") and ".weight_" in name or name in ("attention.query.weight", "softmax.weight"):
                uses[name] = t
        uses["attention.v"] = s * t
        return uses, s * t * self.units

    def decode_step(self, tokens: torch.Tensor, state: State, enc: Encoded) -> Tuple[torch.Tensor, State]:
        """One decoder step for every row: tokens [N] (the previous target) -> (logits [N, V], state)."""
        h, c, context = self._attend_step(self._embed_gates(tokens), state[2], state[0], state[1],
                                          enc, self._step_weights())
        new = [h, c, context]
        below, context = h.unsqueeze(1), context.unsqueeze(1)
        for j in range(self.layers - 1):
            hc = (state[3 + 2 * j].unsqueeze(0), state[4 + 2 * j].unsqueeze(0))
            below, (hj, cj) = self._upper(j, below, context, hc)
            new += [hj[0], cj[0]]
        return self.softmax(below.squeeze(1)), tuple(new)


@register("gnmt")
def build_gnmt(model_cfg, meta) -> nn.Module:
    units = _opt(model_cfg, "units")
    if units is None:
        raise ValueError("model.units is not set (256, 512, 768 or 1024 in the paper)")
    return GNMT(vocab=int(meta["vocab_size"]), units=int(units),
                layers=int(_opt(model_cfg, "layers", 4)),
                dropout=float(_opt(model_cfg, "dropout", 0.2)),
                init_range=float(_opt(model_cfg, "init_range", 0.1)),
                pad_id=int(meta.get("pad_id", 0)),
                forget_bias=float(_opt(model_cfg, "forget_bias", 1.0)))
