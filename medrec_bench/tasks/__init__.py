"""Tasks: protocols turning a cohort into samples, patient-level splits, and batching for torch models."""

from .batching import VisitBatch, bag_of_codes, collate_visits, multi_hot, pad_sets, targets_matrix
from .protocols import PROTOCOLS, SPLIT_ORDERS, Sample, Splits, make_splits

__all__ = ["PROTOCOLS", "SPLIT_ORDERS", "Sample", "Splits", "VisitBatch", "bag_of_codes", "collate_visits", "make_splits",
           "multi_hot", "pad_sets", "targets_matrix"]
