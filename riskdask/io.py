"""The one I/O kit every job reads its inputs with.

* :func:`read_table` -- a CSV or Parquet file as a DataFrame, refused with one located message
  (:class:`~riskdask.errors.InputError`, exit 2) when the path is missing, a directory, not a
  readable file, of an unknown type, empty, or when a CSV line has more or fewer fields than
  the header (pandas alone pads short lines with NaN without a word).
* :func:`to_numeric` -- one column as float64, the first bad cell named by file, row, column.
* :class:`Record` -- the inputs (path, SHA-256, rows) and row exclusions a run records for its
  manifest: nothing is dropped silently.

Rows are counted as a spreadsheet user counts them: the header is row 0, the first data row is
row 1 (comment and blank lines of a CSV are not rows).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "check_input_path", "read_table", "to_numeric",
           "text_column", "fingerprint_file", "to_jsonable", "Record"]

CSV_SUFFIXES = (".csv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and pydantic models into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    return obj


def fingerprint_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_input_path(path: str | Path, what: str = "file",
                     suffixes: Sequence[str] = CSV_SUFFIXES + PARQUET_SUFFIXES) -> Path:
    """``path`` as a Path if it is a readable, non-empty file of a known type; else InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found", file=path)
    if path.is_dir():
        raise InputError(f"{what} is a directory; give a file "
                         f"({' or '.join(suffixes)})", file=path)
    if not path.is_file():
        raise InputError(f"{what} is not a regular file", file=path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{what} has an unsupported type {path.suffix or '(no extension)'!r}; "
                         f"expected {', '.join(suffixes)}", file=path)
    try:
        with open(path, "rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", file=path) from None
    if not first:
        raise InputError(f"{what} is empty", file=path)
    return path


def _check_field_counts(path: Path, what: str, comment: str | None) -> None:
    """Every CSV record has as many fields as the header (quoted commas understood)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            header, row = None, 0
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line: pandas skips it too
                if comment and fields[0].lstrip().startswith(comment):
                    continue
                if header is None:
                    header = len(fields)
                    continue
                row += 1
                if len(fields) != header:
                    raise InputError(f"{what}: line {reader.line_num} has {len(fields)} fields, "
                                     f"the header has {header}", file=path, row=row)
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                         file=path) from None
    except csv.Error as exc:
        raise InputError(f"{what} is not a readable CSV file: {exc}", file=path) from None


def read_table(path: str | Path, *, what: str = "file", required: Sequence[str] = (),
               text: bool = True, comment: str | None = "#", dtype: Any = None,
               allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV or Parquet input with every problem located.

    Parameters
    ----------
    path : path
        ``.csv``/``.txt`` (comma-separated, header line) or ``.parquet``/``.pq``.
    what : str
        What the file is, for messages ("portfolio", "REIGN file" ...).
    required : sequence of str
        Columns that must be present.
    text : bool
        CSV only: every cell as a string, empty cells as ``""`` (then :func:`to_numeric`
        decides); otherwise pandas' own typing and missing-value reading (``dtype`` applies).
    comment : str or None
        CSV comment character.
    allow_empty : bool
        Accept a file with a header and no data rows.

    Returns
    -------
    pandas.DataFrame
        Column names stripped of surrounding white space.
    """
    path = check_input_path(path, what)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            df = pd.read_parquet(path)
        else:
            _check_field_counts(path, what, comment)
            if text:
                df = pd.read_csv(path, comment=comment, dtype=str, keep_default_na=False,
                                 skipinitialspace=True)
            else:
                df = pd.read_csv(path, comment=comment, dtype=dtype, low_memory=False)
    except InputError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read {what}: {exc}", file=path) from None
    except Exception as exc:  # pyarrow's own errors: one line, not a traceback
        raise InputError(f"cannot read {what} ({type(exc).__name__}: {exc})", file=path) from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise InputError(f"missing required column (columns are: {', '.join(df.columns)})",
                             file=path, column=col)
    if len(df) == 0 and not allow_empty:
        raise InputError(f"{what} has no data rows", file=path)
    return df


def to_numeric(values: pd.Series, *, file: str | Path | None, column: str,
               rows: Sequence[int] | np.ndarray | None = None, missing: str = "error",
               integer: bool = False, finite: bool = True) -> np.ndarray:
    """One column as float64; the first bad cell is an :class:`InputError` naming its place.

    Parameters
    ----------
    values : pandas.Series
        Numbers, or text as :func:`read_table` gives it.
    file, column : where the values come from (for messages).
    rows : sequence of int, optional
        The 1-based file row of each value (default: position + 1).
    missing : {"error", "nan"}
        An empty cell (``""``, NaN, None) is an error, or NaN.
    integer : bool
        Values must be whole numbers (returned as float64 all the same).
    finite : bool
        ``inf`` is an error.
    """
    if missing not in ("error", "nan"):
        raise ValueError(f"missing must be 'error' or 'nan', got {missing!r}")
    if pd.api.types.is_bool_dtype(values):
        out = values.to_numpy(dtype=np.float64)
        absent = np.zeros(out.size, dtype=bool)
        bad = absent
    elif pd.api.types.is_numeric_dtype(values):
        out = values.to_numpy(dtype=np.float64)
        absent = np.isnan(out)
        bad = np.zeros(out.size, dtype=bool)
    else:
        text, absent = _stripped_text(values)
        text[absent] = np.nan
        out = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
        bad = ~absent & np.isnan(out)
    if finite:
        bad = bad | np.isinf(out)
    if missing == "error":
        bad = bad | absent
    if integer:
        bad = bad | (~np.isnan(out) & np.isfinite(out) & (out != np.round(out)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = int(rows[i]) if rows is not None else i + 1
        cell = values.iloc[i]
        if absent[i]:
            reason = "empty cell"
        elif integer and np.isfinite(out[i]):
            reason = f"not a whole number: {_plain(cell)}"
        else:
            reason = f"not a finite number: {_plain(cell)}"
        raise InputError(reason, file=file, row=row, column=column)
    return out


def _stripped_text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every cell as stripped text (object array, ``str(cell).strip()``) and where a cell
    is absent (NaN / None / empty after stripping) -- one pass in Python rather than the
    pandas string accessor, whose fixed cost (~0.5 ms a column) dominated reading the
    small tables (matrix, curves) every run and every what-if reads."""
    raw = values.to_numpy(dtype=object)
    text = np.array([str(v).strip() for v in raw.tolist()] or [], dtype=object)
    absent = pd.isna(raw) | (text == "")
    return text, np.asarray(absent, dtype=bool)


def text_column(values: pd.Series, *, file, column: str) -> np.ndarray:
    """A column of non-empty strings (stripped); an empty cell is an error."""
    out, empty = _stripped_text(values)
    if empty.any():
        r = int(np.flatnonzero(empty)[0])
        raise InputError("empty cell", file=file, row=r + 1, column=column)
    return out


def _plain(value: Any) -> str:
    """A cell as a user wrote it: ``'abc'``, ``2``, ``nan`` (never ``np.float64(2.0)``)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (np.generic,)):
        value = value.item()
    return str(value)


@dataclass
class Record:
    """Inputs and row exclusions of one run, for ``manifest.json``.

    Every job's ``load`` (and ``compute``, where rows are left out later) writes here; the
    runner copies both lists into the manifest and the report, and ``riskdask validate``
    prints them.
    """

    inputs: list = field(default_factory=list)
    exclusions: list = field(default_factory=list)

    def add_input(self, name: str, path: str | Path | None = None, *, rows: int | None = None,
                  fingerprint: str | None = None, description: str = "") -> None:
        """Record an input: a file (hashed) or embedded/synthetic data (give a fingerprint)."""
        self.inputs.append({"name": name, "path": str(path) if path else None,
                            "rows": None if rows is None else int(rows),
                            "sha256": fingerprint or (fingerprint_file(path) if path else None),
                            "description": description})

    def exclude(self, source: str, reason: str, count: int, rows: Sequence | None = None,
                *, unit: str = "rows") -> None:
        """Record ``count`` rows (or NPOs, ...) left out of the analysis, and why."""
        if count:
            self.exclusions.append({"source": str(source), "reason": reason, "count": int(count),
                                    "unit": unit,
                                    "rows": to_jsonable(list(rows)[:20]) if rows else None})

    @property
    def excluded_total(self) -> int:
        """Rows excluded (exclusions counted in other units, e.g. features, are not rows)."""
        return int(sum(e["count"] for e in self.exclusions if e.get("unit", "rows") == "rows"))
