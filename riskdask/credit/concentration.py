"""Concentration beside the Monte Carlo: name and sector HHI, the asymptotic (ASRF) loss
quantile and its granularity adjustment.

* **HHI** (Herfindahl-Hirschman index) of the exposure shares ``s_i = e_i / sum e`` with the
  exposure ``e_i = FV_i - CFV_i^D`` (the loss if the obligor defaults):
  ``HHI = sum s_i^2`` by name and by sector; ``1 / HHI`` is the effective number of names.
* **Asymptotic single risk factor (ASRF) quantile** (Vasicek 2002; Gordy 2003): in the
  one-factor Gaussian default-mode model with ``p_i(x) = Phi((Phi^-1(PD_i) + sqrt(rho_i) x) /
  sqrt(1 - rho_i))`` (the systematic factor ``x`` standard normal, losses rising with it), the
  loss of an infinitely granular portfolio at confidence ``alpha`` is
  ``mu(x_alpha) = sum_i e_i p_i(x_alpha)``, ``x_alpha = Phi^-1(alpha)``.
* **Granularity adjustment** (Gordy 2003, eq. 7; Martin & Wilde 2002; the name-concentration
  add-on of Gordy & Lütkebohmert 2013, "Granularity adjustment for regulatory capital
  assessment", IJCB 9(3), in its one-factor Gaussian form, Emmer & Tasche 2005): the first
  correction of the finite portfolio's quantile,

      GA = -1 / (2 h(x)) d/dx [ h(x) sigma^2(x) / mu'(x) ]   at x = x_alpha,

  ``h = phi`` the factor density and ``sigma^2(x) = sum_i e_i^2 p_i(x) (1 - p_i(x))`` the
  conditional variance of the loss.  With ``g = h sigma^2 / mu'``,
  ``g' / g = -x + (sigma^2)' / sigma^2 - mu'' / mu'``, so
  ``GA = -(1/2) sigma^2 / mu' (-x + (sigma^2)' / sigma^2 - mu'' / mu')`` -- the derivatives of
  ``p_i`` are closed-form (:func:`_pd_derivatives`).

The job's factor model has several factors; here each obligor's systematic R^2
(``sum_k b_ik^2``) is its one-factor ``rho_i`` (the ASRF approximation), and migration losses
are ignored: the asymptotic figures are a benchmark for the simulated ones, not a
replacement (the report explains the difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .summary import exact_sum

__all__ = ["hhi", "Concentration", "asrf_quantile", "granularity_adjustment",
           "concentration"]

_SQRT_2PI = float(np.sqrt(2.0 * np.pi))


def hhi(exposure, groups=None) -> float:
    """``sum s^2`` of the exposure shares, by name (``groups`` None) or summed per group."""
    e = np.abs(np.asarray(exposure, dtype=float))
    total = exact_sum(e)
    if not total > 0:
        return float("nan")
    if groups is not None:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        e = np.bincount(inv.ravel(), weights=e)
    s = e / total
    return float(exact_sum(s * s))


def _pd_derivatives(pd_, rho, x):
    """``p(x)``, ``p'(x)``, ``p''(x)`` of ``p(x) = Phi((Phi^-1(pd) + sqrt(rho) x) /
    sqrt(1 - rho))``."""
    k = np.sqrt(rho / (1.0 - rho))
    a = (ndtri(pd_) + np.sqrt(rho) * x) / np.sqrt(1.0 - rho)
    dens = np.exp(-0.5 * a * a) / _SQRT_2PI
    return ndtr(a), k * dens, -a * k * k * dens


def asrf_quantile(exposure, pd_, rho, alpha: float) -> float:
    """``mu(x_alpha) = sum_i e_i p_i(Phi^-1(alpha))``: the loss quantile of an infinitely
    granular portfolio (Vasicek 2002)."""
    p, _, _ = _pd_derivatives(np.asarray(pd_, float), np.asarray(rho, float), ndtri(alpha))
    return exact_sum(np.asarray(exposure, float) * p)


def granularity_adjustment(exposure, pd_, rho, alpha: float) -> float:
    """The granularity adjustment of the loss quantile at ``alpha`` (module docstring):
    finite portfolio quantile ``~ asrf_quantile + GA``."""
    e = np.asarray(exposure, dtype=float)
    x = float(ndtri(alpha))
    p, p1, p2 = _pd_derivatives(np.asarray(pd_, float), np.asarray(rho, float), x)
    mu1, mu2 = exact_sum(e * p1), exact_sum(e * p2)
    var = exact_sum(e * e * p * (1.0 - p))
    var1 = exact_sum(e * e * p1 * (1.0 - 2.0 * p))
    if not (mu1 > 0 and var > 0):
        return 0.0
    return float(-0.5 * var / mu1 * (-x + var1 / var - mu2 / mu1))


@dataclass(frozen=True)
class Concentration:
    """Name / sector concentration and the asymptotic figures per confidence level."""

    name_hhi: float
    effective_names: float
    sector_hhi: float | None
    largest_share: float
    levels: tuple          # dicts: confidence, asrf_loss, granularity_adjustment, ...


def concentration(exposure, pd_, rho, confidence, *, sectors=None) -> Concentration:
    """HHI by name and sector (every obligor) and, per level, the ASRF quantile, its
    granularity adjustment (the obligors with ``0 < PD < 1``) and both in the seed's VaR
    convention (minus the expected default loss ``sum e_i PD_i``)."""
    e_all = np.asarray(exposure, dtype=float)
    pd_all = np.asarray(pd_, dtype=float)
    h = hhi(e_all)
    ok = (pd_all > 0) & (pd_all < 1)
    e, pd_, rho = e_all[ok], pd_all[ok], np.asarray(rho, dtype=float)[ok]
    expected_default_loss = exact_sum(e * pd_)
    levels = []
    for c in confidence:
        q = asrf_quantile(e, pd_, rho, c) if e.size else 0.0
        ga = granularity_adjustment(e, pd_, rho, c) if e.size else 0.0
        levels.append({"confidence": float(c), "asrf_loss": q, "granularity_adjustment": ga,
                       "asrf_var": q - expected_default_loss,
                       "adjusted_var": q + ga - expected_default_loss})
    total = exact_sum(np.abs(e_all))
    return Concentration(name_hhi=h, effective_names=1.0 / h if h > 0 else float("nan"),
                         sector_hhi=None if sectors is None else hhi(e_all, sectors),
                         largest_share=float(np.abs(e_all).max() / total) if total > 0 else
                         float("nan"), levels=tuple(levels))
