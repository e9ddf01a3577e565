"""Model families, one module a family, found by name (installed as ``prune_cli.models``).

Each family module registers a builder with ``@register("name")``. A builder takes the
composed ``model`` config node and the dataset's metadata (``DataBundle.meta``) and
returns an ``nn.Module``. Which parameters are pruned is config (``model.prune``), not code.
A user's model is found the other way, by the ``_target_`` its config names (prune_cli.builders).
"""
import importlib
from typing import Callable, Dict, Optional

import torch.nn as nn

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
# Family name -> its module, imported only when that family is built: validating a config (or
# refusing one) must not pay for every family's imports (inception's torchvision: ~2.7 s).
FAMILIES = {"ptb_lstm": "ptb_lstm", "mobilenet": "mobilenet", "inception_v3": "inception", "gnmt": "gnmt"}


def register(name: str):
    def wrap(fn):
        _BUILDERS[name] = fn
        return fn
    return wrap


def names():
    return sorted(set(FAMILIES) | set(_BUILDERS))


def builder(name: str) -> Optional[Callable[..., nn.Module]]:
    """The registered builder of family ``name`` (None if there is none)."""
    if name not in _BUILDERS and name in FAMILIES:
        importlib.import_module(f"{__name__}.{FAMILIES[name]}")
    return _BUILDERS.get(name)


def build(model_cfg, meta) -> nn.Module:
    fn = builder(model_cfg.name)
    if fn is None:
        raise ValueError(f"unknown model '{model_cfg.name}'; valid: {', '.join(names())}")
    return fn(model_cfg, meta)
