"""The controls of issue 18 without training runs: random masks (exact, shrinking, reproducible,
seeded apart), fixed masks, the start decision (train/start.py), the config's refusals, the
sweeper's waves for experiment=ptb_controls, and the report's new identity columns."""
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prune_cli.pruning import GradualSchedule, OneShotSchedule, Pruner, keep_count, random_keys, stream_seed
from prune_cli.pruning.masks import _topk_of_keys

from test_pruner import PATTERNS, Net, train


# -- random masks --------------------------------------------------------------------------------
def mlp(rows, cols, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(cols, rows), nn.ReLU(), nn.Linear(rows, 8))


def masks_at_updates(model, pruner, steps, x):
    """Train ``model`` ``steps`` steps; the masks (bool copies) after every update, by step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = {}
    for step in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        pruner.mask_gradients()
        opt.step()
        if pruner.step(step):
            seen[step] = {n: m.bool().clone() for n, m in pruner.masks.items()}
            for n, p in zip(pruner.names, pruner.params):
                if n in pruner.masks:
                    assert torch.all(p[pruner.masks[n] == 0] == 0)
    return seen


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(1, 6), final=st.floats(0.05, 0.95), freq=st.integers(1, 4),
       n=st.integers(0, 4), seed=st.integers(0, 2**40), scheme=st.sampled_from(["uniform", "layerwise_constant"]),
       pattern=st.sampled_from(["unstructured", "2:4", "1:4"]))
def test_random_masks_exact_every_update_shrinking_and_reproducible(rows, cols, final, freq, n, seed, scheme, pattern):
    cols *= 4  # N:M needs dimension 1 a multiple of 4 in at least the first layer
    if pattern != "unstructured":
        final = 1 - int(pattern[0]) / 4
    sched = GradualSchedule(final, 0.0, 0, n * freq, freq)
    x = torch.randn(6, cols)
    model = mlp(rows, cols, 0)
    pruner = Pruner(model, sched, ["0.weight", "2.weight"], scheme, pattern=pattern, criterion="random", seed=seed)
    seen = masks_at_updates(model, pruner, n * freq + freq + 1, x)
    assert sorted(seen) == sorted({s + o for s in sched.update_steps() for o in set(pruner.offsets)})
    previous = {}
    for step, masks in sorted(seen.items()):
        for name, p in zip(pruner.names, pruner.params):
            if name not in masks:  # s_i = 0 at t0: still dense
                continue
            target = pruner.schedule.sparsity_at(step - pruner.offsets[pruner.names.index(name)])
            want = keep_count(p.numel(), target)
            if pruner.nm is not None:
                want = max(want, p.numel() // 4 * pruner.nm[0])
            assert int(masks[name].sum()) == want, (step, name)
            if name in previous:  # only shrinks
                assert not (masks[name] & ~previous[name]).any()
            previous[name] = masks[name]
    if pruner.nm is not None:  # the end: exactly N of every group of 4 along dimension 1
        m = masks[pruner.names[0]]
        assert torch.all(m.view(m.shape[0], -1, 4).sum(-1) == pruner.nm[0])
    # Reproducible from the seed alone: other weights, other data, the same masks.
    other = mlp(rows, cols, 1)
    again = Pruner(other, sched, ["0.weight", "2.weight"], scheme, pattern=pattern, criterion="random", seed=seed)
    replay = masks_at_updates(other, again, n * freq + freq + 1, torch.randn(6, cols))
    assert replay.keys() == seen.keys()
    assert all(torch.equal(replay[s][k], seen[s][k]) for s in seen for k in seen[s])


@settings(max_examples=20, deadline=None)
@given(a=st.integers(0, 2**40), b=st.integers(0, 2**40), final=st.floats(0.2, 0.8))
def test_random_masks_differ_across_seeds(a, b, final):
    assume(a != b)
    # 64x64 weights at 20-80% sparsity: two seeds agree by chance with probability < C(4096, 819)^-1.
    masks = []
    for seed in (a, b):
        model = mlp(64, 64, 0)
        pruner = Pruner(model, OneShotSchedule(final), ["0.weight"], criterion="random", seed=seed)
        pruner.step(0)
        masks.append(pruner.masks["0.weight"].clone())
    assert int(masks[0].sum()) == int(masks[1].sum()) == keep_count(4096, final)
    assert not torch.equal(masks[0], masks[1])


def chi_square(counts, expected):
    return sum((c - expected) ** 2 / expected for c in counts)


def test_random_keys_choose_every_subset_equally_often():
    """k = 2 of the live weights: every pair about equally often (chi-square below its 0.1% point;
    deterministic: the generator is seeded), pruned weights never."""
    g = torch.Generator().manual_seed(7)
    mask = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.float32)  # 4 live: C(4, 2) = 6 pairs
    counts = dict.fromkeys(itertools.combinations([0, 1, 3, 4], 2), 0)
    draws = 3000
    for _ in range(draws):
        keep = _topk_of_keys(random_keys(6, g, mask=mask), 2)
        counts[tuple(keep.nonzero().flatten().tolist())] += 1
    assert sum(counts.values()) == draws  # never a pruned position
    assert chi_square(counts.values(), draws / 6) < 20.52  # chi2(df=5).ppf(0.999)


def test_random_masks_leave_the_training_rng_alone_and_have_their_own_stream():
    model = mlp(8, 8, 0)
    pruner = Pruner(model, GradualSchedule(0.75, 0.0, 0, 4, 2), ["0.weight", "2.weight"], criterion="random", seed=3)
    before = torch.get_rng_state()
    for step in range(6):
        pruner.step(step)
    assert torch.equal(torch.get_rng_state(), before)
    # Not the stream torch.manual_seed(3) starts (the one the initial weights came from).
    assert stream_seed(3, "random_masks") != 3
    assert not torch.equal(torch.Generator().manual_seed(3).get_state(),
                           torch.Generator().manual_seed(stream_seed(3, "random_masks")).get_state())


def test_random_pruner_resumes_bit_identically():
    def make(seed=0):
        torch.manual_seed(seed)
        model = Net()
        pruner = Pruner(model, GradualSchedule(0.8, 0.0, 2, 22, 4), PATTERNS, criterion="random", seed=11)
        return model, pruner, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    model, pruner, opt = make()
    train(model, pruner, opt, 30)
    model2, pruner2, opt2 = make()
    train(model2, pruner2, opt2, 13)
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(), "pruner": pruner2.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    model3, pruner3, opt3 = make(seed=5)
    model3.load_state_dict(state["model"])
    opt3.load_state_dict(state["opt"])
    pruner3.load_state_dict(state["pruner"])
    train(model3, pruner3, opt3, 17, start=13)
    for (n, a), b in zip(model.named_parameters(), model3.parameters()):
        assert torch.equal(a, b), n
    assert all(torch.equal(pruner.masks[n], pruner3.masks[n]) for n in pruner.masks)
    magnitude = Pruner(model3, pruner3.schedule, PATTERNS)
    with pytest.raises(ValueError, match="pruner state is for criterion random, this pruner's is magnitude"):
        magnitude.load_state_dict(state["pruner"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(criterion="lottery"), "unknown pruning criterion 'lottery'; use one of magnitude, random"),
    (dict(criterion="random", scheme="global"), "criterion random with scheme global: one threshold over all tensors"),
])
def test_bad_criteria_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError) as e:
        Pruner(Net(), GradualSchedule(0.5, 0, 0, 10, 1), PATTERNS, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


# -- fixed masks ---------------------------------------------------------------------------------
def finished_source(scheme="uniform"):
    torch.manual_seed(0)
    model = Net()
    pruner = Pruner(model, GradualSchedule(0.8, 0.0, 2, 22, 4), PATTERNS, scheme=scheme)
    train(model, pruner, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 30)
    return pruner.state_dict()


@pytest.mark.parametrize("scheme", ["uniform", "global"])
@pytest.mark.parametrize("first", [0, 7])
def test_fixed_masks_equal_the_source_bit_for_bit_at_every_step(scheme, first):
    source = finished_source(scheme)
    torch.manual_seed(1)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    pruner = Pruner(model, OneShotSchedule(0.8, step=first), PATTERNS, scheme=scheme, optimizer=optimizer, fixed=source)
    named = dict(model.named_parameters())
    for step in range(first, first + 25):
        if step == first:
            assert pruner.step(first)
        train(model, pruner, optimizer, 1, start=step + 1)
        assert pruner.masks.keys() == source["masks"].keys()
        for n, m in source["masks"].items():
            assert torch.equal(pruner.masks[n].bool().cpu(), m), (step, n)
            assert torch.all(named[n][~m] == 0)
    assert pruner.state_dict()["criterion"] == "fixed"
    assert [s.target_sparsity for s in pruner.stats()] == [source["targets"][n] for n in pruner.names]


def test_fixed_masks_that_do_not_fit_are_refused_in_one_line():
    source = finished_source()
    wide = dict(source, masks={**source["masks"], "fc.weight": torch.ones(7, 20, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask for 'fc.weight' has shape \(7, 20\), this model's parameter \(7, 16\)"):
        Pruner(Net(), OneShotSchedule(0.8), PATTERNS, fixed=wide)
    with pytest.raises(ValueError, match="the mask source prunes 'conv.weight', which this run does not prune"):
        Pruner(Net(), OneShotSchedule(0.8), ["fc.weight", "emb.weight"], fixed=source)
    with pytest.raises(ValueError, match="the mask source has no masks"):
        Pruner(Net(), OneShotSchedule(0.8), PATTERNS, fixed=dict(source, masks={}))


# -- config, start, sweeper ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import prune_cli.cli as cli
    root = tmp_path_factory.mktemp("data")
    (root / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (root / "ptb" / f"ptb.{split}.txt").write_text("a b c d\n")

    def make(overrides, results=None):
        with initialize_config_module("prune_cli.conf", version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides + [
                f"data.root={root}", "data.download=false", f"results_dir={results or root / 'results'}"])
        return cli.job_config(cfg)
    return make


SMALL = ["model.size=small", "model.hidden=16"]


def fake_run(results, rel, cfg, kept=(), masks=True, **fields):
    """A finished run folder: summary.json as run.py writes it, a checkpoint with a pruner state."""
    from prune_cli.config import cfg_container
    d = Path(results) / "runs" / rel
    d.mkdir(parents=True)
    rec = dict(status="finished", exp_name=rel.split("/")[0], run_id=rel.split("/")[1], model="ptb_lstm",
               model_config=json.dumps(cfg_container(cfg.model), sort_keys=True), dataset="ptb", direction=None,
               target_sparsity=0.9, seed=0, scheme="uniform", pattern="unstructured", criterion="magnitude",
               mask_from=None)
    rec.update(fields)
    (d / "summary.json").write_text(json.dumps(rec))
    pruner = {"masks": {"decoder.weight": torch.ones(2, 2, dtype=torch.bool)} if masks else {},
              "targets": {"decoder.weight": 0.9}}
    torch.save({"model": {"w": torch.zeros(1)}, "pruner": pruner}, d / "checkpoint.pt")
    for step in kept:
        torch.save({"model": {"w": torch.full((1,), float(step))}, "pruner": {"masks": {}}, "kept_step": step},
                   d / f"checkpoint_step{step}.pt")
    return d


@pytest.fixture
def source(compose, tmp_path):
    cfg = compose(SMALL + ["sparsity=0.9"], tmp_path)
    return fake_run(tmp_path, "main/src", cfg, kept=(10,))


@pytest.mark.parametrize("overrides, message", [
    (["pruning.criterion=lottery"], "unknown pruning.criterion 'lottery'; valid: magnitude, random"),
    (["pruning.criterion=random", "pruning.scheme=global", "sparsity=0.5"],
     "pruning.criterion=random with pruning.scheme=global: one threshold over all tensors is a magnitude notion"),
    (["pruning.rewind_step=10", "sparsity=0.9"], "pruning.rewind_step=10 needs a mask to train: add pruning.mask_from"),
    (["pruning.rewind_step=-1"], "pruning.rewind_step=-1 must be a non-negative integer step"),
    (["trainer.keep_steps=[-5]"], "trainer.keep_steps=[-5] must be a list of steps (non-negative integers)"),
    (["pruning.mask_from=auto"], "pruning.mask_from needs the sparsity of its source: give sparsity="),
    (["pruning.mask_from=auto", "sparsity=0.9", "pruning.criterion=random"],
     "pruning.criterion=random with pruning.mask_from: a fixed-mask run keeps its source's masks"),
    (["pruning.mask_from=auto", "pruning=none"], "pruning=none with pruning.mask_from"),
    (["pruning.mask_from=auto", "sparsity=0.9", "pruning.rewind_step=10", "init_from=SRC/checkpoint.pt"],
     "pruning.rewind_step=10 with init_from=SRC/checkpoint.pt: both name the weights; give one"),
    (["pruning.mask_from=SRC/nope", "sparsity=0.9"], "pruning.mask_from=SRC/nope: no such run folder"),
    (["pruning.mask_from=SRC", "sparsity=0.8"],
     "sparsity=0.8 disagrees with pruning.mask_from=SRC (pruned to 0.9); use sparsity=0.9"),
    (["pruning.mask_from=SRC", "sparsity=0.9", "pruning.scheme=global"],
     "pruning.scheme=global disagrees with pruning.mask_from=SRC (scheme uniform); use pruning.scheme=uniform"),
    (["pruning.mask_from=SRC", "sparsity=0.9", "model.hidden=32"],
     "pruning.mask_from=SRC trained another ptb_lstm (model.hidden=16, this run 32); give a run of the same model and size"),
    (["pruning.mask_from=SRC", "sparsity=0.9", "pruning.rewind_step=50"],
     "pruning.rewind_step=50: SRC did not keep step 50 (kept: 10); run it with trainer.keep_steps=[50]"),
])
def test_config_refuses_bad_controls_in_one_line(compose, source, tmp_path, overrides, message):
    from prune_cli.config import ConfigError
    from prune_cli.checks import validate
    overrides = [o.replace("SRC", str(source)) for o in overrides]
    with pytest.raises(ConfigError) as e:
        validate(compose(SMALL + overrides, tmp_path))
    assert message.replace("SRC", str(source)) in str(e.value) and "\n" not in str(e.value)


def test_config_refuses_unfinished_dense_and_foreign_sources(compose, source, tmp_path):
    from prune_cli.config import ConfigError
    from prune_cli.checks import validate
    (source / "summary.json").rename(source / "summary.off")
    cases = {"is not finished (no summary.json); let it finish": source}
    cfg = compose(SMALL, tmp_path)
    cases["is a dense run: it has no masks"] = fake_run(tmp_path, "main/dense", cfg, target_sparsity=0.0)
    cases["is a gnmt run, this run trains ptb_lstm"] = fake_run(tmp_path, "main/gnmt", cfg, model="gnmt")
    for message, folder in cases.items():
        with pytest.raises(ConfigError) as e:
            validate(compose(SMALL + [f"pruning.mask_from={folder}", "sparsity=0.9"], tmp_path))
        assert message in str(e.value) and "\n" not in str(e.value)


def test_start_finds_the_mask_source_of_the_same_point_and_seed(compose, tmp_path):
    from prune_cli.train.plan import start
    cfg = compose(SMALL + ["sparsity=0.9", "pruning.mask_from=auto", "exp_name=mine", "seed=1"], tmp_path)
    for rel, fields in (("other/a", dict(seed=0)), ("other/b", dict(seed=1, criterion="random")),
                        ("other/c", dict(seed=1, mask_from="/x")), ("other/d", dict(seed=1, target_sparsity=0.8)),
                        ("other/e", dict(seed=1, scheme="global"))):
        fake_run(tmp_path, rel, cfg, **fields)
    with pytest.raises(start.StartError, match="pruning.mask_from=auto: no finished magnitude-pruned run of this model "
                                               "and data at sparsity 0.9 \\(scheme uniform, seed 1\\)"):
        start.decide(cfg)
    elsewhere = fake_run(tmp_path, "other/f", cfg, seed=1)
    assert start.decide(cfg).mask_from == str(elsewhere)
    here = fake_run(tmp_path, "mine/g", cfg, seed=1, kept=(10,))  # this experiment's own is preferred
    chosen = start.decide(cfg)
    assert (chosen.mask_from, chosen.mask_source, chosen.init, chosen.first_step) == (str(here), "mine/g", "fresh", 0)
    assert chosen.from_trained is False and chosen.masks["masks"].keys() == {"decoder.weight"}

    rewind = start.decide(compose(SMALL + ["sparsity=0.9", "pruning.mask_from=auto", "exp_name=mine", "seed=1",
                                           "pruning.rewind_step=10"], tmp_path))
    assert (rewind.init, rewind.first_step, rewind.init_from) == ("rewind", 10, str(here / "checkpoint_step10.pt"))
    assert rewind.weights["w"].item() == 10.0
    assert rewind.summary() == {"init": "rewind", "init_from": str(here / "checkpoint_step10.pt"), "rewind_step": 10,
                                "criterion": "magnitude", "mask_from": str(here), "mask_source": "mine/g"}
    with pytest.raises(start.StartError, match=f"pruning.rewind_step=20: the mask source {here} did not keep step 20"):
        start.decide(compose(SMALL + ["sparsity=0.9", "pruning.mask_from=auto", "exp_name=mine", "seed=1",
                                      "pruning.rewind_step=20"], tmp_path))


def test_start_of_a_fixed_mask_run_from_a_checkpoint(compose, tmp_path):
    from prune_cli.train.plan import start
    cfg = compose(SMALL + ["sparsity=0.9"], tmp_path)
    src = fake_run(tmp_path, "main/src", cfg)
    trained = fake_run(tmp_path, "main/dense", cfg, target_sparsity=0.0, masks=False, kept=(5,))
    torch.save({"model": {"w": torch.ones(1)}, "pruner": {"masks": {"x": torch.ones(1)}}, "kept_step": 70},
               trained / "checkpoint_step70.pt")  # kept after pruning began
    ask = lambda path: start.decide(compose(SMALL + ["sparsity=0.9", f"pruning.mask_from={src}", f"init_from={path}"], tmp_path))
    got = ask(trained / "checkpoint.pt")
    assert (got.init, got.first_step, got.from_trained) == ("trained", 0, False)
    got = ask(trained / "checkpoint_step5.pt")
    assert (got.init, got.first_step, got.weights["w"].item()) == ("rewind", 5, 5.0)
    with pytest.raises(start.StartError, match="was kept at step 70, after its run began pruning"):
        ask(trained / "checkpoint_step70.pt")
    with pytest.raises(start.StartError, match="rewinds to step 5 .*which is not before the end of its training \\(5 steps\\)"):
        ask(trained / "checkpoint_step5.pt").check_within(5)


def test_start_of_a_resumed_run_is_its_recorded_one(compose, tmp_path):
    from prune_cli.train.plan import start
    cfg = compose(SMALL + ["sparsity=0.9", "pruning.mask_from=/gone", "init_from=none"], tmp_path)
    rec = start.Start(init="rewind", init_from="/gone/checkpoint_step5.pt", first_step=5, mask_from="/gone").record()
    own = {"masks": {"decoder.weight": torch.ones(2, dtype=torch.bool)}, "targets": {"decoder.weight": 0.5}}
    got = start.decide(cfg, {"loop": {"extra": {"start": rec}}, "pruner": own})
    assert (got.init, got.first_step, got.mask_from) == ("rewind", 5, "/gone") and got.masks is own
    old = start.decide(compose(SMALL + ["sparsity=0.9"], tmp_path), {"loop": {"extra": {"init_from": "/d.pt"}}})
    assert (old.init, old.init_from, old.from_trained) == ("trained", "/d.pt", True)


@pytest.mark.parametrize("control, wave", [("magnitude", 1), ("random", 1), ("scratch", 2), ("rewind", 2)])
@pytest.mark.parametrize("point", ["ptb_laptop_sparse_h384_55", "ptb_laptop_sparse_h384_80", "ptb_laptop_sparse_h384_90"])
def test_ptb_controls_composes_and_mask_users_come_last(compose, tmp_path, control, wave, point):
    from prune_cli.checks import validate
    from prune_cli.sweeper.dense_first import wave as wave_of
    cfg = compose(["experiment=ptb_controls", f"+point={point}", f"+control={control}"], tmp_path)
    validate(cfg)
    assert wave_of(cfg) == wave
    assert (cfg.exp_name, cfg.trainer.max_steps, cfg.pruning.begin_step, cfg.model.hidden) == ("ptb_controls", 500, 60, 384)
    assert list(cfg.trainer.keep_steps) == ([50] if control == "magnitude" else [])
    assert cfg.pruning.rewind_step == (50 if control == "rewind" else None)
    assert wave_of(compose(["experiment=ptb_laptop", "+point=ptb_laptop_dense_h48"], tmp_path)) == 0


# -- report --------------------------------------------------------------------------------------
def test_report_tells_the_controls_apart_and_groups_their_seeds(tmp_path):
    from prune_cli.report.collect import collect
    from prune_cli.report.points import control, group, to_csv_frame

    from test_report_points import lm
    kinds = {"magnitude": {}, "random": dict(criterion="random"),
             "scratch": dict(init="fresh", mask_from="/r/src", mask_source="c/magnitude,seed=S"),
             "rewind": dict(init="rewind", rewind_step=50, mask_from="/r/src", mask_source="c/magnitude,seed=S",
                            init_from="/r/src/checkpoint_step50.pt")}
    for (kind, fields), seed in itertools.product(kinds.items(), (0, 1)):
        fields = {k: (v.replace("S", str(seed)) if isinstance(v, str) else v) for k, v in fields.items()}
        lm(tmp_path, f"c/{kind},seed={seed}", 384, 0.9, 1000, 100 + seed, seed, cfg_over=False, **fields)
    lm(tmp_path, "old/dense", 48, 0.0, 1000, 120, 0, cfg_over=False)
    lm(tmp_path, "old/trained", 384, 0.9, 1000, 110, 0, cfg_over=False, init_from="/d/checkpoint.pt")
    runs = collect(tmp_path).runs
    pts, _ = group(runs)
    table = {(p["criterion"], p["masks"], p["init"]): p for p in pts.to_dict("records")}
    assert set(table) == {("magnitude", "own", "fresh"), ("random", "own", "fresh"), ("magnitude", "fixed", "fresh"),
                          ("magnitude", "fixed", "rewind step 50"), ("none", "none", "fresh"),
                          ("magnitude", "own", "trained")}
    assert [table[k]["n_seeds"] for k in sorted(table)] == [2, 2, 2, 1, 1, 2]
    assert table[("magnitude", "fixed", "rewind step 50")]["mask_sources"] == "c/magnitude,seed=0;c/magnitude,seed=1"
    assert [control(table[k]) for k in sorted(table)] == ["fixed masks, fresh init", "fixed masks, rewind step 50",
                                                          "", "", "", "random"]
    csv = to_csv_frame(pts)
    assert {"criterion", "masks", "init", "mask_sources"} <= set(csv.columns)
    assert {"criterion", "masks", "init", "mask_source"} <= set(runs.columns)


def test_pairing_rows_put_each_control_beside_magnitude_pruning_and_the_small_dense_model(tmp_path):
    """Each control is a row of its own, labelled, compared with the small-dense model at its NNZ
    and with the magnitude-pruned model of its base and sparsity (Welch's test, 2 seeds a side);
    the figure draws each control as a curve of its own."""
    from prune_cli.report.collect import collect
    from prune_cli.report.figures import quality_vs_nnz
    from prune_cli.report.points import group
    from prune_cli.report.tables import pairing_table

    from test_report_points import lm
    ppl = {"magnitude": (100.0, 101.0), "random": (130.0, 131.0), "scratch": (100.5, 100.6)}
    fields = {"magnitude": {}, "random": dict(criterion="random"),
              "scratch": dict(init="fresh", mask_from="/r/src", mask_source="c/magnitude")}
    for kind, seed in itertools.product(ppl, (0, 1)):
        lm(tmp_path, f"c/{kind},seed={seed}", 384, 0.9, 1000, ppl[kind][seed], seed, cfg_over=False, **fields[kind])
    for seed, value in ((0, 150.0), (1, 152.0)):
        lm(tmp_path, f"d/h48,seed={seed}", 48, 0.0, 1010, value, seed, cfg_over=False)
    points, _ = group(collect(tmp_path).runs)
    table = pairing_table(points)
    rows = {r["control"]: r for r in table.csv.to_dict("records")}
    assert set(rows) == {"", "random", "fixed masks, fresh init"}
    assert all(r["dense by NNZ"] == "hidden=48" and r["verdict at equal steps"] == "wins" for r in rows.values())
    assert np.isnan(rows[""].get("advantage over magnitude", np.nan))  # the magnitude row answers to nothing
    random, scratch = rows["random"], rows["fixed masks, fresh init"]
    assert random["advantage over magnitude"] == -30.0 and random["verdict vs magnitude"] == "loses"
    assert random["p vs magnitude"] < 0.05
    assert scratch["advantage over magnitude"] == pytest.approx(-0.05) and scratch["verdict vs magnitude"] == "within noise"
    labels = list(table.show["sparse model"])
    assert "hidden=384 @ 90% (random)" in labels and "hidden=384 @ 90% (fixed masks, fresh init)" in labels
    (figure,) = quality_vs_nnz(points, {"rows": []}, tmp_path / "fig")
    assert figure.name.startswith("quality_vs_nnz")


def test_a_mask_source_not_found_stops_the_run_before_anything_is_written(compose, tmp_path, capsys):
    """mask_from=auto is resolved when the run starts (a sweep's earlier waves make the source):
    not found, it is one error line and exit status 2, and results/ is as it was."""
    from omegaconf import open_dict

    from prune_cli.train.run import run
    cfg = compose(SMALL + ["sparsity=0.9", "pruning.mask_from=auto", "trainer.progress=false", "data.batch_size=1",
                           "data.bptt=1", "device=cpu"], tmp_path / "results")
    with open_dict(cfg):
        cfg.run_id = "r"
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "keep.txt").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as e:
            run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert e.value.code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("prune-run: error:")]
    assert len(errors) == 1 and "pruning.mask_from=auto: no finished magnitude-pruned run" in errors[0], errors
    assert sorted(tmp_path.rglob("*")) == before


def test_checkpoints_from_before_the_controls_still_resume():
    from prune_cli.train.folder.checkpoint import comparable
    old = {"sparsity": 0.9, "pruning": {"name": "gradual", "scheme": "uniform"}, "trainer": {"max_steps": 5}}
    new = {"sparsity": 0.9, "pruning": {"name": "gradual", "scheme": "uniform", "criterion": "magnitude",
                                        "mask_from": None, "rewind_step": None},
           "trainer": {"max_steps": 5, "keep_steps": [50]}}
    assert comparable(old) == comparable(new)
    assert comparable(old) != comparable({**new, "pruning": {**new["pruning"], "criterion": "random"}})
