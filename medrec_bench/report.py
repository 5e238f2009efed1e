"""Comparison tables from leaderboard records: one row per model, ``mean ± half CI`` per metric, best marked.

Records are dicts with at least ``model``, ``metric``, ``mean``, ``ci_low``, ``ci_high`` (as returned by
:meth:`medrec_bench.store.ResultStore.leaderboard_records`). DDI rate: lower is better; ``n_drugs`` has no best.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from .evaluate import paired_bootstrap_pvalue, per_patient_values
from .metrics import METRICS, multilabel_scores
from .runner import load_predictions

TABLE_METRICS = ("jaccard", "prauc", "f1", "ddi_rate", "n_drugs")
LABELS = {"jaccard": "Jaccard", "prauc": "PRAUC", "f1": "F1", "precision": "Precision", "recall": "Recall",
          "ddi_rate": "DDI rate", "n_drugs": "#drugs", "ddi_rate_true": "DDI rate (truth)"}
RECORD_KEYS = ("model", "data", "protocol", "group", "averaging", "metric", "mean", "ci_low", "ci_high", "n_seeds")


def best_by_metric(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """metric -> the best mean among ``records`` (metrics with no better direction are left out)."""
    best: dict[str, float] = {}
    for r in records:
        info = METRICS.get(r["metric"])
        if info is None or info.higher_is_better is None or r["mean"] != r["mean"]:
            continue
        current = best.get(r["metric"])
        better = current is None or (r["mean"] > current if info.higher_is_better else r["mean"] < current)
        if better:
            best[r["metric"]] = r["mean"]
    return best


def comparison_table(records: Sequence[dict[str, Any]], metrics: Sequence[str] = TABLE_METRICS,
                     fmt: str = "github", extra: dict[str, dict[str, str]] | None = None) -> str:
    """Render models x metrics; the best value per metric is marked (``**bold**`` in markdown, else ``*``)."""
    best = best_by_metric(records)
    models: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        models.setdefault(r["model"], {})[r["metric"]] = r
    extra = extra or {}
    extra_cols = sorted({k for cols in extra.values() for k in cols})
    rows = []
    for model, by_metric in models.items():
        row = [model]
        for m in metrics:
            r = by_metric.get(m)
            if r is None:
                row.append("")
                continue
            half = (r["ci_high"] - r["ci_low"]) / 2
            cell = f"{r['mean']:.4f} ± {half:.4f}" if m != "n_drugs" else f"{r['mean']:.2f} ± {half:.2f}"
            if m in best and np.isclose(r["mean"], best[m], rtol=0, atol=1e-12):
                cell = f"**{cell}**" if fmt == "github" else f"{cell} *"
            row.append(cell)
        row += [extra.get(model, {}).get(c, "") for c in extra_cols]
        rows.append(row)
    headers = ["model", *(LABELS.get(m, m) for m in metrics), *extra_cols]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def records_csv(records: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(records[0]) if records else list(RECORD_KEYS)
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def records_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(records), indent=2)


def pvalues_vs_best(prediction_files: dict[str, tuple[Path, float]], metric: str = "jaccard",
                    n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap p-value of each model vs the best (by mean per-patient ``metric``) on the same patients.

    ``prediction_files``: model -> (saved predictions of one run, its threshold). The best model gets no p-value.
    """
    per_patient: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for model, (path, threshold) in prediction_files.items():
        y_true, y_prob, keys, _, _ = load_predictions(path)
        values = multilabel_scores(y_true, y_prob, threshold)[metric]
        per_patient[model] = per_patient_values(values, keys)
    if len(per_patient) < 2:
        return {}
    best = max(per_patient, key=lambda m: per_patient[m][1].mean())
    ids_best, vals_best = per_patient[best]
    out = {}
    for model, (ids, vals) in per_patient.items():
        if model == best or not np.array_equal(ids, ids_best):
            continue
        out[model] = paired_bootstrap_pvalue(vals_best, vals, higher_is_better=True, n_boot=n_boot, seed=seed)
    return out
