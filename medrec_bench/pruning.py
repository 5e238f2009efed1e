"""Remove runs from a results store: superseded configurations (old code, old parameters), a cohort renamed, a test.

Runs are chosen by id or by filters: ``model`` is a model name or the leaderboard's label of one configuration,
``model[config]`` (:func:`medrec_bench.report.model_label`; ``config`` is :func:`medrec_bench.report.run_config`),
``data`` a cohort name, ``protocol`` a protocol. A deleted run's prediction files are removed with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .predictions import delete_predictions
from .report import run_config
from .store import ResultStore, RunRecord

__all__ = ["delete_runs", "select_runs"]

_LABEL = re.compile(r"^(?P<model>[^\[\]]+)(?:\[(?P<config>[0-9a-f]{8})\])?$")


def select_runs(store: ResultStore, *, ids: Sequence[int] = (), model: str | None = None, data: str | None = None,
                protocol: str | None = None) -> list[RunRecord]:
    """The runs with one of ``ids`` (all runs when empty) that match every given filter, ordered by id.

    ValueError when nothing narrows the choice (no id and no filter) or ``model`` is not a name or ``name[config]``.
    """
    if not ids and model is None and data is None and protocol is None:
        raise ValueError("name the runs to delete: run ids, or at least one of --model, --data, --protocol")
    config = None
    if model is not None:
        match = _LABEL.match(model)
        if match is None:
            raise ValueError(f"--model {model!r} is neither a model name nor a leaderboard label like 'leader_t[1a2b3c4d]'")
        model, config = match["model"], match["config"]
    runs = store.runs(model=model, data=data, protocol=protocol)
    wanted = {int(i) for i in ids}
    return [r for r in runs if (not wanted or r.id in wanted) and (config is None or run_config(r) == config)]


def delete_runs(store: ResultStore, runs: Sequence[RunRecord]) -> int:
    """Delete ``runs`` (from :func:`select_runs`) with their metrics and prediction files; return how many."""
    deleted = 0
    for run in runs:
        if run.id is not None and store.delete_run(run.id):
            deleted += 1
            if run.predictions_path:
                delete_predictions(run.predictions_path)
    return deleted
