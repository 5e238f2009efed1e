"""Tests for medrec_bench.metrics: hand-computed values and agreement with scikit-learn."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pytest

from medrec_bench.metrics import METRICS, ddi_rate, multilabel_scores, per_sample_ddi

sk = pytest.importorskip("sklearn.metrics")


def _one(y_true, y_prob, threshold=0.5):
    out = multilabel_scores(np.array(y_true, dtype=bool), np.array(y_prob, dtype=float), threshold)
    assert all(v.dtype == np.float64 and v.shape == (len(y_true),) for v in out.values())
    return {k: float(v[0]) for k, v in out.items()}


def test_keys():
    out = multilabel_scores(np.zeros((3, 4), dtype=bool), np.zeros((3, 4)))
    assert set(out) == {"jaccard", "precision", "recall", "f1", "prauc", "n_drugs"}


def test_hand_computed_example():
    # P = {0, 2}, G = {0, 1}; ranking 0(T) 2(F) 1(T) 3(F) -> AP = (1/1 + 2/3) / 2
    s = _one([[1, 1, 0, 0]], [[0.9, 0.2, 0.6, 0.1]])
    assert s["jaccard"] == pytest.approx(1 / 3)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)
    assert s["n_drugs"] == 2
    assert s["prauc"] == pytest.approx(5 / 6)


def test_prauc_ties_grouped_like_sklearn():
    # ranking: 2(F) @0.9, then tie {0(T), 1(F)} @0.5, then 3(T) @0.1
    # groups: after tie tp=1 of 3 -> P=1/3, R=1/2; end tp=2 of 4 -> P=1/2, R=1 -> AP = 1/2*1/3 + 1/2*1/2 = 5/12
    # (ranking the tied positive before the negative would give (1/2 + 2/4) / 2 = 1/2 instead)
    s = _one([[1, 0, 0, 1]], [[0.5, 0.5, 0.9, 0.1]])
    assert s["prauc"] == pytest.approx(5 / 12)
    # same with the positive index after the negative one: tie handling must not depend on column order
    s2 = _one([[0, 1, 0, 1]], [[0.5, 0.5, 0.9, 0.1]])
    assert s2["prauc"] == pytest.approx(5 / 12)
    # all scores tied: one threshold, AP = prevalence
    assert _one([[1, 0, 0, 0]], [[0.3, 0.3, 0.3, 0.3]])["prauc"] == pytest.approx(0.25)


def test_empty_prediction_row():
    s = _one([[1, 0, 1]], [[0.1, 0.2, 0.3]])
    assert s["jaccard"] == 0 and s["precision"] == 0 and s["recall"] == 0 and s["f1"] == 0
    assert s["n_drugs"] == 0
    assert s["prauc"] == pytest.approx(5 / 6)  # 2(T) 1(F) 0(T) -> (1 + 2/3) / 2


def test_all_positive_row():
    s = _one([[1, 1, 1, 1]], [[0.9, 0.1, 0.6, 0.2]])
    assert s["prauc"] == pytest.approx(1.0)
    assert s["precision"] == 1.0
    assert s["recall"] == pytest.approx(0.5)
    assert s["jaccard"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 / 3)


def test_row_without_positives_matches_installed_sklearn():
    y_prob = [0.9, 0.1, 0.6]
    s = _one([[0, 0, 0]], [y_prob])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sk.average_precision_score([0, 0, 0], y_prob)
    assert s["prauc"] == ref == 0.0
    assert s["jaccard"] == 0 and s["precision"] == 0 and s["recall"] == 0 and s["f1"] == 0
    assert s["n_drugs"] == 2


def test_nothing_true_nothing_predicted():
    s = _one([[0, 0]], [[0.1, 0.2]])
    assert s == {"jaccard": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "prauc": 0.0, "n_drugs": 0.0}


def test_threshold_is_inclusive():
    s = _one([[1, 0]], [[0.5, 0.49]], threshold=0.5)
    assert s["n_drugs"] == 1 and s["jaccard"] == 1.0


def test_matches_sklearn_per_row_with_ties():
    rng = np.random.default_rng(7)
    n, m = 120, 23
    y_true = rng.random((n, m)) < rng.uniform(0.02, 0.6, size=(n, 1))
    y_true[0] = False
    y_true[1] = True
    y_prob = np.round(rng.random((n, m)) * 0.7 + 0.3 * y_true, 1)  # many ties
    y_prob[2] = 0.5  # fully tied row
    y_prob[3] = 0.0  # nothing predicted
    out = multilabel_scores(y_true, y_prob, threshold=0.5)
    y_pred = y_prob >= 0.5
    ref = {k: np.empty(n) for k in ("jaccard", "precision", "recall", "f1", "prauc")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            ref["prauc"][i] = sk.average_precision_score(y_true[i], y_prob[i])
            ref["jaccard"][i] = sk.jaccard_score(y_true[i], y_pred[i], zero_division=0)
            ref["precision"][i] = sk.precision_score(y_true[i], y_pred[i], zero_division=0)
            ref["recall"][i] = sk.recall_score(y_true[i], y_pred[i], zero_division=0)
            ref["f1"][i] = sk.f1_score(y_true[i], y_pred[i], zero_division=0)
    for k, v in ref.items():
        assert np.abs(out[k] - v).max() <= 1e-9, k
    np.testing.assert_array_equal(out["n_drugs"], y_pred.sum(1))


def test_float32_and_int_inputs():
    rng = np.random.default_rng(1)
    y_true = (rng.random((20, 9)) < 0.3).astype(np.int64)
    y_prob = np.round(rng.random((20, 9)), 1).astype(np.float32)
    a = multilabel_scores(y_true, y_prob)
    b = multilabel_scores(y_true.astype(bool), y_prob.astype(np.float64))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12)


def test_input_validation():
    with pytest.raises(ValueError, match=r"y_prob shape \(2, 3\) does not match y_true shape \(2, 4\)"):
        multilabel_scores(np.zeros((2, 4), dtype=bool), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0/1"):
        multilabel_scores(np.full((2, 2), 2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        multilabel_scores(np.zeros(4, dtype=bool), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        multilabel_scores(np.zeros((1, 2), dtype=bool), np.array([[np.nan, 0.1]]))


# ----------------------------------------------------------------------------------------------------------- DDI


def _ddi4():
    a = np.zeros((4, 4), dtype=bool)
    a[0, 1] = a[1, 0] = True
    a[1, 2] = a[2, 1] = True
    np.fill_diagonal(a, True)  # must be ignored
    return a


def test_ddi_hand_computed():
    y = np.array([[1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1]], dtype=bool)
    inter, total = per_sample_ddi(y, _ddi4())
    np.testing.assert_array_equal(inter, [2, 0, 0])  # row 0: pairs (0,1) yes, (0,2) no, (1,2) yes
    np.testing.assert_array_equal(total, [3, 0, 1])
    assert ddi_rate(y, _ddi4()) == pytest.approx(2 / 4)


def test_ddi_zero_pairs():
    y = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    assert ddi_rate(y, _ddi4()) == 0.0
    assert ddi_rate(np.zeros((0, 4), dtype=bool), _ddi4()) == 0.0


def test_ddi_one_directional_marks_count():
    a = np.zeros((3, 3), dtype=bool)
    a[2, 0] = True  # only one direction marked: the pair still interacts (as in SafeDrug's ddi_rate_score)
    assert ddi_rate(np.array([[1, 0, 1]], dtype=bool), a) == 1.0


def test_ddi_matches_loop():
    rng = np.random.default_rng(3)
    m = 15
    a = rng.random((m, m)) < 0.2
    a = a | a.T
    y = rng.random((60, m)) < 0.3
    inter, total = per_sample_ddi(y, a)
    for i in range(len(y)):
        pairs = list(combinations(np.flatnonzero(y[i]), 2))
        assert total[i] == len(pairs)
        assert inter[i] == sum(bool(a[p, q]) for p, q in pairs)
    assert ddi_rate(y, a) == pytest.approx(inter.sum() / total.sum())


def test_ddi_shape_validation():
    with pytest.raises(ValueError, match=r"ddi shape \(3, 3\).*\(4, 4\)"):
        ddi_rate(np.zeros((1, 4), dtype=bool), np.zeros((3, 3), dtype=bool))


def test_metric_table():
    assert METRICS["jaccard"].higher_is_better is True
    assert METRICS["prauc"].higher_is_better is True
    assert METRICS["ddi_rate"].higher_is_better is False
    assert METRICS["n_drugs"].higher_is_better is None
    assert all(info.name == name and info.description for name, info in METRICS.items())
