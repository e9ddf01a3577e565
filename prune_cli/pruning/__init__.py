"""The pruning core shared by every model family and by dense and sparse runs alike."""
from .compute import ForwardCost, forward_cost, masked_nnz, steps_macs
from .dynamic import DISTRIBUTIONS, GROWTH, DynamicRule, check_dynamic, dynamic_rule, erk_counts, is_dynamic, uniform_counts
from .masks import (CRITERIA, SCHEMES, LayerStats, Pruner, global_topk_masks, keep_count, nm_fits, nm_group_top,
                    nm_topk_mask, parse_pattern, pattern_sparsity, random_keys, stream_seed, topk_mask)
from .schedule import ConstantSchedule, GradualSchedule, OneShotSchedule
from .storage import StorageReport, counted_parameters, csr_fillers, storage_report

__all__ = [
    "ConstantSchedule", "GradualSchedule", "OneShotSchedule", "Pruner", "SCHEMES", "CRITERIA", "LayerStats",
    "keep_count", "topk_mask", "global_topk_masks", "StorageReport", "storage_report", "csr_fillers", "counted_parameters",
    "parse_pattern", "pattern_sparsity", "nm_fits", "nm_group_top", "nm_topk_mask", "random_keys", "stream_seed",
    "ForwardCost", "forward_cost", "masked_nnz", "steps_macs",
    "DynamicRule", "dynamic_rule", "check_dynamic", "is_dynamic", "erk_counts", "uniform_counts", "DISTRIBUTIONS", "GROWTH",
]
