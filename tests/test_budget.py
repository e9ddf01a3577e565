"""Equal-compute runs (issue 17, Scratch-B): the step count, the stretched schedule, bad input,
and the MAC fields of summary.json end to end."""
import csv
import json

import pytest
from omegaconf import OmegaConf

from prune_cli.checks import validate
from prune_cli.config import ConfigError, run_config
from prune_cli.train.engine.optim import learning_rate
from prune_cli.train.plan import costs
from prune_cli.train.plan.plan import make_plan
from prune_cli.train.plan.start import Start
from test_run_e2e import data_root  # noqa: F401  (the fixture: tiny generated PTB files)

PTB_SPE = 2323   # real PTB, batch 20, bptt 20: (929589 // 20 - 1) // 20
TWIN = ["experiment=ptb_budget", "+point=ptb_budget_dense_h48_compute_h384_90"]


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import prune_cli.cli as cli
    root = tmp_path_factory.mktemp("data")
    (root / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (root / "ptb" / f"ptb.{split}.txt").write_text("a b c d\n")

    def make(overrides):
        with initialize_config_module("prune_cli.conf", version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides + [f"data.root={root}", "data.download=false",
                                                                 f"results_dir={root / 'results'}"])
        return cli.job_config(cfg)
    return make


def plan(cfg, vocab=10000, spe=PTB_SPE):
    """(budget, own costs) of the run of ``cfg``, planned as prune-run plans it (from scratch)."""
    planned = make_plan(run_config(cfg), {"vocab_size": vocab}, spe, start=Start())
    return planned.budget, planned.costs


# ---------------------------------------------------------------- the step count
def test_ptb_budget_twin_h48_trains_5997_steps(compose):
    """By hand: h384 at 90%, dense kernels, costs 2*4*384*768 + 384*10000 = 6,199,296 MACs a token
    forward, so 3 x 500 steps x 400 tokens x 6,199,296 = 3,719,577,600,000 to train; a step of
    h48 costs 3 x 400 x 516,864 = 620,236,800, so the twin trains round(5997.03) = 5997 steps."""
    cfg = compose(TWIN)
    validate(cfg)
    b, own = plan(cfg)
    assert own.train_macs(1) == 620_236_800
    assert b.train_macs == 3_719_577_600_000 and b.steps == 5997 and b.stretch == 5997 / 500
    assert b.convention == "dense_kernels" and json.loads(b.match) == {"model": {"hidden": 384}, "sparsity": 0.9}
    assert b.partner == {"size": "small", "hidden": 384, "width": None, "units": None, "target_sparsity": 0.9,
                         "scheme": "uniform", "pattern": "unstructured", "steps": 500}
    assert plan(compose(["experiment=ptb_laptop", "+point=ptb_laptop_dense_h48"]))[0] is None


def test_sparse_kernels_count_each_step_at_its_eq1_sparsity(compose):
    """By hand, hidden 4 and 10 words: dense 2*4*4*8 + 4*10 = 296 MACs a token. Pruning to 50% with
    updates at steps 2 (s = 0: still dense) and 4 (s = 0.5: each 64-element LSTM matrix keeps
    32, the 40-element softmax 20: 148 MACs), over 6 steps: 4 x 296 + 2 x 148 = 1480 token
    forwards' worth; hidden 2 costs 2*4*2*4 + 2*10 = 84, so round(1480 / 84) = 18 steps
    (dense kernels: round(6 x 296 / 84) = 21)."""
    common = ["model.size=small", "model.hidden=2", "budget=equal_compute", "budget.match={model:{hidden:4},sparsity:0.5}",
              "pruning.begin_step=2", "pruning.end_step=4", "pruning.frequency=2", "trainer.max_steps=6"]
    sparse, own = plan(compose(common + ["budget.convention=sparse_kernels"]), vocab=10, spe=100)
    assert own.train.dense == 84 and sparse.steps == 18 and sparse.stretch == 3.0
    assert sparse.train_macs == 3 * 400 * 1480
    dense, _ = plan(compose(common), vocab=10, spe=100)
    assert dense.steps == 21 and dense.train_macs == 3 * 400 * 6 * 296


def test_stretched_schedule_reads_the_original_at_step_over_r():
    decay = OmegaConf.create({"lr": 1.0, "lr_schedule": {"name": "epoch_decay", "decay": 0.5, "constant_epochs": 1}})
    stretched = OmegaConf.create({"lr": 1.0, "lr_schedule": {"name": "epoch_decay", "decay": 0.5, "constant_epochs": 1,
                                                             "stretch": 3.0}})
    # 10 steps an epoch: the original decays at step 10 and 20, the 3x longer run at 30 and 60
    assert [learning_rate(decay, s, 10, 20) for s in (9, 10, 20)] == [1.0, 0.5, 0.25]
    assert [learning_rate(stretched, s, 10, 60) for s in (29, 30, 59, 60)] == [1.0, 0.5, 0.5, 0.25]
    cosine = {"lr": 2.0, "lr_schedule": {"name": "cosine", "warmup_steps": 0, "stretch": 2.5}}
    assert learning_rate(OmegaConf.create(cosine), 125, 10, 250) == pytest.approx(1.0, abs=1e-15)  # half way
    steps = {"lr": 1.0, "lr_schedule": {"name": "step_decay", "constant_steps": 100, "decay_steps": 50, "decay": 0.5,
                                        "stretch": 4.0}}
    assert [learning_rate(OmegaConf.create(steps), s, 10, 1) for s in (399, 400, 599, 600)] == [1.0, 1.0, 1.0, 0.5]


# ---------------------------------------------------------------- bad input
MATCH = "budget.match={model:{hidden:384},sparsity:0.9}"


@pytest.mark.parametrize("overrides, message", [
    (["sparsity=0.5", "budget=equal_compute", MATCH],
     "budget.match on a sparse run (sparsity=0.5): an equal-compute run is a dense model"),
    (["pruning.pattern=2:4", "budget=equal_compute", MATCH], "budget.match on a sparse run (sparsity=0.5)"),
    (["budget=equal_compute", "budget.match={model:{name:gnmt}}"], "budget.match changes model.name (ptb_lstm -> gnmt)"),
    (["budget=equal_compute", "budget.match={data:{name:multi30k}}"], "budget.match changes data.name (ptb -> multi30k)"),
    (["model.size=small", "budget=equal_compute", "budget.match={model:{size:medium}}"],
     "budget.match changes data.bptt (20 -> 35): the partner must train on this run's dataset and batches"),
    (["budget=equal_compute", MATCH, "budget.convention=flops"],
     "unknown budget.convention 'flops'; valid: dense_kernels, sparse_kernels"),
    (["budget=equal_compute"], "budget.match is not set: give the overrides that make the partner"),
    (["budget=equal_compute", "budget.match=384"], "budget.match=384 is not a mapping of config keys"),
    (["budget=equal_compute", "budget.match={modle:{hidden:3}}"], "budget.match does not fit this config"),
    (["budget=equal_compute", "budget.match={sparsity:1.5}"],
     "budget.match makes an invalid partner: sparsity=1.5 is outside [0, 1)"),
    (["budget=equal_compute", "budget.match={model:{hidden:384},sparsity:0.9,pruning:{scheme:global}}",
      "budget.convention=sparse_kernels"], "budget.convention=sparse_kernels with a partner pruned by scheme global"),
])
def test_bad_budgets_are_one_line(compose, overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_global_partner_is_fine_on_dense_kernels(compose):
    validate(compose(["budget=equal_compute", "budget.match={model:{hidden:384},sparsity:0.9,pruning:{scheme:global}}"]))


# ---------------------------------------------------------------- the study and the summary
@pytest.mark.parametrize("point, steps", [
    ("ptb_laptop_dense_h48", None), ("ptb_laptop_dense_h96", None), ("ptb_laptop_dense_h192", None),
    ("ptb_laptop_sparse_h384_55", None), ("ptb_laptop_sparse_h384_80", None), ("ptb_laptop_sparse_h384_90", None),
    # on dense kernels each partner costs what dense h384 costs (3.72e12 MACs in 500 steps): by hand,
    # 500 x 6,199,296 / 1,107,456 (h96) = 2798.9 and / 2,509,824 (h192) = 1235.0
    ("ptb_budget_dense_h48_compute_h384_90", 5997), ("ptb_budget_dense_h96_compute_h384_80", 2799),
    ("ptb_budget_dense_h192_compute_h384_55", 1235),
])
def test_every_ptb_budget_point_composes(compose, point, steps):
    cfg = compose(["experiment=ptb_budget", f"+point={point}"])
    validate(cfg)
    assert cfg.exp_name == "ptb_budget" and cfg.trainer.max_steps == 500
    b, _ = plan(cfg)
    assert (b and b.steps) == steps


def test_pipeline_adds_the_source_runs_pipeline(tmp_path):
    cfg = OmegaConf.create({"model": {"name": "ptb_lstm", "task": "language_model", "hidden": 4},
                            "data": {"batch_size": 2, "bptt": 3}})
    run = costs.run_costs(cfg, {"vocab_size": 10})
    (tmp_path / "summary.json").write_text(json.dumps({"train_macs": 5, "train_macs_pipeline": 1000}))
    fields = lambda init: costs.summary_fields(run, 7, {}, [], init)
    assert fields("scratch")["train_macs_pipeline"] == fields("scratch")["train_macs"] == 3 * 7 * 6 * 296
    assert fields(str(tmp_path / "checkpoint.pt"))["train_macs_pipeline"] == 3 * 7 * 6 * 296 + 1000
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 5}))   # a run from before MACs were counted
    assert fields(str(tmp_path / "checkpoint.pt"))["train_macs_pipeline"] is None
    assert fields(str(tmp_path / "elsewhere" / "c.pt"))["train_macs_pipeline"] is None


# ---------------------------------------------------------------- end to end
def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_twin_and_its_partner_end_to_end(data_root, tmp_path):
    """experiment=ptb_budget's h48 twin and its partner (h384 pruned to 90%), tiny: the twin's
    budget is the partner's training MACs, and every MAC field of the partner's summary is exact."""
    from test_run_e2e import TINY, prune_run

    bad = prune_run(TINY + ["sparsity=0.5", "budget=equal_compute", "budget.match={model:{hidden:32}}"], data_root, tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "prune-run: error: budget.match on a sparse run (sparsity=0.5): an equal-compute run is a dense model given "
        "another configuration's training compute; use sparsity=0"] and not list(tmp_path.iterdir())
    args = ["-m", "experiment=ptb_budget", "+point=ptb_laptop_sparse_h384_90,ptb_budget_dense_h48_compute_h384_90",
            "trainer.max_steps=4", "pruning.begin_step=0", "pruning.end_step=2", "pruning.frequency=1",
            "data.batch_size=2", "data.bptt=3", "trainer.progress=false", "data.download=false"]
    out = prune_run(args, data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    dirs = {p.parent: json.loads(p.read_text()) for p in (tmp_path / "runs" / "ptb_budget").glob("*/summary.json")}
    (twin,) = [s for s in dirs.values() if "budget_match" in s]
    ((d, s),) = [(d, s) for d, s in dirs.items() if s["target_sparsity"] > 0]
    h, vocab, ex = 384, s["model_meta"]["vocab_size"], 2 * 3
    per_token = 2 * 4 * h * 2 * h + h * vocab
    assert s["macs_unit"] == "token" and s["examples_per_step"] == ex and s["infer_macs_dense"] == per_token
    assert s["train_macs"] == 3 * s["steps"] * ex * s["infer_macs_dense"] == s["train_macs_pipeline"]
    # every LSTM and softmax weight is used once a token; the embedding's lookups cost nothing
    by_step = {}
    for r in read_csv(d / "sparsity.csv"):
        by_step.setdefault(int(r["step"]), {})[r["layer"]] = (int(r["numel"]), int(r["nnz"]))
    uses = lambda layer: 0 if layer == "embedding.weight" else 1
    at = lambda nnz: per_token - sum((n - k) * uses(layer) for layer, (n, k) in nnz.items())
    assert s["infer_macs"] == at(by_step[max(by_step)]) < per_token
    forward, current = 0, {}
    for step in range(s["steps"]):
        current = by_step.get(step, current)
        forward += at(current)
    assert s["train_macs_sparse_kernels"] == 3 * ex * forward < s["train_macs"]
    # the twin: hidden 48 for the partner's training MACs, its schedule stretched
    assert twin["hidden"] == 48 and twin["budget_train_macs"] == s["train_macs"] and s["steps"] == 4
    assert twin["steps"] == round(s["train_macs"] / (3 * ex * twin["infer_macs_dense"])) > 4
    assert twin["budget_stretch"] == twin["steps"] / 4 and twin["train_macs"] == 3 * twin["steps"] * ex * twin["infer_macs_dense"]
