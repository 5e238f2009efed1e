"""The leaderboard as one self-contained HTML page: the boards' tables (sortable), their notes and inline SVG plots.

Nothing on the page is fetched from the network: CSS and JavaScript are inline (``page.html.j2``, rendered by jinja2
with autoescaping), the plots are SVG markup from :mod:`.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

import jinja2

from .board import Board, Column
from .plots import Plot, board_plots
from .text import REFERENCE_LABEL, board_columns, breakdown_columns, reference_cells, table_cells

__all__ = ["TEMPLATE", "render_html"]

TEMPLATE = "page.html.j2"


@dataclass(frozen=True)
class _CellView:
    text: str  #: the value (with the ≈ marker)
    ci: str  #: the ``± half interval`` part, shown under the value
    value: str  #: what sorting compares (the mean; empty for an empty cell)
    best: bool
    title: str  #: the interval and seeds behind the value, shown on hover


@dataclass(frozen=True)
class _RowView:
    model: str
    n_seeds: int
    cells: list[_CellView]


@dataclass(frozen=True)
class _TableView:
    heading: str
    columns: tuple[Column, ...]
    rows: list[_RowView]
    reference: list[str]


@dataclass(frozen=True)
class _Section:
    board: Board
    tables: list[_TableView]
    plots: list[Plot]


def _table(board: Board, columns: tuple[Column, ...], heading: str, reference: bool) -> _TableView:
    rows = []
    for row in board.rows:
        cells = []
        for cell in table_cells(board, row, columns):
            est = cell.estimate
            title = "" if est is None else f"[{est.low:.4g}, {est.high:.4g}], {est.n_seeds} seed(s)"
            value = "" if est is None or est.mean != est.mean else repr(est.mean)
            text, _, ci = cell.text.partition(" ± ")
            if " " in ci:  # the ≈ marker or "(n=k)" after the interval: keep it with the value
                ci, _, rest = ci.partition(" ")
                text = f"{text} {rest}"
            cells.append(_CellView(text, f"± {ci}" if ci else "", value, cell.best, title))
        rows.append(_RowView(row.model, row.n_seeds, cells))
    return _TableView(heading, columns, rows, reference_cells(board, columns) if reference and board.reference else [])


def render_html(boards: Sequence[Board], groups: Sequence[str] = (), title: str = "medrec-bench leaderboard") -> str:
    """The page for ``boards``; ``groups`` (e.g. ``visits_1,visits_2``) add each board's per-group table."""
    sections = []
    for i, board in enumerate(boards, start=1):
        tables = [_table(board, board_columns(), "", reference=True)]
        if groups:
            tables.append(_table(board, breakdown_columns(groups), "By number of visits", reference=False))
        sections.append(_Section(board, tables, board_plots(board, i)))
    source = files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source).render(title=title, sections=sections, reference_label=REFERENCE_LABEL)
