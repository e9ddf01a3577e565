"""Synthetic ImageNet-shaped data, for smoke tests and throughput benchmarks only.

Every batch is generated from its own generator: training batch ``b`` of epoch ``e`` from
(seed, e, b), evaluation batch ``b`` from (seed, "val", b); images are standard-normal float32
``[B, 3, S, S]`` (already "normalised"), labels uniform in ``[0, num_classes)``. So
``train_epoch(e, start)`` costs nothing to skip and the data are the same on every run.
There is nothing to learn: accuracies stay at chance.

Keys read from the ``data`` node:

    image_size       224 (MobileNet) / 299 (InceptionV3)                        (224)
    num_classes      1000
    batch_size       64
    eval_batch_size  batch_size
    train_size       images an epoch (the last partial batch is dropped)       (1281)
    val_size         evaluation images (all kept)                               (500)
    channels_last    batches in channels_last memory format                     (true)
    device           null -> generate on the CPU; "cuda" -> generate on the GPU (a CUDA
                     generator: deterministic, but not the same numbers as the CPU), which
                     keeps ~100 ms of CPU work per 128x224x224 batch out of GPU benchmarks
"""
from typing import Iterator, Tuple

import torch

from . import DataBundle, DataError, register
from .images import mix_seed, opt, positive_int

_VAL_TAG = 0x76616C  # "val"


def check_fake_imagenet(cfg) -> None:
    for key, default in (("image_size", 224), ("num_classes", 1000), ("batch_size", 64),
                         ("train_size", 1281), ("val_size", 500)):
        positive_int(cfg, key, default, DataError)


class FakeImageNet:
    def __init__(self, seed: int, image_size: int = 224, num_classes: int = 1000, batch_size: int = 64,
                 eval_batch_size: int = 64, train_size: int = 1281, val_size: int = 500,
                 channels_last: bool = True, device: str = "cpu"):
        self.seed = int(seed)
        self.image_size, self.num_classes = int(image_size), int(num_classes)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.train_size, self.val_size = int(train_size), int(val_size)
        self.channels_last = bool(channels_last)
        self.device = torch.device(device)
        self.steps_per_epoch = self.train_size // self.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"data.train_size {train_size} is smaller than data.batch_size {batch_size}")

    def batch(self, n: int, *key: int) -> Tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=self.device)
        g.manual_seed(mix_seed(self.seed, *key))
        s = self.image_size
        if self.channels_last:
            x = torch.randn((n, s, s, 3), generator=g, device=self.device).permute(0, 3, 1, 2)
        else:
            x = torch.randn((n, 3, s, s), generator=g, device=self.device)
        y = torch.randint(0, self.num_classes, (n,), generator=g, device=self.device)
        return x, y

    def train_epoch(self, epoch: int, start: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for b in range(max(0, int(start)), self.steps_per_epoch):
            yield self.batch(self.batch_size, epoch, b)

    def eval_batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for b, i in enumerate(range(0, self.val_size, self.eval_batch_size)):
            yield self.batch(min(self.eval_batch_size, self.val_size - i), _VAL_TAG, b)


@register("fake_imagenet", check=check_fake_imagenet)
def build_fake_imagenet(cfg, seed: int = 0) -> DataBundle:
    check_fake_imagenet(cfg)
    batch_size = positive_int(cfg, "batch_size", 64, DataError)
    ds = FakeImageNet(seed, image_size=positive_int(cfg, "image_size", 224, DataError),
                      num_classes=positive_int(cfg, "num_classes", 1000, DataError),
                      batch_size=batch_size,
                      eval_batch_size=positive_int(cfg, "eval_batch_size", batch_size, DataError),
                      train_size=positive_int(cfg, "train_size", 1281, DataError),
                      val_size=positive_int(cfg, "val_size", 500, DataError),
                      channels_last=bool(opt(cfg, "channels_last", True)),
                      device=str(opt(cfg, "device", "cpu")))
    meta = {"num_classes": ds.num_classes, "image_size": ds.image_size, "dataset": "fake_imagenet",
            "synthetic": True, "train_size": ds.train_size, "eval_size": ds.val_size}
    return DataBundle(train_epoch=ds.train_epoch, steps_per_epoch=ds.steps_per_epoch,
                      eval_splits={"val": ds.eval_batches}, meta=meta)
