"""``last_visit_repeat``: recommend the previous visit's drugs again.

Scores: a drug of the previous visit gets ``0.5 + 0.5 * f`` and any other drug ``0.5 * f`` (``f`` its training
frequency), so the set at threshold 0.5 is exactly the previous visit's drugs and frequencies break ties for PRAUC.
A first-time patient (no history) falls back to ``popular`` (plain frequencies).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrec_bench.tasks import Sample, multi_hot

from .popular import Popular


class LastVisitRepeat(Popular):
    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        freq = super().predict_proba(samples)
        previous = multi_hot([s.history[-1].drugs if s.history else () for s in samples], freq.shape[1]).numpy()
        has_history = np.array([bool(s.history) for s in samples])[:, None]
        repeat = 0.5 * freq + 0.5 * previous
        return np.where(has_history, repeat, freq).astype(np.float32)
