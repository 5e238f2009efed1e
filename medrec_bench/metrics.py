"""Per-sample medication-recommendation metrics (pure numpy, vectorized over samples).

Definitions follow the GAMENet / SafeDrug / MoleRec lineage. For one sample (one visit) with true drug set ``G`` and
predicted set ``P = {j : prob_j >= threshold}`` (compared in the scores' own floating dtype, :func:`predicted`):

* ``jaccard``   = |P ∩ G| / |P ∪ G|, 0 when the union is empty;
* ``precision`` = |P ∩ G| / |P|, 0 when ``P`` is empty;
* ``recall``    = |P ∩ G| / |G|, 0 when ``G`` is empty;
* ``f1``        = 2 * precision * recall / (precision + recall), 0 when precision + recall = 0;
* ``n_drugs``   = |P|;
* ``prauc``     = average precision of the sample's drug ranking, identical to
  ``sklearn.metrics.average_precision_score(y_true[i], y_prob[i])``: tied scores form one threshold and
  AP = sum over distinct thresholds k (descending) of (R_k - R_{k-1}) * P_k. A row without positives gets 0.0, which
  is what scikit-learn 1.9 returns for it (with a warning: it sets recall to 1 everywhere, precision is 0 everywhere).

The DDI rate is pooled over samples: (# predicted unordered pairs {i, j}, i != j, within a sample that interact) /
(# predicted unordered pairs), 0.0 when no sample has a pair. Same as SafeDrug's ``ddi_rate_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "METRICS",
    "MetricInfo",
    "ddi_rate",
    "multilabel_scores",
    "per_sample_ddi",
    "predicted",
    "set_scores",
]


@dataclass(frozen=True)
class MetricInfo:
    """Description of one reported metric; ``higher_is_better`` is None when no direction is better."""

    name: str
    higher_is_better: bool | None
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("jaccard", True, "Jaccard index |P∩G|/|P∪G| of predicted and true drug sets (0 if both empty)"),
        MetricInfo("prauc", True, "average precision of the per-visit drug ranking (sklearn average_precision_score)"),
        MetricInfo("f1", True, "F1 = 2PR/(P+R) of the per-visit predicted set (0 if P+R = 0)"),
        MetricInfo("precision", True, "|P∩G|/|P| per visit (0 if nothing predicted)"),
        MetricInfo("recall", True, "|P∩G|/|G| per visit (0 if the true set is empty)"),
        MetricInfo("n_drugs", None, "number of drugs predicted per visit (|P|)"),
        MetricInfo("ddi_rate", False, "share of predicted drug pairs within a visit that are known DDIs (pooled)"),
        MetricInfo("ddi_rate_true", None, "DDI rate of the ground-truth prescriptions (reference, not a model score)"),
    )
}


def _as_bool_matrix(y: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, M], got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or contain only 0/1 values")
    return arr.astype(bool)


def _float_scores(y_prob: np.ndarray) -> np.ndarray:
    """``y_prob`` in its own floating dtype (float32 stays float32); other dtypes as float64."""
    yp = np.asarray(y_prob)
    return yp if np.issubdtype(yp.dtype, np.floating) else yp.astype(np.float64)


def predicted(y_prob: np.ndarray, threshold: float) -> np.ndarray:
    """bool [N, M]: ``prob >= threshold``, compared in the scores' floating dtype (float32 scores against
    ``float32(threshold)``), as the reference code and PyHealth compare. Casting float32 scores to float64 first would
    drop a score equal to ``float32(t)`` whenever ``float32(t) < t`` (e.g. t = 0.35, 0.7, 0.9)."""
    yp = _float_scores(y_prob)
    return yp >= yp.dtype.type(threshold)


def _check_pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yt = _as_bool_matrix(y_true, "y_true")
    yp = _float_scores(y_prob)
    if yp.shape != yt.shape:
        raise ValueError(f"y_prob shape {yp.shape} does not match y_true shape {yt.shape}")
    if not np.isfinite(yp).all():
        raise ValueError("y_prob contains NaN or infinite values")
    return yt, yp


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den as float64, 0 where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def set_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Set metrics of boolean predictions: ``y_true``, ``y_pred`` bool [N, M] -> float64 [N] arrays.

    Keys: ``jaccard``, ``precision``, ``recall``, ``f1``, ``n_drugs`` (definitions in the module docstring).
    """
    yt = _as_bool_matrix(y_true, "y_true")
    yp = _as_bool_matrix(y_pred, "y_pred")
    if yp.shape != yt.shape:
        raise ValueError(f"y_pred shape {yp.shape} does not match y_true shape {yt.shape}")
    inter = np.count_nonzero(yt & yp, axis=1)
    n_pred = np.count_nonzero(yp, axis=1)
    n_true = np.count_nonzero(yt, axis=1)
    union = n_pred + n_true - inter
    precision = safe_div(inter, n_pred)
    recall = safe_div(inter, n_true)
    return {
        "jaccard": safe_div(inter, union),
        "precision": precision,
        "recall": recall,
        "f1": safe_div(2.0 * precision * recall, precision + recall),
        "n_drugs": n_pred.astype(np.float64),
    }


def _average_precision(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Row-wise average precision, bool [N, M] and float64 [N, M] -> float64 [N], sklearn-identical tie handling."""
    n, m = y_true.shape
    if m == 0:
        return np.zeros(n, dtype=np.float64)
    order = np.argsort(-y_prob, axis=1, kind="stable")
    scores = np.take_along_axis(y_prob, order, axis=1)
    labels = np.take_along_axis(y_true, order, axis=1)
    tp = np.cumsum(labels, axis=1, dtype=np.int64)
    # last position of each group of tied scores (score differs from the next one, or end of row)
    group_end = np.empty((n, m), dtype=bool)
    group_end[:, :-1] = scores[:, :-1] != scores[:, 1:]
    group_end[:, -1] = True
    # true positives at the previous group end: running max of tp over group ends, shifted right by one
    tp_at_end = np.where(group_end, tp, 0)
    prev_end_tp = np.zeros_like(tp)
    prev_end_tp[:, 1:] = np.maximum.accumulate(tp_at_end, axis=1)[:, :-1]
    new_tp = np.where(group_end, tp - prev_end_tp, 0)
    precision_at = tp / np.arange(1, m + 1, dtype=np.float64)
    n_pos = tp[:, -1]
    return safe_div((new_tp * precision_at).sum(axis=1), n_pos)


def multilabel_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-sample metrics of drug probabilities.

    ``y_true`` bool [N, M] (0/1 accepted), ``y_prob`` float [N, M] (any real scores); a drug is predicted when
    ``prob >= threshold``. Returns float64 arrays of length N under ``jaccard``, ``precision``, ``recall``, ``f1``,
    ``prauc`` and ``n_drugs`` (count of predicted drugs). See the module docstring for the exact definitions.
    """
    yt, yp = _check_pair(y_true, y_prob)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    out = set_scores(yt, predicted(yp, threshold))
    out["prauc"] = _average_precision(yt, yp.astype(np.float64))  # exact: the cast keeps order and ties
    return {k: out[k] for k in ("jaccard", "precision", "recall", "f1", "prauc", "n_drugs")}


def _ddi_matrix(ddi: np.ndarray, m: int) -> np.ndarray:
    a = np.asarray(ddi)
    if a.shape != (m, m):
        raise ValueError(f"ddi shape {a.shape} does not match the number of drugs: expected ({m}, {m})")
    a = a.astype(bool)
    a = a | a.T  # a pair interacts when either direction is marked, as in SafeDrug's ddi_rate_score
    np.fill_diagonal(a, False)
    return a


def per_sample_ddi(y_pred: np.ndarray, ddi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample DDI pair counts: ``y_pred`` bool [N, M], ``ddi`` bool [M, M] -> (interacting, total) int64 [N].

    ``total`` is the number of unordered pairs of distinct predicted drugs (k*(k-1)/2 for k drugs) and
    ``interacting`` the number of those pairs marked in ``ddi`` (either direction; the diagonal is ignored).
    A pooled DDI rate over any subset is ``interacting[subset].sum() / total[subset].sum()``.
    """
    yp = _as_bool_matrix(y_pred, "y_pred")
    a = _ddi_matrix(ddi, yp.shape[1]).astype(np.float64)
    y = yp.astype(np.float64)
    # (Y A) * Y summed over drugs counts ordered interacting pairs; exact in float64 (counts << 2**53)
    ordered = ((y @ a) * y).sum(axis=1)
    interacting = np.rint(ordered).astype(np.int64) // 2
    k = np.count_nonzero(yp, axis=1).astype(np.int64)
    return interacting, k * (k - 1) // 2


def ddi_rate(y_pred: np.ndarray, ddi: np.ndarray) -> float:
    """Pooled DDI rate of boolean predictions [N, M] under DDI adjacency [M, M]; 0.0 when no sample has a pair."""
    interacting, total = per_sample_ddi(y_pred, ddi)
    n_pairs = int(total.sum())
    return float(interacting.sum()) / n_pairs if n_pairs else 0.0
