"""The shared training loop (medrec_bench.models.TorchRecommender): early stopping without a validation set."""

from __future__ import annotations

import pytest
from torch import nn

from baselines.bag_models import Logistic
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits


class OffsetLoss(Logistic):
    """Logistic regression whose training loss is BCE + 5: always above 1, still falling while it learns."""

    def loss(self, batch, target, epoch):
        return nn.functional.binary_cross_entropy_with_logits(self.forward(batch), target) + 5.0


@pytest.fixture(scope="module")
def train(demo_cohort):
    return list(make_splits(demo_cohort, "visit", seed=0).train)


def test_without_validation_a_loss_above_one_keeps_improving(demo_cohort, train):
    """No validation set: an epoch is scored by -loss; with a loss above 1 the first epoch must still count as an
    improvement (the loop used to start from best = -1, so training stopped after ``patience`` epochs)."""
    model = OffsetLoss(epochs=6, patience=1, lr=1e-2, batch_size=16)
    model.fit(train, [], Context.from_cohort(demo_cohort, seed=0))
    losses = [r["loss"] for r in model.history]
    assert min(losses) > 5.0
    assert len(model.history) == 6 and losses == sorted(losses, reverse=True)

