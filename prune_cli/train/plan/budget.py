"""Equal-compute training (Liu et al. 2019, "Scratch-B"): a dense run given the training MACs of
another configuration, its *partner*, typically a large model pruned gradually.

    prune-run model.hidden=48 budget=equal_compute 'budget.match={model: {hidden: 384}, sparsity: 0.9}'

``budget.match`` holds the overrides that turn this run's config into the partner's (the
partner need not exist: its cost follows from its recipe). ``budget.convention`` says how the
partner's training is counted: ``dense_kernels`` (default: 3 x forward x every unit of every
step, what masked training runs) or ``sparse_kernels`` (each step at the sparsity eq. 1 gives
it then; a global-scheme partner's per-tensor sparsity is not known before it runs, so it is
refused). This run then trains

    steps = round(partner train MACs / (3 x examples per step x this model's dense training forward))

steps, and its learning-rate schedule is stretched by r = steps / its own length: the rate at
step t is the original schedule's at t / r (optim.learning_rate's ``lr_schedule.stretch``), so
decays land at the same fraction of training. The partner trains from scratch on the same
data and batches (a match that changes ``data.*`` is refused: its examples per step would
differ); its length is its own recipe's, capped by its ``trainer.max_steps``.

Bad input (a match on a sparse run, to another model family, task or dataset, an unknown
convention, a match that is not a mapping of config keys, a partner config that is itself
invalid) is refused by checks.py before any work.
"""
import json
from dataclasses import dataclass

from omegaconf import OmegaConf, open_dict

from prune_cli.config import ConfigError, model_widths
from prune_cli.pruning import Pruner
from prune_cli.pruning.compute import steps_macs
from prune_cli.train.plan import costs

CONVENTIONS = ("dense_kernels", "sparse_kernels")
EXAMPLE = "budget.match='{model: {hidden: 384}, sparsity: 0.9}'"


def convention(cfg) -> str:
    return str(cfg.budget.get("convention") or "dense_kernels")


def partner_config(cfg):
    """This run's config with ``budget.match`` merged in and the budget node removed."""
    match = cfg.budget.get("match")
    if match is None:
        raise ConfigError(f"budget.match is not set: give the overrides that make the partner, e.g. {EXAMPLE}")
    if not OmegaConf.is_dict(match):
        raise ConfigError(f"budget.match={OmegaConf.to_container(match) if OmegaConf.is_config(match) else match!r} "
                          f"is not a mapping of config keys; e.g. {EXAMPLE}")
    base = cfg.copy()
    with open_dict(base):
        base.pop("budget")
    OmegaConf.set_struct(base, True)  # a key the config lacks is a typo, not a new key
    try:
        return OmegaConf.merge(base, match)
    except Exception as e:
        raise ConfigError(f"budget.match does not fit this config ({str(e).splitlines()[0]}); e.g. {EXAMPLE}") from None


@dataclass(frozen=True)
class Budget:
    match: str              # budget.match as JSON
    convention: str
    train_macs: float       # the partner's training MACs: this run's target
    steps: int              # this run's length
    stretch: float          # steps / the length this run would have had
    partner: dict           # what the report pairs on: the partner's model widths, sparsity, scheme, pattern

    def stretched(self, optim_cfg):
        """The recipe with its learning-rate schedule stretched to the new length."""
        optim_cfg = optim_cfg.copy()
        with open_dict(optim_cfg):
            optim_cfg.lr_schedule.stretch = self.stretch
        return optim_cfg

    def summary(self) -> dict:
        return {"budget_match": self.match, "budget_convention": self.convention,
                "budget_train_macs": costs.number(self.train_macs), "budget_stretch": self.stretch,
                "budget_partner": self.partner}


def planned_updates(pruner, total: int):
    """(step, nnz per tensor) of every mask update a run with ``pruner`` will make in ``total``
    steps: the steps and counts its Pruner gives eq. 1's schedule, without a weight."""
    steps = sorted({u + off for off in set(pruner.offsets) for u in pruner.schedule.update_steps() if u + off < total})
    out = []
    for step in steps:
        targets = pruner.target_at(step)
        out.append((step, {n: (pruner.kept(p.numel(), targets[n]) if targets[n] > 0 else p.numel())
                           for n, p in zip(pruner.names, pruner.params)}))
    return out


def match(cfg, meta: dict, own_total: int, own_costs, partner) -> Budget:
    """The budget of this run (cfg.budget) against its ``partner``, the Plan (plan/plan.py) of
    the config ``partner_config`` makes. ConfigError when a model cannot be counted."""
    if own_costs is None:
        raise ConfigError("budget.match: this model's MACs cannot be counted (see docs/compute.md), so no step "
                          "count can match a budget")
    if partner.costs is None:
        raise ConfigError(f"budget.match: the partner's MACs cannot be counted ({partner.uncounted})")
    p = partner.cfg
    sparse = float(p.sparsity) > 0 and p.pruning.name != "none"
    extra = 0.0
    if convention(cfg) == "sparse_kernels" and sparse:
        pruner = Pruner(costs.meta_model(p, meta), partner.schedule, list(p.model.prune), scheme=p.pruning.scheme,
                        pattern=p.pruning.get("pattern", "unstructured"), rule=partner.rule)
        updates = planned_updates(pruner, partner.total)
        forward = steps_macs(partner.costs.train, updates, partner.total)
        if partner.dense_gradients(partner.total):  # RigL: a dense gradient at each of its mask updates
            dense, sparse_fwd = partner.costs.train.dense, partner.costs.train.macs(updates[-1][1])
            extra = partner.costs.examples_per_step * partner.dense_gradients(partner.total) * (dense - sparse_fwd)
    else:
        forward = partner.total * partner.costs.train.dense
    target = 3 * partner.costs.examples_per_step * forward + extra
    steps = max(1, round(target / own_costs.train_macs(1)))
    who = {**model_widths(p.model), "target_sparsity": float(p.sparsity), "scheme": p.pruning.scheme,
           "pattern": p.pruning.get("pattern", "unstructured"), "steps": partner.total}
    match = json.dumps(OmegaConf.to_container(cfg.budget.match, resolve=True), sort_keys=True)
    return Budget(match, convention(cfg), target, steps, steps / own_total, who)
