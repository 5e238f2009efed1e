"""Grouped evaluation with patient-level uncertainty (numpy only; knows nothing about models or datasets).

Inputs are arrays: ``y_true`` bool [N, M], ``y_prob`` float [N, M], per-sample ``patient_ids`` [N] and ``n_visits``
[N] (visits the sample's patient has up to and including the current one; 1 = no history), and the DDI adjacency
``ddi`` bool [M, M].

Groups (a group with no samples is omitted):

* ``overall``: every sample;
* ``single_visit``: ``n_visits == 1``; ``multi_visit``: ``n_visits >= 2``;
* history buckets ``visits_1``, ``visits_2``, ``visits_3``, ``visits_4-5``, ``visits_6+`` (by ``n_visits``; note
  ``visits_1`` is the same set as ``single_visit``). Buckets are per sample, so one patient's visits can fall into
  several buckets; a patient belongs to a group when at least one of its samples does.

Averaging (both always reported):

* ``sample``: mean over the group's samples. ``ddi_rate`` / ``ddi_rate_true`` are pooled ratios over the group's
  samples (interacting pairs / all predicted pairs).
* ``patient``: mean over patients of each patient's mean over its samples in the group (SafeDrug / MoleRec style
  when a patient contributes several samples). For ``ddi_rate`` / ``ddi_rate_true``: mean over patients of each
  patient's pooled ratio, a patient without any predicted (resp. true) pair counting as 0.

Uncertainty (``uncertainty=``):

* ``"bootstrap"`` (default): ``n_boot`` resamples of the group's patients with replacement (a patient drawn twice
  counts twice, with all its samples). ``mean`` is the point estimate on the full data, ``ci_low`` / ``ci_high`` the
  2.5 / 97.5 percentiles of the bootstrap distribution, ``std`` its standard deviation (ddof=1). The resamples depend
  only on ``seed``, the group and the group's patient set, so two models evaluated on the same data with the same
  seed share their resamples.
* ``"rounds_with_replacement"`` (SafeDrug) / ``"rounds_without_replacement"`` (LEADER): the literature protocol.
  ``rounds`` rounds, each drawing ``round(round_fraction * n)`` of the group's n samples (with / without
  replacement); the metric is computed on each draw. ``mean`` is the mean over rounds, ``std`` the standard
  deviation over rounds (ddof=0, as ``np.std`` in those code bases), and ``ci_low`` / ``ci_high`` are
  ``mean - std`` / ``mean + std`` (NOT a 95% interval). Under patient averaging a patient drawn in a round counts
  once, its samples weighted by how often they were drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from medrec_bench.metrics import multilabel_scores, per_sample_ddi, predicted, safe_div, set_scores
from medrec_bench.records import MetricResult

__all__ = [
    "AVERAGINGS",
    "GROUPS",
    "REPORTED_METRICS",
    "UNCERTAINTY_METHODS",
    "evaluate",
    "paired_bootstrap_pvalue",
    "per_patient_values",
    "tune_threshold",
]

REPORTED_METRICS: tuple[str, ...] = (
    "jaccard",
    "prauc",
    "f1",
    "precision",
    "recall",
    "n_drugs",
    "ddi_rate",
    "ddi_rate_true",
)
_PER_SAMPLE = REPORTED_METRICS[:6]  # metrics that are means of per-sample values
AVERAGINGS: tuple[str, ...] = ("sample", "patient")
UNCERTAINTY_METHODS: tuple[str, ...] = ("bootstrap", "rounds_with_replacement", "rounds_without_replacement")

#: group name -> inclusive (min, max) of n_visits; max None = unbounded
GROUPS: dict[str, tuple[int, int | None]] = {
    "overall": (1, None),
    "single_visit": (1, 1),
    "multi_visit": (2, None),
    "visits_1": (1, 1),
    "visits_2": (2, 2),
    "visits_3": (3, 3),
    "visits_4-5": (4, 5),
    "visits_6+": (6, None),
}

_DEFAULT_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
_MAX_CHUNK_CELLS = 4_000_000  # resamples x patients per bootstrap chunk (bounds memory to ~32 MB per array)


# ---------------------------------------------------------------------------------------------------------- helpers


def _patient_codes(patient_ids: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted unique ids, code per sample in [0, P))."""
    ids = np.asarray(patient_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"patient_ids must be 1-D with length N={n}, got shape {ids.shape}")
    try:
        uniq, codes = np.unique(ids, return_inverse=True)
    except TypeError as exc:  # e.g. a mix of str and int in an object array
        raise ValueError(f"patient_ids must be mutually comparable (sortable) values: {exc}") from exc
    return uniq, codes.reshape(-1)


def _per_sample_matrix(y_true: np.ndarray, y_prob: np.ndarray, ddi: np.ndarray, threshold: float) -> np.ndarray:
    """[N, 10] float64: the 6 per-sample metrics, then pred interacting/total pairs, then true interacting/total."""
    scores = multilabel_scores(y_true, y_prob, threshold)
    a_pred, b_pred = per_sample_ddi(predicted(y_prob, threshold), ddi)
    a_true, b_true = per_sample_ddi(y_true, ddi)
    cols = [scores[m] for m in _PER_SAMPLE] + [a_pred, b_pred, a_true, b_true]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])


def _patient_sums(
    x: np.ndarray, codes: np.ndarray, n_patients: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient weighted column sums S [P, K] and weights C [P] of sample matrix x [n, K]."""
    w = np.ones(x.shape[0]) if weights is None else weights.astype(np.float64)
    s = np.column_stack([np.bincount(codes, weights=w * x[:, k], minlength=n_patients) for k in range(x.shape[1])])
    c = np.bincount(codes, weights=w, minlength=n_patients)
    return s, c


def _group_values(v: np.ndarray, s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Metric values [B, 2, 8] (averaging x REPORTED_METRICS) for patient weights v [B, P] and per-patient stats.

    A patient with weight w counts as w copies of itself; patients with c == 0 must have weight 0.
    """
    k = len(_PER_SAMPLE)
    means = safe_div(s[:, :k], c[:, None])
    ratio_pred = safe_div(s[:, k], s[:, k + 1])
    ratio_true = safe_div(s[:, k + 2], s[:, k + 3])
    table = np.column_stack([s, c, means, ratio_pred, ratio_true])  # [P, 10 + 1 + 6 + 2]
    agg = v @ table
    vs, vc, vm, vr = agg[:, : k + 4], agg[:, k + 4], agg[:, k + 5 : 2 * k + 5], agg[:, 2 * k + 5 :]
    n_pat = v.sum(axis=1)
    sample = np.column_stack(
        [safe_div(vs[:, :k], vc[:, None]), safe_div(vs[:, k], vs[:, k + 1]), safe_div(vs[:, k + 2], vs[:, k + 3])]
    )
    patient = safe_div(np.column_stack([vm, vr]), n_pat[:, None])
    return np.stack([sample, patient], axis=1)


def _bootstrap_weights(rng: np.random.Generator, n_boot: int, n_patients: int) -> Iterator[np.ndarray]:
    """Yield patient multiplicity matrices [b, P] (float64), b summing to n_boot, drawn in a fixed order."""
    chunk = max(1, _MAX_CHUNK_CELLS // max(n_patients, 1))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n_patients, size=(b, n_patients))
        idx += np.arange(b)[:, None] * n_patients
        yield np.bincount(idx.ravel(), minlength=b * n_patients).reshape(b, n_patients).astype(np.float64)
        done += b


def _validate(
    y_true: np.ndarray, y_prob: np.ndarray, n_visits: object, ddi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    yt = np.asarray(y_true)
    yp = np.asarray(y_prob)
    if yt.ndim != 2:
        raise ValueError(f"y_true must be 2-D [N, M], got shape {yt.shape}")
    if yp.shape != yt.shape:
        raise ValueError(f"y_prob shape {yp.shape} does not match y_true shape {yt.shape}")
    n, m = yt.shape
    if n == 0:
        raise ValueError("y_true has no samples (N = 0)")
    nv = np.asarray(n_visits)
    if nv.shape != (n,):
        raise ValueError(f"n_visits must have shape ({n},) to match y_true, got {nv.shape}")
    is_int = np.issubdtype(nv.dtype, np.integer)
    if not (is_int or (np.issubdtype(nv.dtype, np.floating) and bool((nv == np.round(nv)).all()))):
        raise ValueError(f"n_visits must be integers, got dtype {nv.dtype}")
    nv = nv.astype(np.int64)
    if (nv < 1).any():
        raise ValueError(f"n_visits must be >= 1, got minimum {int(nv.min())}")
    a = np.asarray(ddi)
    if a.shape != (m, m):
        raise ValueError(f"ddi must have shape ({m}, {m}) to match y_true with M={m} drugs, got {a.shape}")
    return yt, yp, nv, a


# ------------------------------------------------------------------------------------------------------------ API


def evaluate(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    patient_ids: Sequence[object] | np.ndarray,
    n_visits: Sequence[int] | np.ndarray,
    ddi: np.ndarray,
    *,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    uncertainty: str = "bootstrap",
    rounds: int = 10,
    round_fraction: float = 0.8,
) -> list[MetricResult]:
    """Evaluate predictions per group and averaging with uncertainty (see the module docstring).

    ``y_true`` bool [N, M], ``y_prob`` float [N, M] (drug predicted when ``>= threshold``), ``patient_ids`` [N]
    sortable ids, ``n_visits`` int [N] >= 1, ``ddi`` bool [M, M]. Returns one :class:`MetricResult` per
    (group, averaging, metric) in the order of ``GROUPS``, ``AVERAGINGS``, ``REPORTED_METRICS``. Deterministic given
    ``seed``.
    """
    if uncertainty not in UNCERTAINTY_METHODS:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTY_METHODS}, got {uncertainty!r}")
    if uncertainty == "bootstrap" and int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if uncertainty != "bootstrap":
        if int(rounds) < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if not 0.0 < round_fraction <= 1.0:
            raise ValueError(f"round_fraction must be in (0, 1], got {round_fraction}")
    yt, yp, nv, a = _validate(y_true, y_prob, n_visits, ddi)
    _, codes_all = _patient_codes(patient_ids, yt.shape[0])
    x_all = _per_sample_matrix(yt, yp, a, threshold)

    results: list[MetricResult] = []
    for gi, (group, (lo, hi)) in enumerate(GROUPS.items()):
        mask = nv >= lo if hi is None else (nv >= lo) & (nv <= hi)
        n_samples = int(mask.sum())
        if n_samples == 0:
            continue
        _, codes = np.unique(codes_all[mask], return_inverse=True)
        codes = codes.reshape(-1)
        n_pat = int(codes.max()) + 1
        x = x_all[mask]
        rng = np.random.default_rng([int(seed), gi])

        if uncertainty == "bootstrap":
            s, c = _patient_sums(x, codes, n_pat)
            point = _group_values(np.ones((1, n_pat)), s, c)[0]
            boot = np.concatenate([_group_values(v, s, c) for v in _bootstrap_weights(rng, int(n_boot), n_pat)])
            low, high = np.percentile(boot, [2.5, 97.5], axis=0)
            std = boot.std(axis=0, ddof=1) if boot.shape[0] > 1 else np.zeros_like(point)
            mean = point
        else:
            size = max(1, int(round(round_fraction * n_samples)))
            replace = uncertainty == "rounds_with_replacement"
            vals = []
            for _ in range(int(rounds)):
                idx = rng.choice(n_samples, size=size, replace=replace)
                w = np.bincount(idx, minlength=n_samples)
                s, c = _patient_sums(x, codes, n_pat, weights=w)
                vals.append(_group_values((c > 0).astype(np.float64)[None, :], s, c)[0])
            arr = np.stack(vals)
            mean = arr.mean(axis=0)
            std = arr.std(axis=0)
            low, high = mean - std, mean + std

        for ai, averaging in enumerate(AVERAGINGS):
            for mi, metric in enumerate(REPORTED_METRICS):
                results.append(
                    MetricResult(
                        group=group,
                        averaging=averaging,
                        metric=metric,
                        mean=float(mean[ai, mi]),
                        ci_low=float(low[ai, mi]),
                        ci_high=float(high[ai, mi]),
                        n_samples=n_samples,
                        n_patients=n_pat,
                        std=float(std[ai, mi]),
                    )
                )
    return results


def per_patient_values(
    metric_per_sample: Sequence[float] | np.ndarray, patient_ids: Sequence[object] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a per-sample metric [N] per patient -> (sorted unique patient ids [P], float64 means [P]).

    Sorting by id aligns two models evaluated on the same samples for :func:`paired_bootstrap_pvalue`.
    """
    vals = np.asarray(metric_per_sample, dtype=np.float64)
    if vals.ndim != 1:
        raise ValueError(f"metric_per_sample must be 1-D [N], got shape {vals.shape}")
    uniq, codes = _patient_codes(patient_ids, vals.shape[0])
    sums = np.bincount(codes, weights=vals, minlength=len(uniq))
    counts = np.bincount(codes, minlength=len(uniq))
    return uniq, sums / counts


def paired_bootstrap_pvalue(
    per_patient_a: Sequence[float] | np.ndarray,
    per_patient_b: Sequence[float] | np.ndarray,
    higher_is_better: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
) -> float:
    """One-sided paired bootstrap p-value that model ``a`` is NOT better than model ``b``.

    Inputs are per-patient metric values [P] on the same, aligned patients (see :func:`per_patient_values`).
    Patients are resampled with replacement ``n_boot`` times (the same resample for both models);
    p = (count + 1) / (n_boot + 1) where count is the number of resamples with mean(b) >= mean(a)
    (``higher_is_better``) or mean(b) <= mean(a) (otherwise). Typical use: ``a`` = best model, ``b`` = another
    model; a small p means the best is better than ``b`` beyond resampling noise. Identical inputs give p = 1.
    """
    if higher_is_better is None:
        raise ValueError("higher_is_better must be True or False for a p-value (metric has no better direction)")
    a = np.asarray(per_patient_a, dtype=np.float64)
    b = np.asarray(per_patient_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"per_patient_a and per_patient_b must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("per_patient_a is empty")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    diff = (b - a) if higher_is_better else (a - b)  # >= 0 where b is at least as good as a
    rng = np.random.default_rng(int(seed))
    count = 0
    for v in _bootstrap_weights(rng, int(n_boot), diff.shape[0]):
        count += int(np.count_nonzero(v @ diff >= 0))
    return (count + 1) / (int(n_boot) + 1)


def tune_threshold(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    grid: Sequence[float] | np.ndarray | None = None,
    metric: str = "jaccard",
) -> float:
    """Threshold from ``grid`` maximizing the sample-averaged ``metric`` on (validation) data.

    ``y_true`` bool [N, M], ``y_prob`` float [N, M]; ``grid`` defaults to 0.05, 0.10, ..., 0.95. ``metric`` is one of
    ``jaccard``, ``f1``, ``precision``, ``recall``. Ties (within 1e-12) go to the threshold closest to 0.5, then to
    the smaller one.
    """
    allowed = ("jaccard", "f1", "precision", "recall")
    if metric not in allowed:
        raise ValueError(f"metric must be one of {allowed} (threshold-dependent, higher is better), got {metric!r}")
    yt = np.asarray(y_true)
    yp = np.asarray(y_prob)
    if yt.ndim != 2 or yp.shape != yt.shape:
        raise ValueError(f"y_true and y_prob must be 2-D of equal shape, got {yt.shape} and {yp.shape}")
    if yt.shape[0] == 0:
        raise ValueError("y_true has no samples (N = 0)")
    thresholds = _DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64).reshape(-1)
    if thresholds.size == 0:
        raise ValueError("grid is empty")
    means = np.array([set_scores(yt, predicted(yp, t))[metric].mean() for t in thresholds])
    candidates = np.flatnonzero(means >= means.max() - 1e-12)
    best = min(candidates, key=lambda i: (abs(thresholds[i] - 0.5), thresholds[i]))
    return float(thresholds[best])
