"""``popular``: every patient gets the training drug frequencies.

The probability of drug ``j`` is the share of training samples whose target contains ``j``; with the default
threshold 0.5 the recommended set is the drugs prescribed in at least half of the training visits
(``--threshold tuned`` picks the cut on validation, i.e. the best K of the K most frequent drugs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medrec_bench.models import Context, Recommender
from medrec_bench.tasks import Sample, targets_matrix


class Popular(Recommender):
    def __init__(self) -> None:
        self.frequencies: np.ndarray | None = None

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "Popular":
        if not train:
            raise ValueError("no training samples")
        self.frequencies = targets_matrix(train, ctx.n_drugs).float().mean(0).numpy()
        return self

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        if self.frequencies is None:
            raise RuntimeError("Popular is not fitted")
        return np.tile(self.frequencies.astype(np.float32), (len(samples), 1))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.frequencies is None:
            raise RuntimeError("Popular is not fitted")
        return {"frequencies": torch.from_numpy(self.frequencies)}

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.frequencies = state["frequencies"].numpy()
