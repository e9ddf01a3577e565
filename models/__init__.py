"""Model families, one module a family, found by name (installed as ``prune_cli.models``).

Each family module registers a builder with ``@register("name")``. A builder takes the
composed ``model`` config node and the dataset's metadata (``DataBundle.meta``) and
returns an ``nn.Module``. Which parameters are pruned is config (``model.prune``), not code.
"""
import importlib
from typing import Callable, Dict

import torch.nn as nn

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
_FAMILY_MODULES = ("ptb_lstm", "mobilenet", "inception", "gnmt")


def register(name: str):
    def wrap(fn):
        _BUILDERS[name] = fn
        return fn
    return wrap


def _load_all() -> None:
    for mod in _FAMILY_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # a family not written yet must not hide the others
            if e.name != f"{__name__}.{mod}":
                raise


def names():
    _load_all()
    return sorted(_BUILDERS)


def build(model_cfg, meta) -> nn.Module:
    _load_all()
    if model_cfg.name not in _BUILDERS:
        raise ValueError(f"unknown model '{model_cfg.name}'; valid: {', '.join(names())}")
    return _BUILDERS[model_cfg.name](model_cfg, meta)
