"""The leaderboard: one table per cohort x protocol from the results store, as markdown, CSV, JSON or an HTML page.

:func:`build_boards` reads the store into :class:`Board` objects; :func:`render` writes them in one of
:data:`FORMATS` (the HTML page needs jinja2 and matplotlib, imported only for it).
"""

from __future__ import annotations

from collections.abc import Sequence

from .board import Board, BoardRow, Column, Estimate, build_boards, parse_groups
from .text import boards_csv, boards_json, boards_markdown, render_markdown

__all__ = ["FORMATS", "Board", "BoardRow", "Column", "Estimate", "boards_csv", "boards_json", "boards_markdown",
           "build_boards", "parse_groups", "render", "render_markdown"]

#: output format -> file extension
FORMATS = {"md": "md", "html": "html", "csv": "csv", "json": "json"}


def render(boards: Sequence[Board], fmt: str, groups: Sequence[str] = ()) -> str:
    """``boards`` as markdown, HTML, CSV or JSON text; ``groups`` add the per-group table (md, html) or columns
    (csv; JSON always holds the main columns and every visit-count group)."""
    if fmt == "md":
        return boards_markdown(boards, groups)
    if fmt == "csv":
        return boards_csv(boards, groups)
    if fmt == "json":
        return boards_json(boards)
    if fmt == "html":
        from .page import render_html  # matplotlib is slow to import: only for the page

        return render_html(boards, groups)
    raise ValueError(f"unknown leaderboard format {fmt!r} (choose from {', '.join(FORMATS)})")
