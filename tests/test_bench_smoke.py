"""`make bench` smoke test: scripts/bench_pruning.py --quick runs and writes the JSON it promises."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bench_pruning.py"


@pytest.mark.slow
def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "sub" / "pruning.json"  # parents are created
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())

    assert {"meta", "masked_step", "mask_update", "global_threshold_memory", "targets", "failed",
            "all_pass"} <= set(res)
    assert {"torch", "cpu_model", "torch_num_threads", "loadavg_start", "runtime_s"} <= set(res["meta"])

    for name in ("ptb_lstm", "mobilenet_v1"):
        r = res["masked_step"][name]
        for key in ("dense_step_s", "masked_step_s", "dense_median_s", "masked_median_s", "ratio",
                    "ratio_of_medians", "round_ratios", "mask_gradients_s", "pruner_step_s",
                    "mask_calls_fraction_of_dense", "target_ratio", "pass", "batch", "profile"):
            assert key in r, (name, key)
        assert r["dense_median_s"] > 0 and r["masked_median_s"] > 0
        assert abs(r["sparsity_achieved"] - 0.9) < 1e-3
        assert isinstance(r["pass"], bool)

    mu = res["mask_update"]
    assert set(mu["schemes"]) == {"uniform", "global"}
    for r in mu["schemes"].values():
        assert r["nnz_exact"] is True
        assert r["first_update_0_to_0.5_s"] > 0 and r["update_0.8_to_0.85_median_s"] > 0
        assert isinstance(r["pass"], bool) and "fraction_of_100_steps" in r
    assert mu["ptb_large_step"]["step_s"] > 0

    gm = res["global_threshold_memory"]
    for key in ("first_0_to_0.5", "update_0.8_to_0.85_with_float_masks"):
        assert gm[key]["peak_extra_MB"] >= 0 and gm[key]["seconds"] > 0
    assert gm["float_masks_storage_MB"] > 0 and isinstance(gm["pass"], bool)
    assert gm["sort_check"]["sort_free"] is True, gm["sort_check"]["sort_like_ops_found"]

    assert set(res["targets"]) >= {"masked_step.ptb_lstm", "masked_step.mobilenet_v1", "mask_update.uniform",
                                   "mask_update.global", "global_threshold_memory", "sort_free"}
    assert res["all_pass"] == (not res["failed"])
