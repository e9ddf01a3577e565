"""experiment=ptb_controls end to end on tiny generated PTB data (one sparsity, 120 steps): the
sweeper runs the mask source before the runs that use it; kill -9 in each control followed by
the same command gives the numbers of an uninterrupted sweep (which kept fewer steps: keeping
one changes no number); the controls are exact (fixed masks bit for bit, rewound weights = kept
checkpoint x mask, random counts)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prune_cli.pruning import keep_count

from test_run_e2e import data_root, prune_run, read_csv  # noqa: F401 (data_root is a fixture)

pytestmark = pytest.mark.slow

# The experiment's own schedule (pruning from step 60, step 50 kept and rewound to), on a hidden-8
# LSTM, 120 steps. The killed sweep's runs also keep steps 0 and 50, to look at their first weights.
SWEEP = ["-m", "experiment=ptb_controls", "+point=ptb_laptop_sparse_h384_90", "model.hidden=8", "model.dropout=0.3",
         "data.batch_size=4", "data.bptt=5", "data.eval_bptt=50", "data.download=false", "trainer.progress=false",
         "trainer.max_steps=120", "pruning.end_step=100", "trainer.checkpoint_every=5"]
KEEP = ["trainer.keep_steps=[0,50]"]
CONTROLS = ("magnitude", "random", "rewind", "scratch")


def folders(results):
    out = {}
    for d in (Path(results) / "runs" / "ptb_controls").iterdir():
        if d.is_dir():
            out[d.name.split(",")[0].removeprefix("+control=")] = d
    return out


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def kill_in(control, results, data_root):  # noqa: F811
    """Start the sweep, SIGKILL it once ``control``'s run has written its first checkpoint."""
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    proc = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *SWEEP, *KEEP, f"results_dir={results}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ckpt = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = list(Path(results).glob(f"runs/ptb_controls/+control={control},*/checkpoint.pt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, f"the sweep ended before {control} wrote a checkpoint"
    assert not (ckpt.parent / "summary.json").exists(), f"{control} finished before it was killed"


def test_ptb_controls_waves_kill_9_resume_and_exactness(data_root, tmp_path):  # noqa: F811
    clean = tmp_path / "clean"
    out = prune_run(SWEEP, data_root, clean)
    assert out.returncode == 0, out.stderr
    want = folders(clean)
    assert sorted(want) == sorted(CONTROLS)
    assert [p.name for p in want["magnitude"].glob("checkpoint_step*.pt")] == ["checkpoint_step50.pt"]

    # kill -9 inside random, rewind and scratch in turn; the same command then finishes the sweep.
    killed = tmp_path / "killed"
    for control in ("random", "rewind", "scratch"):
        kill_in(control, killed, data_root)
    out = prune_run(SWEEP + KEEP, data_root, killed)
    assert out.returncode == 0, out.stderr
    runs = folders(killed)
    assert {c: d.name for c, d in runs.items()} == {c: d.name for c, d in want.items()}
    s = {c: json.loads((runs[c] / "summary.json").read_text()) for c in CONTROLS}
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]
    for control in CONTROLS:
        w = json.loads((want[control] / "summary.json").read_text())
        for key in ("perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps", "init", "rewind_step",
                    "criterion"):
            assert s[control].get(key) == w.get(key), (control, key)
        assert strip(read_csv(runs[control] / "metrics.csv")) == strip(read_csv(want[control] / "metrics.csv")), control
        assert read_csv(runs[control] / "sparsity.csv") == read_csv(want[control] / "sparsity.csv"), control
        a, b = load(runs[control] / "checkpoint.pt"), load(want[control] / "checkpoint.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), control
        assert all(torch.equal(a["pruner"]["masks"][k], b["pruner"]["masks"][k]) for k in b["pruner"]["masks"]), control

    mag = runs["magnitude"]
    masks = load(mag / "checkpoint.pt")["pruner"]["masks"]
    assert masks and all(int(m.sum()) == keep_count(m.numel(), 0.9) for m in masks.values())

    # The sources: magnitude and random prune from scratch; step 50 came before pruning (60).
    kept50 = load(mag / "checkpoint_step50.pt")
    assert kept50["kept_step"] == 50 and kept50["pruner"]["masks"] == {}
    assert (s["magnitude"]["criterion"], s["magnitude"]["init"], s["magnitude"]["mask_from"]) == ("magnitude", "fresh", None)
    assert (s["random"]["criterion"], s["random"]["mask_source"]) == ("random", None)
    for row in read_csv(runs["random"] / "sparsity.csv"):  # exact per-tensor count at every update
        assert int(row["nnz"]) == keep_count(int(row["numel"]), float(row["target_sparsity"])), row
    random_masks = load(runs["random"] / "checkpoint.pt")["pruner"]["masks"]
    assert [int(m.sum()) for m in random_masks.values()] == [int(m.sum()) for m in masks.values()]
    assert any(not torch.equal(random_masks[n], masks[n]) for n in masks)

    # Fixed masks (scratch, rewind): the source's final masks, bit for bit, in every checkpoint they
    # wrote, recorded once at their first step; pruned weights zero throughout; the dense recipe.
    for control, first in (("scratch", 0), ("rewind", 50)):
        d = runs[control]
        rec = s[control]
        assert (rec["mask_from"], rec["mask_source"]) == (str(mag), f"ptb_controls/{mag.name}")
        assert rec["criterion"] == "magnitude" and rec["steps"] == 120 and rec["params_nnz"] == s["magnitude"]["params_nnz"]
        assert {int(r["step"]) for r in read_csv(d / "sparsity.csv")} == {first}
        for path in [d / "checkpoint.pt", *d.glob("checkpoint_step*.pt")]:
            state = load(path)
            assert state["pruner"]["masks"].keys() == masks.keys()
            for name, m in masks.items():
                assert torch.equal(state["pruner"]["masks"][name], m), (path.name, name)
                assert torch.all(state["model"][name][~m] == 0), (path.name, name)
    assert (s["scratch"]["init"], s["scratch"]["rewind_step"]) == ("fresh", None)
    assert (s["rewind"]["init"], s["rewind"]["rewind_step"], s["rewind"]["init_from"]) == \
        ("rewind", 50, str(mag / "checkpoint_step50.pt"))
    assert sorted(p.name for p in runs["rewind"].glob("checkpoint_step*.pt")) == ["checkpoint_step50.pt"]
    assert min(int(r["step"]) for r in read_csv(runs["rewind"] / "metrics.csv")) > 50

    # The rewound run's weights at its first step: the kept checkpoint's times the mask, exactly.
    first = load(runs["rewind"] / "checkpoint_step50.pt")["model"]
    for name, w in kept50["model"].items():
        assert torch.equal(first[name], w * masks[name] if name in masks else w), name
    # The fresh start is a new initialisation, not the source's own (that would be a lottery ticket).
    fresh, source_init = load(runs["scratch"] / "checkpoint_step0.pt")["model"], load(mag / "checkpoint_step0.pt")["model"]
    assert all(not torch.equal(fresh[n], source_init[n] * masks[n]) for n in masks)
    assert not torch.equal(fresh["lstm.bias_ih_l0"], source_init["lstm.bias_ih_l0"])
