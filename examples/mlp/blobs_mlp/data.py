"""A generated classification dataset: Gaussian blobs, one per class, in a few dimensions.

prune-run calls ``build_blobs(data_cfg, seed)`` (conf/data/blobs.yaml names it with
``_target_``) and trains on the DataBundle it returns. The classification task's batches are
``(x, y)``: x a float tensor [batch, features], y the class indices, a long tensor [batch].
"""
import torch

from prune_cli.data import DataBundle


def _blobs(generator, centres, count, noise):
    y = torch.randint(len(centres), (count,), generator=generator)
    x = centres[y] + noise * torch.randn(count, centres.size(1), generator=generator)
    return x, y


def build_blobs(data_cfg, seed: int) -> DataBundle:
    # The points are drawn from data.data_seed, so every run sees the same dataset; the run's
    # seed only orders the training batches (as a real dataset on disk would be).
    gen = torch.Generator().manual_seed(int(data_cfg.data_seed))
    centres = float(data_cfg.spread) * torch.randn(int(data_cfg.classes), int(data_cfg.features), generator=gen)
    train = _blobs(gen, centres, int(data_cfg.train_size), float(data_cfg.noise))
    evals = {split: _blobs(gen, centres, int(data_cfg.eval_size), float(data_cfg.noise)) for split in ("val", "test")}
    batch, eval_batch = int(data_cfg.batch_size), int(data_cfg.eval_batch_size)
    steps_per_epoch = len(train[1]) // batch

    def train_epoch(epoch: int, start: int):
        # A function of (seed, epoch) alone: a resumed run sees exactly the batches it would have seen.
        order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(start, steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            yield train[0][idx], train[1][idx]

    def eval_split(split: str):
        x, y = evals[split]
        return lambda: ((x[i:i + eval_batch], y[i:i + eval_batch]) for i in range(0, len(y), eval_batch))

    return DataBundle(train_epoch=train_epoch, steps_per_epoch=steps_per_epoch,
                      eval_splits={split: eval_split(split) for split in evals},
                      meta={"num_features": int(data_cfg.features), "num_classes": int(data_cfg.classes),
                            "dataset": str(data_cfg.name), "synthetic": True})
