"""Baseline hazard, its Gaussian-kernel smoothing, and the two-sample deviation Dev.

* Breslow / Nelson--Aalen increments ``dH(t_i) = d_i / n_i`` at the distinct failure times
  (the baseline of a Cox model without covariates, seed Section 2.1, eqs. 2-3). With risk
  scores ``r_j = exp(x_j beta)`` the denominator is ``sum_{j at risk} r_j`` (Breslow's
  estimator of the Cox baseline). Reference implementations: lifelines
  ``NelsonAalenFitter(nelson_aalen_smoothing=False)`` and
  ``CoxPHFitter().baseline_cumulative_hazard_``.
* Gaussian kernel smoothing (seed eq. 4): ``h(t) = (1/b) sum_i K((t - t_i)/b) dH(t_i)`` with
  ``K(u) = (2 pi)^(-1/2) exp(-u^2/2)``.
* ``Dev = sqrt(S/101) / V``, ``S = sum_i (H1_i - H2_i)^2``, ``V = sum_i H1_i / 101``
  (seed Section 2.4, eqs. 6-8), on the common 101-point grid.

Time values are rounded to :data:`TIME_DECIMALS` decimals before they are grouped, so that
time-at-risk values reached by different float sums (``0.1*3 + 0.2`` and ``0.1 + 0.2*2``) tie.

Evaluation grid and bandwidth (the rule every run states)
----------------------------------------------------------
*relative* mode (default): with ``s = max T`` over the pooled at-risk sample (both halves
together, so it is the same for both samples), the grid is ``t_j = s * j / 100``,
``j = 0..100`` and the bandwidth is ``b = bandwidth_fraction * s``. Both scale with ``T``, so
multiplying every ``T`` by ``c > 0`` multiplies ``h`` by ``1/c`` on a grid that moved with it,
and Dev (a ratio) is unchanged: Dev measures the *shape* of the curves, not their units.

*absolute* mode: the grid is ``linspace(grid_min, grid_max, 101)`` and the bandwidth ``b`` is
fixed, in the units of ``T``; then the scale of ``(k1, k2)`` matters, as in the seed's Figure 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TIME_DECIMALS", "N_GRID", "GridRule", "breslow_increments", "cumulative_hazard_at",
           "gaussian_kernel", "smooth_hazard", "deviation", "weighted_increments",
           "deviation_columns", "round_times", "kernel_matrix", "BOUNDARIES"]

TIME_DECIMALS = 9
#: Number of points of the common evaluation grid (seed Section 2.4: "101 is ... the number of
#: points obtained from the data by some interpolation procedure").
N_GRID = 101
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def round_times(t: np.ndarray) -> np.ndarray:
    """Round time-at-risk to :data:`TIME_DECIMALS` decimals so equal values tie exactly."""
    return np.round(np.asarray(t, dtype=np.float64), TIME_DECIMALS)


def breslow_increments(durations, events, risk_score=None, weights=None):
    """Breslow / Nelson--Aalen hazard increments at the distinct failure times (seed eqs. 2-3).

    Parameters
    ----------
    durations : array_like, shape (n,)
        Time-at-risk ``T``; rounded to 9 decimals before grouping.
    events : array_like of bool, shape (n,)
        ``True`` for a closure, ``False`` for censoring (still active at the end).
    risk_score : array_like, shape (n,), optional
        ``exp(x beta)`` per subject (Cox baseline); ``None`` = 1 (Nelson--Aalen).
    weights : array_like, shape (n,), optional
        Frequency weights (subject ``j`` counts ``weights[j]`` times); ``None`` = 1.

    Returns
    -------
    times : ndarray
        Distinct failure times, increasing.
    increments : ndarray
        ``dH(t_i) = d_i / sum_{j: T_j >= t_i} r_j``; ties use Breslow's rule ``d_i / n_i``.
    """
    t = round_times(durations)
    e = np.asarray(events, dtype=bool)
    w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
    r = np.ones_like(t) if risk_score is None else np.asarray(risk_score, dtype=np.float64)
    times, dH = weighted_increments(t, (w * r)[:, None], (w * e)[:, None])
    keep = dH[:, 0] > 0
    return times[keep], dH[keep, 0]


def weighted_increments(t_rounded: np.ndarray, at_risk_weight: np.ndarray,
                        death_weight: np.ndarray):
    """Increments ``d/n`` at every distinct time, for several weight columns at once.

    The workhorse of the grid search: one sort of the (rounded) times serves every column
    (both half-samples of every repeated split, or every bootstrap replicate).

    Parameters
    ----------
    t_rounded : ndarray, shape (p,)
        Rounded times (see :func:`round_times`).
    at_risk_weight : ndarray, shape (p, c)
        Contribution of each row to the at-risk sum of each column (counts, or count * risk score).
    death_weight : ndarray, shape (p, c)
        Deaths contributed by each row to each column (0 for censored rows).

    Returns
    -------
    times : ndarray, shape (g,)
        Distinct times, increasing.
    increments : ndarray, shape (g, c)
        ``d_g / n_g`` (0 where nobody failed or nobody is at risk).
    """
    order = np.argsort(t_rounded, kind="stable")
    ts = t_rounded[order]
    starts = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))
    return ts[starts], group_increments(order, starts, at_risk_weight, death_weight)


def group_increments(order: np.ndarray, starts: np.ndarray, at_risk_weight: np.ndarray,
                     death_weight: np.ndarray) -> np.ndarray:
    """Breslow increments ``d_g / n_g`` of the groups that start at ``starts`` in the rows
    sorted by ``order`` (the step :func:`weighted_increments` and the tie-keyed
    :func:`riskdask.hazard.gridsearch.keyed_increments` share)."""
    n_group = np.add.reduceat(at_risk_weight[order], starts, axis=0)
    d_group = np.add.reduceat(death_weight[order], starts, axis=0)
    # at risk at t_g: everyone whose time is >= t_g (reverse cumulative sum over groups)
    n_at_risk = np.cumsum(n_group[::-1], axis=0)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d_group > 0, d_group / np.where(n_at_risk > 0, n_at_risk, 1.0), 0.0)


def cumulative_hazard_at(times: np.ndarray, increments: np.ndarray, t) -> np.ndarray:
    """Right-continuous step function ``H(t) = sum_{t_i <= t} dH(t_i)``."""
    H = np.concatenate(([0.0], np.cumsum(increments)))
    idx = np.searchsorted(times, round_times(t), side="right")
    return H[idx]


def gaussian_kernel(u):
    """``K(u) = (2 pi)^(-1/2) exp(-u^2 / 2)`` (seed eq. 4)."""
    u = np.asarray(u, dtype=np.float64)
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u)


#: Boundary treatments of the kernel smoother near ``T = 0`` (see :func:`kernel_matrix`).
BOUNDARIES = ("none", "reflect")


def kernel_matrix(grid, times, bandwidth: float, boundary: str = "none",
                  origin: float = 0.0) -> np.ndarray:
    """``(1/b) K((t - t_i)/b)`` for every grid point ``t`` and failure time ``t_i``.

    ``boundary = "reflect"`` adds the mirror image of every failure time about ``origin``,
    ``2 origin - t_i`` (reflection, Schuster 1985; the correction R ``muhaz``'s boundary
    kernels also address): ``(1/b) [K((t - t_i)/b) + K((t - 2 origin + t_i)/b)]``. ``origin``
    is where the data start: the definition's smallest possible time-at-risk
    (:func:`~riskdask.hazard.timeatrisk.support_start`: ``k1 + k2`` for T and T1, 1 for T0, T2
    and T3), not ``T = 0`` where no NPO can be. A failure exactly at ``origin`` is its own
    mirror and is counted once. The plain Gaussian kernel puts the mass of failures near the
    start partly below it and estimates only about half of a constant hazard there; the
    reflected kernel keeps it on ``T >= origin``.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    grid = np.asarray(grid, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    kmat = gaussian_kernel((grid[:, None] - t[None, :]) / bandwidth)
    if boundary == "reflect":
        above = t > origin + 1e-9 * max(1.0, abs(origin))
        mirror = gaussian_kernel((grid[:, None] - (2.0 * origin - t[None, :])) / bandwidth)
        kmat = kmat + np.where(above[None, :], mirror, 0.0)
    return kmat / bandwidth


def smooth_hazard(grid, times, increments, bandwidth: float, boundary: str = "none",
                  origin: float = 0.0) -> np.ndarray:
    """Kernel-smoothed hazard ``h(t) = (1/b) sum_i K((t - t_i)/b) dH(t_i)`` (seed eq. 4).

    ``increments`` may be 1-D (one curve) or 2-D ``(n_times, n_curves)``; the kernel sum is a
    matrix product over the failure times. ``boundary`` and ``origin`` as in
    :func:`kernel_matrix` (default ``"none"``: the seed's formula as written).
    """
    if boundary == "none":  # the hot path of the grid search: no extra temporaries
        grid = np.asarray(grid, dtype=np.float64)
        kmat = gaussian_kernel((grid[:, None] - np.asarray(times, dtype=np.float64)[None, :])
                               / bandwidth)
        return (kmat @ np.asarray(increments, dtype=np.float64)) / bandwidth
    return (kernel_matrix(grid, times, bandwidth, boundary, origin)
            @ np.asarray(increments, dtype=np.float64))


def deviation(H1, H2) -> float:
    """Relative average deviation between two hazard curves (seed eqs. 6-8).

    ``Dev = sqrt(S / 101) / V``, ``S = sum (H1_i - H2_i)^2``, ``V = sum H1_i / 101``; the
    divisor is the number of grid points (101 on the seed's grid). Sample 1 is the "standard"
    curve: Dev is not symmetric in its arguments. ``nan`` when ``V == 0``.
    """
    H1 = np.asarray(H1, dtype=np.float64)
    H2 = np.asarray(H2, dtype=np.float64)
    return float(deviation_columns(H1[:, None], H2[:, None])[0])


def deviation_columns(H1: np.ndarray, H2: np.ndarray) -> np.ndarray:
    """Dev for several curve pairs at once (columns of ``H1`` and ``H2``, seed eqs. 6-8)."""
    m = H1.shape[0]
    S = np.sum((H1 - H2) ** 2, axis=0)
    V = np.sum(H1, axis=0) / m
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(V > 0, np.sqrt(S / m) / np.where(V > 0, V, 1.0), np.nan)


@dataclass(frozen=True)
class GridRule:
    """How the 101-point evaluation grid and the bandwidth are chosen (see module docstring).

    Parameters
    ----------
    mode : {"relative", "absolute"}
    bandwidth_fraction : float
        Relative mode: ``b = bandwidth_fraction * s`` with ``s = max T`` (pooled sample).
    grid_max_fraction : float
        Relative mode: the grid runs from 0 to ``grid_max_fraction * s``.
    bandwidth : float
        Absolute mode: ``b`` in units of T.
    grid_min, grid_max : float
        Absolute mode: grid range in units of T.
    n_points : int
        101 (seed).
    boundary : {"none", "reflect"}
        Boundary treatment near ``T = 0`` (:func:`kernel_matrix`).
    grid_start : {"zero", "support"}
        Relative mode: the grid runs from 0 (``"zero"``) or from the definition's smallest
        possible T (``"support"``, :func:`~riskdask.hazard.timeatrisk.support_start`), where
        the data start, to ``grid_max_fraction * s``; the 101 points are then all where NPOs
        can be. Scale-invariant either way (the start scales with ``(k1, k2)``).
    ties : {"data", "direction_limit"}
        How the *search* treats time-at-risk values that tie only because the direction is a
        rational ray (:func:`riskdask.hazard.gridsearch.evaluate_points`): ``"data"`` groups
        them as one failure time (Breslow's ``d/n``); ``"direction_limit"`` orders them as the
        neighbouring directions just above theta do, so Dev(theta) is the limit from above
        and rational rays (k2/k1 = 1/2, 1, 2, 3 ...) are not special.
    """

    mode: str = "relative"
    bandwidth_fraction: float = 0.1
    grid_max_fraction: float = 1.0
    bandwidth: float = 1.0
    grid_min: float = 0.0
    grid_max: float = 11.0
    n_points: int = N_GRID
    boundary: str = "none"
    ties: str = "data"
    grid_start: str = "zero"

    def grid_and_bandwidth(self, scale: float, origin: float = 0.0) -> tuple[np.ndarray, float]:
        """The grid and bandwidth for a pooled sample whose ``max T`` is ``scale`` (``origin``:
        the definition's smallest possible T, where a ``"support"`` grid starts)."""
        if self.mode == "relative":
            top = self.grid_max_fraction * scale
            lo = min(origin, top) if self.grid_start == "support" else 0.0
            grid = lo + (top - lo) * (np.arange(self.n_points, dtype=np.float64)
                                      / (self.n_points - 1))
            return grid, self.bandwidth_fraction * scale
        if self.mode == "absolute":
            return np.linspace(self.grid_min, self.grid_max, self.n_points), float(self.bandwidth)
        raise ValueError(f"unknown grid mode {self.mode!r}")

    def describe(self) -> str:
        edge = ("" if self.boundary == "none" else
                f", boundary correction at the support's start: {self.boundary}")
        if self.ties == "direction_limit":
            edge += ", ties on rational rays broken by the direction's limit from above"
        if self.mode == "relative":
            start = "min(T)" if self.grid_start == "support" else "0"
            where = (", min(T) the smallest possible T (k1 + k2 for T and T1, 1 for T0, T2, T3)"
                     if self.grid_start == "support" else "")
            return (f"relative: grid {start}..{self.grid_max_fraction:g}*max(T) "
                    f"({self.n_points} points), bandwidth {self.bandwidth_fraction:g}*max(T), "
                    f"max(T) over the pooled sample{where}{edge}")
        return (f"absolute: grid {self.grid_min:g}..{self.grid_max:g} ({self.n_points} points), "
                f"bandwidth {self.bandwidth:g} (units of T){edge}")
