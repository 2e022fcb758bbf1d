"""A likelihood estimator of the direction of (k1, k2): the profile likelihood of theta.

The seed chooses (k1, k2) by the two-sample deviation Dev (Section 2.4, eqs. 6-8). Dev compares
the *shapes* of two half-sample curves; it does not ask how well ``T`` explains who closed
when, and on simulated panels with a known direction it does not find it (issue 22). This
module asks that question directly.

The model (discrete-time person-year Poisson regression, a piecewise-exponential model)
-----------------------------------------------------------------------------------------
Every at-risk NPO contributes one **person-year** for each calendar year ``y`` of its window
``[y_b, y_e]`` (:mod:`~riskdask.hazard.timeatrisk`) from ``first_closure_year`` on (earlier
years cannot end in a counted closure, seed Section 1). At year ``y`` its features
``(N0, N1, X, Z)`` are those of the window up to and including ``y`` (``N0`` inclusive, as
everywhere), its time-at-risk ``T_y = c(theta) . features`` and its outcome ``d = 1`` if it
closed in ``y``. With ``k1 = cos theta``, ``k2 = sin theta`` (T: ``c = (k1, k2, 0, 0)``,
seed eq. 5; T1: ``c = (k1, 0, k2, k2 k0)``, Appendix A eqs. 10, 12):

``d ~ Poisson(mu(T_y))``,  ``log mu(T) = sum_j beta_j B_j(T)``,

``B_j`` a cubic B-spline basis with ``df`` functions (``df - 4`` interior knots evenly spaced
between the smallest and the largest ``T_y`` of the person-years; the basis is a partition of
unity, so it carries the intercept; ``df < 4`` lowers the degree to ``df - 1``). Outside the
data's range the basis is held at its edge value (constant hazard past the data). The Poisson
mean of a 0/1 outcome estimates the annual closure probability itself (for one group the MLE
is ``d / n``), and the score equations give ``sum mu_hat = sum d``: the fitted probabilities
add up to the closures (calibration in the large).

Why this fit: person-years with equal features are **aggregated** (deaths and exposure per
distinct ``(N0, N1, X, Z)``, a few hundred rows at most whatever the number of NPOs), and the
Poisson log-likelihood of the aggregate equals that of the person-years exactly
(``sum d log mu - e mu``; ``log d!`` is 0 for 0/1 outcomes). On so few rows a hand-written
Newton iteration (numpy, step halving, least-squares steps so that a rank-deficient basis at
the axes is harmless) converges to machine precision in a few milliseconds, which the profile
needs (differences of log-likelihoods of ~2 matter); scikit-learn's ``PoissonRegressor``
(lbfgs / newton-cholesky) is the independent reference in the tests (statsmodels is not
installed). The profile over theta runs on the cluster as tasks (:func:`profile_tile`).

The profile and what is reported (:func:`profile_report`)
---------------------------------------------------------
``l(theta) = max_beta loglik(beta | theta)`` on a grid ``theta in [0, 90]`` degrees, axes
included; the maximum refined between grid neighbours (bounded scalar search); the 95 %
profile-likelihood interval ``{theta: 2 (l_max - l(theta)) <= chi2_1(0.95) = 3.841}`` (its
outermost crossings, refined by root finding; an end at 0 or 90 when the set reaches it);
likelihood-ratio tests of ``theta = 0`` (T0 = N0), ``45`` (the seed's k1 = k2) and ``90``
(k1 = 0): ``LR = 2 (l_max - l(theta_0))``, p-value from ``chi2_1`` for 45 deg and the
boundary mixture ``0.5 chi2_0 + 0.5 chi2_1`` (``p = sf / 2``) at the ends of the range.
Pure numpy/scipy: the workers import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.interpolate import BSpline
from scipy.stats import chi2

from .timeatrisk import coefficients

__all__ = ["PersonYears", "person_years", "aggregate", "Aggregate", "spline_basis",
           "PoissonFit", "fit_poisson", "fit_at", "profile_loglik", "ProfileInput",
           "profile_tile", "profile_report", "ProfileReport", "direction_coef", "CHI2_95",
           "predict_probability", "DEFAULT_DF", "refine_maximum"]

#: ``chi2_1`` 95 % quantile: the profile-likelihood interval's cut-off.
CHI2_95 = float(chi2.ppf(0.95, 1))
#: Spline degrees of freedom of the baseline (config ``likelihood.df``).
DEFAULT_DF = 6


# -- person-years ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PersonYears:
    """One row per at-risk NPO-year from ``first_closure_year`` on (module docstring).

    Attributes
    ----------
    features : ndarray, shape (m, 4)
        ``(N0, N1, X, Z)`` of the window up to and including the row's year.
    year_index : ndarray of int, shape (m,)
        Column of the year in the period (0 = ``period.start``).
    npo : ndarray of int, shape (m,)
        Row of the NPO in the at-risk table.
    event : ndarray of float, shape (m,)
        1 in the closure year, else 0.
    """

    features: np.ndarray
    year_index: np.ndarray
    npo: np.ndarray
    event: np.ndarray

    @property
    def size(self) -> int:
        return int(self.event.size)


def person_years(grants: np.ndarray, break_index: np.ndarray, end_index: np.ndarray,
                 event: np.ndarray, first_index: int = 0) -> PersonYears:
    """The person-year table of the at-risk NPOs (vectorised over NPOs, a loop over years).

    Parameters
    ----------
    grants : ndarray, shape (n, years)
        1 / 0 / -1 per year (:class:`~riskdask.hazard.panel.NPOPanel.grants`).
    break_index, end_index : ndarray of int, shape (n,)
        Columns of ``y_b`` and ``y_e`` (:class:`~riskdask.hazard.timeatrisk.SpellFeatures`).
    event : ndarray of bool, shape (n,)
        Closed in ``y_e``.
    first_index : int
        Column of ``first_closure_year``: earlier years give no row.

    Returns
    -------
    PersonYears
        The row of an NPO's last year carries the features of
        :func:`~riskdask.hazard.timeatrisk.spell_features` (the test checks it).
    """
    g = np.asarray(grants)
    n, n_years = g.shape
    b = np.asarray(break_index, dtype=np.int64)
    e = np.asarray(end_index, dtype=np.int64)
    ev = np.asarray(event, dtype=bool)
    N1 = np.zeros(n)
    X = np.zeros(n)
    Z = np.zeros(n)
    run = np.zeros(n)
    parts = []
    for j in range(n_years):
        inside = (b >= 0) & (b <= j) & (j <= e)
        no_grant = inside & (g[:, j] == 0)
        run = np.where(no_grant, run + 1, 0.0)
        N1 = N1 + (no_grant & (run == 1))
        X = X + no_grant
        Z = Z + np.where(no_grant, run - 1, 0.0)
        rows = np.flatnonzero(inside) if j >= first_index else np.empty(0, np.int64)
        if rows.size:
            feats = np.column_stack([j - b[rows] + 1.0, N1[rows], X[rows], Z[rows]])
            parts.append((feats, np.full(rows.size, j), rows,
                          (ev[rows] & (e[rows] == j)).astype(np.float64)))
    if not parts:
        return PersonYears(np.empty((0, 4)), np.empty(0, np.int64), np.empty(0, np.int64),
                           np.empty(0))
    f, y, i, d = (np.concatenate([p[k] for p in parts]) for k in range(4))
    order = np.lexsort((y, i))  # by NPO, then year: independent of the loop
    return PersonYears(features=f[order], year_index=y[order].astype(np.int64),
                       npo=i[order].astype(np.int64), event=d[order])


@dataclass(frozen=True)
class Aggregate:
    """Person-years with equal features pooled: ``exposure`` rows and ``deaths`` closures."""

    features: np.ndarray
    exposure: np.ndarray
    deaths: np.ndarray


def aggregate(features: np.ndarray, event: np.ndarray, weights=None) -> Aggregate:
    """Pool person-years by their features (lexicographic order, deterministic)."""
    w = np.ones(len(event)) if weights is None else np.asarray(weights, np.float64)
    if len(event) == 0:
        return Aggregate(np.empty((0, 4)), np.empty(0), np.empty(0))
    uniq, inv = np.unique(np.asarray(features, np.float64), axis=0, return_inverse=True)
    inv = inv.ravel()
    return Aggregate(features=uniq,
                     exposure=np.bincount(inv, weights=w, minlength=uniq.shape[0]),
                     deaths=np.bincount(inv, weights=w * np.asarray(event, np.float64),
                                        minlength=uniq.shape[0]))


# -- the spline baseline ---------------------------------------------------------------------
def spline_basis(t, lo: float, hi: float, df: int = DEFAULT_DF) -> np.ndarray:
    """B-spline basis in ``T`` with ``df`` functions on ``[lo, hi]`` (module docstring).

    Values outside ``[lo, hi]`` are clamped to the nearest end (the hazard is held constant
    past the data). ``lo == hi`` (one distinct time) gives the single constant column.
    """
    t = np.asarray(t, dtype=np.float64)
    if not hi > lo:
        return np.ones((t.size, 1))
    degree = min(3, df - 1)
    n_inner = df - degree - 1
    inner = np.linspace(lo, hi, n_inner + 2)[1:-1]
    knots = np.concatenate([np.full(degree + 1, lo), inner, np.full(degree + 1, hi)])
    x = np.clip(t, lo, hi)
    return BSpline.design_matrix(x, knots, degree, extrapolate=False).toarray()


def direction_coef(definition: str, theta_deg: float, k0: float = 0.0) -> np.ndarray:
    """Feature weights at direction ``theta`` (``k1 = cos``, ``k2 = sin``; exact on the axes)."""
    th = math.radians(theta_deg)
    k1, k2 = math.cos(th), math.sin(th)
    k1 = 0.0 if abs(k1) < 1e-12 else k1
    k2 = 0.0 if abs(k2) < 1e-12 else k2
    return coefficients(definition, k1, k2, k0)


# -- the Poisson fit -------------------------------------------------------------------------
@dataclass(frozen=True)
class PoissonFit:
    """A fitted person-year Poisson model at one time-at-risk definition.

    ``beta`` on :func:`spline_basis` ``(lo, hi, df)``; ``loglik = sum d log mu - e mu``;
    ``iterations`` Newton steps; ``converged`` whether the log-likelihood settled.
    """

    beta: np.ndarray
    loglik: float
    lo: float
    hi: float
    df: int
    coef: np.ndarray
    iterations: int
    converged: bool

    def rate(self, t) -> np.ndarray:
        """``mu(T)``: the fitted annual closure rate (held constant past the data)."""
        return np.exp(spline_basis(t, self.lo, self.hi, self.df) @ self.beta)


def _loglik(eta, exposure, deaths) -> float:
    mu = np.exp(eta)
    return float(np.sum(np.where(deaths > 0, deaths * eta, 0.0) - exposure * mu))


def fit_poisson(B: np.ndarray, exposure: np.ndarray, deaths: np.ndarray, *,
                max_iter: int = 100, tol: float = 1e-11) -> tuple[np.ndarray, float, int, bool]:
    """Maximum-likelihood ``beta`` of ``deaths ~ Poisson(exposure * exp(B beta))`` by Newton.

    Starts from the constant rate ``sum d / sum e``; each step solves the Newton system by
    least squares (a rank-deficient ``B`` gives the minimum-norm step) and is halved until the
    log-likelihood does not fall. Stops when the gain is below ``tol * (1 + |loglik|)``.

    Returns
    -------
    beta, loglik, iterations, converged
    """
    B = np.asarray(B, np.float64)
    e = np.asarray(exposure, np.float64)
    d = np.asarray(deaths, np.float64)
    total = d.sum()
    if total <= 0:  # no closure: the supremum is mu -> 0, loglik -> 0
        return np.full(B.shape[1], -np.inf), 0.0, 0, True
    beta = np.linalg.lstsq(B, np.full(B.shape[0], math.log(total / e.sum())), rcond=None)[0]
    ll = _loglik(B @ beta, e, d)
    for it in range(1, max_iter + 1):
        mu = e * np.exp(B @ beta)
        grad = B.T @ (d - mu)
        sw = np.sqrt(mu)
        step = np.linalg.lstsq(B * sw[:, None], (d - mu) / np.where(sw > 0, sw, 1.0),
                               rcond=None)[0]
        gain_lin = float(grad @ step)
        t = 1.0
        while True:
            cand = beta + t * step
            ll_new = _loglik(B @ cand, e, d)
            if ll_new >= ll - 1e-13 * (1 + abs(ll)) or t < 1e-10:
                break
            t /= 2
        gain = ll_new - ll
        beta, ll = cand, ll_new
        if abs(gain) <= tol * (1 + abs(ll)) and gain_lin <= 1e-8 * (1 + abs(ll)):
            return beta, ll, it, True
    return beta, ll, max_iter, False


def fit_at(agg: Aggregate, coef: np.ndarray, df: int = DEFAULT_DF) -> PoissonFit:
    """The person-year Poisson fit with time-at-risk ``T = features @ coef``."""
    coef = np.asarray(coef, np.float64)
    T = agg.features @ coef
    live = agg.exposure > 0
    lo, hi = float(T[live].min()), float(T[live].max())
    B = spline_basis(T, lo, hi, df)
    beta, ll, it, ok = fit_poisson(B, agg.exposure, agg.deaths)
    return PoissonFit(beta=beta, loglik=ll, lo=lo, hi=hi, df=int(df), coef=coef, iterations=it,
                      converged=ok)


def profile_loglik(agg: Aggregate, coefs: np.ndarray, df: int = DEFAULT_DF) -> np.ndarray:
    """``l(theta)`` at every row of ``coefs`` (shape (m, 4)) -> shape (m,)."""
    return np.array([fit_at(agg, c, df).loglik for c in np.atleast_2d(coefs)])


@dataclass(frozen=True)
class ProfileInput:
    """What every worker needs for the profile; sent to the cluster once."""

    agg: Aggregate
    coefs: np.ndarray
    df: int


def profile_tile(chunk, shared: ProfileInput) -> np.ndarray:
    """Engine kernel: ``l(theta)`` at the grid's directions ``[chunk.start, chunk.stop)``."""
    return profile_loglik(shared.agg, shared.coefs[chunk.start:chunk.stop], shared.df)


def predict_probability(fit: PoissonFit, t) -> np.ndarray:
    """Annual closure probability at time-at-risk ``t``: ``min(mu(T), 1)`` (module docstring)."""
    return np.minimum(fit.rate(t), 1.0)


# -- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileReport:
    """The profile likelihood of theta and what it says (:func:`profile_report`)."""

    theta_deg: float
    loglik_max: float
    ci95_deg: tuple
    k2_over_k1: float
    ratio_ci95: tuple
    lr_tests: dict
    grid_theta: np.ndarray
    grid_loglik: np.ndarray
    df: int
    n_person_years: int
    n_closures: int

    def summary(self) -> dict:
        return {"theta_deg": self.theta_deg, "ci95_deg": list(self.ci95_deg),
                "k2_over_k1": self.k2_over_k1, "k2_over_k1_ci95": list(self.ratio_ci95),
                "loglik_max": self.loglik_max, "lr_tests": self.lr_tests, "spline_df": self.df,
                "n_person_years": self.n_person_years, "n_closures": self.n_closures,
                "interval": "95% profile likelihood, 2 (l_max - l(theta)) <= 3.841"}


def _ratio(theta: float) -> float:
    return math.inf if theta >= 90 else math.tan(math.radians(theta))


def refine_maximum(theta_grid, loglik_grid, loglik_fn, xatol: float = 1e-4):
    """``(theta, l(theta))`` at the profile's maximum: the best grid point, refined by a
    bounded search between its neighbours (kept only if it is better)."""
    th = np.asarray(theta_grid, np.float64)
    ll = np.asarray(loglik_grid, np.float64)
    i = int(np.nanargmax(ll))
    best_t, best_ll = float(th[i]), float(ll[i])
    lo, hi = float(th[max(i - 1, 0)]), float(th[min(i + 1, th.size - 1)])
    if hi > lo:
        res = optimize.minimize_scalar(lambda x: -loglik_fn(x), bounds=(lo, hi),
                                       method="bounded", options={"xatol": xatol})
        if -res.fun > best_ll:
            best_t, best_ll = float(res.x), float(-res.fun)
    return best_t, best_ll


def profile_report(theta_grid, loglik_grid, loglik_fn, n_person_years: int = 0,
                   n_closures: int = 0, df: int = DEFAULT_DF) -> ProfileReport:
    """Maximum, 95 % profile-likelihood interval and LR tests from a profile on a grid.

    Parameters
    ----------
    theta_grid, loglik_grid : array_like
        The profile on the cluster's grid (degrees, increasing, in [0, 90]).
    loglik_fn : callable
        ``theta_deg -> l(theta)`` for the refinements (the same fit, on the client).
    """
    th = np.asarray(theta_grid, np.float64)
    ll = np.asarray(loglik_grid, np.float64)
    best_t, best_ll = refine_maximum(th, ll, loglik_fn)

    def excess(x):
        return 2.0 * (best_ll - loglik_fn(x)) - CHI2_95

    inside = np.flatnonzero(2.0 * (best_ll - ll) <= CHI2_95)
    a, b = int(inside.min()), int(inside.max())
    lo = float(th[a]) if a == 0 else float(optimize.brentq(excess, th[a - 1], th[a],
                                                          xtol=1e-6))
    hi = (float(th[b]) if b == th.size - 1
          else float(optimize.brentq(excess, th[b], th[b + 1], xtol=1e-6)))
    lo, hi = min(lo, best_t), max(hi, best_t)
    tests = {}
    for name, t0 in (("theta = 0 (T0 = N0)", 0.0), ("theta = 45 (seed k1 = k2)", 45.0),
                     ("theta = 90 (k1 = 0)", 90.0)):
        stat = max(2.0 * (best_ll - loglik_fn(t0)), 0.0)
        p = float(chi2.sf(stat, 1))
        boundary = t0 in (0.0, 90.0)
        tests[name] = {"theta0_deg": t0, "lr_statistic": stat,
                       "p_value": p / 2 if boundary else p,
                       "reference": "0.5 chi2_0 + 0.5 chi2_1 (boundary)" if boundary
                       else "chi2_1", "rejected_at_5pct": bool((p / 2 if boundary else p) < 0.05)}
    return ProfileReport(theta_deg=best_t, loglik_max=best_ll, ci95_deg=(lo, hi),
                         k2_over_k1=_ratio(best_t), ratio_ci95=(_ratio(lo), _ratio(hi)),
                         lr_tests=tests, grid_theta=th, grid_loglik=ll, df=int(df),
                         n_person_years=int(n_person_years), n_closures=int(n_closures))
