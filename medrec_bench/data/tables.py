"""Reading raw CSV tables robustly: find the file (``.csv``/``.csv.gz``, any case), check it, read the needed columns.

Every problem with a file is a one-line :class:`DataError` naming it: a missing, unreadable or empty file; two files
of one table whose contents differ (``X.csv`` beside ``X.csv.gz``; byte-identical ones are read once, as the first
name in sorted order); gzip data under a ``.csv`` name and the reverse; a UTF-16 encoding; a wrong delimiter; a
duplicated or missing column; rows whose number of fields differs from the header's (an unquoted comma in a drug
name, a cut line), reported with their count and the line number of the first. Blank lines are skipped.

Columns are read as strings; callers parse what they need with :func:`parse_datetime`, :func:`parse_integer` and
:func:`normalize_ndc`, whose errors name the file, the column and an example value.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

import polars as pl

from .errors import DataError

_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error)
_CHUNK = 1 << 20


class Table(NamedTuple):
    """A table read by :func:`read_table`: its file name (for messages) and its columns."""

    file: str
    frame: pl.DataFrame


def _open_binary(path: Path) -> BinaryIO:
    """The file's (decompressed, for ``.gz``) bytes."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_error(path: Path, exc: BaseException) -> DataError:
    """``cannot read <path>: <the first line of the reason>``."""
    text = str(exc).strip()
    return DataError(f"cannot read {path}: {text.splitlines()[0] if text else type(exc).__name__}")


def _chunks(path: Path) -> Iterator[bytes]:
    try:
        with _open_binary(path) as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
    except _READ_ERRORS as exc:
        raise _read_error(path, exc) from None


def _content_digest(path: Path) -> bytes:
    """sha256 of the file's bytes once decompressed."""
    digest = hashlib.sha256()
    for chunk in _chunks(path):
        digest.update(chunk)
    return digest.digest()


def find_table(folder: Path, name: str) -> Path:
    """The file of table ``name`` in ``folder``: ``NAME.csv``, ``name.csv.gz`` ... (case-insensitive).

    Several files of the table (``X.csv`` beside ``X.csv.gz``) are an error unless their contents are identical.
    """
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    wanted = {f"{name.lower()}.csv", f"{name.lower()}.csv.gz"}
    matches = sorted(p for p in folder.iterdir() if p.name.lower() in wanted)
    if not matches:
        raise DataError(f"table {name} is missing in {folder} (looked for {name}.csv or {name}.csv.gz, any case)")
    for other in matches[1:]:
        if _content_digest(other) != _content_digest(matches[0]):
            raise DataError(f"table {name} has two files with different contents in {folder}: {matches[0].name} "
                            f"and {other.name}; keep one")
    return matches[0]


def _check_compression(path: Path) -> None:
    """A DataError when the file's gzip magic number and its name disagree."""
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise _read_error(path, exc) from None
    named_gz = path.name.lower().endswith(".gz")
    if gzipped and not named_gz:
        raise DataError(f"{path} is gzip-compressed; rename it to {path.name}.gz")
    if named_gz and not gzipped:
        raise DataError(f"{path} is not gzip-compressed; rename it to {path.name[:-3]}")


def _header_fields(path: Path) -> list[str]:
    """The header's column names; a DataError for a wrong compression, an empty file, a UTF-16 encoding, a wrong
    delimiter or a duplicated name."""
    _check_compression(path)
    try:
        with _open_binary(path) as fh:
            line = fh.readline()
    except _READ_ERRORS as exc:
        raise _read_error(path, exc) from None
    if line.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in line:
        raise DataError(f"{path}: encoding UTF-16 detected, expected UTF-8 (re-save the file as UTF-8)")
    header = line.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if not header:
        raise DataError(f"{path} is empty (no header line)")
    fields = [f.strip() for f in next(csv.reader([header]))]
    if len(fields) == 1:
        for sep, label in _DELIMITERS.items():
            if sep in header:
                raise DataError(f"{path} looks {label}-delimited; MIMIC tables must be comma-separated")
    lower = [f.lower() for f in fields]
    for name in lower:
        if lower.count(name) > 1:
            raise DataError(f"{path}: column {name!r} appears {lower.count(name)} times in the header; "
                            f"each column must appear once")
    return fields


def _open_text(path: Path) -> TextIO:
    """The file as UTF-8 text for :mod:`csv` (decompressed for ``.gz``)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _scan_rows(fh: TextIO, path: Path, n_fields: int) -> tuple[list[int], int, tuple[int, int]]:
    """Read the CSV records of ``fh`` (the file ``path``) to the end: the 0-based indices of the blank data rows, the
    number of other rows without ``n_fields`` fields and (line, fields) of the first of them."""
    reader = csv.reader(fh)
    blank: list[int] = []
    bad, first, start = 0, (0, 0), 1
    try:
        next(reader, None)
        start = reader.line_num + 1
        for row, fields in enumerate(reader):
            if len(fields) != n_fields:
                if not fields:
                    blank.append(row)
                else:
                    bad += 1
                    first = first if bad > 1 else (start, len(fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: the row from line {start} is not valid CSV ({exc}; an unbalanced quote?)") from None
    return blank, bad, first


def _check_rows(path: Path, n_fields: int) -> list[int]:
    """A DataError when any row has another number of fields than the header's ``n_fields`` (polars would fill a
    short row with nulls and, reading only some columns, take a long row's fields from the wrong columns); else the
    0-based indices of the blank data rows. Rows are CSV records: a quoted value may hold commas and line breaks."""
    try:
        with _open_text(path) as fh:
            blank, bad, first = _scan_rows(fh, path, n_fields)
    except (UnicodeDecodeError, *_READ_ERRORS) as exc:
        raise _read_error(path, exc) from None
    if bad:
        raise DataError(f"{path}: {bad} row(s) do not have the header's {n_fields} fields; the first, on line "
                        f"{first[0]}, has {first[1]} (an unquoted comma in a value, or a cut line?)")
    return blank


def read_table(folder: Path, name: str, columns: list[str]) -> Table:
    """Read ``columns`` (lower-case names) of table ``name`` as strings; the frame's columns are lower-case.

    Raises DataError for every problem listed in the module docstring, a missing column and an empty table.
    """
    path = find_table(folder, name)
    fields = _header_fields(path)
    by_lower = {f.lower(): f for f in fields}
    missing = [c for c in columns if c not in by_lower]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r} (columns: {', '.join(fields)})")
    blank = _check_rows(path, len(fields))
    try:
        frame = pl.read_csv(path, columns=[by_lower[c] for c in columns], infer_schema=False, null_values=[""])
    except (pl.exceptions.PolarsError, *_READ_ERRORS) as exc:
        raise _read_error(path, exc) from None
    if blank:
        frame = frame.with_row_index("__row").filter(~pl.col("__row").is_in(blank)).drop("__row")
    if frame.height == 0:
        raise DataError(f"{path} has a header but no rows")
    return Table(path.name, frame.rename({by_lower[c]: c for c in columns}))


def _parsed(frame: pl.DataFrame, column: str, parsed: pl.Expr, file: str, expected: str) -> pl.DataFrame:
    """``column`` replaced by ``parsed``; a DataError naming the file, column and an example when a non-empty
    value does not parse."""
    raw = pl.col(column).str.strip_chars()
    out = frame.with_columns(parsed.alias(column), raw.alias("__raw"))
    bad = out.filter(pl.col(column).is_null() & pl.col("__raw").is_not_null() & (pl.col("__raw") != ""))
    if bad.height:
        raise DataError(f"{file} column {column}: {bad.height} value(s) do not parse as {expected}, "
                        f"e.g. {bad['__raw'][0]!r}")
    return out.drop("__raw")


_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def parse_datetime(frame: pl.DataFrame, column: str, file: str, required: bool = True) -> pl.DataFrame:
    """Parse string ``column`` into a Datetime column (MIMIC formats). A non-empty value that does not parse,
    or an empty one where ``required``, is a DataError naming the file, column and an example value."""
    raw = pl.col(column).str.strip_chars()
    parsed = pl.coalesce([raw.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _DATETIME_FORMATS])
    out = _parsed(frame, column, parsed, file, "dates (expected YYYY-MM-DD HH:MM:SS)")
    if required:
        empty = out.filter(pl.col(column).is_null())
        if empty.height:
            raise DataError(f"{file} column {column}: {empty.height} row(s) have no date")
    return out


def integer_values(expr: pl.Expr) -> pl.Expr:
    """Strings -> Int64: ``12``, `` 12 `` and integral floats such as ``12.0`` (pandas' way of writing an integer
    column with gaps) are 12; empty values, text and non-integral numbers are null."""
    s = expr.str.strip_chars()
    number = s.cast(pl.Float64, strict=False)
    integral = number.is_finite() & (number == number.floor()) & (number.abs() < 2**53)
    return pl.coalesce(s.cast(pl.Int64, strict=False), pl.when(integral).then(number.cast(pl.Int64)))


def parse_integer(frame: pl.DataFrame, column: str, file: str) -> pl.DataFrame:
    """Parse string ``column`` into Int64 (:func:`integer_values`); empty stays null, any other value that is not
    an integer is a DataError naming the file, column and an example value."""
    return _parsed(frame, column, integer_values(pl.col(column)), file, "integers")


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
