"""MobileNet v1 and InceptionV3: parameter counts vs the paper, prune patterns, a few steps."""
import fnmatch

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prune_cli import models
from prune_cli.models import inception as inc
from prune_cli.models import mobilenet as mb

# Paper Table 2 (dense NNZ, 1000 classes) and our exact counts (all parameters but BN's).
PAPER_MOBILENET = {1.0: 4.21, 0.75: 2.57, 0.5: 1.32, 0.25: 0.46}  # millions
OURS_MOBILENET = {1.0: 4_210_088, 0.75: 2_569_144, 0.5: 1_320_648, 0.25: 464_600}
OURS_MOBILENET_WITH_BN = {1.0: 4_231_976, 0.75: 2_585_560, 0.5: 1_331_592, 0.25: 470_072}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared CPU, OpenMP threads spinning at barriers make
    these tiny steps 10-100x slower when another process is busy (measured: 0.16 s vs 11 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _build(name, meta, **cfg):
    return models.build(OmegaConf.create({"name": name, **cfg}), meta)


@pytest.mark.parametrize("width", sorted(PAPER_MOBILENET))
def test_mobilenet_param_counts_match_table2(width):
    m = _build("mobilenet", {"num_classes": 1000, "image_size": 224}, width=width)
    assert mb.paper_param_count(m) == OURS_MOBILENET[width] == mb.dense_param_count(width, 1000)
    assert sum(p.numel() for p in m.parameters()) == OURS_MOBILENET_WITH_BN[width]
    # the paper's figure is our count rounded to 0.01M (so 0.25's 464,600 reads +1.0%)
    assert round(OURS_MOBILENET[width] / 1e6, 2) == PAPER_MOBILENET[width]
    assert abs(OURS_MOBILENET[width] / (PAPER_MOBILENET[width] * 1e6) - 1) < 0.0101


def test_mobilenet_shares_match_section_4_1():
    m = mb.MobileNetV1(1.0, 1000)
    named = dict(m.named_parameters())
    total = mb.paper_param_count(m)
    pw = sum(p.numel() for n, p in named.items() if fnmatch.fnmatchcase(n, "blocks.*.pw.weight"))
    fc = named["fc.weight"].numel() + named["fc.bias"].numel()
    unpruned = sum(p.numel() for n, p in named.items() if _matches(n, mb.UNPRUNED_WEIGHT_PATTERNS))
    assert (pw, fc, unpruned) == (3_139_584, 1_025_000, 45_504)
    assert pw + fc + unpruned == total
    assert round(100 * pw / total, 1) == 74.6
    assert round(100 * fc / total, 1) == 24.3
    assert round(100 * unpruned / total, 1) == 1.1


def test_mobilenet_prune_patterns_select_pointwise_and_fc():
    m = mb.MobileNetV1(1.0, 1000)
    names = [n for n, _ in m.named_parameters()]
    pruned = [n for n in names if _matches(n, mb.PRUNE_PATTERNS)]
    assert mb.PRUNE_PATTERNS == ["blocks.*.pw.weight", "fc.weight"]
    assert pruned == [f"blocks.{i}.pw.weight" for i in range(13)] + ["fc.weight"]
    assert sum(dict(m.named_parameters())[n].numel() for n in pruned) == 3_139_584 + 1_024_000
    unpruned_w = [n for n in names if _matches(n, mb.UNPRUNED_WEIGHT_PATTERNS)]
    assert unpruned_w == ["stem.conv.weight"] + [f"blocks.{i}.dw.weight" for i in range(13)]
    # everything else is BN affine params and the fc bias
    rest = set(names) - set(pruned) - set(unpruned_w)
    assert rest == {"fc.bias"} | {n for n in names if "bn." in n or n.startswith("stem.bn")}
    assert len(rest) == 1 + 2 * (1 + 26)


@pytest.mark.parametrize("cfg, side", [({"small_input": False}, 1), ({"small_input": True}, 2),
                                       ({"small_input": True, "stride1_blocks": [1]}, 4)])
def test_mobilenet_small_input_changes_strides_not_params(cfg, side):
    m = _build("mobilenet", {"num_classes": 10, "image_size": 32}, width=0.25, **cfg)
    assert mb.paper_param_count(m) == mb.dense_param_count(0.25, 10)
    m.eval()
    with torch.no_grad():
        feats = m.features(torch.zeros(2, 3, 32, 32))
        assert tuple(feats.shape) == (2, 256, side, side)
        assert tuple(m(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


def test_mobilenet_config_defaults_and_validation():
    m = _build("mobilenet", {"num_classes": 10, "image_size": 32}, width=0.5, num_classes=None)
    assert m.fc.out_features == 10 and m.small_input  # small images -> small_input
    assert m.dropout.p == 0.001
    m = _build("mobilenet", {"num_classes": 1000, "image_size": 224})
    assert not m.small_input and m.width == 1.0 and m.fc.out_features == 1000
    assert m.stem.conv.stride == (2, 2) and m.blocks[1].dw.stride == (2, 2)
    with pytest.raises(ValueError, match="width"):
        mb.MobileNetV1(width=1.5)
    with pytest.raises(ValueError, match="stride1_blocks"):
        mb.MobileNetV1(stride1_blocks=[2])
    assert all(mod.bias is None for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))


def test_mobilenet_trains_on_small_images():
    torch.manual_seed(0)
    m = _build("mobilenet", {"num_classes": 10, "image_size": 32}, width=0.25, dropout=0.0)
    m = m.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 10
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    before = m.blocks[5].pw.weight.detach().clone()
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert not torch.equal(before, m.blocks[5].pw.weight)


# ------------------------------------------------------------------------------ InceptionV3

@pytest.fixture(scope="module")
def inception_1000():
    return _build("inception_v3", {"num_classes": 1000, "image_size": 299})


def test_inception_param_count_matches_table1(inception_1000):
    m = inception_1000
    assert inc.paper_param_count(m) == 27_125_040
    assert round(inc.paper_param_count(m) / 1e6, 1) == 27.1
    assert sum(p.numel() for p in m.parameters()) == 27_161_264
    assert sum(p.numel() for n, p in m.named_parameters()
               if not n.startswith("net.AuxLogits.") and ".bn." not in n) == 23_800_136
    assert m.input_size is None and m.aux_logits and m.net.transform_input is False
    assert list(m.children()) == [m.net]  # the wrapper adds no module / parameter of its own


def test_inception_prune_patterns_select_all_convs(inception_1000):
    m = inception_1000
    named = dict(m.named_parameters())
    pruned = [n for n in named if _matches(n, inc.PRUNE_PATTERNS)]
    convs = [n + ".weight" for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    assert inc.PRUNE_PATTERNS == ["*.conv.weight"]
    assert pruned == convs and len(pruned) == 96
    assert pruned[0] == "net.Conv2d_1a_3x3.conv.weight"
    assert {"net.AuxLogits.conv0.conv.weight", "net.AuxLogits.conv1.conv.weight"} < set(pruned)
    assert sum(named[n].numel() for n in pruned) == 24_307_040
    others = [n for n in named if n not in pruned and ".bn." not in n]
    assert others == ["net.AuxLogits.fc.weight", "net.AuxLogits.fc.bias", "net.fc.weight", "net.fc.bias"]


def test_inception_small_aux_head_is_torchvision_at_17x17():
    from torchvision.models.inception import InceptionAux
    torch.manual_seed(0)
    ours, ref = inc.SmallMapInceptionAux(768, 5), InceptionAux(768, 5)
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 768, 17, 17)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        assert tuple(ours(torch.randn(2, 768, 3, 3)).shape) == (2, 5)


def test_inception_trains_on_32x32_via_resize():
    torch.manual_seed(0)
    m = _build("inception_v3", {"num_classes": 10, "image_size": 32})
    assert m.input_size == 75 and m.net.fc.out_features == 10
    # same network but 10 instead of 1000 outputs in fc (2048 + 1 a class) and aux fc (768 + 1)
    assert inc.paper_param_count(m) == 27_125_040 - (2049 + 769) * 990
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    w = m.net.Mixed_6b.branch7x7_2.conv.weight
    before = w.detach().clone()
    out = m(x)  # one step: InceptionV3 is the slowest model here
    assert isinstance(out, inc.InceptionOutputs)
    assert tuple(out.logits.shape) == tuple(out.aux_logits.shape) == (2, 10)
    loss = F.cross_entropy(out.logits, y) + 0.4 * F.cross_entropy(out.aux_logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, w)
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 10)


def test_inception_config_validation():
    with pytest.raises(ValueError, match="input_size"):
        _build("inception_v3", {"num_classes": 10, "image_size": 32}, input_size=64)
    m = inc.InceptionV3(num_classes=3, aux_logits=False, input_size=80)
    assert m.net.AuxLogits is None and m.net.dropout.p == 0.2
    m.train()
    assert tuple(m(torch.randn(2, 3, 40, 40)).shape) == (2, 3)  # no aux -> plain logits
