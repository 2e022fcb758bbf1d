"""The k1 x k2 (x k0) grid search for the coefficients of the time-at-risk (seed Section 3).

For every grid point the time-at-risk of every NPO is recomputed, both half-samples get their
Breslow increments and smoothed hazard on the common 101-point grid, and Dev (seed eqs. 6-8)
compares them. The kernels here are pure numpy; the job hands tiles of grid points to Dask.

Why it is fast
--------------
* Every definition is linear in the features ``(N0, N1, X, Z)`` (:mod:`.timeatrisk`), and
  those take few distinct values (N0 and X are at most the number of years of the period;
  2,660 synthetic NPOs have ~240 distinct rows). NPOs that share features and
  event status are one *pattern*; a sample is a vector of pattern counts. The Breslow
  estimator with frequency weights is exactly the estimator on the expanded data.
* One sort of the pattern times per grid point serves every column at once: both halves of
  all R repeated splits (or all bootstrap replicates) are columns of one weight matrix, the
  at-risk sums are one reverse cumulative sum, and the kernel sums are one matrix product
  over the failure times (``(101 x g) @ (g x 2R)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .estimators import (GridRule, cumulative_hazard_at, deviation_columns, group_increments,
                         round_times, smooth_hazard, weighted_increments)
from .timeatrisk import coefficients, support_start

__all__ = ["PatternTable", "compress", "sample_weights", "GridPoints", "make_grid_points",
           "direction_points", "evaluate_points", "evaluate_tile", "TileInput", "curves_for",
           "Curves", "bootstrap_curves", "time_at_risk_range", "coefficient_matrix",
           "next_year_probability", "concat_points", "keyed_increments", "tiebreak_matrix"]


@dataclass(frozen=True)
class PatternTable:
    """Distinct (features, event) rows of the at-risk NPOs.

    Attributes
    ----------
    features : ndarray, shape (p, 4)
        ``(N0, N1, X, Z)`` per pattern.
    event : ndarray of bool, shape (p,)
    inverse : ndarray of int, shape (n,)
        Pattern of every NPO.
    """

    features: np.ndarray
    event: np.ndarray
    inverse: np.ndarray

    @property
    def n_patterns(self) -> int:
        return self.features.shape[0]

    def counts(self, npo_weights: np.ndarray) -> np.ndarray:
        """Pattern counts from per-NPO weights, shape (n,) or (n, c) -> (p,) or (p, c)."""
        w = np.asarray(npo_weights, dtype=np.float64)
        if w.ndim == 1:
            return np.bincount(self.inverse, weights=w, minlength=self.n_patterns)
        return np.stack([np.bincount(self.inverse, weights=w[:, j], minlength=self.n_patterns)
                         for j in range(w.shape[1])], axis=1)


def compress(features: np.ndarray, event: np.ndarray) -> PatternTable:
    """Group NPOs with equal features and event status (lexicographic order, deterministic)."""
    key = np.column_stack([np.asarray(features, dtype=np.float64),
                           np.asarray(event, dtype=np.float64)])
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return PatternTable(features=uniq[:, :4].copy(), event=uniq[:, 4] > 0, inverse=inverse.ravel())


def sample_weights(table: PatternTable, splits: np.ndarray, sample_one: int = 1):
    """Pattern counts for both halves of every split, columns ``[s1_r0, s2_r0, s1_r1, ...]``.

    ``sample_one`` names which half is sample 1 (the "standard" curve of Dev); the other
    half is sample 2. Returns ``(at_risk, deaths)``, each shape (p, 2R).
    """
    splits = np.atleast_2d(splits)
    first, second = (1, 2) if sample_one == 1 else (2, 1)
    cols = []
    for row in splits:
        cols.append(row == first)
        cols.append(row == second)
    W = table.counts(np.column_stack(cols).astype(np.float64))
    return W, W * table.event[:, None]


@dataclass(frozen=True)
class GridPoints:
    """Flattened grid of coefficient points, ``k1, k2, k0`` arrays of equal length.

    ``shape`` is the nested shape ``(n_k0, n_k1, n_k2)`` (or ``(n_k0, n_theta)`` for the
    direction search); point ``i`` is ``np.unravel_index(i, shape)``.
    """

    k1: np.ndarray
    k2: np.ndarray
    k0: np.ndarray
    shape: tuple
    theta: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.k1.size)


def make_grid_points(k1_values, k2_values, k0_values=(0.0,)) -> GridPoints:
    """Cartesian grid, k0 outermost, then k1, then k2 (fastest)."""
    k0g, k1g, k2g = np.meshgrid(np.asarray(k0_values, float), np.asarray(k1_values, float),
                                np.asarray(k2_values, float), indexing="ij")
    return GridPoints(k1=k1g.ravel(), k2=k2g.ravel(), k0=k0g.ravel(), shape=k1g.shape)


def direction_points(theta_values, k0_values=(0.0,)) -> GridPoints:
    """The 1-D direction search: ``k1 = cos(theta)``, ``k2 = sin(theta)`` (relative mode only)."""
    k0g, thg = np.meshgrid(np.asarray(k0_values, float), np.asarray(theta_values, float),
                           indexing="ij")
    # cos(pi/2) is 6e-17, not 0: snap so that theta = 90 deg is exactly the axis k1 = 0
    k1 = np.cos(thg).ravel()
    k2 = np.sin(thg).ravel()
    k1[np.abs(k1) < 1e-12] = 0.0
    k2[np.abs(k2) < 1e-12] = 0.0
    return GridPoints(k1=k1, k2=k2, k0=k0g.ravel(), shape=thg.shape, theta=thg.ravel())


def coefficient_matrix(definition: str, points: GridPoints, start: int = 0,
                       stop: int | None = None):
    """Feature weights for points ``[start, stop)``, shape (m, 4)."""
    stop = points.size if stop is None else stop
    return np.stack([coefficients(definition, points.k1[i], points.k2[i], points.k0[i])
                     for i in range(start, stop)])


def time_at_risk_range(features: np.ndarray, definition: str, points: GridPoints,
                       block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest and largest time-at-risk over the NPOs at every grid point, and the row of
    ``features`` where the smallest is reached (negative minimum = invalid k values).

    Works on the distinct feature rows, in blocks of grid points, so memory stays flat in the
    number of grid points.
    """
    uniq = np.unique(np.asarray(features, float), axis=0)
    tmin = np.empty(points.size)
    tmax = np.empty(points.size)
    argmin_row = np.empty(points.size, dtype=np.int64)
    for start in range(0, points.size, block):
        stop = min(start + block, points.size)
        T = uniq @ coefficient_matrix(definition, points, start, stop).T
        tmin[start:stop] = T.min(axis=0)
        tmax[start:stop] = T.max(axis=0)
        argmin_row[start:stop] = T.argmin(axis=0)
    return tmin, tmax, uniq[argmin_row]


def keyed_increments(t_rounded, secondary, at_risk_weight, death_weight):
    """:func:`~riskdask.hazard.estimators.weighted_increments` with ties in ``t`` broken by
    ``secondary`` (rounded), lexicographically: the order of ``t + eps * secondary`` as
    ``eps -> 0+``. Rows equal in both stay one group. Times may repeat in the output."""
    s = round_times(secondary)
    order = np.lexsort((s, t_rounded))
    ts, ss = t_rounded[order], s[order]
    new = np.concatenate(([True], (ts[1:] != ts[:-1]) | (ss[1:] != ss[:-1])))
    starts = np.flatnonzero(new)
    return ts[starts], group_increments(order, starts, at_risk_weight, death_weight)


def tiebreak_matrix(definition: str, points: GridPoints, interior: np.ndarray) -> np.ndarray:
    """``d coef / d theta`` (up to a positive factor) at the interior points, 0 elsewhere: the
    direction in which ``T`` moves when theta grows, which breaks ties on rational rays."""
    out = np.zeros((points.size, 4))
    for i in np.flatnonzero(interior):
        out[i] = coefficients(definition, -points.k2[i], points.k1[i], points.k0[i])
    return out


def _curves(t_rounded, at_risk, deaths, rule: GridRule, scale: float, secondary=None,
            origin: float = 0.0):
    """Smoothed hazards (101 x c) of every weight column for one set of pattern times."""
    if secondary is None:
        times, inc = weighted_increments(t_rounded, at_risk, deaths)
    else:
        times, inc = keyed_increments(t_rounded, secondary, at_risk, deaths)
    failing = inc.any(axis=1)  # only failure times carry kernel mass
    grid, bw = rule.grid_and_bandwidth(scale, origin)
    return grid, bw, smooth_hazard(grid, times[failing], inc[failing], bw, rule.boundary,
                                   origin)


def evaluate_points(features, at_risk, deaths, coefs, rule: GridRule,
                    tiebreak=None) -> np.ndarray:
    """Dev of every split at every coefficient point.

    Ties (``rule.ties = "direction_limit"``): where a row of ``tiebreak`` is nonzero (interior
    directions, :func:`tiebreak_matrix`), pattern times equal at this point are ordered by
    ``features @ tiebreak`` (:func:`keyed_increments`): Dev is then the limit of Dev at
    directions just above theta, and a rational ray k2/k1 = p/q, where distinct patterns tie,
    is not a point of its own. Rows of zeros (the axes, the fixed choices) keep the data's ties.

    Parameters
    ----------
    features : ndarray, shape (p, 4)
        Pattern features.
    at_risk, deaths : ndarray, shape (p, 2R)
        From :func:`sample_weights`.
    coefs : ndarray, shape (m, 4)
        Feature weights of the points (:func:`coefficient_matrix`).
    rule : GridRule
    tiebreak : ndarray, shape (m, 4), optional

    Returns
    -------
    ndarray, shape (m, R)
        ``Dev`` (seed eqs. 6-8) per point and split; ``nan`` where sample 1 has no hazard mass
        on the grid.
    """
    features = np.asarray(features, float)
    T_all = features @ np.asarray(coefs, float).T  # (p, m)
    use = (tiebreak is not None and rule.ties == "direction_limit")
    S_all = features @ np.asarray(tiebreak, float).T if use else None
    out = np.empty((coefs.shape[0], at_risk.shape[1] // 2))
    for i in range(coefs.shape[0]):
        t = round_times(T_all[:, i])
        sec = S_all[:, i] if use and np.any(tiebreak[i]) else None
        _, _, h = _curves(t, at_risk, deaths, rule, float(t.max()), sec,
                          support_start(coefs[i]))
        out[i] = deviation_columns(h[:, 0::2], h[:, 1::2])
    return out


@dataclass(frozen=True)
class TileInput:
    """What every worker needs for the grid search; sent to the cluster once."""

    features: np.ndarray
    at_risk: np.ndarray
    deaths: np.ndarray
    coefs: np.ndarray
    rule: GridRule
    tiebreak: np.ndarray | None = None


def evaluate_tile(chunk, shared: TileInput) -> np.ndarray:
    """Engine kernel: Dev (points x splits) for grid points ``[chunk.start, chunk.stop)``."""
    tb = None if shared.tiebreak is None else shared.tiebreak[chunk.start:chunk.stop]
    return evaluate_points(shared.features, shared.at_risk, shared.deaths,
                           shared.coefs[chunk.start:chunk.stop], shared.rule, tb)


@dataclass(frozen=True)
class Curves:
    """Hazard curves of several weight columns at one coefficient point (:func:`curves_for`).

    Attributes
    ----------
    grid : ndarray, shape (101,)
    bandwidth : float
    hazard : ndarray, shape (101, c)
        Smoothed hazard of each column (seed eq. 4).
    times : ndarray, shape (g,)
        Distinct times of the pooled patterns.
    increments : ndarray, shape (g, c)
        Breslow increments per column (0 where a column has no failure at a time).
    scale : float
        ``max T`` over the pooled sample (the relative rule's scale).
    origin : float
        The definition's smallest possible T (reflection point, a ``"support"`` grid's start).
    """

    grid: np.ndarray
    bandwidth: float
    hazard: np.ndarray
    times: np.ndarray
    increments: np.ndarray
    scale: float
    origin: float = 0.0

    def failures(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """Failure times and increments of one column (where its increment is > 0)."""
        keep = self.increments[:, column] > 0
        return self.times[keep], self.increments[keep, column]


def curves_for(table: PatternTable, weights: np.ndarray, coef: np.ndarray,
               rule: GridRule) -> Curves:
    """Smoothed hazard and Breslow cumulative hazard for weight columns at one point.

    Parameters
    ----------
    table : PatternTable
    weights : ndarray, shape (p, c)
        Pattern counts per curve (e.g. sample 1, sample 2, full sample).
    coef : ndarray, shape (4,)
    rule : GridRule

    Returns
    -------
    Curves
    """
    t = round_times(table.features @ coef)
    deaths = weights * table.event[:, None]
    times, inc = weighted_increments(t, weights, deaths)
    origin = support_start(coef)
    grid, bw = rule.grid_and_bandwidth(float(t.max()), origin)
    failing = inc.any(axis=1)
    h = smooth_hazard(grid, times[failing], inc[failing], bw, rule.boundary, origin)
    return Curves(grid=grid, bandwidth=float(bw), hazard=h, times=times, increments=inc,
                  scale=float(t.max()), origin=origin)


def bootstrap_curves(chunk, shared: dict) -> np.ndarray:
    """Engine kernel: smoothed full-sample hazards of bootstrap replicates ``[start, stop)``.

    Each replicate resamples the NPOs with replacement (chunk's own random stream), so the
    result depends on the plan only. Returns shape (n_replicates_in_chunk, 101).
    """
    table: PatternTable = shared["table"]
    rng = chunk.rng()
    n = table.inverse.size
    W = np.empty((table.n_patterns, chunk.size))
    for j in range(chunk.size):
        draw = rng.integers(0, n, size=n)
        W[:, j] = np.bincount(table.inverse[draw], minlength=table.n_patterns)
    t = round_times(table.features @ shared["coef"])
    times, inc = weighted_increments(t, W, W * table.event[:, None])
    failing = inc.any(axis=1)
    origin = support_start(shared["coef"])
    grid, bw = shared["rule"].grid_and_bandwidth(shared["scale"], origin)
    return smooth_hazard(grid, times[failing], inc[failing], bw, shared["rule"].boundary,
                         origin).T


def next_year_probability(times, increments, t_now, t_next) -> np.ndarray:
    """``P(close in (t_now, t_next]) = 1 - S(t_next)/S(t_now)
    = 1 - exp(-(H(t_next) - H(t_now)))``."""
    H_now = cumulative_hazard_at(times, increments, t_now)
    H_next = cumulative_hazard_at(times, increments, t_next)
    return -np.expm1(-(H_next - H_now))


def concat_points(a: GridPoints, b: GridPoints) -> GridPoints:
    """The points of ``a`` followed by those of ``b``, as one flat list of points."""
    return GridPoints(k1=np.concatenate([a.k1, b.k1]), k2=np.concatenate([a.k2, b.k2]),
                      k0=np.concatenate([a.k0, b.k0]), shape=(a.size + b.size,))
