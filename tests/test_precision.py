"""trainer.precision and trainer.compile keep pruning exact; every key's type is checked first."""
import json

import pytest
import torch
from hydra import compose, initialize_config_module

from prune_cli.config import ConfigError
from prune_cli.checks import check_types
from prune_cli.pruning import GradualSchedule, Pruner
from test_run_e2e import TINY, data_root, prune_run, read_csv, run_dir  # noqa: F401  (data_root is a fixture)


def composed(*overrides):
    import prune_cli.cli  # noqa: F401  (registers the resolvers)

    with initialize_config_module("prune_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("override, message", [
    ("seed=notanint", "seed='notanint' must be an integer; e.g. seed=0"),
    ("seed=1.5", "seed=1.5 must be an integer"),
    ("seed=true", "seed=True must be an integer"),
    ("sparsity=abc", "sparsity='abc' must be a number in [0, 1)"),
    ("device=[cpu]", "device=['cpu'] must be auto, cpu, cuda or cuda:N"),
    ("exp_name=null", "exp_name=None must be a name"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc' must be a positive integer or null"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be a positive integer or null"),
    ("trainer.log_every=2.5", "trainer.log_every=2.5 must be a positive integer"),
    ("trainer.epochs=-1", "trainer.epochs=-1 must be a positive integer"),
    ("trainer.progress=maybe", "trainer.progress='maybe' must be true or false"),
    ("trainer.compile=1", "trainer.compile=1 must be true or false"),
    ("trainer.precision=fp8", "trainer.precision='fp8' must be fp32 | bf16 | fp16; e.g. trainer.precision=bf16"),
    ("trainer.eval_splits=test", "trainer.eval_splits='test' must be a list of split names or null"),
    ("trainer.threads=0", "trainer.threads=0 must be a positive integer or null"),
])
def test_every_top_level_and_trainer_key_has_its_type(override, message):
    with pytest.raises(ConfigError) as e:
        check_types(composed(override))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_values_pass():
    check_types(composed("seed=3", "exp_name=2024", "trainer.max_steps=5", "trainer.precision=bf16",
                         "trainer.compile=true", "trainer.eval_splits=[test]", "trainer.threads=2"))


@pytest.mark.slow
@pytest.mark.parametrize("bad, message", [
    (["seed=notanint"], "prune-run: error: seed='notanint' must be an integer; e.g. seed=0"),
    (["trainer.precision=fp16", "device=cpu"], "prune-run: error: trainer.precision=fp16 needs a GPU"),
])
def test_bad_types_one_line_exit_2(data_root, tmp_path, bad, message):
    out = prune_run(TINY + bad, data_root, tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith(message) and list(tmp_path.iterdir()) == []


def test_in_place_mask_updates_do_not_recompile():
    """Dynamo guards on a parameter's identity, shape and dtype, not its values: the pruner's
    in-place masking leaves the compiled graph valid across mask updates."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    pruner = Pruner(model, GradualSchedule(0.9, 0.0, 0, 8, 1), ["*.weight"])
    forward = torch.compile(model, backend="eager")  # dynamo's guards; no C++ compiler needed
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 16)
    pruner.step(0)
    for step in range(1, 10):
        loss = forward(x).square().mean()
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.step(step)
    assert counters["stats"]["unique_graphs"] == 1  # 9 steps, 8 mask updates, one graph
    assert pruner.sparsity() == pytest.approx(0.9, abs=0.01)


def sparsity_rows(d):
    return [(r["step"], r["layer"], r["nnz"]) for r in read_csv(d / "sparsity.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["trainer.precision=bf16"], ["trainer.compile=true"]])
def test_bf16_and_compiled_runs_prune_exactly_like_fp32_eager(data_root, tmp_path, extra):
    args = TINY + ["trainer.epochs=1", "sparsity=0.75", "pruning.frequency=4"]
    ref, run = tmp_path / "fp32", tmp_path / "other"
    assert prune_run(args, data_root, ref).returncode == 0
    out = prune_run(args + extra, data_root, run)
    assert out.returncode == 0, out.stderr
    assert sparsity_rows(run_dir(run)) == sparsity_rows(run_dir(ref))  # same NNZ at every update
    s, r = (json.loads((run_dir(d) / "summary.json").read_text()) for d in (run, ref))
    assert s["params_nnz"] == r["params_nnz"] and s["achieved_sparsity"] == r["achieved_sparsity"] == 0.75
    key, value = extra[0].split("=")
    assert str(s[key.split(".")[1]]).lower() == value
    assert s["perplexity"] == pytest.approx(r["perplexity"], rel=0.05)
    if "trainer.compile=true" in extra:
        log = (run_dir(run) / "run.log").read_text()
        compiled = int(log.split("torch.compile: ")[1].split(" graph")[0])
        assert 1 <= compiled <= 4, log  # first step, hidden state from None to a tensor; not one per mask update
