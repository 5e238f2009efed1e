"""The one contract every registered model honours: fit -> predict_proba -> save -> load -> same predictions."""

import numpy as np
import pytest

from medrec_bench.models import Context
from medrec_bench.registry import default_registry
from medrec_bench.tasks import make_splits

ENTRIES = list(default_registry())


@pytest.fixture(scope="module")
def splits(demo_cohort):
    return make_splits(demo_cohort, "visit", seed=0)


def _fit(entry, splits, cohort, tmp_path, seed=0):
    cls = entry.load_class()
    model = entry.create(cls.test_params)
    ctx = Context.from_cohort(cohort, seed=seed, work_dir=tmp_path / "work")
    return model.fit(list(splits.train), list(splits.val), ctx), ctx


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_contract(entry, splits, demo_cohort, tmp_path):
    model, ctx = _fit(entry, splits, demo_cohort, tmp_path)
    test = list(splits.test)
    probs = model.predict_proba(test)
    assert probs.shape == (len(test), len(demo_cohort.vocab.drugs))
    assert probs.dtype == np.float32
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert 0 < model.default_threshold < 1
    model.save(tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.pkl")) and not list((tmp_path / "saved").glob("*.pt"))
    again = type(model).load(tmp_path / "saved", ctx)
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.predict_proba(test), probs)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_same_seed_same_predictions(entry, splits, demo_cohort, tmp_path):
    a, _ = _fit(entry, splits, demo_cohort, tmp_path, seed=7)
    b, _ = _fit(entry, splits, demo_cohort, tmp_path, seed=7)
    test = list(splits.test)
    np.testing.assert_array_equal(a.predict_proba(test), b.predict_proba(test))
