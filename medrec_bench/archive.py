"""Run archive: complete runs and their aggregate metrics as JSON lines, to carry results from one store to another.

A results store (:mod:`medrec_bench.store`) lives on one machine and is not committed (``results/medrec.db`` is
ignored by git). An archive is the part of it that may be shared and committed: one line per complete run with its
configuration, versions, timings and metric rows (means and intervals), and nothing per patient. It lets a grid be
filled over several machines or sessions (``medrec-bench runs import`` the archive, ``run`` the missing cells: the
runner skips every imported run by its key, ``runs export`` again) and results be merged from workers or a GPU box.

Left out on export: the run's local ``predictions_path`` (the per-patient prediction file stays with its store), its
store ``id``, and failed runs. So a leaderboard built from imported runs only has no paired-bootstrap p-values and no
ground-truth #drugs row for them (both read the prediction files); the cells are unchanged.

Format: each line is ``{"format": "medrec-bench/run", "version": 1, "run": {...}, "metrics": [...]}`` with ``run``
holding :class:`~medrec_bench.store.RunRecord`'s stored fields (``params``, ``versions``, ``diagnostics`` as JSON
objects) and ``metrics`` :class:`~medrec_bench.records.MetricResult`'s fields; NaN is written as null. Lines are
sorted by cohort, protocol, model, seed and run key, so an archive's diff shows what changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from .records import MetricResult
from .store import ResultStore, RunRecord, canonical_json

__all__ = ["ARCHIVE_FORMAT", "ARCHIVE_VERSION", "ArchiveError", "export_runs", "import_runs"]

ARCHIVE_FORMAT = "medrec-bench/run"
ARCHIVE_VERSION = 1
#: RunRecord fields not archived (see the module docstring); ``status`` is always "complete"
_LOCAL_FIELDS = ("id", "predictions_path", "status", "error")
_JSON_FIELDS = ("params", "versions", "diagnostics")
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name not in _LOCAL_FIELDS)
_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(MetricResult))


class ArchiveError(ValueError):
    """An archive line that cannot be read; the message is one line naming the file and line number."""


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _line(run: RunRecord, metrics: list[MetricResult]) -> str:
    fields = {name: getattr(run, name) for name in _RUN_FIELDS}
    for name in _JSON_FIELDS:
        fields[name] = json.loads(fields[name])
    rows = [{name: _finite_or_none(getattr(m, name)) for name in _METRIC_FIELDS} for m in metrics]
    return json.dumps({"format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION, "run": fields, "metrics": rows},
                      sort_keys=True, separators=(",", ":"), allow_nan=False)


def export_runs(store: ResultStore, path: str | Path, *, data: str | None = None,
                protocol: str | None = None) -> int:
    """Write the store's complete runs (those of cohort ``data`` / ``protocol`` where given) to the archive ``path``
    (replaced); return how many."""
    runs = store.runs(data=data, protocol=protocol, status="complete")
    runs.sort(key=lambda r: (r.data, r.protocol, r.model, r.seed, r.run_key))
    lines = [_line(run, store.metrics_for(run.id)) for run in runs if run.id is not None]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _parse(text: str, where: str) -> tuple[RunRecord, list[dict[str, Any]]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or obj.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{where}: not a medrec-bench run archive line (no \"format\": \"{ARCHIVE_FORMAT}\")")
    if obj.get("version") != ARCHIVE_VERSION:
        raise ArchiveError(f"{where}: archive version {obj.get('version')!r}, this code reads {ARCHIVE_VERSION}")
    run, metrics = obj.get("run"), obj.get("metrics")
    if not isinstance(run, dict) or not isinstance(metrics, list):
        raise ArchiveError(f"{where}: a line needs a \"run\" object and a \"metrics\" list")
    unknown = sorted(set(run) - set(_RUN_FIELDS))
    if unknown:
        raise ArchiveError(f"{where}: unknown run field {unknown[0]!r}")
    try:
        fields = {name: canonical_json(run[name]) if name in _JSON_FIELDS else run[name] for name in run}
        record = RunRecord(**fields)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"{where}: bad run ({exc})") from None
    return record, metrics


def import_runs(store: ResultStore, path: str | Path) -> tuple[int, int]:
    """Add the archive's runs to ``store``; return (added, already there). A run whose key the store holds as a
    complete run is left as it is. Every line is parsed before anything is written; metric rows the store refuses
    stop the import at that run (the runs before it stay, and importing again skips them)."""
    source = Path(path)
    if not source.is_file():
        raise ArchiveError(f"no run archive at {source}")
    parsed = [_parse(text, f"{source}:{number}")
              for number, text in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1)
              if text.strip()]
    added = present = 0
    for record, metrics in parsed:
        if store.completed_run(record.run_key) is not None:
            present += 1
            continue
        try:
            store.record_run(record, metrics)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{source}: run {record.run_key[:12]}: bad metrics ({exc})") from None
        added += 1
    return added, present
