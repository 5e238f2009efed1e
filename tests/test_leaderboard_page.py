"""The HTML leaderboard: self-contained, deterministic, and checked in a real headless Chromium.

The browser test drives the system Chromium (Debian package ``chromium``, installed by the README's set-up and so by
``.ci/run``) through Playwright; nothing is downloaded. Without Chromium or Playwright it is skipped, except under CI
(``CI`` set), where it fails. It leaves a screenshot in ``results/leaderboard-test.png`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from medrec_bench.leaderboard import build_boards, render
from medrec_bench.leaderboard.plots import PLOTS
from medrec_bench.store import ResultStore
from tests.test_leaderboard import MODELS, fill_store
from tests.test_store import REPO_ROOT

BASE_PLOTS = ("accuracy-ddi", "single-multi-prauc", "accuracy-cost", "jaccard-history")
WITH_LEADER = {**MODELS, "leader_t": (0.62, [0, 1], 2, 0.05)}
SCREENSHOT = REPO_ROOT / "results" / "leaderboard-test.png"


@pytest.fixture
def page_html(tmp_path: Path) -> str:
    with ResultStore(tmp_path / "r.db") as db:
        fill_store(db, tmp_path, models=WITH_LEADER)
        fill_store(db, tmp_path, protocol="visit")
        return render(build_boards(db), "html", ("visits_1", "visits_2"))


def test_page_is_self_contained_and_deterministic(page_html, tmp_path) -> None:
    assert page_html.startswith("<!DOCTYPE html>")
    # nothing fetched: no external scripts, styles or images; the only URL is the SVG namespace
    assert not re.search(r"<(script|link|img)[^>]*\s(src|href)=", page_html)
    assert set(re.findall(r"https?://[^\s\"')]+", page_html)) <= {"http://www.w3.org/2000/svg",
                                                                  "http://www.w3.org/1999/xlink"}
    assert "@media print" in page_html
    keys = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page_html)
    assert keys == [*BASE_PLOTS, "leader", *BASE_PLOTS]  # the LEADER plot only where a leader row is
    ids = re.findall(r'\sid="([^"]+)"', page_html)
    assert len(ids) == len(set(ids))  # the plots' SVG ids never collide
    with ResultStore(tmp_path / "r.db") as db:
        assert render(build_boards(db), "html", ("visits_1", "visits_2")) == page_html


def _chromium() -> str | None:
    return os.environ.get("MEDREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    executable = _chromium()
    if sync_playwright is None or executable is None:
        missing = "playwright (pip install -e '.[dev]')" if sync_playwright is None else "chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {missing}, which the README's set-up installs", pytrace=False)
        pytest.skip(f"needs {missing}")
    return sync_playwright, executable


def _column(page, index: int) -> list[str]:
    return page.locator("section#board-1 table.leaderboard").first.locator(
        f"tbody tr td:nth-child({index})").all_inner_texts()


def test_page_in_headless_chromium(page_html, tmp_path) -> None:
    sync_playwright, executable = _browser_or_skip()
    path = tmp_path / "leaderboard.html"
    path.write_text(page_html, encoding="utf-8")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})  # a laptop screen
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")

            names = _column(page, 1)
            assert names == ["leader_t", "good", "close", "bad"]  # rendered rows, best overall Jaccard first
            for name in WITH_LEADER:
                assert page.get_by_text(name, exact=True).first.is_visible()
            plots = page.locator("figure.plot")
            assert plots.count() == 2 * len(BASE_PLOTS) + 1
            for i in range(plots.count()):
                figure = plots.nth(i)
                assert figure.get_attribute("data-plot") in PLOTS
                svg = figure.locator("svg")
                assert svg.count() == 1 and svg.bounding_box()["width"] > 200  # drawn, not only in the source

            heading = page.locator("section#board-1 table.leaderboard").first.locator("thead th")
            ddi = [h.strip() for h in heading.all_inner_texts()].index("DDI rate") + 1
            heading.nth(ddi - 1).locator("button").click()  # first click: descending
            assert _column(page, 1) == ["good", "close", "leader_t", "bad"]  # DDI 0.08, 0.06, 0.05, 0.01
            heading.nth(ddi - 1).locator("button").click()
            assert _column(page, 1) == ["bad", "leader_t", "close", "good"]
            assert heading.nth(ddi - 1).get_attribute("aria-sort") == "ascending"
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert SCREENSHOT.stat().st_size > 10_000
