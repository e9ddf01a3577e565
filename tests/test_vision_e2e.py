"""prune-run with the vision families, end to end on generated images."""
import json
import pytest

from test_run_e2e import prune_run, read_csv, run_dir
from test_vision_data import make_archive

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    make_archive(root / "cifar10_jpg.tar.gz")
    return root


def test_table2_count_from_the_documented_smoke_command(tmp_path):
    out = prune_run(["model=mobilenet", "model.width=0.5", "data=fake_imagenet", "trainer.max_steps=1"],
                    tmp_path / "unused", tmp_path)
    assert out.returncode == 0, out.stderr
    s = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert s["params_total"] == 1_320_648 and round(s["params_total"] / 1e6, 2) == 1.32  # Table 2
    assert s["synthetic"] is True and s["dataset"] == "fake_imagenet" and s["width"] == 0.5


def test_mobilenet_pruned_on_cifar_archive(cifar_root, tmp_path):
    args = ["model=mobilenet", "model.width=0.25", "sparsity=0.5", "data.batch_size=8", "data.eval_batch_size=16",
            f"data.cache_dir={tmp_path / 'cache'}", "trainer.epochs=2", "pruning.frequency=1",
            "trainer.progress=false", "init_from=none"]
    out = prune_run(args, cifar_root, tmp_path)
    assert out.returncode == 0, out.stderr
    d = run_dir(tmp_path)
    s = json.loads((d / "summary.json").read_text())
    assert s["dataset"] == "cifar10" and s["synthetic"] is False and 0 <= s["top1"] <= s["top5"] <= 100
    rows = read_csv(d / "sparsity.csv")
    final = [r for r in rows if r["step"] == rows[-1]["step"]]
    assert [r["layer"] for r in final] == [f"blocks.{i}.pw.weight" for i in range(13)] + ["fc.weight"]
    assert all(int(r["nnz"]) == (int(r["numel"]) + 1) // 2 for r in final)  # round half up
    assert s["achieved_sparsity"] == pytest.approx(0.5, abs=1e-4)
    again = prune_run(args, cifar_root, tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stderr


@pytest.mark.parametrize("bad, message", [
    (["model=mobilenet", "model.width=0"], "model.width=0 is not in (0, 1]"),
    (["model=mobilenet", "model.width=1.5"], "model.width=1.5 is not in (0, 1]"),
    (["model=mobilenet", "model.width=wide"], "model.width=wide is not in (0, 1]"),
    (["model=mobilenet", "model.prune=[]", "sparsity=0.5"], "has no prunable tensors"),
    (["model=mobilenet", "data.root=/no/such", "data.download=false", "data.cache_dir=/no/cache"], "cifar10_jpg.tar.gz"),
    (["model=inception_v3", "data=imagenet", "data.root=/no/such"], "/no/such/imagenet"),
])
def test_vision_bad_input(tmp_path, bad, message):
    out = prune_run(bad + ["trainer.max_steps=1"], tmp_path / "nodata", tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "runs").exists()
