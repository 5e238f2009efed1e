"""The leaderboard page's plots: matplotlib figures of one :class:`~.board.Board`, as inline SVG text.

Every plot shows each row's mean over seeds with its interval (see :class:`~.board.Estimate`). The SVG keeps text as
text (searchable, small), carries no metadata and prefixes its element ids, so several plots can share one page and the
same board always gives the same bytes. Uses ``matplotlib.figure.Figure`` directly (no pyplot, no GUI backend).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .board import HISTORY_GROUPS, Board, BoardRow

__all__ = ["LEADER_PREFIX", "PLOTS", "Plot", "board_plots"]

LEADER_PREFIX = "leader"  #: rows whose stored name starts with it make the LEADER comparison plot
_RC = {"svg.fonttype": "none", "svg.hashsalt": "medrec-bench", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}
_SIZE = (6.4, 4.0)  # inches


@dataclass(frozen=True)
class Plot:
    """One figure: ``key`` (a stable id), its caption and the SVG markup (no XML prolog)."""

    key: str
    caption: str
    svg: str


def _value(row: BoardRow, key: str) -> tuple[float, float, float] | None:
    """(mean, mean - low, high - mean) of a cell, or None when it is missing or NaN."""
    est = row.cells.get(key)
    if est is None or est.mean != est.mean:
        return None
    return est.mean, max(est.mean - est.low, 0.0), max(est.high - est.mean, 0.0)


def _scatter(fig: Figure, board: Board, x_key: str, x_label: str, log_x: bool = False) -> bool:
    ax = fig.add_subplot()
    drawn = False
    for i, row in enumerate(board.rows):
        x, y = _value(row, x_key), _value(row, "overall.jaccard")
        if x is None or y is None or (log_x and x[0] <= 0):
            continue
        ax.errorbar(x[0], y[0], xerr=[[x[1]], [x[2]]], yerr=[[y[1]], [y[2]]], fmt="o", capsize=3,
                    color=f"C{i % 10}", label=row.model)
        ax.annotate(row.model, (x[0], y[0]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        drawn = True
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("overall Jaccard")
    return drawn


def accuracy_vs_ddi(fig: Figure, board: Board) -> bool:
    drawn = _scatter(fig, board, "overall.ddi_rate", "DDI rate (lower is safer)")
    truth = board.reference.get("overall.ddi_rate")
    if drawn and truth is not None:
        ax = fig.axes[0]
        ax.axvline(truth, linestyle="--", color="grey", linewidth=1)
        ax.annotate("ground truth", (truth, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                    textcoords="offset points", fontsize=8, color="grey")
    return drawn


def accuracy_vs_cost(fig: Figure, board: Board) -> bool:
    return _scatter(fig, board, "cost.predict_ms_per_sample", "predict ms per test sample (log scale)", log_x=True)


def single_vs_multi_prauc(fig: Figure, board: Board) -> bool:
    ax = fig.add_subplot()
    rows = board.rows
    y = np.arange(len(rows))
    drawn = False
    for offset, (group, label) in zip((-0.2, 0.2), (("single_visit", "single-visit"), ("multi_visit", "multi-visit"))):
        values = [_value(r, f"{group}.prauc") for r in rows]
        idx = [i for i, v in enumerate(values) if v is not None]
        if not idx:
            continue
        ax.barh(y[idx] + offset, [values[i][0] for i in idx], height=0.4, label=label,
                xerr=[[values[i][1] for i in idx], [values[i][2] for i in idx]], capsize=2)
        drawn = True
    ax.set_yticks(y, [r.model for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("PRAUC")
    ax.legend(loc="lower right")
    return drawn


def jaccard_by_history(fig: Figure, board: Board) -> bool:
    ax = fig.add_subplot()
    groups = [g for g in HISTORY_GROUPS if any(f"{g}.jaccard" in r.cells for r in board.rows)]
    x = np.arange(len(groups))
    drawn = False
    for i, row in enumerate(board.rows):
        values = [_value(row, f"{g}.jaccard") for g in groups]
        idx = [j for j, v in enumerate(values) if v is not None]
        if not idx:
            continue
        ax.errorbar(x[idx] + (i - len(board.rows) / 2) * 0.03, [values[j][0] for j in idx],
                    yerr=[[values[j][1] for j in idx], [values[j][2] for j in idx]], marker="o", capsize=2,
                    color=f"C{i % 10}", label=row.model)
        drawn = True
    previous = [g.removeprefix("visits_") for g in groups]
    ax.set_xticks(x, [_previous_visits(p) for p in previous])
    ax.set_xlabel("previous visits")
    ax.set_ylabel("Jaccard")
    if drawn:
        ax.legend(fontsize=7, ncols=2)
    return drawn


def _previous_visits(visits: str) -> str:
    """``"4-5"`` (visits including the current one) -> ``"3-4"`` previous visits; ``"6+"`` -> ``"5+"``."""
    if visits.endswith("+"):
        return f"{int(visits[:-1]) - 1}+"
    return "-".join(str(int(v) - 1) for v in visits.split("-"))


def leader_comparison(fig: Figure, board: Board) -> bool:
    leader = [r for r in board.rows if r.name.startswith(LEADER_PREFIX)]
    if not leader:
        return False
    others = [r for r in board.rows if not r.name.startswith(LEADER_PREFIX)]
    rows = leader + others[:1]  # the best other model as the yardstick
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for offset, (metric, label) in zip((-0.2, 0.2), (("jaccard", "Jaccard"), ("prauc", "PRAUC"))):
        values = [_value(r, f"overall.{metric}") or (np.nan, 0.0, 0.0) for r in rows]
        ax.bar(x + offset, [v[0] for v in values], width=0.4, label=label,
               yerr=[[v[1] for v in values], [v[2] for v in values]], capsize=2)
    ax.set_xticks(x, [r.model for r in rows], rotation=20, ha="right")
    ax.set_ylabel("overall")
    ax.legend()
    return True


#: key -> (caption, draw function); a function returns False when the board has nothing to draw
PLOTS: dict[str, tuple[str, Callable[[Figure, Board], bool]]] = {
    "accuracy-ddi": ("Accuracy vs DDI rate (the dashed line: the ground truth's DDI rate)", accuracy_vs_ddi),
    "single-multi-prauc": ("Single- vs multi-visit PRAUC per model", single_vs_multi_prauc),
    "accuracy-cost": ("Accuracy vs predict cost", accuracy_vs_cost),
    "jaccard-history": ("Jaccard by number of previous visits", jaccard_by_history),
    "leader": ("LEADER: student, teacher and ablations against the best other model", leader_comparison),
}


def _svg(fig: Figure, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)  # RDF: namespaces only
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'url\(#([^)]+)\)', rf'url(#{prefix}-\1)', text)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)


def board_plots(board: Board, index: int) -> list[Plot]:
    """The plots of one board that have something to show; ``index`` (the board's place on the page) keeps the
    element ids of different boards apart."""
    out = []
    with matplotlib.rc_context(_RC):
        for key, (caption, draw) in PLOTS.items():
            fig = Figure(figsize=_SIZE, layout="constrained")
            if draw(fig, board):
                out.append(Plot(key, caption, _svg(fig, f"b{index}-{key}")))
    return out
