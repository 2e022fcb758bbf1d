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

__all__ = ["EXTRAPOLATION_RULE", "integrated_hazard", "closure_probability", "if_grant_status",
           "next_year_table", "MODEL_EXTRAPOLATION_RULE", "model_next_year_table"]

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
        Failure times and Breslow increments
        (:func:`~riskdask.hazard.estimators.breslow_increments`).
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
    dH = (integrated_hazard(t_next, times, increments, bandwidth, boundary)
          - integrated_hazard(t_now, times, increments, bandwidth, boundary))
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


def next_year_table(npos, grants, end_index, features, event, coef, times, increments,
                    bandwidth: float, boundary: str = "none"):
    """Ranked P(closure within the next year) for every active at-risk NPO (module docstring).

    Parameters
    ----------
    npos : pandas.DataFrame
        The at-risk NPO table (``npo_id, field, function``), aligned with ``grants``.
    grants, end_index : ndarray
        Grant histories and window ends (:class:`~riskdask.hazard.timeatrisk.SpellFeatures`).
    features : ndarray, shape (n, 4)
    event : ndarray of bool
    coef : ndarray, shape (4,)
        Feature weights of the chosen time-at-risk.
    times, increments : ndarray
        Full-sample failure times and Breslow increments at ``coef``.
    bandwidth : float
    boundary : {"none", "reflect"}

    Returns
    -------
    table : pandas.DataFrame
        ``rank, npo_id, field, function, time_at_risk, time_at_risk_next, p_close_next_year,
        p_close_next_year_if_grant, beyond_data, granted_last_year``, ranked by the no-grant
        probability (funding instability continuing, the risk the seed studies), ties by npo_id.
    info : dict
        ``n_active, n_beyond_data`` (``T_next`` past the last failure time),
        ``n_wholly_beyond_data`` (``T_now`` at or past it: the Breslow step gives these 0),
        ``last_failure_time, extrapolation_rule, if_grant_defined,
        if_grant_note``.
    """

    active, G, end, now, t_nogrant, t_grant = _times_now_and_next(grants, end_index, features,
                                                                  event, coef)
    p0, beyond = closure_probability(times, increments, now, t_nogrant, bandwidth, boundary)
    defined, note = if_grant_status(coef)
    if defined:
        p1, _ = closure_probability(times, increments, now, t_grant, bandwidth, boundary)
    else:
        p1 = np.full(now.shape, np.nan)
    out = _ranked(npos[active], now, t_nogrant, p0, p1, beyond,
                  G[np.arange(G.shape[0]), end] == 1)
    t_last = float(np.max(times)) if len(times) else -np.inf
    info = {"n_active": int(active.sum()), "n_beyond_data": int(beyond.sum()),
            "n_wholly_beyond_data": int(np.count_nonzero(now >= t_last)),
            "last_failure_time": float(np.max(times)) if len(times) else None,
            "extrapolation_rule": EXTRAPOLATION_RULE, "if_grant_defined": bool(defined),
            "if_grant_note": note}
    return out.reset_index(drop=True), info


def _times_now_and_next(grants, end_index, features, event, coef):
    """The active NPOs (not closed), their grant rows and window ends, and their time-at-risk
    now, next year without a grant and next year with one."""
    from .timeatrisk import extend_one_year

    active = ~np.asarray(event, dtype=bool)
    G = grants[active]
    end = end_index[active]
    now = features[active] @ coef
    t_nogrant = extend_one_year(G, end, 0).matrix() @ coef
    t_grant = extend_one_year(G, end, 1).matrix() @ coef
    return active, G, end, now, t_nogrant, t_grant


def _ranked(sub, now, t_nogrant, p0, p1, beyond, granted_last_year):
    """The active NPOs' next-year table, most likely to close first (ties by id)."""
    import pandas as pd

    out = pd.DataFrame({"npo_id": sub.npo_id.to_numpy(), "field": sub.field.to_numpy(),
                        "function": sub.function.to_numpy(), "time_at_risk": now,
                        "time_at_risk_next": t_nogrant, "p_close_next_year": p0,
                        "p_close_next_year_if_grant": p1, "beyond_data": beyond,
                        "granted_last_year": granted_last_year})
    out = out.sort_values(["p_close_next_year", "npo_id"], ascending=[False, True], kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


#: How the person-year model's probabilities treat time-at-risk past the data.
MODEL_EXTRAPOLATION_RULE = ("past the largest time-at-risk of the person-years the fitted "
                            "annual hazard there is carried forward as a constant")


def model_next_year_table(npos, grants, end_index, features, event, fit, direction: dict):
    """Ranked next-year closure probabilities from the person-year model (calibrated).

    The probability that an active NPO closes in the next calendar year is the fitted annual
    closure probability at the time-at-risk it will have reached in that year,
    ``p = min(mu(T_next), 1)`` (:func:`riskdask.hazard.likelihood.predict_probability`): the
    Poisson mean of a 0/1 person-year outcome is the annual probability itself, so no
    ``1 - exp(-H)`` conversion enters. ``T_next`` as in :func:`next_year_table` (no grant next
    year; ``_if_grant``: a grant).

    Parameters
    ----------
    npos, grants, end_index, features, event
        As in :func:`next_year_table`.
    fit : riskdask.hazard.likelihood.PoissonFit
        The model at the prediction direction (``fit.coef`` the feature weights).
    direction : dict
        What the direction is (``source``, ``theta_deg``, ...), copied into ``info``.

    Returns
    -------
    table : pandas.DataFrame
        Columns of :func:`next_year_table`; ``beyond_data`` is ``T_next > fit.hi``.
    info : dict
        ``n_active, n_beyond_data, n_wholly_beyond_data, largest_time_at_risk,
        extrapolation_rule, if_grant_defined, if_grant_note, direction, model,
        mean_p_close_next_year``.
    """

    from .likelihood import predict_probability

    coef = fit.coef
    active, G, end, now, t_nogrant, t_grant = _times_now_and_next(grants, end_index, features,
                                                                  event, coef)
    p0 = predict_probability(fit, t_nogrant)
    defined, note = if_grant_status(coef)
    p1 = predict_probability(fit, t_grant) if defined else np.full(now.shape, np.nan)
    beyond = t_nogrant > fit.hi
    out = _ranked(npos[active], now, t_nogrant, p0, p1, beyond,
                  G[np.arange(G.shape[0]), end] == 1)
    info = {"n_active": int(active.sum()), "n_beyond_data": int(beyond.sum()),
            "n_wholly_beyond_data": int(np.count_nonzero(now >= fit.hi)),
            "largest_time_at_risk": float(fit.hi),
            "extrapolation_rule": MODEL_EXTRAPOLATION_RULE, "if_grant_defined": bool(defined),
            "if_grant_note": note, "direction": direction,
            "model": f"person-year Poisson, cubic B-spline log-hazard in T (df {fit.df})",
            "mean_p_close_next_year": float(p0.mean()) if p0.size else None}
    return out.reset_index(drop=True), info
