"""Learned floors on a bag of codes (current diagnoses, procedures and the previous visit's drugs, multi-hot):

- ``logistic``: multi-label logistic regression (one linear layer, BCE), trained with the shared torch loop;
- ``mlp``: one hidden layer with ReLU and dropout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from medrec_bench.models import Context, TorchRecommender
from medrec_bench.registry import Range
from medrec_bench.tasks import Sample, bag_of_codes


def _n_features(ctx: Context) -> int:
    return len(ctx.vocab.diagnoses) + len(ctx.vocab.procedures) + len(ctx.vocab.drugs)


class _BagModel(TorchRecommender):
    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> torch.Tensor:
        return bag_of_codes(samples, len(ctx.vocab.diagnoses), len(ctx.vocab.procedures), len(ctx.vocab.drugs))


class Logistic(_BagModel):
    def __init__(self, *, epochs: int = 30, batch_size: int = 64, lr: float = 5e-3, weight_decay: float = 1e-5,
                 patience: int = 5, seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)

    def build(self, ctx: Context) -> nn.Module:
        return nn.Linear(_n_features(ctx), ctx.n_drugs)


class MLP(_BagModel):
    param_ranges: ClassVar[dict[str, Range]] = {"hidden": Range(ge=1), "dropout": Range(ge=0, lt=1)}

    def __init__(self, *, hidden: int = 256, dropout: float = 0.3, epochs: int = 30, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 1e-5, patience: int = 5, seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        self.hidden = hidden
        self.dropout = dropout

    def build(self, ctx: Context) -> nn.Module:
        return nn.Sequential(nn.Linear(_n_features(ctx), self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
                             nn.Linear(self.hidden, ctx.n_drugs))
