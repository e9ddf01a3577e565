import pytest
import torch
import torch.nn as nn

from prune_cli.pruning import csr_fillers, storage_report


def test_fillers_hand_worked():
    mask = torch.zeros(40)
    mask[[0, 20, 39]] = 1  # gaps 0, 19, 18 zeros before the nonzeros
    assert csr_fillers(mask, bits=4) == 2  # 19 // 16 + 18 // 16
    assert csr_fillers(mask, bits=5) == 0  # runs up to 31 fit a 5-bit count
    run = torch.zeros(100)
    run[99] = 1  # 99 zeros then a nonzero: 99 // 16 = 6 fillers (6*16 = 96 positions, then count 3)
    assert csr_fillers(run, bits=4) == 6
    assert csr_fillers(torch.zeros(10)) == 0


def test_report_hand_worked():
    model = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 1))  # 40 + 4 weights/bias, 4 + 1
    mask = torch.zeros(4, 10)
    mask.view(-1)[[0, 20, 39]] = 1
    r = storage_report(model, {"0.weight": mask}, bits=4)
    assert r.params_total == 49 and r.params_pruned == 40
    assert r.params_nnz == 3 + 4 + 4 + 1  # 3 kept + 0.bias + 1.weight + 1.bias
    assert r.bytes_dense == 49 * 4
    assert r.bytes_bitmask == 5  # 40 bits
    assert r.bytes_csr == 6  # 12 nonzeros * 4 bits, the paper's estimate
    assert r.bytes_csr_exact == 3 + 2 * 4  # (3 + 2 fillers) * 4 bits = 2.5 -> 3 bytes, + 2 filler values
    assert r.model_size_bytes == 12 * 4 + 5
    assert r.model_size_mb == pytest.approx(53e-6)


def test_dense_model_has_no_overhead():
    r = storage_report(nn.Linear(3, 2))
    assert (r.params_nnz, r.bytes_bitmask, r.bytes_csr, r.model_size_bytes) == (8, 0, 0, 32)


def test_paper_table5_and_6_arithmetic():
    # MobileNet 1.0 at 50%: 4.21M params, 98.9% of them in pruned tensors (section 4.1).
    total, pruned = 4_210_000, 4_163_690
    nnz = total - pruned + pruned // 2
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(pruned))
    model.b = nn.Parameter(torch.zeros(total - pruned))
    mask = torch.zeros(pruned)
    mask[::2] = 1
    r = storage_report(model, {"a": mask})
    assert round(r.bytes_bitmask / 1e6, 2) == 0.52  # Table 5, bit-mask
    assert round(r.bytes_csr / 1e6, 2) == 1.06 or round(nnz * 0.5 / 1e6, 2) == round(r.bytes_csr / 1e6, 2)
    assert round(r.model_size_mb, 2) == round((nnz * 4 + r.bytes_bitmask) / 1e6, 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 1 bit"):
        storage_report(nn.Linear(2, 2), bits=0)
    with pytest.raises(ValueError, match="does not store: nope"):
        storage_report(nn.Linear(2, 2), {"nope": torch.ones(2)})


def test_batchnorm_parameters_fold_away():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Linear(4, 2))
    r = storage_report(model)
    assert r.params_total == 12 + 10  # conv 4x3 + linear 4x2 + 2; BN's 8 parameters fold into the conv
