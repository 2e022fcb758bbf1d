"""Smooth tail fits through the simulated loss distribution (seed Step 7).

The seed (Step 7 and its footnote 6) suggests fitting a curve through the tail "to avoid
extreme jumps" of VaR / ES, e.g. Vasicek's (1991) limiting law of an infinitely granular
default-mode portfolio,

    F(x) = Phi( (sqrt(1 - rho) Phi^-1(x) - Phi^-1(pd)) / sqrt(rho) ),

with ``x`` the loss as a fraction of the exposure.  Two fits are offered, both pure
functions of the merged simulation summary:

* :func:`vasicek_fit` -- the seed's suggestion, with ``pd`` and ``rho`` matched to the
  simulated mean and standard deviation of the loss fraction (moment matching: ``E X = pd``,
  ``Var X = Phi_2(Phi^-1 pd, Phi^-1 pd; rho) - pd^2``, Vasicek 2002).  The exposure is the
  portfolio's loss if every obligor defaulted (``sum_i FV_i - Nom_i rr_i``).  Errors by the
  delta method from the errors of the simulated EL and UL.
* :func:`gpd_fit` -- peaks over threshold: a generalized Pareto law (:func:`gpd_logpdf`,
  ``scipy.stats.genpareto``'s density) fitted by weighted maximum likelihood to the excesses
  over a high threshold of the tail buffer (Pickands 1975; McNeil, Frey & Embrechts 2015, 5.2),
  ``VaR_c = u + sigma / xi ((zeta_u / (1 - c))^xi - 1)``,
  ``ES_c = (VaR_c + sigma - xi u) / (1 - xi)``.  Errors by the delta method from the
  asymptotic covariance of the estimates (Smith 1987) at the effective sample size of the
  likelihood-ratio weights, and the binomial error of ``zeta_u``.

Both return VaR / ES in the seed's convention (measured from the mean loss) for every
confidence level they cover, with standard errors, and a QQ diagnostic
(:func:`qq_points`): the fitted against the empirical tail quantiles, and the largest
relative deviation between them over the well-determined part of the tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import integrate, optimize
from scipy.special import ndtr, ndtri, xlog1py

from .bvn import bvn_cdf

__all__ = ["TailFit", "vasicek_fit", "gpd_fit", "gpd_logpdf", "qq_points",
           "vasicek_rho_from_moments", "vasicek_quantile"]


@dataclass
class TailFit:
    """A fitted tail law.

    Attributes
    ----------
    name : str
    params : dict
        Fitted parameters (and their standard errors where known).
    levels : list of dict
        Per confidence level: ``confidence``, ``var``, ``var_se``, ``es``, ``es_se``
        (seed convention: loss quantile / tail mean minus the reference mean loss).
    quantile : callable
        ``quantile(tail_probability) -> loss`` of the fitted law (vectorised).
    ok : bool
        The fit converged and is usable.
    note : str
        Why not, or what the fit assumes.
    """

    name: str
    params: dict
    levels: list = field(default_factory=list)
    quantile: object = None
    ok: bool = True
    note: str = ""


# ------------------------------------------------------------------------------ Vasicek
def vasicek_quantile(pd_: float, rho: float, confidence):
    """Loss fraction at ``confidence`` of Vasicek's law (the inverse of the seed's F)."""
    c = np.asarray(confidence, dtype=float)
    return ndtr((ndtri(pd_) + math.sqrt(rho) * ndtri(c)) / math.sqrt(1.0 - rho))


def _vasicek_second_moment(pd_: float, rho: float) -> float:
    """``E X^2 = Phi_2(Phi^-1 pd, Phi^-1 pd; rho)`` (Vasicek 2002)."""
    b = ndtri(pd_)
    return float(bvn_cdf(b, b, rho))


def vasicek_rho_from_moments(pd_: float, sd: float) -> float:
    """Asset correlation whose Vasicek law has mean ``pd_`` and standard deviation ``sd``.

    ``Var X`` grows from 0 (rho = 0) to ``pd (1 - pd)`` (rho = 1); solved by Brent's method.
    """
    target = sd * sd + pd_ * pd_
    lo, hi = 1e-9, 1 - 1e-9

    def f(r):
        return _vasicek_second_moment(pd_, r) - target

    if f(lo) >= 0:
        return lo
    if f(hi) <= 0:
        return hi
    return float(optimize.brentq(f, lo, hi, xtol=1e-10))


def _vasicek_var_es(pd_, rho, exposure, reference, c):
    x = float(vasicek_quantile(pd_, rho, c))
    # ES: the mean loss fraction beyond the c-quantile, (1/(1-c)) int_c^1 q(u) du.
    tail, _ = integrate.quad(lambda u: float(vasicek_quantile(pd_, rho, u)), c, 1.0,
                             limit=200, epsabs=1e-13, epsrel=1e-10)
    return exposure * x - reference, exposure * tail / (1.0 - c) - reference


def vasicek_fit(el: float, ul: float, el_se: float, ul_se: float, exposure: float,
                reference: float, confidence) -> TailFit:
    """Vasicek's large-portfolio law matched to the simulated loss moments.

    Parameters
    ----------
    el, ul : float
        Simulated mean and standard deviation of the loss (EUR).
    el_se, ul_se : float
        Their Monte Carlo errors (for the delta-method errors of the fit).
    exposure : float
        Loss if every obligor defaulted (EUR): the unit of the loss fraction.
    reference : float
        Mean loss the VaR / ES are measured from.
    confidence : sequence of float

    Returns
    -------
    TailFit
    """
    if not (exposure > 0 and 0 < el < exposure and ul > 0):
        return TailFit("vasicek", {}, ok=False,
                       note="needs a positive mean loss below the exposure and a positive UL")
    pd_, sd = el / exposure, ul / exposure
    rho = vasicek_rho_from_moments(pd_, sd)
    fit = TailFit("vasicek", {"pd": pd_, "rho": rho, "exposure": exposure},
                  note="moment-matched to the simulated EL and UL (default-mode law)")
    fit.quantile = lambda tail_p: exposure * vasicek_quantile(pd_, rho, 1.0 - np.asarray(tail_p))

    def params(e, u):
        p, s = e / exposure, u / exposure
        if not (0 < p < 1 and s > 0):
            return None
        return p, vasicek_rho_from_moments(p, s)

    # Central differences over +- half an error of EL and of UL (refits, level-independent).
    h = 0.5
    steps = []
    for de, du in ((el_se, 0.0), (0.0, ul_se)):
        if not (np.isfinite(de) and np.isfinite(du)) or (de == 0 and du == 0):
            steps.append(None)
        else:
            steps.append((params(el + h * de, ul + h * du), params(el - h * de, ul - h * du)))

    def measures(pr, c):
        if pr is None:
            return float("nan"), float("nan")
        return _vasicek_var_es(pr[0], pr[1], exposure, reference, c)

    for c in confidence:
        var, es = _vasicek_var_es(pd_, rho, exposure, reference, c)
        grads = []
        for step in steps:
            if step is None:
                grads.append((0.0, 0.0))
                continue
            up, down = measures(step[0], c), measures(step[1], c)
            grads.append(((up[0] - down[0]) / (2 * h), (up[1] - down[1]) / (2 * h)))
        fit.levels.append({"confidence": float(c), "var": var, "es": es,
                           "var_se": float(math.hypot(grads[0][0], grads[1][0])),
                           "es_se": float(math.hypot(grads[0][1], grads[1][1]))})
    return fit


# ------------------------------------------------------------------------------ GPD
def _gpd_measures(xi, sigma, u, zeta, reference, c):
    p = 1.0 - c
    if abs(xi) < 1e-9:
        x = u + sigma * math.log(zeta / p)
    else:
        x = u + sigma / xi * ((zeta / p) ** xi - 1.0)
    es = (x + sigma - xi * u) / (1.0 - xi) if xi < 1 else float("inf")
    return x - reference, es - reference


def gpd_logpdf(y, xi: float, sigma: float):
    """Log density of the generalized Pareto law with location 0 (Pickands 1975),

        log g(y) = -log sigma - (1 + 1/xi) log(1 + xi y / sigma)

    (``-log sigma - y / sigma`` at ``xi = 0``)
    on its support ``0 <= y`` (and ``y <= -sigma/xi`` for ``xi < 0``), ``-inf`` off it.

    The arithmetic is ``scipy.stats.genpareto.logpdf(y, xi, scale=sigma)``'s own, step for
    step, so the values are bit-identical to it (``tests/test_credit_tail.py`` checks) --
    without its argument checking and broadcasting, which cost ~0.8 ms a call and made the
    ~450 likelihood evaluations of one fit a third of a second.
    """
    c, scale = float(xi), float(sigma)
    x = np.asarray(y, dtype=float) / scale
    ll = -xlog1py(c + 1.0, c * x) / c if c != 0 else -x
    ll -= np.log(np.array([scale]))   # numpy's vector log, as scipy's of the broadcast scale
    inside = x >= 0
    if c < 0:
        inside &= x <= -1.0 / c
    if not scale > 0:
        inside[:] = False
    ll[~inside] = -np.inf
    return ll


def _weighted_gpd_mle(y, w):
    """Weighted maximum likelihood of a GPD with location 0: ``(xi, sigma)``."""
    wn = w / w.sum()
    m = float(np.dot(wn, y))
    v = float(np.dot(wn, (y - m) ** 2))
    xi0 = 0.5 * (1.0 - m * m / v) if v > 0 else 0.1
    s0 = max(0.5 * m * (m * m / v + 1.0), 1e-12 * max(m, 1e-300)) if v > 0 else max(m, 1e-12)

    def nll(theta):
        xi, log_s = theta
        ll = gpd_logpdf(y, xi, math.exp(log_s))
        if not np.all(np.isfinite(ll)):
            return 1e300
        return -float(np.dot(wn, ll))

    best = None
    log_m = math.log(max(m, 1e-300))
    for start in ((xi0, math.log(s0)), (0.1, log_m), (-0.1, log_m)):
        res = optimize.minimize(nll, np.array(start), method="Nelder-Mead",
                                options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    return float(best.x[0]), float(math.exp(best.x[1])), bool(best.fun < 1e299)


def gpd_fit(loss_sorted, weight_sorted, n: int, reference: float, confidence, *,
            threshold_weight: float, min_excesses: int = 30) -> TailFit:
    """Peaks-over-threshold generalized-Pareto fit of the simulated tail.

    Parameters
    ----------
    loss_sorted, weight_sorted : ndarray
        The merged tail buffer, worst first (losses and weights).
    n : int
        Scenarios in all.
    reference : float
        Mean loss the VaR / ES are measured from.
    confidence : sequence of float
        Levels to report; only those beyond the threshold (``1 - c < zeta_u``).
    threshold_weight : float
        The threshold ``u`` is the loss where the cumulative weight first reaches this
        (the excesses are the rows strictly above it).
    min_excesses : int
        Fewer distinct excess values than this: no fit (a lattice or degenerate tail).

    Returns
    -------
    TailFit
    """
    loss = np.asarray(loss_sorted, dtype=float)
    w = np.asarray(weight_sorted, dtype=float)
    cw = np.cumsum(w)
    k = int(np.searchsorted(cw, threshold_weight, side="left"))
    if k >= loss.size:
        k = loss.size - 1
    u = float(loss[k])
    above = loss > u
    y, wy = loss[above] - u, w[above]
    if np.unique(y).size < min_excesses:
        return TailFit("gpd", {"threshold": u}, ok=False,
                       note=f"only {np.unique(y).size} distinct losses above the threshold "
                            f"(need {min_excesses}): the tail is a lattice, no smooth fit")
    xi, sigma, ok = _weighted_gpd_mle(y, wy)
    W = float(wy.sum())
    zeta = W / n
    n_eff = W * W / float(np.dot(wy, wy))
    fit = TailFit("gpd", {"threshold": u, "xi": xi, "sigma": sigma, "zeta": zeta,
                          "excesses": int(y.size), "effective_excesses": n_eff},
                  ok=ok and xi > -0.5,
                  note="weighted maximum likelihood above the threshold "
                       f"(tail probability {zeta:.3g})")
    if not fit.ok:
        fit.note = f"no usable maximum-likelihood fit (xi = {xi:.3g})"
        return fit
    # Smith (1987): Var(xi, sigma) = (1 + xi) / n [[1 + xi, -sigma], [-sigma, 2 sigma^2]].
    cov = (1.0 + xi) / n_eff * np.array([[1.0 + xi, -sigma], [-sigma, 2.0 * sigma * sigma]])
    var_zeta = max(float(np.dot(wy, wy)) - W * W / n, 0.0) / (n * n)
    cov3 = np.zeros((3, 3))
    cov3[:2, :2] = cov
    cov3[2, 2] = var_zeta
    fit.params.update(xi_se=float(math.sqrt(cov[0, 0])), sigma_se=float(math.sqrt(cov[1, 1])))

    def q(tail_p):
        tail_p = np.asarray(tail_p, dtype=float)
        if abs(xi) < 1e-9:
            return u + sigma * np.log(zeta / tail_p)
        return u + sigma / xi * ((zeta / tail_p) ** xi - 1.0)

    fit.quantile = q
    for c in confidence:
        if not 1.0 - c < zeta:
            continue
        theta = np.array([xi, sigma, zeta])
        base = _gpd_measures(xi, sigma, u, zeta, reference, c)
        grad = np.zeros((2, 3))
        for i in range(3):
            h = 1e-6 * max(abs(theta[i]), 1e-3)
            tp, tm = theta.copy(), theta.copy()
            tp[i] += h
            tm[i] -= h
            up = _gpd_measures(tp[0], tp[1], u, tp[2], reference, c)
            dn = _gpd_measures(tm[0], tm[1], u, tm[2], reference, c)
            grad[:, i] = (np.array(up) - np.array(dn)) / (2 * h)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", grad, cov3, grad), 0.0))
        fit.levels.append({"confidence": float(c), "var": base[0], "es": base[1],
                           "var_se": float(se[0]), "es_se": float(se[1])})
    return fit


# ------------------------------------------------------------------------------ QQ
def qq_points(loss_sorted, weight_sorted, n: int, fit: TailFit, *, min_weight: float = 10.0,
              max_points: int = 400):
    """Empirical against fitted tail quantiles, and the largest relative deviation.

    Plotting position of buffer row ``i``: tail probability ``(C_i - w_i / 2) / n`` with
    ``C_i`` the cumulative weight.  The deviation is taken over the rows with at least
    ``min_weight`` of tail weight before them (the well-determined part) and above the
    threshold of a GPD fit.

    Returns
    -------
    dict
        ``tail_probability``, ``empirical``, ``fitted`` (arrays, thinned to ``max_points``)
        and ``max_rel_deviation`` (NaN if no fit).
    """
    loss = np.asarray(loss_sorted, dtype=float)
    w = np.asarray(weight_sorted, dtype=float)
    cw = np.cumsum(w)
    p = (cw - 0.5 * w) / n
    keep = cw >= min_weight
    if fit.name == "gpd" and "threshold" in fit.params:
        keep &= loss > fit.params["threshold"]
    out = {"tail_probability": p, "empirical": loss, "fitted": np.full(loss.size, np.nan),
           "max_rel_deviation": float("nan")}
    if fit.ok and fit.quantile is not None and keep.any():
        fitted = np.asarray(fit.quantile(p), dtype=float)
        out["fitted"] = fitted
        scale = np.maximum(np.abs(loss[keep]), 1e-300)
        out["max_rel_deviation"] = float(np.max(np.abs(fitted[keep] - loss[keep]) / scale))
    if loss.size > max_points:
        idx = np.unique(np.geomspace(1, loss.size, max_points).astype(int) - 1)
        for key in ("tail_probability", "empirical", "fitted"):
            out[key] = out[key][idx]
    return out
