"""The NPO funding panel: loading, validation, and the per-NPO at-risk table.

Input shape (CSV or Parquet, one row per NPO-year, long format)::

    npo_id, year, grant, field, function, founded_year, closed_year

``grant`` is 1 if a ministerial support grant was received that year, else 0. ``field``,
``function``, ``founded_year`` and ``closed_year`` describe the NPO and must be the same on
all its rows; ``closed_year`` is empty for NPOs still active at the end of the period.

Rules (seed Section 1: the 1997-2007 panel, closures counted from 1998)
-----------------------------------------------------------------------
Errors (:class:`~riskdask.errors.InputError`, naming file, 1-based data row and column):
a missing column; a duplicate (npo_id, year); ``grant`` not 0/1; a closure year before the
period; a year after the NPO closed or before it was founded; a year missing between
``max(founded_year, start)`` and ``min(closed_year, end)`` (other than the closure year, see
below); NPO attributes that differ between rows of the same NPO.

Real panel shapes handled and counted (:class:`PanelRules`; each switchable to an error by the
config key ``data.rules.<rule> = "error"``):

* ``rows_outside_period = "ignore"`` -- rows before ``start`` or after ``end`` are left out
  (counted in rows); panels usually cover more years than the study period;
* ``closure_after_period = "censor"`` -- ``closed_year > end``: the NPO was active at the end
  of the period, so it is censored there (counted in NPOs);
* ``missing_closure_year_row = "no_grant"`` -- no row for the closure year (the last row is the
  year before): the closure year is read as a no-grant year (counted in NPOs).

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

__all__ = ["COLUMNS", "Period", "NPOPanel", "PanelRules", "RULE_SENTENCES", "EXCLUSION_SENTENCES",
           "exclusion_sentence", "read_panel_file", "build_panel"]

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
    rule_counts : dict
        ``rule -> count`` for the :class:`PanelRules` applied (rows for ``rows_outside_period``,
        NPOs for the others); ``rule_ids`` the 1-based file rows / npo_ids.
    """

    npos: pd.DataFrame
    grants: np.ndarray
    features: SpellFeatures
    period: Period
    exclusions: dict = dc_field(default_factory=dict)
    excluded_ids: dict = dc_field(default_factory=dict)
    n_rows: int = 0
    n_npos_in_file: int = 0
    rule_counts: dict = dc_field(default_factory=dict)
    rule_ids: dict = dc_field(default_factory=dict)

    @property
    def event(self) -> np.ndarray:
        return self.npos["closed"].to_numpy(dtype=bool)


def read_panel_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet panel (by extension) with :func:`riskdask.io.read_table`."""
    return io.read_table(path, what="panel", text=False, comment=None,
                         dtype={"npo_id": str, "field": str, "function": str})


def _plain(value) -> str:
    """A cell value as a user wrote it: ``2``, ``'x'``, ``empty`` -- never ``np.int64(2)``."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "empty"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _integer_column(frame: pd.DataFrame, col: str, source: str, *, allow_missing: bool,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """Column as float array of whole numbers (nan where missing and allowed).

    ``rows`` maps positions of ``frame`` to 0-based rows of the file (for the message).
    """
    return io.to_numeric(frame[col], file=source, column=col, integer=True,
                         rows=None if rows is None else np.asarray(rows) + 1,
                         missing="nan" if allow_missing else "error")


#: Rule keys of :class:`PanelRules`, the config keys that switch them (``data.rules.<key>``) and
#: the sentence a count of each is reported with.
RULE_SENTENCES = {
    "rows_outside_period": "panel rows outside the study period, ignored",
    "closure_after_period": "NPOs closed after the study period, censored at its end (active)",
    "missing_closure_year_row": "NPOs without a row for their closure year, read as no grant "
                                "that year",
    "npos_wholly_outside_period": "NPOs all of whose rows fall outside the study period (left "
                                  "out with their rows, data.rules.rows_outside_period)",
}


@dataclass(frozen=True)
class PanelRules:
    """How :func:`build_panel` treats common shapes of real panels (each counted; each can be
    an error).

    Parameters
    ----------
    rows_outside_period : {"ignore", "error"}
        A row whose ``year`` is before ``start`` or after ``end``: left out and counted (rows),
        or an :class:`~riskdask.errors.InputError` naming the row.
    closure_after_period : {"censor", "error"}
        ``closed_year > end``: the NPO was still active at the end of the period, so it is
        censored there (treated as active), counted (NPOs); or an error.
    missing_closure_year_row : {"no_grant", "error"}
        An NPO that closed in year ``c`` but has no row for ``c`` (panels often stop at the last
        funded year): year ``c`` is read as a no-grant year, counted (NPOs); or an error. Other
        missing years stay errors.
    """

    rows_outside_period: str = "ignore"
    closure_after_period: str = "censor"
    missing_closure_year_row: str = "no_grant"

    def __post_init__(self):
        allowed = {"rows_outside_period": ("ignore", "error"),
                   "closure_after_period": ("censor", "error"),
                   "missing_closure_year_row": ("no_grant", "error")}
        for key, ok in allowed.items():
            if getattr(self, key) not in ok:
                raise ValueError(f"{key} must be one of {ok}, got {getattr(self, key)!r}")


#: Exclusion reasons (keys of ``NPOPanel.exclusions``) and the sentence each is reported with;
#: a count in NPOs, so the sentence names NPOs (the CLI prints "would exclude N rows from
#: FILE: <sentence>").
EXCLUSION_SENTENCES = {
    "no grant in any year": "NPOs (one row here = one NPO) with no grant in any year of the period",
    "closed before closures are counted": "NPOs (one row here = one NPO) that closed before "
                                          "the first year in which closures are counted",
    "no break in grants (never at risk)": "NPOs (one row here = one NPO) with no break in grants, "
                                          "never at risk",
}


def exclusion_sentence(reason: str, period: Period) -> str:
    """The reported sentence for an exclusion reason (reads after "would exclude N rows ...: ")."""
    text = EXCLUSION_SENTENCES.get(reason, reason)
    if reason == "closed before closures are counted":
        text = text.replace("the first year in which closures are counted",
                            f"{period.first_closure_year}, the first year in which closures "
                            f"are counted")
    return text


def build_panel(frame: pd.DataFrame, period: Period, *, source: str = "<panel>",
                rules: PanelRules = PanelRules()) -> NPOPanel:
    """Validate a long NPO-year panel and derive the at-risk NPO table (seed Appendix A).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns :data:`COLUMNS`, one row per NPO-year.
    period : Period
    source : str
        File name used in error messages.
    rules : PanelRules
        Rows outside the period, closures after it, missing closure-year rows: handled and
        counted (``NPOPanel.rule_counts``), or errors.

    Returns
    -------
    NPOPanel

    Raises
    ------
    InputError
        For every malformed row (see the module docstring), naming file, 1-based row and column.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"missing column (need {', '.join(COLUMNS)})", file=source,
                         column=missing[0])
    if len(frame) == 0:
        raise InputError("the panel has no rows", file=source)
    frame = frame.reset_index(drop=True)
    n_rows = len(frame)

    # rows outside the period first: their other cells are never read
    year_all = _integer_column(frame, "year", source, allow_missing=False).astype(np.int64)
    outside = (year_all < period.start) | (year_all > period.end)
    rule_counts = {k: 0 for k in RULE_SENTENCES}
    rule_ids: dict = {k: [] for k in RULE_SENTENCES}
    if outside.any():
        if rules.rows_outside_period == "error":
            i = int(np.argmax(outside))
            raise InputError(f"year {int(year_all[i])} is outside the study period "
                             f"{period.start}-{period.end} (data.rules.rows_outside_period = "
                             f"'ignore' leaves such rows out)", file=source, row=i + 1,
                             column="year")
        rule_counts["rows_outside_period"] = int(np.count_nonzero(outside))
        rule_ids["rows_outside_period"] = (np.flatnonzero(outside) + 1).tolist()  # 1-based rows
        ids_all = frame["npo_id"].astype(str).to_numpy()
        gone = np.setdiff1d(np.unique(ids_all[outside]), np.unique(ids_all[~outside]))
        rule_counts["npos_wholly_outside_period"] = int(gone.size)
        rule_ids["npos_wholly_outside_period"] = gone.tolist()
        if outside.all():
            raise InputError(f"no row of the panel is inside the study period "
                             f"{period.start}-{period.end}", file=source, column="year")
    orig = np.flatnonzero(~outside)  # 0-based file row of every kept row
    frame = frame.loc[~outside].reset_index(drop=True)
    year = year_all[~outside]

    def where(mask) -> int:
        """1-based file row of the first True in ``mask``."""
        return int(orig[int(np.argmax(mask))]) + 1

    ids = frame["npo_id"]
    if ids.isna().any():
        raise InputError("empty npo_id", file=source, row=where(ids.isna().to_numpy()),
                         column="npo_id")
    ids = ids.astype(str).to_numpy()

    grant_num = pd.to_numeric(frame["grant"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(grant_num, (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"grant must be 0 or 1, got {_plain(frame['grant'].iloc[i])}",
                         file=source, row=where(bad), column="grant")
    founded = _integer_column(frame, "founded_year", source, allow_missing=False, rows=orig)
    closed = _integer_column(frame, "closed_year", source, allow_missing=True, rows=orig)

    early = ~np.isnan(closed) & (closed < period.start)
    if early.any():
        i = int(np.argmax(early))
        raise InputError(f"closure year {int(closed[i])} is before the study period "
                         f"{period.start}-{period.end} (NPOs closed before the period are not "
                         f"in the sample)", file=source, row=where(early), column="closed_year")
    late_close = ~np.isnan(closed) & (closed > period.end)
    if late_close.any():
        i = int(np.argmax(late_close))
        if rules.closure_after_period == "error":
            raise InputError(f"closure year {int(closed[i])} is after the study period (leave "
                             f"it empty for NPOs active at {period.end}, or set "
                             f"data.rules.closure_after_period = 'censor')", file=source,
                             row=where(late_close), column="closed_year")
        late_ids = np.unique(ids[late_close])
        rule_counts["closure_after_period"] = int(late_ids.size)
        rule_ids["closure_after_period"] = late_ids.tolist()
        closed = np.where(late_close, np.nan, closed)  # active at the end of the period: censored
    after_close = ~np.isnan(closed) & (year > closed)
    if after_close.any():
        i = int(np.argmax(after_close))
        raise InputError(f"row for {int(year[i])} is after the NPO closed in {int(closed[i])}",
                         file=source, row=where(after_close), column="year")
    before_founding = year < founded
    if before_founding.any():
        i = int(np.argmax(before_founding))
        raise InputError(f"row for {int(year[i])} is before the NPO was founded in "
                         f"{int(founded[i])}", file=source, row=where(before_founding),
                         column="year")

    dup = pd.Series(list(zip(ids, year))).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise InputError(f"duplicate row for npo_id {ids[i]!r}, year {int(year[i])}",
                         file=source, row=where(dup), column="year")

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
                             file=source, row=where(differs.to_numpy()), column=col)
    for col in ("field", "function"):
        empty = frame[col].isna().to_numpy() | (attrs[col].str.strip() == "").to_numpy()
        if empty.any():
            raise InputError(f"empty {col}", file=source, row=where(empty), column=col)

    npo_codes, npo_index = np.unique(ids, return_inverse=True)
    n_npo = npo_codes.size
    years = period.years
    G = np.full((n_npo, years.size), NOT_ALIVE, dtype=np.int8)
    G[npo_index, year - period.start] = grant_num.astype(np.int8)

    first_row = np.zeros(n_npo, dtype=np.int64)
    first_row[npo_index[::-1]] = np.arange(len(frame))[::-1]  # first kept row of each NPO
    founded_npo = founded[first_row]
    closed_npo = closed[first_row]
    alive_from = np.maximum(founded_npo, period.start).astype(np.int64)
    alive_to = np.where(np.isnan(closed_npo), period.end,
                        np.nan_to_num(closed_npo)).astype(np.int64)
    cols = years[None, :]
    should_have = (cols >= alive_from[:, None]) & (cols <= alive_to[:, None])
    gap = should_have & (G == NOT_ALIVE)
    closed_flag = ~np.isnan(closed_npo)
    # the closure year itself missing (its only gap): read as a no-grant year if the rule says so
    closure_col = np.where(closed_flag, alive_to - period.start, -1)
    only_closure_gap = closed_flag & gap.any(axis=1) & (gap.sum(axis=1) == 1)
    only_closure_gap &= gap[np.arange(n_npo), np.clip(closure_col, 0, None)]
    if only_closure_gap.any() and rules.missing_closure_year_row == "no_grant":
        k = np.flatnonzero(only_closure_gap)
        G[k, closure_col[k]] = 0
        gap[k, closure_col[k]] = False
        rule_counts["missing_closure_year_row"] = int(k.size)
        rule_ids["missing_closure_year_row"] = npo_codes[k].tolist()
    if gap.any():
        k = int(np.argmax(gap.any(axis=1)))
        y = int(years[np.argmax(gap[k])])
        hint = (" (data.rules.missing_closure_year_row = 'no_grant' reads a missing closure-year "
                "row as no grant)" if only_closure_gap[k] else "")
        raise InputError(f"npo_id {npo_codes[k]!r} has no row for {y} (one row per year from "
                         f"{int(alive_from[k])} to {int(alive_to[k])} is needed){hint}",
                         file=source, row=int(orig[first_row[k]]) + 1, column="year")

    end_index = (alive_to - period.start).astype(np.int64)
    feats = spell_features(G, end_index)
    ever_grant = (G == 1).any(axis=1)
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
        raise InputError("no NPO is at risk (none had a grant followed by a break in grants)",
                         file=source)

    kept = np.flatnonzero(keep)
    f = spell_features(G[kept], end_index[kept])
    npos = pd.DataFrame({
        "npo_id": npo_codes[kept],
        "field": attrs["field"].to_numpy()[first_row[kept]],
        "function": attrs["function"].to_numpy()[first_row[kept]],
        "founded_year": founded_npo[kept].astype(np.int64),
        "closed_year": pd.array(np.where(closed_flag[kept], closed_npo[kept], np.nan),
                                dtype="Int64"),
        "first_break_year": period.start + f.break_index,
        "end_year": period.start + f.end_index,
        "closed": closed_flag[kept],
        "N0": f.N0, "N1": f.N1, "X": f.X, "Z": f.Z,
    })
    return NPOPanel(npos=npos, grants=G[kept], features=f, period=period,
                    exclusions=exclusions, excluded_ids=excluded_ids,
                    n_rows=n_rows, n_npos_in_file=int(n_npo),
                    rule_counts=rule_counts, rule_ids=rule_ids)
