"""Exactness of mask selection: exact NNZ, exact top-k with ties by position, masks only shrink."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prune_cli.pruning import global_topk_masks, keep_count, topk_mask


def reference_topk(w: torch.Tensor, k: int) -> torch.Tensor:
    """Stable sort by decreasing magnitude; ties keep the lower flat index."""
    order = torch.argsort(-w.detach().reshape(-1).abs(), stable=True)
    keep = torch.zeros(w.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep.view(w.shape)


def test_keep_count_rounds_half_up():
    assert keep_count(10, 0.9) == 1
    assert keep_count(6, 0.25) == 5  # 4.5 -> 5
    assert keep_count(1000, 0.975) == 25
    assert keep_count(7, 0.0) == 7


def test_hand_worked_ties_broken_by_position():
    w = torch.tensor([3.0, 1.0, -1.0, 1.0, 2.0, 0.0, -1.0])
    assert topk_mask(w, 3).tolist() == [True, True, False, False, True, False, False]
    assert topk_mask(w, 5).tolist() == [True, True, True, True, True, False, False]
    assert topk_mask(w, 0).sum() == 0 and topk_mask(w, 7).all()


def test_pruned_weights_are_never_reselected():
    w = torch.tensor([5.0, 4.0, 3.0, 2.0])
    old = torch.tensor([0.0, 1.0, 1.0, 1.0])  # the largest was pruned earlier (e.g. regrown by an optimizer bug)
    assert topk_mask(w, 2, old).tolist() == [False, True, True, False]
    # Asking for more than are alive keeps only the alive ones: a pruned weight never comes back.
    assert topk_mask(w, 4, old).tolist() == [False, True, True, True]


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, sparsity=st.floats(0.0, 0.999), seed=st.integers(0, 2**31 - 1),
       ties=st.booleans())
def test_topk_matches_reference_exactly(shape, sparsity, seed, ties):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    if ties:  # many exact ties, incl. signed ones and zeros
        w = torch.randint(-3, 4, shape, generator=g).float()
    k = keep_count(w.numel(), sparsity)
    mask = topk_mask(w, k)
    assert int(mask.sum()) == k
    assert torch.equal(mask, reference_topk(w, k))


@settings(max_examples=100, deadline=None)
@given(shapes_=st.lists(shapes, min_size=1, max_size=4), sparsity=st.floats(0.0, 0.999),
       seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_global_matches_reference_exactly(shapes_, sparsity, seed, ties):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randint(-3, 4, s, generator=g).float() if ties else torch.randn(s, generator=g) for s in shapes_]
    total = sum(w.numel() for w in ws)
    k = keep_count(total, sparsity)
    masks = global_topk_masks(ws, k)
    assert sum(int(m.sum()) for m in masks) == k
    flat = reference_topk(torch.cat([w.reshape(-1) for w in ws]), k)
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks]), flat)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, s1=st.floats(0.0, 0.95), ds=st.floats(0.0, 0.5), seed=st.integers(0, 2**31 - 1))
def test_masks_only_shrink_even_when_weights_move(shape, s1, ds, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    s2 = min(s1 + ds, 0.999)
    m1 = topk_mask(w, keep_count(w.numel(), s1)).float()
    w2 = (w + torch.randn(shape, generator=g)) * m1  # training moved the survivors
    w2 = w2 + (1 - m1) * 100.0  # and (adversarially) pruned positions would now be largest
    m2 = topk_mask(w2, keep_count(w.numel(), s2), m1)
    assert not (m2 & (m1 == 0)).any()
    assert int(m2.sum()) == min(keep_count(w.numel(), s2), int(m1.sum()))


def test_large_values_and_extremes_order_exactly():
    w = torch.tensor([1e-38, -3.4e38, 1e-45, 0.0, -0.0, 1.0, float("inf")])
    assert topk_mask(w, 3).tolist() == [False, True, False, False, False, True, True]
    assert topk_mask(w, 5).tolist() == [True, True, True, False, False, True, True]


def test_chunked_global_over_many_elements():
    # Larger than one pass-chunk (4M) to exercise the chunked histogram.
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(3_000_000, generator=g), torch.randn(2_500_000, generator=g)]
    k = keep_count(5_500_000, 0.9)
    masks = global_topk_masks(ws, k)
    assert sum(int(m.sum()) for m in masks) == k
    kept_min = min(float(w[m].abs().min()) for w, m in zip(ws, masks))
    pruned_max = max(float(w[~m].abs().max()) for w, m in zip(ws, masks))
    assert kept_min >= pruned_max
