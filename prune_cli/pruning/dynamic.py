"""Dynamic sparse training: SET (Mocanu et al. 2018) and RigL (Evci et al. 2020) as mask-update rules.

The model is at its target sparsity from the first step and the connections move during
training. A ``DynamicRule`` decides where; the Pruner keeps the masks and applies them, driven
by the same calls from the same loop as gradual pruning (``mask_gradients()`` after backward,
``step(t)`` after each optimizer step), so the loop never learns that the masks move.

- **Start.** At the Pruner's first ``step()`` (step 0 of a fresh run) every pruned tensor gets a
  uniformly random mask with exactly n_l ones, drawn on the CPU from the rule's own generator
  (``stream_seed(seed, "dynamic_masks")``: the training RNG is untouched). n_l per tensor:
  ``uniform``: round(numel * (1 - s)), as gradual pruning's uniform scheme; ``erk``
  (Erdős-Rényi-Kernel): density proportional to sum(shape) / numel, that is
  (n_in + n_out) / (n_in * n_out) for a matrix and (n_in + n_out + k_h + k_w) / (n_in * n_out * k_h * k_w)
  for a convolution, scaled by one factor so that the total is exactly round(total * (1 - s))
  (``erk_counts``). A torch LSTM's gate-packed (4h x in) matrix is one tensor.
- **Updates.** At t = ΔT, 2ΔT, ... while t < T_end (T_end = round(end_fraction * total_steps)), each
  pruned tensor with nnz active weights moves k_t = min(floor(f_t * nnz), numel - nnz) of them,
  f_t = α/2 * (1 + cos(π t / T_end)): the k_t active weights of smallest magnitude are dropped
  (ties by position, the later goes) and k_t of the positions inactive before this update are
  regrown: those of largest |dense gradient| (``grow=gradient``, RigL; ties by position, the
  earlier wins) or a uniformly random subset (``grow=random``, SET). Dropped and regrown sets are
  disjoint, so NNZ per tensor never changes and a mask moves exactly 2 k_t positions. (RigL's
  reference code lets a just-dropped weight be regrown at once, keeping its value; here it
  cannot, which is why k_t is capped at the inactive count: a nearly dense tensor moves less.)
- **Regrown weights** start at exactly zero with zero optimizer state (momentum, Adam moments):
  the Pruner zeroes weight and state outside the survivors, so the dropped ones too.
- **The dense gradient** (RigL) is the gradient as it stands when ``mask_gradients()`` is called
  on the step before an update (step t - 1 -> t), before it is masked: masked training runs dense
  kernels, so the pruned weights receive it at no extra cost. Only its order is kept (int32 keys,
  one per weight of the tensor), and only on that step. A tensor whose gradient is None then
  (unused by that batch) keeps its mask at that update.

Compute (``dense_gradient_steps``): on dense kernels a step costs 3 f_D whatever the masks (what
masked training runs); on sparse kernels 3 f_S, plus f_D - f_S at each RigL update for the dense
gradient (SET needs none), f_S and f_D the sparse and dense forward MACs.
"""
import math
from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .masks import _topk_of_keys, keep_count, magnitude_keys, random_keys, stream_seed, topk_mask
from .schedule import ConstantSchedule

DISTRIBUTIONS = ("uniform", "erk")
GROWTH = ("gradient", "random")  # RigL, SET
DEFAULTS = {"update_every": 100, "drop_fraction": 0.3, "end_fraction": 0.75, "distribution": "uniform"}


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def uniform_counts(shapes: Mapping[str, Sequence[int]], sparsity: float) -> Dict[str, int]:
    """Every tensor at ``sparsity``: round(numel * (1 - s)) ones each."""
    return {n: keep_count(_numel(s), sparsity) for n, s in shapes.items()}


def erk_counts(shapes: Mapping[str, Sequence[int]], sparsity: float) -> Dict[str, int]:
    """Erdős-Rényi-Kernel ones per tensor, summing to exactly round(total * (1 - s)).

    A tensor's density is eps * sum(shape) / numel, one eps for all, so its share of the target
    is eps * sum(shape). A tensor whose density would exceed 1 is kept dense and eps recomputed
    over the rest, the densest first, one at a time, as RigL's code does (a dense tensor takes
    less than its share, which raises eps: another tensor may now exceed 1). The arithmetic is exact
    (fractions): the shares of the sparse tensors are (T - D) * S_l / sum S, T the target, D the
    dense tensors' numel, S_l = sum(shape_l); their floors get the remaining ones by largest
    remainder, ties to the earlier tensor.
    """
    names = list(shapes)
    numel = {n: _numel(shapes[n]) for n in names}
    weight = {n: sum(int(d) for d in shapes[n]) for n in names}
    target = keep_count(sum(numel.values()), sparsity)
    dense: List[str] = []
    while True:
        rest = [n for n in names if n not in dense]
        budget = target - sum(numel[n] for n in dense)
        if not rest:
            break
        eps = Fraction(budget, sum(weight[n] for n in rest))
        top = max(Fraction(weight[n], numel[n]) for n in rest)
        if eps * top <= 1:
            break
        dense += [n for n in rest if Fraction(weight[n], numel[n]) == top]
    counts = {n: numel[n] for n in dense}
    if rest:
        total_weight = sum(weight[n] for n in rest)
        share = {n: divmod(budget * weight[n], total_weight) for n in rest}  # (floor, remainder)
        counts.update({n: share[n][0] for n in rest})
        left = budget - sum(share[n][0] for n in rest)
        for n in sorted(rest, key=lambda n: (-share[n][1], names.index(n)))[:left]:
            counts[n] += 1
    return {n: counts[n] for n in names}


COUNTS = {"uniform": uniform_counts, "erk": erk_counts}


def _fraction_in(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}={value} must be a fraction in (0, 1]")
    return float(value)


class DynamicRule:
    """Where the masks of a dynamic sparse run move (module docstring); one rule drives one Pruner.

    ``sparsity``: the target, held from step 0. ``total_steps``: the run's length (T_end is
    ``end_fraction`` of it). ``seed``: the run's seed (initial masks, SET's regrowth).
    """

    def __init__(self, sparsity: float, total_steps: int, update_every: int = 100, drop_fraction: float = 0.3,
                 end_fraction: float = 0.75, distribution: str = "uniform", grow: str = "gradient", seed: int = 0):
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"pruning.update_every={update_every} must be a positive integer number of steps (ΔT)")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown pruning.distribution '{distribution}'; valid: {', '.join(DISTRIBUTIONS)}")
        if grow not in GROWTH:
            raise ValueError(f"unknown pruning.grow '{grow}'; valid: gradient (RigL), random (SET)")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be a positive integer")
        self.schedule = ConstantSchedule(sparsity)  # checks 0 <= s < 1
        if self.schedule.final_sparsity == 0:
            raise ValueError("a dynamic sparse run needs sparsity > 0: it holds the target from step 0")
        self.sparsity = self.schedule.final_sparsity
        self.update_every = update_every
        self.drop_fraction = _fraction_in("pruning.drop_fraction", drop_fraction)
        self.end_fraction = _fraction_in("pruning.end_fraction", end_fraction)
        self.end_step = int(math.floor(self.end_fraction * total_steps + 0.5))  # T_end
        self.distribution = distribution
        self.grow = grow
        self.generator = torch.Generator().manual_seed(stream_seed(seed, "dynamic_masks"))
        self.counts: Dict[str, int] = {}     # ones per tensor, from bind()
        self.targets: Dict[str, float] = {}  # the same as per-tensor sparsities
        self.last_step: Optional[int] = None  # the step of the last Pruner.step() call; None: not started
        self._grow_keys: Optional[Dict[str, torch.Tensor]] = None  # RigL: |dense gradient| order, for the next update

    def config(self) -> dict:
        """What a checkpoint must agree on to be resumed by this rule."""
        return {"grow": self.grow, "distribution": self.distribution, "sparsity": self.sparsity,
                "update_every": self.update_every, "drop_fraction": self.drop_fraction, "end_step": self.end_step}

    def __repr__(self):
        kind = "RigL" if self.grow == "gradient" else "SET"
        return (f"DynamicRule({kind}, sparsity={self.sparsity}, distribution={self.distribution}, "
                f"update_every={self.update_every}, drop_fraction={self.drop_fraction}, end_step={self.end_step})")

    # -- when ------------------------------------------------------------------------------
    def is_update_step(self, step: int) -> bool:
        """Step 0 (the random start) and every ΔT steps before T_end."""
        return step == 0 or self.is_move_step(step)

    def is_move_step(self, step: int) -> bool:
        return 0 < step < self.end_step and step % self.update_every == 0

    def update_steps(self, total_steps: int) -> List[int]:
        """The steps at which connections move in a run of ``total_steps`` (the start at 0 not included)."""
        return list(range(self.update_every, min(self.end_step, total_steps + 1), self.update_every))

    def dense_gradient_steps(self, total_steps: int) -> List[int]:
        """The update steps t whose mask update took a dense gradient (that of training step
        t - 1 -> t), each costing f_D - f_S more than a step on sparse kernels; none for SET."""
        return self.update_steps(total_steps) if self.grow == "gradient" else []

    def fraction_at(self, step: int) -> float:
        """f_t = α/2 * (1 + cos(π t / T_end)): the fraction of its active weights a tensor moves at t."""
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * step / self.end_step))

    def moved(self, step: int, nnz: int, numel: int) -> int:
        """k_t: weights dropped (and as many regrown) at ``step`` in a tensor of ``nnz`` active of ``numel``."""
        return min(int(math.floor(self.fraction_at(step) * nnz)), numel - nnz)

    # -- the Pruner's hooks ----------------------------------------------------------------
    def bind(self, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> None:
        """Fix the per-tensor counts for the Pruner's tensors (called once, by the Pruner)."""
        if self.counts:
            raise ValueError("this DynamicRule already drives a Pruner: make one rule per Pruner (dynamic_rule())")
        self.counts = COUNTS[self.distribution](dict(zip(names, (tuple(s) for s in shapes))), self.sparsity)
        self.targets = {n: 1.0 - c / _numel(s) for (n, c), s in zip(self.counts.items(), shapes)}

    @torch.no_grad()
    def see_gradients(self, names: Sequence[str], params: Sequence[torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        """Called by Pruner.mask_gradients before it masks: keep the order of |gradient| over the
        inactive positions when the coming step is a RigL update."""
        if self.grow != "gradient" or self.last_step is None or not self.is_move_step(self.last_step + 1):
            return
        self._grow_keys = {}
        for n, p in zip(names, params):
            if n in masks and p.grad is not None:
                keys = magnitude_keys(p.grad)
                self._grow_keys[n] = keys.masked_fill_(masks[n].reshape(-1) != 0, -1)  # active: never grown

    @torch.no_grad()
    def update(self, step: int, names: Sequence[str], params: Sequence[torch.Tensor],
               masks: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Tuple[torch.Tensor, torch.Tensor, int]]]:
        """Called by Pruner.step: None when nothing is due, else for each tensor that gets a mask
        (keep, survivors, moved): the new mask, the weights that stay as they are (the rest of
        the weights and their optimizer state are zeroed) and k_t, all bool of the weight's shape."""
        first = self.last_step is None
        self.last_step = step
        if first:
            return self._start(names, params)
        if not self.is_move_step(step):
            return None
        grow_keys, self._grow_keys = self._grow_keys, None
        if self.grow == "gradient" and grow_keys is None:
            raise RuntimeError(f"RigL update at step {step} without a dense gradient: call Pruner.mask_gradients() "
                               "after backward on every step, as the training loop does")
        out = {}
        for n, p in zip(names, params):
            if n not in masks:  # kept dense: nothing to move
                continue
            mask = masks[n]
            nnz = self.counts[n]
            k = self.moved(step, nnz, p.numel())
            if self.grow == "gradient" and n not in grow_keys:
                k = 0  # no gradient this step (unused by the batch): nothing to rank by
            if k == 0:
                keep = mask.reshape(p.shape) != 0
                out[n] = (keep, keep, 0)
                continue
            survivors = topk_mask(p, nnz - k, mask)
            keys = grow_keys[n] if self.grow == "gradient" else random_keys(p.numel(), self.generator, p.device)
            if self.grow == "random":
                keys.masked_fill_(mask.reshape(-1) != 0, -1)
            grown = _topk_of_keys(keys, k).view(p.shape)
            out[n] = (survivors | grown, survivors, k)
        return out

    def _start(self, names, params):
        out = {}
        for n, p in zip(names, params):
            if self.counts[n] < p.numel():
                keep = _topk_of_keys(random_keys(p.numel(), self.generator, p.device), self.counts[n]).view(p.shape)
                out[n] = (keep, keep, 0)
        return out

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": self.config(), "generator": self.generator.get_state(), "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self.config():
            raise ValueError(f"pruner state is for dynamic rule {state['config']}, this run's is {self.config()}: "
                             "use the config the checkpoint was made with")
        self.generator.set_state(state["generator"])
        self.last_step = state["last_step"]
        self._grow_keys = None


# -- the config side ---------------------------------------------------------------------------
def is_dynamic(pruning_cfg) -> bool:
    """A pruning config whose masks move (it names how connections grow: pruning.grow)."""
    return pruning_cfg.get("grow") is not None


def _get(pruning_cfg, key):
    value = pruning_cfg.get(key)
    return DEFAULTS[key] if value is None and key in DEFAULTS else value


def dynamic_rule(pruning_cfg, sparsity: float, total_steps: int, seed: int) -> Optional[DynamicRule]:
    """The run's DynamicRule, or None for pruning that is not dynamic (gradual, oneshot, none).
    Give the Pruner ``rule=`` this and ``rule.schedule`` as its schedule."""
    if not is_dynamic(pruning_cfg):
        return None
    return DynamicRule(float(sparsity), int(total_steps), update_every=_get(pruning_cfg, "update_every"),
                       drop_fraction=_get(pruning_cfg, "drop_fraction"), end_fraction=_get(pruning_cfg, "end_fraction"),
                       distribution=_get(pruning_cfg, "distribution"), grow=pruning_cfg.get("grow"), seed=seed)


def check_dynamic(pruning_cfg, sparsity: float, pattern, init_from) -> None:
    """ValueError (one line: what is wrong, what to do) for a dynamic pruning config that cannot
    run; quiet for one that can and for any config that is not dynamic."""
    if not is_dynamic(pruning_cfg):
        return
    name = f"pruning={pruning_cfg.get('name') or 'rigl'}"
    grow = pruning_cfg.get("grow")
    if grow not in GROWTH:
        raise ValueError(f"unknown pruning.grow '{grow}'; valid: gradient (RigL), random (SET)")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"{name} with sparsity={sparsity}: dynamic sparse training holds its target sparsity from "
                         "step 0; give one in (0, 1), e.g. sparsity=0.9 (pruning=none trains dense)")
    if pattern not in (None, "unstructured"):
        raise ValueError(f"{name} with pruning.pattern={pattern}: drop and regrow move single weights, which breaks "
                         "N of every M; use pattern unstructured, or pruning=gradual for an N:M pattern")
    if str(init_from) not in ("auto", "none"):
        raise ValueError(f"{name} with init_from={init_from}: dynamic sparse training starts from a fresh model with "
                         "random masks, which would throw a trained model's weights away at random; use init_from=none "
                         "(auto means none here), or pruning=gradual to prune a trained model")
    for key, ok, what in (
            ("update_every", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
             "a positive integer number of steps (ΔT), e.g. 100"),
            ("drop_fraction", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
             "a fraction in (0, 1] (α), e.g. 0.3"),
            ("end_fraction", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
             "a fraction of the run in (0, 1] (T_end), e.g. 0.75")):
        value = _get(pruning_cfg, key)
        if not ok(value):
            raise ValueError(f"pruning.{key}={value} must be {what}")
    distribution = _get(pruning_cfg, "distribution")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown pruning.distribution '{distribution}'; valid: {', '.join(DISTRIBUTIONS)}")
    for key, fine, why in (
            ("scheme", "uniform", "pruning.distribution (uniform|erk) allocates a dynamic run's sparsity"),
            ("criterion", "magnitude", "a dynamic run drops by magnitude and grows by pruning.grow"),
            ("mask_from", None, "a dynamic run moves its masks; fixed masks are pruning=gradual's control"),
            ("rewind_step", None, "rewinding trains a fixed mask (pruning.mask_from)"),
            ("begin_step", 0, "a dynamic run is at its sparsity from step 0 and moves until pruning.end_fraction"),
            ("end_step", 0, "a dynamic run is at its sparsity from step 0 and moves until pruning.end_fraction")):
        value = pruning_cfg.get(key, fine)
        if value != fine and not (key.endswith("_step") and value is None):
            raise ValueError(f"{name} with pruning.{key}={value}: {why}; leave pruning.{key} at {fine}")
