"""medrec-bench: a benchmark for medication recommendation from EHRs.

``medrec_bench.results(store).to_pandas()`` gives the leaderboard records as a tidy frame (see
:func:`medrec_bench.report.results`); it is imported on first use, so ``import medrec_bench`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["results"]


def __getattr__(name: str) -> Any:
    if name == "results":
        from .report import results

        return results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
