"""Data-driven bandwidth for the kernel hazard, and the optimum's sensitivity to the bandwidth.

lifelines smooths with an Epanechnikov kernel and a bandwidth the user picks, without boundary
correction; R ``muhaz`` selects bandwidths and corrects the boundary. Here, for the seed's
Gaussian kernel (eq. 4):

Least-squares cross-validation (Ramlau-Hansen 1983; Patil 1993, Ann. Statist. 21)
--------------------------------------------------------------------------------
``CV(b) = int_0^tau h_b(t)^2 dt - 2 sum_{g: t_g <= tau} sum_{h != g} K_b(t_g, t_h) dH_g dH_h``

estimates ``int_0^tau (h_b - h)^2 dt - int_0^tau h^2 dt``, the integrated squared error up to a
constant: the cross term is the leave-one-out estimate of ``int h_b h``. ``dH_g`` are the
Breslow increments at the distinct failure times, ``K_b(t, s) = K((t - s)/b)/b`` (plus the
mirrored term with the reflection boundary correction). The pairs left out are whole *tied
time groups* (leave one distinct failure time out): on continuous data that is the classical
leave-one-out; on time-at-risk values that sit on a lattice (integers N0, N1 ...) it keeps the
score from diverging to ``-inf`` as ``b -> 0`` (tied failures would otherwise count as
neighbours at distance 0). ``int h_b^2`` is a trapezoid sum on 512 points of ``[0, tau]``.

The bandwidth minimising ``CV`` over a geometric candidate grid is returned with the score
curve; when the minimum is at an end of the candidates that is reported (``at_edge``), since
the true minimiser may lie outside.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .estimators import GridRule, gaussian_kernel, kernel_matrix
from .gridsearch import evaluate_points

__all__ = ["lscv_scores", "cv_bandwidth", "bandwidth_sensitivity", "DEFAULT_CANDIDATE_FRACTIONS"]

#: Candidate bandwidths as fractions of the time-at-risk scale (max T).
DEFAULT_CANDIDATE_FRACTIONS = tuple(np.round(np.geomspace(0.02, 0.5, 25), 6))


def lscv_scores(times, increments, bandwidths, tau: float, boundary: str = "none",
                n_int: int = 512) -> np.ndarray:
    """``CV(b)`` for every candidate bandwidth (module docstring).

    Parameters
    ----------
    times, increments : ndarray, shape (g,)
        Distinct failure times and Breslow increments.
    bandwidths : array_like
        Candidates ``b > 0``.
    tau : float
        Upper end of the integration range (the evaluation grid's end).
    boundary : {"none", "reflect"}
    """
    t = np.asarray(times, dtype=np.float64)
    dH = np.asarray(increments, dtype=np.float64)
    grid = np.linspace(0.0, float(tau), n_int)
    inside = t <= tau
    scores = []
    for b in np.asarray(bandwidths, dtype=np.float64):
        h = kernel_matrix(grid, t, b, boundary) @ dH
        integral = np.trapezoid(h * h, grid)
        K = gaussian_kernel((t[:, None] - t[None, :]) / b)
        if boundary == "reflect":
            K = K + gaussian_kernel((t[:, None] + t[None, :]) / b)
        K = K / b
        np.fill_diagonal(K, 0.0)  # leave the own time group out
        cross = float(dH[inside] @ (K[inside] @ dH))
        scores.append(integral - 2.0 * cross)
    return np.asarray(scores)


def cv_bandwidth(times, increments, scale: float, tau: float | None = None, boundary: str = "none",
                 fractions=DEFAULT_CANDIDATE_FRACTIONS) -> dict:
    """The LSCV bandwidth over candidates ``fraction * scale``.

    Returns
    -------
    dict
        ``bandwidth``, ``fraction`` (of ``scale``), ``at_edge``, ``candidates`` (DataFrame of
        ``fraction, bandwidth, cv``), ``boundary``.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    bws = fr * float(scale)
    tau = float(scale) if tau is None else float(tau)
    cv = lscv_scores(times, increments, bws, tau, boundary)
    i = int(np.argmin(cv))
    return {"bandwidth": float(bws[i]), "fraction": float(fr[i]),
            "at_edge": bool(i in (0, fr.size - 1)), "boundary": boundary,
            "candidates": pd.DataFrame({"fraction": fr, "bandwidth": bws, "cv": cv})}


def bandwidth_sensitivity(features, at_risk, deaths, coefs, theta_deg_values, rule: GridRule,
                          fractions=(0.05, 0.1, 0.2), level: float = 0.9,
                          tiebreak=None) -> pd.DataFrame:
    """The interior optimum direction at several relative bandwidth fractions.

    ``coefs`` are the feature weights of directions ``theta_deg_values`` (``0 < theta < 90``,
    the interior); per fraction the Dev of every split is evaluated there
    (:func:`~riskdask.hazard.gridsearch.evaluate_points`), and the optimum of the mean Dev and
    the ``level`` range of the per-split optima are reported. Given the run's own grid points
    (in grid order, the run's optimum among them) and ``tiebreak``, the row at the run's
    fraction reproduces the run's optimum exactly: the same Dev (same points, same tie rule),
    and the argmin of a subset that holds the overall argmin is that argmin.
    """
    if rule.mode != "relative":
        raise ValueError("bandwidth fractions apply to the relative grid rule only")
    th = np.asarray(theta_deg_values, float)
    a = (1.0 - level) / 2.0
    rows = []
    for f in fractions:
        dev = evaluate_points(features, at_risk, deaths, coefs,
                              replace(rule, bandwidth_fraction=float(f)), tiebreak)
        ok = np.isfinite(dev).all(axis=1)
        mean = np.where(ok, np.where(np.isfinite(dev), dev, 0).mean(axis=1), np.inf)
        i = int(np.argmin(mean))
        per = th[np.argmin(np.where(np.isfinite(dev), dev, np.inf), axis=0)]
        lo, hi = np.quantile(per, [a, 1 - a])
        rows.append({"bandwidth_fraction": float(f), "theta_deg": float(th[i]),
                     "ratio_k2_k1": float(np.tan(np.radians(th[i]))), "dev_mean": float(mean[i]),
                     "theta_lo": float(lo), "theta_hi": float(hi), "n_splits": int(dev.shape[1])})
    return pd.DataFrame(rows)
