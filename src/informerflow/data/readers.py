"""Reading users' files: CSV (sniffed separator and decimal mark), gzip CSV and Parquet.

The reader does not judge the data. For CSV it hands back every cell as text ("" when empty) so
that validation can quote the exact cell it rejects; ``read_table(typed=True)`` converts the
columns whose every non-empty cell is a number, for callers that just want a table.

Row numbers used throughout ingestion are *data rows*, 1-based, header not counted: the first
line after the header is data row 1. A quoted cell spanning several lines still counts as one row.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from informerflow.errors import DataError

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent.parent / "datasets" / "processed_data.csv.gz"
BUNDLED_SOURCE = "bundled:processed_data.csv"

_SEPARATORS = (",", ";", "\t")
_SNIFF_LINES = 200
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_COMMA_DECIMAL = re.compile(r"^[+-]?\d+,\d+(?:[eE][+-]?\d+)?$")
_DOT_DECIMAL = re.compile(r"^[+-]?\d*\.\d+(?:[eE][+-]?\d+)?$")
# Cells pandas would call missing; we keep them as text and decide ourselves.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "nat", "null", "none", "<na>", "#n/a", "-nan"})


@dataclass
class RawTable:
    """A file's cells plus how they were read."""

    frame: pd.DataFrame  # CSV: object columns of str; Parquet: the stored dtypes
    fmt: str  # "csv" or "parquet"
    sep: str | None = None
    decimal: str = "."
    warnings: list[str] = field(default_factory=list)
    # 1-based data rows with more fields than the header (the extra fields are not read), and
    # rows with no content at all.
    long_rows: list[int] = field(default_factory=list)
    blank_rows: list[int] = field(default_factory=list)
    header_fields: int = 0


def read_table(path: str | Path, typed: bool = True) -> pd.DataFrame:
    """Read a CSV (``,`` ``;`` or tab, decimal point or comma), a gzip CSV or a Parquet file.

    The format is recognised from the content (gzip and Parquet magic bytes), not the suffix.

    Args:
        path: the file to read.
        typed: convert CSV columns whose every non-empty cell is a number to float64 (empty
            cells become NaN). With False every CSV cell is returned as the text in the file.

    Raises:
        DataError: the file is missing, empty, not text, or not parseable as a table.
    """
    path = Path(path)
    table = parse_table(unpack(read_bytes(path), str(path)), str(path))
    if not typed or table.fmt != "csv":
        return table.frame
    return table.frame.apply(lambda col: _maybe_numeric(col, table.decimal))


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or a DataError that names the path."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check data.path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a file; set data.path to a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


def unpack(raw: bytes, source: str) -> bytes:
    """The content of a gzip file, or ``raw`` itself when it is not compressed."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: looks gzip-compressed but cannot be unpacked ({exc})") from None


def parse_table(raw: bytes, source: str) -> RawTable:
    """Read uncompressed bytes as Parquet (by its magic bytes) or else as CSV text."""
    if raw.startswith(_PARQUET_MAGIC):
        return _read_parquet(raw, source)
    return _read_csv(raw, source)


def _read_parquet(raw: bytes, source: str) -> RawTable:
    try:
        frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises many types; all mean "not a usable Parquet file"
        raise DataError(f"{source}: not a readable Parquet file ({exc})") from None
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()  # a stored DatetimeIndex is usually the time column
    frame.columns = [str(c) for c in frame.columns]
    return RawTable(frame.reset_index(drop=True), "parquet")


def _read_csv(raw: bytes, source: str) -> RawTable:
    warnings: list[str] = []
    if b"\x00" in raw[:4096]:
        raise DataError(f"{source}: holds binary data, not CSV text; expected CSV or Parquet")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = raw.decode("latin-1")
        warnings.append(f"{source}: not valid UTF-8 (byte {exc.start}); read as Latin-1")
    if not text.strip():
        raise DataError(f"{source}: the file is empty; expected a header line and data rows")

    lines = [line for line in text.splitlines()[:_SNIFF_LINES] if line.strip()]
    sep = sniff_separator(lines)
    decimal = sniff_decimal(lines[1:], sep)
    try:
        records = list(csv.reader(io.StringIO(text.lstrip("\r\n")), delimiter=sep))
    except csv.Error as exc:
        raise DataError(f"{source}: cannot be read as CSV with separator {sep!r} ({exc})") from None
    header, rows = _unique_names(records[0]), records[1:]
    width = len(header)
    long_rows = [i for i, row in enumerate(rows, start=1) if len(row) > width]
    blank_rows = [i for i, row in enumerate(rows, start=1) if not "".join(row).strip()]
    # Short rows get empty cells; overlong rows are cut and reported by the caller.
    cells = [row[:width] + [""] * (width - len(row)) for row in rows]
    frame = pd.DataFrame(cells, columns=header, dtype=object)
    log.debug("%s: CSV, separator %r, decimal %r, %d rows", source, sep, decimal, len(frame))
    return RawTable(frame, "csv", sep=sep, decimal=decimal, warnings=warnings,
                    long_rows=long_rows, blank_rows=blank_rows, header_fields=width)


def _unique_names(header: list[str]) -> list[str]:
    """Names made unique as pandas does (``v``, ``v.1``); a blank one becomes ``Unnamed: i``."""
    names: list[str] = []
    for i, raw in enumerate(header):
        name = raw.strip() or f"Unnamed: {i}"
        base, k = name, 0
        while name in names:
            k += 1
            name = f"{base}.{k}"
        names.append(name)
    return names


def sniff_separator(lines: list[str]) -> str:
    """Pick the separator that splits the header and the following lines into equal field counts.

    The most fields wins; a candidate whose lines disagree with the header loses, which is how
    ``;``-separated files with decimal commas are told apart from ``,``-separated ones.
    """
    best, best_fields = ",", 1
    for sep in _SEPARATORS:
        counts = [len(row) for row in csv.reader(lines, delimiter=sep)]
        if not counts or counts[0] < 2:
            continue
        agree = sum(c == counts[0] for c in counts) / len(counts)
        if agree >= 0.9 and counts[0] > best_fields:
            best, best_fields = sep, counts[0]
    return best


def sniff_decimal(lines: list[str], sep: str) -> str:
    """``","`` when numbers like ``5,827`` outnumber ``5.827`` (never for comma-separated files)."""
    if sep == ",":
        return "."
    comma = dot = 0
    for row in csv.reader(lines, delimiter=sep):
        for cell in row:
            cell = cell.strip()
            comma += bool(_COMMA_DECIMAL.match(cell))
            dot += bool(_DOT_DECIMAL.match(cell))
    return "," if comma > dot else "."


def _maybe_numeric(col: pd.Series, decimal: str) -> pd.Series:
    values, bad = to_float(col, decimal)
    return col if bad.any() else pd.Series(values, index=col.index, name=col.name)


def to_float(col: pd.Series, decimal: str = ".") -> tuple[np.ndarray, np.ndarray]:
    """Convert text or numeric cells to float64.

    Returns:
        ``(values, text_mask)``: values with NaN for missing and unreadable cells, and a mask of
        the cells that held text which is not a number (so callers can tell them from blanks).
    """
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=np.float64), np.zeros(len(col), dtype=bool)
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(col), dtype=bool)
    fast = _text_to_float(col, decimal)
    if fast is not None:
        return fast, np.zeros(len(col), dtype=bool)
    values = np.full(len(col), np.nan)
    text = np.zeros(len(col), dtype=bool)
    for i, cell in enumerate(col.tolist()):
        number = _cell_to_float(cell, decimal)
        if number is None:
            text[i] = True
        else:
            values[i] = number
    return values, text


def _text_to_float(col: pd.Series, decimal: str) -> np.ndarray | None:
    """Vectorised conversion when every cell is a plain number; None otherwise.

    numpy parses each cell as ``float()`` does (correctly rounded, so every digit of the file is
    kept). ``float()`` also takes ``1_000``; a file that writes numbers so is read as it means.
    """
    cells = col.str.replace(",", ".", regex=False) if decimal == "," else col
    try:
        return cells.to_numpy(dtype=object).astype(np.float64)
    except (ValueError, TypeError):
        return None


def _cell_to_float(cell: object, decimal: str) -> float | None:
    """The cell's number, NaN for a missing cell, None for text that is not a number."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return np.nan
    if isinstance(cell, int | float | np.number) and not isinstance(cell, bool):
        return float(cell)
    s = str(cell).strip()
    if s.lower() in MISSING_TOKENS:
        return np.nan
    if decimal == ",":
        s = s.replace(",", ".")
    try:
        return float(s)
    except ValueError:
        return None
