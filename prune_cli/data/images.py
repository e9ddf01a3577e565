"""Helpers shared by the image datasets: config access, paths, seeds, batch transforms.

Batches everywhere are ``(images, labels)``: images float32 ``[B, 3, H, W]`` normalised with
the dataset's mean/std, labels int64 ``[B]``. The in-memory datasets (CIFAR-10) keep uint8
images as ``[N, H, W, 3]`` (NHWC) and transform whole batches with torch ops; the float batch
is then a channels_last tensor (NHWC storage, NCHW shape) unless a contiguous one is asked for.
"""
import os
from pathlib import Path
from typing import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MASK64 = (1 << 64) - 1


def opt(cfg, key: str, default=None):
    """cfg[key] (None counts as unset) for an OmegaConf node, a dict or a plain object."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def positive_int(cfg, key: str, default: int, error=ValueError) -> int:
    value = opt(cfg, key, default)
    try:
        ok = int(value) == float(value) and int(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise error(f"data.{key} must be a positive integer, got {value!r}")
    return int(value)


def cache_dir(cfg=None) -> Path:
    """data.cache_dir, else $PRUNE_CACHE_DIR, else $XDG_CACHE_HOME/prune-cli (~/.cache/prune-cli)."""
    value = opt(cfg, "cache_dir") or os.environ.get("PRUNE_CACHE_DIR")
    if not value:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        value = os.path.join(base, "prune-cli")
    return Path(os.path.expanduser(str(value)))


def data_root(cfg=None) -> Path:
    """data.root, else $PRUNE_DATA_ROOT, else <cache_dir>/data."""
    value = opt(cfg, "root") or os.environ.get("PRUNE_DATA_ROOT")
    if not value:
        return cache_dir(cfg) / "data"
    return Path(os.path.expanduser(str(value)))


def mix_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of ints (splitmix64 over the values); stable across runs."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x >> 1


def generator(*values: int) -> torch.Generator:
    """A CPU torch.Generator seeded by :func:`mix_seed` of ``values``."""
    g = torch.Generator()
    g.manual_seed(mix_seed(*values))
    return g


def random_crop_flip(images: torch.Tensor, pad: int, gen: torch.Generator,
                     flip: bool = True) -> torch.Tensor:
    """Random ``HxW`` crop from the zero-padded batch and random horizontal flip, per image.

    ``images`` uint8 (or any dtype) ``[B, H, W, C]``; returns a new ``[B, H, W, C]`` tensor.
    Same as torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()`` per
    image (zero fill), done with one gather for the whole batch. Draws ``3 * B`` numbers
    from ``gen`` (offsets y, x, flip) whatever ``pad`` and ``flip`` are.
    """
    b, h, w, c = images.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    fl = torch.randint(0, 2, (b,), generator=gen).bool()
    hp, wp = h + 2 * pad, w + 2 * pad
    if pad > 0:
        padded = images.new_zeros((b, hp, wp, c))
        padded[:, pad:pad + h, pad:pad + w] = images
    else:
        padded = images.contiguous()
    cols = torch.arange(w)
    cols = (torch.where(fl[:, None], cols.flip(0), cols) if flip else cols.expand(b, w)) + ox[:, None]
    rows = oy[:, None] + torch.arange(h)                                      # [B, H]
    flat = (torch.arange(b)[:, None, None] * (hp * wp) + rows[:, :, None] * wp
            + cols[:, None, :]).reshape(-1)                                   # pixel index
    # one index_select over pixels: ~4x faster than advanced indexing on CPU
    return padded.reshape(-1, c).index_select(0, flat).view(b, h, w, c)


class Normalizer:
    """uint8 NHWC batch -> normalised float32 NCHW-shaped batch (channels_last unless told)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = True):
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std])
        self.bias = torch.tensor([-m / s for m, s in zip(mean, std)])
        self.channels_last = bool(channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # one fused op on the NHWC batch (x * scale + bias); measured fastest of the variants
        x = torch.addcmul(self.bias, images.float(), self.scale)   # [B, H, W, 3], contiguous
        x = x.permute(0, 3, 1, 2)                                   # channels_last strides
        return x if self.channels_last else x.contiguous()


def tensor_mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple:
    """Per-channel mean and std in [0, 1] of a uint8 NHWC tensor (for documentation/tests)."""
    n = images.shape[0]
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, n, chunk):
        x = images[i:i + chunk].double().div_(255).reshape(-1, 3)
        s += x.sum(0)
        s2 += (x * x).sum(0)
    count = images[..., 0].numel()
    mean = s / count
    return mean.tolist(), (s2 / count - mean * mean).sqrt().tolist()
