"""Synthetic NPO funding panel, the embedded default (the seed's data are confidential).

Shape of the seed's sample (Section 1): 2,660 Israeli NPOs that had a ministerial support
grant at least once in 1997-2007 and then a break in grants; closures counted from 1998; the
hazard of closure first rises and then falls with time-at-risk (the inverted U of Section 2.4,
Figure 1).

Generative model (every draw from one ``numpy.random.Generator`` seeded by ``seed``):

1. Field and function from fixed category shares; founding year: 75% founded before the
   period (age 0-49 at its start, skewed young), 25% founded during it (1997..end-2).
2. Grant history from the first year alive: a two-state Markov chain (first year a grant with
   probability ``p_initial_grant``; then ``p_keep`` to keep a grant, ``p_regain`` to regain
   one after a no-grant year). Only histories with a grant followed by a break before the
   end are kept (the seed's selection), drawn in batches until ``n_npos`` are found.
3. Closure: from the first break year on (and not before ``first_closure_year``), in each
   year the NPO closes with probability ``lambda(T_y)``, where ``T_y = true_k1 * N0 +
   true_k2 * N1`` is its time-at-risk up to and including that year (seed eq. 5; ``N0``
   inclusive, ``N1`` the spells begun so far). The closure year keeps its grant value; later
   years are not alive. The shape of ``lambda`` (:func:`true_hazard`, ``shape``):

   * ``"inverted_u"`` (default): ``peak_hazard * (T/peak_time) * exp(1 - T/peak_time)``,
     rising to ``peak_hazard`` at ``T = peak_time`` and falling after (seed Figure 1);
   * ``"linear"``: ``peak_hazard * T / peak_time`` (capped at 0.999);
   * ``"constant"``: ``peak_hazard`` whatever ``T`` (a flat hazard: the direction is then not
     identified, and a boundary-corrected smoother must recover ``peak_hazard`` at the
     support's start).

A simulator with a known truth
------------------------------
The panel is in the job's input format (``frame.to_csv(path, index=False)`` is a file
``data.path`` reads), and its truth is known: the direction
``theta* = atan2(true_k2, true_k1)`` (``true_k2 / true_k1 = tan theta*``; 63.4 deg is
``k2/k1 = 2``, 26.6 deg is ``1/2``) and, for every NPO active at the end of the period, the
generator's next-year closure probability (:func:`true_next_year_probability`). Tests and the
power study in ``benchmarks/hazard.py`` use both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import theta_deg
from .panel import Period

__all__ = ["FIELDS", "FUNCTIONS", "SHAPES", "generate_panel", "inverted_u_hazard", "true_hazard",
           "true_theta_deg", "true_next_year_probability"]

#: Hazard shapes of the generator (:func:`true_hazard`).
SHAPES = ("inverted_u", "linear", "constant")

FIELDS = ("welfare", "education", "culture", "health", "religion", "community")
FIELD_SHARES = (0.28, 0.22, 0.16, 0.12, 0.12, 0.10)
FUNCTIONS = ("services", "advocacy", "funding", "umbrella")
FUNCTION_SHARES = (0.55, 0.20, 0.15, 0.10)


def inverted_u_hazard(t, peak_hazard: float, peak_time: float) -> np.ndarray:
    """Annual closure probability ``peak_hazard * (t/peak_time) * exp(1 - t/peak_time)``."""
    x = np.asarray(t, dtype=np.float64) / peak_time
    return peak_hazard * x * np.exp(1.0 - x)


def true_hazard(t, shape: str = "inverted_u", peak_hazard: float = 0.07,
                peak_time: float = 5.0) -> np.ndarray:
    """The generator's annual closure probability at time-at-risk ``t`` (module docstring)."""
    t = np.asarray(t, dtype=np.float64)
    if shape == "inverted_u":
        return inverted_u_hazard(t, peak_hazard, peak_time)
    if shape == "linear":
        return np.minimum(peak_hazard * t / peak_time, 0.999)
    if shape == "constant":
        return np.full(t.shape, float(peak_hazard))
    raise ValueError(f"hazard shape must be one of {SHAPES}, got {shape!r}")


def true_theta_deg(true_k1: float, true_k2: float) -> float:
    """The generator's direction ``atan2(k2*, k1*)`` in degrees."""
    return float(theta_deg(true_k1, true_k2))


def true_next_year_probability(panel, *, shape: str = "inverted_u", peak_hazard: float = 0.07,
                               peak_time: float = 5.0, true_k1: float = 1.0,
                               true_k2: float = 1.0, grant_next: int = 0) -> np.ndarray:
    """The generator's probability that each NPO active at the end closes in the next year.

    Parameters
    ----------
    panel : NPOPanel
        :func:`~riskdask.hazard.panel.build_panel` of a :func:`generate_panel` frame.
    grant_next : {0, 1}
        The scenario for next year: no grant (funding instability continuing, what the ranked
        table reports in ``p_close_next_year``) or a grant (``p_close_next_year_if_grant``).

    Returns
    -------
    ndarray
        ``lambda(true_k1 * N0' + true_k2 * N1')`` with ``N0', N1'`` the features one year later
        (:func:`~riskdask.hazard.timeatrisk.extend_one_year`), in the order of the active NPOs
        of ``panel.npos`` (the order of the ranked table before ranking).
    """
    from .timeatrisk import extend_one_year

    active = ~panel.event
    f = extend_one_year(panel.grants[active], panel.features.end_index[active], grant_next)
    return true_hazard(true_k1 * f.N0 + true_k2 * f.N1, shape, peak_hazard, peak_time)


def _draw_batch(rng, m, period: Period, p_initial_grant, p_keep, p_regain):
    n_years = period.years.size
    field = rng.choice(len(FIELDS), size=m, p=FIELD_SHARES)
    function = rng.choice(len(FUNCTIONS), size=m, p=FUNCTION_SHARES)
    during = rng.random(m) < 0.25
    age_at_start = np.minimum(rng.geometric(1 / 14, size=m) - 1, 49)
    founded = np.where(during, rng.integers(period.start, period.end - 1, size=m),
                       period.start - 1 - age_at_start)
    first_col = np.maximum(founded - period.start, 0)
    G = np.full((m, n_years), -1, dtype=np.int8)
    state = (rng.random(m) < p_initial_grant).astype(np.int8)
    u = rng.random((m, n_years))
    for j in range(n_years):
        started = first_col < j
        p = np.where(state == 1, p_keep, p_regain)
        nxt = np.where(started, (u[:, j] < p).astype(np.int8), state)
        state = np.where(first_col <= j, nxt, state)
        G[:, j] = np.where(first_col <= j, state, -1)
    return field, function, founded, G


def generate_panel(n_npos: int = 2660, period: Period = Period(), seed: int = 2018, *,
                   p_initial_grant: float = 0.85, p_keep: float = 0.8, p_regain: float = 0.45,
                   peak_hazard: float = 0.07, peak_time: float = 5.0,
                   true_k1: float = 1.0, true_k2: float = 1.0,
                   shape: str = "inverted_u") -> pd.DataFrame:
    """A long NPO-year panel of ``n_npos`` at-risk NPOs (see the module docstring).

    ``shape`` picks the true hazard (:func:`true_hazard`); ``true_k1, true_k2`` the true
    time-at-risk ``T* = true_k1 N0 + true_k2 N1``, hence the direction ``theta*``.

    Returns
    -------
    pandas.DataFrame
        Columns ``npo_id, year, grant, field, function, founded_year, closed_year`` (the shape
        :func:`riskdask.hazard.panel.build_panel` reads), deterministic in its arguments.
    """
    if shape not in SHAPES:
        raise ValueError(f"hazard shape must be one of {SHAPES}, got {shape!r}")
    rng = np.random.default_rng(seed)  # an int or a SeedSequence (the run's synthetic stream)
    n_years = period.years.size
    parts = []
    have = 0
    while have < n_npos:
        batch = _draw_batch(rng, max(2 * (n_npos - have), 64), period, p_initial_grant, p_keep,
                            p_regain)
        G = batch[3]
        prior_grant = np.zeros_like(G, dtype=bool)
        prior_grant[:, 1:] = np.cumsum(G == 1, axis=1)[:, :-1] > 0
        has_break = ((G == 0) & prior_grant).any(axis=1)
        idx = np.flatnonzero(has_break)[: n_npos - have]
        parts.append(tuple(a[idx] for a in batch))
        have += idx.size
    field, function, founded, G = (np.concatenate([p[i] for p in parts]) for i in range(4))

    # closures, year by year, from the time-at-risk accumulated so far
    prior_grant = np.zeros_like(G, dtype=bool)
    prior_grant[:, 1:] = np.cumsum(G == 1, axis=1)[:, :-1] > 0
    broken = np.zeros(n_npos, dtype=bool)
    closed_col = np.full(n_npos, -1)
    N0 = np.zeros(n_npos)
    N1 = np.zeros(n_npos)
    prev_no_grant = np.zeros(n_npos, dtype=bool)
    u = rng.random((n_npos, n_years))
    for j in range(n_years):
        alive = (G[:, j] != -1) & (closed_col < 0)
        no_grant = alive & (G[:, j] == 0)
        broken |= no_grant & prior_grant[:, j]
        active = alive & broken
        N0 = np.where(active, N0 + 1, N0)
        N1 = np.where(active & no_grant & ~prev_no_grant, N1 + 1, N1)
        prev_no_grant = np.where(active, no_grant, prev_no_grant)
        p = true_hazard(true_k1 * N0 + true_k2 * N1, shape, peak_hazard, peak_time)
        can_close = active & (period.start + j >= period.first_closure_year)
        closes = can_close & (u[:, j] < p)
        closed_col = np.where(closes, j, closed_col)
    for i in np.flatnonzero(closed_col >= 0):
        G[i, closed_col[i] + 1:] = -1

    npo_id = np.array([f"NPO{i + 1:05d}" for i in range(n_npos)])
    closed_year = np.where(closed_col >= 0, period.start + closed_col, np.nan)
    rows, cols = np.nonzero(G != -1)
    return pd.DataFrame({
        "npo_id": npo_id[rows],
        "year": (period.start + cols).astype(np.int64),
        "grant": G[rows, cols].astype(np.int64),
        "field": np.asarray(FIELDS, dtype=object)[field[rows]],
        "function": np.asarray(FUNCTIONS, dtype=object)[function[rows]],
        "founded_year": founded[rows].astype(np.int64),
        "closed_year": pd.array(closed_year[rows], dtype="Int64"),
    })
