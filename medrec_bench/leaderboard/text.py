"""Boards as markdown tables, CSV rows and JSON (aggregates only: no per-patient values)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from .board import COST, HISTORY_GROUPS, MAIN_COLUMNS, Board, BoardRow, Column, Estimate

__all__ = ["REFERENCE_LABEL", "Cell", "board_columns", "boards_csv", "boards_json", "boards_markdown",
           "breakdown_columns", "format_estimate", "reference_cells", "render_markdown", "table_cells"]

REFERENCE_LABEL = "ground truth"


def board_columns() -> tuple[Column, ...]:
    """The columns of the main table: overall, single- and multi-visit metrics, then cost."""
    return (*MAIN_COLUMNS, *COST)


def breakdown_columns(groups: Sequence[str]) -> tuple[Column, ...]:
    """Jaccard and PRAUC of each group (e.g. ``visits_2``): the per-visit-count table."""
    return tuple(Column(f"{g}.{m}", f"{g} {label}") for g in groups for m, label in (("jaccard", "Jaccard"),
                                                                                       ("prauc", "PRAUC")))


def compact_count(value: float) -> str:
    """A count in 3 significant digits with a G / M / k suffix from 10,000 up (9999 -> "9999", 237120 -> "237k")."""
    if abs(value) < 1e4:
        return f"{value:.0f}"
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        digits = f"{value / unit:.3g}"
        if abs(float(digits)) >= 1:  # 999,999 is "1M", not "1e+03k"
            return f"{digits}{suffix}"
    raise AssertionError("unreachable: |value| >= 1e4 is at least 1k")


def format_estimate(col: Column, est: Estimate, row_seeds: int) -> str:
    """``mean ± half interval`` (4 decimals; #drugs 2), cost as its mean; ``(n=k)`` when fewer seeds than the row."""
    if col.group == "cost":
        text = compact_count(est.mean) if col.metric == "n_parameters" else f"{est.mean:.3g}"
    else:
        digits = 2 if col.metric == "n_drugs" else 4
        text = f"{est.mean:.{digits}f} ± {(est.high - est.low) / 2:.{digits}f}"
    return text if est.n_seeds >= row_seeds else f"{text} (n={est.n_seeds})"


def _is_best(col: Column, est: Estimate, best: dict[str, float]) -> bool:
    return col.key in best and math.isclose(est.mean, best[col.key], rel_tol=0, abs_tol=1e-12)


@dataclass(frozen=True)
class Cell:
    """A rendered cell: its text (with the ≈ marker), the estimate behind it (None: empty) and whether it is best."""

    text: str
    estimate: Estimate | None
    best: bool


def table_cells(board: Board, row: BoardRow, columns: Sequence[Column]) -> list[Cell]:
    """The cells of ``row`` under ``columns``: the one formatting of values, best marks and ≈ for every format."""
    best = board.best_values(columns)
    out = []
    for col in columns:
        est = row.cells.get(col.key)
        if est is None:
            out.append(Cell("", None, False))
            continue
        text = format_estimate(col, est, row.n_seeds)
        if col.key == "overall.jaccard" and board.not_worse(row):
            text += " ≈"
        out.append(Cell(text, est, _is_best(col, est, best)))
    return out


def reference_cells(board: Board, columns: Sequence[Column]) -> list[str]:
    """The ground truth's DDI rate and #drugs under ``columns`` (other cells empty)."""
    return [f"{board.reference[c.key]:.{2 if c.metric == 'n_drugs' else 4}f}" if c.key in board.reference else ""
            for c in columns]


def render_markdown(board: Board, columns: Sequence[Column] | None = None, reference: bool = True) -> str:
    """One board as a GitHub markdown table: rows best first, ``n`` = seeds, the ground truth's row last."""
    columns = tuple(columns or board_columns())
    rows = [[row.model, *(f"**{c.text}**" if c.best else c.text for c in table_cells(board, row, columns)),
             str(row.n_seeds)] for row in board.rows]
    if reference and board.reference:
        rows.append([REFERENCE_LABEL, *reference_cells(board, columns), ""])
    headers = ["model", *(c.label for c in columns), "n"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def boards_markdown(boards: Sequence[Board], groups: Sequence[str] = ()) -> str:
    """Every board: a heading, its table, its note line, and the per-group table when ``groups`` are given."""
    if not boards:
        return "no complete runs match\n"
    parts = []
    for board in boards:
        parts += [f"## {board.title}\n", render_markdown(board), "", board.note(), ""]
        if groups:
            parts += [f"### {board.title}: by number of visits\n",
                      render_markdown(board, breakdown_columns(groups), reference=False), ""]
    return "\n".join(parts)


def _num(value: float | None) -> float | None:
    """A value for CSV / JSON: None for NaN, else rounded to 6 significant digits (far below any interval)."""
    return None if value is None or value != value else float(f"{value:.6g}")


def _estimate_dict(est: Estimate) -> dict[str, Any]:
    return {"mean": _num(est.mean), "low": _num(est.low), "high": _num(est.high), "n_seeds": est.n_seeds}


def boards_json(boards: Sequence[Board]) -> str:
    """All boards as JSON: their notes, reference rows and each row's estimates of the main columns and of every
    visit-count group (Jaccard, PRAUC)."""
    keys = [c.key for c in (*board_columns(), *breakdown_columns(HISTORY_GROUPS))]
    out = []
    for b in boards:
        reference = {k: _num(v) for k, v in b.reference.items()}
        out.append({
            "data": b.data, "protocol": b.protocol, "averaging": b.averaging, "uncertainty": b.uncertainty,
            "note": b.note(), "pvalue_seed": b.pvalue_seed, "reference": reference,
            "rows": [{"model": r.model, "name": r.name, "params_hash": r.params_hash, "n_seeds": r.n_seeds,
                      "pvalue_vs_best": _num(r.pvalue), "not_worse_than_best": b.not_worse(r),
                      "thresholds": list(r.thresholds),
                      "cells": {k: _estimate_dict(r.cells[k]) for k in keys if k in r.cells}} for r in b.rows],
        })
    return json.dumps(out, indent=1, allow_nan=False) + "\n"


def boards_csv(boards: Sequence[Board], groups: Sequence[str] = ()) -> str:
    """One CSV row per board row (and a ground-truth row per board): ``<column>.mean/.low/.high/.n_seeds``."""
    columns = (*board_columns(), *breakdown_columns(groups))
    fields = ["data", "protocol", "averaging", "uncertainty", "model", "params_hash", "n_seeds", "pvalue_vs_best",
              *(f"{c.key}.{part}" for c in columns for part in ("mean", "low", "high", "n_seeds"))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for b in boards:
        base = {"data": b.data, "protocol": b.protocol, "averaging": b.averaging, "uncertainty": b.uncertainty}
        for r in b.rows:
            line = {**base, "model": r.model, "params_hash": r.params_hash, "n_seeds": r.n_seeds,
                    "pvalue_vs_best": _num(r.pvalue)}
            for c in columns:
                if c.key in r.cells:
                    line.update({f"{c.key}.{k}": v for k, v in _estimate_dict(r.cells[c.key]).items()})
            writer.writerow(line)
        if b.reference:
            writer.writerow({**base, "model": REFERENCE_LABEL,
                             **{f"{k}.mean": _num(v) for k, v in b.reference.items()}})
    return buf.getvalue()
