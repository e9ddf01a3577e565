"""Where a run's model and data come from: the callable a config names, called and checked one way.

A ``model`` or ``data`` config names its builder either with ``_target_``, a dotted path
importable from the user's environment (Hydra's own way: ``prune-run --config-dir my_conf
model=my_net``), or with ``name``, a family or dataset registered in prune_cli.models /
prune_cli.data. The registries are one source of builders among others: whichever the source,
the builder is called with the same arguments and its result is checked the same way, so a
user's model goes through exactly the code path of ours (DESIGN.md).

    model builder: (model config node, DataBundle.meta) -> torch.nn.Module
    data builder:  (data config node, seed) -> DataBundle

Errors are :class:`BuildError`: one line, what is wrong and what to do.

TODO(issue 17): MACs. The MAC accounting module (beside pruning/storage.py) counts a model's
MACs from the built module and its masks; a user's model reaches it exactly as ours do (the
summary is written from the same objects). Layers of types it does not know should be listed
in the summary as not counted; docs/plugins.md ("What your runs get") is to say so then.
"""
import logging
from typing import Callable, Optional, Set

import torch.nn as nn

from prune_cli import data as datasets
from prune_cli import models
from prune_cli.data import DataBundle

# The held-out splits summary.json and the report read a task's quality from (train/run.py
# summary_record): a dataset must name at least one of them so.
SPLITS = {"classification": ("val", "test"), "language_model": ("valid", "test"), "translation": ("valid", "test")}


class BuildError(Exception):
    """A builder that cannot be found, called, or returns the wrong thing; the message is one line."""


def has_target(node) -> bool:
    return node is not None and node.get("_target_") is not None


def locate(node, group: str) -> Callable:
    """The callable ``node._target_`` names (Hydra's lookup, as ``instantiate`` uses it)."""
    from hydra.utils import get_object

    target = str(node._target_)
    # get_object logs its failure before raising it: the one line below says it instead.
    quiet = logging.getLogger("hydra.utils")
    was, quiet.disabled = quiet.disabled, True
    try:
        obj = get_object(target)
    except Exception as e:
        cause = e.__cause__ or e
        why = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise BuildError(f"{group}._target_={target} cannot be imported ({why}); make it importable from "
                         "this environment: pip install the package that defines it, or run with "
                         "PYTHONPATH=<the folder that holds it>") from None
    finally:
        quiet.disabled = was
    if not callable(obj):
        raise BuildError(f"{group}._target_={target} is a {type(obj).__name__}, not a callable; name a function "
                         f"that builds the {group}")
    return obj


def _describe(node, group: str) -> str:
    return f"{group}._target_={node._target_}" if has_target(node) else f"{group} '{node.name}'"


class _Recorded(dict):
    """The dataset's meta, noting which keys the model builder reads: those travel with the run
    (summary.json ``model_meta``) so that an exported file rebuilds its model without the data."""

    def __init__(self, meta):
        super().__init__(meta)
        self.read: Set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def build_model(model_cfg, meta, read: Optional[Set[str]] = None) -> nn.Module:
    """The model the config names, built for ``meta``; ``read`` (a set) gets the meta keys the builder read."""
    if has_target(model_cfg):
        builder = locate(model_cfg, "model")
    else:
        builder = models.builder(model_cfg.name)
        if builder is None:
            raise BuildError(f"unknown model '{model_cfg.name}'; valid: {', '.join(models.names())}")
    recorded = _Recorded(meta or {})
    model = builder(model_cfg, recorded)
    if read is not None:
        read.update(recorded.read)
    if not isinstance(model, nn.Module):
        raise BuildError(f"{_describe(model_cfg, 'model')} returned {type(model).__name__}, not a torch.nn.Module; "
                         "return the network from the builder")
    return model


def data_builder(data_cfg) -> Callable:
    """Before any work: the data's builder, found, and (registry datasets) its files checked."""
    if has_target(data_cfg):
        return locate(data_cfg, "data")
    try:
        datasets.check(data_cfg)
    except datasets.DataError as e:
        raise BuildError(str(e)) from None
    return datasets.builder(data_cfg.name)


def build_data(data_cfg, seed: int) -> DataBundle:
    """The DataBundle the config names, built for ``seed``."""
    bundle = data_builder(data_cfg)(data_cfg, seed)
    if not isinstance(bundle, DataBundle):
        raise BuildError(f"{_describe(data_cfg, 'data')} returned {type(bundle).__name__}, not a "
                         "prune_cli.data.DataBundle; return DataBundle(train_epoch=..., steps_per_epoch=..., "
                         "eval_splits=..., meta=...)")
    if bundle.steps_per_epoch < 1 or not bundle.eval_splits:
        raise BuildError(f"{_describe(data_cfg, 'data')} returned a DataBundle with steps_per_epoch="
                         f"{bundle.steps_per_epoch} and eval splits {sorted(bundle.eval_splits)}; give at least "
                         "one training batch an epoch and one evaluation split")
    wanted = SPLITS.get(data_cfg.get("task"), ())
    if wanted and not set(wanted) & set(bundle.eval_splits):
        raise BuildError(f"{_describe(data_cfg, 'data')} returned eval splits {sorted(bundle.eval_splits)}; a "
                         f"{data_cfg.task} dataset names its held-out splits {' and/or '.join(wanted)} "
                         "(the run's summary and the report read its quality from them)")
    return bundle
