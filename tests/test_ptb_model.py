"""Zaremba PTB LSTM: exact parameter counts, names, init, shapes, hidden state carry."""
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

import prune_cli.models as models
from prune_cli.models.ptb_lstm import PTBLSTM, param_count

SIZES = {  # hidden, dropout, init_range (Zaremba small / medium / large)
    "small": (200, 0.0, 0.1),
    "medium": (650, 0.5, 0.05),
    "large": (1500, 0.65, 0.04),
}
# 2*V*H (embedding + decoder weight) + V (decoder bias) + 2 layers * (8H^2 + 8H), V = 10,000
EXACT = {"small": 4_653_200, "medium": 19_780_400, "large": 66_034_000}


def mcfg(hidden, dropout=0.0, init_range=0.1, layers=2):
    return OmegaConf.create({"name": "ptb_lstm", "hidden": hidden, "layers": layers,
                             "dropout": dropout, "init_range": init_range})


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_param_counts_exact(size):
    hidden, dropout, init_range = SIZES[size]
    v, h = 10_000, hidden
    assert EXACT[size] == v * h + (4 * h * h * 2 + 4 * h * 2) * 2 + h * v + v
    assert param_count(v, h, 2) == EXACT[size]
    m = models.build(mcfg(hidden, dropout, init_range), {"vocab_size": 10_000})
    assert sum(p.numel() for p in m.parameters()) == EXACT[size]
    assert round(EXACT[size] / 1e6, 1) == {"small": 4.7, "medium": 19.8, "large": 66.0}[size]
    bound = init_range * (1 + 1e-6)  # float32 rounding of the bound
    assert all(p.abs().max().item() <= bound for p in m.parameters())


def test_names_and_structure():
    torch.manual_seed(0)
    m = models.build(mcfg(16, dropout=0.5, init_range=0.05), {"vocab_size": 37})
    names = dict(m.named_parameters())
    assert sorted(names) == sorted([
        "embedding.weight", "decoder.weight", "decoder.bias",
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1",
    ])
    assert isinstance(m.embedding, nn.Embedding) and m.embedding.weight.shape == (37, 16)
    assert isinstance(m.lstm, nn.LSTM) and m.lstm.batch_first and m.lstm.num_layers == 2
    assert m.lstm.dropout == 0.5 and m.drop.p == 0.5
    assert isinstance(m.decoder, nn.Linear) and m.decoder.weight.shape == (37, 16)
    assert m.decoder.weight.data_ptr() != m.embedding.weight.data_ptr()  # not tied
    assert names["lstm.weight_ih_l0"].shape == (64, 16)
    for p in m.parameters():  # all uniform(-r, r), biases included
        assert p.abs().max().item() <= 0.05 * (1 + 1e-6)
        assert p.abs().max().item() > 0.04  # actually spread over the range
    one = models.build(mcfg(8, dropout=0.3, layers=1), {"vocab_size": 5})
    assert one.lstm.dropout == 0.0 and one.drop.p == 0.3  # no inter-layer dropout with 1 layer


def test_registered_and_errors():
    assert "ptb_lstm" in models.names()
    with pytest.raises(ValueError, match="model.hidden"):
        models.build(OmegaConf.create({"name": "ptb_lstm"}), {"vocab_size": 10})


def test_every_family_registers_the_name_it_is_listed_under():
    """models.FAMILIES names the module of each family, imported only on build: each module must
    register exactly the names it is listed under (and a fresh process imports no family early)."""
    import importlib
    import subprocess
    import sys
    for name, module in models.FAMILIES.items():
        importlib.import_module(f"prune_cli.models.{module}")
        assert name in models._BUILDERS, (name, module)
    assert models.names() == sorted(models.FAMILIES)
    with pytest.raises(ValueError, match="unknown model 'resnet'; valid: gnmt, inception_v3, mobilenet, ptb_lstm"):
        models.build(OmegaConf.create({"name": "resnet"}), {})
    code = ("import sys; from prune_cli import config, models; from omegaconf import OmegaConf; "
            "assert 'gnmt' in models.names(); print(sorted(m for m in sys.modules if m.startswith('prune_cli.models.')), "
            "'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[] False", out.stderr


def test_forward_backward_shapes():
    torch.manual_seed(0)
    m = PTBLSTM(vocab=50, hidden=12, layers=2, dropout=0.5, init_range=0.1)
    x = torch.randint(0, 50, (3, 7))
    logits, (h, c) = m(x)
    assert logits.shape == (3, 7, 50)
    assert h.shape == c.shape == (2, 3, 12)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 50), torch.randint(0, 50, (21,)))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
    assert m.embedding.weight.grad.abs().sum() > 0 and m.decoder.weight.grad.abs().sum() > 0


def test_hidden_carried_and_none_is_zeros():
    torch.manual_seed(1)
    m = PTBLSTM(vocab=30, hidden=10, layers=2, dropout=0.5).eval()
    x = torch.randint(0, 30, (2, 9))
    with torch.no_grad():
        full, (hf, cf) = m(x)
        a, hid = m(x[:, :4])
        b, (hb, cb) = m(x[:, 4:], hid)
        z, _ = m(x, m.init_hidden(2))
        fresh, _ = m(x[:, 4:])
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-6, rtol=0)
    torch.testing.assert_close(hb, hf, atol=1e-6, rtol=0)
    torch.testing.assert_close(cb, cf, atol=1e-6, rtol=0)
    assert torch.equal(z, full)
    assert not torch.allclose(fresh, b)  # the carried state matters
    assert m.init_hidden(4)[0].shape == (2, 4, 10)


def test_dropout_train_vs_eval():
    torch.manual_seed(2)
    m = PTBLSTM(vocab=20, hidden=8, dropout=0.5)
    x = torch.randint(0, 20, (2, 5))
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
