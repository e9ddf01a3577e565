"""MobileNet v1 (Howard et al., 2017) with a width multiplier, as used by Zhu & Gupta (2017).

Architecture (TF-slim ``mobilenet_v1``): a standard 3x3 convolution (stride 2, 32 channels),
13 depthwise-separable blocks (3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN +
ReLU) with 64, 128, 128, 256, 256, 512 x6, 1024, 1024 output channels (strides 1, 2, 1, 2, 1,
2, 1, 1, 1, 1, 1, 2, 1), global average pooling, dropout and a fully-connected classifier.
Every convolution has ``bias=False`` (BatchNorm follows it); the classifier has a bias.

Width multiplier: every layer's channel count ``c`` becomes ``max(int(c * width), 8)``
(slim's ``depth()`` with ``min_depth=8``; plain truncation, no rounding to a multiple of 8 --
that is MobileNet v2's rule). For the paper's widths 1.0, 0.75, 0.5 and 0.25 every channel
count is an exact integer, so truncation and rounding agree.

Parameter names (glob patterns select what is pruned, ``model.prune``)::

    stem.conv.weight, stem.bn.{weight,bias}           standard conv (not pruned)
    blocks.{0..12}.dw.weight, blocks.N.dw_bn.*          depthwise 3x3 (not pruned)
    blocks.{0..12}.pw.weight, blocks.N.pw_bn.*          pointwise 1x1 (pruned)
    fc.weight, fc.bias                                  classifier (weight pruned)

    PRUNE_PATTERNS = ["blocks.*.pw.weight", "fc.weight"]

Counting convention (how the paper's Table 2 "NNZ params" is reproduced): every trainable
parameter except BatchNorm's (conv weights + fc weight + fc bias), 1000 classes:
width 1.0: 4,210,088 (paper 4.21M), 0.75: 2,569,144 (2.57M), 0.5: 1,320,648 (1.32M),
0.25: 464,600 (0.46M) -- all four equal the paper's figures after rounding. Counting BN
gamma+beta gives 4.232M / 2.586M / 1.332M / 0.470M (0.25 is then 2.2% off), so the paper's
figures exclude BN. With this convention, width 1.0 has 74.6% of its parameters in the
pointwise convs, 24.3% in fc (weight+bias) and 1.08% in the stem + depthwise convs, which are
exactly the paper's 74.6% / 24.3% / 1.1%. :func:`paper_param_count` computes it.

Keys read from the ``model`` node:

    width         width multiplier alpha in (0, 1]                       (default 1.0)
    num_classes   null -> meta["num_classes"]                            (default null)
    dropout       dropout before fc; slim's keep_prob 0.999 -> 0.001    (default 0.001)
    small_input   for 32x32 images (CIFAR): stem conv stride 1     (default null: true when
                  meta["image_size"] <= 64, else false)
    stride1_blocks  indices of stride-2 blocks (1, 3, 5, 11) run at stride 1  (default [])

Both change only strides, never a parameter (the parameter count is identical with and
without them). ``small_input: true`` gives the stem conv stride 1 instead of 2: the total
stride goes from 32 to 16 and a 32x32 image ends in a 2x2 feature map instead of 1x1 (this is
the usual CIFAR adaptation of MobileNet v1, e.g. kuangliu/pytorch-cifar). Adding
``stride1_blocks: [1]`` (the first stride-2 depthwise block, 64 -> 128 channels) halves the
total stride again, to 8, and ends in 4x4 -- closer to the 7x7 final map of 224x224 ImageNet,
but about 3.6x the compute (measured on a 2-core CPU, batch 128, channels_last: 0.29 s vs
1.07 s a training step), so it is opt-in.

Speed: convert the model with ``model.to(memory_format=torch.channels_last)``; the image
loaders already yield channels_last batches. On the 2-core CPU, width 1.0, small_input, batch
128: 0.29-0.65 s a step channels_last vs 0.45-1.1 s contiguous (range = machine load).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from . import register

# (output channels, stride) of the 13 depthwise-separable blocks (slim's _CONV_DEFS[1:]).
BLOCKS: Tuple[Tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
STEM_CHANNELS = 32
MIN_DEPTH = 8

PRUNE_PATTERNS: List[str] = ["blocks.*.pw.weight", "fc.weight"]
UNPRUNED_WEIGHT_PATTERNS: List[str] = ["stem.conv.weight", "blocks.*.dw.weight"]


def _opt(cfg, key: str, default=None):
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def channels(c: int, width: float) -> int:
    """slim's depth(): ``max(int(c * width), 8)``."""
    return max(int(c * width), MIN_DEPTH)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.dw_bn(self.dw(x)))
        return self.relu(self.pw_bn(self.pw(x)))


class MobileNetV1(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.001,
                 small_input: bool = False, stride1_blocks: Sequence[int] = (),
                 in_channels: int = 3):
        super().__init__()
        if not (0.0 < float(width) <= 1.0):
            raise ValueError(f"model.width must be in (0, 1], got {width}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.width = float(width)
        self.small_input = bool(small_input)
        stride1_blocks = tuple(int(i) for i in stride1_blocks)
        bad = [i for i in stride1_blocks if not (0 <= i < len(BLOCKS)) or BLOCKS[i][1] != 2]
        if bad:
            valid = [i for i, (_, s) in enumerate(BLOCKS) if s == 2]
            raise ValueError(f"model.stride1_blocks {bad} are not stride-2 blocks; valid: {valid}")
        self.stride1_blocks = stride1_blocks
        c = channels(STEM_CHANNELS, width)
        self.stem = ConvBNReLU(in_channels, c, 1 if small_input else 2)
        blocks = []
        for i, (cout, stride) in enumerate(BLOCKS):
            if i in stride1_blocks:
                stride = 1
            cout = channels(cout, width)
            blocks.append(DepthwiseSeparable(c, cout, stride))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(c, int(num_classes))
        self.num_features = c
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def paper_param_count(model: nn.Module) -> int:
    """Parameters as the paper counts them: all but BatchNorm's (see module docstring)."""
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
          for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in bn)


def dense_param_count(width: float, num_classes: int = 1000) -> int:
    """Closed form of :func:`paper_param_count` for MobileNet v1 (no model built)."""
    c = channels(STEM_CHANNELS, width)
    total = 27 * c
    for cout, _ in BLOCKS:
        cout = channels(cout, width)
        total += 9 * c + c * cout
        c = cout
    return total + c * num_classes + num_classes


@register("mobilenet")
def build_mobilenet(model_cfg, meta) -> nn.Module:
    meta = meta or {}
    num_classes = _opt(model_cfg, "num_classes", None) or meta.get("num_classes")
    if num_classes is None:
        raise ValueError("model.num_classes is null and the dataset's meta has no num_classes")
    image_size = meta.get("image_size")
    small = _opt(model_cfg, "small_input", None)
    if small is None:
        small = image_size is not None and int(image_size) <= 64
    return MobileNetV1(width=float(_opt(model_cfg, "width", 1.0)), num_classes=int(num_classes),
                       dropout=float(_opt(model_cfg, "dropout", 0.001)), small_input=bool(small),
                       stride1_blocks=tuple(_opt(model_cfg, "stride1_blocks", ())))
