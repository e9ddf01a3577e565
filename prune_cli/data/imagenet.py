"""ImageNet (ILSVRC-2012) from an ImageFolder tree, decoded on the fly by DataLoader workers.

Layout: ``<data.root>/imagenet/{train,val}/<wnid>/*.JPEG`` (any extension torchvision's
ImageFolder accepts). Class indices: sorted wnid folder names of ``train/``; ``val/`` must have
the same folders. Keys read from the ``data`` node:

    root             directory holding ``imagenet/`` (default $PRUNE_DATA_ROOT)
    image_size       training crop / eval crop side: 224 MobileNet, 299 InceptionV3 (224)
    batch_size       training batch (128); the last partial batch of an epoch is dropped
    eval_batch_size  (default: batch_size); evaluation keeps every image
    workers          DataLoader worker processes (default min(8, cpu count))
    channels_last    batches in channels_last memory format (true)

Training augmentation: RandomResizedCrop(image_size, scale=(0.08, 1), ratio=(3/4, 4/3),
bilinear, torchvision's algorithm) + horizontal flip with p=0.5. Evaluation: resize the short
side to ``int(image_size / 0.875)`` (224 -> 256, 299 -> 341), centre crop ``image_size``.
Normalisation: ImageNet mean/std, on the whole uint8 batch, in the worker (collate_fn).

Determinism: the order of epoch ``e`` is ``torch.randperm`` seeded by (seed, e); the random
crop/flip of the image at position ``p`` of that order uses its own generator seeded by
(seed, e, p), so batches do not depend on the number of workers, and ``train_epoch(e, start)``
begins at batch ``start`` through the sampler, without decoding the skipped images.
"""
import math
import os
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import DataBundle, DataError, register
from .images import IMAGENET_MEAN, IMAGENET_STD, Normalizer, data_root, generator, mix_seed, opt, positive_int

EVAL_CROP_FRACTION = 0.875
SPLITS = ("train", "val")


def imagenet_dir(cfg) -> Path:
    return data_root(cfg) / "imagenet"


def _class_dirs(path: Path) -> List[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def check_imagenet(cfg) -> None:
    base = imagenet_dir(cfg)
    for key, default in (("batch_size", 128), ("image_size", 224)):
        positive_int(cfg, key, default, DataError)
    classes = {}
    for split in SPLITS:
        classes[split] = _class_dirs(base / split)
        if not classes[split]:
            raise DataError(f"ImageNet not found: expected class folders in {base / split} "
                            f"(layout <data.root>/imagenet/{{train,val}}/<wnid>/*.JPEG); set data.root "
                            f"or $PRUNE_DATA_ROOT")
    if classes["train"] != classes["val"]:
        diff = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise DataError(f"ImageNet train/ and val/ class folders differ ({len(diff)} not in both, "
                        f"e.g. {diff[:3]}) under {base}")


def random_resized_crop_params(height: int, width: int, gen: torch.Generator,
                               scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``gen``: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            return top, left, h, w
    in_ratio = float(width) / float(height)  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _load_rgb(path: str):
    from PIL import Image
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def _to_hwc_uint8(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


class _TrainSet(Dataset):
    """Items are keyed by (sample index, augmentation seed); returns (uint8 HWC, label)."""

    def __init__(self, samples: Sequence[Tuple[str, int]], image_size: int):
        self.samples = list(samples)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        from PIL import Image
        index, seed = key
        path, label = self.samples[index]
        img = _load_rgb(path)
        gen = torch.Generator()
        gen.manual_seed(seed)
        top, left, h, w = random_resized_crop_params(img.height, img.width, gen)
        flip = bool(torch.randint(0, 2, (1,), generator=gen).item())
        s = self.image_size
        img = img.resize((s, s), Image.BILINEAR, box=(left, top, left + w, top + h))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return _to_hwc_uint8(img), label


class _EvalSet(Dataset):
    def __init__(self, samples: Sequence[Tuple[str, int]], image_size: int):
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.resize = int(self.image_size / EVAL_CROP_FRACTION)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        path, label = self.samples[index]
        img = TF.resize(_load_rgb(path), self.resize, interpolation=InterpolationMode.BILINEAR)
        img = TF.center_crop(img, [self.image_size, self.image_size])
        return _to_hwc_uint8(img), label


class EpochBatchSampler:
    """Batches of (index, seed) keys for one epoch; set ``epoch``/``start`` before iterating."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return max(0, self.n // self.batch_size - self.start)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        b = self.batch_size
        perm = torch.randperm(self.n, generator=generator(self.seed, self.epoch)).tolist()
        for i in range(self.start, self.n // b):
            yield [(perm[p], mix_seed(self.seed, self.epoch, p)) for p in range(i * b, (i + 1) * b)]


class _Collate:
    """Stack uint8 HWC images and normalise the batch (runs in the worker processes)."""

    def __init__(self, normalize: Normalizer):
        self.normalize = normalize

    def __call__(self, items):
        images = torch.stack([x for x, _ in items])
        labels = torch.tensor([y for _, y in items], dtype=torch.int64)
        return self.normalize(images), labels


def _folder_samples(path: Path, classes: List[str]) -> List[Tuple[str, int]]:
    from torchvision.datasets.folder import make_dataset, IMG_EXTENSIONS
    index = {c: i for i, c in enumerate(classes)}
    return make_dataset(str(path), index, extensions=IMG_EXTENSIONS)


@register("imagenet", check=check_imagenet)
def build_imagenet(cfg, seed: int = 0) -> DataBundle:
    base = imagenet_dir(cfg)
    image_size = positive_int(cfg, "image_size", 224, DataError)
    batch_size = positive_int(cfg, "batch_size", 128, DataError)
    eval_batch_size = positive_int(cfg, "eval_batch_size", batch_size, DataError)
    workers = int(opt(cfg, "workers", min(8, os.cpu_count() or 1)))
    if workers < 0:
        raise DataError(f"data.workers must be >= 0, got {workers}")
    classes = _class_dirs(base / "train")
    try:
        train = _folder_samples(base / "train", classes)
        val = _folder_samples(base / "val", classes)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"ImageNet under {base}: {' '.join(str(e).split())}") from None
    if len(train) < batch_size:
        raise DataError(f"ImageNet train/ under {base} has {len(train)} images, fewer than "
                        f"data.batch_size {batch_size}")
    normalize = Normalizer(IMAGENET_MEAN, IMAGENET_STD, bool(opt(cfg, "channels_last", True)))
    pin = torch.cuda.is_available()
    sampler = EpochBatchSampler(len(train), batch_size, seed)
    collate = _Collate(normalize)
    train_loader = DataLoader(_TrainSet(train, image_size), batch_sampler=sampler, num_workers=workers,
                              collate_fn=collate, pin_memory=pin, persistent_workers=workers > 0)

    def train_epoch(epoch: int, start: int = 0):
        sampler.epoch, sampler.start = int(epoch), max(0, int(start))
        yield from train_loader

    def eval_batches():
        yield from DataLoader(_EvalSet(val, image_size), batch_size=eval_batch_size, shuffle=False,
                              num_workers=workers, collate_fn=collate, pin_memory=pin)

    meta = {"num_classes": len(classes), "image_size": image_size, "dataset": "imagenet",
            "synthetic": False, "classes": classes, "train_size": len(train), "eval_size": len(val)}
    return DataBundle(train_epoch=train_epoch, steps_per_epoch=len(train) // batch_size,
                      eval_splits={"val": eval_batches}, meta=meta)
