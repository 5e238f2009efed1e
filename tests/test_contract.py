"""The one contract every registered model honours, on a small synthetic cohort generated here (no ../shared):
fit -> predict_proba -> save -> load -> same predictions; unknown parameters are errors naming them; an empty
request gives an empty [0, |M|] answer; predictions do not depend on what else is in the batch; the same seed gives
the same predictions. Every fit gets its own work folder; a model's registry ``requires`` are fitted first (with their
own ``test_params``) and handed over in ``ctx.artifacts``."""

import numpy as np
import pytest

from medrec_bench.data import load_cohort
from medrec_bench.models import Context
from medrec_bench.registry import RegistryError, default_registry
from medrec_bench.tasks import make_splits

ENTRIES = list(default_registry())
IDS = [e.name for e in ENTRIES]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return load_cohort("synthetic", patients=160, seed=5, cache=tmp_path_factory.mktemp("contract-cache"))


@pytest.fixture(scope="module")
def splits(cohort):
    return make_splits(cohort, "visit", seed=0)


_REQUIRED: dict = {}  # (name, seed) -> a fitted required model, shared by the models that need it


def _required_artifacts(entry, splits, cohort, work, seed):
    """``ctx.artifacts`` for ``entry``: each model of its registry ``requires`` fitted first with its own
    ``test_params`` (once per seed in this module)."""
    artifacts = {}
    for name in entry.requires:
        if (name, seed) not in _REQUIRED:
            _REQUIRED[name, seed] = _fit(ENTRIES[IDS.index(name)], splits, cohort, work.parent / f"{name}-{seed}",
                                         seed)[0]
        artifacts[name] = {"model": _REQUIRED[name, seed], "dir": None}
    return artifacts


def _fit(entry, splits, cohort, work, seed=0):
    model = entry.create(entry.load_class().test_params)
    ctx = Context.from_cohort(cohort, seed=seed, work_dir=work,
                              artifacts=_required_artifacts(entry, splits, cohort, work, seed))
    return model.fit(list(splits.train), list(splits.val), ctx), ctx


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_contract(entry, splits, cohort, tmp_path):
    model, ctx = _fit(entry, splits, cohort, tmp_path / "work")
    test = list(splits.test)
    probs = model.predict_proba(test)
    assert probs.shape == (len(test), len(cohort.vocab.drugs))
    assert probs.dtype == np.float32
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert 0 < model.default_threshold < 1

    empty = model.predict_proba([])
    assert empty.shape == (0, len(cohort.vocab.drugs)) and empty.dtype == np.float32

    # the same sample alone and inside a batch of others (in another order) gets the same probabilities
    picked = [0, len(test) // 2, len(test) - 1]
    for i in picked:
        np.testing.assert_allclose(model.predict_proba([test[i]])[0], probs[i], atol=1e-5, rtol=0)
    shuffled = list(reversed(test))
    np.testing.assert_allclose(model.predict_proba(shuffled)[::-1], probs, atol=1e-5, rtol=0)

    model.save(tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.pkl")) and not list((tmp_path / "saved").glob("*.pt"))
    again = type(model).load(tmp_path / "saved", ctx)
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.predict_proba(test), probs)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_unknown_parameter_is_an_error_naming_it(entry):
    with pytest.raises(RegistryError, match="no_such_parameter"):
        entry.create({"no_such_parameter": 1})


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_same_seed_same_predictions(entry, splits, cohort, tmp_path):
    a, _ = _fit(entry, splits, cohort, tmp_path / "work-a", seed=7)
    b, _ = _fit(entry, splits, cohort, tmp_path / "work-b", seed=7)
    test = list(splits.test)
    np.testing.assert_array_equal(a.predict_proba(test), b.predict_proba(test))
