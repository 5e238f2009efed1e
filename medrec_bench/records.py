"""The metric record shared by the evaluation, the results store and the reports (stdlib only, imports nothing).

:func:`medrec_bench.evaluate.evaluate` returns :class:`MetricResult` objects, :class:`medrec_bench.store.ResultStore`
stores and reads them back, the reports render them: one type, so the three never drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MetricResult"]


@dataclass(frozen=True)
class MetricResult:
    """One metric of one group under one averaging.

    ``mean`` is the point estimate; ``ci_low`` / ``ci_high`` the 2.5 / 97.5 bootstrap percentiles, or
    ``mean ∓ std`` under the rounds protocols; ``std`` the bootstrap standard error or the standard deviation over
    rounds (NaN when not known, e.g. runs stored before schema version 2). See :mod:`medrec_bench.evaluate`.
    """

    group: str
    averaging: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n_samples: int | None
    n_patients: int | None
    std: float = math.nan
