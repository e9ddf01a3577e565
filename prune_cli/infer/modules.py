"""Inference modules that run pruned weights stored in CSR, and the swap that puts them in a model.

:func:`sparsify` replaces, in a model loaded with dense weights, every module whose pruned
weight is given in CSR:

- ``nn.Linear`` (softmax layers, classifiers) -> :class:`SparseLinear`: ``(W @ x^T)^T``;
- ``nn.Embedding`` -> :class:`SparseEmbedding`: the looked-up rows read out of the CSR arrays;
- 1x1 ``nn.Conv2d`` (MobileNet's pointwise convolutions) -> :class:`SparsePointwiseConv`: per
  image ``W @ x[n].view(C, H*W)`` on NCHW activations, with the BatchNorm that follows the
  convolution folded into the CSR values and a bias;
- ``nn.LSTM`` -> :class:`~prune_cli.infer.lstm.SparseLSTM`.

Each such layer holds a :class:`~prune_cli.infer.matrix.Matrix`: CSR or dense as its
:class:`~prune_cli.infer.kernels.Choice` decides (measured at its first call, or by a
configured crossover). Every other module is left as it is. The modules are for inference
(``eval()``, no autograd); their outputs equal the dense model's up to float rounding (the sums
run in another order).
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import Choice, Decision, csr_rows, sparsity_of
from .lstm import SparseLSTM, gnmt_decoder_cell
from .matrix import Matrix


def _choice(layer: str, csr: torch.Tensor, mode: str, crossover: Optional[float], budget_s: float) -> Choice:
    return Choice(layer, sparsity_of(csr), mode, crossover, budget_s)


class SparseLinear(nn.Module):
    """``nn.Linear`` with a CSR weight: ``y = (W @ x^T)^T + b``."""

    def __init__(self, layer: str, linear: nn.Linear, csr: torch.Tensor, mode="auto", crossover=None, budget_s=0.3):
        super().__init__()
        self.matrix = Matrix(layer, linear.weight.detach(), csr, _choice(layer, csr, mode, crossover, budget_s))
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
        self.matrix = Matrix(layer, embedding.weight.detach(), csr, _choice(layer, csr, mode, crossover, budget_s))
        self.choices = [self.matrix.choice]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.matrix
        if m.sparse is None:
            m.decide(lambda: F.embedding(ids, m.dense), lambda: csr_rows(m.csr, ids), ids.numel())
        return csr_rows(m.csr, ids) if m.sparse else F.embedding(ids, m.dense)


def is_pointwise(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding in ((0, 0), "valid") and conv.dilation == (1, 1) and conv.groups == 1)


def foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that is a fixed per-channel affine map (eval mode, running statistics)."""
    return (isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def fold_batchnorm(csr: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """(CSR, bias) of ``bn(conv(x))`` as one product: row r of W scaled by
    ``s_r = gamma_r / sqrt(var_r + eps)``, bias ``beta_r + (b_r - mean_r) * s_r``. Same nonzeros."""
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.float() + bn.eps)
        shift = -bn.running_mean.float()
        if bn.affine:
            scale = scale * bn.weight.float()
        shift = (shift if bias is None else shift + bias.float()) * scale
        if bn.affine:
            shift = shift + bn.bias.float()
        crow = csr.crow_indices()
        rows = torch.repeat_interleave(torch.arange(csr.shape[0]), crow.diff().long())
        values = csr.values() * scale[rows]
        folded = torch.sparse_csr_tensor(crow, csr.col_indices(), values, csr.shape, check_invariants=False)
    return folded, shift.contiguous()


class SparsePointwiseConv(nn.Module):
    """A 1x1, stride-1, ungrouped ``nn.Conv2d`` (and the BatchNorm2d after it, when given) as CSR
    products on NCHW activations: per image ``Y[n] = W @ X[n] + b`` with ``X[n] = x[n].view(C, H*W)``
    -- the activations as they lie in memory, so nothing is transposed or cloned, and the output
    is NCHW again. A channels_last input is made contiguous once (the first such layer after a
    channels_last convolution; :func:`sparsify` keeps the model's own convolutions NCHW).

    With ``bn``, the BatchNorm's scale is folded into the CSR values and its shift into the bias,
    so a sparse layer is one product and the model's BatchNorm module is replaced by an identity
    (:func:`sparsify`); the dense kernel runs ``bn(conv(x))`` as the plain model does.
    """

    def __init__(self, layer: str, conv: nn.Conv2d, csr: torch.Tensor, mode="auto", crossover=None, budget_s=0.3,
                 bn: Optional[nn.BatchNorm2d] = None):
        super().__init__()
        if not is_pointwise(conv):
            raise ValueError(f"{layer}: not a 1x1 stride-1 ungrouped convolution")
        self.conv, self.bn = conv, bn
        bias = None if conv.bias is None else conv.bias.detach()
        if bn is not None:
            csr, bias = fold_batchnorm(csr, bias, bn)
        choice = _choice(layer, csr, mode, crossover, budget_s)
        if bn is not None and choice.decision is not None and choice.decision.kernel == "sparse":
            choice.decision.reason += f", {type(bn).__name__} folded in"
        self.matrix = Matrix(layer, conv.weight.detach(), csr, choice)
        self.bias2d = None if bias is None else bias.unsqueeze(1)
        self.choices = [self.matrix.choice]

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) if self.bn is not None else y

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n, c, h, w = x.shape
        w_csr = self.matrix.csr
        out = x.new_empty(n, w_csr.shape[0], h, w)
        for i in range(n):
            y = out[i].view(w_csr.shape[0], h * w)
            if self.bias2d is None:
                torch.mm(w_csr, x[i].view(c, h * w), out=y)
            else:
                torch.addmm(self.bias2d, w_csr, x[i].view(c, h * w), out=y)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.matrix
        if m.sparse is None:
            n, _, h, w = x.shape
            m.decide(lambda: self._dense(x), lambda: self._sparse(x), n * h * w)
            if m.sparse and self.bn is not None:
                m.choice.decision.reason += f", {type(self.bn).__name__} folded in"
        return self._sparse(x) if m.sparse else self._dense(x)


def batchnorm_after(model: nn.Module, convs) -> Dict[str, str]:
    """``{conv name: BatchNorm name}`` for each conv in ``convs`` whose output goes only into a
    foldable BatchNorm2d, each module called once -- read off the model's traced graph
    (``torch.fx``). A model that cannot be traced gets no folding (an empty dict)."""
    convs = set(convs)
    if not convs:
        return {}
    try:
        import torch.fx
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # control flow or calls fx cannot trace: run unfolded, which is only slower
        return {}
    modules = dict(model.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in convs or len(node.users) != 1:
            continue
        (user,) = node.users
        if (user.op == "call_module" and foldable(modules.get(user.target)) and user.args[:1] == (node,)
                and len(user.args) == 1 and not user.kwargs and calls[node.target] == calls[user.target] == 1):
            pairs[node.target] = user.target
    return pairs


# Models whose forward reads a pruned weight directly (not through a module): by class name.
SPECIAL = {"GNMT": gnmt_decoder_cell}


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def sparsify(model: nn.Module, csr: Dict[str, torch.Tensor], mode: str = "auto",
             crossover: Optional[float] = None, budget_s: float = 0.3) -> List[Choice]:
    """Swap the modules whose weights are in ``csr`` (parameter name -> CSR 2-D view) for the
    sparse modules above, in place. Returns every layer's Choice (decided at its first call,
    unless forced or given a crossover); a CSR weight of a module with no CSR kernel here stays
    dense and says so.

    Pointwise convolutions take the BatchNorm after them along (folded), and, unless every
    kernel is forced dense, the model's remaining convolutions are set to NCHW: the CSR
    products read and write NCHW, and a channels_last convolution between them would turn
    every layer's output back (a copy per layer)."""
    csr = dict(csr)
    special = SPECIAL.get(type(model).__name__)
    choices: List[Choice] = special(model, csr, mode, crossover, budget_s) if special else []
    modules = dict(model.named_modules())
    pointwise = [n for n, m in modules.items() if is_pointwise(m) and f"{n}.weight" in csr]
    bns = batchnorm_after(model, pointwise)
    handled = set()
    for name, module in modules.items():
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
            bn = modules[bns[name]] if name in bns else None
            new = SparsePointwiseConv(name, module, mine["weight"], mode, crossover, budget_s, bn=bn)
            if bn is not None:
                _set(model, bns[name], nn.Identity())
        if new is not None:
            _set(model, name, new)
            choices.extend(new.choices)
            handled.update(prefix + p for p in mine if p.startswith("weight"))
    if pointwise and mode != "dense":
        model.to(memory_format=torch.contiguous_format)
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
