"""Magnitude masks and the Pruner that keeps them.

Selection is exact and sort-free. The magnitude of a float32 weight, read as the int32 of
its bits with the sign bit cleared, orders exactly like the magnitude itself, so "the k
largest" is found with two 16-bit histogram passes (a radix select) and one compare pass.
Ties at the threshold are broken by position (tensor order, then flat index), so masks are
the same on every device and every run. Weights already pruned get the key -1 and can never
be selected again: masks only shrink.

Masks are float tensors of the weight's dtype, kept by the Pruner (not on the model: the
model's state_dict, deepcopy and pickling are untouched). Applying them is one fused
multiply over all pruned tensors, for the gradients and again for the weights; re-masking
the weights after every optimizer step is what makes momentum, Adam state and weight decay
unable to revive a pruned weight, whatever the optimizer.

N:M patterns (``pattern="2:4"``): in every group of M consecutive weights along dimension 1
(input features of a linear or LSTM matrix, input channels of a convolution; the other
indices fixed) at most N survive, the layout sparse tensor cores accelerate. It composes with
any schedule without a second selector: at each update the N largest live weights of every
group get the largest possible key, so the same exact radix select prunes only the others,
smallest first, down to keep_count(numel, s_t). At s_f = 1 - N/M exactly the N largest of
every group remain; before it, the tensor follows eq. 1 exactly. Tensors whose dimension 1 is
not a multiple of M cannot be grouped and stay dense (``Pruner.dense``).

Criteria (``criterion=``): ``magnitude`` (the paper's) or ``random``, the control of ShrinkBench
and Gale et al. (2019): at each update every tensor keeps a uniformly random subset of its live
weights, of exactly the size eq. 1 gives. Random keys are a random permutation of the positions
(distinct, so no ties: exactly uniform), drawn on the CPU from the Pruner's own generator, so the
masks are the same on every device and the training RNG stream is untouched. The same select
(and N:M's group protection) then works on them unchanged. A third source of masks is a finished
run's final masks (``fixed=``): every update sets exactly those, for the controls of train/plan/start.py.
A fourth is a dynamic rule (``rule=``, pruning/dynamic.py: RigL, SET), which holds the sparsity
from the first step and moves the connections; the Pruner applies its masks as it does the others'.
"""
import fnmatch
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .schedule import GradualSchedule

SCHEMES = ("uniform", "layerwise_constant", "global")
CRITERIA = ("magnitude", "random")
# Optimizers whose update of a weight is exactly zero when the weight, its gradient and its
# per-weight state are zero (weight decay included): with their pruned state cleared at each
# mask update, a masked gradient alone keeps pruned weights at zero between updates.
ZERO_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
                   torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.Adadelta)
_CHUNK = 1 << 22  # elements per pass-chunk: bounds temporaries to a few tens of MB
_HI_BUCKETS = 1 << 15  # keys are 31-bit; high 15 bits
_LO_BUCKETS = 1 << 16  # low 16 bits
_MAX_KEY = 0x7FFFFFFF  # above every finite or infinite magnitude: N:M's protected weights


def keep_count(numel: int, sparsity: float) -> int:
    """Weights kept in a tensor of ``numel`` elements at ``sparsity``: round(numel * (1 - s)), half up."""
    return int(math.floor(numel * (1.0 - sparsity) + 0.5))


def magnitude_keys(weight: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flat int32 keys ordered like |weight|; pruned positions (mask == 0) get -1."""
    keys = weight.detach().reshape(-1).float().view(torch.int32) & 0x7FFFFFFF
    if mask is not None:
        keys.masked_fill_(mask.reshape(-1) == 0, -1)
    return keys


def stream_seed(seed: int, stream: str) -> int:
    """The seed of a run's named random stream (random masks, a re-initialisation), derived from
    its ``seed``. Not ``seed`` itself: two generators given the same seed draw the same numbers, so
    random masks drawn from ``seed`` would follow the initial weights torch.manual_seed(seed) drew."""
    digest = hashlib.sha256(f"prune_cli.{stream}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_keys(numel: int, generator: torch.Generator, device=None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flat int32 keys, a uniformly random permutation of 0..numel-1; pruned positions get -1.
    The k largest are a uniformly random k-subset of the live positions (distinct keys: no ties)."""
    keys = torch.randperm(numel, generator=generator, dtype=torch.int32).to(device)
    if mask is not None:
        keys.masked_fill_(mask.reshape(-1) == 0, -1)
    return keys


def _chunks(keys_fns: Sequence[Callable[[], torch.Tensor]]) -> Iterator[torch.Tensor]:
    for make in keys_fns:
        keys = make()
        for start in range(0, keys.numel(), _CHUNK):
            yield keys[start:start + _CHUNK]


def _bucket_with_kth(hist: torch.Tensor, k: int):
    """Bucket (from the top) holding the k-th largest element, and the count above it."""
    above_incl = hist.flip(0).cumsum(0)
    idx = int(torch.searchsorted(above_incl, torch.tensor(k, dtype=above_incl.dtype)))
    bucket = hist.numel() - 1 - idx
    above = int(above_incl[idx - 1]) if idx > 0 else 0
    return bucket, above


def kth_largest_key(keys_fns: Sequence[Callable[[], torch.Tensor]], k: int):
    """The k-th largest key (k >= 1) over all keys, and how many keys are strictly larger.

    ``keys_fns`` produce the key tensors on demand (one at a time), so a global threshold
    over hundreds of millions of weights never holds more than one tensor's keys and
    never concatenates or sorts them.
    """
    device = None
    hist = None
    for c in _chunks(keys_fns):
        h = torch.bincount((c >> 16) + 1, minlength=_HI_BUCKETS + 1)
        hist = h if hist is None else hist + h
        device = c.device
    hist = hist.cpu()
    bucket, above = _bucket_with_kth(hist, k)
    if bucket == 0:  # only pruned keys (-1) remain at this rank
        return -1, above
    hi = bucket - 1
    lo_hist = torch.zeros(_LO_BUCKETS, dtype=torch.int64, device=device)
    for c in _chunks(keys_fns):
        sel = c[(c >> 16) == hi]
        if sel.numel():
            lo_hist += torch.bincount(sel & 0xFFFF, minlength=_LO_BUCKETS)
    lo, above_lo = _bucket_with_kth(lo_hist.cpu(), k - above)
    return (hi << 16) | lo, above + above_lo


def _select(keys: torch.Tensor, threshold: int, ties: int) -> torch.Tensor:
    """Bool mask of keys > threshold, plus the first ``ties`` keys == threshold (by position)."""
    keep = keys > threshold
    if ties > 0:
        tie_idx = (keys == threshold).nonzero().squeeze(1)[:ties]
        keep[tie_idx] = True
    return keep


def topk_mask(weight: torch.Tensor, k: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool mask (weight's shape) keeping exactly the k largest-magnitude unpruned weights."""
    keys = magnitude_keys(weight, mask)
    return _topk_of_keys(keys, k, keys.numel() if mask is None else None).view(weight.shape)


def _topk_of_keys(keys: torch.Tensor, k: int, alive: Optional[int] = None) -> torch.Tensor:
    """Flat bool mask of the k largest keys (ties by position); keys < 0 are never kept."""
    if k <= 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    k = min(k, int((keys >= 0).count_nonzero()) if alive is None else alive)
    if k == keys.numel():
        return torch.ones_like(keys, dtype=torch.bool)
    threshold, above = kth_largest_key([lambda: keys], k)
    return _select(keys, threshold, k - above)


# -- N:M patterns ------------------------------------------------------------------------------
def parse_pattern(pattern) -> Optional[Tuple[int, int]]:
    """``"unstructured"`` (or None) -> None; ``"N:M"`` -> (N, M) with 0 < N < M."""
    if pattern is None or pattern == "unstructured":
        return None
    match = re.fullmatch(r"(\d+):(\d+)", str(pattern).strip())
    if not match or not 0 < int(match[1]) < int(match[2]):
        hint = " (in a YAML file quote it, \"2:4\": unquoted, YAML reads 2:4 as the number 124)" \
            if isinstance(pattern, int) else ""
        raise ValueError(f"pattern={pattern} is neither unstructured nor N:M with 0 < N < M, e.g. 2:4{hint}")
    return int(match[1]), int(match[2])


def pattern_sparsity(pattern) -> float:
    """The sparsity an N:M pattern implies, 1 - N/M (0.0 for unstructured: any sparsity goes)."""
    nm = parse_pattern(pattern)
    return 0.0 if nm is None else 1.0 - nm[0] / nm[1]


def nm_fits(shape: Sequence[int], m: int) -> bool:
    """Whether a tensor of ``shape`` splits into groups of m along dimension 1."""
    return len(shape) >= 2 and shape[1] % m == 0


def nm_group_top(keys: torch.Tensor, shape: Sequence[int], n: int, m: int) -> torch.Tensor:
    """Flat bool: the n largest live keys (>= 0) of every group of m along dimension 1.

    Ties are broken by position (the lower index along dimension 1, i.e. the lower flat index,
    as everywhere in the core). A weight's rank in its group is counted over the m(m-1)/2 pairs
    of the group, one vectorised compare a pair (m is small: 4 or 8; half the work of comparing
    every weight with all m), chunked over dimension 0 to bound temporaries; no sort.
    """
    rows = shape[0]
    grouped = keys.view(rows, shape[1] // m, m, -1)  # (rows, groups, m, rest): a view, no copy
    top = torch.empty(grouped.shape, dtype=torch.bool, device=keys.device)
    step = max(1, _CHUNK // max(1, keys.numel() // max(1, rows)))
    for a in range(0, rows, step):
        k = grouped[a:a + step]
        rank = torch.zeros(k.shape, dtype=torch.int8 if m < 128 else torch.int32, device=keys.device)  # int8: ~25% faster
        for i in range(m):
            for j in range(i + 1, m):
                wins = k[:, :, i] >= k[:, :, j]  # i is larger, or equal and earlier: j ranks below it
                rank[:, :, j] += wins
                rank[:, :, i] += ~wins
        top[a:a + step] = (rank < n) & (k >= 0)
    return top.view(-1)


def nm_topk_mask(weight: torch.Tensor, k: int, n: int, m: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool mask keeping the k largest live weights, never one of a group's n largest.

    The n largest live weights of every group of m along dimension 1 get the key _MAX_KEY (and
    every other key is capped just below it, so a NaN weight cannot tie with them); the exact
    radix select then keeps exactly min(k, live) weights: all protected ones while k is at
    least their number, so at k = numel * n / m exactly the top n of every group (returned
    without the select: the final update of every N:M schedule).
    """
    return nm_topk_of_keys(magnitude_keys(weight, mask), weight.shape, k, n, m)


def nm_topk_of_keys(keys: torch.Tensor, shape: Sequence[int], k: int, n: int, m: int) -> torch.Tensor:
    """nm_topk_mask on given keys (magnitude or random; pruned positions -1): a bool mask of ``shape``."""
    protected = nm_group_top(keys, shape, n, m)
    if k == int(protected.count_nonzero()):  # count_nonzero: ~15x faster than a bool sum
        return protected.view(shape)
    keys.clamp_(max=_MAX_KEY - 1).masked_fill_(protected, _MAX_KEY)
    return _topk_of_keys(keys, k).view(shape)


def global_topk_masks(weights: Sequence[torch.Tensor], k: int,
                      masks: Optional[Sequence[Optional[torch.Tensor]]] = None) -> List[torch.Tensor]:
    """One magnitude threshold across all ``weights``: exactly k weights kept in total."""
    masks = list(masks) if masks is not None else [None] * len(weights)
    fns = [lambda w=w, m=m: magnitude_keys(w, m) for w, m in zip(weights, masks)]
    if k <= 0:
        return [torch.zeros_like(w, dtype=torch.bool) for w in weights]
    alive = sum(w.numel() if m is None else int(m.count_nonzero()) for w, m in zip(weights, masks))
    k = min(k, alive)
    threshold, above = kth_largest_key(fns, k)
    ties = k - above
    out = []
    for w, fn in zip(weights, fns):
        keys = fn()
        keep = _select(keys, threshold, ties)
        if ties > 0:
            ties -= int((keys == threshold).sum().clamp(max=ties))
        out.append(keep.view(w.shape))
    return out


@dataclass
class LayerStats:
    name: str
    numel: int
    nnz: int
    target_sparsity: float
    sparsity: float
    dropped: int = 0  # a dynamic rule's last update: weights dropped and as many regrown (else 0)
    regrown: int = 0


def _resolve(model: nn.Module, params: Union[str, Iterable[str]]) -> List[str]:
    if isinstance(params, str):
        params = [params]
    patterns = list(params)
    if not patterns:
        raise ValueError("params is empty: name at least one parameter (or glob pattern) to prune")
    names = [n for n, _ in model.named_parameters()]
    chosen = set()
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"parameter pattern '{pattern}' matches nothing; the model's parameters are: {shown}")
        chosen.update(hits)
    return [n for n in names if n in chosen]  # model order, each once


class Pruner:
    """Gradual magnitude pruning of selected parameters (Zhu & Gupta 2017).

    In a training loop::

        loss.backward()
        pruner.mask_gradients()      # before clipping and the optimizer step
        optimizer.step()
        pruner.step(step)            # raises sparsity when due; re-masks the weights

    ``params``: exact parameter names or glob patterns (``"lstm.weight_*"``).
    ``optimizer`` (optional): at each mask update the pruned positions of its per-weight state
    (momentum buffers, Adam moments, ...) are zeroed; for the optimizers in ZERO_PRESERVING
    (SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, NAdam, Adadelta) a zero weight with a zero
    gradient and zero state then stays exactly zero, so the weights are re-masked only at
    updates and a step costs one fused multiply instead of two. Without an optimizer, or with
    any other, the weights are re-masked after every step.
    ``scheme``: ``uniform`` (every tensor at the schedule's sparsity), ``layerwise_constant``
    (each update interval is subdivided and one tensor at a time is brought to the level:
    tensor j of L updates ``floor(j * frequency / L)`` steps after the schedule's update
    step) or ``global`` (one threshold over all selected tensors, total NNZ exact).
    ``pattern``: ``unstructured`` (default) or ``"N:M"`` (see the module docstring): the
    schedule must end at 1 - N/M; selected tensors whose dimension 1 is not a multiple of M
    are left dense and listed in ``dense``. Not with ``global``: N:M fixes every tensor at
    1 - N/M, so one global threshold would have nothing left to allocate.
    ``criterion``: ``magnitude`` or ``random`` (see the module docstring; ``seed`` seeds its
    generator, whose state travels in ``state_dict``). Random is per tensor, so not with
    ``global``: one threshold over all tensors is a magnitude notion.
    ``fixed``: a finished run's final masks, as its Pruner's ``state_dict()``: every update sets
    exactly these (the tensors it left dense stay dense); with a one-update schedule they are set
    once and never change.
    ``rule``: a dynamic rule (pruning/dynamic.py, RigL or SET): the masks are at the rule's per-tensor
    counts from the first ``step()`` and move at its update steps; ``schedule`` must then hold the
    rule's sparsity from step 0 (``rule.schedule``), with scheme uniform, pattern unstructured and
    criterion magnitude. ``mask_gradients()`` shows it the dense gradient before masking it.
    """

    def __init__(self, model: nn.Module, schedule: GradualSchedule, params, scheme: str = "uniform",
                 optimizer: Optional[torch.optim.Optimizer] = None, pattern: str = "unstructured",
                 criterion: str = "magnitude", seed: int = 0, fixed: Optional[dict] = None, rule=None):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown pruning scheme '{scheme}'; use one of {', '.join(SCHEMES)}")
        if criterion not in CRITERIA:
            raise ValueError(f"unknown pruning criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
        if criterion == "random" and scheme == "global":
            raise ValueError("criterion random with scheme global: one threshold over all tensors is a magnitude "
                             "notion; random pruning keeps a random subset of each tensor: use uniform or layerwise_constant")
        self.criterion = "fixed" if fixed is not None else criterion
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "random_masks")) \
            if self.criterion == "random" else None
        self.nm = parse_pattern(pattern)
        self.pattern = "unstructured" if self.nm is None else f"{self.nm[0]}:{self.nm[1]}"
        self.schedule = schedule
        self.scheme = scheme
        self.optimizer = optimizer
        self.names = _resolve(model, params)
        named = dict(model.named_parameters())
        self.dense: List[str] = []  # selected, but left dense by the pattern
        if self.nm is not None:
            n, m = self.nm
            if scheme == "global":
                raise ValueError(f"pattern {self.pattern} with scheme global: N:M fixes every tensor at "
                                 f"{1 - n / m:g} sparsity, leaving one global threshold nothing to allocate; "
                                 "use uniform or layerwise_constant")
            if abs(schedule.final_sparsity - (1 - n / m)) > 1e-9:
                raise ValueError(f"pattern {self.pattern} keeps {n} of every {m} weights, sparsity {1 - n / m:g}: "
                                 f"the schedule's final sparsity {schedule.final_sparsity:g} contradicts it")
            self.dense = [x for x in self.names if not nm_fits(named[x].shape, m)]
            self.names = [x for x in self.names if x not in self.dense]
            if not self.names:
                raise ValueError(f"pattern {self.pattern}: no selected tensor has dimension 1 a multiple of {m} "
                                 f"({', '.join(self.dense)}); choose another pattern or other tensors")
        self.params = [named[n] for n in self.names]
        layers = len(self.names)
        step = schedule.frequency if scheme == "layerwise_constant" else 0
        self.offsets = [j * step // layers for j in range(layers)]
        self.masks: Dict[str, torch.Tensor] = {}  # name -> float mask, only once a tensor is pruned
        self.targets: Dict[str, float] = {n: 0.0 for n in self.names}
        self.fixed = None if fixed is None else self._check_fixed(fixed, named)
        self.rule = rule
        self.moved: Dict[str, Tuple[int, int]] = {}  # name -> (dropped, regrown) at the rule's last update
        if rule is not None:
            self._check_rule(rule)
            rule.bind(self.names, [p.shape for p in self.params])
        self._index_masks()

    def _check_rule(self, rule) -> None:
        """A dynamic rule allocates and moves the masks itself: nothing else may choose them."""
        for what, value, fine in (("scheme", self.scheme, "uniform"), ("pattern", self.pattern, "unstructured"),
                                  ("criterion", self.criterion, "magnitude")):
            if value != fine:
                raise ValueError(f"a dynamic rule ({rule!r}) with {what} {value}: it allocates and moves the masks "
                                 f"itself; use {what} {fine}")
        s = self.schedule
        if s.sparsity_at(0) != s.final_sparsity or abs(s.final_sparsity - rule.sparsity) > 1e-12:
            raise ValueError(f"a dynamic rule holds sparsity {rule.sparsity:g} from step 0, the schedule {s!r} does not: "
                             "give the Pruner rule.schedule")

    def _check_fixed(self, state: dict, named: Dict[str, torch.Tensor]) -> dict:
        """The masks (bool, CPU) and per-tensor targets of ``state`` (a Pruner's state_dict), checked
        against this model; ValueError in one line when they cannot be its masks."""
        masks = state.get("masks") or {}
        if not masks:
            raise ValueError("the mask source has no masks (a dense run, or one stopped before pruning began)")
        for name, mask in masks.items():
            if name not in self.names:
                raise ValueError(f"the mask source prunes '{name}', which this run does not prune "
                                 f"({', '.join(self.names)}): give a run of the same model and pruned tensors")
            if tuple(mask.shape) != tuple(named[name].shape):
                raise ValueError(f"the mask source's mask for '{name}' has shape {tuple(mask.shape)}, this model's "
                                 f"parameter {tuple(named[name].shape)}: give a run of the same model and data")
        return {"masks": {n: m.bool().cpu() for n, m in masks.items()},
                "targets": {n: float(state["targets"][n]) for n in masks}}

    # -- schedule -------------------------------------------------------------------------
    def target_at(self, step: int) -> Dict[str, float]:
        """Target sparsity of every selected tensor after the update (if any) at ``step``."""
        if self.rule is not None:
            return dict(self.rule.targets)
        return {n: self.schedule.sparsity_at(step - off) for n, off in zip(self.names, self.offsets)}

    def is_update_step(self, step: int) -> bool:
        if self.rule is not None:
            return self.rule.is_update_step(step)
        return any(self.schedule.is_update_step(step - off) for off in set(self.offsets))

    # -- training-loop API ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, step: int) -> bool:
        """Call after each optimizer step. Returns True when the masks were updated."""
        if self.rule is not None:
            return self._rule_step(step)
        updated = self.is_update_step(step)
        if updated:
            self.update_masks(self.target_at(step))
            self._clear_optimizer_state()
            self.apply_masks()
        elif type(self.optimizer) not in ZERO_PRESERVING:
            self.apply_masks()
        return updated

    @torch.no_grad()
    def _rule_step(self, step: int) -> bool:
        """The dynamic rule's masks, when it has any for ``step``: outside the survivors the weights
        and their optimizer state are zeroed (dropped ones, and regrown ones, which start at 0)."""
        moves = self.rule.update(step, self.names, self.params, self.masks)
        if moves is None:
            if type(self.optimizer) not in ZERO_PRESERVING:
                self.apply_masks()
            return False
        self.moved = {}
        for name, (keep, survivors, moved) in moves.items():
            self._set_mask(name, keep, self.rule.targets[name])
            p = self.params[self.names.index(name)]
            gone = ~survivors
            p.masked_fill_(gone, 0)
            for value in (self.optimizer.state.get(p, {}).values() if self.optimizer is not None else ()):
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.masked_fill_(gone, 0)
            self.moved[name] = (moved, moved)
        return True

    @torch.no_grad()
    def _clear_optimizer_state(self) -> None:
        """Zero the optimizer's per-weight state (momentum, Adam moments, ...) at pruned positions."""
        if self.optimizer is None:
            return
        for p, m in zip(self._masked_params, self._mask_list):
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (call after backward, before clipping)."""
        if self.rule is not None:  # RigL ranks the inactive weights by this dense gradient
            self.rule.see_gradients(self.names, self.params, self.masks)
        grads, masks = [], []
        for p, m in zip(self._masked_params, self._mask_list):
            if p.grad is not None:
                grads.append(p.grad)
                masks.append(m)
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned weights (in place: cuDNN's flat LSTM weights stay flat)."""
        if self._mask_list:
            torch._foreach_mul_(self._masked_params, self._mask_list)

    def _index_masks(self) -> None:
        # The hot path (two fused multiplies a step) iterates these two lists and nothing else.
        pairs = [(p, self.masks[n]) for n, p in zip(self.names, self.params) if n in self.masks]
        self._masked_params = [p for p, _ in pairs]
        self._mask_list = [m for _, m in pairs]

    @torch.no_grad()
    def update_masks(self, targets: Dict[str, float]) -> None:
        """Bring each tensor to its target sparsity (never reviving a pruned weight)."""
        if self.fixed is not None:  # a fixed-mask run: its source's masks, whatever the schedule says
            for n, keep in self.fixed["masks"].items():
                self._set_mask(n, keep, self.fixed["targets"][n])
            return
        if self.scheme == "global":
            level = next(iter(targets.values()))
            if level <= max(self.targets.values()):
                return
            total = sum(p.numel() for p in self.params)
            old = [self.masks.get(n) for n in self.names]
            new = global_topk_masks(self.params, keep_count(total, level), old)
            for n, keep in zip(self.names, new):
                self._set_mask(n, keep, level)
            return
        for n, p in zip(self.names, self.params):
            if targets[n] > self.targets[n] or (targets[n] > 0 and n not in self.masks):
                self._set_mask(n, self._keep(p, targets[n], self.masks.get(n)), targets[n])

    def kept(self, numel: int, target: float) -> int:
        """Weights a selected tensor of ``numel`` elements keeps at ``target`` (reads no weight:
        train/plan/budget.py plans a run's per-step MACs with it before the run exists)."""
        if self.nm is None:
            return keep_count(numel, target)
        n, m = self.nm
        # Never below n of every m, whatever the float rounding of the target.
        return max(keep_count(numel, target), numel // m * n)

    def _keep(self, p: torch.Tensor, target: float, mask: Optional[torch.Tensor]) -> torch.Tensor:
        k = self.kept(p.numel(), target)
        if self.generator is None and self.nm is None:
            return topk_mask(p, k, mask)
        keys = magnitude_keys(p, mask) if self.generator is None else random_keys(p.numel(), self.generator, p.device, mask)
        if self.nm is None:
            return _topk_of_keys(keys, k).view(p.shape)
        return nm_topk_of_keys(keys, p.shape, k, *self.nm)

    def _set_mask(self, name: str, keep: torch.Tensor, target: float) -> None:
        self.targets[name] = target
        if name in self.masks:
            self.masks[name].copy_(keep)
        elif target > 0:
            p = self.params[self.names.index(name)]
            self.masks[name] = torch.empty_like(p).copy_(keep)  # the weight's layout (e.g. channels_last)
            self._index_masks()

    # -- statistics -----------------------------------------------------------------------
    def stats(self) -> List[LayerStats]:
        out = []
        for n, p in zip(self.names, self.params):
            nnz = int(self.masks[n].count_nonzero()) if n in self.masks else p.numel()
            out.append(LayerStats(n, p.numel(), nnz, self.targets[n], 1.0 - nnz / p.numel(), *self.moved.get(n, (0, 0))))
        return out

    def sparsity(self) -> float:
        """Achieved sparsity over all selected tensors."""
        stats = self.stats()
        return 1.0 - sum(s.nnz for s in stats) / sum(s.numel for s in stats)

    # -- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "scheme": self.scheme,
            "pattern": self.pattern,
            "criterion": self.criterion,
            "names": list(self.names),
            "targets": dict(self.targets),
            "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
        }
        if self.generator is not None:  # where the random masks' stream stands: resume draws on from here
            state["generator"] = self.generator.get_state()
        if self.rule is not None:  # its settings, generator and step: resume moves the masks on from here
            state["rule"] = self.rule.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        pattern = state.get("pattern", "unstructured")  # checkpoints from before N:M are unstructured
        criterion = state.get("criterion", "magnitude")  # and from before criteria, magnitude
        if state["names"] != self.names or state["scheme"] != self.scheme or pattern != self.pattern:
            raise ValueError(
                f"pruner state is for scheme '{state['scheme']}', pattern {pattern} over {len(state['names'])} tensors; "
                f"this pruner is '{self.scheme}', {self.pattern} over {len(self.names)}: "
                "use the config the checkpoint was made with")
        if criterion != self.criterion:
            raise ValueError(f"pruner state is for criterion {criterion}, this pruner's is {self.criterion}: "
                             "use the config the checkpoint was made with")
        if ("rule" in state) != (self.rule is not None):
            raise ValueError("pruner state is for " + ("a dynamic rule" if "rule" in state else "gradual pruning")
                             + ", this pruner's is " + ("a dynamic rule" if self.rule is not None else "gradual pruning")
                             + ": use the config the checkpoint was made with")
        if self.rule is not None:
            self.rule.load_state_dict(state["rule"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        named = dict(zip(self.names, self.params))
        self.masks = {}
        for n, m in state["masks"].items():
            if m.shape != named[n].shape:
                raise ValueError(f"mask for '{n}' has shape {tuple(m.shape)}, the parameter {tuple(named[n].shape)}")
            self.masks[n] = torch.empty_like(named[n]).copy_(m)
        self.targets = dict(state["targets"])
        self._index_masks()
        self.apply_masks()
