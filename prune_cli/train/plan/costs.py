"""What a run costs in multiply-accumulates (MACs): the run-level side of pruning/compute.py.

compute.py counts one forward pass of a model; this module knows what a run is made of: the
unit of its task, the example that unit is, how many units a training step sees, and which
masks each step trained with. It gives summary.json its MAC fields:

- ``macs_unit``: ``image`` (classification), ``token`` (language model) or ``sentence pair``
  (translation: a pair of the evaluation split's mean source and target lengths, teacher
  forced; ``macs_lengths`` records the lengths).
- ``infer_macs_dense`` / ``infer_macs``: one inference forward per unit, dense and with the
  final masks (each pruned tensor counts its nonzeros).
- ``train_macs``: forward + backward = 3 x the training forward, on dense kernels (what masked
  training runs), for every unit of every step: steps x ``examples_per_step`` (the global
  batch; a language-model step is batch x bptt tokens; translation at the training split's mean
  lengths) x the dense training forward.
- ``train_macs_sparse_kernels``: the same if kernels skipped the zeros, each step at the masks
  it trained with (from sparsity.csv, which has every mask update), as RigL counts it.
- ``train_macs_pipeline``: ``train_macs`` plus the pipeline of the run it started from
  (``init_from``: that checkpoint's summary.json), so recursively the whole chain; null when
  the source's cost is unknown (a run made before MACs were counted).

The training forward is counted in training mode (InceptionV3's auxiliary head runs in
training only), the inference forward in evaluation mode. Models are counted as a copy built
on the ``meta`` device from the run's config: no weights, no memory, no random numbers.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from prune_cli import builders
from prune_cli.config import task_name
from prune_cli.pruning.compute import ForwardCost, forward_cost, steps_macs
from prune_cli.train.folder.files import RunFolder, kept_step_of

UNITS = {"classification": "image", "language_model": "token", "translation": "sentence pair"}
EXAMPLES = 2  # units in the example batch (batch norm in training mode needs 2 values per channel)


class CostError(Exception):
    """The run's MACs cannot be counted (the message says why)."""


@dataclass(frozen=True)
class RunCosts:
    unit: str
    examples_per_step: int
    train: ForwardCost          # training-mode forward per unit
    infer: ForwardCost          # evaluation-mode forward per unit
    lengths: Optional[dict] = None  # translation: {"train": [S, T], "infer": [S, T]}

    def train_macs(self, steps: int) -> float:
        return 3 * steps * self.examples_per_step * self.train.dense


def examples_per_step(cfg) -> int:
    """Units one optimizer step trains on: the global batch, times bptt for a language model."""
    batch = int(cfg.data.batch_size)
    return batch * int(cfg.data.bptt) if task_name(cfg) == "language_model" else batch


def meta_model(cfg, meta: dict) -> torch.nn.Module:
    """The run's model built on the meta device (its structure and parameter names, no weights):
    a built-in family or the user's _target_, as the run builds it."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return builders.build_model(cfg.model, meta)


def _lengths(meta: dict, split: str) -> Tuple[float, float]:
    lengths = meta.get("mean_lengths") or {}
    if split not in lengths:
        raise CostError(f"the dataset gives no mean lengths of its {split} split (meta['mean_lengths'])")
    return tuple(lengths[split])


def infer_split(meta: dict) -> str:
    """The evaluation split a translation's unit is measured on: test, else the first other."""
    splits = [s for s in (meta.get("mean_lengths") or {}) if s != "train"]
    return "test" if "test" in splits else (splits[0] if splits else "test")


def run_costs(cfg, meta: dict, model: torch.nn.Module = None) -> RunCosts:
    """The MACs per unit of the run of ``cfg`` on data with ``meta``; CostError when they cannot
    be counted. ``model``: a meta-device build of cfg.model (built here when not given)."""
    task = task_name(cfg)
    if task not in UNITS:
        raise CostError(f"task {task} has no MAC unit (known: {', '.join(UNITS)})")
    if model is None:
        try:
            model = meta_model(cfg, meta)
        except Exception as e:  # a user's builder that cannot build on the meta device
            raise CostError(f"{type(e).__name__} building {cfg.model.name} on the meta device: "
                            f"{(str(e).splitlines() or [''])[0][:120]}") from None
    lengths = None
    if task == "translation":
        lengths = {"train": list(_lengths(meta, "train")), "infer": list(_lengths(meta, infer_split(meta)))}
        if not callable(getattr(model, "mac_uses", None)):
            raise CostError(f"translation model {cfg.model.name} has no mac_uses(src_len, tgt_len) rule")
    costs = {}
    for mode in ("train", "infer"):
        model.train(mode == "train")
        if task == "translation":
            example, n = lengths[mode], 1
        elif task == "classification":
            size = int(meta.get("image_size") or 224)
            example, n = [torch.zeros(EXAMPLES, int(meta.get("channels", 3)), size, size, device="meta")], EXAMPLES
        else:
            example, n = [torch.zeros(EXAMPLES, 1, dtype=torch.long, device="meta")], EXAMPLES
        try:
            with torch.random.fork_rng(devices=[]):
                costs[mode] = forward_cost(model, *example, examples=n, unit=UNITS[task])
        except Exception as e:  # a user's model that cannot run on the meta device
            raise CostError(f"{type(e).__name__} in a meta-device forward of {cfg.model.name}: "
                            f"{(str(e).splitlines() or [''])[0][:120]}") from None
    return RunCosts(UNITS[task], examples_per_step(cfg), costs["train"], costs["infer"], lengths)


def source_pipeline(init_from: str) -> Optional[float]:
    """Training MACs of the pipeline a run started from (0 from scratch; None when unknown).
    A checkpoint a run kept at step K (checkpoint_step<K>.pt, for rewinding) cost what came
    before that run plus its first K steps, on dense kernels: K of its ``steps`` equal steps."""
    if init_from in (None, "scratch"):
        return 0.0
    source = RunFolder(Path(init_from).parent).read_summary() or {}
    value, own = source.get("train_macs_pipeline"), source.get("train_macs")
    if value is None:
        return None
    kept = kept_step_of(Path(init_from))
    if kept is None:
        return float(value)
    trained = int(source["steps"]) - int(source.get("rewind_step") or 0)
    return float(value) - float(own) + float(own) * (kept - int(source.get("rewind_step") or 0)) / trained


def number(x):
    """An integral float as an int (516864, not 516864.0, in summary.json)."""
    return int(x) if x is not None and float(x).is_integer() else x


def macs_to(costs: RunCosts, step: int, updates: List[Tuple[int, Dict[str, int]]], init_from: str,
            first_step: int = 0, dense_gradients: int = 0) -> dict:
    """The training MACs spent up to ``step`` (module docstring): dense kernels, sparse kernels (each
    step at the masks it trained with: ``updates``, every mask update so far, RunFolder.read_updates),
    and the pipeline (absent when the source's cost is unknown). ``first_step``: where the run began
    (a rewound run's K), so it trained step - first_step steps. ``dense_gradients``: the steps that
    took a dense gradient for a mask update (RigL), each costing f_D - f_S more on sparse kernels
    (a backward pass of the dense weights' gradient, as RigL's appendix counts it)."""
    train = costs.train_macs(step - first_step)
    before = source_pipeline(init_from)
    sparse = 3 * costs.examples_per_step * steps_macs(costs.train, updates, step, first_step)
    if dense_gradients and updates:
        sparse += costs.examples_per_step * dense_gradients * (costs.train.dense - costs.train.macs(updates[-1][1]))
    fields = {"train_macs": train, "train_macs_sparse_kernels": sparse}
    if before is not None:
        fields["train_macs_pipeline"] = train + before
    return fields


def summary_fields(costs: RunCosts, steps: int, final_nnz: Dict[str, int], updates: List[Tuple[int, Dict[str, int]]],
                   init_from: str, first_step: int = 0, dense_gradients: int = 0) -> dict:
    """summary.json's MAC fields (module docstring). ``steps``: the run's last step (``macs_to``)."""
    spent = macs_to(costs, steps, updates, init_from, first_step, dense_gradients)
    fields = {
        "macs_unit": costs.unit, "examples_per_step": costs.examples_per_step,
        "infer_macs_dense": costs.infer.dense, "infer_macs": costs.infer.macs(final_nnz),
        **spent, "train_macs_pipeline": spent.get("train_macs_pipeline"),
    }
    fields = {k: number(v) if isinstance(v, float) else v for k, v in fields.items()}
    if costs.lengths:
        fields["macs_lengths"] = costs.lengths
    uncounted = sorted(set(costs.train.uncounted) | set(costs.infer.uncounted))
    if uncounted:
        fields["macs_uncounted"] = uncounted
    return fields


def describe(costs: RunCosts) -> str:
    """One log line: the forward cost and what a step costs."""
    line = (f"MACs: {costs.infer.dense:,.0f} per {costs.unit} (inference, dense); training "
            f"{costs.train_macs(1):,.0f} per step ({costs.examples_per_step:,} {costs.unit}s, dense kernels)")
    uncounted = sorted(set(costs.train.uncounted) | set(costs.infer.uncounted))
    if uncounted:
        line += f"; not counted (unknown layer types): {', '.join(uncounted)}"
    return line


def counted(cfg, meta: dict):
    """(RunCosts, "") or (None, why not): a run whose MACs cannot be counted still runs."""
    try:
        return run_costs(cfg, meta), ""
    except CostError as e:
        return None, str(e)
