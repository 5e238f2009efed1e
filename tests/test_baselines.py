"""The simple baselines: exact behaviour of the rule-based ones, and learned ones beating popular."""

import numpy as np
import pytest

from baselines.bag_models import MLP, Logistic
from baselines.last_visit_repeat import LastVisitRepeat
from baselines.popular import Popular
from medrec_bench.metrics import multilabel_scores
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits, targets_matrix


def test_popular_is_training_frequency(demo_cohort):
    s = make_splits(demo_cohort, "visit", 0)
    ctx = Context.from_cohort(demo_cohort)
    model = Popular().fit(list(s.train), [], ctx)
    drug = s.train[0].target[0]
    expected = sum(drug in x.target for x in s.train) / len(s.train)
    assert model.predict_proba(s.test[:2])[1, drug] == pytest.approx(expected)


def test_last_visit_repeat_predicts_previous_drugs(demo_cohort):
    s = make_splits(demo_cohort, "visit", 0)
    ctx = Context.from_cohort(demo_cohort)
    model = LastVisitRepeat().fit(list(s.train), [], ctx)
    popular = Popular().fit(list(s.train), [], ctx)
    samples = list(s.train + s.val + s.test)
    probs = model.predict_proba(samples)
    for sample, p in zip(samples, probs):
        if sample.history:
            assert set(np.flatnonzero(p >= 0.5)) == set(sample.history[-1].drugs)
        else:
            np.testing.assert_array_equal(p, popular.predict_proba([sample])[0])


@pytest.mark.parametrize("cls", [Logistic, MLP])
def test_learned_baselines_beat_popular(cls, synthetic_cohort):
    s = make_splits(synthetic_cohort, "last_visit", 0)
    ctx = Context.from_cohort(synthetic_cohort, seed=0)
    test = list(s.test)
    y = targets_matrix(test, len(synthetic_cohort.vocab.drugs)).numpy()
    pop = multilabel_scores(y, Popular().fit(list(s.train), [], ctx).predict_proba(test))
    model = cls(epochs=15, patience=3).fit(list(s.train), list(s.val), ctx)
    ours = multilabel_scores(y, model.predict_proba(test))
    assert ours["jaccard"].mean() > pop["jaccard"].mean() + 0.02
    assert ours["prauc"].mean() > pop["prauc"].mean() + 0.02
