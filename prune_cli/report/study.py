"""The table a sweep prints when it ends: its finished runs, smallest model first."""
import json
from pathlib import Path

from hydra.experimental.callback import Callback

COLUMNS = ("model", "size/width", "sparsity", "NNZ", "size MB", "quality", "wall s")


def _base(s: dict) -> str:
    for key in ("hidden", "width", "units"):
        if s.get(key) is not None:
            return f"{key} {s[key]}"
    return str(s.get("size") or "")


def _quality(s: dict) -> str:
    if s.get("bleu") is not None or s.get("val_bleu") is not None:  # translation (also has perplexities)
        parts = [f"{name} BLEU {s[key]:.2f}" for name, key in (("valid", "val_bleu"), ("test", "bleu"))
                 if s.get(key) is not None]
        return ", ".join(parts)
    if s.get("val_perplexity") is not None or s.get("perplexity") is not None:
        parts = []
        if s.get("val_perplexity") is not None:
            parts.append(f"valid ppl {s['val_perplexity']:.2f}")
        if s.get("perplexity") is not None:
            parts.append(f"test ppl {s['perplexity']:.2f}")
        return ", ".join(parts)
    if s.get("top1") is not None:
        return f"top-1 {s['top1']:.2f}%, top-5 {s['top5']:.2f}%"
    return ""


def study_table(exp_dir: Path) -> str:
    rows = []
    for path in sorted(Path(exp_dir).glob("*/summary.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows.append((s.get("params_nnz", 0), [s.get("model", ""), _base(s), f"{100 * s.get('target_sparsity', 0):g}%",
                                              f"{s.get('params_nnz', 0):,}", f"{s.get('model_size_mb', 0):.2f}",
                                              _quality(s), f"{s.get('wall_time_s', 0):.0f}"]))
    body = [r for _, r in sorted(rows, key=lambda x: x[0])]
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *body)] if body else [len(c) for c in COLUMNS]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(COLUMNS), line("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(out)


class PrintStudyTable(Callback):
    """After a sweep (-m), print the finished runs of its exp_name as one table."""

    def on_multirun_end(self, config, **kwargs) -> None:
        exp_dir = Path(config.results_dir, "runs", config.exp_name)
        print(f"\n{exp_dir}: finished runs (quality measured by this tool on the held-out split)\n"
              + study_table(exp_dir))
