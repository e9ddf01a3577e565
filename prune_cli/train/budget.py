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

Bad input, found by ``check`` before any work: a match on a sparse run, a match to another
model family, task or dataset, an unknown convention, a match that is not a mapping of config
keys, a partner config that is itself invalid.
"""
import json
from dataclasses import dataclass

from omegaconf import OmegaConf, open_dict

from prune_cli.config import ConfigError, effective_sparsity

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


def _first_difference(a, b, prefix: str):
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found = _first_difference(x, y, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{key}", x, y
    return None


def check(cfg) -> None:
    """ConfigError (one line) for a budget that cannot be honoured; nothing when there is none."""
    if cfg.get("budget") is None:
        return
    conv = convention(cfg)
    if conv not in CONVENTIONS:
        raise ConfigError(f"unknown budget.convention '{conv}'; valid: {', '.join(CONVENTIONS)}")
    if effective_sparsity(cfg) > 0:
        raise ConfigError(f"budget.match on a sparse run (sparsity={effective_sparsity(cfg):g}): an equal-compute "
                          "run is a dense model given another configuration's training compute; use sparsity=0")
    partner = partner_config(cfg)
    for key in ("name", "task"):
        if partner.model.get(key) != cfg.model.get(key):
            raise ConfigError(f"budget.match changes model.{key} ({cfg.model.get(key)} -> {partner.model.get(key)}): "
                              "a compute match is to another size or sparsity of this run's model family and data")
    try:
        mine, theirs = (OmegaConf.to_container(c.data, resolve=True) for c in (cfg, partner))
    except Exception as e:
        raise ConfigError(f"budget.match: the partner's config does not resolve: {str(e).splitlines()[0]}") from None
    diff = _first_difference(mine, theirs, "data.")
    if diff:
        raise ConfigError(f"budget.match changes {diff[0]} ({diff[1]} -> {diff[2]}): the partner must train on this "
                          "run's dataset and batches; set the key for both runs instead")
    from prune_cli.config import validate

    try:
        validate(partner)
    except ConfigError as e:
        raise ConfigError(f"budget.match makes an invalid partner: {e}") from None
    if conv == "sparse_kernels" and effective_sparsity(partner) > 0 and partner.pruning.scheme == "global":
        raise ConfigError("budget.convention=sparse_kernels with a partner pruned by scheme global: its per-tensor "
                          "sparsity, and so its sparse-kernel cost, is known only once it has run; "
                          "use budget.convention=dense_kernels or another scheme")


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
        from prune_cli.train.costs import number

        return {"budget_match": self.match, "budget_convention": self.convention,
                "budget_train_macs": number(self.train_macs), "budget_stretch": self.stretch,
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


def plan(cfg, meta: dict, own_total: int, steps_per_epoch: int, own_costs) -> Budget:
    """The budget of this run (cfg.budget), or None without one. ConfigError when a model cannot be counted."""
    if cfg.get("budget") is None:
        return None
    from prune_cli.pruning import Pruner
    from prune_cli.train import costs
    from prune_cli.train.optim import recipe
    from prune_cli.train.run import build_schedule

    if own_costs is None:
        raise ConfigError("budget.match: this model's MACs cannot be counted (see docs/compute.md), so no step "
                          "count can match a budget")
    partner = partner_config(cfg)
    with open_dict(partner):
        partner.sparsity = effective_sparsity(partner)
    model = costs.meta_model(partner, meta)
    try:
        partner_costs = costs.run_costs(partner, meta, model)
    except costs.CostError as e:
        raise ConfigError(f"budget.match: the partner's MACs cannot be counted ({e})") from None
    _, planned = recipe(partner, False, steps_per_epoch)
    total = planned if partner.trainer.max_steps is None else min(planned, partner.trainer.max_steps)
    sparse = float(partner.sparsity) > 0 and partner.pruning.name != "none"
    if convention(cfg) == "sparse_kernels" and sparse:
        schedule = build_schedule(partner, steps_per_epoch, total, from_trained=False, planned=planned)
        pruner = Pruner(model, schedule, list(partner.model.prune), scheme=partner.pruning.scheme,
                        pattern=partner.pruning.get("pattern", "unstructured"))
        forward = costs.steps_macs(partner_costs.train, planned_updates(pruner, total), total)
    else:
        forward = total * partner_costs.train.dense
    target = 3 * partner_costs.examples_per_step * forward
    steps = max(1, round(target / own_costs.train_macs(1)))
    m = partner.model
    who = {"size": m.get("size"), "hidden": m.get("hidden"), "width": m.get("width"), "units": m.get("units"),
           "target_sparsity": float(partner.sparsity), "scheme": partner.pruning.scheme,
           "pattern": partner.pruning.get("pattern", "unstructured"), "steps": total}
    match = json.dumps(OmegaConf.to_container(cfg.budget.match, resolve=True), sort_keys=True)
    return Budget(match, convention(cfg), target, steps, steps / own_total, who)
