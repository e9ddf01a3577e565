"""A multilayer perceptron: the model half of the example.

prune-run calls ``build_mlp(model_cfg, meta)`` (conf/model/mlp.yaml names it with ``_target_``):
``model_cfg`` is the composed ``model`` node (every key of mlp.yaml, overrides applied), ``meta``
the dataset's DataBundle.meta. ``model.prune`` in mlp.yaml names the weights to prune.
"""
import torch.nn as nn


def build_mlp(model_cfg, meta) -> nn.Module:
    width, depth = int(model_cfg.hidden), int(model_cfg.depth)
    sizes = [int(meta["num_features"])] + [width] * depth
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], int(meta["num_classes"])))
    return nn.Sequential(*layers)
