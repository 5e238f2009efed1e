"""Leaderboard records and comparison tables: pooling stored runs over seeds, labelling, p-values, the run summary.

A leaderboard record is a dict with the keys :data:`RECORD_KEYS` (see :func:`leaderboard_records`). Tables show one
row per model and ``mean ± half interval`` per metric, the best marked by each metric's direction
(:data:`medrec_bench.metrics.METRICS`: DDI rate lower is better, ``n_drugs`` has no best); what the interval is
(bootstrap CI, std over rounds, averaged over seeds or not) is said by :func:`uncertainty_note`.

Reads the store and saved prediction files; imports neither the runner nor torch, so rendering a table stays fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from . import resources
from .evaluate import paired_bootstrap_pvalue, per_patient_values
from .extras import require_extra
from .metrics import METRICS, multilabel_scores, per_sample_ddi, safe_div
from .predictions import load_predictions
from .store import ResultStore, RunRecord, canonical_json

TABLE_METRICS = ("jaccard", "prauc", "f1", "ddi_rate", "n_drugs")
LABELS = {"jaccard": "Jaccard", "prauc": "PRAUC", "f1": "F1", "precision": "Precision", "recall": "Recall",
          "ddi_rate": "DDI rate", "n_drugs": "#drugs", "ddi_rate_true": "DDI rate (truth)"}
RECORD_KEYS = ("model", "data", "protocol", "group", "averaging", "metric", "mean", "ci_low", "ci_high", "n_seeds",
               "params_hash", "uncertainty")


# --- pooling runs over seeds -----------------------------------------------------------------------------------------


def params_hash(params: Any, data_fingerprint: str, code_hash: str | None = None) -> str:
    """Short hash (8 hex chars) naming one configuration: params JSON, data fingerprint and the model's code hash.

    ``code_hash`` None (runs stored before schema version 2) leaves it out, so such runs keep their old hash.
    """
    text = canonical_json(params) + "\n" + str(data_fingerprint) + ("" if code_hash is None else "\n" + code_hash)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def run_config(run: RunRecord) -> str:
    """The :func:`params_hash` of a stored run: runs pool over seeds when it, model, data, protocol and uncertainty
    method agree."""
    return params_hash(run.params, run.data_fingerprint, run.code_hash)


def run_recency(run: RunRecord) -> tuple[str, int]:
    """Sort key of a run's recency (``ended_at``, then id): of several runs of one seed, the most recent counts."""
    return (run.ended_at or "", int(run.id or 0))


def leaderboard_records(store: ResultStore, data: str | None = None, protocol: str | None = None,
                        group: str | None = None, averaging: str | None = None,
                        metric: str | None = None) -> list[dict[str, Any]]:
    """Aggregate complete runs over seeds, one record per configuration, uncertainty method and metric.

    Runs are pooled when they share model, params JSON, data, data fingerprint, model code hash, protocol and
    uncertainty method; other params, fingerprints or code versions of one model stay separate records, told apart
    by ``params_hash`` (:func:`params_hash`; ``model`` stays the plain name).

    Each record has the keys :data:`RECORD_KEYS`:

    * ``mean`` is the mean over seeds of the per-run means;
    * ``ci_low``/``ci_high`` are that run's interval for a single seed and the mean of the per-run bounds for several
      seeds (an average per-seed interval, not a CI of the across-seed mean); the interval is a 95% bootstrap CI or
      mean ∓ std over rounds, as ``uncertainty`` says (None: not recorded, runs stored before schema version 2);
    * ``n_seeds`` is the number of distinct seeds. If a configuration has several complete runs with the same seed
      (run keys differing in something else, e.g. threshold choice), only the most recent one (latest ``ended_at``,
      then highest id) counts.

    Failed runs are ignored. Records are sorted by (data, protocol, group, averaging, uncertainty, metric, model,
    params_hash).
    """
    # key -> seed -> (recency, mean, ci_low, ci_high)
    groups: dict[tuple[Any, ...], dict[int, tuple[tuple[str, int], float, float, float]]] = {}
    for run, m in store.complete_metrics(data=data, protocol=protocol, group=group, averaging=averaging,
                                         metric=metric):
        key = (run.model, run_config(run), run.data, run.protocol, m.group, m.averaging, m.metric, run.uncertainty)
        recency = run_recency(run)
        per_seed = groups.setdefault(key, {})
        if run.seed not in per_seed or per_seed[run.seed][0] < recency:
            per_seed[run.seed] = (recency, m.mean, m.ci_low, m.ci_high)

    records: list[dict[str, Any]] = []
    for (model, config, data_name, proto, grp, avg, met, uncertainty), per_seed in groups.items():
        values = list(per_seed.values())
        n = len(values)
        records.append({
            "model": model, "data": data_name, "protocol": proto, "group": grp, "averaging": avg, "metric": met,
            "mean": sum(v[1] for v in values) / n, "ci_low": sum(v[2] for v in values) / n,
            "ci_high": sum(v[3] for v in values) / n, "n_seeds": n, "params_hash": config,
            "uncertainty": uncertainty,
        })
    records.sort(key=lambda d: (d["data"], d["protocol"], d["group"], d["averaging"], d["uncertainty"] or "",
                                d["metric"], d["model"], d["params_hash"]))
    return records


#: uncertainty method -> what ``± x`` is for one seed, and for records averaged over several seeds
INTERVALS = {
    "bootstrap": ("half the 95% bootstrap CI", "half the mean per-seed 95% bootstrap CI"),
    "rounds_with_replacement": ("std over rounds (with replacement)",
                                "mean per-seed std over rounds (with replacement)"),
    "rounds_without_replacement": ("std over rounds (without replacement)",
                                   "mean per-seed std over rounds (without replacement)"),
}


def uncertainty_note(uncertainty: str | None, max_seeds: int) -> str:
    """What ``mean ± x`` means in a table of records with this uncertainty method and up to ``max_seeds`` seeds."""
    if uncertainty not in INTERVALS:
        return "mean ± half the stored interval (uncertainty method not recorded)"
    one_seed, several = INTERVALS[uncertainty]
    return f"mean ± {one_seed}" if max_seeds <= 1 else f"mean over seeds ± {several}"


# --- tables ----------------------------------------------------------------------------------------------------------


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


def model_label(record: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """``model``, or ``model[params_hash]`` when ``records`` hold several configurations of that model."""
    configs = {r["params_hash"] for r in records if r["model"] == record["model"]}
    return record["model"] if len(configs) == 1 else f"{record['model']}[{record['params_hash']}]"


# --- p-values on saved predictions -----------------------------------------------------------------------------------


def per_patient_scores(path: Path, threshold: float, metric: str = "jaccard") -> tuple[np.ndarray, np.ndarray]:
    """(sorted patient keys [P], float64 values [P]) of ``metric`` per patient from a saved predictions file.

    A per-sample metric is averaged over each patient's samples; ``ddi_rate`` is each patient's pooled ratio
    (interacting / predicted pairs, 0 without a predicted pair), as under patient averaging in
    :mod:`medrec_bench.evaluate`.
    """
    pred = load_predictions(path)
    if metric == "ddi_rate":
        interacting, total = per_sample_ddi(pred.y_prob >= threshold, resources.ddi_matrix(pred.drugs))
        ids, num = per_patient_values(interacting, pred.patient_keys)
        _, den = per_patient_values(total, pred.patient_keys)
        return ids, safe_div(num, den)
    scores = multilabel_scores(pred.y_true, pred.y_prob, threshold)
    if metric not in scores:
        raise ValueError(f"no per-patient values for metric {metric!r} (choose from {', '.join(scores)}, ddi_rate)")
    return per_patient_values(scores[metric], pred.patient_keys)


def pvalues_vs_best(prediction_files: dict[str, tuple[Path, float]], metric: str = "jaccard",
                    n_boot: int = 1000, seed: int = 0, best: str | None = None) -> dict[str, float]:
    """Paired bootstrap p-value of each model vs the best (by mean per-patient ``metric``) on the same patients.

    ``prediction_files``: model -> (saved predictions of one run, its threshold). "Best" follows the metric's
    direction (:data:`medrec_bench.metrics.METRICS`: highest Jaccard, lowest DDI rate); a metric without one is an
    error. ``best`` names it instead (e.g. the best of a table averaged otherwise). The best model, and models scored
    on other patients, get no p-value.
    """
    info = METRICS.get(metric)
    if info is None or info.higher_is_better is None:
        raise ValueError(f"metric {metric!r} has no better direction, so no model is best")
    per_patient = {model: per_patient_scores(path, threshold, metric)
                   for model, (path, threshold) in prediction_files.items()}
    if len(per_patient) < 2:
        return {}
    if best is None:
        pick = max if info.higher_is_better else min
        best = pick(per_patient, key=lambda m: per_patient[m][1].mean())
    elif best not in per_patient:
        raise ValueError(f"best model {best!r} has no predictions file")
    ids_best, vals_best = per_patient[best]
    out = {}
    for model, (ids, vals) in per_patient.items():
        if model == best or not np.array_equal(ids, ids_best):
            continue
        out[model] = paired_bootstrap_pvalue(vals_best, vals, higher_is_better=info.higher_is_better,
                                             n_boot=n_boot, seed=seed)
    return out


# --- the summary after `medrec-bench run` ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """The comparison of the configurations just run: their pooled records, mean training time, p-values."""

    title: str
    records: list[dict[str, Any]]
    train_seconds: dict[str, float]  #: model -> mean training seconds over its runs
    pvalues: dict[str, float]  #: model -> paired bootstrap p-value vs the best on Jaccard (first seed)

    def extra_columns(self) -> dict[str, dict[str, str]]:
        extra = {m: {"train s": f"{t:.1f}"} for m, t in self.train_seconds.items()}
        for m, p in self.pvalues.items():
            extra.setdefault(m, {})["p vs best (Jaccard)"] = f"{p:.3f}"
        return extra

    def render(self, fmt: str = "github") -> str:
        return comparison_table(self.records, fmt=fmt, extra=self.extra_columns())


def run_summary(store: ResultStore, run_ids: Iterable[int | None], *, group: str = "overall",
                averaging: str = "sample", n_boot: int = 1000) -> RunSummary:
    """Summarise the runs ``run_ids`` of one grid (one cohort and protocol; the grid's order, first seed first).

    Records: :func:`leaderboard_records` of exactly the configurations (model, params_hash, uncertainty) of these
    runs, so earlier runs of other configurations stay out while earlier seeds of the same one are pooled in.
    P-values: :func:`pvalues_vs_best` on the first seed's saved predictions (bootstrap seeded with that seed).
    """
    runs = [run for i in run_ids if i is not None and (run := store.get_run(i)) is not None]
    if not runs:
        raise ValueError("no stored runs to summarise")
    first = runs[0]
    configs = {(r.model, run_config(r), r.uncertainty) for r in runs}
    records = [r for r in leaderboard_records(store, data=first.data, protocol=first.protocol, group=group,
                                              averaging=averaging)
               if (r["model"], r["params_hash"], r["uncertainty"]) in configs]
    files = {r.model: (Path(r.predictions_path), float(r.threshold)) for r in runs
             if r.seed == first.seed and r.status == "complete" and r.predictions_path and r.threshold is not None
             and Path(r.predictions_path).exists()}
    times: dict[str, list[float]] = {}
    for r in runs:
        if r.train_seconds is not None:
            times.setdefault(r.model, []).append(r.train_seconds)
    seeds = sorted({x["n_seeds"] for x in records}) or [len({r.seed for r in runs})]
    notes = "; ".join(sorted({uncertainty_note(r.uncertainty, seeds[-1]) for r in runs}))
    count = f"{seeds[-1]} seed(s)" if len(seeds) == 1 else f"up to {seeds[-1]} seed(s)"
    title = (f"{first.data} / {first.protocol} / {group} / {averaging} averaging / {count}; {notes}; "
             "best marked **; DDI rate: lower is better")
    return RunSummary(title, records, {m: float(np.mean(t)) for m, t in times.items()},
                      pvalues_vs_best(files, n_boot=n_boot, seed=first.seed))


# --- results as a frame ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """Leaderboard records of a store (see :func:`leaderboard_records`), ready for a notebook."""

    records: list[dict[str, Any]]

    def to_pandas(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per record, the columns :data:`RECORD_KEYS`. Needs pandas."""
        pd = require_extra("pandas", "pandas", "results(...).to_pandas()")
        return pd.DataFrame.from_records(self.records, columns=list(RECORD_KEYS))


def results(store: ResultStore | str | Path, **filters: str | None) -> Results:
    """The leaderboard records of ``store`` (an open store or a database path), filtered by ``data``, ``protocol``,
    ``group``, ``averaging`` and ``metric``."""
    if isinstance(store, ResultStore):
        return Results(leaderboard_records(store, **filters))
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}")
    with ResultStore(path) as db:
        return Results(leaderboard_records(db, **filters))
