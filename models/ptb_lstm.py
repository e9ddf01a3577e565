"""PTB LSTM language model of Zaremba et al. (2014), as used by Zhu & Gupta (2017).

Config keys (``model`` node): ``hidden`` (200 small / 650 medium / 1500 large), ``layers``
(2), ``dropout`` (0 / 0.5 / 0.65), ``init_range`` (0.1 / 0.05 / 0.04). The vocabulary size
comes from the dataset's ``meta["vocab_size"]``.

Modules: ``embedding`` (V x H), ``lstm`` (nn.LSTM, batch first; cuDNN on GPU), ``drop``
(dropout on the embedding output and on the LSTM output; the LSTM's own ``dropout`` argument
drops between layers) and ``decoder`` (H -> V, not tied to the embedding). Every parameter,
biases included, is initialised uniform(-init_range, init_range), as in Zaremba's code.

Parameters with V = 10,000 (PyTorch keeps two bias vectors per LSTM layer):
``2*V*H + V + layers*(8*H*H + 8*H)``: small 4,653,200; medium 19,780,400; large 66,034,000.
Prunable tensors: ``embedding.weight``, ``lstm.weight_ih_l{k}``, ``lstm.weight_hh_l{k}``,
``decoder.weight``.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from . import register

Hidden = Tuple[torch.Tensor, torch.Tensor]


def _opt(cfg, key: str, default=None):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def param_count(vocab: int, hidden: int, layers: int = 2) -> int:
    """Exact number of parameters of PTBLSTM(vocab, hidden, layers)."""
    return 2 * vocab * hidden + vocab + layers * (8 * hidden * hidden + 8 * hidden)


class PTBLSTM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int = 2, dropout: float = 0.0,
                 init_range: float = 0.1):
        super().__init__()
        if vocab < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"vocab, hidden and layers must be >= 1, got {vocab}, {hidden}, {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab, self.hidden, self.layers = vocab, hidden, layers
        self.init_range = init_range
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-self.init_range, self.init_range)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero (h, c), each [layers, batch_size, hidden], on the model's device and dtype."""
        w = self.decoder.weight
        shape = (self.layers, batch_size, self.hidden)
        return w.new_zeros(shape), w.new_zeros(shape)

    def forward(self, x: torch.Tensor, hidden: Optional[Hidden] = None):
        """x [B, T] token ids -> (logits [B, T, V], (h, c)); hidden None means zeros."""
        emb = self.drop(self.embedding(x))
        out, hidden = self.lstm(emb, hidden)
        return self.decoder(self.drop(out)), hidden


@register("ptb_lstm")
def build_ptb_lstm(model_cfg, meta) -> nn.Module:
    hidden = _opt(model_cfg, "hidden")
    if hidden is None:
        raise ValueError("model.hidden is not set (200 small, 650 medium, 1500 large)")
    return PTBLSTM(vocab=int(meta["vocab_size"]), hidden=int(hidden),
                   layers=int(_opt(model_cfg, "layers", 2)),
                   dropout=float(_opt(model_cfg, "dropout", 0.0)),
                   init_range=float(_opt(model_cfg, "init_range", 0.1)))
