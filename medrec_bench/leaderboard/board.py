"""The leaderboard's data: one :class:`Board` per cohort x protocol (x averaging x uncertainty method).

A board's rows are the stored configurations (model, params hash) pooled over seeds by
:func:`medrec_bench.report.leaderboard_records`, sorted by overall Jaccard (best first). Each row holds every stored
``group.metric`` estimate of its configuration and its cost (parameters, training seconds, predict ms per test
sample: the mean over seeds, with the min and max); the best row's saved predictions give the paired bootstrap
p-value of every other row on overall Jaccard (:func:`medrec_bench.report.pvalues_vs_best`) and, with the stored
``ddi_rate_true``, the ground truth's reference row. Reads the store and prediction files only: no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import per_patient_values
from ..metrics import METRICS
from ..predictions import load_predictions
from ..report import (leaderboard_records, model_label, pvalues_vs_best, run_config, run_recency,
                      uncertainty_note)
from ..store import ResultStore, RunRecord

__all__ = ["ALPHA", "COST", "HISTORY_GROUPS", "MAIN_COLUMNS", "Board", "BoardRow", "Column", "Estimate",
           "build_boards", "parse_groups"]

ALPHA = 0.05  #: a row whose p-value vs the best is at least this is "not significantly worse"
PVALUE_METRIC = "jaccard"  #: the overall metric the rows are sorted and tested on
N_BOOT = 1000  #: paired bootstrap resamples over test patients
#: evaluation groups by number of visits (1 = first visit, no history), in order; see medrec_bench.evaluate.GROUPS
HISTORY_GROUPS = ("visits_1", "visits_2", "visits_3", "visits_4-5", "visits_6+")


@dataclass(frozen=True)
class Column:
    """One column of a board: ``key`` is ``group.metric`` (or ``cost.<run field>``), ``label`` its heading."""

    key: str
    label: str

    @property
    def group(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def metric(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def higher_is_better(self) -> bool | None:
        """The direction of the metric (:data:`medrec_bench.metrics.METRICS`; lower cost is better except the
        parameter count, which has no better direction)."""
        if self.group == "cost":
            return None if self.metric == "n_parameters" else False
        info = METRICS.get(self.metric)
        return None if info is None else info.higher_is_better


MAIN_COLUMNS: tuple[Column, ...] = (
    Column("overall.jaccard", "Jaccard"), Column("overall.f1", "F1"), Column("overall.prauc", "PRAUC"),
    Column("overall.ddi_rate", "DDI rate"), Column("overall.n_drugs", "#drugs"),
    Column("single_visit.jaccard", "single-visit Jaccard"), Column("single_visit.prauc", "single-visit PRAUC"),
    Column("multi_visit.jaccard", "multi-visit Jaccard"), Column("multi_visit.prauc", "multi-visit PRAUC"),
)
#: cost columns: the run fields averaged over seeds
COST: tuple[Column, ...] = (
    Column("cost.n_parameters", "parameters"), Column("cost.train_seconds", "train s"),
    Column("cost.predict_ms_per_sample", "predict ms/sample"),
)


@dataclass(frozen=True)
class Estimate:
    """A pooled value: ``mean`` over seeds, its interval ``[low, high]`` and the number of seeds behind it.

    For metrics the interval is the stored one (see :func:`medrec_bench.report.leaderboard_records`); for cost it is
    the min and max over seeds.
    """

    mean: float
    low: float
    high: float
    n_seeds: int


@dataclass(frozen=True)
class BoardRow:
    """One configuration: its label, every ``group.metric`` / ``cost.*`` estimate, its p-value vs the best."""

    model: str  #: the label: the stored name, or ``name[params_hash]`` when the board has several of its configurations
    name: str  #: the stored (registry) name
    params_hash: str
    cells: dict[str, Estimate]
    thresholds: tuple[float, ...]  #: the decision thresholds of its runs (distinct, sorted)
    pvalue: float | None = None  #: paired bootstrap p-value vs the best row on overall Jaccard (None: not tested)

    @property
    def n_seeds(self) -> int:
        return max((e.n_seeds for e in self.cells.values()), default=0)


@dataclass(frozen=True)
class Board:
    """One table: the configurations run on one cohort and protocol, under one averaging and uncertainty method."""

    data: str
    protocol: str
    averaging: str
    uncertainty: str | None
    rows: list[BoardRow]
    reference: dict[str, float] = field(default_factory=dict)  #: ``overall.ddi_rate`` / ``overall.n_drugs`` of truth
    pvalue_seed: int | None = None  #: the seed whose test predictions the p-values compare

    @property
    def title(self) -> str:
        return f"{self.data} / {self.protocol}"

    @property
    def best(self) -> BoardRow | None:
        return self.rows[0] if self.rows else None

    def not_worse(self, row: BoardRow) -> bool:
        """Whether ``row`` is not significantly worse than the best on overall Jaccard (the best itself: False)."""
        return row.pvalue is not None and row.pvalue >= ALPHA

    def best_values(self, columns: Sequence[Column]) -> dict[str, float]:
        """column key -> the best mean among the rows (columns without a better direction are left out)."""
        best: dict[str, float] = {}
        for col in columns:
            direction = col.higher_is_better
            values = [r.cells[col.key].mean for r in self.rows if col.key in r.cells]
            values = [v for v in values if v == v]
            if direction is not None and values:
                best[col.key] = max(values) if direction else min(values)
        return best

    def threshold_note(self) -> str:
        values = sorted({t for r in self.rows for t in r.thresholds})
        if len(values) == 1:
            return f"decision threshold {values[0]:g} on every run"
        if not values:
            return "decision threshold not recorded"
        per_model = ", ".join(f"{r.model} {'/'.join(f'{t:.3g}' for t in r.thresholds)}" for r in self.rows)
        return f"decision thresholds (per run, as stored): {per_model}"

    def note(self) -> str:
        """One line: the averaging, the threshold rule and the uncertainty method of every number in the table."""
        seeds = max((r.n_seeds for r in self.rows), default=1)
        parts = [f"{self.averaging} averaging", self.threshold_note(),
                 f"metrics: {uncertainty_note(self.uncertainty, seeds)}",
                 "cost: mean over seeds (predict ms per test sample)", "n = seeds",
                 "bold: best per column (DDI rate and time: lower is better)"]
        if self.pvalue_seed is not None:
            parts.append(f"≈: not significantly worse than the best on overall Jaccard (one-sided paired bootstrap "
                         f"over the test patients of seed {self.pvalue_seed}, {N_BOOT} resamples, p ≥ {ALPHA:g})")
        return "; ".join(parts)


def parse_groups(text: str | None) -> tuple[str, ...]:
    """``visits_1,visits_2`` -> the group names, checked against the evaluation's groups (one-line ValueError)."""
    from ..evaluate import GROUPS

    names = tuple(g.strip() for g in (text or "").split(",") if g.strip())
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group {unknown[0]!r} (choose from {', '.join(GROUPS)})")
    return names


def _latest_runs(store: ResultStore, data: str | None,
                 protocol: str | None) -> dict[tuple[Any, ...], dict[int, RunRecord]]:
    """(model, params hash, data, protocol, uncertainty) -> seed -> the most recent complete run of that seed."""
    out: dict[tuple[Any, ...], dict[int, RunRecord]] = {}
    for run in store.runs(data=data, protocol=protocol, status="complete"):
        per_seed = out.setdefault((run.model, run_config(run), run.data, run.protocol, run.uncertainty), {})
        if run.seed not in per_seed or run_recency(per_seed[run.seed]) < run_recency(run):
            per_seed[run.seed] = run
    return out


def _cost(runs: Sequence[RunRecord]) -> dict[str, Estimate]:
    cells = {}
    for col in COST:
        values = [float(v) for r in runs if (v := getattr(r, col.metric)) is not None]
        if values:
            cells[col.key] = Estimate(float(np.mean(values)), min(values), max(values), len(values))
    return cells


def _predictions(run: RunRecord) -> Path | None:
    path = Path(run.predictions_path) if run.predictions_path else None
    return path if path is not None and path.exists() and run.threshold is not None else None


def _true_n_drugs(runs: Sequence[RunRecord], averaging: str) -> float | None:
    """Mean number of true drugs per test sample (or per patient's mean), averaged over the runs' seeds."""
    values = []
    for run in runs:
        path = _predictions(run)
        if path is None:
            continue
        pred = load_predictions(path)
        counts = pred.y_true.sum(axis=1).astype(np.float64)
        if averaging == "patient":
            counts = per_patient_values(counts, pred.patient_keys)[1]
        if counts.size:
            values.append(float(counts.mean()))
    return float(np.mean(values)) if values else None


def _board(key: tuple[Any, ...], records: list[dict[str, Any]], runs: dict[tuple[Any, ...], dict[int, RunRecord]],
           n_boot: int) -> Board:
    data, protocol, averaging, uncertainty = key
    by_config: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_config.setdefault((r["model"], r["params_hash"]), []).append(r)
    rows = []
    for (model, config), recs in by_config.items():
        seed_runs = runs.get((model, config, data, protocol, uncertainty), {})
        cells = {f"{r['group']}.{r['metric']}": Estimate(r["mean"], r["ci_low"], r["ci_high"], r["n_seeds"])
                 for r in recs}
        cells.update(_cost(list(seed_runs.values())))
        thresholds = tuple(sorted({float(r.threshold) for r in seed_runs.values() if r.threshold is not None}))
        rows.append(BoardRow(model_label(recs[0], records), model, config, cells, thresholds))
    rows.sort(key=lambda row: (-_sort_value(row), row.model))
    if not rows:
        return Board(data, protocol, averaging, uncertainty, rows)

    best = rows[0]
    best_runs = runs.get((best.name, best.params_hash, data, protocol, uncertainty), {})
    reference = {}
    truth_ddi = best.cells.get("overall.ddi_rate_true")
    if truth_ddi is not None:
        reference["overall.ddi_rate"] = truth_ddi.mean
    n_true = _true_n_drugs(list(best_runs.values()), averaging)
    if n_true is not None:
        reference["overall.n_drugs"] = n_true

    seeds = sorted(s for s, run in best_runs.items() if _predictions(run) is not None)
    if not seeds or len(rows) < 2:
        return Board(data, protocol, averaging, uncertainty, rows, reference)
    seed = seeds[0]
    files = {}
    for row in rows:
        run = runs.get((row.name, row.params_hash, data, protocol, uncertainty), {}).get(seed)
        path = None if run is None else _predictions(run)
        if path is not None:
            files[row.model] = (path, float(run.threshold))
    pvalues = pvalues_vs_best(files, metric=PVALUE_METRIC, n_boot=n_boot, seed=seed, best=best.model)
    rows = [dataclasses.replace(r, pvalue=pvalues.get(r.model)) for r in rows]
    return Board(data, protocol, averaging, uncertainty, rows, reference, seed)


def _sort_value(row: BoardRow) -> float:
    cell = row.cells.get(f"overall.{PVALUE_METRIC}")
    return cell.mean if cell is not None and cell.mean == cell.mean else float("-inf")


def build_boards(store: ResultStore, *, data: str | None = None, protocol: str | None = None,
                 averaging: str | None = "sample", models: Sequence[str] | None = None,
                 n_boot: int = N_BOOT) -> list[Board]:
    """The boards of ``store``: one per (data, protocol, averaging, uncertainty method), in that order.

    ``models`` keeps only these stored model names (None: all); ``averaging`` None keeps both averagings (one board
    each). Rows are sorted by overall Jaccard, best first; see :class:`Board`.
    """
    records = leaderboard_records(store, data=data, protocol=protocol, averaging=averaging)
    if models is not None:
        wanted = set(models)
        records = [r for r in records if r["model"] in wanted]
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault((r["data"], r["protocol"], r["averaging"], r["uncertainty"]), []).append(r)
    runs = _latest_runs(store, data, protocol)
    return [_board(key, recs, runs, n_boot) for key, recs in grouped.items()]
