"""Model families, one module a family, found by name (installed as ``prune_cli.models``).

Each family module registers a builder with ``@register("name")``. A builder takes the
composed ``model`` config node and the dataset's metadata (``DataBundle.meta``) and
returns an ``nn.Module``. Which parameters are pruned is config (``model.prune``), not code.
"""
import importlib
from typing import Callable, Dict

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


def build(model_cfg, meta) -> nn.Module:
    name = model_cfg.name
    if name not in _BUILDERS and name in FAMILIES:
        importlib.import_module(f"{__name__}.{FAMILIES[name]}")
    if name not in _BUILDERS:
        raise ValueError(f"unknown model '{name}'; valid: {', '.join(names())}")
    return _BUILDERS[name](model_cfg, meta)
