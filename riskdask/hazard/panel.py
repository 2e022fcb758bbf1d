"""The NPO funding panel: loading, validation, and the per-NPO at-risk table.

Input shape (CSV or Parquet, one row per NPO-year, long format)::

    npo_id, year, grant, field, function, founded_year, closed_year

``grant`` is 1 if a ministerial support grant was received that year, else 0. ``field``,
``function``, ``founded_year`` and ``closed_year`` describe the NPO and must be the same on
all its rows; ``closed_year`` is empty for NPOs still active at the end of the period.

Rules (seed Section 1: the 1997-2007 panel, closures counted from 1998)
-----------------------------------------------------------------------
Errors (:class:`~riskdask.errors.InputError`, naming file, 1-based data row and column):
a missing column; a duplicate (npo_id, year); ``grant`` not 0/1; a year outside the period;
a closure year before the period; a year after the NPO closed or before it was founded;
a year missing between ``max(founded_year, start)`` and ``min(closed_year, end)``;
NPO attributes that differ between rows of the same NPO.

Exclusions (counted, reported in the manifest, never silent):

* ``no grant in any year`` -- the seed's sample only has NPOs funded at least once;
* ``no break in grants`` -- funded every year it was alive: never at risk (seed Section 1,
  "NPOs that did not undergo funding instability were excluded");
* ``closed before closures are counted`` -- closed in the period but before
  ``first_closure_year`` (seed: "NPO failures in the sample could begin only from 1998").
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from .timeatrisk import NOT_ALIVE, SpellFeatures, spell_features

__all__ = ["COLUMNS", "Period", "NPOPanel", "read_panel_file", "build_panel"]

COLUMNS = ("npo_id", "year", "grant", "field", "function", "founded_year", "closed_year")
NPO_ATTRIBUTES = ("field", "function", "founded_year", "closed_year")


@dataclass(frozen=True)
class Period:
    """Study period ``[start, end]`` (inclusive) and the first year closures count."""

    start: int = 1997
    end: int = 2007
    first_closure_year: int = 1998

    @property
    def years(self) -> np.ndarray:
        return np.arange(self.start, self.end + 1)


@dataclass
class NPOPanel:
    """At-risk NPOs and their features; what the hazard analysis works on.

    Attributes
    ----------
    npos : pandas.DataFrame
        One row per at-risk NPO: ``npo_id, field, function, founded_year, closed_year,
        first_break_year, end_year, closed`` and the features ``N0, N1, X, Z``.
    grants : ndarray of int8, shape (n_at_risk, n_years)
        1 / 0 / -1 (not alive) per year of the period.
    features : SpellFeatures
    exclusions : dict
        ``reason -> number of NPOs``.
    excluded_ids : dict
        ``reason -> npo_ids`` of the excluded NPOs.
    n_rows, n_npos_in_file : int
    """

    npos: pd.DataFrame
    grants: np.ndarray
    features: SpellFeatures
    period: Period
    exclusions: dict = dc_field(default_factory=dict)
    excluded_ids: dict = dc_field(default_factory=dict)
    n_rows: int = 0
    n_npos_in_file: int = 0

    @property
    def event(self) -> np.ndarray:
        return self.npos["closed"].to_numpy(dtype=bool)


def read_panel_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet panel (by extension) with :func:`riskdask.io.read_table`."""
    return io.read_table(path, what="panel", text=False, comment=None,
                         dtype={"npo_id": str, "field": str, "function": str})


def _integer_column(frame: pd.DataFrame, col: str, source: str, *, allow_missing: bool) -> np.ndarray:
    """Column as float array of whole numbers (nan where missing and allowed)."""
    return io.to_numeric(frame[col], file=source, column=col, integer=True,
                         missing="nan" if allow_missing else "error")


def build_panel(frame: pd.DataFrame, period: Period, *, source: str = "<panel>") -> NPOPanel:
    """Validate a long NPO-year panel and derive the at-risk NPO table (seed Appendix A).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns :data:`COLUMNS`, one row per NPO-year.
    period : Period
    source : str
        File name used in error messages.

    Returns
    -------
    NPOPanel

    Raises
    ------
    InputError
        For every malformed row (see the module docstring), naming file, row and column.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"missing column (need {', '.join(COLUMNS)})", file=source, column=missing[0])
    if len(frame) == 0:
        raise InputError("the panel has no rows", file=source)
    frame = frame.reset_index(drop=True)
    rowno = np.arange(1, len(frame) + 1)

    ids = frame["npo_id"]
    if ids.isna().any():
        i = int(np.argmax(ids.isna().to_numpy()))
        raise InputError("empty npo_id", file=source, row=i + 1, column="npo_id")
    ids = ids.astype(str).to_numpy()

    grant_num = pd.to_numeric(frame["grant"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(grant_num, (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"grant must be 0 or 1, got {frame['grant'].iloc[i]!r}",
                         file=source, row=i + 1, column="grant")
    year = _integer_column(frame, "year", source, allow_missing=False).astype(np.int64)
    founded = _integer_column(frame, "founded_year", source, allow_missing=False)
    closed = _integer_column(frame, "closed_year", source, allow_missing=True)

    outside = (year < period.start) | (year > period.end)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputError(f"year {year[i]} is outside the study period {period.start}-{period.end}",
                         file=source, row=i + 1, column="year")
    early = ~np.isnan(closed) & (closed < period.start)
    if early.any():
        i = int(np.argmax(early))
        raise InputError(f"closure year {int(closed[i])} is before the study period "
                         f"{period.start}-{period.end} (NPOs closed before the period are not in the sample)",
                         file=source, row=i + 1, column="closed_year")
    late_close = ~np.isnan(closed) & (closed > period.end)
    if late_close.any():
        i = int(np.argmax(late_close))
        raise InputError(f"closure year {int(closed[i])} is after the study period (leave it empty "
                         f"for NPOs active at {period.end})", file=source, row=i + 1, column="closed_year")
    after_close = ~np.isnan(closed) & (year > closed)
    if after_close.any():
        i = int(np.argmax(after_close))
        raise InputError(f"row for {year[i]} is after the NPO closed in {int(closed[i])}",
                         file=source, row=i + 1, column="year")
    before_founding = year < founded
    if before_founding.any():
        i = int(np.argmax(before_founding))
        raise InputError(f"row for {year[i]} is before the NPO was founded in {int(founded[i])}",
                         file=source, row=i + 1, column="year")

    dup = pd.Series(list(zip(ids, year))).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise InputError(f"duplicate row for npo_id {ids[i]!r}, year {year[i]}",
                         file=source, row=i + 1, column="year")

    # NPO attributes must agree across an NPO's rows
    attrs = pd.DataFrame({"npo_id": ids, "field": frame["field"].astype(str).to_numpy(),
                          "function": frame["function"].astype(str).to_numpy(),
                          "founded_year": founded, "closed_year": closed})
    for col in NPO_ATTRIBUTES:
        first = attrs.groupby("npo_id", sort=False)[col].transform("first")
        differs = ~((first == attrs[col]) | (first.isna() & attrs[col].isna()))
        if differs.any():
            i = int(np.argmax(differs.to_numpy()))
            raise InputError(f"{col} differs between rows of npo_id {ids[i]!r}",
                             file=source, row=i + 1, column=col)
    for col in ("field", "function"):
        empty = frame[col].isna().to_numpy() | (attrs[col].str.strip() == "").to_numpy()
        if empty.any():
            i = int(np.argmax(empty))
            raise InputError(f"empty {col}", file=source, row=i + 1, column=col)

    npo_codes, npo_index = np.unique(ids, return_inverse=True)
    n_npo = npo_codes.size
    years = period.years
    G = np.full((n_npo, years.size), NOT_ALIVE, dtype=np.int8)
    G[npo_index, year - period.start] = grant_num.astype(np.int8)

    first_row = np.zeros(n_npo, dtype=np.int64)
    first_row[npo_index[::-1]] = rowno[::-1] - 1  # first row of each NPO
    founded_npo = founded[first_row]
    closed_npo = closed[first_row]
    alive_from = np.maximum(founded_npo, period.start).astype(np.int64)
    alive_to = np.where(np.isnan(closed_npo), period.end, np.nan_to_num(closed_npo)).astype(np.int64)
    cols = years[None, :]
    should_have = (cols >= alive_from[:, None]) & (cols <= alive_to[:, None])
    gap = should_have & (G == NOT_ALIVE)
    if gap.any():
        k = int(np.argmax(gap.any(axis=1)))
        y = int(years[np.argmax(gap[k])])
        raise InputError(f"npo_id {npo_codes[k]!r} has no row for {y} (one row per year from "
                         f"{alive_from[k]} to {alive_to[k]} is needed)",
                         file=source, row=int(first_row[k]) + 1, column="year")

    end_index = (alive_to - period.start).astype(np.int64)
    feats = spell_features(G, end_index)
    ever_grant = (G == 1).any(axis=1)
    closed_flag = ~np.isnan(closed_npo)
    closed_early = closed_flag & (closed_npo < period.first_closure_year)

    # mutually exclusive reasons, in this order, so the counts add up to the NPOs dropped
    no_grant = ~ever_grant
    early = ever_grant & closed_early
    no_break = ever_grant & ~closed_early & ~feats.at_risk
    exclusions = {
        "no grant in any year": int(np.count_nonzero(no_grant)),
        "closed before closures are counted": int(np.count_nonzero(early)),
        "no break in grants (never at risk)": int(np.count_nonzero(no_break)),
    }
    excluded_ids = {"no grant in any year": npo_codes[no_grant].tolist(),
                    "closed before closures are counted": npo_codes[early].tolist(),
                    "no break in grants (never at risk)": npo_codes[no_break].tolist()}
    keep = ~(no_grant | early | no_break)
    if not keep.any():
        raise InputError("no NPO is at risk (none had a grant followed by a break in grants)", file=source)

    kept = np.flatnonzero(keep)
    f = spell_features(G[kept], end_index[kept])
    npos = pd.DataFrame({
        "npo_id": npo_codes[kept],
        "field": attrs["field"].to_numpy()[first_row[kept]],
        "function": attrs["function"].to_numpy()[first_row[kept]],
        "founded_year": founded_npo[kept].astype(np.int64),
        "closed_year": pd.array(np.where(closed_flag[kept], closed_npo[kept], np.nan), dtype="Int64"),
        "first_break_year": period.start + f.break_index,
        "end_year": period.start + f.end_index,
        "closed": closed_flag[kept],
        "N0": f.N0, "N1": f.N1, "X": f.X, "Z": f.Z,
    })
    return NPOPanel(npos=npos, grants=G[kept], features=f, period=period,
                    exclusions=exclusions, excluded_ids=excluded_ids,
                    n_rows=len(frame), n_npos_in_file=int(n_npo))
