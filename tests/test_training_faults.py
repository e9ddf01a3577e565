"""Runs that go wrong (issue 29, the training side): the watch on every step's loss, perplexities
too large for a float, a sweep that goes on past a diverged run, a run folder deleted mid-sweep."""
import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from prune_cli.train.engine.callbacks import DivergedError, Divergence
from prune_cli.train.engine.distributed import Parallel
from prune_cli.train.engine.tasks import perplexity
from test_run_e2e import TINY, data_root, prune_run, run_dir  # noqa: F401  (data_root: the fixture)


class _T:  # what Divergence.check reads of the loop's Training
    parallel = Parallel()
    optim = {"lr": 0.5, "lr_schedule": {"name": "constant"}}
    steps_per_epoch, total_steps = 10, 100


def _check(watch):
    from omegaconf import OmegaConf
    t = _T()
    t.optim = OmegaConf.create(t.optim)
    watch.check(t)


def test_the_first_step_past_the_bound_is_the_one_reported():
    watch = Divergence(10, None, torch.device("cpu"))
    for step, loss in enumerate([5.0, 6.0, 49.9, 60.0, float("nan"), 1.0], start=1):
        watch.observe(torch.tensor(loss), step)
        if step == 3:
            _check(watch)  # 49.9 < 10 x 5: no divergence yet
    with pytest.raises(DivergedError) as e:
        _check(watch)
    assert (e.value.step, e.value.loss, e.value.lr) == (4, 60.0, 0.5)
    assert str(e.value) == "diverged at step 4: train loss 60 (lr 0.5); lower optim.lr or set optim.clip_grad_norm"


@pytest.mark.parametrize("factor, losses, step", [
    (None, [5.0, 1e30, float("inf")], 3),          # no bound: non-finite only
    (10, [float("nan")], 1),                        # the first step itself
    (2, [3.0, 5.9, -7.0, 6.1], 4),                  # the bound is on the first loss (3 x 2)
])
def test_non_finite_always_and_the_bound_when_set(factor, losses, step):
    watch = Divergence(factor, None, torch.device("cpu"))
    for s, loss in enumerate(losses, start=1):
        watch.observe(torch.tensor(loss), s)
    with pytest.raises(DivergedError) as e:
        _check(watch)
    assert e.value.step == step


def test_a_resumed_run_keeps_its_first_loss_as_the_reference():
    watch = Divergence(10, 2.0, torch.device("cpu"))  # first loss 2.0, from the checkpoint
    watch.observe(torch.tensor(25.0), 40)   # fine against 25 itself, not against 10 x 2
    with pytest.raises(DivergedError):
        _check(watch)


def test_perplexity_of_a_huge_loss_is_inf_not_an_exception():
    assert perplexity(710.0) == math.inf and perplexity(float("inf")) == math.inf
    assert perplexity(1.0) == math.e and math.isnan(perplexity(float("nan")))


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_diverged_run_and_ends_with_status_1(data_root, tmp_path):
    out = prune_run(["-m", *TINY, "trainer.epochs=1", "optim.clip_grad_norm=null", "optim.lr=1e38,1"], data_root, tmp_path)
    assert out.returncode == 1, out.stderr
    assert len([ln for ln in out.stderr.splitlines() if "diverged at step" in ln]) >= 1
    status = {float(p.parent.name.split("optim.lr=")[1].split(",")[0]): json.loads(p.read_text())["status"]
              for p in (tmp_path / "runs" / "default").glob("*/summary.json")}
    assert status == {1e38: "diverged", 1.0: "finished"}
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_huge_but_finite_loss_is_divergence_too(data_root, tmp_path):
    out = prune_run(TINY + ["optim.lr=30", "optim.clip_grad_norm=null", "trainer.diverge_factor=1.5"], data_root, tmp_path)
    s = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert out.returncode == 1 and s["status"] == "diverged", out.stderr
    assert s["diverged_loss"] is None or s["diverged_loss"] > 0
    assert set(s["last_metrics"]) <= {"train", "valid"}


@pytest.mark.slow
def test_a_run_folder_deleted_mid_sweep_stops_that_run_alone(data_root, tmp_path):
    """Another user cleans up while the sweep trains: the run whose folder vanished stops with one
    line, the next run of the sweep trains to its end, and the sweep ends with status 1."""
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root)}
    args = ["-m", *TINY, "trainer.epochs=40", "trainer.checkpoint_every=2", "model.hidden=12,8"]
    sweep = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={tmp_path}"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    deadline = time.time() + 120
    while time.time() < deadline and first is None:
        first = next(iter((tmp_path / "runs" / "default").glob("*model.hidden=12*/checkpoint.pt")), None)
        time.sleep(0.02)
    try:
        assert first is not None, "the first run ended before its first checkpoint"
        while first.parent.exists() and time.time() < deadline:  # as `rm -rf` does: the run may
            shutil.rmtree(first.parent, ignore_errors=True)     # add a file between listing and rmdir
        assert not first.parent.exists()
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    said = [ln for ln in err.splitlines() if "was deleted while the run was writing into it" in ln]
    assert sweep.returncode == 1 and len(said) == 1 and "Traceback" not in err, err
    finished = [json.loads(p.read_text())["model_config"] for p in (tmp_path / "runs" / "default").glob("*/summary.json")]
    assert len(finished) == 1 and '"hidden": 8' in finished[0]
