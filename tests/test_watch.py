"""trainer.tensorboard: the rows of metrics.csv and sparsity.csv, as TensorBoard scalars, once each."""
import pytest
from omegaconf import OmegaConf

from prune_cli.pruning.masks import LayerStats
from prune_cli.train.folder import watch
from prune_cli.train.folder.files import RunFolder


def scalars(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def stats(step):
    return [LayerStats("fc1.weight", 100, 100 - step, 0.5, step / 100), LayerStats("fc2.weight", 300, 300, 0.5, 0.0)]


def test_metrics_and_mask_updates_become_scalars(tmp_path):
    folder = RunFolder(tmp_path)
    folder.start(OmegaConf.create({}), None)
    watch.attach(folder, OmegaConf.create({"tensorboard": True}))
    folder.log_metrics(10, 0.5, "train", {"loss": 2.5, "lr": 0.1, "sparsity": 0.25})
    folder.log_metrics(20, 1.0, "valid", {"perplexity": 120.0})
    folder.log_sparsity(10, stats(40))
    folder.close()
    assert folder.watchers == []
    got = scalars(tmp_path)
    assert got == {
        "train/loss": [(10, 2.5)], "train/lr": [(10, pytest.approx(0.1))], "train/sparsity": [(10, 0.25)],
        "valid/perplexity": [(20, 120.0)],
        # 40 of 400 weights pruned (TensorBoard keeps float32)
        "sparsity/target": [(10, 0.5)], "sparsity/achieved": [(10, pytest.approx(0.1))],
        "sparsity_layer/fc1.weight": [(10, pytest.approx(0.4))], "sparsity_layer/fc2.weight": [(10, 0.0)],
    }
    # and metrics.csv got the same rows as without TensorBoard
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == [
        "10,0.5000,train,loss,2.5", "10,0.5000,train,lr,0.1", "10,0.5000,train,sparsity,0.25",
        "20,1.0000,valid,perplexity,120.0"]


def test_a_resumed_run_neither_duplicates_nor_loses_points(tmp_path):
    """Killed at step 9 after a checkpoint at step 5: the resumed run writes 6.. again."""
    first = watch.TensorBoardLog(tmp_path)
    for step in range(1, 10):
        first.metrics(step, "train", {"loss": float(step)})
    first.close()
    resumed = watch.TensorBoardLog(tmp_path, purge_step=5 + 1)
    for step in range(6, 13):
        resumed.metrics(step, "train", {"loss": 100.0 + step})
    resumed.close()
    assert scalars(tmp_path)["train/loss"] == [(s, float(s)) for s in range(1, 6)] + \
        [(s, 100.0 + s) for s in range(6, 13)]


@pytest.mark.parametrize("asked, writes, attached", [(True, True, 1), (False, True, 0), (True, False, 0)])
def test_attached_only_when_asked_and_only_on_the_writing_rank(tmp_path, asked, writes, attached):
    folder = RunFolder(tmp_path, writes=writes)
    watch.attach(folder, OmegaConf.create({"tensorboard": asked}))
    assert len(folder.watchers) == attached
    folder.close()
    assert bool(list(tmp_path.glob("events.out.tfevents.*"))) == bool(attached)
