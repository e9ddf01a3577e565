"""What a run is, decided before a byte is written: one frozen Plan (open_lth's training/desc.py
is the model). ``make_plan`` plans a run and, under budget=equal_compute, its Scratch-B partner
by the same code.

    start     where the weights and masks come from (plan/start.py)
    optim     the recipe the optimizer and learning rate follow (plan/recipe.py), stretched
              under a budget
    planned   the recipe's own length; ``total``: the steps this run trains (capped by
              trainer.max_steps, or the budget's)
    schedule  the pruning schedule (eq. 1, a fixed-mask run's one update, or a dynamic rule's
              constant target from step 0)
    rule      RigL / SET's mask-update rule (pruning/dynamic.py), None for every other run
    costs     MACs per unit (plan/costs.py), None when the model cannot be counted (``uncounted`` says why)
    budget    the equal-compute budget (plan/budget.py) or None
"""
from dataclasses import dataclass
from typing import Any, Optional

from prune_cli.config import ConfigError, run_config
from prune_cli.pruning.dynamic import dynamic_rule
from prune_cli.train.plan import budget as budgets
from prune_cli.train.plan import costs as run_costs
from prune_cli.train.plan.recipe import build_schedule, recipe, run_length
from prune_cli.train.plan.start import Start, decide


@dataclass(frozen=True)
class Plan:
    cfg: Any                    # the run's config (config.run_config)
    steps_per_epoch: int
    start: Start
    optim: Any
    planned: int
    total: int
    schedule: Any
    costs: Optional[run_costs.RunCosts]
    uncounted: str
    budget: Optional[budgets.Budget]
    rule: Any = None

    @property
    def sparsity(self) -> float:
        return float(self.cfg.sparsity)

    @property
    def lr(self) -> float:
        return float(self.optim.lr)

    def dense_gradients(self, step: int) -> int:
        """How many of the steps up to ``step`` took a dense gradient for a mask update (RigL)."""
        return len(self.rule.dense_gradient_steps(step)) if self.rule is not None else 0

    def summary_fields(self, step: int, final_nnz: dict, updates: list, first_step: int) -> dict:
        """summary.json's fields of the plan: the start, the MACs spent (to ``step``), the budget."""
        fields = self.start.summary()
        if self.costs is not None:
            fields.update(run_costs.summary_fields(self.costs, step, final_nnz, updates, self.start.init_from, first_step,
                                                   self.dense_gradients(step)))
        if self.rule is not None:  # RigL / SET: how its connections moved
            fields.update({k: v for k, v in self.rule.config().items() if k != "sparsity"})
        if self.budget is not None:
            fields.update(self.budget.summary())
        return fields

    def describe(self, pruner):
        """Log lines: what a step costs, the budget it trains to, the tensors an N:M pattern leaves dense."""
        yield run_costs.describe(self.costs) if self.costs else f"MACs not counted: {self.uncounted}"
        if self.budget is not None:
            b = self.budget
            yield (f"budget: {b.steps} steps ({b.stretch:.4g}x, schedule stretched) for the training MACs of "
                   f"budget.match={b.match} ({b.train_macs:.4g}, {b.convention})")
        if pruner.dense:
            yield (f"pattern {pruner.pattern}: left dense (dimension 1 not a multiple of {pruner.nm[1]}): "
                   f"{', '.join(pruner.dense)}")


def make_plan(cfg, meta: dict, steps_per_epoch: int, state: Optional[dict] = None, start: Optional[Start] = None) -> Plan:
    """The plan of the run of ``cfg`` (a run_config) on data with ``meta``. ``state``: the run's own
    checkpoint when it resumes; ``start``: given for a partner, which trains from scratch.
    Raises StartError or ConfigError (one line) for a plan that cannot be carried out."""
    start = decide(cfg, state) if start is None else start
    # Sections 4.1 and 4.3: pruning a trained model has a recipe of its own (plan/recipe.py).
    optim, planned = recipe(cfg, start.from_trained, steps_per_epoch)
    total = run_length(cfg, planned)
    start.check_within(total)
    counted, uncounted = run_costs.counted(cfg, meta)
    budget = None
    if cfg.get("budget") is not None:  # equal compute: a longer run, its schedule stretched
        partner = make_plan(run_config(budgets.partner_config(cfg)), meta, steps_per_epoch, start=Start())
        budget = budgets.match(cfg, meta, total, counted, partner)
        optim, total = budget.stretched(optim), budget.steps
    late = [step for step in cfg.trainer.get("eval_at") or () if step > total]
    if late:
        raise ConfigError(f"trainer.eval_at={list(cfg.trainer.eval_at)} holds step {late[0]}, beyond the run's "
                          f"{total} steps; evaluate within the run (its end is evaluated anyway)")
    try:
        rule = dynamic_rule(cfg.pruning, float(cfg.sparsity), total, cfg.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    schedule = rule.schedule if rule is not None else (
        start.schedule(float(cfg.sparsity))
        or build_schedule(cfg, steps_per_epoch, total, from_trained=start.init_from != "scratch", planned=planned))
    return Plan(cfg, steps_per_epoch, start, optim, planned, total, schedule, counted, uncounted, budget, rule)
