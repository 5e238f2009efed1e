"""Results store for medrec-bench, backed by stdlib ``sqlite3``.

One SQLite file (default ``results/medrec.db``) holds one row per run in
``runs`` and that run's aggregate metrics in ``metrics``.  Only aggregates are
stored: no patient identifiers, no per-sample predictions (those live in the
file named by ``predictions_path``, if any).  This module only stores and reads;
pooling runs over seeds and the statistics on top live in
:mod:`medrec_bench.report`.

Concurrency: several processes may write to the same file at once.  The
database runs in WAL mode, every write happens inside ``BEGIN IMMEDIATE ...
COMMIT`` and a write that meets ``database is locked`` is retried a bounded
number of times with exponential backoff (on top of SQLite's own 60 s busy
timeout).

Atomicity: :meth:`ResultStore.record_run` writes the run row and all of its
metric rows in one transaction, so a run row exists only together with its
metrics; a process that dies mid-way leaves nothing behind.

Schema version is kept in ``PRAGMA user_version`` (see :data:`SCHEMA_VERSION`);
older files are migrated on open.  Version 2 added to ``runs`` the model's
``code_hash``, the ``uncertainty`` method of its metrics and its
``diagnostics`` (JSON), and to ``metrics`` the ``std`` column; rows of a
version-1 file read back with ``code_hash``/``uncertainty`` None,
``diagnostics`` ``"{}"`` and ``std`` NaN. Version 3 added the ``secrets`` table: the per-store key of the
patient pseudonyms in saved predictions (:meth:`ResultStore.patient_secret`), kept inside the database so that it
never sits next to the prediction files. Version 4 added the ``sweeps`` and ``sweep_runs`` tables: a
hyper-parameter sweep (``run --sweep``) and its trials' runs with their validation PRAUC and which configuration was
chosen (:meth:`ResultStore.record_sweep`); the runs themselves stay ordinary rows of ``runs``.

Paths: a store that cannot be one (a directory, a path under a file, a file that is not SQLite, a database of a
newer schema version or with a ``runs`` table of other columns) is a one-line :class:`StoreError` naming the file and
what was expected. Missing parent folders are created only with ``create_parents=True`` (the CLI passes it for the
default path or ``--create-dirs``).

Floats: SQLite stores NaN as NULL.  Metric ``mean``/``ci_low``/``ci_high``/``std``
read back as ``float('nan')`` when NULL, so they are always floats.
"""

from __future__ import annotations

import dataclasses
import json
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from .records import MetricResult

__all__ = [
    "DEFAULT_DB_PATH",
    "SCHEMA_VERSION",
    "ResultStore",
    "RunRecord",
    "StoreError",
    "SweepRecord",
    "SweepTrial",
    "canonical_json",
    "utc_now",
]

DEFAULT_DB_PATH = Path("results") / "medrec.db"
SCHEMA_VERSION = 4

_BUSY_TIMEOUT_S = 60
_MAX_RETRIES = 8
_BACKOFF_BASE_S = 0.05
_BACKOFF_MAX_S = 2.0
_MAX_ERROR_CHARS = 500

_STATUSES = ("complete", "failed")
_AVERAGINGS = ("sample", "patient")

_T = TypeVar("_T")

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    data TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    protocol TEXT NOT NULL,
    seed INTEGER NOT NULL,
    git_commit TEXT,
    versions TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'failed')),
    error TEXT,
    train_seconds REAL,
    predict_ms_per_sample REAL,
    n_parameters INTEGER,
    threshold REAL,
    predictions_path TEXT
);
CREATE INDEX IF NOT EXISTS runs_lookup ON runs (data, protocol, model, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    grp TEXT NOT NULL,
    averaging TEXT NOT NULL CHECK (averaging IN ('sample', 'patient')),
    metric TEXT NOT NULL,
    mean REAL,
    ci_low REAL,
    ci_high REAL,
    n_samples INTEGER,
    n_patients INTEGER,
    PRIMARY KEY (run_id, grp, averaging, metric)
);
"""

_MIGRATE_TO_V2 = """
ALTER TABLE runs ADD COLUMN code_hash TEXT;
ALTER TABLE runs ADD COLUMN uncertainty TEXT;
ALTER TABLE runs ADD COLUMN diagnostics TEXT NOT NULL DEFAULT '{}';
ALTER TABLE metrics ADD COLUMN std REAL;
"""

_MIGRATE_TO_V3 = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_PATIENT_SECRET = "patient_key"

_MIGRATE_TO_V4 = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY,
    sweep_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    spec TEXT NOT NULL,
    data TEXT NOT NULL,
    protocol TEXT NOT NULL,
    selection TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    trial INTEGER NOT NULL,
    val_prauc REAL,
    chosen INTEGER NOT NULL DEFAULT 0 CHECK (chosen IN (0, 1)),
    PRIMARY KEY (sweep_id, run_id)
);
"""
_SWEEP_COLUMNS = ("sweep_key", "name", "model", "spec", "data", "protocol", "selection", "created_at")
_SWEEP_RUN_COLUMNS = ("sweep_id", "run_id", "trial", "val_prauc", "chosen")

_RUN_COLUMNS = (
    "run_key",
    "model",
    "params",
    "data",
    "data_fingerprint",
    "protocol",
    "seed",
    "git_commit",
    "versions",
    "started_at",
    "ended_at",
    "status",
    "error",
    "train_seconds",
    "predict_ms_per_sample",
    "n_parameters",
    "threshold",
    "predictions_path",
    "code_hash",
    "uncertainty",
    "diagnostics",
)
_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(MetricResult))
_METRIC_COLUMNS = ("grp", *_METRIC_FIELDS[1:])  # ``group`` is stored as ``grp``


def utc_now() -> str:
    """Current time as an ISO-8601 UTC string (microsecond precision: a run's start and end differ)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and compact separators (a stable text form).

    A string is taken to be JSON already and is re-serialised canonically.
    """
    if isinstance(obj, str):
        obj = json.loads(obj) if obj.strip() else {}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``.

    ``params``, ``versions`` and ``diagnostics`` are JSON text; a dict passed
    here is accepted and stored canonically (sorted keys).  Values read back
    are always the canonical JSON string.  ``started_at``/``ended_at`` default
    to the time of writing.  ``status`` and ``error`` are set by the store
    (:meth:`ResultStore.record_run` / :meth:`ResultStore.record_failure`).
    ``code_hash`` identifies the model's code (see
    :func:`medrec_bench.runner.code_hash`), ``uncertainty`` the method behind
    the metrics' ``ci_*``/``std`` (see :mod:`medrec_bench.evaluate`),
    ``diagnostics`` the model's extra per-run values (OOV rate, epochs run ...).
    ``id`` is None until the run has been stored.
    """

    run_key: str
    model: str
    params: str
    data: str
    data_fingerprint: str
    protocol: str
    seed: int
    git_commit: str | None = None
    versions: str = "{}"
    started_at: str | None = None
    ended_at: str | None = None
    status: str = "complete"
    error: str | None = None
    train_seconds: float | None = None
    predict_ms_per_sample: float | None = None
    n_parameters: int | None = None
    threshold: float | None = None
    predictions_path: str | None = None
    code_hash: str | None = None
    uncertainty: str | None = None
    diagnostics: str = "{}"
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SweepRecord:
    """One row of ``sweeps``: a hyper-parameter sweep over one model. ``sweep_key`` identifies it (its spec, cohort,
    protocol, seeds and evaluation settings: re-running the same sweep updates its row), ``spec`` is the sweep file's
    content as JSON (a dict is stored canonically), ``selection`` what the chosen trial maximised (``val_prauc``)."""

    sweep_key: str
    name: str
    model: str
    spec: str
    data: str
    protocol: str
    selection: str = "val_prauc"
    created_at: str | None = None
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SweepTrial:
    """One row of ``sweep_runs``: a run of trial number ``trial`` (one parameter configuration; one run per seed),
    its validation PRAUC (None when it failed) and whether its configuration is the sweep's choice."""

    run_id: int
    trial: int
    val_prauc: float | None
    chosen: bool = False


class StoreError(ValueError):
    """A ``--store`` path that is not (and cannot become) a results database; the message is one line."""


def check_store_path(path: Path, create_parents: bool = False) -> None:
    """StoreError unless ``path`` is an existing file or can be created as one: not a directory, no file among its
    parents, its folder existing (or created here when ``create_parents``)."""
    if path.is_dir():
        raise StoreError(f"results store {path} is a directory; expected a database file (e.g. {path / 'medrec.db'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"results store {path}: {parent} is a file, not a folder")
            break
    if not path.parent.exists():
        if not create_parents:
            raise StoreError(f"results store {path}: folder {path.parent} does not exist (create it, or pass "
                             f"--create-dirs)")
        path.parent.mkdir(parents=True, exist_ok=True)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _one_line_error(error: Any) -> str:
    """Reduce an error (message or traceback) to one short line.

    For a traceback the last non-empty line (``ExcType: message``) is kept,
    otherwise the first non-empty line; the result is truncated.
    """
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    line = " ".join(line.split())
    if len(line) > _MAX_ERROR_CHARS:
        line = line[: _MAX_ERROR_CHARS - 3] + "..."
    return line


def _to_metric(obj: MetricResult | Mapping[str, Any]) -> MetricResult:
    """A :class:`MetricResult`, or a mapping with its fields (``std`` optional), checked."""
    if isinstance(obj, MetricResult):
        row = obj
    elif isinstance(obj, Mapping):
        row = MetricResult(
            group=str(obj["group"]),
            averaging=str(obj["averaging"]),
            metric=str(obj["metric"]),
            mean=_nan_if_none(obj["mean"]),
            ci_low=_nan_if_none(obj["ci_low"]),
            ci_high=_nan_if_none(obj["ci_high"]),
            n_samples=_opt_int(obj["n_samples"]),
            n_patients=_opt_int(obj["n_patients"]),
            std=_nan_if_none(obj.get("std")),
        )
    else:
        raise TypeError(f"metrics must be MetricResult objects or mappings, got {type(obj).__name__}")
    if row.averaging not in _AVERAGINGS:
        raise ValueError(f"averaging must be one of {_AVERAGINGS}, got {row.averaging!r}")
    return row


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=int(row["id"]),
        run_key=row["run_key"],
        model=row["model"],
        params=row["params"],
        data=row["data"],
        data_fingerprint=row["data_fingerprint"],
        protocol=row["protocol"],
        seed=int(row["seed"]),
        git_commit=row["git_commit"],
        versions=row["versions"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        status=row["status"],
        error=row["error"],
        train_seconds=_opt_float(row["train_seconds"]),
        predict_ms_per_sample=_opt_float(row["predict_ms_per_sample"]),
        n_parameters=_opt_int(row["n_parameters"]),
        threshold=_opt_float(row["threshold"]),
        predictions_path=row["predictions_path"],
        code_hash=row["code_hash"],
        uncertainty=row["uncertainty"],
        diagnostics=row["diagnostics"],
    )


def _metric_from_row(row: sqlite3.Row) -> MetricResult:
    return _to_metric({**dict(row), "group": row["grp"]})


class _ReplayableIterable:
    """Iterates a source once, caching items, so a retried transaction sees them all."""

    def __init__(self, source: Iterable[Any]) -> None:
        self._iter = iter(source)
        self._cache: list[MetricResult] = []

    def __iter__(self) -> Iterator[MetricResult]:
        yield from list(self._cache)
        for item in self._iter:
            row = _to_metric(item)
            self._cache.append(row)
            yield row


class ResultStore:
    """SQLite-backed store of benchmark runs and their aggregate metrics.

    Use as ``with ResultStore(path) as store: ...`` or call :meth:`close`.
    """

    def __init__(self, path: str | Path = DEFAULT_DB_PATH, *, create_parents: bool = False) -> None:
        """Open (creating the file if needed) the database at ``path``; StoreError (one line) when ``path`` is not or
        cannot become a results store (see :func:`check_store_path`; ``create_parents`` creates missing folders)."""
        self.path = str(path)
        if self.path != ":memory:" and not self.path.startswith("file:"):
            check_store_path(Path(self.path), create_parents)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_S * 1000}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._write(self._ensure_schema)  # first, so that a file that is not a store is left as it was
            self._retry(lambda: self._conn_or_raise().execute("PRAGMA journal_mode=WAL").fetchone())
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"results store {self.path} is not a medrec-bench SQLite database ({exc})") from None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ infra
    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _conn_or_raise(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("ResultStore is closed")
        return self._conn

    @staticmethod
    def _retry(fn: Callable[[], _T]) -> _T:
        """Call ``fn``, retrying on 'database is locked' with bounded backoff."""
        for attempt in range(_MAX_RETRIES + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == _MAX_RETRIES:
                    raise
                delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(conn)`` inside BEGIN IMMEDIATE ... COMMIT, with retries."""
        conn = self._conn_or_raise()

        def attempt() -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(attempt)

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        conn = self._conn_or_raise()
        params = tuple(args)
        return self._retry(lambda: conn.execute(sql, params).fetchall())

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"results database has schema version {version}, "
                f"this code supports up to {SCHEMA_VERSION} (a newer medrec-bench wrote it)"
            )
        # (version reached, SQL); a new file runs them all
        steps = ((1, _SCHEMA_V1), (2, _MIGRATE_TO_V2), (3, _MIGRATE_TO_V3), (4, _MIGRATE_TO_V4))
        for target, script in steps:
            if version < target:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for table, wanted in (("runs", ("id", *_RUN_COLUMNS)), ("metrics", ("run_id", *_METRIC_COLUMNS)),
                              ("sweeps", ("id", *_SWEEP_COLUMNS)), ("sweep_runs", _SWEEP_RUN_COLUMNS)):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in wanted if c not in have]
            if missing:
                raise StoreError(f"results database has a {table!r} table that is not medrec-bench's (no column "
                                 f"{missing[0]!r})")

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database file."""
        return int(self._read("PRAGMA user_version")[0][0])

    # ----------------------------------------------------------------- writes
    @staticmethod
    def _normalise(run: RunRecord, status: str, error: str | None) -> RunRecord:
        now = utc_now()
        ended = run.ended_at or now
        return dataclasses.replace(
            run,
            params=canonical_json(run.params),
            versions=canonical_json(run.versions if run.versions is not None else {}),
            diagnostics=canonical_json(run.diagnostics if run.diagnostics is not None else {}),
            seed=int(run.seed),
            started_at=run.started_at or ended,
            ended_at=ended,
            status=status,
            error=error,
            id=None,
        )

    @staticmethod
    def _insert_run(conn: sqlite3.Connection, run: RunRecord) -> int:
        cols = ", ".join(_RUN_COLUMNS)
        marks = ", ".join("?" for _ in _RUN_COLUMNS)
        cur = conn.execute(
            f"INSERT INTO runs ({cols}) VALUES ({marks})",
            tuple(getattr(run, c) for c in _RUN_COLUMNS),
        )
        return int(cur.lastrowid)

    def record_run(
        self,
        run: RunRecord,
        metrics: Iterable[MetricResult | Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> int:
        """Store a complete run and all its metrics in one transaction; return its id.

        An existing complete run with the same ``run_key`` is kept as is (its
        id is returned, ``metrics`` are not read) unless ``replace`` is true;
        an existing failed one is always replaced.  ``metrics`` is an iterable
        of :class:`MetricResult` (or mappings with its fields); if iterating it
        raises, nothing is stored.
        """
        row = self._normalise(run, "complete", None)
        source = _ReplayableIterable(metrics)
        columns = ", ".join(("run_id", *_METRIC_COLUMNS))
        marks = ", ".join("?" for _ in range(len(_METRIC_COLUMNS) + 1))

        def tx(conn: sqlite3.Connection) -> int:
            existing = conn.execute(
                "SELECT id, status FROM runs WHERE run_key = ?", (row.run_key,)
            ).fetchone()
            if existing is not None:
                if existing["status"] == "complete" and not replace:
                    return int(existing["id"])
                conn.execute("DELETE FROM runs WHERE id = ?", (existing["id"],))
            run_id = self._insert_run(conn, row)
            for m in source:
                conn.execute(
                    f"INSERT INTO metrics ({columns}) VALUES ({marks})",
                    (run_id, *(getattr(m, name) for name in _METRIC_FIELDS)),
                )
            return run_id

        return self._write(tx)

    def record_failure(self, run: RunRecord, error: str) -> int:
        """Store a failed run (no metrics) with a one-line error; return its id.

        A complete run with the same ``run_key`` is never overwritten (its id
        is returned); a previous failure is replaced.  Tracebacks are reduced
        to their final ``ExcType: message`` line.
        """
        row = self._normalise(run, "failed", _one_line_error(error))

        def tx(conn: sqlite3.Connection) -> int:
            existing = conn.execute(
                "SELECT id, status FROM runs WHERE run_key = ?", (row.run_key,)
            ).fetchone()
            if existing is not None:
                if existing["status"] == "complete":
                    return int(existing["id"])
                conn.execute("DELETE FROM runs WHERE id = ?", (existing["id"],))
            return self._insert_run(conn, row)

        return self._write(tx)

    def patient_secret(self) -> str:
        """This store's random key (64 hex characters) for :func:`medrec_bench.predictions.patient_key`, created on
        first use; concurrent first uses agree on one."""
        candidate = secrets.token_hex(32)

        def tx(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (_PATIENT_SECRET, candidate))
            return conn.execute("SELECT value FROM secrets WHERE name = ?", (_PATIENT_SECRET,)).fetchone()[0]

        return self._write(tx)

    def record_sweep(self, sweep: SweepRecord, trials: Iterable[SweepTrial]) -> int:
        """Store a sweep and its trials' runs in one transaction; return the sweep's id. A sweep with the same
        ``sweep_key`` keeps its id and creation time, and its trials are replaced by ``trials``."""
        row = dataclasses.replace(sweep, spec=canonical_json(sweep.spec), created_at=sweep.created_at or utc_now())
        trials = list(trials)

        def tx(conn: sqlite3.Connection) -> int:
            existing = conn.execute("SELECT id FROM sweeps WHERE sweep_key = ?", (row.sweep_key,)).fetchone()
            if existing is None:
                cur = conn.execute(f"INSERT INTO sweeps ({', '.join(_SWEEP_COLUMNS)}) VALUES "
                                   f"({', '.join('?' for _ in _SWEEP_COLUMNS)})",
                                   tuple(getattr(row, c) for c in _SWEEP_COLUMNS))
                sweep_id = int(cur.lastrowid)
            else:
                sweep_id = int(existing["id"])
                conn.execute("DELETE FROM sweep_runs WHERE sweep_id = ?", (sweep_id,))
            for t in trials:
                conn.execute(f"INSERT INTO sweep_runs ({', '.join(_SWEEP_RUN_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                             (sweep_id, int(t.run_id), int(t.trial), t.val_prauc, int(bool(t.chosen))))
            return sweep_id

        return self._write(tx)

    def sweep(self, sweep_key: str) -> SweepRecord | None:
        """The sweep with this key, or None."""
        rows = self._read("SELECT * FROM sweeps WHERE sweep_key = ?", (sweep_key,))
        return SweepRecord(**{c: rows[0][c] for c in ("id", *_SWEEP_COLUMNS)}) if rows else None

    def sweep_trials(self, sweep_id: int) -> list[SweepTrial]:
        """The runs of a sweep, ordered by trial and run id."""
        rows = self._read("SELECT * FROM sweep_runs WHERE sweep_id = ? ORDER BY trial, run_id", (int(sweep_id),))
        return [SweepTrial(int(r["run_id"]), int(r["trial"]), _opt_float(r["val_prauc"]), bool(r["chosen"]))
                for r in rows]

    def delete_run(self, run_id: int) -> bool:
        """Delete a run and its metrics; return whether a run was deleted."""

        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount > 0

        return self._write(tx)

    # ------------------------------------------------------------------ reads
    def completed_run(self, run_key: str) -> RunRecord | None:
        """The complete run with this key, or None (also None if it failed)."""
        rows = self._read(
            "SELECT * FROM runs WHERE run_key = ? AND status = 'complete'", (run_key,)
        )
        return _run_from_row(rows[0]) if rows else None

    def get_run(self, run_id: int) -> RunRecord | None:
        """The run with this id (any status), or None."""
        rows = self._read("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        return _run_from_row(rows[0]) if rows else None

    def runs(
        self,
        model: str | None = None,
        data: str | None = None,
        protocol: str | None = None,
        status: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching all given filters, ordered by id."""
        where, args = self._where(model=model, data=data, protocol=protocol, status=status)
        rows = self._read(f"SELECT * FROM runs{where} ORDER BY id", args)
        return [_run_from_row(r) for r in rows]

    def metrics_for(self, run_id: int) -> list[MetricResult]:
        """Metric rows of one run, ordered by (group, averaging, metric)."""
        rows = self._read(
            "SELECT * FROM metrics WHERE run_id = ? ORDER BY grp, averaging, metric",
            (int(run_id),),
        )
        return [_metric_from_row(r) for r in rows]

    @staticmethod
    def _where(**filters: str | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for column, value in filters.items():
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def complete_metrics(
        self,
        data: str | None = None,
        protocol: str | None = None,
        group: str | None = None,
        averaging: str | None = None,
        metric: str | None = None,
    ) -> list[tuple[RunRecord, MetricResult]]:
        """(run, metric) pairs of all complete runs matching the filters, ordered by run id.

        The raw material of the leaderboard (:func:`medrec_bench.report.leaderboard_records`
        pools it over seeds); failed runs have no metrics and never appear.
        """
        where, args = self._where(
            **{
                "r.data": data,
                "r.protocol": protocol,
                "m.grp": group,
                "m.averaging": averaging,
                "m.metric": metric,
            }
        )
        where = (where + " AND" if where else " WHERE") + " r.status = 'complete'"
        metric_cols = ", ".join(f"m.{c}" for c in _METRIC_COLUMNS)
        rows = self._read(
            f"SELECT r.*, {metric_cols} FROM runs r JOIN metrics m ON m.run_id = r.id{where}"
            " ORDER BY r.id, m.grp, m.averaging, m.metric",
            args,
        )
        runs: dict[int, RunRecord] = {}
        out = []
        for r in rows:
            run = runs.get(int(r["id"]))
            if run is None:
                run = runs[int(r["id"])] = _run_from_row(r)
            out.append((run, _metric_from_row(r)))
        return out
