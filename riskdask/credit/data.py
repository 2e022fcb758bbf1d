"""Loaders and validation of the credit job's inputs.

Every problem with a user file raises :class:`~riskdask.errors.InputError` naming
the file, the 1-based data row (header = row 0) and the column.  File formats:

portfolio (CSV or Parquet), one row per position
    ``position_id, obligor_id, rating, nominal, recovery_rate`` and either the
    bond terms ``coupon, frequency, maturity`` or a separate cash-flow file;
    optional ``sector, country, name``.
cash flows (CSV), optional
    ``position_id, time, amount``.
migration matrix (CSV)
    ``rating`` then one column per forward rating, best first, the last being
    default; one row per non-default initial rating.
curves (CSV)
    ``tenor`` then one column of zero rates (decimal, continuous compounding)
    per non-default rating.
factor loadings (CSV)
    ``obligor_id`` then one column per factor.  Optional factor correlation
    (CSV): ``factor`` then one column per factor.
correlation matrix (CSV)
    ``obligor_id`` then one column per obligor id (same order as the rows).
Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from riskdask import io
from riskdask.errors import InputError

from .ratings import MigrationMatrix
from .valuation import RatingCurves, bond_cash_flows

__all__ = [
    "read_table",
    "numeric_column",
    "load_matrix",
    "load_curves",
    "align_curves",
    "validate_portfolio",
    "load_portfolio_file",
    "load_cashflows",
    "load_loadings",
    "load_factor_correlation",
    "load_correlation_matrix",
    "check_correlation_matrix",
    "Portfolio",
    "build_portfolio",
    "sector_country_loadings",
]


# ------------------------------------------------------------------------------ generic
def read_table(path, *, required=(), what="file") -> pd.DataFrame:
    """A CSV (``#`` comments, every cell as text) or Parquet input
    (:func:`riskdask.io.read_table`)."""
    return io.read_table(path, what=what, required=required, text=True, comment="#")


def numeric_column(df: pd.DataFrame, column: str, path, *, integer=False) -> np.ndarray:
    """A column as float (or int) array; the first bad cell is an InputError."""
    values = io.to_numeric(df[column], file=path, column=column, integer=integer)
    return values.astype(np.int64) if integer else values


def _text_column(df, column, path) -> np.ndarray:
    return io.text_column(df[column], file=path, column=column)


# ------------------------------------------------------------------------------ matrix
NORMALIZE_LIMIT = 0.005


def load_matrix(path, *, units: str = "percent", normalize: bool = False,
                tolerance: float = 1e-6, source: str = "",
                normalize_limit: float = NORMALIZE_LIMIT) -> tuple[MigrationMatrix, list]:
    """Read and validate a one-year migration matrix.

    Returns the matrix and a list of the rows that were rescaled (with
    ``normalize``), as ``(rating, original sum)``.

    Every entry must be a probability in [0, 1] (after ``units``).  A row whose sum is off
    1 by more than ``tolerance`` is an error unless ``normalize`` is set; even then a row
    off by more than ``normalize_limit`` (default 0.5 %: rounding of a published table,
    not a wrong row) or summing to 0 is an error naming the row -- rescaling cannot repair
    it.
    """
    df = read_table(path, required=("rating",), what="migration matrix")
    scale = tuple(c for c in df.columns if c != "rating")
    if len(scale) < 2:
        raise InputError("needs at least two forward-rating columns", file=path)
    if len(set(scale)) != len(scale):
        raise InputError("a forward rating appears twice in the header", file=path)
    ratings = _text_column(df, "rating", path)
    probs = np.column_stack([numeric_column(df, c, path) for c in scale])
    factor = 100.0 if units == "percent" else 1.0
    probs = probs / factor
    initial = scale[:-1]
    seen = {}
    for r, rating in enumerate(ratings):
        if rating not in initial:
            raise InputError(f"initial rating {rating!r} is not a non-default forward rating "
                             f"of the header ({', '.join(initial)})", file=path, row=r + 1,
                             column="rating")
        if rating in seen:
            raise InputError(f"rating {rating!r} appears twice (rows {seen[rating]} and {r + 1})",
                             file=path, row=r + 1, column="rating")
        seen[rating] = r + 1
    missing = [x for x in initial if x not in seen]
    if missing:
        raise InputError(f"no row for initial rating(s) {', '.join(missing)}", file=path,
                         column="rating")
    neg = np.argwhere(probs < 0)
    if neg.size:
        r, c = neg[0]
        raise InputError(f"row {ratings[r]!r}: negative probability", file=path,
                         row=int(r) + 1, column=scale[c])
    big = np.argwhere(probs > 1.0 + 1e-12)
    if big.size:
        r, c = big[0]
        unit = "%" if units == "percent" else ""
        raise InputError(f"row {ratings[r]!r}: entry {probs[r, c] * factor:g}{unit} is not a "
                         f"probability (above {'100%' if units == 'percent' else '1'}; "
                         f"matrix.units = {units!r})", file=path, row=int(r) + 1,
                         column=scale[c])
    sums = probs.sum(axis=1)
    rescaled = []
    unit = "%" if units == "percent" else ""
    one = "100%" if units == "percent" else "1"
    for r, s in enumerate(sums):
        if s == 0.0:
            raise InputError(f"row {ratings[r]!r} is all zeros (sums to 0): not a probability "
                             "distribution, and normalize cannot rescale it", file=path,
                             row=r + 1, column="rating")
        if abs(s - 1.0) > tolerance:
            if not normalize:
                raise InputError(
                    f"row {ratings[r]!r} sums to {s * factor:.6g}{unit}, not {one} (tolerance "
                    f"{tolerance:g}; set normalize = true to rescale rows off by at most "
                    f"{100 * normalize_limit:g}%)", file=path, row=r + 1, column="rating")
            if abs(s - 1.0) > normalize_limit:
                raise InputError(
                    f"row {ratings[r]!r} sums to {s * factor:.6g}{unit}, off {one} by more than "
                    f"matrix.normalize_tolerance = {100 * normalize_limit:g}%: normalize only "
                    "rescales rounding errors, this row looks wrong", file=path, row=r + 1,
                    column="rating")
            rescaled.append((str(ratings[r]), float(s)))
    if normalize:
        probs = probs / sums[:, None]
    order = [seen[x] - 1 for x in initial]
    matrix = MigrationMatrix(scale=scale, probabilities=probs[order], source=source or str(path))
    return matrix, rescaled


# ------------------------------------------------------------------------------ curves
def load_curves(path) -> RatingCurves:
    """Read zero curves: ``tenor`` plus one decimal-rate column per rating."""
    df = read_table(path, required=("tenor",), what="curves file")
    tenors = numeric_column(df, "tenor", path)
    bad = np.flatnonzero(tenors <= 0)
    if bad.size:
        raise InputError("tenor must be positive", file=path, row=int(bad[0]) + 1,
                         column="tenor")
    dec = np.flatnonzero(np.diff(tenors) <= 0)
    if dec.size:
        raise InputError("tenors must be strictly increasing", file=path, row=int(dec[0]) + 2,
                         column="tenor")
    ratings = tuple(c for c in df.columns if c != "tenor")
    rates = (np.vstack([numeric_column(df, c, path) for c in ratings]) if ratings
             else np.empty((0, tenors.size)))
    out = np.argwhere(np.abs(rates) > 1.0)
    if out.size:
        c, r = out[0]
        raise InputError(f"zero rate {rates[c, r]} is not a decimal rate (|y| <= 1)",
                         file=path, row=int(r) + 1, column=ratings[c])
    return RatingCurves(ratings=ratings, tenors=tenors, rates=rates)


def align_curves(curves: RatingCurves, matrix: MigrationMatrix, ratings_in_use, path
                 ) -> RatingCurves:
    """Curves in the matrix's rating order; every rating that can occur must have one.

    Forward ratings reachable from the initial ratings in use (probability > 0)
    all need a curve, since their CFV is a discounted value (eq. 3.4).
    """
    needed = []
    for rating in ratings_in_use:
        row = matrix.probabilities[matrix.index(rating)]
        needed += [matrix.scale[j] for j in np.flatnonzero(row[:-1] > 0)]
    needed = set(needed) | set(ratings_in_use)
    rates = []
    for rating in matrix.initial_ratings:
        if rating in curves.ratings:
            rates.append(curves.rates[curves.ratings.index(rating)])
        elif rating in needed:
            raise InputError(f"no curve for rating {rating!r}, which is in use (initial rating "
                             "or reachable by migration)", file=path, column=rating)
        else:
            rates.append(np.full(curves.tenors.size, np.nan))
    return RatingCurves(ratings=matrix.initial_ratings, tenors=curves.tenors,
                        rates=np.vstack(rates))


# ------------------------------------------------------------------------------ portfolio
TERMS = ("coupon", "frequency", "maturity")


def load_portfolio_file(path) -> pd.DataFrame:
    return read_table(path, required=("position_id", "obligor_id", "rating", "nominal",
                                      "recovery_rate"), what="portfolio")


def validate_portfolio(df: pd.DataFrame, path, matrix: MigrationMatrix, *,
                       need_terms: bool, allow_short: bool = False) -> pd.DataFrame:
    """Typed, validated positions (one row per position).

    A negative nominal is an error unless ``allow_short`` (a short position: its value,
    cash flows and recovery are negative, and its default is a gain).  A portfolio whose
    nominals are all 0 has no exposure and is an error naming the file.
    """
    out = pd.DataFrame({
        "position_id": _text_column(df, "position_id", path),
        "obligor_id": _text_column(df, "obligor_id", path),
        "rating": _text_column(df, "rating", path),
    })
    dup = out["position_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(out["position_id"].to_numpy() == out["position_id"][r])[0])
        raise InputError(f"duplicate position id {out['position_id'][r]!r} (first at row "
                         f"{first + 1})", file=path, row=r + 1, column="position_id")
    known = set(matrix.initial_ratings)
    unknown = ~out["rating"].isin(known).to_numpy()
    if unknown.any():
        r = int(np.flatnonzero(unknown)[0])
        extra = (" (a defaulted position has no credit risk left to model)"
                 if out["rating"][r] == matrix.default_rating else "")
        raise InputError(f"unknown rating {out['rating'][r]!r}{extra}; the migration matrix "
                         f"has {', '.join(matrix.initial_ratings)}", file=path, row=r + 1,
                         column="rating")
    out["nominal"] = numeric_column(df, "nominal", path)
    bad = np.flatnonzero(out["nominal"].to_numpy() < 0)
    if bad.size and not allow_short:
        raise InputError(f"negative nominal {out['nominal'][bad[0]]} (a short position: set "
                         "portfolio.allow_short = true)", file=path,
                         row=int(bad[0]) + 1, column="nominal")
    if not np.any(out["nominal"].to_numpy() != 0):
        raise InputError(f"every nominal is 0 ({len(out)} positions): the portfolio has no "
                         "exposure", file=path, column="nominal")
    out["recovery_rate"] = numeric_column(df, "recovery_rate", path)
    rr = out["recovery_rate"].to_numpy()
    bad = np.flatnonzero((rr < 0) | (rr > 1))
    if bad.size:
        raise InputError(f"recovery rate {rr[bad[0]]} outside [0, 1]", file=path,
                         row=int(bad[0]) + 1, column="recovery_rate")
    if "recovery_sd" in df.columns:
        # Uncertain recovery (CreditMetrics: beta law with this mean and sd per position).
        out["recovery_sd"] = numeric_column(df, "recovery_sd", path)
        sd = out["recovery_sd"].to_numpy()
        bad = np.flatnonzero((sd < 0) | ((sd > 0) & (sd * sd >= rr * (1 - rr))))
        if bad.size:
            r = int(bad[0])
            raise InputError(f"recovery_sd {sd[r]} impossible for a beta law with mean "
                             f"{rr[r]} (need 0 <= sd < sqrt(rr (1 - rr)) = "
                             f"{np.sqrt(rr[r] * (1 - rr[r])):.4g})", file=path, row=r + 1,
                             column="recovery_sd")
    else:
        out["recovery_sd"] = 0.0
    for col in ("sector", "country", "name"):
        out[col] = df[col].astype(str).str.strip().to_numpy() if col in df.columns else ""
    if need_terms:
        for col in TERMS:
            if col not in df.columns:
                raise InputError("missing bond-term column (or give a cash-flow file)",
                                 file=path, column=col)
        out["coupon"] = numeric_column(df, "coupon", path)
        out["frequency"] = numeric_column(df, "frequency", path, integer=True)
        out["maturity"] = numeric_column(df, "maturity", path)
        for col, ok, text in (("coupon", out["coupon"] >= 0, "negative coupon"),
                              ("frequency", out["frequency"] >= 1, "frequency must be >= 1"),
                              ("maturity", out["maturity"] > 0,
                               "maturity must be positive (cash-flow time <= 0)")):
            bad = np.flatnonzero(~ok.to_numpy())
            if bad.size:
                raise InputError(f"{text}: {df[col].iloc[bad[0]]!r}", file=path,
                                 row=int(bad[0]) + 1, column=col)
    # One rating per obligor: its positions migrate together.
    first_rating = out.groupby("obligor_id", sort=False)["rating"].transform("first")
    clash = (out["rating"] != first_rating).to_numpy()
    if clash.any():
        r = int(np.flatnonzero(clash)[0])
        raise InputError(f"obligor {out['obligor_id'][r]!r} has positions with different "
                         f"ratings ({first_rating[r]!r} and {out['rating'][r]!r})", file=path,
                         row=r + 1, column="rating")
    return out


def load_cashflows(path, position_ids, nominal=None, allow_short: bool = False) -> pd.DataFrame:
    """Explicit cash flows ``position_id, time, amount``; every position needs one.

    A negative amount is an error unless ``allow_short``; then every amount of a position
    must have the sign of its nominal (``nominal``, aligned with ``position_ids``): a short
    position pays its cash flows.  All amounts 0 is an error (no exposure).
    """
    df = read_table(path, required=("position_id", "time", "amount"), what="cash-flow file")
    pid = _text_column(df, "position_id", path)
    time = numeric_column(df, "time", path)
    amount = numeric_column(df, "amount", path)
    bad = np.flatnonzero(time <= 0)
    if bad.size:
        raise InputError(f"cash-flow time {time[bad[0]]} <= 0 (cash flows must lie after "
                         "today)", file=path, row=int(bad[0]) + 1, column="time")
    known = set(position_ids)
    unknown = np.flatnonzero(~pd.Series(pid).isin(known).to_numpy())
    if unknown.size:
        raise InputError(f"position {pid[unknown[0]]!r} is not in the portfolio", file=path,
                         row=int(unknown[0]) + 1, column="position_id")
    missing = sorted(known - set(pid))
    if missing:
        raise InputError(f"no cash flows for position(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}", file=path,
                         column="position_id")
    bad = np.flatnonzero(amount < 0)
    if bad.size and not allow_short:
        raise InputError(f"negative cash-flow amount {amount[bad[0]]} (a short position: set "
                         "portfolio.allow_short = true)", file=path, row=int(bad[0]) + 1,
                         column="amount")
    if nominal is not None:
        sign = dict(zip(position_ids, np.sign(np.asarray(nominal, dtype=float))))
        pos_sign = np.array([sign[p] for p in pid])
        clash = np.flatnonzero(((amount < 0) & (pos_sign > 0)) | ((amount > 0) & (pos_sign < 0)))
        if clash.size:
            r = int(clash[0])
            raise InputError(f"amount {amount[r]} has the opposite sign of position "
                             f"{pid[r]!r}'s nominal", file=path, row=r + 1, column="amount")
    if not np.any(amount != 0):
        raise InputError("every cash-flow amount is 0: the portfolio has no exposure",
                         file=path, column="amount")
    return pd.DataFrame({"position_id": pid, "time": time, "amount": amount})


@dataclass
class Portfolio:
    """Positions aggregated to obligors (they migrate together)."""

    positions: pd.DataFrame
    obligors: pd.DataFrame            # obligor_id, rating, sector, country, name, nominal, ...
                                      # recovery_value (sum of Nom * rr over its positions)
    initial_index: np.ndarray         # best-first scale index per obligor
    cf_obligor: np.ndarray
    cf_time: np.ndarray
    cf_amount: np.ndarray
    notes: list = field(default_factory=list)

    @property
    def n_obligors(self) -> int:
        return len(self.obligors)


def build_portfolio(positions: pd.DataFrame, matrix: MigrationMatrix,
                    cashflows: pd.DataFrame | None = None) -> Portfolio:
    """Obligor table and cash flows (generated from bond terms or given)."""
    codes, uniques = pd.factorize(positions["obligor_id"], sort=False)
    n = len(uniques)
    recovery_value = np.bincount(codes, weights=positions["nominal"] * positions["recovery_rate"],
                                 minlength=n)
    nominal = np.bincount(codes, weights=positions["nominal"], minlength=n)
    sd_p = (positions["recovery_sd"].to_numpy(dtype=float) if "recovery_sd" in positions
            else np.zeros(len(positions)))
    abs_nom = np.abs(positions["nominal"].to_numpy(dtype=float))
    abs_total = np.bincount(codes, weights=abs_nom, minlength=n)
    # One recovery draw per obligor (its positions default together): sd weighted by size.
    with np.errstate(invalid="ignore", divide="ignore"):
        recovery_sd = np.where((abs_total > 0) & (nominal != 0),
                               np.bincount(codes, weights=abs_nom * sd_p, minlength=n)
                               / abs_total, 0.0)
        recovery_mean = np.where(nominal != 0, recovery_value / np.where(nominal != 0,
                                                                         nominal, 1.0), 0.0)
    first = pd.DataFrame({"code": codes, "i": np.arange(len(positions))}).groupby("code")["i"].min()
    first = first.reindex(range(n)).to_numpy()
    obligors = pd.DataFrame({
        "obligor_id": np.asarray(uniques),
        "name": positions["name"].to_numpy()[first],
        "sector": positions["sector"].to_numpy()[first],
        "country": positions["country"].to_numpy()[first],
        "rating": positions["rating"].to_numpy()[first],
        "nominal": nominal,
        "recovery_value": recovery_value,
        "recovery_mean": recovery_mean,
        "recovery_sd": recovery_sd,
        "n_positions": np.bincount(codes, minlength=n),
    })
    initial_index = np.array([matrix.index(r) for r in obligors["rating"]], dtype=np.int64)
    if cashflows is None:
        pos, time, amount = bond_cash_flows(positions["nominal"], positions["coupon"],
                                            positions["frequency"], positions["maturity"])
        cf_obligor = codes[pos]
    else:
        index = pd.Series(np.arange(len(positions)), index=positions["position_id"])
        pos = index.loc[cashflows["position_id"]].to_numpy()
        cf_obligor, time, amount = (codes[pos], cashflows["time"].to_numpy(),
                                    cashflows["amount"].to_numpy())
    return Portfolio(positions=positions, obligors=obligors, initial_index=initial_index,
                     cf_obligor=np.asarray(cf_obligor), cf_time=np.asarray(time, dtype=float),
                     cf_amount=np.asarray(amount, dtype=float))


# ------------------------------------------------------------------------------ correlation
def sector_country_loadings(obligors: pd.DataFrame, global_loading: float,
                            sector_loading: float, country_loading: float):
    """Loadings on a global factor, one factor per sector and one per country.

    ``rho_ij = g^2 + s^2 [same sector] + c^2 [same country]``.

    Returns
    -------
    loadings : ndarray (n, 1 + sectors + countries)
    names : list of str
    """
    sectors = sorted(set(obligors["sector"]))
    countries = sorted(set(obligors["country"]))
    names = ["global"] + [f"sector:{s}" for s in sectors] + [f"country:{c}" for c in countries]
    n = len(obligors)
    out = np.zeros((n, len(names)))
    out[:, 0] = global_loading
    s_idx = np.array([sectors.index(s) for s in obligors["sector"]])
    c_idx = np.array([countries.index(c) for c in obligors["country"]])
    out[np.arange(n), 1 + s_idx] = sector_loading
    out[np.arange(n), 1 + len(sectors) + c_idx] = country_loading
    return out, names


def load_loadings(path, obligor_ids) -> tuple[np.ndarray, list[str]]:
    """Factor loadings per obligor (rows in any order; every obligor needed once)."""
    df = read_table(path, required=("obligor_id",), what="factor-loadings file")
    ids = _text_column(df, "obligor_id", path)
    factors = [c for c in df.columns if c != "obligor_id"]
    if not factors:
        raise InputError("no factor columns", file=path)
    values = np.column_stack([numeric_column(df, c, path) for c in factors])
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise InputError(f"obligor {ids[r]!r} listed twice", file=path, row=r + 1,
                         column="obligor_id")
    where = {v: i for i, v in enumerate(ids)}
    missing = [o for o in obligor_ids if o not in where]
    if missing:
        raise InputError(f"no loadings for obligor(s) {', '.join(missing[:5])}", file=path,
                         column="obligor_id")
    return values[[where[o] for o in obligor_ids]], factors


def load_factor_correlation(path, factors) -> np.ndarray:
    """K x K factor correlation matrix (``factor`` column plus one column per factor)."""
    df = read_table(path, required=("factor",), what="factor-correlation file")
    names = list(_text_column(df, "factor", path))
    if names != list(factors) or [c for c in df.columns if c != "factor"] != list(factors):
        raise InputError(f"rows and columns must be the loadings' factors in order "
                         f"({', '.join(factors)})", file=path, column="factor")
    m = np.column_stack([numeric_column(df, c, path) for c in factors])
    return check_correlation_matrix(m, path, list(factors))


def check_correlation_matrix(m, path, labels) -> np.ndarray:
    """Unit diagonal, symmetric, entries in [-1, 1], positive definite."""
    m = np.asarray(m, dtype=float)
    n = m.shape[0]
    diag = np.flatnonzero(np.abs(np.diag(m) - 1.0) > 1e-12)
    if diag.size:
        r = int(diag[0])
        raise InputError(f"diagonal entry is {m[r, r]}, not 1", file=path, row=r + 1,
                         column=str(labels[r]))
    out = np.argwhere(np.abs(m) > 1.0)
    if out.size:
        r, c = out[0]
        raise InputError(f"correlation {m[r, c]} outside [-1, 1]", file=path, row=int(r) + 1,
                         column=str(labels[c]))
    asym = np.argwhere(np.abs(m - m.T) > 1e-12)
    if asym.size:
        r, c = asym[0]
        raise InputError(f"matrix is not symmetric: entry {m[r, c]} but {m[c, r]} at row "
                         f"{c + 1}, column '{labels[r]}'", file=path, row=int(r) + 1,
                         column=str(labels[c]))
    smallest = float(np.linalg.eigvalsh(m)[0])
    if smallest <= 1e-10 * n:
        raise InputError(f"correlation matrix is not positive definite: smallest eigenvalue "
                         f"{smallest:.6g}", file=path)
    return m


def load_correlation_matrix(path, obligor_ids) -> np.ndarray:
    """Full n x n asset correlation matrix, reordered to the portfolio's obligors."""
    df = read_table(path, required=("obligor_id",), what="correlation matrix")
    ids = list(_text_column(df, "obligor_id", path))
    cols = [c for c in df.columns if c != "obligor_id"]
    if cols != ids:
        raise InputError("the column headers must be the obligor ids of the rows, in the same "
                         "order", file=path, column="obligor_id")
    missing = [o for o in obligor_ids if o not in set(ids)]
    if missing:
        raise InputError(f"no row for obligor(s) {', '.join(missing[:5])}", file=path,
                         column="obligor_id")
    m = np.column_stack([numeric_column(df, c, path) for c in cols])
    m = check_correlation_matrix(m, path, ids)
    where = {v: i for i, v in enumerate(ids)}
    take = [where[o] for o in obligor_ids]
    return m[np.ix_(take, take)]
