"""Load and validate a REIGN-format country-month panel.

The checks a user can act on raise :class:`~riskdask.errors.InputError` naming the file, the
1-based data row (header = row 0) and the column: a missing required column, a non-numeric
value in a numeric column, a 0/1 column (``pt_attempt`` ...) holding something else, an unknown
``government`` label (named, with the 16 known ones listed), a month outside 1-12, duplicate
country-month rows. Rows with a missing value in a column the model needs are not an error --
the seed "removes observations with missing values" -- but each is counted (``exclusions``) so
that nothing is dropped silently. Extra columns are accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from .schema import BINARY_COLUMNS, GOVERNMENT_TYPES, SUCCESS, TARGET

__all__ = ["ID_COLUMNS", "LoadedPanel", "read_reign_csv", "validate_panel", "required_columns"]

#: Columns that identify a country-month (``country`` is kept for the league table).
ID_COLUMNS = ("ccode", "country", "year", "month")


@dataclass
class LoadedPanel:
    """A validated panel and what was excluded on the way (reason -> row count)."""

    frame: pd.DataFrame
    source: str
    n_rows_read: int
    exclusions: dict[str, int] = field(default_factory=dict)
    excluded_rows: dict[str, list[int]] = field(default_factory=dict)


def required_columns(numeric_features: Sequence[str], use_government: bool = True) -> list[str]:
    """Columns a file must have: identifiers, the target, ``government``, the numeric features."""
    cols = list(ID_COLUMNS) + [TARGET] + (["government"] if use_government else [])
    cols += [c for c in numeric_features if c not in cols]
    return cols


def read_reign_csv(path: str | Path) -> pd.DataFrame:
    """Read a REIGN file as pandas types it (:func:`riskdask.io.read_table`; types are
    checked by :func:`validate_panel`)."""
    return io.read_table(path, what="REIGN file", text=False, comment=None)


def _first(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _to_numeric(frame: pd.DataFrame, column: str, source: str, rows: np.ndarray) -> pd.Series:
    """The column as float64 (missing values NaN); a value that is not a number is an error."""
    return pd.Series(io.to_numeric(frame[column], file=source, column=column, rows=rows,
                                   missing="nan"), index=frame.index)


def validate_panel(frame: pd.DataFrame, *, source: str, numeric_features: Sequence[str],
                   use_government: bool = True) -> LoadedPanel:
    """Check a raw REIGN frame and return the clean panel, sorted by country and month.

    Parameters
    ----------
    frame : DataFrame
        As read from the CSV (any extra columns allowed).
    source : str
        File name used in error messages and the manifest.
    numeric_features : sequence of str
        The numeric columns the model will use (required, must be numbers).
    use_government : bool
        Whether ``government`` is required (it is one-hot encoded into 16 features).

    Returns
    -------
    LoadedPanel
        ``frame`` holds the required columns (plus ``leader`` and ``pt_suc`` when present)
        with numeric columns as float64, ``year``/``month``/``ccode`` as int64, and a
        ``source_row`` column: the 1-based data row in the file.
    """
    n_read = len(frame)
    rows = np.arange(1, n_read + 1)
    required = required_columns(numeric_features, use_government)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"missing required column{'s' if len(missing) > 1 else ''}: "
                         f"{', '.join(missing)} (the file has: {', '.join(map(str, frame.columns))})",
                         file=source, column=missing[0])
    if n_read == 0:
        raise InputError("the file has no data rows", file=source)

    optional = [c for c in ("leader", SUCCESS) if c in frame.columns]
    text = [c for c in ("country", "government", "leader") if c in required + optional]
    numeric = [c for c in required + optional if c not in text]
    out = pd.DataFrame({"source_row": rows})
    for c in numeric:
        out[c] = _to_numeric(frame, c, source, rows).to_numpy()
    for c in text:
        col = frame[c]
        out[c] = col.where(col.isna(), col.astype(str)).to_numpy()

    # Missing values: excluded and counted (the seed drops incomplete observations).
    needed = [c for c in required]
    na = out[needed].isna()
    exclusions: dict[str, int] = {}
    excluded_rows: dict[str, list[int]] = {}
    if na.to_numpy().any():
        any_na = na.any(axis=1).to_numpy()
        cols = [c for c in needed if na[c].any()]
        reason = f"missing value in required column(s): {', '.join(cols)}"
        exclusions[reason] = int(any_na.sum())
        excluded_rows[reason] = [int(r) for r in rows[any_na]]
        out = out.loc[~any_na].reset_index(drop=True)
    if out.empty:
        raise InputError("no complete rows: every row misses a required value", file=source)
    keep_rows = out["source_row"].to_numpy()

    for c in [c for c in BINARY_COLUMNS if c in out.columns]:
        v = out[c].to_numpy()
        bad = ~np.isnan(v) & (v != 0) & (v != 1)
        if bad.any():
            i = _first(bad)
            raise InputError(f"must be 0 or 1, got {v[i]:g}", file=source,
                             row=int(keep_rows[i]), column=c)
    for c in ("ccode", "year", "month"):
        v = out[c].to_numpy()
        bad = v != np.round(v)
        if bad.any():
            i = _first(bad)
            raise InputError(f"must be a whole number, got {v[i]:g}", file=source,
                             row=int(keep_rows[i]), column=c)
        out[c] = v.astype(np.int64)
    bad = (out["month"] < 1) | (out["month"] > 12)
    if bad.any():
        i = _first(bad)
        raise InputError(f"month must be 1-12, got {out['month'].iloc[i]}", file=source,
                         row=int(keep_rows[i]), column="month")
    if SUCCESS in out.columns:
        v = out[SUCCESS].to_numpy()
        bad = (v == 1) & (out[TARGET].to_numpy() != 1)
        if bad.any():
            i = _first(bad)
            raise InputError(f"{SUCCESS} = 1 (successful coup) but {TARGET} = 0: a success is "
                             "an attempt", file=source, row=int(keep_rows[i]), column=TARGET)
    if use_government:
        known = set(GOVERNMENT_TYPES)
        bad = ~out["government"].isin(known).to_numpy()
        if bad.any():
            i = _first(bad)
            raise InputError(f"unknown government type {out['government'].iloc[i]!r}; known "
                             f"types: {', '.join(GOVERNMENT_TYPES)}", file=source,
                             row=int(keep_rows[i]), column="government")
    dup = out.duplicated(subset=["ccode", "year", "month"], keep="first").to_numpy()
    if dup.any():
        i = _first(dup)
        key = out.iloc[i][["ccode", "year", "month"]]
        first = out.loc[(out["ccode"] == key["ccode"]) & (out["year"] == key["year"])
                        & (out["month"] == key["month"]), "source_row"].iloc[0]
        raise InputError(f"duplicate country-month: ccode {key['ccode']}, {key['year']}-"
                         f"{key['month']:02d} already on row {first}", file=source,
                         row=int(keep_rows[i]), column="ccode")
    out = out.sort_values(["ccode", "year", "month"], kind="stable").reset_index(drop=True)
    return LoadedPanel(frame=out, source=source, n_rows_read=n_read, exclusions=exclusions,
                       excluded_rows=excluded_rows)
