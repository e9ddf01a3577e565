"""summary.json's record of a finished run: what was trained, how sparse and how big it ended,
for how long, and where (provenance). The task adds its quality fields, the plan its start,
costs and budget (run.py's finish puts them together)."""
import json
import platform
import subprocess
from pathlib import Path

import torch

from prune_cli.config import cfg_container, model_widths
from prune_cli.pruning import storage_report


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def base_record(cfg, run_id, model, data, pruner, state, device, meta_keys=("num_classes", "image_size", "vocab_size")) -> dict:
    """``meta_keys``: the keys of data.meta the model builder read (builders.build_model)."""
    m = cfg.model
    report = storage_report(model, pruner.masks)
    masked = pruner.stats()
    pruned = sum(s.numel for s in masked)
    return {
        "exp_name": cfg.exp_name, "run_id": run_id, "model": m.name, "family": m.name, **model_widths(m),
        "dataset": data.meta.get("dataset", cfg.data.name), "synthetic": bool(data.meta.get("synthetic", False)),
        "target_sparsity": float(cfg.sparsity), "pruning": cfg.pruning.name, "scheme": cfg.pruning.scheme,
        "pattern": pruner.pattern,
        "achieved_sparsity": 1.0 - sum(s.nnz for s in masked) / pruned if pruned else 0.0,
        **{k: v for k, v in report.as_dict().items() if k != "params_pruned"},
        "params_pruned": report.params_pruned,
        "steps": state.step, "epochs": state.step / data.steps_per_epoch, "wall_time_s": round(state.elapsed, 3),
        "seed": cfg.seed, "lr": float(state.extra.get("lr", cfg.optim.lr)), "init_from": state.extra.get("init_from"),
        "git_sha": git_sha(), "torch_version": torch.__version__, "device": str(device),
        "python": platform.python_version(), "model_config": json.dumps(cfg_container(m), sort_keys=True),
        # what the model builder read from the data: prune-export's files rebuild the model without it
        "model_meta": {k: data.meta[k] for k in sorted(meta_keys) if isinstance(data.meta.get(k), (int, float, str))},
        "status": "finished",
    }
