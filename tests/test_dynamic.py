"""Dynamic sparse training (RigL, SET) through the one Pruner: exact drop/grow counts, constant NNZ,
regrown weights at zero, ERK allocation, SET blind to gradients, bit-identical resume, bad input."""
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from prune_cli.pruning import (DynamicRule, GradualSchedule, LayerStats, Pruner, check_dynamic, dynamic_rule,
                               erk_counts, keep_count, uniform_counts)

CONF = Path(__file__).resolve().parents[1] / "conf" / "pruning"


class Net(nn.Module):
    """A convolution, a gate-packed LSTM, an embedding and a linear layer: every kind the core prunes."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.conv = nn.Conv2d(2, 6, 3)
        self.lstm = nn.LSTM(8, 5, batch_first=True)
        self.fc = nn.Linear(5 + 6, 4)

    def forward(self, tokens, image):
        seq, _ = self.lstm(self.emb(tokens))
        return self.fc(torch.cat([seq[:, -1], self.conv(image).mean(dim=(2, 3))], dim=1))


PARAMS = ["emb.weight", "conv.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"]


def batch(step):
    g = torch.Generator().manual_seed(500 + step)
    return (torch.randint(0, 30, (6, 4), generator=g), torch.randn(6, 2, 5, 5, generator=g),
            torch.randint(0, 4, (6,), generator=g))


def make(grow="gradient", opt="sgd", seed=0, sparsity=0.7, total=60, every=5, alpha=0.5, end=0.8, distribution="uniform",
         rule_seed=0):
    torch.manual_seed(seed)
    model = Net()
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3) if opt == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=0.02))
    rule = DynamicRule(sparsity, total, update_every=every, drop_fraction=alpha, end_fraction=end,
                       distribution=distribution, grow=grow, seed=rule_seed)
    return model, Pruner(model, rule.schedule, PARAMS, optimizer=optimizer, seed=rule_seed, rule=rule), optimizer


def fit(model, pruner, optimizer, start, stop, on_update=None, before_update=None, before_masking=None):
    """prune_cli/train/loop.py's calls, in its order: step(0) on a fresh run, then per batch forward,
    backward, mask_gradients, optimizer step, step += 1, step(step)."""
    if start == 0 and pruner.step(0) and on_update:
        on_update(0)
    step = start
    while step < stop:
        tokens, image, target = batch(step)
        loss = nn.functional.cross_entropy(model(tokens, image), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_masking:
            before_masking(step + 1)
        pruner.mask_gradients()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        step += 1
        if before_update and pruner.is_update_step(step):
            before_update(step)
        if pruner.step(step) and on_update:
            on_update(step)


def masks_of(pruner):
    return {n: m.clone() for n, m in pruner.masks.items()}


# -- when and how much -------------------------------------------------------------------------
def test_update_steps_fraction_and_dense_gradient_steps():
    rigl = DynamicRule(0.9, 1000, update_every=100, drop_fraction=0.3, end_fraction=0.75)
    assert rigl.end_step == 750
    assert rigl.update_steps(1000) == [100, 200, 300, 400, 500, 600, 700]
    assert rigl.dense_gradient_steps(1000) == [100, 200, 300, 400, 500, 600, 700]
    assert rigl.update_steps(350) == [100, 200, 300]
    assert [rigl.is_update_step(t) for t in (0, 1, 100, 150, 700, 750, 800)] == [1, 0, 1, 0, 1, 0, 0]
    assert rigl.fraction_at(100) == 0.3 / 2 * (1 + math.cos(math.pi * 100 / 750))
    assert rigl.fraction_at(375) == pytest.approx(0.15)
    # 0.15 * (1 + cos(2π/15)) = 0.15 * 1.91355 = 0.28703
    assert rigl.moved(100, 1000, 10000) == math.floor(0.3 / 2 * (1 + math.cos(math.pi * 100 / 750)) * 1000) == 287
    assert rigl.moved(100, 1000, 1100) == 100  # capped at the inactive weights: dropped and regrown are disjoint
    assert DynamicRule(0.9, 1000, grow="random").dense_gradient_steps(1000) == []
    assert DynamicRule(0.5, 10, update_every=100).update_steps(10) == []  # T_end before the first update: static


# -- the anchors ------------------------------------------------------------------------------
@pytest.mark.parametrize("grow", ["gradient", "random"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_exact_counts_constant_nnz_smallest_dropped_and_regrown_at_zero(grow, opt, distribution):
    model, pruner, optimizer = make(grow=grow, opt=opt, distribution=distribution)
    rule = pruner.rule
    named = dict(model.named_parameters())
    counts = dict(rule.counts)
    before, grads, updates = {}, {}, []

    def before_masking(step):  # the dense gradient RigL ranks by: as it stands before masking
        if rule.is_move_step(step):
            grads[step] = {n: named[n].grad.clone() for n in PARAMS}

    def before_update(step):
        before[step] = (masks_of(pruner), {n: named[n].detach().clone() for n in PARAMS})
        for n in pruner.masks:  # poison: the Pruner itself must zero regrown weights and their state
            state = optimizer.state.get(named[n], {})
            inactive = pruner.masks[n] == 0
            for value in state.values():
                if torch.is_tensor(value) and value.shape == named[n].shape:
                    value[inactive] = 7.0
            named[n].data[inactive] = 3.0

    def on_update(step):
        updates.append(step)
        stats = {s.name: s for s in pruner.stats()}
        for n in PARAMS:
            assert stats[n].nnz == counts[n], (step, n)  # NNZ per tensor never changes
        if step == 0:
            assert all(s.dropped == s.regrown == 0 for s in stats.values())
            for n, m in pruner.masks.items():
                assert int(m.count_nonzero()) == counts[n] and torch.all(named[n][m == 0] == 0)
            return
        old_masks, old_weights = before[step]
        for n, new in pruner.masks.items():
            old, w, p = old_masks[n].bool(), old_weights[n], named[n]
            k = min(math.floor(rule.drop_fraction / 2 * (1 + math.cos(math.pi * step / rule.end_step)) * counts[n]),
                    p.numel() - counts[n])
            dropped, grown = old & ~new.bool(), new.bool() & ~old
            assert stats[n].dropped == stats[n].regrown == int(dropped.sum()) == int(grown.sum()) == k, (step, n)
            if k:
                kept = old & new.bool()
                assert w[dropped].abs().max() <= w[kept].abs().min()  # the smallest magnitudes went
                assert torch.all(p[grown] == 0)  # regrown at exactly zero (they were poisoned to 3.0)
                assert torch.all(p[dropped] == 0) and torch.equal(p[kept], w[kept])
                for value in optimizer.state[p].values():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        assert torch.all(value[grown] == 0) and torch.all(value[dropped] == 0)
                if grow == "gradient":  # regrown where the dense gradient is largest
                    g = grads[step][n].abs()
                    assert g[grown].min() >= torch.cat([g[~old & ~grown], torch.zeros(1)]).max()

    fit(model, pruner, optimizer, 0, 60, on_update, before_update, before_masking)
    assert updates == [0] + rule.update_steps(60) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    assert len(grads) == 9 and rule._grow_keys is None  # the gradients RigL saw were used and let go
    x = batch(99)
    assert torch.isfinite(model(x[0], x[1])).all()


@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_channels_last_and_an_unknown_optimizer(grow):
    """Masks in the weight's layout, keys in its logical order; an optimizer outside ZERO_PRESERVING
    gets its weights re-masked after every step, as with gradual pruning."""
    torch.manual_seed(0)
    model = Net().to(memory_format=torch.channels_last)
    assert not model.conv.weight.is_contiguous()
    optimizer = torch.optim.ASGD(model.parameters(), lr=0.05)
    rule = DynamicRule(0.6, 30, update_every=3, drop_fraction=0.5, end_fraction=1.0, grow=grow)
    pruner = Pruner(model, rule.schedule, PARAMS, optimizer=optimizer, rule=rule)
    moved = []
    fit(model, pruner, optimizer, 0, 30, on_update=lambda step: moved.append(
        {s.name: s.dropped for s in pruner.stats()}))
    assert len(moved) == 10 and moved[1]["conv.weight"] == rule.moved(3, rule.counts["conv.weight"], 108) > 0
    named = dict(model.named_parameters())
    for n, m in pruner.masks.items():
        assert int(m.count_nonzero()) == rule.counts[n] and torch.all(named[n][m == 0] == 0)
    assert pruner.masks["conv.weight"].is_contiguous(memory_format=torch.channels_last)


def test_initial_masks_random_exact_from_the_seed_not_the_training_rng():
    def start(seed, rule_seed):
        model, pruner, optimizer = make(seed=seed, rule_seed=rule_seed)
        pruner.step(0)
        return masks_of(pruner)

    a, b, c = start(0, 0), start(5, 0), start(0, 1)
    assert all(torch.equal(a[n], b[n]) for n in a)  # another weight init (torch.manual_seed), the same masks
    assert any(not torch.equal(a[n], c[n]) for n in a)  # another run seed, other masks
    assert {n: int(m.count_nonzero()) for n, m in a.items()} == uniform_counts(
        {n: p.shape for n, p in Net().named_parameters() if n in PARAMS}, 0.7)


def test_set_regrowth_ignores_gradients_rigl_follows_them():
    def masks_after_update(grow, grad_seed):
        model, pruner, optimizer = make(grow=grow)
        fit(model, pruner, optimizer, 0, 4)
        named = dict(model.named_parameters())
        g = torch.Generator().manual_seed(grad_seed)
        for n in PARAMS:
            named[n].grad = torch.randn(named[n].shape, generator=g)
        pruner.mask_gradients()  # the gradient of step 4 -> 5, an update step
        pruner.step(5)
        return masks_of(pruner)

    set_a, set_b = masks_after_update("random", 1), masks_after_update("random", 2)
    assert all(torch.equal(set_a[n], set_b[n]) for n in set_a)
    rigl_a, rigl_b = masks_after_update("gradient", 1), masks_after_update("gradient", 2)
    assert any(not torch.equal(rigl_a[n], rigl_b[n]) for n in rigl_a)


def test_rigl_grows_the_largest_gradients_hand_worked():
    model = nn.Linear(4, 2, bias=False)  # 8 weights, 4 kept
    rule = DynamicRule(0.5, 100, update_every=10, drop_fraction=1.0, end_fraction=1.0)
    pruner = Pruner(model, rule.schedule, ["weight"], rule=rule)
    pruner.step(0)
    mask = pruner.masks["weight"].bool()
    with torch.no_grad():
        model.weight.copy_(torch.where(mask, torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), torch.zeros(())))
    for step in range(1, 10):
        pruner.step(step)
    grad = torch.tensor([[0.1, -0.9, 0.3, 0.4], [-0.8, 0.2, 0.6, -0.5]])
    model.weight.grad = grad.clone()
    pruner.mask_gradients()
    pruner.step(10)
    k = math.floor(0.5 * (1 + math.cos(math.pi * 10 / 100)) * 4)
    assert k == 3
    active = model.weight.detach().abs()[mask].sort().values  # the 3 smallest of 4 active go
    new = pruner.masks["weight"].bool()
    assert torch.equal(model.weight.detach()[mask & new].abs(), active[3:])
    inactive_by_grad = sorted(((grad.abs()[i, j].item(), (i, j)) for i in range(2) for j in range(4) if not mask[i, j]),
                              reverse=True)
    assert {ij for _, ij in inactive_by_grad[:3]} == {tuple(x) for x in (new & ~mask).nonzero().tolist()}


def test_lstm_gate_packed_weights_are_one_tensor_each():
    model, pruner, _ = make(distribution="erk")
    rule = pruner.rule
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in PARAMS}
    assert shapes["lstm.weight_ih_l0"] == (20, 8) and shapes["lstm.weight_hh_l0"] == (20, 5)
    assert rule.counts == erk_counts(shapes, 0.7)
    assert pruner.target_at(0) == {n: 1 - rule.counts[n] / math.prod(shapes[n]) for n in PARAMS}


# -- ERK ------------------------------------------------------------------------------------------
def test_erk_hand_worked():
    # eps = 40 / (8 + 16): shares 13.33 and 26.67 -> floors 13, 26; the one left to the larger remainder
    assert erk_counts({"a": (4, 4), "b": (8, 8)}, 0.5) == {"a": 13, "b": 27}
    # eps = 52 / 24 makes a's density 2.17: a is kept dense, b takes the rest
    assert erk_counts({"a": (2, 2), "b": (10, 10)}, 0.5) == {"a": 4, "b": 48}
    # a cascade: at eps = 46 / 46 only a exceeds 1; kept dense, it frees budget, eps = 45 / 44 and b exceeds 1 too
    assert erk_counts({"a": (1, 1), "b": (2, 2), "c": (20, 20)}, 1 - 46 / 405) == {"a": 1, "b": 4, "c": 41}
    # a convolution's density counts its kernel: (6 + 3 + 3 + 3) / (6 * 3 * 3 * 3) per unit of eps
    # 61 = round(612 * 0.1) ones; eps = 61 / (15 + 45): shares 15.25 and 45.75
    assert erk_counts({"c": (6, 3, 3, 3), "d": (30, 15)}, 0.9) == {"c": 15, "d": 46}


def _erk_reference(shapes, sparsity):
    """RigL's loop in floats: density eps * (n_in + n_out [+ k_h + k_w]) / (n_in * n_out [* k_h * k_w])."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    target = keep_count(sum(numel.values()), sparsity)
    dense = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        if not rest:  # a sparsity so low that every tensor keeps all its weights
            return {n: 1.0 for n in shapes}, target
        eps = (target - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in rest)
        top = max(raw[n] for n in rest)
        if eps * top <= 1 + 1e-12:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}, target
        dense |= {n for n in rest if raw[n] == top}


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.one_of(st.tuples(st.integers(1, 60), st.integers(1, 60)),
                                 st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(1, 5), st.integers(1, 5))),
                       min_size=1, max_size=6),
       sparsity=st.floats(0.01, 0.99))
def test_erk_matches_the_formula_and_the_total_exactly(shapes, sparsity):
    shapes = {f"t{i}": s for i, s in enumerate(shapes)}
    counts = erk_counts(shapes, sparsity)
    densities, target = _erk_reference(shapes, sparsity)
    assert sum(counts.values()) == target == keep_count(sum(math.prod(s) for s in shapes.values()), sparsity)
    for n, s in shapes.items():
        assert 0 <= counts[n] <= math.prod(s)
        assert abs(counts[n] - densities[n] * math.prod(s)) < 1 + 1e-6, n  # the floor, or one more


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 30), sparsity=st.floats(0.05, 0.95), alpha=st.floats(0.01, 1.0),
       every=st.integers(1, 4), grow=st.sampled_from(["gradient", "random"]),
       distribution=st.sampled_from(["uniform", "erk"]), seed=st.integers(0, 10**6))
def test_property_nnz_constant_counts_exact_any_shape(rows, cols, sparsity, alpha, every, grow, distribution, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(cols, rows), nn.ReLU(), nn.Linear(rows, 3))
    total = 6 * every
    rule = DynamicRule(sparsity, total, update_every=every, drop_fraction=alpha, end_fraction=1.0,
                       distribution=distribution, grow=grow, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = Pruner(model, rule.schedule, ["0.weight", "2.weight"], optimizer=opt, rule=rule)
    numel = {"0.weight": rows * cols, "2.weight": 3 * rows}
    assert sum(rule.counts.values()) == (keep_count(sum(numel.values()), sparsity) if distribution == "erk"
                                         else sum(keep_count(v, sparsity) for v in numel.values()))
    assert all(pruner.kept(numel[n], t) == rule.counts[n] for n, t in pruner.target_at(0).items())  # budget planning
    x = torch.randn(8, cols)
    pruner.step(0)
    for step in range(1, total + 1):
        old = masks_of(pruner)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        pruner.mask_gradients()
        opt.step()
        moved = pruner.step(step)
        for s in pruner.stats():
            assert s.nnz == rule.counts[s.name]
            if moved and s.name in old:
                k = rule.moved(step, s.nnz, s.numel)
                assert (s.dropped, s.regrown) == (k, k)
                assert int((old[s.name].bool() & ~pruner.masks[s.name].bool()).sum()) == k
        for n, p in zip(pruner.names, pruner.params):
            if n in pruner.masks:
                assert torch.all(p[pruner.masks[n] == 0] == 0)


# -- resume ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("grow", ["gradient", "random"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("kill_at", [14, 15, 23])  # before an update (its gradient is the next step's), at one, between
def test_resume_is_bit_identical(grow, opt, kill_at):
    log_a, log_b = [], []

    def logger(pruner, log):
        return lambda step: log.append((step, [(s.name, s.nnz, s.dropped, s.regrown) for s in pruner.stats()]))

    model, pruner, optimizer = make(grow=grow, opt=opt, distribution="erk")
    fit(model, pruner, optimizer, 0, 60, logger(pruner, log_a))

    model2, pruner2, optimizer2 = make(grow=grow, opt=opt, distribution="erk")
    fit(model2, pruner2, optimizer2, 0, kill_at, logger(pruner2, log_b))
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": optimizer2.state_dict(), "pruner": pruner2.state_dict()}, buf)
    del model2, pruner2, optimizer2  # killed
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    model3, pruner3, optimizer3 = make(grow=grow, opt=opt, distribution="erk", seed=123)  # everything from the checkpoint
    model3.load_state_dict(state["model"])
    optimizer3.load_state_dict(state["opt"])
    pruner3.load_state_dict(state["pruner"])
    fit(model3, pruner3, optimizer3, kill_at, 60, logger(pruner3, log_b))
    for (n, a), b in zip(model.named_parameters(), model3.parameters()):
        assert torch.equal(a, b), n
    assert pruner.masks.keys() == pruner3.masks.keys()
    assert all(torch.equal(pruner.masks[n], pruner3.masks[n]) for n in pruner.masks)
    assert log_a == log_b
    assert torch.equal(pruner.rule.generator.get_state(), pruner3.rule.generator.get_state())


def test_load_state_dict_refuses_another_rule_or_gradual():
    _, rigl, _ = make(grow="gradient")
    _, set_, _ = make(grow="random")
    rigl.step(0)
    with pytest.raises(ValueError, match="use the config the checkpoint was made with"):
        set_.load_state_dict(rigl.state_dict())
    model = Net()
    gradual = Pruner(model, GradualSchedule(0.7, 0, 0, 0, 1), PARAMS)
    gradual.step(0)
    with pytest.raises(ValueError, match="pruner state is for gradual pruning, this pruner's is a dynamic rule"):
        rigl.load_state_dict(gradual.state_dict())
    with pytest.raises(ValueError, match="pruner state is for a dynamic rule, this pruner's is gradual pruning"):
        gradual.load_state_dict(rigl.state_dict())


def test_rigl_update_without_a_gradient_is_refused():
    model, pruner, _ = make()
    for step in range(5):
        pruner.step(step)
    with pytest.raises(RuntimeError, match="call Pruner.mask_gradients"):
        pruner.step(5)


def test_gradual_stats_report_no_moves():
    model = Net()
    pruner = Pruner(model, GradualSchedule(0.5, 0, 0, 0, 1), PARAMS)
    pruner.step(0)
    assert all(s.dropped == 0 and s.regrown == 0 for s in pruner.stats())
    assert LayerStats("w", 4, 2, 0.5, 0.5) == LayerStats("w", 4, 2, 0.5, 0.5, 0, 0)
    assert pruner.rule is None and "rule" not in pruner.state_dict()


# -- config and bad input ---------------------------------------------------------------------
def test_config_files_build_the_rules():
    gradual = OmegaConf.load(CONF / "gradual.yaml")
    rigl, set_ = OmegaConf.load(CONF / "rigl.yaml"), OmegaConf.load(CONF / "set.yaml")
    assert set(gradual) <= set(rigl) and set(rigl) == set(set_)  # every key the run reads of a pruning config
    assert dynamic_rule(gradual, 0.9, 1000, 0) is None
    for cfg, grow in ((rigl, "gradient"), (set_, "random")):
        check_dynamic(cfg, 0.9, cfg.pattern, "auto")
        rule = dynamic_rule(cfg, 0.9, 1000, 0)
        assert rule.config() == {"grow": grow, "distribution": "uniform", "sparsity": 0.9, "update_every": 100,
                                 "drop_fraction": 0.3, "end_step": 750}
        # the run's build_schedule reads begin_step/end_step 0: sparsity from step 0, as the rule's schedule
        s = GradualSchedule(0.9, min(cfg.initial_sparsity, 0.9), cfg.begin_step, cfg.end_step, cfg.frequency)
        Pruner(Net(), s, PARAMS, rule=rule)
    check_dynamic(gradual, 0.0, "2:4", "/some/checkpoint.pt")  # not dynamic: not its business


def _rigl(**overrides):
    cfg = OmegaConf.load(CONF / "rigl.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.mark.parametrize("overrides, sparsity, pattern, init_from, fragment", [
    ({}, 0.5, "2:4", "auto", "pruning=rigl with pruning.pattern=2:4: drop and regrow move single weights"),
    ({}, 0.9, "unstructured", "runs/x/y/checkpoint.pt", "pruning=rigl with init_from=runs/x/y/checkpoint.pt"),
    ({"update_every": 0}, 0.9, "unstructured", "none", "pruning.update_every=0 must be a positive integer"),
    ({"update_every": -5}, 0.9, "unstructured", "none", "pruning.update_every=-5 must be a positive integer"),
    ({"update_every": 2.5}, 0.9, "unstructured", "none", "pruning.update_every=2.5 must be a positive integer"),
    ({"drop_fraction": 0.0}, 0.9, "unstructured", "none", "pruning.drop_fraction=0.0 must be a fraction in (0, 1]"),
    ({"drop_fraction": 1.5}, 0.9, "unstructured", "none", "pruning.drop_fraction=1.5 must be a fraction in (0, 1]"),
    ({"end_fraction": 0}, 0.9, "unstructured", "none", "pruning.end_fraction=0 must be a fraction of the run in (0, 1]"),
    ({"distribution": "er"}, 0.9, "unstructured", "none", "unknown pruning.distribution 'er'; valid: uniform, erk"),
    ({"grow": "momentum"}, 0.9, "unstructured", "none",
     "unknown pruning.grow 'momentum'; valid: gradient (RigL), random (SET)"),
    ({}, 0, "unstructured", "none", "pruning=rigl with sparsity=0: dynamic sparse training holds its target sparsity"),
    ({"scheme": "global"}, 0.9, "unstructured", "none", "pruning=rigl with pruning.scheme=global"),
    ({"criterion": "random"}, 0.9, "unstructured", "none", "pruning=rigl with pruning.criterion=random"),
    ({"mask_from": "auto"}, 0.9, "unstructured", "none", "pruning=rigl with pruning.mask_from=auto"),
    ({"end_step": 500}, 0.9, "unstructured", "none", "pruning=rigl with pruning.end_step=500"),
])
def test_bad_input_one_line(overrides, sparsity, pattern, init_from, fragment):
    with pytest.raises(ValueError) as e:
        check_dynamic(_rigl(**overrides), sparsity, pattern, init_from)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(sparsity=0.0), "needs sparsity > 0"),
    (dict(update_every=0), "pruning.update_every=0 must be a positive integer"),
    (dict(drop_fraction=0), "pruning.drop_fraction=0 must be a fraction in (0, 1]"),
    (dict(end_fraction=1.01), "pruning.end_fraction=1.01 must be a fraction in (0, 1]"),
    (dict(distribution="ERK"), "unknown pruning.distribution 'ERK'"),
    (dict(grow="magnitude"), "unknown pruning.grow 'magnitude'"),
])
def test_rule_refuses_bad_settings(kwargs, fragment):
    args = dict(sparsity=0.9, total_steps=100) | kwargs
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        DynamicRule(**args)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(pattern="2:4"), "with pattern 2:4"),
    (dict(scheme="global"), "with scheme global"),
    (dict(criterion="random"), "with criterion random"),
    (dict(schedule=GradualSchedule(0.9, 0.0, 0, 10, 1)), "give the Pruner rule.schedule"),
])
def test_pruner_refuses_a_rule_with_other_mask_choices(kwargs, fragment):
    rule = DynamicRule(0.9, 100)
    model = nn.Sequential(nn.Linear(8, 8))
    schedule = kwargs.pop("schedule", rule.schedule)
    if "pattern" in kwargs:
        schedule = GradualSchedule(0.5, 0.5, 0, 0, 1)
        rule = DynamicRule(0.5, 100)
    with pytest.raises(ValueError, match=fragment):
        Pruner(model, schedule, ["0.weight"], rule=rule, **kwargs)
    Pruner(model, rule.schedule, ["0.weight"], rule=rule)  # the rule was not bound by a refused Pruner
    with pytest.raises(ValueError, match="one rule per Pruner"):
        Pruner(model, rule.schedule, ["0.weight"], rule=rule)
