"""The optimum direction of (k1, k2) with its uncertainty across repeated splits.

Conventions (one for the k1 x k2 grid and the direction search alike)
---------------------------------------------------------------------
* The direction of a point is ``theta = atan2(k2, k1)`` in degrees, ``0 <= theta <= 90``:
  ``theta = 0`` is the **axis k2 = 0** (``T = k1 N0``, i.e. T0 = N0 up to scale) and
  ``theta = 90`` the **axis k1 = 0** (``T = k2 N1`` or ``k2 Y``).
* The **interior optimum** is the point with the smallest mean Dev over the splits among the
  points with ``k1 > 0`` and ``k2 > 0``. The axes are evaluated and reported *separately*:
  on an axis the second feature stops breaking ties in the first (at ``theta = 0`` all NPOs
  with the same N0 share one T), so Dev jumps there; an axis is a different model, not the
  limit of the interior. In relative mode both modes evaluate the same function of theta, so a
  grid that contains a direction gives that direction's Dev exactly.
* Per split the interior optimum is found the same way on that split's Dev alone.

What is reported (:func:`optimum_report`)
-----------------------------------------
* the interior optimum (theta, k2/k1, k1, k2, k0, Dev mean and sd over splits);
* each axis's best Dev (mean, sd) and whether it beats the interior optimum;
* the per-split optima (table) and an interval for theta across splits: the empirical
  ``level`` quantile range of the per-split optima (with few splits this is close to their
  min..max);
* Dev(theta) over splits (:func:`dev_by_direction`): per split the smallest Dev on each ray,
  then mean, sd and the ``level`` quantile range over the splits;
* a paired comparison across splits of Dev at the optimum against fixed choices (T0 = N0 is
  theta = 0, the seed's k1 = k2 is theta = 45, the axis k1 = 0 is theta = 90): the mean paired
  difference and the fraction of splits in which the optimum wins, both **in-sample** (the
  optimum was chosen on these splits, so it wins on average by construction) and
  **leave-one-split-out** (the optimum chosen on the other R - 1 splits, scored on the held-out
  one) -- the honest number;
* the headline theta and k2/k1 rounded to the precision the interval supports
  (:func:`round_to_interval`);
* ``identified``: whether the data identify an optimum, by the documented rule of
  :func:`identification`.

The splits are of the same NPOs, so they are not independent samples: the spread across
splits measures how much the choice depends on the split, not a sampling standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .analysis import ratio_k2_k1, theta_deg
from .gridsearch import GridPoints

__all__ = ["theta_deg", "sensitivity_points", "REFERENCE_DIRECTIONS",
           "reference_points",
           "dev_by_direction", "round_to_interval", "optimum_report", "identification",
           "fixed_report", "Direction", "AxisResult", "ThetaInterval", "Headline",
           "OptimumReport", "FixedDefinition"]

#: Fixed choices every optimum is compared with: name -> (k1, k2) (relative mode: direction).
REFERENCE_DIRECTIONS = {
    "T0 = N0 (axis k2 = 0, theta = 0)": (1.0, 0.0),
    "seed k1 = k2 (theta = 45)": (1.0, 1.0),
    "axis k1 = 0 (theta = 90)": (0.0, 1.0),
}


#: Relative difference below which two Dev values are a tie (the same ray reached by different
#: float sums differs by ~1e-12), so a tie is never counted as a win.
TIE_RTOL = 1e-9


def reference_points(k0_values) -> GridPoints:
    """The fixed choices of :data:`REFERENCE_DIRECTIONS` at every k0 (k0 outer, choice inner)."""
    k0 = np.repeat(np.asarray(k0_values, float), len(REFERENCE_DIRECTIONS))
    k1 = np.tile([v[0] for v in REFERENCE_DIRECTIONS.values()], len(k0_values))
    k2 = np.tile([v[1] for v in REFERENCE_DIRECTIONS.values()], len(k0_values))
    return GridPoints(k1=k1, k2=k2, k0=k0, shape=(len(k0_values), len(REFERENCE_DIRECTIONS)))


def _finite_mean_sd(dev: np.ndarray):
    """Mean and sd over splits (columns); nan where any split is undefined."""
    ok = np.isfinite(dev).all(axis=1)
    safe = np.where(np.isfinite(dev), dev, 0.0)
    mean = np.where(ok, safe.mean(axis=1), np.nan)
    # one split has no spread to speak of: nan, not 0
    sd = safe.std(axis=1, ddof=1) if dev.shape[1] > 1 else np.full(dev.shape[0], np.nan)
    return mean, np.where(ok, sd, np.nan)


def _quantile_range(values: np.ndarray, level: float):
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return float(lo), float(hi)


def dev_by_direction(points: GridPoints, dev: np.ndarray, level: float = 0.9) -> pd.DataFrame:
    """Dev(theta): per split the smallest Dev on each ray (k0, theta), then its spread over splits.

    In relative mode Dev is constant on a ray, so the per-split minimum is just its value.

    Returns
    -------
    pandas.DataFrame
        ``k0, theta_deg, ratio_k2_k1, on_axis, n_points, dev_mean, dev_sd, dev_lo, dev_hi``
        (``dev_lo/dev_hi`` the ``level`` quantile range over the splits), sorted by k0, theta.
    """
    dev = np.atleast_2d(np.asarray(dev, float))
    th = np.round(theta_deg(points.k1, points.k2), 7)
    key = pd.MultiIndex.from_arrays([points.k0, th])
    frame = pd.DataFrame(np.where(np.isfinite(dev), dev, np.inf), index=key)
    per_ray = frame.groupby(level=[0, 1], sort=True).min()
    counts = frame.groupby(level=[0, 1], sort=True).size().to_numpy()
    D = per_ray.to_numpy()
    D = np.where(np.isinf(D), np.nan, D)
    mean, sd = _finite_mean_sd(D)
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        lo = np.nanquantile(D, a, axis=1) if D.shape[1] else np.full(len(D), np.nan)
        hi = np.nanquantile(D, 1.0 - a, axis=1) if D.shape[1] else np.full(len(D), np.nan)
    k0 = per_ray.index.get_level_values(0).to_numpy(float)
    thv = per_ray.index.get_level_values(1).to_numpy(float)
    return pd.DataFrame({"k0": k0, "theta_deg": thv,
                         "ratio_k2_k1": np.where(thv >= 90, np.inf, np.tan(np.radians(thv))),
                         "on_axis": (thv <= 0) | (thv >= 90), "n_points": counts,
                         "dev_mean": mean, "dev_sd": sd, "dev_lo": lo, "dev_hi": hi})


def round_to_interval(value: float, lo: float, hi: float, floor_step: float = 0.0):
    """Round ``value`` to the precision an interval ``[lo, hi]`` supports.

    The rounding step is the power of ten at or below half the interval's width (so a value
    with an interval of 1.4 .. 71.6 is given to the nearest 10, one with 5.9 .. 6.3 to 0.1); it
    is never finer than ``floor_step`` (e.g. the search grid's spacing).

    Returns
    -------
    rounded : float
    decimals : int
        Decimals to print (``f"{rounded:.{decimals}f}"``).
    """
    half = (hi - lo) / 2.0 if np.isfinite(lo) and np.isfinite(hi) else math.nan
    if not np.isfinite(half) or half <= 0:
        half = floor_step if floor_step > 0 else abs(value) * 1e-3 or 1e-3
    half = max(half, floor_step)
    exp = math.floor(math.log10(half))
    step = 10.0 ** exp
    decimals = max(0, -exp)
    rounded = round(round(value / step) * step, decimals)
    return float(rounded), decimals


def identification(interval_width_deg: float, theta_range_deg: float, loo_win_fraction: dict,
                   n_splits: int) -> tuple[bool, str]:
    """Whether the data identify an optimum direction, and why (a stated rule, not a test).

    Rule: at least 3 splits; the theta interval across splits is narrower than half the
    searched theta range; and the optimum chosen on the other splits beats every fixed choice
    (:data:`REFERENCE_DIRECTIONS`) on more than half of the held-out splits.
    """
    if n_splits < 3:
        return False, (f"with {n_splits} split(s) the spread of the optimum cannot be judged "
                       f"(set split.n_splits >= 3)")
    reasons = []
    if not interval_width_deg < theta_range_deg / 2.0:
        reasons.append(f"the per-split optima spread over {interval_width_deg:.0f} of the "
                       f"{theta_range_deg:.0f} degrees searched")
    losing = [name for name, f in loo_win_fraction.items() if not (np.isfinite(f) and f > 0.5)]
    if losing:
        reasons.append("chosen on the other splits, the optimum does not beat "
                       + "; ".join(f"{n} ({100 * loo_win_fraction[n]:.0f}% of splits)"
                                   for n in losing)
                       + " on most held-out splits")
    if reasons:
        return False, "the data do not identify an optimum direction: " + "; and ".join(reasons)
    return True, ("the optimum direction is identified (narrow across splits, beats every fixed "
                  "choice held out)")


@dataclass(frozen=True)
class Direction:
    """A point of the search (its direction and Dev over the splits)."""

    k0: float
    k1: float
    k2: float
    theta_deg: float
    ratio_k2_k1: float
    dev_mean: float
    dev_sd: float
    at_search_edge: bool = False


@dataclass(frozen=True)
class AxisResult:
    """The best point on one axis (k2 = 0 or k1 = 0), evaluated apart from the interior."""

    k0: float
    k1: float
    k2: float
    dev_mean: float
    dev_sd: float
    beats_interior: bool


@dataclass(frozen=True)
class ThetaInterval:
    """Spread of the per-split interior optima: the ``level`` quantile range, min, max, median."""

    level: float
    lo: float
    hi: float
    min: float
    max: float
    median: float
    n_splits_best_on_axis: int


@dataclass(frozen=True)
class Headline:
    """The optimum as printed: ``theta_deg``/``ratio_k2_k1`` rounded (None if not identified)."""

    text: str
    theta_deg: float | None
    ratio_k2_k1: float | None
    theta_decimals: int
    ratio_decimals: int


@dataclass(frozen=True)
class OptimumReport:
    """What :func:`optimum_report` finds (see the module docstring)."""

    n_splits: int
    level: float
    curve: pd.DataFrame
    identified: bool
    statement: str
    interior: Direction | None = None
    axes: dict = field(default_factory=dict)           # name -> AxisResult | None
    per_split: pd.DataFrame | None = None
    theta_interval: ThetaInterval | None = None
    comparison: pd.DataFrame | None = None
    headline: Headline | None = None


@dataclass(frozen=True)
class FixedDefinition:
    """A run that searched nothing (T0, T3; T2 with one k0): its fixed weights and Dev."""

    definition: str
    weights: dict
    dev_mean: float
    dev_sd: float
    n_splits: int
    statement: str
    searched: bool = False


def optimum_report(points: GridPoints, dev: np.ndarray, ref_points: GridPoints, ref_dev: np.ndarray,
                   level: float = 0.9) -> OptimumReport:
    """The interior optimum, the axes, the per-split optima and the paired comparisons.

    Parameters
    ----------
    points : GridPoints
        The searched points (k1 x k2 grid or directions), with ``dev`` of shape (m, R).
    ref_points : GridPoints
        :func:`reference_points`, with ``ref_dev`` of shape (3 * n_k0, R).
    level : float
        Coverage of the intervals across splits.

    Returns
    -------
    OptimumReport
        ``curve`` is :func:`dev_by_direction` over the searched and reference points;
        ``interior`` is None when no interior point has a defined Dev on every split.
    """
    dev = np.atleast_2d(np.asarray(dev, float))
    ref_dev = np.atleast_2d(np.asarray(ref_dev, float))
    R = dev.shape[1]
    interior = (points.k1 > 0) & (points.k2 > 0)
    mean, sd = _finite_mean_sd(dev)
    all_k1 = np.concatenate([points.k1, ref_points.k1])
    all_k2 = np.concatenate([points.k2, ref_points.k2])
    all_k0 = np.concatenate([points.k0, ref_points.k0])
    all_dev = np.concatenate([dev, ref_dev], axis=0)
    all_pts = GridPoints(k1=all_k1, k2=all_k2, k0=all_k0, shape=(all_k1.size,))
    curve = dev_by_direction(all_pts, all_dev, level)
    th_all = theta_deg(all_k1, all_k2)

    cand = np.flatnonzero(interior & np.isfinite(mean))
    if cand.size == 0:
        return OptimumReport(n_splits=int(R), level=float(level), curve=curve, identified=False,
                             statement="no interior point (k1 > 0 and k2 > 0) has a defined Dev "
                                       "on every split")
    i = int(cand[np.argmin(mean[cand])])
    th_search = np.unique(np.round(theta_deg(points.k1[interior], points.k2[interior]), 7))
    th_i = float(theta_deg(points.k1[i], points.k2[i]))
    at_edge = bool(th_search.size > 1 and (np.isclose(th_i, th_search.min(), atol=1e-7)
                                           or np.isclose(th_i, th_search.max(), atol=1e-7)))
    ib = Direction(k0=float(points.k0[i]), k1=float(points.k1[i]), k2=float(points.k2[i]),
                   theta_deg=th_i, ratio_k2_k1=float(ratio_k2_k1(points.k1[i], points.k2[i])),
                   dev_mean=float(mean[i]), dev_sd=float(sd[i]), at_search_edge=at_edge)

    # the axes, separately: every evaluated point with k2 == 0 or k1 == 0
    axes = {}
    all_mean, all_sd = _finite_mean_sd(all_dev)
    for name, mask in (("k2 = 0 (theta = 0)", all_k2 == 0), ("k1 = 0 (theta = 90)", all_k1 == 0)):
        ok = np.flatnonzero(mask & np.isfinite(all_mean))
        if ok.size == 0:
            axes[name] = None
            continue
        j = int(ok[np.argmin(all_mean[ok])])
        axes[name] = AxisResult(k0=float(all_k0[j]), k1=float(all_k1[j]), k2=float(all_k2[j]),
                                dev_mean=float(all_mean[j]), dev_sd=float(all_sd[j]),
                                beats_interior=bool(all_mean[j] < ib.dev_mean * (1 - TIE_RTOL)))

    # per-split interior optima
    rows = []
    for r in range(R):
        col = np.where(interior & np.isfinite(dev[:, r]), dev[:, r], np.inf)
        if not np.isfinite(col).any():
            continue
        j = int(np.argmin(col))
        a = np.where(np.isfinite(all_dev[:, r]), all_dev[:, r], np.inf)
        jall = int(np.argmin(a))
        rows.append({"split": r, "k0": float(points.k0[j]), "k1": float(points.k1[j]),
                     "k2": float(points.k2[j]),
                     "theta_deg": float(theta_deg(points.k1[j], points.k2[j])),
                     "ratio_k2_k1": float(ratio_k2_k1(points.k1[j], points.k2[j])),
                     "dev": float(col[j]),
                     "best_overall_on_axis": bool(all_k1[jall] == 0 or all_k2[jall] == 0),
                     "best_overall_theta_deg": float(th_all[jall])})
    per_split = pd.DataFrame(rows)
    lo, hi = _quantile_range(per_split.theta_deg.to_numpy(), level)
    # a flat surface (every interior direction within TIE_RTOL of one Dev) prefers nothing:
    # its "optimum" is the first grid point and a range of per-split optima would be noise
    flat = bool(np.ptp(mean[cand]) <= TIE_RTOL * np.max(np.abs(mean[cand])))
    if flat:
        lo = hi = math.nan
    interval = ThetaInterval(level=float(level), lo=lo, hi=hi, min=float(per_split.theta_deg.min()),
                             max=float(per_split.theta_deg.max()),
                             median=float(per_split.theta_deg.median()),
                             n_splits_best_on_axis=int(per_split.best_overall_on_axis.sum()))

    # paired comparisons against the fixed choices (same k0 as the optimum)
    comp = []
    loo_win = {}
    on_k0 = ref_points.k0 == ib.k0
    held_out_best = []
    if R >= 2:  # the optimum chosen on the other splits, for each split left out
        for r in range(R):
            m_o, _ = _finite_mean_sd(np.delete(dev, r, axis=1))
            c = np.flatnonzero(interior & np.isfinite(m_o))
            held_out_best.append(int(c[np.argmin(m_o[c])]) if c.size else -1)
    for name, (rk1, rk2) in REFERENCE_DIRECTIONS.items():
        j = np.flatnonzero(on_k0 & (ref_points.k1 == rk1) & (ref_points.k2 == rk2))[0]
        d_ref = ref_dev[j]
        diff = dev[i] - d_ref
        tie = TIE_RTOL * np.abs(d_ref)
        row = {"fixed_choice": name, "k1": rk1, "k2": rk2,
               "dev_fixed_mean": float(np.nanmean(d_ref)),
               "dev_optimum_mean": ib.dev_mean, "mean_difference": float(np.nanmean(diff)),
               "sd_difference": float(np.nanstd(diff, ddof=1)) if R > 1 else math.nan,
               "win_fraction_in_sample": float(np.mean(diff < -tie))}
        if held_out_best and min(held_out_best) >= 0:
            loo = np.array([dev[k, r] - d_ref[r] for r, k in enumerate(held_out_best)])
            row["mean_difference_held_out"] = float(np.nanmean(loo))
            row["win_fraction_held_out"] = float(np.mean(loo < -tie))
        else:
            row["mean_difference_held_out"] = math.nan
            row["win_fraction_held_out"] = math.nan
        loo_win[name] = row["win_fraction_held_out"]
        comp.append(row)

    # headline, rounded to what the interval supports (never finer than the search spacing)
    spacing = float(np.min(np.diff(th_search))) if th_search.size > 1 else 0.0
    theta_r, theta_dec = round_to_interval(ib.theta_deg, lo, hi, floor_step=spacing / 2)
    rlo, rhi = np.tan(np.radians([lo, hi])) if np.isfinite(lo) else (math.nan, math.nan)
    ratio_r, ratio_dec = round_to_interval(ib.ratio_k2_k1, rlo, min(rhi, 1e12))
    theta_range = float(th_search.max() - th_search.min()) if th_search.size else 90.0
    if flat:
        ok, why = False, ("Dev is flat over the searched directions (every interior direction "
                          "within a relative 1e-9 of one value): no direction is preferred and "
                          "no range is reported")
    else:
        ok, why = identification(hi - lo, max(theta_range, 1e-9), loo_win, R)
    span = (f"{lo:.{theta_dec}f} .. {hi:.{theta_dec}f} deg ({100 * level:.0f}% range of {R} "
            f"per-split optima)")
    if ok:
        text = (f"theta = {theta_r:.{theta_dec}f} deg (k2/k1 = {ratio_r:.{ratio_dec}f}); "
                f"across splits {span}")
    elif flat:
        text = "no optimum direction: Dev is flat over the searched directions (no range)"
    else:  # no rounded point estimate pretends to a precision the spread does not have
        text = (f"no optimum direction identified; per-split interior optima {lo:.2g} .. "
                f"{hi:.2g} deg ({100 * level:.0f}% range of {R}); the mean Dev is smallest at "
                f"theta = {ib.theta_deg:.2g} deg"
                + (" (the edge of the searched directions)" if at_edge else ""))
    headline = Headline(text=text, theta_deg=theta_r if ok else None,
                        ratio_k2_k1=ratio_r if ok else None, theta_decimals=theta_dec,
                        ratio_decimals=ratio_dec)
    notes = [f"the axis {n} has lower mean Dev ({a.dev_mean:.3g}) than the interior optimum "
             f"({ib.dev_mean:.3g})" for n, a in axes.items() if a and a.beats_interior]
    if at_edge:
        notes.append("the interior optimum lies at the edge of the searched directions")
    return OptimumReport(n_splits=int(R), level=float(level), curve=curve, identified=bool(ok),
                         statement=why + ("; " + "; ".join(notes) if notes else ""),
                         interior=ib, axes=axes, per_split=per_split, theta_interval=interval,
                         comparison=pd.DataFrame(comp), headline=headline)


def fixed_report(definition: str, coef, dev_column: np.ndarray) -> FixedDefinition:
    """Runs that search nothing (T0, T3; T2 with one k0): the fixed definition and its Dev."""
    d = np.asarray(dev_column, float).ravel()
    w = np.asarray(coef, float)
    return FixedDefinition(
        definition=definition,
        weights={"N0": float(w[0]), "N1": float(w[1]), "X": float(w[2]), "Z": float(w[3])},
        dev_mean=float(np.mean(d)) if np.isfinite(d).all() else math.nan,
        dev_sd=float(np.std(d, ddof=1)) if d.size > 1 and np.isfinite(d).all() else math.nan,
        n_splits=int(d.size),
        statement=f"{definition} has no coefficients to choose: nothing was searched; Dev is that "
                  f"of the fixed definition")


def sensitivity_points(points: GridPoints, must) -> np.ndarray:
    """Indices (grid order) of the run's own interior points for the bandwidth table.

    One point per ray (the first in grid order; at most ~181 rays, evenly picked) at the k0
    of the first ``must`` point, plus the exact points ``must`` (``(k1, k2, k0)`` of the run's
    optimum and of every per-split optimum). The same points and the same tie rule as the
    grid: the table's row at the run's fraction reproduces the run's optimum exactly
    (:func:`~riskdask.hazard.bandwidth.bandwidth_sensitivity`).
    """
    must = [tuple(map(float, m)) for m in must]
    k0 = must[0][2]
    interior = np.flatnonzero((points.k1 > 0) & (points.k2 > 0) & (points.k0 == k0))
    th = np.round(theta_deg(points.k1[interior], points.k2[interior]), 7)
    _, first = np.unique(th, return_index=True)
    reps = interior[np.sort(first)]
    if reps.size > 181:
        reps = reps[np.unique(np.linspace(0, reps.size - 1, 181).round().astype(int))]
    exact = [int(np.flatnonzero((points.k1 == a) & (points.k2 == b) & (points.k0 == c))[0])
             for a, b, c in must]
    return np.unique(np.concatenate([reps, np.asarray(exact, dtype=np.int64)]))
