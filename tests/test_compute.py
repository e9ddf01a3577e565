"""Compute accounting (issue 17): MACs per layer, dense and masked, against the papers' figures,
torch's FlopCounterMode (convolutions and matrix products; it counts 0 for nn.LSTM on CPU) and
closed forms."""
import functools
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

from prune_cli.models.gnmt import GNMT
from prune_cli.models.mobilenet import MobileNetV1
from prune_cli.models.ptb_lstm import PTBLSTM
from prune_cli.pruning.compute import forward_cost, masked_nnz, steps_macs
from prune_cli.train.plan import costs


def vision(name, size, **model):
    cfg = OmegaConf.create({"model": {"name": name, "task": "classification", "num_classes": 1000, **model},
                            "data": {"batch_size": 1}})
    return costs.run_costs(cfg, {"image_size": size, "num_classes": 1000})


def flop_counter_macs(model, *inputs) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*inputs)
    return fc.get_total_flops() / 2  # it counts FLOPs = 2 x MACs


# ---------------------------------------------------------------- the papers' anchors
@pytest.mark.parametrize("width, millions", [(1.0, 569), (0.75, 325), (0.5, 149), (0.25, 41)])
def test_mobilenet_224_hits_the_papers_mult_adds(width, millions):
    c = vision("mobilenet", 224, width=width)
    assert round(c.infer.dense / 1e6) == millions
    assert c.train.dense == c.infer.dense and c.unit == "image" and c.infer.uncounted == ()


def test_mobilenet_1_0_exact_and_equal_to_flop_counter():
    c = vision("mobilenet", 224, width=1.0)
    assert c.infer.dense == 568_740_352
    model = MobileNetV1(width=1.0, num_classes=1000).eval()
    assert flop_counter_macs(model, torch.zeros(1, 3, 224, 224)) == c.infer.dense


def test_inception_v3_299_is_torchvisions_5_71_g():
    c = vision("inception_v3", 299, aux_logits=True)
    assert round(c.infer.dense / 1e9, 2) == 5.71
    assert c.infer.dense == 5_713_216_096  # torchvision's metadata: 5.713 "GFLOPS" (MACs)
    # the auxiliary classifier runs in training only: 768*128*5*5 + 128*768*5*5 + 768*1000
    assert c.train.dense - c.infer.dense == 768 * 128 * 25 + 128 * 768 * 25 + 768 * 1000


def test_ptb_hidden_48_is_516_864_per_token():
    cfg = OmegaConf.create({"model": {"name": "ptb_lstm", "task": "language_model", "hidden": 48},
                            "data": {"batch_size": 20, "bptt": 20}})
    c = costs.run_costs(cfg, {"vocab_size": 10000})
    assert c.infer.dense == c.train.dense == 2 * 4 * 48 * 2 * 48 + 48 * 10000 == 516_864
    assert c.unit == "token" and c.examples_per_step == 400 and c.train_macs(500) == 3 * 500 * 400 * 516_864


@settings(max_examples=15, deadline=None)
@given(hidden=st.integers(1, 64), vocab=st.integers(2, 500), layers=st.integers(1, 3))
def test_ptb_closed_form(hidden, vocab, layers):
    with torch.device("meta"):
        model = PTBLSTM(vocab, hidden, layers)
    c = forward_cost(model, torch.zeros(3, 2, dtype=torch.long, device="meta"), examples=6)
    assert c.dense == layers * 4 * hidden * 2 * hidden + hidden * vocab
    assert "embedding.weight" not in c.uses and "decoder.bias" not in c.uses


# ---------------------------------------------------------------- cross-checks
@settings(max_examples=6, deadline=None)
@given(width=st.sampled_from([0.25, 0.5, 0.75]), size=st.integers(16, 48), small=st.booleans(),
       classes=st.integers(2, 20))
def test_mobilenet_equals_flop_counter_at_any_width_and_size(width, size, small, classes):
    model = MobileNetV1(width=width, num_classes=classes, small_input=small).eval()
    with torch.device("meta"):
        twin = MobileNetV1(width=width, num_classes=classes, small_input=small).eval()
    walk = forward_cost(twin, torch.zeros(2, 3, size, size, device="meta"), examples=2)
    assert walk.dense == flop_counter_macs(model, torch.zeros(1, 3, size, size))


class Mixed(nn.Module):
    """Every layer type the walk counts, with grouped/strided convolutions and odd shapes."""

    def __init__(self, groups):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, (3, 2), stride=(2, 1), padding=1, groups=groups)
        self.conv1d = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = self.conv(x).mean(dim=3)
        return self.fc(self.conv1d(y).mean(dim=2))


@settings(max_examples=10, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), h=st.integers(3, 12), w=st.integers(2, 9), n=st.integers(1, 3))
def test_convolutions_and_linears_equal_flop_counter(groups, h, w, n):
    model = Mixed(groups)
    walk = forward_cost(model, torch.zeros(n, 4, h, w))  # per batch of n
    assert walk.dense == flop_counter_macs(model, torch.zeros(n, 4, h, w))


def test_gnmt_rule_equals_flop_counter_where_it_counts():
    """FlopCounterMode sees every matrix product of GNMT's forward except the LSTMs (0 on CPU)
    and the score's matrix-vector product v . tanh(...) (it counts no mv): the rule minus
    those is exactly its count, at one sentence pair of S source and T target tokens."""
    torch.manual_seed(0)
    k, S, T = 8, 5, 4
    model = GNMT(vocab=50, units=k, layers=3, dropout=0.0).eval()
    cost = forward_cost(model, S, T, unit="sentence pair")
    lstm = sum(cost.uses[n] * p.numel() for n, p in model.named_parameters()
               if n.startswith(("enc_", "dec_layers")) and ".weight_" in n)
    src, tgt = torch.randint(4, 50, (1, S)), torch.randint(4, 50, (1, T))
    assert flop_counter_macs(model, src, torch.tensor([S]), tgt) == cost.dense - lstm - S * T * k


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 32), vocab=st.integers(2, 300), layers=st.integers(2, 5),
       s=st.floats(1, 60), t=st.floats(1, 60))
def test_gnmt_closed_form(k, vocab, layers, s, t):
    with torch.device("meta"):
        model = GNMT(vocab=vocab, units=k, layers=layers)
    c = forward_cost(model, s, t)
    encoder = 2 * (4 * k * k + 4 * k * k) + (4 * k * 2 * k + 4 * k * k) + (layers - 2) * 8 * k * k + k * k
    decoder = layers * (4 * k * 2 * k + 4 * k * k) + k * k + k * vocab
    assert c.dense == pytest.approx(s * encoder + t * decoder + 2 * k * s * t, rel=1e-12)


# ---------------------------------------------------------------- recurrent layers by hand
def test_recurrent_layers_count_every_weight_matrix_per_time_step():
    with torch.device("meta"):  # (on CPU, oneDNN warns that it has no LSTM with projections)
        lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=2)
        gru = nn.GRU(3, 4)
        cell = nn.LSTMCell(3, 6)
        x, x_seq_first, x_cell = torch.zeros(2, 7, 3), torch.zeros(7, 2, 3), torch.zeros(2, 3)
    for module, example, tokens in ((lstm, (x,), 14), (gru, (x_seq_first,), 14), (cell, (x_cell,), 2)):
        c = forward_cost(module, *example, examples=tokens)
        weights = {n: p.numel() for n, p in module.named_parameters() if n.startswith("weight_")}
        assert c.uses == {n: 1.0 for n in weights} and c.dense == sum(weights.values())
    packed = pack_padded_sequence(torch.zeros(2, 7, 3, device="meta"), torch.tensor([7, 3]), batch_first=True)
    assert forward_cost(lstm, packed, examples=10).dense == sum(
        p.numel() for n, p in lstm.named_parameters() if n.startswith("weight_"))  # 10 real tokens


def test_unknown_layer_types_are_listed_and_norms_are_left_out():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.gain

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), Scale(), nn.BatchNorm1d(4))
            self.emb = nn.Embedding(2, 2)

        def forward(self, x, tokens):
            return self.body(x) + self.emb(tokens).sum()

    c = forward_cost(Net(), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), examples=2)
    assert c.uncounted == ("body.2 (Scale)",) and c.dense == 12


# ---------------------------------------------------------------- masks and steps
@functools.lru_cache(maxsize=1)
def pointwise_case():
    """MobileNet 0.25 on 32x32 images: its cost, parameters, and each pruned tensor's uses counted
    independently (a pointwise convolution's element once per output pixel, the classifier's once)."""
    model = MobileNetV1(width=0.25, num_classes=10, small_input=True).eval()
    with torch.device("meta"):
        twin = MobileNetV1(width=0.25, num_classes=10, small_input=True)
    cost = forward_cost(twin, torch.zeros(2, 3, 32, 32, device="meta"), examples=2)
    pixels = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: pixels.__setitem__(n + ".weight", o.shape[-2] * o.shape[-1]))
             for n, m in model.named_modules() if n.endswith(".pw")]
    model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    pixels["fc.weight"] = 1
    return cost, dict(model.named_parameters()), pixels


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_masks_reduce_macs_by_the_pruned_count_times_uses(data):
    cost, params, pixels = pointwise_case()
    masks = {}
    for name in data.draw(st.sets(st.sampled_from(sorted(pixels)), min_size=1)):
        keep = data.draw(st.floats(0, 1))
        masks[name] = (torch.rand(params[name].shape, generator=torch.Generator().manual_seed(len(name))) < keep).float()
    nnz = masked_nnz(masks)
    assert cost.dense - cost.macs(nnz) == sum((masks[n].numel() - nnz[n]) * pixels[n] for n in masks)


def test_steps_macs_by_hand():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(10, 10, bias=False), nn.Linear(10, 1, bias=False)

        def forward(self, x):
            return self.b(self.a(x))

    cost = forward_cost(Two(), torch.zeros(1, 10))
    assert cost.dense == 110
    # dense for steps 0-1, a at 50 nnz for 2-4, a at 20 and b at 5 for 5-9; the update at step 10 is after the end
    updates = [(2, {"a.weight": 50, "b.weight": 10}), (5, {"a.weight": 20, "b.weight": 5}), (10, {"a.weight": 0})]
    assert steps_macs(cost, updates, 10) == 2 * 110 + 3 * 60 + 5 * 25
    assert steps_macs(cost, [], 7) == 7 * 110
    assert steps_macs(cost, [(0, {"a.weight": 1})], 3) == 3 * 11


def test_counting_uses_no_random_numbers_and_keeps_the_mode():
    cfg = OmegaConf.create({"model": {"name": "mobilenet", "task": "classification", "width": 0.25, "dropout": 0.5},
                            "data": {"batch_size": 1}})
    before = torch.get_rng_state()
    c = costs.run_costs(cfg, {"image_size": 32, "num_classes": 10})
    assert torch.equal(before, torch.get_rng_state()) and math.isfinite(c.infer.dense)


def test_a_model_that_cannot_be_counted_says_why_and_nothing_else(monkeypatch):
    from prune_cli import models

    class NeedsNumbers(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x) * float(x.sum())   # reads a value: impossible on the meta device

    monkeypatch.setitem(models._BUILDERS, "needs_numbers", lambda cfg, meta: NeedsNumbers())
    cfg = OmegaConf.create({"model": {"name": "needs_numbers", "task": "classification"}, "data": {"batch_size": 1}})
    counted, why = costs.counted(cfg, {"image_size": 3})
    assert counted is None and why.startswith("RuntimeError in a meta-device forward of needs_numbers: ")
    cfg = OmegaConf.create({"model": {"name": "needs_numbers", "task": "translation"}, "data": {"batch_size": 1}})
    meta = {"mean_lengths": {"train": [3.0, 4.0], "valid": [2.0, 3.0]}}
    assert costs.counted(cfg, meta) == (None, "translation model needs_numbers has no mac_uses(src_len, tgt_len) rule")
    assert costs.infer_split(meta) == "valid" and costs.infer_split({"mean_lengths": {"test": [1, 2]}}) == "test"


def test_translation_unit_is_the_mean_pair_as_the_model_sees_it():
    from prune_cli.data.translation import Pairs, mean_lengths

    pairs = Pairs.from_lists([[5, 6, 7], [], [8]], [[9], [10, 11], [12, 13, 14, 15]])
    assert mean_lengths(pairs) == [(3 + 1 + 1) / 3, (1 + 2 + 4) / 3 + 1]   # an empty source is one eos
