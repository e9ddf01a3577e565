"""InceptionV3 (Szegedy et al., 2016): torchvision's ``Inception3`` in a thin wrapper.

The network is ``torchvision.models.inception_v3(weights=None, aux_logits=True,
init_weights=True, transform_input=False)``, kept as ``self.net``, so every parameter name is
torchvision's with a ``net.`` prefix (``net.Conv2d_1a_3x3.conv.weight``,
``net.Mixed_7c.branch_pool.conv.weight``, ``net.AuxLogits.fc.weight``, ``net.fc.weight``).
The wrapper itself has no parameters.

Pruned (paper, section 3: "All the convolutional layers in this model are pruned"):

    PRUNE_PATTERNS = ["*.conv.weight"]     # the 96 BasicConv2d convs, aux head's 2 included

The two fully-connected layers (``net.fc``, ``net.AuxLogits.fc``) are not convolutions and are
not matched; add ``"*fc.weight"`` to prune them too (Table 1's NNZ column, 27.1M x (1 - s),
reads as if everything was pruned -- the paper does not say).

Counting convention (as for MobileNet): all parameters but BatchNorm's. With the auxiliary
classifier and 1000 classes that is 27,125,040 (paper Table 1: 27.1M); with BN gamma/beta it
is 27,161,264; without the aux head 23,800,136. Conv weights: 24,307,040 (89.6%).

Keys read from the ``model`` node:

    num_classes   null -> meta["num_classes"]                                 (default null)
    dropout       before fc; TF-slim's keep_prob 0.8 -> 0.2 (torchvision: 0.5)   (default 0.2)
    aux_logits    keep the auxiliary classifier (in the param count)           (default true)
    input_size    side the input is bilinearly resized to inside forward; null: 75 when
                  meta["image_size"] < 75 (CIFAR), else no resize              (default null)

Small inputs: torchvision's InceptionV3 needs at least 75x75 for the main path and 299x299
for the auxiliary head (its 5x5/3 average pool and 5x5 valid conv need a 17x17 map). So
(1) the wrapper upsamples (bilinear, no parameters) to ``input_size`` when the input is
smaller, and (2) the aux head pools the Mixed_6e map adaptively to 5x5 when that map is
smaller than 17x17; at 17x17 or more it runs torchvision's exact code. Neither adds or
renames a parameter. At 75x75 a training step costs ~1/50 of one at 299x299 (CPU: ~70 vs
~1.5 images/s), which is why 75 is the default for 32x32 images.

Outputs: in train mode ``InceptionOutputs(logits, aux_logits)`` (torchvision's namedtuple;
the paper's loss is CE(logits) + 0.4 * CE(aux_logits)); in eval mode, logits only.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from . import register

PRUNE_PATTERNS: List[str] = ["*.conv.weight"]
MIN_INPUT = 75
InceptionOutputs = tv_inception.InceptionOutputs


class SmallMapInceptionAux(tv_inception.InceptionAux):
    """torchvision's aux head; pools adaptively to 5x5 when the map is under 17x17."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        else:
            x = F.adaptive_avg_pool2d(x, (5, 5))
        x = self.conv1(self.conv0(x))
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.fc(x)


class InceptionV3(nn.Module):
    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.2,
                 input_size: Optional[int] = None):
        super().__init__()
        if input_size is not None and int(input_size) < MIN_INPUT:
            raise ValueError(f"model.input_size must be >= {MIN_INPUT} for InceptionV3, got {input_size}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        blocks = [tv_inception.BasicConv2d, tv_inception.InceptionA, tv_inception.InceptionB,
                  tv_inception.InceptionC, tv_inception.InceptionD, tv_inception.InceptionE,
                  SmallMapInceptionAux]
        self.net = tv_inception.inception_v3(
            weights=None, aux_logits=bool(aux_logits), init_weights=True, num_classes=int(num_classes),
            transform_input=False, dropout=float(dropout), inception_blocks=blocks)
        self.input_size = None if input_size is None else int(input_size)

    @property
    def aux_logits(self) -> bool:
        return self.net.aux_logits

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if s is not None and tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor):
        return self.net(self.resize(x))


def paper_param_count(model: nn.Module) -> int:
    """Parameters as the paper counts them: all but BatchNorm's."""
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
          for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in bn)


def _opt(cfg, key: str, default=None):
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


@register("inception_v3")
def build_inception_v3(model_cfg, meta) -> nn.Module:
    meta = meta or {}
    num_classes = _opt(model_cfg, "num_classes", None) or meta.get("num_classes")
    if num_classes is None:
        raise ValueError("model.num_classes is null and the dataset's meta has no num_classes")
    input_size = _opt(model_cfg, "input_size", None)
    image_size = meta.get("image_size")
    if input_size is None and image_size is not None and int(image_size) < MIN_INPUT:
        input_size = MIN_INPUT
    return InceptionV3(num_classes=int(num_classes), aux_logits=bool(_opt(model_cfg, "aux_logits", True)),
                       dropout=float(_opt(model_cfg, "dropout", 0.2)), input_size=input_size)
