"""Rebuild a model from a ``prune-export`` file and run its family's evaluation, timed.

The quality figure comes from the very task hook the training run evaluated with
(``prune_cli.train.engine.tasks``), on the same split and batching, so on the full split it is the run's
own number (up to float rounding where CSR kernels sum in another order); a perplexity too
large for a float is ``inf`` there, and prune-infer prints it as such. Speed is the model's
forward time per batch, measured around each model call; loading data and scoring are not in it.

Files: the loader (``prune_cli.export.load``) gives dense tensors, or CSR tensors for the
sparse-stored ones. dense and bitmask files (any dtype, int8 dequantized) run the plain model;
csr files (any dtype: float values, int8 dequantized) run their pruned layers through
:mod:`prune_cli.infer.modules`, each layer on the kernel it measures faster at the real batch
shape unless told otherwise. ``decode_s`` is the time to read and decode the file into the
tensors the model runs on.
"""
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from prune_cli import builders
from prune_cli.data import DataError
from prune_cli.config import task_name
from prune_cli.train.engine.tasks import build_task

from .kernels import MODES
from .modules import decisions, sparsify


class InferError(Exception):
    """Bad input (exit status 2): one line saying what is wrong and what to do."""


# quality keys and the unit counted, per task (named like summary.json's metrics)
QUALITY = {"language_model": ("perplexity", "loss"), "classification": ("top1", "top5", "loss"),
           "translation": ("bleu", "perplexity", "loss")}
UNITS = {"language_model": "tokens", "classification": "images", "translation": "sentences"}


@dataclass
class Loaded:
    """A model ready to run: rebuilt, weights loaded, pruned layers swapped where the file is CSR."""

    model: torch.nn.Module
    cfg: DictConfig
    format: str
    dtype: str
    decode_s: float
    data: Any = None                              # DataBundle, or None when built from shapes
    choices: List[Any] = field(default_factory=list)
    shapes: Dict[str, tuple] = field(default_factory=dict)


def _export():
    from prune_cli import export  # imported late: the CLI's --help must not need it
    return export


def read(path, layout: str):
    """(Exported, seconds) for a prune-export file; InferError for anything that is not one."""
    p = Path(path)
    if not p.exists():
        raise InferError(f"{path} does not exist; give a file written by prune-export")
    if not p.is_file():
        raise InferError(f"{path} is not a file; give a file written by prune-export")
    export = _export()
    t0 = time.perf_counter()
    try:
        exported = export.load(p, layout=layout)
    except export.ExportError as e:  # already one line: what is wrong, what to do
        raise InferError(str(e)) from None
    except Exception as e:  # corrupt, truncated or foreign files fail in many ways; all are bad input
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise InferError(f"cannot read {path} ({type(e).__name__}: {msg}); give a file written by prune-export") from None
    return exported, time.perf_counter() - t0


def compose(config: dict, data_root: Optional[str] = None, batch_size: Optional[int] = None,
            bptt: Optional[int] = None) -> DictConfig:
    """The file's run config, set up for evaluation here: data root (``data_root``, else
    $PRUNE_DATA_ROOT, else the run's), evaluation batch size and chunk length, CPU."""
    from prune_cli.config import data_home
    if not OmegaConf.has_resolver("data_home"):
        OmegaConf.register_new_resolver("data_home", data_home)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or "name" not in config["model"]:
        raise InferError("the file's metadata holds no run config with a model; give a file written by prune-export")
    cfg = OmegaConf.create(config)
    with open_dict(cfg):
        cfg.device = "cpu"
        if "data" not in cfg:
            cfg.data = {}
        root = data_root or os.environ.get("PRUNE_DATA_ROOT") or cfg.data.get("root") or data_home()
        cfg.data.root = str(root)
        if batch_size is not None:
            cfg.data.eval_batch_size = int(batch_size)
        if bptt is not None:
            cfg.data.eval_bptt = int(bptt)
    return cfg


def meta_from_file(exported, cfg: DictConfig, state: Dict[str, torch.Tensor], shapes: Dict[str, tuple]) -> dict:
    """What a model builder needs from a dataset when the dataset is not at hand: the file's
    ``model_meta`` (what the run's dataset told its builder), else read off the weights' shapes."""
    import json
    try:
        meta = json.loads((exported.metadata or {}).get("model_meta") or "{}")
    except ValueError:
        meta = {}
    guessed = meta_from_shapes(cfg, state, shapes)
    return {**guessed, **meta} if meta else guessed


def meta_from_shapes(cfg: DictConfig, state: Dict[str, torch.Tensor], shapes: Dict[str, tuple]) -> dict:
    """What a model builder needs from a dataset, read off the weights (no dataset at hand)."""
    def shape(name):
        if name in shapes:
            return tuple(shapes[name])
        return tuple(state[name].shape) if name in state else None

    meta: Dict[str, Any] = {"dataset": cfg.get("data", {}).get("name"), "synthetic": True}
    emb, fc = shape("embedding.weight") or shape("src_embedding.weight"), shape("fc.weight")
    if emb is not None:
        meta["vocab_size"] = emb[0]
    if fc is not None:
        meta["num_classes"] = fc[0]
    meta["image_size"] = {"cifar10": 32}.get(meta["dataset"], 224)
    return meta


def dense_state(exported) -> Dict[str, torch.Tensor]:
    """The state dict with every tensor dense, float32 where it is floating point."""
    out = {}
    for name, t in exported.state_dict.items():
        if t.layout == torch.sparse_csr:
            t = t.to_dense().reshape(tuple(exported.shapes[name]))
        out[name] = t.float() if t.is_floating_point() else t
    return out


def load(path, data_root: Optional[str] = None, batch_size: Optional[int] = None, bptt: Optional[int] = None,
         kernels: str = "auto", crossover: Optional[float] = None, with_data: bool = True,
         budget_s: float = 0.3) -> Loaded:
    """Read ``path``, rebuild its model (meta from the dataset, or from the weights' shapes when
    ``with_data`` is false) and load its weights; for csr files swap in the sparse layers."""
    if kernels not in MODES:
        raise InferError(f"--kernels {kernels!r} is not one of {', '.join(MODES)}")
    exported, decode_s = read(path, "dense")
    fmt, dtype = str(exported.format), str(exported.dtype)
    cfg = compose(exported.config, data_root, batch_size, bptt)
    shapes = {k: tuple(v) for k, v in (exported.shapes or {}).items()}
    state = dense_state(exported)
    data = None
    if with_data:
        try:
            data = builders.build_data(cfg.data, int(cfg.get("seed", 0)))
        except (builders.BuildError, DataError) as e:
            raise InferError(str(e)) from None
        meta = data.meta
    else:
        meta = meta_from_file(exported, cfg, state, shapes)
    try:
        model = builders.build_model(cfg.model, meta)
        model.load_state_dict(state, strict=True)
    except builders.BuildError as e:
        raise InferError(str(e)) from None
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise InferError(f"{path}: the weights do not fit the model its config describes "
                         f"({str(e).splitlines()[0][:160]}); give a file written by prune-export") from None
    model.eval()
    if cfg.get("trainer", {}).get("channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    loaded = Loaded(model=model, cfg=cfg, format=fmt, dtype=dtype, decode_s=decode_s, data=data, shapes=shapes)
    if fmt == "csr":
        sparse, loaded.decode_s = read(path, "csr")
        csr = {n: (t if t.dtype == torch.float32 else t.to(torch.float32))
               for n, t in sparse.state_dict.items() if t.layout == torch.sparse_csr}
        loaded.choices = sparsify(model, csr, kernels, crossover, budget_s)
    return loaded


class Timed:
    """The model, with the wall and process-CPU time of its calls summed per batch (what the task
    does around them is not counted). Calls are ``model(...)`` and, for seq2seq decoding, its
    ``encode`` / ``decode_step`` methods. CPU time is the figure to compare on a shared machine
    at one thread: time spent waiting for a core is not in it."""

    METHODS = ("encode", "decode_step")

    def __init__(self, model):
        self.model, self.times, self.cpu = model, [], []
        self._wall = self._cpu = 0.0
        self._calls = 0

    def _timed(self, fn, *args, **kwargs):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self._wall += time.perf_counter() - t0
        self._cpu += time.process_time() - c0
        self._calls += 1
        return out

    def __call__(self, *args, **kwargs):
        return self._timed(self.model, *args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self.model, name)
        if name in self.METHODS and callable(attr):
            return lambda *a, **k: self._timed(attr, *a, **k)
        return attr

    def eval(self):
        self.model.eval()
        return self

    def close_batch(self) -> None:
        if self._calls:
            self.times.append(self._wall)
            self.cpu.append(self._cpu)
        self._wall = self._cpu = 0.0
        self._calls = 0

    def batches(self, batches):
        """The batches, closing each one's timing when the task asks for the next."""
        for batch in batches:
            yield batch
            self.close_batch()
        self.close_batch()


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"): speed-ups depend on it, so every
    measurement says where it was made."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def evaluate(loaded: Loaded, max_batches: Optional[int] = None) -> dict:
    """The family's quality metric on the validation split (the first ``max_batches`` batches, or
    all) and the model's speed there. One batch runs first, untimed, fresh (no state carried):
    it makes every layer's dense/CSR choice, builds what depends on them (an LSTM's fused
    one-step matrices, when the batches are single steps) and warms the caches."""
    cfg, data = loaded.cfg, loaded.data
    task = str(task_name(cfg))
    if task == "translation":  # prune-infer reports BLEU of greedy decoding (the fast path)
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.trainer.eval_beam_size = 1
    try:
        build_task(cfg, torch.device("cpu"), data.meta)
    except (ValueError, KeyError) as e:
        raise InferError(f"cannot evaluate {cfg.model.name}: {e}; this prune-cli has no evaluation for its task") from None
    split = next((s for s in data.eval_splits if s != "test"), "test")
    device = torch.device("cpu")

    def score(model, batches):
        return build_task(cfg, device, data.meta).evaluate(model, batches)

    # oneDNN's LSTM reorders its weights at every call (a PTB-large token step: 130 ms of CPU
    # instead of 11 ms here); models without convolutions run on ATen's native kernels instead.
    # Same arithmetic up to float rounding; convolutions keep oneDNN, where it is the fast path.
    native = not any(isinstance(m, torch.nn.Conv2d) for m in loaded.model.modules())
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=not native):
        first = next(iter(data.eval_splits[split]()), None)
        if first is None:
            raise InferError(f"the {split} split of {cfg.data.name} is empty")
        score(loaded.model, [first])
        timed = Timed(loaded.model)
        batches = data.eval_splits[split]()
        if max_batches is not None:
            batches = itertools.islice(batches, max_batches)
        metrics = score(timed, timed.batches(batches))
    unit = UNITS.get(task, "items")
    count = int(metrics.get(unit, 0))
    total = sum(timed.times)
    out = {"model": str(cfg.model.name), "dataset": str(cfg.data.name), "split": split}
    out.update({k: float(metrics[k]) for k in QUALITY.get(task, ()) if k in metrics})
    out.update({
        unit: count, f"{unit}_per_s": count / total if total > 0 else math.nan,
        "latency_ms": 1e3 * _median(timed.times), "cpu_latency_ms": 1e3 * _median(timed.cpu),
        f"{unit}_per_cpu_s": count / sum(timed.cpu) if sum(timed.cpu) > 0 else math.nan,
        "batches": len(timed.times),
        "batch_size": int(cfg.data.get("eval_batch_size", 0) or 0),
        "format": loaded.format, "dtype": loaded.dtype, "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "decode_s": round(loaded.decode_s, 6),
        "layers": [d.as_dict() for d in decisions(loaded.choices)],
    })
    if task == "language_model":
        out["bptt"] = int(cfg.data.get("eval_bptt", cfg.data.get("bptt", 0)) or 0)
    return out


def _median(xs):
    xs = sorted(xs)
    if not xs:
        return math.nan
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])
