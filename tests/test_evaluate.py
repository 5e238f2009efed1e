"""Tests for medrec_bench.evaluate: groups, averaging, bootstrap / rounds, paired p-values, threshold tuning."""

from __future__ import annotations

import numpy as np
import pytest

from medrec_bench.evaluate import (
    AVERAGINGS,
    GROUPS,
    REPORTED_METRICS,
    _group_values,
    _patient_sums,
    _per_sample_matrix,
    evaluate,
    paired_bootstrap_pvalue,
    per_patient_values,
    tune_threshold,
)
from medrec_bench.metrics import multilabel_scores


def _index(results):
    return {(r.group, r.averaging, r.metric): r for r in results}


def _small_case():
    """Patient A: 3 samples with jaccard 1 (n_visits 1, 2, 3); patient B: 1 sample with jaccard 0 (n_visits 1)."""
    y_true = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], dtype=bool)
    y_prob = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    pids = np.array(["A", "A", "A", "B"])
    n_visits = np.array([1, 2, 3, 1])
    ddi = np.zeros((2, 2), dtype=bool)
    return y_true, y_prob, pids, n_visits, ddi


def _random_case(n=600, m=20, n_patients=250, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.random((n, m)) < 0.25
    y_prob = np.round(rng.random((n, m)) * 0.7 + 0.3 * y_true, 2)
    pids = np.array([f"p{i:04d}" for i in rng.integers(0, n_patients, n)])
    n_visits = rng.integers(1, 5, n)
    ddi = rng.random((m, m)) < 0.15
    return y_true, y_prob, pids, n_visits, ddi | ddi.T


def test_groups_present_and_absent_and_order():
    res = evaluate(*_small_case(), n_boot=20)
    groups = list(dict.fromkeys(r.group for r in res))
    assert groups == ["overall", "single_visit", "multi_visit", "visits_1", "visits_2", "visits_3"]
    assert len(res) == len(groups) * len(AVERAGINGS) * len(REPORTED_METRICS)
    assert [(r.averaging, r.metric) for r in res[:16]] == [(a, m) for a in AVERAGINGS for m in REPORTED_METRICS]
    idx = _index(res)
    assert (idx["overall", "sample", "jaccard"].n_samples, idx["overall", "sample", "jaccard"].n_patients) == (4, 2)
    assert (idx["multi_visit", "patient", "f1"].n_samples, idx["multi_visit", "patient", "f1"].n_patients) == (2, 1)


def test_visit_buckets():
    y_true, y_prob, pids, _, ddi = _small_case()
    res = evaluate(y_true, y_prob, pids, np.array([4, 5, 6, 2]), ddi, n_boot=10)
    groups = list(dict.fromkeys(r.group for r in res))
    assert groups == ["overall", "multi_visit", "visits_2", "visits_4-5", "visits_6+"]
    assert _index(res)["visits_4-5", "sample", "jaccard"].n_samples == 2
    assert set(GROUPS) >= set(groups)


def test_sample_vs_patient_averaging_known_numbers():
    idx = _index(evaluate(*_small_case(), n_boot=50))
    assert idx["overall", "sample", "jaccard"].mean == pytest.approx(3 / 4)
    assert idx["overall", "patient", "jaccard"].mean == pytest.approx(1 / 2)
    assert idx["single_visit", "sample", "jaccard"].mean == pytest.approx(1 / 2)
    assert idx["multi_visit", "patient", "jaccard"].mean == pytest.approx(1.0)
    assert idx["overall", "sample", "n_drugs"].mean == pytest.approx(1.0)
    assert idx["overall", "sample", "ddi_rate"].mean == 0.0


def test_ddi_rate_pooled_vs_per_patient():
    # ddi pair (0, 1). A: two samples predicting {0,1,2} -> 1 of 3 pairs each -> A's ratio 2/6;
    # B: predicts {0} -> no pairs -> ratio 0; C: predicts {0,1} -> 1 of 1 -> ratio 1.
    y_prob = np.array([[0.9, 0.9, 0.9], [0.9, 0.9, 0.9], [0.9, 0.1, 0.1], [0.9, 0.9, 0.1]])
    y_true = np.array([[1, 1, 0]] * 4, dtype=bool)  # truth: every sample has the one interacting pair
    pids = ["A", "A", "B", "C"]
    ddi = np.zeros((3, 3), dtype=bool)
    ddi[0, 1] = ddi[1, 0] = True
    idx = _index(evaluate(y_true, y_prob, pids, [1, 2, 1, 1], ddi, n_boot=50))
    assert idx["overall", "sample", "ddi_rate"].mean == pytest.approx(3 / 7)
    assert idx["overall", "patient", "ddi_rate"].mean == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert idx["overall", "sample", "ddi_rate_true"].mean == pytest.approx(1.0)
    assert idx["overall", "patient", "ddi_rate_true"].mean == pytest.approx(1.0)


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    data = _random_case()
    r1 = evaluate(*data, n_boot=300, seed=5)
    r2 = evaluate(*data, n_boot=300, seed=5)
    r3 = evaluate(*data, n_boot=300, seed=6)
    assert r1 == r2
    assert r1 != r3
    for r in r1:
        assert r.ci_low <= r.mean <= r.ci_high, r
        if r.metric != "ddi_rate_true" or r.group == "overall":
            assert r.ci_high > r.ci_low
    # point estimates do not depend on the seed
    assert [r.mean for r in r1] == [r.mean for r in r3]
    # point estimate is the plain mean of the per-sample metric
    y_true, y_prob, *_ = data
    jac = multilabel_scores(y_true, y_prob)["jaccard"]
    assert _index(r1)["overall", "sample", "jaccard"].mean == pytest.approx(jac.mean(), abs=1e-12)


def test_bootstrap_spread_matches_standard_error():
    # one sample per patient: bootstrap std of the mean ~ std(x) / sqrt(n)
    rng = np.random.default_rng(11)
    n, m = 2000, 12
    y_true = rng.random((n, m)) < 0.3
    y_prob = rng.random((n, m))
    pids = np.arange(n)
    res = _index(evaluate(y_true, y_prob, pids, np.ones(n, dtype=int), np.zeros((m, m), bool), n_boot=1000))
    jac = multilabel_scores(y_true, y_prob)["jaccard"]
    se = jac.std(ddof=1) / np.sqrt(n)
    r = res["overall", "sample", "jaccard"]
    assert r.std == pytest.approx(se, rel=0.12)
    assert (r.ci_high - r.ci_low) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_weighted_patient_stats_equal_explicit_duplication():
    # the bootstrap algebra: weight w on a patient == w distinct copies of that patient
    y_true, y_prob, pids, n_visits, ddi = _random_case(n=80, m=10, n_patients=15, seed=2)
    uniq, codes = np.unique(pids, return_inverse=True)
    x = _per_sample_matrix(y_true, y_prob, ddi, 0.5)
    s, c = _patient_sums(x, codes, len(uniq))
    w = np.random.default_rng(0).integers(0, 4, len(uniq)).astype(float)
    w[0] = 2
    got = _group_values(w[None, :], s, c)[0]
    rows, new_ids = [], []
    for p, k in enumerate(w.astype(int)):
        for copy in range(k):
            sel = np.flatnonzero(codes == p)
            rows.extend(sel)
            new_ids.extend([f"{p}-{copy}"] * len(sel))
    rows = np.array(rows)
    expl = _index(evaluate(y_true[rows], y_prob[rows], new_ids, n_visits[rows], ddi, n_boot=1))
    for ai, averaging in enumerate(AVERAGINGS):
        for mi, metric in enumerate(REPORTED_METRICS):
            assert got[ai, mi] == pytest.approx(expl["overall", averaging, metric].mean, abs=1e-12), (averaging, metric)


def test_rounds_options():
    data = _random_case()
    boot = _index(evaluate(*data, n_boot=10))
    full = _index(evaluate(*data, uncertainty="rounds_without_replacement", rounds=5, round_fraction=1.0))
    for key, r in full.items():  # every round sees all samples: no spread, same value as the point estimate
        assert r.std == pytest.approx(0.0, abs=1e-12)
        assert r.mean == pytest.approx(boot[key].mean, abs=1e-12)
    for method in ("rounds_with_replacement", "rounds_without_replacement"):
        a = evaluate(*data, uncertainty=method, rounds=10, seed=1)
        assert a == evaluate(*data, uncertainty=method, rounds=10, seed=1)
        idx = _index(a)
        r = idx["overall", "sample", "jaccard"]
        assert r.std > 0
        assert r.ci_low == pytest.approx(r.mean - r.std) and r.ci_high == pytest.approx(r.mean + r.std)
        assert abs(r.mean - boot["overall", "sample", "jaccard"].mean) < 4 * r.std + 1e-3


def test_rounds_with_replacement_draws_duplicates():
    # 1 round of 100% with replacement on 200 distinct samples: some are drawn twice, so the value differs from full
    data = _random_case(n=200)
    full = _index(evaluate(*data, n_boot=1))["overall", "sample", "jaccard"].mean
    rep = _index(evaluate(*data, uncertainty="rounds_with_replacement", rounds=1, round_fraction=1.0))
    assert rep["overall", "sample", "jaccard"].mean != pytest.approx(full, abs=1e-12)


def test_input_validation():
    y_true, y_prob, pids, n_visits, ddi = _small_case()
    with pytest.raises(ValueError, match=r"y_prob shape \(4, 3\) does not match y_true shape \(4, 2\)"):
        evaluate(y_true, np.zeros((4, 3)), pids, n_visits, ddi)
    with pytest.raises(ValueError, match="patient_ids.*N=4"):
        evaluate(y_true, y_prob, pids[:3], n_visits, ddi)
    with pytest.raises(ValueError, match=r"n_visits must have shape \(4,\)"):
        evaluate(y_true, y_prob, pids, n_visits[:2], ddi)
    with pytest.raises(ValueError, match="n_visits must be >= 1"):
        evaluate(y_true, y_prob, pids, np.array([0, 1, 2, 1]), ddi)
    with pytest.raises(ValueError, match=r"ddi must have shape \(2, 2\)"):
        evaluate(y_true, y_prob, pids, n_visits, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="uncertainty"):
        evaluate(y_true, y_prob, pids, n_visits, ddi, uncertainty="jackknife")
    with pytest.raises(ValueError, match="round_fraction"):
        evaluate(y_true, y_prob, pids, n_visits, ddi, uncertainty="rounds_with_replacement", round_fraction=0)


def test_per_patient_values():
    ids, vals = per_patient_values([1.0, 0.0, 0.5, 0.25], ["b", "a", "b", "a"])
    assert list(ids) == ["a", "b"]
    np.testing.assert_allclose(vals, [0.125, 0.75])


def test_paired_pvalue():
    rng = np.random.default_rng(0)
    b = rng.random(300)
    a = np.clip(b + 0.1 + 0.05 * rng.standard_normal(300), 0, 1)
    assert paired_bootstrap_pvalue(a, b) == pytest.approx(1 / 1001)
    assert paired_bootstrap_pvalue(b, a) == 1.0  # b is worse on every resample
    assert paired_bootstrap_pvalue(a, a, n_boot=200) == 1.0
    # lower is better (e.g. DDI rate): a lower everywhere -> a better
    assert paired_bootstrap_pvalue(b, a, higher_is_better=False) < 0.05
    # deterministic given the seed
    c = b + 0.01 * rng.standard_normal(300)
    assert paired_bootstrap_pvalue(c, b, seed=3) == paired_bootstrap_pvalue(c, b, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap_pvalue(a, b[:10])
    with pytest.raises(ValueError):
        paired_bootstrap_pvalue(a, b, higher_is_better=None)


def test_paired_pvalue_borderline_is_intermediate():
    # difference of means ~ 1 standard error -> one-sided p around 0.16 (normal approx.)
    rng = np.random.default_rng(4)
    n = 400
    d = rng.standard_normal(n)
    d = d - d.mean() + d.std(ddof=1) / np.sqrt(n)  # mean difference exactly 1 standard error
    b = rng.random(n)
    p = paired_bootstrap_pvalue(b + d, b, n_boot=2000, seed=1)
    assert 0.08 < p < 0.26


def test_tune_threshold():
    y_true = np.array([[1, 1, 0]], dtype=bool)
    # jaccard 1 for thresholds in (0.7, 0.85] -> grid 0.75, 0.8, 0.85 tie -> closest to 0.5 is 0.75
    assert tune_threshold(y_true, np.array([[0.9, 0.85, 0.7]])) == pytest.approx(0.75)
    # best set {0, 1} for thresholds in (0.3, 0.6]; 0.5 is in the grid
    assert tune_threshold(y_true, np.array([[0.8, 0.6, 0.3]])) == pytest.approx(0.5)
    # symmetric tie around 0.5 -> the smaller threshold
    assert tune_threshold(y_true, np.array([[0.8, 0.8, 0.1]]), grid=[0.4, 0.6]) == pytest.approx(0.4)
    # recall is maximized by the lowest threshold
    assert tune_threshold(y_true, np.array([[0.8, 0.2, 0.1]]), metric="recall") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="metric"):
        tune_threshold(y_true, np.array([[0.8, 0.2, 0.1]]), metric="n_drugs")


@pytest.mark.parametrize("threshold", [0.35, 0.45, 0.65, 0.7, 0.9, 0.95])
def test_float32_scores_at_the_threshold_are_predicted_in_every_metric(threshold):
    """Scores equal to float32(t) with float32(t) < t: #drugs, the DDI rate and Jaccard describe one predicted set,
    the set the reference code (float32 ``>=``) predicts."""
    assert float(np.float32(threshold)) < threshold  # the case that used to split the two paths
    rng = np.random.default_rng(3)
    n, m = 200, 12
    y_true = rng.random((n, m)) < 0.3
    y_prob = np.round(rng.random((n, m)), 2).astype(np.float32)
    y_prob[rng.random((n, m)) < 0.25] = np.float32(threshold)
    ddi = rng.random((m, m)) < 0.2
    ddi = ddi | ddi.T
    reference = y_prob >= np.float32(threshold)
    results = _index(evaluate(y_true, y_prob, np.arange(n), np.ones(n, dtype=int), ddi, threshold=threshold,
                              n_boot=10))
    assert results[("overall", "sample", "n_drugs")].mean == pytest.approx(reference.sum(1).mean(), abs=1e-12)
    inter = ((reference & y_true).sum(1) / np.maximum((reference | y_true).sum(1), 1)).mean()
    assert results[("overall", "sample", "jaccard")].mean == pytest.approx(inter, abs=1e-12)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    hits = sum(int(r[i] and r[j] and ddi[i, j]) for r in reference for i, j in pairs)
    total = sum(int(r[i] and r[j]) for r in reference for i, j in pairs)
    assert results[("overall", "sample", "ddi_rate")].mean == pytest.approx(hits / total, abs=1e-12)
    assert multilabel_scores(y_true, y_prob, threshold)["n_drugs"].sum() == reference.sum()


def test_tuned_threshold_compares_float32_scores_in_float32():
    y_true = np.array([[True, False], [True, False]])
    y_prob = np.array([[0.7, 0.1], [0.7, 0.1]], dtype=np.float32)  # exactly float32(0.7) < 0.7
    assert tune_threshold(y_true, y_prob, grid=[0.3, 0.7]) == 0.7  # both give Jaccard 1: the tie goes to 0.5's side
    assert tune_threshold(y_true, y_prob, grid=[0.7, 0.75]) == 0.7
