"""Compute accounting: multiply-accumulates (MACs) of a model's forward pass, dense and masked.

The companion of storage.py: storage counts what a model holds, this counts what it costs to
run. Counted, per unit of the task (an image, a token, a sentence pair):

- convolution: k_h * k_w * (c_in / groups) * c_out * H_out * W_out (depthwise included), i.e.
  every weight element once per output position;
- linear: in * out per row (a token, an image);
- recurrent layers (nn.LSTM / GRU / RNN, every layer and direction, packed or padded input;
  LSTMCell / GRUCell / RNNCell): every weight matrix once per time step, e.g. 4h * (x + h) per
  token for an LSTM layer;
- embedding lookups: 0.

Left out, as the papers that quote MACs do (MobileNet's 569M, torchvision's 5.71 "GFLOPS" of
InceptionV3): biases and other additions, batch / layer / group normalisation (it folds into
the preceding convolution at inference), activations, pooling, softmax, resizing.

Every counted MAC multiplies one weight element, except attention's scores and context, which
multiply activations. So a model's cost is kept as ``extra + sum_p uses[p] * nnz[p]``:
``uses[p]`` is how often each element of parameter p is multiplied per unit. That makes the
dense count (nnz = numel), the count with masks (a pruned tensor counts its nonzeros: a
sparse kernel's work) and the per-step count of a whole training run (the nnz at each mask
update) all one dot product.

``forward_cost`` finds ``uses`` with forward hooks on one small example; give it a model built
on the ``meta`` device (nothing is computed, no memory or random numbers are used). A model
whose forward calls its weights functionally (GNMT's stepped decoder cell and attention) says
its own cost instead: a method ``mac_uses(*example) -> (uses, extra)``. Parameterised modules
of a type the walk does not know are listed in ``uncounted`` (their MACs are missing).
"""
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence

# Parameterised modules whose cost is left out by convention (module docstring): not "uncounted".
LEFT_OUT = (nn.Embedding, nn.EmbeddingBag, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
            nn.PReLU, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


@dataclass(frozen=True)
class ForwardCost:
    """MACs of one forward pass per unit: ``extra + sum_p uses[p] * nnz[p]``."""

    unit: str
    uses: Dict[str, float]                  # parameter name -> multiplications per element per unit
    numel: Dict[str, int]                   # parameter name -> elements (the dense nnz)
    extra: float = 0.0                      # MACs that multiply no weight (attention scores, context)
    uncounted: Tuple[str, ...] = field(default=())  # "name (Type)" of modules the walk could not count

    def macs(self, nnz: Optional[Mapping[str, int]] = None) -> float:
        """MACs per unit when the tensors named in ``nnz`` keep that many nonzeros (others dense)."""
        nnz = nnz or {}
        return self.extra + sum(u * nnz.get(name, self.numel[name]) for name, u in self.uses.items())

    @property
    def dense(self) -> float:
        return self.macs()


def forward_cost(model: nn.Module, *example, examples: float = 1, unit: str = "example") -> ForwardCost:
    """The forward cost of ``model`` per unit, ``examples`` units being in ``example``.

    ``example``: what ``model(*example)`` takes (tensors on the model's device; ``meta`` is
    fastest), or, for a model with ``mac_uses``, what that method takes. The model's train/eval
    mode is used as it is (InceptionV3 runs its auxiliary head in training only).
    """
    numel = {n: p.numel() for n, p in model.named_parameters()}
    rule = getattr(model, "mac_uses", None)
    if callable(rule):
        uses, extra = rule(*example)
        return ForwardCost(unit, {n: float(u) / examples for n, u in uses.items()}, numel, float(extra) / examples)
    names = {id(p): n for n, p in model.named_parameters()}
    uses: Dict[str, float] = {}

    def add(params: Iterable[nn.Parameter], times) -> None:
        for p in params:
            uses[names[id(p)]] = uses.get(names[id(p)], 0.0) + float(times)

    def hook(module, args, out):  # counted from the output: inputs may come as keywords
        if isinstance(module, nn.modules.conv._ConvNd):
            add([module.weight], out.numel() / module.out_channels)   # once per output position
        elif isinstance(module, nn.Linear):
            add([module.weight], out.numel() / module.out_features)   # once per row
        elif isinstance(module, nn.RNNBase):                           # once per time step
            y = out[0]
            steps = y.data.shape[0] if isinstance(y, PackedSequence) else y.shape[:-1].numel()
            add([p for n, p in module.named_parameters(recurse=False) if n.startswith("weight_")], steps)
        elif isinstance(module, nn.RNNCellBase):
            h = out[0] if isinstance(out, tuple) else out
            add([module.weight_ih, module.weight_hh], h.shape[0] if h.dim() == 2 else 1)

    handles, uncounted = [], []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if _countable(module):
            handles.append(module.register_forward_hook(hook))
        elif own and not isinstance(module, LEFT_OUT):
            uncounted.append(f"{name or '(model)'} ({type(module).__name__})")
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in handles:
            h.remove()
    return ForwardCost(unit, {n: u / examples for n, u in uses.items()}, numel, 0.0, tuple(uncounted))


def _countable(module: nn.Module) -> bool:
    conv = isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
    return conv or isinstance(module, (nn.Linear, nn.RNNBase, nn.RNNCellBase))


def masked_nnz(masks: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """name -> nonzeros of each mask (the weights a sparse kernel multiplies)."""
    return {n: int(m.count_nonzero()) for n, m in masks.items()}


def steps_macs(cost: ForwardCost, updates: Sequence[Tuple[int, Mapping[str, int]]], steps: int,
               first: int = 0) -> float:
    """Forward MACs per unit summed over training steps first .. steps-1 (``first``: a rewound
    run's first step), each step at the masks it trained with. ``updates``: (step, nnz per tensor) of every mask update, in step order; the
    masks set at step s are those of the forward of step s onwards (the Pruner updates after
    step s's optimizer step, the loop's step counter then being s). Before the first update the
    model is dense."""
    total, start, nnz = 0.0, first, {}
    for step, new in list(updates) + [(steps, None)]:
        step = min(max(step, first), steps)
        if step > start:
            total += (step - start) * cost.macs(nnz)
            start = step
        if new is not None:
            nnz = new
    return total
