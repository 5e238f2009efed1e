"""Reading raw CSV tables robustly: find the file (``.csv``/``.csv.gz``, any case), check it, read the needed columns.

Every problem becomes a one-line :class:`DataError` naming the file (and the column or value where it applies).
Columns are read as strings; callers parse what they need with :func:`parse_datetime` and :func:`normalize_ndc`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import polars as pl

from .errors import DataError

_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def find_table(folder: Path, name: str) -> Path:
    """The file of table ``name`` in ``folder``: ``NAME.csv``, ``name.csv.gz`` ... (case-insensitive)."""
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    wanted = {f"{name.lower()}.csv", f"{name.lower()}.csv.gz"}
    matches = sorted(p for p in folder.iterdir() if p.name.lower() in wanted)
    if not matches:
        raise DataError(f"table {name} is missing in {folder} (looked for {name}.csv or {name}.csv.gz, any case)")
    return matches[0]


def _header_line(path: Path) -> str:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                return fh.readline()
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def read_table(folder: Path, name: str, columns: list[str]) -> pl.DataFrame:
    """Read ``columns`` (lower-case names) of table ``name`` as strings; the frame's columns are lower-case.

    Raises DataError for a missing file, unreadable gzip, a wrong delimiter, a missing column or an empty table.
    """
    path = find_table(folder, name)
    header = _header_line(path).strip().lstrip("\ufeff")
    if not header:
        raise DataError(f"{path} is empty (no header line)")
    fields = [f.strip().strip('"') for f in header.split(",")]
    if len(fields) == 1:
        for sep, label in _DELIMITERS.items():
            if sep in header:
                raise DataError(f"{path} looks {label}-delimited; MIMIC tables must be comma-separated")
    by_lower = {f.lower(): f for f in fields}
    missing = [c for c in columns if c not in by_lower]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r} (columns: {', '.join(fields)})")
    try:
        frame = pl.read_csv(
            path,
            columns=[by_lower[c] for c in columns],
            infer_schema=False,
            null_values=[""],
        )
    except (pl.exceptions.PolarsError, OSError, EOFError, zlib.error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path}: {first}") from None
    if frame.height == 0:
        raise DataError(f"{path} has a header but no rows")
    return frame.rename({by_lower[c]: c for c in columns})


_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def parse_datetime(frame: pl.DataFrame, column: str, table: str, required: bool = True) -> pl.DataFrame:
    """Parse string ``column`` into a Datetime column (MIMIC formats). A non-empty value that does not parse,
    or an empty one where ``required``, is a DataError naming the table, column and an example value."""
    raw = pl.col(column).str.strip_chars()
    parsed = pl.coalesce([raw.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _DATETIME_FORMATS])
    out = frame.with_columns(parsed.alias(column), raw.alias("__raw"))
    bad = out.filter(pl.col(column).is_null() & pl.col("__raw").is_not_null() & (pl.col("__raw") != ""))
    if bad.height:
        raise DataError(
            f"{table}.{column}: {bad.height} value(s) do not parse as dates, e.g. {bad['__raw'][0]!r} "
            f"(expected YYYY-MM-DD HH:MM:SS)"
        )
    if required:
        empty = out.filter(pl.col(column).is_null())
        if empty.height:
            raise DataError(f"{table}.{column}: {empty.height} row(s) have no date")
    return out.drop("__raw")


def normalize_ndc(expr: pl.Expr) -> pl.Expr:
    """Normalise NDC strings to 11 digits: spaces removed; dashed forms (4-4-2, 5-3-2, 5-4-1) padded to 5-4-2.

    Values that are empty or ``0`` become null (MIMIC's placeholder for "no NDC").
    """
    s = expr.cast(pl.Utf8).str.replace_all(r"\s+", "")
    parts = s.str.split("-")
    dashed = (
        parts.list.get(0, null_on_oob=True).str.zfill(5)
        + parts.list.get(1, null_on_oob=True).str.zfill(4)
        + parts.list.get(2, null_on_oob=True).str.zfill(2)
    )
    plain = pl.when(s.str.contains(r"^\d{1,11}$")).then(s.str.zfill(11)).otherwise(s)
    out = pl.when(s.str.contains("-")).then(dashed).otherwise(plain)
    return pl.when(s.is_null() | (s == "") | s.str.contains(r"^0+$")).then(None).otherwise(out)
