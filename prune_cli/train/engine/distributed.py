"""Data parallelism on PyTorch's own engine: process group, rank helpers, batch shards, mask checks.

One run spreads over N processes started by ``torchrun`` (which sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or by a submitit job with ``tasks_per_node`` > 1 (submitit's
own ``TorchDistributedEnvironment`` exports the same variables from SLURM's or its local
controller's). Every rank builds the same model and data from the same seed and runs the one
training loop; DistributedDataParallel averages the gradients during backward; rank 0 alone
writes the run folder. Gloo on CPU, NCCL on GPU (one GPU a rank: ``cuda:LOCAL_RANK``).

Sharding without touching any dataset: every training batch is a tuple whose tensors are batch
first, and rank r keeps rows ``[r*B/N, (r+1)*B/N)`` of the GLOBAL batch B (``data.batch_size``);
other items (a list of reference sentences) pass through whole. With per-sample-mean losses and
DDP's gradient averaging this is the single-process step up to float rounding: the number of
steps per epoch, the learning rate and the pruning schedule do not change, and the LM's carried
hidden state stays with its rows. (Each rank reads the whole global batch and keeps its slice:
the loading cost is not divided, which costs nothing for PTB and CIFAR-10 in memory; ImageNet's
decoding would want a per-rank loader.) BatchNorm keeps per-rank batch statistics (plain DDP,
not SyncBatchNorm), and rank 0's running statistics are broadcast at each forward.

Masks are computed on every rank from identical weights, so they are identical; ``check_masks``
verifies it at each mask update with a checksum over ranks and stops the run if they differ.
"""
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List

import torch
import torch.distributed as dist


class RankMismatchError(Exception):
    """Ranks disagree on something that must be identical (the pruning masks)."""


@dataclass(frozen=True)
class Parallel:
    """Where this process stands in the run. The single-process default makes every helper a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control: Any = field(default=None, compare=False, repr=False)  # a gloo group for `agree` (None: the default group)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (every rank calls them at the same point) ----------------------------
    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a scalar tensor over ranks (gloo has no AVG: a sum, divided)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def agree(self, value: int) -> int:
        """The largest of every rank's ``value`` (a small int), over the CPU: asked at every step
        (train/folder/stop.py), so no device sync; on GPU through a gloo group beside NCCL's."""
        if not self.enabled:
            return value
        flag = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return int(flag)

    def check_masks(self, pruner, step: int) -> None:
        """Stop the run if any rank's masks differ from rank 0's (checksum of every mask)."""
        if not self.enabled:
            return
        local = mask_checksum(pruner).to(self.device)
        every = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(every, local)
        for rank, other in enumerate(every[1:], start=1):
            if not torch.equal(other, every[0]):
                layer = pruner.names[int((other != every[0]).any(dim=1).nonzero()[0])]
                raise RankMismatchError(
                    f"pruning masks differ between ranks at step {step} (rank {rank} vs rank 0, first at {layer}): "
                    "the ranks' weights have diverged; check that every rank runs the same code and config")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


_HASH = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64: spreads positions over 64 bits


def mask_checksum(pruner) -> torch.Tensor:
    """Per selected tensor: (nonzeros, sum of kept positions, sum of hashed kept positions), int64.

    Two masks agree on all three only if they keep the same number of weights at positions
    with the same sum and the same (wrapping) hash sum: any realistic divergence changes them.
    """
    rows = []
    for name, p in zip(pruner.names, pruner.params):
        m = pruner.masks.get(name)
        if m is None:
            rows.append(torch.tensor([p.numel(), -1, -1], dtype=torch.int64))
            continue
        kept = m.reshape(-1).nonzero().reshape(-1).to(torch.int64)
        rows.append(torch.stack([kept.new_tensor(kept.numel()), kept.sum(), (kept * _HASH).sum()]).cpu())
    return torch.stack(rows) if rows else torch.zeros((0, 3), dtype=torch.int64)


# -- set-up and teardown -----------------------------------------------------------------
def _export_submitit_env() -> None:
    """Inside a submitit job with several tasks, export torch's variables from submitit's."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def world_size() -> int:
    """The number of ranks this process belongs to, from the launcher's environment."""
    _export_submitit_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(name: str) -> torch.device:
    """``device=auto``: CUDA when there is one, else the CPU; otherwise the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: torch.device, timeout_min: float = 60.0) -> Parallel:
    """Join the process group the environment describes (a no-op on one process).

    On GPU each rank takes ``cuda:LOCAL_RANK`` (NCCL); on CPU gloo. The timeout bounds how long a
    rank waits for the others at a collective (evaluation runs on every rank, so no rank idles
    for a whole evaluation).
    """
    size = world_size()
    if size <= 1:
        return Parallel(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size,
                                timeout=datetime.timedelta(minutes=timeout_min))
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Parallel(rank=rank, world_size=size, local_rank=local_rank, device=device, control=control)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, parallel: Parallel) -> torch.nn.Module:
    """The module the training forward goes through: DDP on several ranks, the model itself on one.

    ``gradient_as_bucket_view``: the gradients are views into DDP's all-reduce buckets, so the
    pruner's in-place gradient masking after backward (when DDP has already averaged them)
    writes straight into them, with no extra copy.
    """
    if not parallel.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [parallel.device.index] if parallel.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


# -- batches -----------------------------------------------------------------------------
def shard(batch, rank: int, world: int):
    """This rank's contiguous rows of a global batch (tensors batch-first; other items whole)."""
    out = []
    for item in batch:
        if torch.is_tensor(item) and item.dim() > 0:
            rows = item.size(0)
            if rows % world:
                raise ValueError(f"a batch of {rows} rows cannot be split evenly over {world} ranks")
            step = rows // world
            item = item[rank * step:(rank + 1) * step]
        out.append(item)
    return type(batch)(out) if isinstance(batch, tuple) and not hasattr(batch, "_fields") else tuple(out)


def sharded(train_epoch: Callable[[int, int], Iterator[Any]], parallel: Parallel):
    """Wrap a DataBundle's ``train_epoch`` so that each rank sees its shard of every batch."""
    if not parallel.enabled:
        return train_epoch

    def epoch(e: int, start: int):
        for batch in train_epoch(e, start):
            yield shard(batch, parallel.rank, parallel.world_size)

    return epoch


# -- threads -----------------------------------------------------------------------------
_PROCESS_THREADS = torch.get_num_threads()  # torch's own default for this process, read at import
def set_threads(threads, hydra_cfg=None) -> int:
    """Set torch's intra-op threads for this run, at the start of every run.

    ``trainer.threads`` when given; otherwise the cores this process may use, divided between
    the processes that share them: the joblib launcher's ``n_jobs`` concurrent jobs, and the
    ranks of one node (LOCAL_WORLD_SIZE). Set at every run, never inherited, so that a joblib
    worker that is reused for the next job starts it with the same setting.
    """
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        launcher = hydra_cfg.launcher if hydra_cfg is not None and "launcher" in hydra_cfg else {}
        if str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
            n_jobs = int(launcher.get("n_jobs") or 1)
            sharing *= n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = every core
        threads = max(1, cores // sharing) if sharing > 1 else _PROCESS_THREADS
    torch.set_num_threads(int(threads))
    return int(threads)
