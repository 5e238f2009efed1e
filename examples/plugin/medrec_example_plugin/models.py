"""``profile_popular``: drug frequencies among training samples with the same value of one profile field, shrunk
toward the overall frequencies (``prior`` pseudo-samples), so rare profile values fall back to ``popular``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medrec_bench.models import Context, Recommender
from medrec_bench.tasks import Sample, targets_matrix


class ProfilePopular(Recommender):
    def __init__(self, *, field: str = "age_group", prior: float = 5.0) -> None:
        self.field = field
        self.prior = prior
        self.table: np.ndarray | None = None  # [n_values, |M|]

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "ProfilePopular":
        if self.field not in ctx.vocab.profile:
            raise ValueError(f"unknown profile field {self.field!r} (fields: {', '.join(ctx.vocab.profile)})")
        y = targets_matrix(train, ctx.n_drugs).double().numpy()
        values = np.array([s.profile[self.field] for s in train])
        n_values = len(ctx.vocab.profile[self.field])
        sums = np.zeros((n_values, ctx.n_drugs))
        np.add.at(sums, values, y)
        counts = np.bincount(values, minlength=n_values)[:, None]
        overall = y.mean(0, keepdims=True)
        self.table = ((sums + self.prior * overall) / (counts + self.prior)).astype(np.float32)
        return self

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        if self.table is None:
            raise RuntimeError("ProfilePopular is not fitted")
        return self.table[[s.profile[self.field] for s in samples]]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"table": torch.from_numpy(self.table)}

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.table = state["table"].numpy()
