"""The Pruner in a training loop: exact NNZ at every update, no revival, schemes, LSTM, copies, resume."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from prune_cli.pruning import GradualSchedule, Pruner, keep_count


class Net(nn.Module):
    """Every layer type the core must handle."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.conv = nn.Conv2d(1, 4, 3)
        self.lstm = nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(12 + 4, 7)

    def forward(self, tokens, image):
        seq, _ = self.lstm(self.emb(tokens))
        feat = self.conv(image).mean(dim=(2, 3))
        return self.fc(torch.cat([seq[:, -1], feat], dim=1))


PATTERNS = ["emb.weight", "conv.weight", "lstm.weight_*", "fc.weight"]


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 50, (4, 5), generator=g), torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 7, (4,), generator=g)


def train(model, pruner, optimizer, steps, start=0, on_update=None, clip=None):
    for step in range(start, start + steps):
        tokens, image, target = batch(step)
        loss = nn.functional.cross_entropy(model(tokens, image), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        pruner.mask_gradients()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if pruner.step(step) and on_update:
            on_update(step)


def make(seed=0, scheme="uniform", opt="sgd", final=0.8, begin=2, end=22, freq=4):
    torch.manual_seed(seed)
    model = Net()
    sched = GradualSchedule(final, 0.0, begin, end, freq)
    pruner = Pruner(model, sched, PATTERNS, scheme=scheme)
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    elif opt == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-2)
    elif opt == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    else:
        optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    return model, pruner, optimizer


def test_resolves_names_in_model_order():
    model, pruner, _ = make()
    assert pruner.names == ["emb.weight", "conv.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                            "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse", "lstm.weight_ih_l1",
                            "lstm.weight_hh_l1", "lstm.weight_ih_l1_reverse", "lstm.weight_hh_l1_reverse", "fc.weight"]


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_exact_nnz_every_update_and_no_revival(opt):
    model, pruner, optimizer = make(opt=opt)
    named = dict(model.named_parameters())
    seen = []
    previous = {}

    def check(step):
        seen.append(step)
        target = pruner.schedule.sparsity_at(step)
        for s in pruner.stats():
            assert s.nnz == keep_count(s.numel, target), (step, s)
            assert s.target_sparsity == target
            w = named[s.name]
            assert int(w.count_nonzero()) <= s.nnz
            if target == 0.0:  # s_i = 0 at t0: still dense, no mask yet
                assert s.name not in pruner.masks
                continue
            assert torch.all(w[pruner.masks[s.name] == 0] == 0)
            if s.name in previous:  # masks only shrink
                assert not ((pruner.masks[s.name] != 0) & (previous[s.name] == 0)).any()
            previous[s.name] = pruner.masks[s.name].clone()

    # Between updates too: after every optimizer step no pruned weight has come back.
    for step in range(30):
        train(model, pruner, optimizer, 1, start=step, on_update=check, clip=1.0)
        for n, m in pruner.masks.items():
            assert torch.all(named[n][m == 0] == 0), (opt, step, n)
    assert seen == [2, 6, 10, 14, 18, 22]
    assert pruner.sparsity() == pytest.approx(1 - sum(keep_count(p.numel(), 0.8) for p in pruner.params) / sum(p.numel() for p in pruner.params))


def test_gradients_of_pruned_weights_are_zero_before_clipping():
    model, pruner, optimizer = make(begin=0, end=0, freq=1, final=0.5)
    train(model, pruner, optimizer, 1)
    tokens, image, target = batch(99)
    nn.functional.cross_entropy(model(tokens, image), target).backward()
    pruner.mask_gradients()
    for n, p in zip(pruner.names, pruner.params):
        assert torch.all(p.grad[pruner.masks[n] == 0] == 0)


def test_unpruned_parameters_untouched():
    model, pruner, optimizer = make()
    train(model, pruner, optimizer, 25)
    assert int(model.fc.bias.count_nonzero()) == 7
    assert all(n not in pruner.masks for n in ("fc.bias", "lstm.bias_ih_l0"))


def test_global_scheme_total_nnz_exact_and_one_threshold():
    model, pruner, optimizer = make(scheme="global")
    train(model, pruner, optimizer, 25)
    total = sum(p.numel() for p in pruner.params)
    stats = pruner.stats()
    assert sum(s.nnz for s in stats) == keep_count(total, 0.8)
    assert len({round(s.sparsity, 6) for s in stats}) > 1  # each tensor ends at its own sparsity


def test_layerwise_constant_brings_one_layer_at_a_time():
    model, pruner, optimizer = make(scheme="layerwise_constant", begin=0, end=44, freq=11)
    L = len(pruner.names)
    assert pruner.offsets == [j * 11 // L for j in range(L)] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    levels = {}

    def record(step):
        levels[step] = {s.name: s.target_sparsity for s in pruner.stats()}

    train(model, pruner, optimizer, 60, on_update=record)
    # At step 11 + j, layer j (alone) reaches level s(11); layers after it still hold s(0) = 0.
    level = pruner.schedule.sparsity_at(11)
    for j, name in enumerate(pruner.names):
        assert levels[11 + j][name] == level
        assert all(levels[11 + j][n] == level for n in pruner.names[:j + 1])
        assert all(levels[11 + j][n] == 0.0 for n in pruner.names[j + 1:]) or j == L - 1
    for s in pruner.stats():
        assert s.nnz == keep_count(s.numel, 0.8)


def test_lstm_forward_backward_after_pruning_and_flat_weights_kept():
    model, pruner, optimizer = make(begin=0, end=0, freq=1, final=0.9)
    flat_before = [p.data_ptr() for p in model.lstm._flat_weights]
    train(model, pruner, optimizer, 3)
    assert [p.data_ptr() for p in model.lstm._flat_weights] == flat_before
    tokens, image, target = batch(7)
    out = model(tokens, image)
    out.sum().backward()
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    for n in pruner.names:
        if n.startswith("lstm"):
            assert pruner.stats()[pruner.names.index(n)].sparsity == pytest.approx(0.9, abs=0.01)


def test_deepcopy_pickle_state_dict_keys_unchanged():
    model, pruner, optimizer = make()
    keys = list(model.state_dict().keys())
    train(model, pruner, optimizer, 25)
    assert list(model.state_dict().keys()) == keys
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for m in (clone, restored):
        for n, p in m.named_parameters():
            assert torch.equal(p, dict(model.named_parameters())[n])
    buf = io.BytesIO()
    torch.save(pruner.state_dict(), buf)
    buf.seek(0)
    fresh = Pruner(clone, pruner.schedule, PATTERNS)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.masks.keys() == pruner.masks.keys()
    assert all(torch.equal(fresh.masks[n], pruner.masks[n]) for n in pruner.masks)
    assert fresh.targets == pruner.targets


@pytest.mark.parametrize("scheme", ["uniform", "layerwise_constant", "global"])
def test_resume_is_bit_identical(scheme):
    model, pruner, optimizer = make(scheme=scheme)
    train(model, pruner, optimizer, 30)

    model2, pruner2, optimizer2 = make(scheme=scheme)
    train(model2, pruner2, optimizer2, 13)
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": optimizer2.state_dict(), "pruner": pruner2.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf)
    model3, pruner3, optimizer3 = make(seed=123, scheme=scheme)  # different init: everything comes from the checkpoint
    model3.load_state_dict(state["model"])
    optimizer3.load_state_dict(state["opt"])
    pruner3.load_state_dict(state["pruner"])
    train(model3, pruner3, optimizer3, 17, start=13)
    for (n, a), b in zip(model.named_parameters(), model3.parameters()):
        assert torch.equal(a, b), n
    assert all(torch.equal(pruner.masks[n], pruner3.masks[n]) for n in pruner.masks)


def test_load_state_dict_rejects_other_config():
    model, pruner, _ = make()
    other = Pruner(model, pruner.schedule, ["fc.weight"])
    with pytest.raises(ValueError, match="use the config the checkpoint was made with"):
        other.load_state_dict(pruner.state_dict())


@pytest.mark.parametrize("params, scheme, fragment", [
    (["nope.weight"], "uniform", "parameter pattern 'nope.weight' matches nothing"),
    ([], "uniform", "params is empty"),
    (["fc.weight"], "random", "unknown pruning scheme 'random'; use one of uniform, layerwise_constant, global"),
])
def test_bad_pruner_arguments(params, scheme, fragment):
    with pytest.raises(ValueError) as e:
        Pruner(Net(), GradualSchedule(0.5, 0, 0, 10, 1), params, scheme=scheme)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_zero_sparsity_creates_no_masks():
    model, pruner, optimizer = make(final=0.0)
    train(model, pruner, optimizer, 25)
    assert pruner.masks == {} and pruner.sparsity() == 0.0


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), final=st.floats(0.05, 0.99),
       freq=st.integers(1, 5), n=st.integers(0, 5), seed=st.integers(0, 10**6),
       scheme=st.sampled_from(["uniform", "layerwise_constant", "global"]))
def test_property_final_nnz_exact_for_any_shape(rows, cols, final, freq, n, seed, scheme):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(cols, rows), nn.ReLU(), nn.Linear(rows, 3))
    pruner = Pruner(model, GradualSchedule(final, 0.0, 0, n * freq, freq), ["0.weight", "2.weight"], scheme)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, cols)
    for step in range(n * freq + 2 * freq + 1):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        pruner.mask_gradients()
        opt.step()
        pruner.step(step)
    stats = pruner.stats()
    if scheme == "global":
        assert sum(s.nnz for s in stats) == keep_count(sum(s.numel for s in stats), final)
    else:
        assert [s.nnz for s in stats] == [keep_count(s.numel, final) for s in stats]
    for n_, p in zip(pruner.names, pruner.params):
        assert torch.all(p[pruner.masks[n_] == 0] == 0)


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "sgd_plain"])
def test_optimizer_aware_pruner_skips_the_weight_pass_bit_identically(opt):
    def build():
        model, _, _ = make(opt="sgd")
        params = model.parameters()
        optimizer = {
            "sgd": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
            "sgd_plain": lambda: torch.optim.SGD(params, lr=0.5),
            "adam": lambda: torch.optim.Adam(params, lr=0.05, weight_decay=1e-2, amsgrad=True),
            "adamw": lambda: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
            "rmsprop": lambda: torch.optim.RMSprop(params, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
            "adagrad": lambda: torch.optim.Adagrad(params, lr=0.1, initial_accumulator_value=0.1),
        }[opt]()
        return model, optimizer

    model_a, opt_a = build()  # reference: weights re-masked after every step
    pruner_a = Pruner(model_a, GradualSchedule(0.8, 0.0, 2, 22, 4), PATTERNS)
    train(model_a, pruner_a, opt_a, 40, clip=1.0)
    model_b, opt_b = build()  # optimizer-aware: weights re-masked only at the 6 updates
    pruner_b = Pruner(model_b, GradualSchedule(0.8, 0.0, 2, 22, 4), PATTERNS, optimizer=opt_b)
    calls = []
    original = pruner_b.apply_masks
    pruner_b.apply_masks = lambda: (calls.append(1), original())
    train(model_b, pruner_b, opt_b, 40, clip=1.0)
    assert len(calls) == 6
    for (n, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), n
    for n, m in pruner_b.masks.items():
        assert torch.all(dict(model_b.named_parameters())[n][m == 0] == 0)


def test_unknown_optimizer_re_masks_every_step():
    model, _, _ = make()
    optimizer = torch.optim.Rprop(model.parameters(), lr=0.01)
    pruner = Pruner(model, GradualSchedule(0.5, 0.0, 0, 0, 1), PATTERNS, optimizer=optimizer)
    calls = []
    original = pruner.apply_masks
    pruner.apply_masks = lambda: (calls.append(1), original())
    train(model, pruner, optimizer, 5)
    assert len(calls) == 5
