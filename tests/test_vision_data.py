"""Image datasets: CIFAR-10 (JPEG archive / torchvision -> uint8 cache), ImageNet folders,
fake ImageNet. All data here is generated in tmp_path; nothing is read from ../shared unless
PRUNE_SLOW=1 and PRUNE_DATA_ROOT points at the real archive."""
import io
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from prune_cli import data as registry
from prune_cli.data import DataError
from prune_cli.data import cifar10 as c10
from prune_cli.data import imagenet as inet
from prune_cli.data.images import Normalizer, generator, random_crop_flip

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_TRAIN, N_TEST = 3, 2  # images a class in the tiny archive


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_vision_models.py
    yield
    torch.set_num_threads(n)


def _jpeg(rng, size=(32, 32), fmt="JPEG") -> bytes:
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=90) if fmt == "JPEG" else Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_archive(path: Path, classes=CLASSES, seed=0, n_train=N_TRAIN, n_test=N_TEST) -> dict:
    """A tiny cifar10_jpg.tar.gz; members added in reverse class order (the loader sorts)."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for i in range(n):
                files[f"{split}/{cls}/{i:04d}.jpg"] = _jpeg(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
        for name in sorted(files, reverse=True):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return files


def _pil(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB")))


def _cfg(tmp_path, **kw):
    base = {"name": "cifar10", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache"),
            "batch_size": 4, "eval_batch_size": 7, "augment": True, "download": False}
    base.update(kw)
    return OmegaConf.create(base)


@pytest.fixture
def archive(tmp_path):
    return make_archive(tmp_path / "root" / c10.ARCHIVE)


def _batches(it):
    return [(x.clone(), y.clone()) for x, y in it]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ------------------------------------------------------------------------------ CIFAR-10

def test_cifar10_archive_decoded_once_into_cache(tmp_path, archive, caplog):
    cfg = _cfg(tmp_path)
    registry.check(cfg)
    with caplog.at_level(logging.INFO, logger="prune_cli.data.cifar10"):
        bundle = registry.build(cfg, seed=0)
    assert any("decoded" in r.getMessage() for r in caplog.records)
    cache = tmp_path / "cache" / c10.JPG_CACHE
    assert cache.is_file() and not (tmp_path / "root" / c10.JPG_CACHE).exists()
    assert bundle.meta == {"num_classes": 10, "image_size": 32, "dataset": "cifar10", "synthetic": False,
                           "classes": CLASSES, "train_size": 30, "eval_size": 20,
                           "source": str(tmp_path / "root" / c10.ARCHIVE), "cache": str(cache)}
    data = torch.load(cache, weights_only=True)
    assert data["classes"] == CLASSES == list(c10.CLASSES)
    assert data["train_images"].dtype == torch.uint8 and tuple(data["train_images"].shape) == (30, 32, 32, 3)
    assert tuple(data["test_images"].shape) == (20, 32, 32, 3)
    assert data["train_labels"].tolist() == [i for i in range(10) for _ in range(N_TRAIN)]
    assert data["test_labels"].tolist() == [i for i in range(10) for _ in range(N_TEST)]
    # pixel-exact JPEG decode, ordered by (class, file name)
    assert torch.equal(data["train_images"][4], _pil(archive["train/automobile/0001.jpg"]))
    assert torch.equal(data["test_images"][19], _pil(archive["test/truck/0001.jpg"]))
    # second build: the cache is used, the archive is not decoded again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prune_cli.data.cifar10"):
        registry.build(cfg, seed=0)
    assert not any("decoded" in r.getMessage() for r in caplog.records)


def test_cifar10_batches_shapes_eval_order_and_normalisation(tmp_path, archive):
    bundle = registry.build(_cfg(tmp_path), seed=0)
    assert bundle.steps_per_epoch == 30 // 4 == 7
    train = _batches(bundle.train_epoch(0, 0))
    assert len(train) == 7
    for x, y in train:
        assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 32, 32)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and tuple(y.shape) == (4,)
    seen = torch.cat([y for _, y in train])
    assert len(set(seen.tolist())) > 1 and len(seen) == 28  # last partial batch (2 images) dropped
    ev = list(bundle.eval_splits["val"]())
    assert list(bundle.eval_splits) == ["val"]
    assert [len(y) for _, y in ev] == [7, 7, 6]
    assert torch.cat([y for _, y in ev]).tolist() == [i for i in range(10) for _ in range(N_TEST)]
    # eval = normalised decoded pixels, no augmentation
    x0 = ev[0][0][0]
    ref = (_pil(archive["test/airplane/0000.jpg"]).float().permute(2, 0, 1) / 255
           - torch.tensor(c10.MEAN)[:, None, None]) / torch.tensor(c10.STD)[:, None, None]
    assert torch.allclose(x0, ref, atol=1e-5)


def test_cifar10_train_epoch_deterministic_and_skippable(tmp_path, archive):
    a = registry.build(_cfg(tmp_path), seed=3)
    b = registry.build(_cfg(tmp_path), seed=3)
    e1 = _batches(a.train_epoch(1, 0))
    assert _same(e1, _batches(b.train_epoch(1, 0)))
    assert _same(e1, _batches(a.train_epoch(1, 0)))             # same epoch again: same batches
    assert _same(_batches(a.train_epoch(1, 3)), e1[3:])          # resume at batch 3 = the tail
    assert _batches(a.train_epoch(1, 7)) == []
    assert not _same(e1, _batches(a.train_epoch(2, 0)))          # other epoch, other order
    c = registry.build(_cfg(tmp_path), seed=4)
    assert not _same(e1, _batches(c.train_epoch(1, 0)))          # other seed, other order


def test_cifar10_without_augmentation_is_shuffled_pixels(tmp_path, archive):
    bundle = registry.build(_cfg(tmp_path, augment=False, channels_last=False), seed=0)
    data = torch.load(tmp_path / "cache" / c10.JPG_CACHE, weights_only=True)
    perm = torch.randperm(30, generator=generator(0, 5))
    norm = Normalizer(c10.MEAN, c10.STD, channels_last=False)
    for i, (x, y) in enumerate(bundle.train_epoch(5, 0)):
        idx = perm[4 * i:4 * i + 4]
        assert x.is_contiguous()
        assert torch.equal(y, data["train_labels"][idx])
        assert torch.equal(x, norm(data["train_images"][idx]))


def test_random_crop_flip_matches_per_image_reference():
    imgs = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=generator(1))
    out = random_crop_flip(imgs, 4, generator(7))
    g = generator(7)
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    fl = torch.randint(0, 2, (16,), generator=g)
    padded = torch.nn.functional.pad(imgs.permute(0, 3, 1, 2), (4, 4, 4, 4)).permute(0, 2, 3, 1)
    for i in range(16):
        ref = padded[i, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        if fl[i]:
            ref = ref.flip(1)
        assert torch.equal(out[i], ref)
    assert fl.sum() not in (0, 16) and len(set(oy.tolist())) > 1


def test_cifar10_cache_rebuilt_when_archive_changes(tmp_path, archive):
    registry.build(_cfg(tmp_path), seed=0)
    make_archive(tmp_path / "root" / c10.ARCHIVE, seed=1)
    registry.build(_cfg(tmp_path), seed=0)
    data = torch.load(tmp_path / "cache" / c10.JPG_CACHE, weights_only=True)
    assert data["sha256"] == c10.sha256_file(tmp_path / "root" / c10.ARCHIVE)
    # archive removed afterwards: the cache alone still serves
    os.unlink(tmp_path / "root" / c10.ARCHIVE)
    registry.check(_cfg(tmp_path))
    assert registry.build(_cfg(tmp_path), seed=0).meta["train_size"] == 30


def test_cifar10_missing_data_is_one_line_error(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(DataError) as e:
        registry.check(cfg)
    msg = str(e.value)
    assert "\n" not in msg and c10.ARCHIVE in msg and "data.download=true" in msg
    assert str(tmp_path / "root") in msg
    with pytest.raises(DataError):
        registry.build(cfg, seed=0)


def test_cifar10_bad_archives_are_one_line_errors(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / c10.ARCHIVE).write_bytes(b"not a tarball")
    with pytest.raises(DataError) as e:
        registry.build(_cfg(tmp_path), seed=0)
    assert "\n" not in str(e.value) and "cannot read" in str(e.value)
    make_archive(root / c10.ARCHIVE, classes=CLASSES[:9] + ["zebra"])
    with pytest.raises(DataError, match="class folders") as e:
        registry.build(_cfg(tmp_path), seed=0)
    assert "\n" not in str(e.value)


class _FakeTorchvisionCIFAR10:
    classes = list(CLASSES)

    def __init__(self, root, train=True, download=False):
        n = 20 if train else 10
        g = torch.Generator().manual_seed(int(train))
        self.data = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g).numpy()
        self.targets = [i % 10 for i in range(n)]


def test_cifar10_from_torchvision_converted_to_cache(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeTorchvisionCIFAR10)
    bundle = registry.build(_cfg(tmp_path, download=True), seed=0)
    data = torch.load(tmp_path / "cache" / c10.TV_CACHE, weights_only=True)
    assert data["source"].startswith("torchvision:") and data["classes"] == CLASSES
    assert torch.equal(data["train_images"], torch.from_numpy(_FakeTorchvisionCIFAR10(None, True).data))
    assert bundle.meta["train_size"] == 20 and bundle.meta["eval_size"] == 10 and bundle.steps_per_epoch == 5


def test_cifar10_failed_download_is_one_line_error(tmp_path, monkeypatch):
    import torchvision

    def boom(*a, **k):
        raise RuntimeError("Dataset not found or corrupted.\n You can use download=True to download it")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", boom)
    registry.check(_cfg(tmp_path, download=True))  # download enabled: check passes
    with pytest.raises(DataError) as e:
        registry.build(_cfg(tmp_path, download=True), seed=0)
    assert "\n" not in str(e.value) and c10.ARCHIVE in str(e.value)


def test_prepare_script(tmp_path, archive, capsys):
    import importlib.util
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_cifar10.py"
    spec = importlib.util.spec_from_file_location("prepare_cifar10", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--root", str(tmp_path / "root"), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'c' / c10.JPG_CACHE}: 30 train + 20 test images" in out
    assert mod.main(["--root", str(tmp_path / "none"), "--cache-dir", str(tmp_path / "c2")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get("PRUNE_SLOW") == "1" and os.environ.get("PRUNE_DATA_ROOT")
                         and (Path(os.environ["PRUNE_DATA_ROOT"]) / c10.ARCHIVE).is_file()),
                    reason="needs PRUNE_SLOW=1 and PRUNE_DATA_ROOT holding cifar10_jpg.tar.gz")
def test_cifar10_real_archive(tmp_path):
    root = Path(os.environ["PRUNE_DATA_ROOT"])
    path = c10.prepare(root, tmp_path / "cache")
    data = torch.load(path, weights_only=True)
    assert data["sha256"] == c10.ARCHIVE_SHA256
    assert data["classes"] == CLASSES
    assert tuple(data["train_images"].shape) == (50000, 32, 32, 3)
    assert tuple(data["test_images"].shape) == (10000, 32, 32, 3)
    assert torch.bincount(data["train_labels"]).tolist() == [5000] * 10
    assert torch.bincount(data["test_labels"]).tolist() == [1000] * 10
    bundle = registry.build(OmegaConf.create({"name": "cifar10", "root": str(root),
                                              "cache_dir": str(tmp_path / "cache")}), seed=0)
    assert bundle.steps_per_epoch == 390
    x, y = next(bundle.train_epoch(0, 0))
    assert tuple(x.shape) == (128, 3, 32, 32) and y.dtype == torch.int64
    ev = torch.cat([x for x, _ in bundle.eval_splits["val"]()])
    assert tuple(ev.shape) == (10000, 3, 32, 32)
    mean, std = ev.mean(dim=(0, 2, 3)), ev.std(dim=(0, 2, 3))  # test split, normalised
    assert mean.abs().max() < 0.02 and (std - 1).abs().max() < 0.03, (mean, std)


# ------------------------------------------------------------------------------ fake ImageNet

def _fake_cfg(**kw):
    base = {"name": "fake_imagenet", "image_size": 40, "num_classes": 7, "batch_size": 3,
            "train_size": 10, "val_size": 5, "eval_batch_size": 2}
    base.update(kw)
    return OmegaConf.create(base)


def test_fake_imagenet_deterministic_and_skippable():
    a, b = registry.build(_fake_cfg(), seed=1), registry.build(_fake_cfg(), seed=1)
    assert a.meta == {"num_classes": 7, "image_size": 40, "dataset": "fake_imagenet", "synthetic": True,
                      "train_size": 10, "eval_size": 5}
    assert a.steps_per_epoch == 3
    e0 = _batches(a.train_epoch(0, 0))
    assert len(e0) == 3 and all(tuple(x.shape) == (3, 3, 40, 40) and x.dtype == torch.float32 for x, _ in e0)
    assert all(y.dtype == torch.int64 and 0 <= y.min() and y.max() < 7 for _, y in e0)
    assert e0[0][0].is_contiguous(memory_format=torch.channels_last)
    assert _same(e0, _batches(b.train_epoch(0, 0)))
    assert _same(_batches(a.train_epoch(0, 2)), e0[2:])
    assert not _same(e0, _batches(a.train_epoch(1, 0)))
    assert not _same(e0, _batches(registry.build(_fake_cfg(), seed=2).train_epoch(0, 0)))
    v = _batches(a.eval_splits["val"]())
    assert [len(y) for _, y in v] == [2, 2, 1]
    assert _same(v, _batches(b.eval_splits["val"]()))
    c = registry.build(_fake_cfg(channels_last=False), seed=1)
    x, _ = next(c.train_epoch(0, 0))
    assert x.is_contiguous()


def test_fake_imagenet_rejects_bad_sizes():
    with pytest.raises(DataError, match="batch_size"):
        registry.check(_fake_cfg(batch_size=0))
    with pytest.raises(DataError, match="train_size"):
        registry.build(_fake_cfg(train_size=2), seed=0)


# ------------------------------------------------------------------------------ ImageNet folders

WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_imagefolder(root: Path, n_train=4, n_val=2):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(WNIDS):
            d = root / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                if i % 2:
                    (d / f"{wnid}_{i}.png").write_bytes(_jpeg(rng, (40, 40), "PNG"))
                else:
                    (d / f"{wnid}_{i}.JPEG").write_bytes(_jpeg(rng, (48, 36)))


def _inet_cfg(tmp_path, **kw):
    base = {"name": "imagenet", "root": str(tmp_path), "image_size": 32, "batch_size": 4,
            "eval_batch_size": 4, "workers": 0}
    base.update(kw)
    return OmegaConf.create(base)


def test_imagenet_folder_loader(tmp_path):
    make_imagefolder(tmp_path)
    registry.check(_inet_cfg(tmp_path))
    bundle = registry.build(_inet_cfg(tmp_path), seed=0)
    assert bundle.meta == {"num_classes": 3, "image_size": 32, "dataset": "imagenet", "synthetic": False,
                           "classes": WNIDS, "train_size": 12, "eval_size": 6}
    assert bundle.steps_per_epoch == 3
    e0 = _batches(bundle.train_epoch(0, 0))
    assert len(e0) == 3
    for x, y in e0:
        assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 32, 32)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64
    assert sorted(torch.cat([y for _, y in e0]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert _same(e0, _batches(bundle.train_epoch(0, 0)))
    assert _same(_batches(bundle.train_epoch(0, 1)), e0[1:])
    assert not _same(e0, _batches(bundle.train_epoch(1, 0)))
    ev = _batches(bundle.eval_splits["val"]())
    assert [len(y) for _, y in ev] == [4, 2]
    assert torch.cat([y for _, y in ev]).tolist() == [0, 0, 1, 1, 2, 2]
    # eval: short side to int(32 / 0.875) = 36, centre crop 32 (the 48x36 JPEG: crop at x=8..40)
    from PIL import Image as _I
    img = _I.open(tmp_path / "imagenet/val" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").convert("RGB")
    ref = torch.from_numpy(np.asarray(img.resize((48, 36), _I.BILINEAR))[2:34, 8:40].copy())
    got = ev[0][0][0].permute(1, 2, 0) * torch.tensor(inet.IMAGENET_STD) + torch.tensor(inet.IMAGENET_MEAN)
    assert torch.allclose(got * 255, ref.float(), atol=1e-3)


def test_imagenet_batches_do_not_depend_on_workers(tmp_path):
    make_imagefolder(tmp_path)
    serial = _batches(registry.build(_inet_cfg(tmp_path), seed=5).train_epoch(2, 1))
    parallel = _batches(registry.build(_inet_cfg(tmp_path, workers=2), seed=5).train_epoch(2, 1))
    assert len(serial) == 2 and _same(serial, parallel)
    assert parallel[0][0].is_contiguous(memory_format=torch.channels_last)  # strides survive IPC


def test_random_resized_crop_params_in_bounds():
    for i in range(200):
        g = generator(i)
        h, w = 20 + i % 37, 15 + (7 * i) % 53
        top, left, ch, cw = inet.random_resized_crop_params(h, w, g)
        assert 0 <= top and 0 <= left and 0 < ch and 0 < cw and top + ch <= h and left + cw <= w
    assert inet.random_resized_crop_params(10, 100, generator(0), scale=(0.99, 1.0)) == (0, 43, 10, 13)


def test_imagenet_missing_or_mismatched_is_one_line_error(tmp_path):
    with pytest.raises(DataError) as e:
        registry.check(_inet_cfg(tmp_path))
    assert "\n" not in str(e.value) and "imagenet" in str(e.value) and str(tmp_path) in str(e.value)
    make_imagefolder(tmp_path)
    (tmp_path / "imagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match="differ") as e:
        registry.check(_inet_cfg(tmp_path))
    assert "\n" not in str(e.value)
