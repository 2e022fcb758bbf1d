"""Monte Carlo errors of the seed's Step 6 statistics, valid for discrete loss laws and
for likelihood-ratio-weighted (importance-sampling) scenarios.

Two ingredients, both computed from the exact merged summary (so the same bits on 1 or N
workers):

**Linearised batch means.**  Scenarios are independent, so the error of any statistic that
is (to first order) a mean over scenarios is the batch-means error of that mean over *any*
fixed grouping of the scenarios.  Each chunk is cut into ``m`` fixed sub-ranges
(:func:`batches_per_chunk`: a function of the configuration only, at least 32 batches in
all), and the kernel records per batch ``n_b``, ``sum w``, ``sum w (L - c)`` and
``sum w (L - c)^2``.  The statistics are linearised (their influence functions):

* EL: ``Y = w L``; UL: ``Y = (w (L - EL)^2 - UL^2) / (2 UL)``;
* ES (seed: ``mean - average of the a - 1 worst SFV``): the tail average equals exactly
  ``q + sum_s w_s (L_s - q)^+ / W`` with ``q = L_(a)`` and ``W`` the weight of the rows
  before it (Acerbi & Tasche 2002), so ``Y = n w (L - q)^+ / W`` minus ``w L`` when the mean
  is simulated.  The per-batch tail sums come from the tail buffer, whose rows carry their
  batch.  Unlike per-chunk VaR/ES ("batch quantiles"), this is unbiased for small batches
  and for any number of tail scenarios per batch.

**The sampling law of the order statistic.**  ``q = L_(a)`` is the loss of the first row
whose cumulative weight reaches ``a``.  For every distinct loss ``x`` in the tail buffer,
``P(q* >= x) = P(T*(x) >= a)`` where ``T(x)`` is the (weighted) number of scenarios with loss
``>= x``: binomial for plain sampling (``scipy.stats.binom``), normal with the
likelihood-ratio variance ``sum w^2 - T^2 / n`` under importance sampling.  This gives the
distribution of the VaR estimate over the discrete set of candidate losses -- its mean
squared deviation is the VaR error and its 2.5 / 97.5 % points an order-statistic
confidence interval (Woodruff 1952; Serfling 1980, 2.6) -- and, for a loss law with atoms,
the chance that the estimate jumps to a neighbouring atom, which the ES error adds.  Work is
done in log probabilities, so a quantile that sits on an atom gets a tiny but non-zero
error; an error of exactly 0 is returned only for a degenerate loss law, and flagged.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

try:    # the ufuncs scipy.stats.binom's sf / cdf evaluate (boost), without importing
    # scipy.stats (0.4 s of a `riskdask whatif`'s start-up)
    from scipy.special._ufuncs import _binom_cdf, _binom_sf
except ImportError:                                   # pragma: no cover - other scipy
    _binom_cdf = _binom_sf = None

from riskdask.formatting import sig

from .summary import batch_deviations, batch_means_se, exact_sum

__all__ = [
    "MIN_BATCHES",
    "batches_per_chunk",
    "local_batch",
    "moment_errors",
    "quantile_law",
    "tail_errors",
    "variance_reduction",
    "rel_se_of_variance",
    "LATTICE",
    "lattice_reason",
]

#: The prefix of every figure withheld because the loss law is discrete.
LATTICE = "not meaningful: discrete loss law"

MIN_BATCHES = 32


def batches_per_chunk(n_scenarios: int, chunk_size: int, min_batches: int = MIN_BATCHES) -> int:
    """Fixed sub-ranges per chunk so that the plan has at least ``min_batches`` batches.

    A function of the configuration only (``n_scenarios``, ``chunk_size``), hence the same
    batches on any number of workers.
    """
    n_chunks = max(1, math.ceil(int(n_scenarios) / int(chunk_size)))
    return int(max(1, min(math.ceil(min_batches / n_chunks), int(chunk_size))))


def local_batch(size: int, m: int) -> np.ndarray:
    """Sub-range (0 .. m-1) of every row of a chunk of ``size`` scenarios."""
    return (np.arange(size, dtype=np.int64) * int(m)) // int(size)


def rel_se_of_variance(values, sizes) -> float:
    """Relative standard error of the batch-means variance estimate itself.

    With ``u_b = B (n_b / N)^2 (x_b - xbar)^2`` the batch-means variance is
    ``sum u_b / (B - 1)``; its relative error is ``sd(u) / (sqrt(B) mean(u))`` -- no
    normality assumed (tail statistics have very skewed batch values).
    """
    b, share, dev = batch_deviations(values, sizes)
    if b < 3:
        return float("nan")
    u = b * share ** 2 * dev ** 2
    mu = exact_sum(u) / b
    if mu <= 0:
        return float("nan")
    return float(np.sqrt(exact_sum((u - mu) ** 2) / (b - 1)) / (np.sqrt(b) * mu))


def _batch_columns(batches):
    b = np.asarray(batches, dtype=float)
    b = b[b[:, 1] > 0]                     # a last chunk shorter than m has empty batches
    return b[:, 0].astype(np.int64), b[:, 1], b[:, 2], b[:, 3], b[:, 4]


def moment_errors(batches, n: int, el: float, ul: float, center: float):
    """Batch-means standard errors of the simulated EL and UL (seed Step 6).

    Parameters
    ----------
    batches : ndarray (B, 5)
        Per batch: id, ``n_b``, ``sum w``, ``sum w (L - c)``, ``sum w (L - c)^2``.
    n : int
        Scenarios in all.
    el, ul : float
        The estimates, ``sum w L / n`` and ``sqrt(sum w (L - EL)^2 / n)``.
    center : float
        The centre ``c`` the kernel used.

    Returns
    -------
    el_se, ul_se : float
        NaN with fewer than two batches; exactly 0 only if every scenario had the same loss.
    """
    _, nb, sw, s1, s2 = _batch_columns(batches)
    el_se = batch_means_se(s1 / nb + center * sw / nb, nb)
    d = el - center
    dev2 = (s2 - 2.0 * d * s1 + d * d * sw) / nb          # per-batch mean of w (L - EL)^2
    if ul > 0:
        ul_se = batch_means_se(dev2, nb) / (2.0 * ul)
    else:
        ul_se = 0.0 if nb.size >= 2 else float("nan")
    return el_se, ul_se


def _log1mexp(d):
    """``log(1 - exp(d))`` for ``d <= 0`` (Maechler 2012), ``-inf`` at 0."""
    d = np.minimum(np.asarray(d, dtype=float), 0.0)
    with np.errstate(divide="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def quantile_law(loss_sorted, weight_sorted, a: int, n: int, *, weighted: bool):
    """Sampling law of ``q = L_(a)`` over the distinct losses of a sorted tail buffer.

    Parameters
    ----------
    loss_sorted, weight_sorted : ndarray
        Tail buffer, worst first.
    a : int
        ``round(sim (1 - confidence))``.
    n : int
        Scenarios in all.
    weighted : bool
        Likelihood-ratio weights (normal law of ``T``) or unit weights (binomial).

    Returns
    -------
    dict
        ``values`` (distinct losses, descending), ``ends`` (last buffer row of each),
        ``log_p`` (log probability that the estimate is that value; the probability of a
        value below the buffer is folded into the last one), ``survival``
        (``P(q* >= value)``) and ``beyond`` (probability of a value below the buffer).
    """
    loss = np.asarray(loss_sorted, dtype=float)
    w = np.asarray(weight_sorted, dtype=float)
    ends = np.flatnonzero(np.concatenate([loss[1:] != loss[:-1], [True]]))
    values = loss[ends]
    t = np.cumsum(w)[ends]
    if weighted:
        t2 = np.cumsum(w * w)[ends]
        sd = np.sqrt(np.maximum(t2 - t * t / n, 1e-300))
        z = (t - a) / sd
        log_s, log_l = log_ndtr(z), log_ndtr(-z)
    else:
        p = np.clip(t / n, 0.0, 1.0)
        log_s, log_l = _binomial_log_tails(a - 1, n, p)    # P(T* >= a), P(T* < a)
    prev_s = np.concatenate([[-np.inf], log_s[:-1]])
    prev_l = np.concatenate([[0.0], log_l[:-1]])
    with np.errstate(invalid="ignore"):
        via_s = log_s + _log1mexp(prev_s - log_s)
        via_l = prev_l + _log1mexp(log_l - prev_l)
    log_p = np.where(log_s < math.log(0.5), via_s, via_l)
    log_p = np.where(np.isnan(log_p), -np.inf, log_p)
    beyond = float(np.exp(log_l[-1]))
    log_p[-1] = np.logaddexp(log_p[-1], log_l[-1])
    return {"values": values, "ends": ends, "log_p": log_p, "survival": np.exp(log_s),
            "beyond": beyond}


def _binomial_log_tails(k: int, n: int, p):
    """``log P(T > k)`` and ``log P(T <= k)`` for ``T ~ Binomial(n, p)``: the values of
    ``scipy.stats.binom.logsf`` / ``logcdf`` (the same ufuncs and support rules), bit for
    bit."""
    p = np.asarray(p, dtype=float)
    if _binom_sf is None:
        from scipy.stats import binom

        return binom.logsf(k, n, p), binom.logcdf(k, n, p)
    if k < 0:
        return np.zeros(p.shape), np.full(p.shape, -np.inf)
    if k >= n:
        return np.full(p.shape, -np.inf), np.zeros(p.shape)
    with np.errstate(divide="ignore"):
        return (np.log(_binom_sf(float(k), float(n), p)),
                np.log(_binom_cdf(float(k), float(n), p)))


def _log_mse(log_p, diff) -> float:
    """``sum p_j diff_j^2`` from log probabilities, without underflow."""
    diff = np.abs(np.asarray(diff, dtype=float))
    ok = (diff > 0) & np.isfinite(log_p)
    if not ok.any():
        return 0.0
    return float(np.exp(logsumexp(log_p[ok] + 2.0 * np.log(diff[ok]))))


def tail_errors(summary, a: int, k: int, reference: float, *, weighted: bool,
                simulated_mean: bool, el_se: float, center: float, level: float = 0.95):
    """Errors of VaR and ES at one level from the merged summary.

    Parameters
    ----------
    summary : LossSummary
        Merged; its tail buffer sorted worst first.
    a : int
        Tail count of the level.
    k : int
        Position of ``SFV_(a)`` in the buffer (from ``var_es_from_sorted``).
    reference : float
        Mean loss that VaR/ES are measured from.
    weighted : bool
        Importance-sampling weights.
    simulated_mean : bool
        The reference is the simulated mean (its error enters VaR and, through the
        linearisation, ES); False for the exact analytic mean.
    el_se : float
        Standard error of the simulated mean.
    center : float
        The kernel's centre ``c`` of the batch sums.
    level : float
        Confidence of the VaR interval.

    Returns
    -------
    dict
        ``var_se``, ``es_se``, ``var_ci`` (lo, hi), ``es_var_rel`` (relative error of the
        squared ES error, for the variance-reduction interval), ``beyond`` (probability
        the quantile lies below the buffer), ``reason`` (why an error is 0 or NaN, or
        None) and ``var_se_fixed_mean`` / ``es_se_fixed_mean`` / ``es_var_rel_fixed_mean``:
        the same without the simulated mean's error (the estimator of an
        importance-sampling run, which measures from the analytic mean).
    """
    loss, w = summary.tail_loss, summary.tail_weight
    n = summary.n
    nan = float("nan")
    out = {"var_se": nan, "es_se": nan, "var_ci": (nan, nan), "es_var_rel": nan,
           "beyond": nan, "reason": None, "var_se_fixed_mean": nan, "es_se_fixed_mean": nan,
           "es_var_rel_fixed_mean": nan}
    if not 0 < k < loss.size:
        out["reason"] = "the tail buffer does not reach SFV_(a)"
        return out
    q = float(loss[k])
    if summary.m2 == 0.0 and loss[0] == loss[-1]:
        out.update(var_se=0.0, es_se=0.0, var_ci=(q - reference, q - reference), es_var_rel=0.0,
                   beyond=0.0, reason="degenerate loss law: every scenario has the same loss",
                   var_se_fixed_mean=0.0, es_se_fixed_mean=0.0, es_var_rel_fixed_mean=0.0)
        return out
    W = exact_sum(w[:k])
    # Linearised ES: per-batch sums of w (L - q)^+ over the buffer rows before k.
    ids, nb, sw, s1, _ = _batch_columns(summary.batches)
    pos = np.searchsorted(ids, summary.tail_batch[:k])
    excess = np.bincount(pos, weights=w[:k] * (loss[:k] - q), minlength=ids.size)
    y_fixed = (n / W) * excess / nb
    y = y_fixed - (s1 / nb + center * sw / nb) if simulated_mean else y_fixed
    bm = batch_means_se(y, nb)
    rel = rel_se_of_variance(y, nb)
    bm_fixed = batch_means_se(y_fixed, nb) if simulated_mean else bm
    rel_fixed = rel_se_of_variance(y_fixed, nb) if simulated_mean else rel
    law = quantile_law(loss, w, a, n, weighted=weighted)
    values, log_p = law["values"], law["log_p"]
    mse_q = _log_mse(log_p, values - q)
    # ES if the estimate had landed on each candidate value (the same sample).
    cw = np.cumsum(w)[law["ends"]]
    cwl = np.cumsum(w * loss)[law["ends"]]
    es_tail = exact_sum(w[:k] * loss[:k]) / W
    es_j = values + (cwl - values * cw) / W
    mse_es = _log_mse(log_p, es_j - es_tail)
    var_var = mse_q + (el_se ** 2 if simulated_mean and np.isfinite(el_se) else 0.0)
    es_var = bm ** 2 + mse_es
    es_var_fixed = bm_fixed ** 2 + mse_es
    surv = law["survival"]
    hi_i = int(np.searchsorted(surv, (1 - level) / 2, side="left"))
    lo_i = int(np.searchsorted(surv, (1 + level) / 2, side="left"))
    hi = values[min(hi_i, values.size - 1)]
    lo = values[min(lo_i, values.size - 1)]
    out.update(var_se=float(np.sqrt(var_var)), es_se=float(np.sqrt(es_var)),
               var_ci=(float(lo - reference), float(hi - reference)),
               es_var_rel=float(rel * bm ** 2 / es_var) if es_var > 0 else nan,
               beyond=law["beyond"],
               # the same statistics measured from a fixed (analytic) mean: what an
               # importance-sampling run reports, so the variance reduction compares one
               # estimator on both runs
               var_se_fixed_mean=float(np.sqrt(mse_q)),
               es_se_fixed_mean=float(np.sqrt(es_var_fixed)),
               es_var_rel_fixed_mean=float(rel_fixed * bm_fixed ** 2 / es_var_fixed)
               if es_var_fixed > 0 else nan)
    if law["beyond"] > 1e-3:
        out["reason"] = (f"the VaR error may be understated: the quantile lies below the tail "
                         f"buffer with probability {law['beyond']:.2g}")
    elif var_var == 0.0 or es_var == 0.0:
        out["reason"] = ("the quantile sits on one loss value whose neighbours have "
                         "probability below 1e-300: error 0 to double precision")
    return out


def variance_reduction(se_plain: float, se_is: float, rel_plain: float = float("nan"),
                       rel_is: float = float("nan"), level: float = 0.95):
    """Variance reduction ``(SE_plain / SE_IS)^2`` with a delta-method interval.

    Both errors must come from the same estimator at the same scenario count.  The
    interval treats the two squared errors as independent estimates with relative
    errors ``rel_plain`` and ``rel_is`` (:func:`rel_se_of_variance`): log-normal,
    ``VR exp(+- z sqrt(rel_p^2 + rel_is^2))``.

    Returns
    -------
    dict
        ``value``, ``low``, ``high`` (None where undefined) and ``reason`` (None, or why
        there is no value: never a division by zero).
    """
    out = {"value": None, "low": None, "high": None, "reason": None}
    if not (np.isfinite(se_plain) and np.isfinite(se_is)):
        out["reason"] = "a standard error is undefined"
        return out
    if se_is == 0.0 or se_plain == 0.0:
        out["reason"] = ("a standard error is 0 (degenerate or atom-fixed quantile): no "
                         "variance ratio")
        return out
    vr = (se_plain / se_is) ** 2
    out["value"] = float(vr)
    rel = (math.hypot(rel_plain, rel_is) if np.isfinite(rel_plain) and np.isfinite(rel_is)
           else float("nan"))
    if np.isfinite(rel):
        from scipy.special import ndtri

        z = float(ndtri(0.5 + level / 2))
        out["low"], out["high"] = float(vr * math.exp(-z * rel)), float(vr * math.exp(z * rel))
    return out


def lattice_reason(measure: str, runs) -> str | None:
    """Why a variance-reduction factor of ``measure`` is not meaningful on a discrete loss
    law, or None when it is.

    A ratio of two squared errors estimates a variance reduction only when both errors
    measure the spread of a (locally) continuous estimator.  On a lattice they do not:

    * **VaR**: when an error is below the lattice spacing at the quantile (the gap to the
      neighbouring loss atom, :func:`riskdask.credit.simulation.lattice_facts`), the
      estimate sits on one atom and the "error" is the tiny probability of jumping to the
      next one -- its ratio between two runs spans tens of orders of magnitude (1e-225 to
      1e52 on the CreditMetrics bond and pair) and says nothing about efficiency;
    * **ES**: when an ES tail holds a single loss value (ES is then the atom itself, its
      batch-means part is 0 and only the atom-jump part remains).  An ES tail over two or
      more atoms is a genuine mean: its batch-means error, and their ratio, are meaningful.

    Parameters
    ----------
    measure : {"var", "es"}
    runs : sequence of (label, se, lattice_spacing, tail_distinct)
        The plain and the importance-sampling run.

    Returns
    -------
    str or None
        ``"not meaningful: discrete loss law (<reason>)"``.
    """
    for label, se, spacing, distinct in runs:
        if measure == "es" and distinct < 2:
            return (f"{LATTICE} (the {label} ES tail holds {distinct} loss value"
                    f"{'' if distinct == 1 else 's'}: ES is one atom)")
        if not (np.isfinite(se) and np.isfinite(spacing)):
            continue
        if measure == "var" and se < spacing:
            return (f"{LATTICE} (the {label} VaR error is below the lattice spacing "
                    f"{sig(spacing, 3)} at the quantile: the estimate sits on one atom)")
    return None
