"""N:M patterns: every group of M along dimension 1 keeps its N largest; eq. 1 stays exact on the way."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from prune_cli.pruning import (ConstantSchedule, GradualSchedule, Pruner, keep_count, nm_fits, nm_topk_mask,
                               parse_pattern, pattern_sparsity)
from test_pruner import PATTERNS, Net, train

NM = [(1, 4), (2, 4), (4, 8)]


def groups(t: torch.Tensor, m: int) -> torch.Tensor:
    """(number of groups, m): the groups of m consecutive entries along dimension 1, other indices fixed."""
    return t.reshape(t.shape[0], t.shape[1] // m, m, -1).transpose(2, 3).reshape(-1, m)


def reference_nm(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Each group's n largest magnitudes, ties to the lower index (a stable sort per group)."""
    g = groups(w.abs(), m)
    order = torch.argsort(-g, dim=1, stable=True)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, order[:, :n], True)
    rest = w.shape[2:].numel() if w.dim() > 2 else 1
    return keep.reshape(w.shape[0], w.shape[1] // m, rest, m).transpose(2, 3).reshape(w.shape)


def test_parse_pattern_and_its_sparsity():
    assert parse_pattern("unstructured") is None and parse_pattern(None) is None
    assert parse_pattern("2:4") == (2, 4) and parse_pattern(" 4:8 ") == (4, 8)
    assert pattern_sparsity("2:4") == 0.5 and pattern_sparsity("1:4") == 0.75 and pattern_sparsity("unstructured") == 0.0
    for bad in ("4:4", "0:4", "4:2", "2/4", "two:four", "2:4:8", ""):
        with pytest.raises(ValueError, match="neither unstructured nor N:M"):
            parse_pattern(bad)
    with pytest.raises(ValueError, match="YAML reads 2:4 as the number 124"):
        parse_pattern(124)  # what `pattern: 2:4` unquoted becomes in a YAML file


def test_hand_worked_groups_ties_and_gradual_candidates():
    w = torch.tensor([[1., -5, 3, 2, 0, 0, 0, 7],
                      [4, 4, 4, 4, 1, 2, 3, 4]])
    top = [[0, 1, 1, 0, 1, 0, 0, 1],  # group [0 0 0 7]: 7 and the first 0 (ties by position)
           [1, 1, 0, 0, 0, 0, 1, 1]]  # group [4 4 4 4]: the first two
    assert nm_topk_mask(w, 8, 2, 4).int().tolist() == top
    # Two more to keep: the largest non-top weights of the whole tensor are the two unkept 4s.
    assert nm_topk_mask(w, 10, 2, 4).int().tolist() == [[0, 1, 1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0, 1, 1]]
    # A pruned weight is never protected, even when it is now its group's largest.
    old = torch.ones_like(w)
    old[0, 7] = 0
    assert nm_topk_mask(w, 8, 2, 4, old).int().tolist()[0] == [0, 1, 1, 0, 1, 1, 0, 0]


@st.composite
def nm_cases(draw):
    n, m = draw(st.sampled_from(NM))
    rows, grp = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    conv = draw(st.booleans())
    shape = (rows, grp * m) + ((draw(st.integers(1, 3)), draw(st.integers(1, 3))) if conv else ())
    return n, m, shape, draw(st.integers(0, 2**31 - 1)), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(case=nm_cases())
def test_final_mask_is_every_groups_n_largest(case):
    n, m, shape, seed, ties = case
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-3, 4, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    w = w.contiguous(memory_format=torch.channels_last) if w.dim() == 4 else w
    keep = nm_topk_mask(w, w.numel() // m * n, n, m)
    assert torch.equal(keep, reference_nm(w, n, m))
    assert (groups(keep, m).sum(1) == n).all()  # exactly n kept in every group
    nonzero = groups(w * keep != 0, m).sum(1)
    assert (nonzero <= n).all() and (nonzero == groups(w != 0, m).sum(1).clamp(max=n)).all()


def nm_model(shapes, seed):
    torch.manual_seed(seed)
    model = nn.Module()
    for i, s in enumerate(shapes):
        model.register_parameter(f"p{i}", nn.Parameter(torch.randn(s)))
    return model


@settings(max_examples=40, deadline=None)
@given(case=nm_cases(), updates=st.integers(0, 5), freq=st.integers(1, 3), s_i=st.floats(0, 0.4),
       scheme=st.sampled_from(["uniform", "layerwise_constant"]))
def test_gradual_exact_keep_count_at_every_update_and_n_of_m_at_the_end(case, updates, freq, s_i, scheme):
    n, m, shape, seed, _ = case
    final = 1 - n / m
    odd = (shape[0], shape[1] + 1) + shape[2:]  # dimension 1 not a multiple of m: stays dense
    model = nm_model([shape, odd, (3, 2 * m)], seed)
    schedule = GradualSchedule(final, min(s_i, final), 0, updates * freq, freq)
    pruner = Pruner(model, schedule, ["p0", "p1", "p2"], scheme=scheme, pattern=f"{n}:{m}")
    assert pruner.names == ["p0", "p2"] and pruner.dense == ["p1"]
    odd_before = model.p1.detach().clone()
    g = torch.Generator().manual_seed(seed)
    previous = {}
    for step in range(updates * freq + freq + 2):
        with torch.no_grad():  # "training": the survivors move, so the group ranking changes
            for p in (model.p0, model.p2):
                p.add_(torch.randn(p.shape, generator=g))
        if pruner.step(step):  # (without an optimizer it re-masks the weights after every step)
            for s in pruner.stats():
                assert s.nnz == keep_count(s.numel, s.target_sparsity), (step, s)
                mask = pruner.masks.get(s.name)
                if mask is None:
                    continue
                assert (groups(mask, m).sum(1) >= n).all()  # never below n in a group on the way
                if s.name in previous:  # masks only shrink
                    assert not ((mask != 0) & (previous[s.name] == 0)).any()
                previous[s.name] = mask.clone()
    assert "p1" not in pruner.masks and torch.equal(model.p1.detach(), odd_before)
    for name in pruner.names:
        w, mask = getattr(model, name).detach(), pruner.masks[name]
        assert (groups(mask, m).sum(1) == n).all()
        assert pruner.stats()[pruner.names.index(name)].sparsity == pytest.approx(final)
        assert torch.equal(w * mask, w)  # the pruned weights are zero


def test_dense_tensors_are_left_alone_by_the_pruner():
    model = nm_model([(4, 8), (4, 6), (5,)], 0)
    before = model.p1.detach().clone(), model.p2.detach().clone()
    pruner = Pruner(model, ConstantSchedule(0.5), ["p*"], pattern="2:4")
    pruner.step(0)
    assert pruner.dense == ["p1", "p2"] and list(pruner.masks) == ["p0"]
    assert torch.equal(model.p1, before[0]) and torch.equal(model.p2, before[1])
    assert not nm_fits((5,), 4) and not nm_fits((4, 6), 4) and nm_fits((4, 8, 3, 3), 4)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"scheme": "global"}, "with scheme global: N:M fixes every tensor at 0.5"),
    ({"final": 0.7}, "pattern 2:4 keeps 2 of every 4 weights, sparsity 0.5: the schedule's final sparsity 0.7 contradicts it"),
    ({"params": ["conv.weight"]}, "pattern 2:4: no selected tensor has dimension 1 a multiple of 4 (conv.weight)"),
    ({"pattern": "3:2"}, "pattern=3:2 is neither unstructured nor N:M"),
])
def test_bad_arguments_one_line(kwargs, fragment):
    args = {"scheme": "uniform", "final": 0.5, "params": PATTERNS, "pattern": "2:4", **kwargs}
    with pytest.raises(ValueError) as e:
        Pruner(Net(), GradualSchedule(args["final"], 0, 0, 10, 1), args["params"], args["scheme"], pattern=args["pattern"])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def make(pattern="2:4", scheme="uniform", optimizer_aware=False, seed=0):
    torch.manual_seed(seed)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    n, m = parse_pattern(pattern)
    pruner = Pruner(model, GradualSchedule(1 - n / m, 0.0, 2, 22, 4), PATTERNS, scheme=scheme,
                    optimizer=optimizer if optimizer_aware else None, pattern=pattern)
    return model, pruner, optimizer


def test_net_tensors_split_by_dimension_1():
    _, pruner, _ = make("4:8")  # emb 50x8, conv 4x1x3x3, LSTM ih 24x8 / 24x12 and hh 24x6, fc 7x16
    assert pruner.names == ["emb.weight", "lstm.weight_ih_l0", "lstm.weight_ih_l0_reverse", "fc.weight"]
    assert pruner.dense == ["conv.weight", "lstm.weight_hh_l0", "lstm.weight_hh_l0_reverse", "lstm.weight_ih_l1",
                            "lstm.weight_hh_l1", "lstm.weight_ih_l1_reverse", "lstm.weight_hh_l1_reverse"]


@pytest.mark.parametrize("scheme", ["uniform"])  # layerwise_constant: the property test above
def test_resume_is_bit_identical_with_a_pattern(scheme):
    model, pruner, optimizer = make(scheme=scheme)
    train(model, pruner, optimizer, 30)
    model2, pruner2, optimizer2 = make(scheme=scheme)
    train(model2, pruner2, optimizer2, 13)
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": optimizer2.state_dict(), "pruner": pruner2.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf)
    assert state["pruner"]["pattern"] == "2:4"
    model3, pruner3, optimizer3 = make(scheme=scheme, seed=123)
    model3.load_state_dict(state["model"])
    optimizer3.load_state_dict(state["opt"])
    pruner3.load_state_dict(state["pruner"])
    train(model3, pruner3, optimizer3, 17, start=13)
    for (n, a), b in zip(model.named_parameters(), model3.parameters()):
        assert torch.equal(a, b), n
    assert all(torch.equal(pruner.masks[n], pruner3.masks[n]) for n in pruner.masks)
    for n in pruner.names:  # and it ended 2:4
        assert (groups(pruner.masks[n], 4).sum(1) == 2).all()


def test_optimizer_aware_re_masking_bit_identical_and_copies_untouched():
    model_a, pruner_a, opt_a = make()
    train(model_a, pruner_a, opt_a, 30, clip=1.0)
    model_b, pruner_b, opt_b = make(optimizer_aware=True)
    calls = []
    original = pruner_b.apply_masks
    pruner_b.apply_masks = lambda: (calls.append(1), original())
    train(model_b, pruner_b, opt_b, 30, clip=1.0)
    assert len(calls) == 6
    for (n, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), n
    keys = list(Net().state_dict())
    assert list(model_b.state_dict()) == keys
    for clone in (copy.deepcopy(model_b), pickle.loads(pickle.dumps(model_b))):
        assert all(torch.equal(p, q) for p, q in zip(clone.parameters(), model_b.parameters()))


def test_checkpoints_of_another_pattern_are_refused_and_old_ones_are_unstructured():
    model, pruner, optimizer = make()
    train(model, pruner, optimizer, 5)
    other = Pruner(model, GradualSchedule(0.5, 0.0, 2, 22, 4), pruner.names)  # same tensors, unstructured
    with pytest.raises(ValueError, match="pattern 2:4 over 6 tensors; this pruner is 'uniform', unstructured"):
        other.load_state_dict(pruner.state_dict())
    old = other.state_dict()
    del old["pattern"]  # written before N:M existed
    other.load_state_dict(old)
    with pytest.raises(ValueError, match="pattern unstructured"):
        pruner.load_state_dict(old)


# -- the config and prune-run ------------------------------------------------------------------
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


@pytest.mark.parametrize("overrides, sparsity", [
    (["pruning.pattern=2:4"], 0.5),  # the pattern alone sets the sparsity
    (["pruning.pattern=2:4", "sparsity=0.5"], 0.5),
    (["pruning.pattern=1:4", "pruning=oneshot"], 0.75),
    (["pruning.pattern=4:8", "pruning.scheme=layerwise_constant"], 0.5),
    (["pruning.pattern=1:3", "sparsity=0.6666667"], 1 - 1 / 3),  # as typed, within 1e-6
    (["sparsity=0.5"], 0.5),
])
def test_config_accepts_and_resolves(compose, overrides, sparsity):
    from prune_cli.config import effective_sparsity
    from prune_cli.checks import validate
    cfg = compose(overrides)
    validate(cfg)
    assert effective_sparsity(cfg) == sparsity


@pytest.mark.parametrize("overrides, message", [
    (["pruning.pattern=2:4", "sparsity=0.7"],
     "sparsity=0.7 contradicts pruning.pattern=2:4 (2 of every 4 weights kept: sparsity 0.5); use sparsity=0.5 or leave sparsity out"),
    (["pruning.pattern=2:4", "pruning.scheme=global"], "pruning.scheme=global with pruning.pattern=2:4"),
    (["pruning.pattern=1:4", "pruning=none"], "pruning=none with pruning.pattern=1:4"),
    (["pruning.pattern=4:4"], "pruning.pattern=4:4 is neither unstructured nor N:M with 0 < N < M, e.g. 2:4"),
    (["pruning.pattern=dense"], "pruning.pattern=dense is neither"),
    (["pruning.pattern=2:4", "pruning.initial_sparsity=0.6"], "pruning.initial_sparsity=0.6 > sparsity=0.5"),
])
def test_config_refuses_in_one_line(compose, overrides, message):
    from prune_cli.config import ConfigError
    from prune_cli.checks import validate
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_prune_run_with_2_4_end_to_end(tmp_path):
    import json

    from test_run_e2e import TINY, prune_run, run_dir
    root = tmp_path / "data"
    (root / "ptb").mkdir(parents=True)
    words = [f"w{i}" for i in range(30)]
    for split, lines in (("train", 80), ("valid", 10), ("test", 10)):
        text = "\n".join(" ".join(words[(i * 7 + j) % 30] for j in range(8)) for i in range(lines))
        (root / "ptb" / f"ptb.{split}.txt").write_text(text + "\n")
    out = prune_run(TINY + ["pruning.pattern=2:4", "trainer.epochs=1", "pruning.frequency=1"], root, tmp_path)
    assert out.returncode == 0, out.stderr
    d = run_dir(tmp_path)
    s = json.loads((d / "summary.json").read_text())
    assert s["pattern"] == "2:4" and s["target_sparsity"] == 0.5 and s["achieved_sparsity"] == 0.5
    assert "left dense" not in (d / "run.log").read_text()  # hidden 16: every pruned matrix has 16 columns
    state = torch.load(d / "checkpoint.pt", weights_only=False)
    assert state["config"]["sparsity"] == 0.5 and state["pruner"]["pattern"] == "2:4"
    for name, mask in state["pruner"]["masks"].items():
        assert (groups(mask, 4).sum(1) == 2).all(), name
        w = state["model"][name]
        assert (groups(w != 0, 4).sum(1) <= 2).all() and torch.equal(w * mask, w)

    odd = prune_run(TINY + ["pruning.pattern=2:4", "model.hidden=18", "trainer.max_steps=2"], root, tmp_path / "odd")
    assert odd.returncode == 2
    errors = [ln for ln in odd.stderr.splitlines() if "error" in ln]  # (the other lines: "not the standard PTB file")
    assert len(errors) == 1 and errors[0].startswith("prune-run: error: pattern 2:4: no selected tensor has "
                                                     "dimension 1 a multiple of 4 (embedding.weight"), odd.stderr
    assert not (tmp_path / "odd" / "runs").exists()
