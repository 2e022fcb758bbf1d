"""Load and validate a REIGN-format leader-month panel.

REIGN is a **leader-month** panel: one row per leader per month in office, so a month in which
the leader changes has one row per leader for that country (the seed's 132,866 observations
include them; COUP.md's original "one row per country-month" was wrong). The row key is
(ccode, year, month, leader).

The checks a user can act on raise :class:`~riskdask.errors.InputError` naming the file, the
1-based data row (header = row 0) and the column: a missing required column, a non-numeric
value in a numeric column, a 0/1 column (``pt_attempt`` ...) holding something else, an unknown
``government`` label (named, with the 16 known ones listed), a month outside 1-12, a year
outside 1900 .. next year, a negative ``tenure_months``/``age``/``lastelection``/``loss``, and
two rows identical in every column (both rows named; ``duplicates="drop"`` keeps the first and
counts the copies instead).

Two rows with the same key that differ are **two spells** of one leader in that month: a leader
who leaves and returns within the month (REIGN's leader list has São Tomé 2003-07, Laos
1964-04, Vanuatu 2011-06, Nauru 1986-12, Moldova 2019-06 as separate spells; the rows differ in
``tenure_months``). They are kept, in file order, and counted (:attr:`LoadedPanel.spells`);
like a leader-change month they have one target per country-month for a lead target and one
league-table row per country. Rows with a missing value in a column the model
needs are not an error -- the seed "removes observations with missing values" -- but each is
counted (``exclusions``) so that nothing is dropped silently. Extra columns are accepted and
ignored; seed features the file lacks (public rebuilds have no ``precip``) are left out and
named by :func:`resolve_features`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import io
from ..errors import ConfigError, InputError
from .schema import (BINARY_COLUMNS, DEFAULT_NUMERIC_FEATURES, GOVERNMENT_TYPES, SUCCESS,
                     TARGET)

__all__ = ["ID_COLUMNS", "ROW_KEY", "NON_NEGATIVE", "FIRST_YEAR", "LoadedPanel",
           "FeatureChoice", "resolve_features", "read_reign_csv", "validate_panel",
           "identical_rows", "required_columns"]

#: Columns that identify a leader-month (``country`` is kept for the league table).
ID_COLUMNS = ("ccode", "country", "leader", "year", "month")
#: The row key of a REIGN leader-month panel: one row per leader per country-month.
ROW_KEY = ("ccode", "year", "month", "leader")
#: Columns that count months or years (``lastelection``, ``loss`` are logs of months): >= 0.
NON_NEGATIVE = ("tenure_months", "age", "lastelection", "loss")
#: Earliest plausible year (REIGN starts in 1950; the check is for typos such as 19 or 2109).
FIRST_YEAR = 1900


@dataclass(frozen=True)
class FeatureChoice:
    """The numeric features a run uses, and the seed features the file does not have.

    Attributes
    ----------
    features : list of str
        Used, in the order asked for.
    missing : list of str
        Seed features (the default list) absent from the file: left out, reported
        (``features_missing`` in summary, manifest, report). Empty when the list was explicit.
    dropped : list of str
        Removed on request (``data.drop_features``).
    explicit : bool
        Whether the list came from ``data.features`` rather than the seed's default.
    """

    features: list[str]
    missing: list[str]
    dropped: list[str]
    explicit: bool


def resolve_features(columns: Sequence[str], *, source: str,
                     features: Sequence[str] | None = None,
                     drop_features: Sequence[str] = ()) -> FeatureChoice:
    """Which numeric features to use on a file with these ``columns``.

    ``features`` None means the seed's choice (:data:`DEFAULT_NUMERIC_FEATURES`): those the file
    lacks are left out and named in ``missing`` (real REIGN releases differ: public rebuilds
    have no ``precip``). An explicit ``features`` list must be present in full: a name the file
    lacks is bad input naming it and ``data.features``. ``drop_features`` is removed from
    either list; a name in neither list is a config error (most likely a typo).
    """
    explicit = features is not None
    candidates = list(features) if explicit else list(DEFAULT_NUMERIC_FEATURES)
    unknown = [f for f in drop_features if f not in candidates]
    if unknown:
        raise ConfigError(f"data.drop_features names {', '.join(map(repr, unknown))}, which "
                          f"{'is' if len(unknown) == 1 else 'are'} not among the features "
                          f"({', '.join(candidates)})", key="data.drop_features")
    dropped = [f for f in candidates if f in set(drop_features)]
    wanted = [f for f in candidates if f not in set(drop_features)]
    present = set(map(str, columns))
    absent = [f for f in wanted if f not in present]
    if explicit and absent:
        raise InputError(f"feature {absent[0]!r} named in data.features is not in the file"
                         + (f" (nor {', '.join(map(repr, absent[1:]))})" if absent[1:] else "")
                         + "; remove it from data.features or add the column",
                         file=source, column=absent[0], key="data.features")
    used = [f for f in wanted if f in present]
    if not used:
        raise InputError("none of the numeric features is in the file "
                         f"(looked for: {', '.join(wanted)})", file=source,
                         key="data.features")
    return FeatureChoice(features=used, missing=absent, dropped=dropped, explicit=explicit)


@dataclass
class LoadedPanel:
    """A validated panel and what was excluded on the way (reason -> row count)."""

    frame: pd.DataFrame
    source: str
    n_rows_read: int
    exclusions: dict[str, int] = field(default_factory=dict)
    excluded_rows: dict[str, list[int]] = field(default_factory=dict)
    #: within-month returns: one row per leader-month with 2+ spells (ccode, country, year,
    #: month, leader, spells, source_rows)
    spells: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["ccode", "country", "year", "month", "leader", "spells", "source_rows"]))

    @property
    def spell_rows(self) -> int:
        """Rows that belong to a within-month return (every spell of such a leader-month)."""
        return int(self.spells["spells"].sum()) if len(self.spells) else 0


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


def identical_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows identical in every column to an earlier row, and that earlier row (0-based).

    Returns ``(copies, originals)``: positions of the later copies and, for each, the first
    row it repeats. Missing values compare equal (as :meth:`pandas.DataFrame.duplicated`).
    """
    copies = np.flatnonzero(frame.duplicated(keep="first").to_numpy())
    if not len(copies):
        return copies, copies
    codes = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy()
    first = pd.Series(np.arange(len(frame))).groupby(codes).transform("min").to_numpy()
    return copies, first[copies]


def validate_panel(frame: pd.DataFrame, *, source: str, numeric_features: Sequence[str],
                   use_government: bool = True, duplicates: str = "error") -> LoadedPanel:
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
    duplicates : {"error", "drop"}
        A row identical in every column to an earlier one: bad input naming both rows
        (``"error"``), or left out and counted (``"drop"``). Rows of one key that differ are
        spells and always kept.

    Returns
    -------
    LoadedPanel
        ``frame`` holds the required columns (plus ``pt_suc`` when present)
        with numeric columns as float64, ``year``/``month``/``ccode`` as int64, and a
        ``source_row`` column: the 1-based data row in the file.
    """
    n_read = len(frame)
    rows = np.arange(1, n_read + 1)
    required = required_columns(numeric_features, use_government)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"missing required column{'s' if len(missing) > 1 else ''}: "
                         f"{', '.join(missing)} "
                         f"(the file has: {', '.join(map(str, frame.columns))})",
                         file=source, column=missing[0])
    if n_read == 0:
        raise InputError("the file has no data rows", file=source)
    exclusions: dict[str, int] = {}
    excluded_rows: dict[str, list[int]] = {}
    copies, originals = identical_rows(frame)
    if len(copies) and duplicates != "drop":
        i, j = int(copies[0]), int(originals[0])
        key = ", ".join(repr(v) if isinstance(v, str) else str(v)
                        for v in (frame[c].iloc[i] for c in ROW_KEY))
        raise InputError(f"rows {j + 1} and {i + 1} are identical in every column (duplicate "
                         f"row key (ccode, year, month, leader) = ({key})): a copy of a row. "
                         "Remove it, or set data.duplicates = \"drop\" to leave copies out "
                         "(counted); rows of one key that differ are kept as spells",
                         file=source, row=i + 1, column="leader", key="data.duplicates")
    if len(copies):
        reason = "identical in every column to an earlier row (data.duplicates = \"drop\")"
        exclusions[reason] = int(len(copies))
        excluded_rows[reason] = [int(r) for r in rows[copies]]
        keep = np.ones(n_read, dtype=bool)
        keep[copies] = False
        frame, rows = frame.loc[keep], rows[keep]

    optional = [c for c in (SUCCESS,) if c in frame.columns]
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
    last_year = datetime.date.today().year + 1
    bad = (out["year"] < FIRST_YEAR) | (out["year"] > last_year)
    if bad.any():
        i = _first(bad)
        raise InputError(f"year must be {FIRST_YEAR}-{last_year}, got {out['year'].iloc[i]}",
                         file=source, row=int(keep_rows[i]), column="year")
    for c in [c for c in NON_NEGATIVE if c in out.columns]:
        v = out[c].to_numpy()
        bad = v < 0
        if bad.any():
            i = _first(bad)
            raise InputError(f"must not be negative, got {v[i]:g}", file=source,
                             row=int(keep_rows[i]), column=c)
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
    # Two rows of one key that differ: a leader's two spells in the month (kept, counted).
    in_spell = out.duplicated(subset=list(ROW_KEY), keep=False).to_numpy()
    spells = (out.loc[in_spell].groupby(list(ROW_KEY), sort=True)
              .agg(country=("country", "first"), spells=("source_row", "size"),
                   source_rows=("source_row", lambda r: [int(v) for v in r]))
              .reset_index()[["ccode", "country", "year", "month", "leader", "spells",
                              "source_rows"]])
    # Sorted by country and month; within a leader-change month the file's order is kept
    # (REIGN lists the outgoing leader first, the one in office at the month's end last).
    out = out.sort_values(["ccode", "year", "month", "source_row"],
                          kind="stable").reset_index(drop=True)
    return LoadedPanel(frame=out, source=source, n_rows_read=n_read, exclusions=exclusions,
                       excluded_rows=excluded_rows, spells=spells)
