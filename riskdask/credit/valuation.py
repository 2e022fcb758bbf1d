"""Cash flows, forward discount factors and the conditional-forward-value matrix.

Seed eqs. 3.1-3.8: forward value FV, conditional forward value CFV (Step 0 of
the simulation), expected forward value EFV, expected loss EL with its split
into migration and default, and the stand-alone unexpected loss UL_i.
All functions are pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RatingCurves",
    "bond_cash_flows",
    "conditional_forward_values",
    "obligor_analytics",
    "ObligorAnalytics",
    "beta_parameters",
]


@dataclass(frozen=True)
class RatingCurves:
    """Spot zero curves per non-default rating (continuous compounding).

    Parameters
    ----------
    ratings : tuple of str
        Non-default ratings, in the order of ``rates`` rows.
    tenors : ndarray, shape (m,)
        Strictly increasing maturities in years (> 0).
    rates : ndarray, shape (len(ratings), m)
        Zero rates y_cr(t) as decimals (0.03 = 3%).
    """

    ratings: tuple[str, ...]
    tenors: np.ndarray
    rates: np.ndarray

    def zero_rates(self, t) -> np.ndarray:
        """y_cr(t) for every rating: linear in t between tenors, flat outside.

        Returns shape (len(ratings),) + shape(t).
        """
        t = np.asarray(t, dtype=float)
        flat = t.ravel()
        out = np.vstack([np.interp(flat, self.tenors, row) for row in self.rates])
        return out.reshape((len(self.ratings),) + t.shape)

    def forward_discount_factors(self, t) -> np.ndarray:
        """One-year forward discount factors df_cr(t) (seed eq. 3.3).

        ``df_cr(t) = exp(y_cr(1) - t * y_cr(t))`` for ``t > 1`` and 1 for
        ``t <= 1``: cash flows received within the one-year horizon are valued at
        their face amount (not reinvested).

        Returns
        -------
        ndarray, shape (len(ratings),) + shape(t)
        """
        t = np.asarray(t, dtype=float)
        y1 = self.zero_rates(1.0)
        yt = self.zero_rates(t)
        expand = (slice(None),) + (None,) * t.ndim
        df = np.exp(y1[expand] - t * yt)
        return np.where(t > 1.0, df, 1.0)


def bond_cash_flows(nominal, coupon, frequency, maturity):
    """Cash flows of fixed-coupon bullet bonds generated from their terms.

    Coupons ``nominal * coupon / frequency`` are paid at ``maturity - k /
    frequency`` for every ``k >= 0`` with a positive time; the nominal is repaid
    at maturity.  (The first, possibly short, period pays a full coupon: the
    bonds are valued on a coupon date grid.)

    Parameters
    ----------
    nominal, coupon, maturity : array_like, shape (p,)
        Face amount (EUR), annual coupon rate (decimal), years to maturity (> 0).
    frequency : array_like of int, shape (p,)
        Coupons per year (>= 1).

    Returns
    -------
    position, time, amount : ndarray
        One entry per cash flow: the row index of the bond, the time in years
        and the amount in EUR, ordered by bond then time.
    """
    nominal = np.asarray(nominal, dtype=float)
    coupon = np.asarray(coupon, dtype=float)
    frequency = np.asarray(frequency, dtype=np.int64)
    maturity = np.asarray(maturity, dtype=float)
    # Number of coupon dates in (0, maturity]: ceil(maturity * frequency) with a
    # tolerance so that 5.0 years * 2 gives exactly 10 dates.
    n_flows = np.maximum(np.ceil(maturity * frequency - 1e-9).astype(np.int64), 1)
    position = np.repeat(np.arange(nominal.size), n_flows)
    offsets = np.arange(n_flows.sum()) - np.repeat(np.cumsum(n_flows) - n_flows, n_flows)
    # offsets count back from maturity; reverse so that times increase per bond.
    k = np.repeat(n_flows, n_flows) - 1 - offsets
    time = maturity[position] - k / frequency[position]
    amount = nominal[position] * coupon[position] / frequency[position]
    amount = amount + np.where(k == 0, nominal[position], 0.0)
    return position, time, amount


def conditional_forward_values(cf_obligor, cf_time, cf_amount, curves: RatingCurves,
                               recovery_value, n_obligors: int) -> np.ndarray:
    """Conditional forward values CFV_i^fcr: the Step 0 matrix (seed eq. 3.4).

    Parameters
    ----------
    cf_obligor : ndarray of int, shape (c,)
        Obligor index of every cash flow.
    cf_time, cf_amount : ndarray, shape (c,)
        Cash-flow times (years, > 0) and amounts (EUR).
    curves : RatingCurves
        Zero curves of the non-default ratings, in scale order.
    recovery_value : ndarray, shape (n,)
        ``sum over the obligor's positions of Nom * rr``: the value in default.
    n_obligors : int

    Returns
    -------
    ndarray, shape (n, R)
        Columns in scale order (best first); the last column is the default
        state ``Nom_i * rr_i``; column ``fcr`` otherwise is
        ``sum_j CF_ij * df_fcr(t_ij)``.
    """
    df = curves.forward_discount_factors(np.asarray(cf_time, dtype=float))
    n_ratings = len(curves.ratings)
    cfv = np.empty((n_obligors, n_ratings + 1))
    for r in range(n_ratings):
        cfv[:, r] = np.bincount(cf_obligor, weights=cf_amount * df[r], minlength=n_obligors)
    cfv[:, n_ratings] = recovery_value
    return cfv


@dataclass(frozen=True)
class ObligorAnalytics:
    """Per-obligor analytic results (seed eqs. 3.1, 3.5, 3.7, 3.8).

    Attributes
    ----------
    fv : ndarray (n,)            forward value at the unchanged rating (eq. 3.1)
    efv : ndarray (n,)           expected forward value (eq. 3.5)
    el_migration : ndarray (n,)  migration part of expected loss (eq. 3.7)
    el_default : ndarray (n,)    default part of expected loss (eq. 3.7)
    ul : ndarray (n,)            stand-alone unexpected loss (eq. 3.8)
    """

    fv: np.ndarray
    efv: np.ndarray
    el_migration: np.ndarray
    el_default: np.ndarray
    ul: np.ndarray

    @property
    def el(self) -> np.ndarray:
        return self.el_migration + self.el_default


def beta_parameters(mean, sd):
    """Beta ``(alpha, beta)`` with the given mean and standard deviation (CreditMetrics'
    recovery convention, Technical Document 7.2.1): ``nu = mean (1 - mean) / sd^2 - 1``,
    ``alpha = mean nu``, ``beta = (1 - mean) nu``.  Needs ``0 < sd^2 < mean (1 - mean)``."""
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    nu = mean * (1.0 - mean) / (sd * sd) - 1.0
    return mean * nu, (1.0 - mean) * nu


def obligor_analytics(cfv, initial_index, probabilities,
                      default_value_var=None) -> ObligorAnalytics:
    """FV, EFV, EL (migration / default) and UL per obligor.

    Parameters
    ----------
    cfv : ndarray, shape (n, R)
        Conditional forward values, scale order (last column = default).
    initial_index : ndarray of int, shape (n,)
        Best-first scale index of each obligor's initial rating.
    probabilities : ndarray, shape (R - 1, R)
        Migration matrix rows (initial) by columns (forward), scale order.
    default_value_var : ndarray, shape (n,), optional
        Variance of the value in default, ``Nom_i^2 sd_i^2`` for a beta-distributed
        recovery.  The seed (after eq. 3.8): with uncertain recovery "the standard deviation
        needs to be added to the conditional forward values" -- ``E[V^2 | D] = CFV_D^2 +
        Var``, so ``UL_i^2`` gains ``p(D | icr_i) Var`` (EL is unchanged).  Omitted or
        zero: eq. 3.8 bit for bit.

    Returns
    -------
    ObligorAnalytics

    Notes
    -----
    FV_i = CFV_i at the initial rating (eq. 3.1, since the CFV at the unchanged
    rating discounts with df_icr); EFV_i = sum_fcr p(fcr|icr_i) CFV_i^fcr
    (eq. 3.5); the EL split follows eq. 3.7 term by term; UL_i^2 is eq. 3.8
    written around the mean, sum_fcr p (CFV - EFV)^2, which is algebraically
    identical and avoids cancelling two large numbers.
    """
    cfv = np.asarray(cfv, dtype=float)
    n = cfv.shape[0]
    p = np.asarray(probabilities, dtype=float)[initial_index]
    fv = cfv[np.arange(n), initial_index]
    efv = np.einsum("ij,ij->i", p, cfv)
    drop = fv[:, None] - cfv
    el_migration = np.einsum("ij,ij->i", p[:, :-1], drop[:, :-1])
    el_default = p[:, -1] * drop[:, -1]
    ul2 = np.einsum("ij,ij->i", p, (cfv - efv[:, None]) ** 2)
    if default_value_var is not None and np.any(np.asarray(default_value_var) != 0):
        ul2 = ul2 + p[:, -1] * np.asarray(default_value_var, dtype=float)
    ul = np.sqrt(ul2)
    return ObligorAnalytics(fv=fv, efv=efv, el_migration=el_migration,
                            el_default=el_default, ul=ul)
