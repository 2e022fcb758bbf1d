"""Probability of closure within the next year, from the fitted hazard curve, past the data too.

The spec asks for ``P(close within the next year | current time-at-risk)`` from the fitted
curve with ``S(t) = exp(-H(t))``:

``P = 1 - S(T_next) / S(T_now) = 1 - exp(-(H(T_next) - H(T_now)))``

where ``T_now`` is the NPO's time-at-risk today and ``T_next`` the time-at-risk it will have
after one more year (with or without a grant, :func:`~riskdask.hazard.timeatrisk.extend_one_year`).

Which ``H``
-----------
``H`` is the integral of the *smoothed* hazard of seed eq. 4, the curve the analysis fits:

``H_s(t) = int_0^t h(u) du = sum_i dH(t_i) [Phi((t - t_i)/b) - Phi(-t_i/b)]``

(closed form for the Gaussian kernel; with the reflection boundary correction the mirrored
terms ``Phi((t + t_i)/b) - Phi(t_i/b)`` are added). The Breslow step function ``H`` is flat
between failure times and after the last one, so it gives an exact 0 to every NPO whose next
year contains no observed failure time -- in particular to all NPOs at risk longer than anyone
who closed, ranking the longest at risk as the safest. The smoothed ``H_s`` has no such holes.

Past the data (the documented extrapolation rule)
-------------------------------------------------
Beyond the last observed failure time ``t_last`` the data say nothing about the hazard. The
rule used: **the smoothed hazard at ``t_last`` is carried forward as a constant**,
``H_s(t) = H_s(t_last) + h(t_last) (t - t_last)`` for ``t > t_last``. NPOs whose next-year
interval reaches past the data, ``T_next > t_last``, are flagged ``beyond_data``: their
probability rests (wholly if ``T_now >= t_last``, partly otherwise) on this rule. These are the
NPOs the Breslow step function would give an exact 0 (nobody closed at a larger T). A
probability is exactly 0 only if the data have no closure at all (``H = 0`` by the data).

The "if granted" probability
----------------------------
With a grant next year, ``T`` grows by the coefficient of ``N0`` only (a granted year adds a
year to the window but no no-grant spell or year): ``T_grant - T_now = c_N0``. Where
``c_N0 = 0`` (T2 = Y, T3 = X, or T1/T with ``k1 = 0``) a granted year does not move the NPO along
the time-at-risk axis at all, so the model has no closure risk for such a year: the
probability is not defined (reported as missing, with :func:`if_grant_status`'s reason).
Under T0 = N0 both years advance ``T`` by 1 and the two probabilities are equal.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .estimators import kernel_matrix

__all__ = ["EXTRAPOLATION_RULE", "integrated_hazard", "closure_probability", "if_grant_status"]

EXTRAPOLATION_RULE = ("beyond the last observed failure time the smoothed hazard there is "
                      "carried forward as a constant")


def _h_at(t, times, increments, bandwidth, boundary) -> np.ndarray:
    return kernel_matrix(np.atleast_1d(t), times, bandwidth, boundary) @ increments


def integrated_hazard(t, times, increments, bandwidth: float, boundary: str = "none") -> np.ndarray:
    """``H_s(t) = int_0^t h(u) du`` of the Gaussian-kernel hazard, carried forward past the data.

    Parameters
    ----------
    t : array_like
        Times-at-risk (``>= 0``).
    times, increments : ndarray, shape (g,)
        Failure times and Breslow increments (:func:`~riskdask.hazard.estimators.breslow_increments`).
    bandwidth : float
    boundary : {"none", "reflect"}

    Returns
    -------
    ndarray
        ``H_s`` at ``t`` (module docstring: closed form up to ``t_last``, then linear with
        slope ``h(t_last)``).
    """
    t = np.asarray(t, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    inc = np.asarray(increments, dtype=np.float64)
    if times.size == 0:
        return np.zeros_like(t)
    t_last = float(times.max())

    def H_upto(x):
        x = np.asarray(x, dtype=np.float64)
        z = (x[..., None] - times) / bandwidth
        val = ndtr(z) - ndtr(-times / bandwidth)
        if boundary == "reflect":
            val = val + ndtr((x[..., None] + times) / bandwidth) - ndtr(times / bandwidth)
        return val @ inc

    inside = H_upto(np.minimum(t, t_last))
    slope = float(_h_at(t_last, times, inc, bandwidth, boundary)[0])
    return inside + slope * np.maximum(t - t_last, 0.0)


def closure_probability(times, increments, t_now, t_next, bandwidth: float,
                        boundary: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """``P(close in (T_now, T_next]) = 1 - exp(-(H_s(T_next) - H_s(T_now)))`` and the flag.

    Returns
    -------
    p : ndarray
        Probability per NPO (``-expm1`` for accuracy at small values).
    beyond_data : ndarray of bool
        ``T_next`` lies beyond the last observed failure time (the hazard there is the
        carried-forward rule, :data:`EXTRAPOLATION_RULE`).
    """
    t_now = np.asarray(t_now, dtype=np.float64)
    t_next = np.asarray(t_next, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    dH = integrated_hazard(t_next, times, increments, bandwidth, boundary) - \
        integrated_hazard(t_now, times, increments, bandwidth, boundary)
    p = -np.expm1(-np.maximum(dH, 0.0))
    t_last = float(times.max()) if times.size else -np.inf
    return p, t_next > t_last


def if_grant_status(coef) -> tuple[bool, str]:
    """Whether the "if granted" next-year probability is defined for these feature weights.

    ``coef`` are the weights on ``(N0, N1, X, Z)``; a granted year changes ``N0`` only.
    """
    c_n0 = float(np.asarray(coef, dtype=np.float64)[0])
    if c_n0 > 0:
        return True, f"a granted year adds {c_n0:g} to T (the weight of N0)"
    return False, ("not defined: under this time-at-risk a year with a grant adds nothing to T "
                   "(N0 has weight 0), so the hazard model assigns it no closure risk")
