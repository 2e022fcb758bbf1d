"""Exact mergeable summaries of simulated losses and the seed's Step 6 statistics.

A chunk of scenarios is summarised by a :class:`LossSummary`; two summaries of
disjoint scenario sets merge with :func:`merge_summaries` into the summary of the
union.  The merge is exact where it matters:

* the tail buffer keeps every scenario that can still be among the worst ``a``
  of the union (ordered by loss, ties by scenario number, so the kept set does
  not depend on how the scenarios were grouped), with its weight and, for the
  first rows, the forward state of every obligor -- enough to recompute ES
  contributions exactly after any number of merges;
* moments merge by Chan's parallel formulas and per-obligor sums by addition,
  both in the tree order fixed by chunk index, hence bit-identical for any
  number of workers.

Losses are ``L = FV_P - SFV`` (seed Step 4); with weights ``w`` (1 for plain
sampling, the likelihood ratio with importance sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

__all__ = [
    "exact_sum",
    "ordered_sum",
    "LossSummary",
    "merge_summaries",
    "tail_index",
    "var_es_from_sorted",
    "tail_count",
    "sort_tail",
    "keep_rows",
    "batch_means_se",
    "batch_deviations",
]


@njit(cache=True, nogil=True)
def _fsum(x):
    # CPython's math.fsum (Modules/mathmodule.c, after Shewchuk 1997 "Adaptive precision
    # floating-point arithmetic and fast robust geometric predicates"), step for step:
    # exact partials, then the correctly rounded sum with its half-even fix-up.  Returns
    # (sum, ok); ok = False for a non-finite term or partial (math.fsum decides those).
    p = np.empty(64)                     # finite doubles need at most ~40 partials
    n = 0
    for v in x:
        xv = v
        i = 0
        for j in range(n):
            y = p[j]
            if abs(xv) < abs(y):
                xv, y = y, xv
            hi = xv + y
            yr = hi - xv
            lo = y - yr
            if lo != 0.0:
                p[i] = lo
                i += 1
            xv = hi
        n = i
        if xv != 0.0:
            if not np.isfinite(xv) or n >= p.size:
                return 0.0, False
            p[n] = xv
            n += 1
    hi = 0.0
    lo = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        while n > 0:
            xv = hi
            n -= 1
            y = p[n]
            hi = xv + y
            yr = hi - xv
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            xv = hi + y
            yr = xv - hi
            if y == yr:
                hi = xv
    return hi, True


def exact_sum(x) -> float:
    """Correctly rounded sum (``math.fsum``): independent of order, memory alignment and
    SIMD paths, so a reduction gives the same bits in every process.  Compiled
    (:func:`_fsum`, the same algorithm, so the same bits; ~3x faster than ``math.fsum``
    of a list); non-finite terms go to ``math.fsum`` itself (its errors and infinities)."""
    a = np.ascontiguousarray(x, dtype=float).ravel()
    total, ok = _fsum(a)
    return float(total) if ok else math.fsum(a.tolist())


@njit(cache=True, nogil=True)
def _neumaier(x):
    total = 0.0
    comp = 0.0
    for v in x:
        t = total + v
        if abs(total) >= abs(v):
            comp += (total - t) + v
        else:
            comp += (v - t) + total
        total = t
    return total + comp


def ordered_sum(x) -> float:
    """Compensated (Neumaier) sum in array order: accurate to about one rounding and the
    same bits on every machine for the same array (a fixed sequence of IEEE operations),
    ~50 times faster than :func:`exact_sum` on a million values.  For sums over one whole
    array in a fixed order (the what-if's scenario arrays); a reduction whose grouping
    varies needs :func:`exact_sum`."""
    return float(_neumaier(np.ascontiguousarray(x, dtype=float).ravel()))


def tail_count(n_scenarios: int, confidence: float) -> int:
    """``a = sim * (1 - confidence)`` rounded to the nearest integer (seed Step 6)."""
    return int(np.floor(n_scenarios * (1.0 - confidence) + 0.5))


@dataclass
class LossSummary:
    """Mergeable summary of a set of simulated scenarios.

    Attributes
    ----------
    first_chunk, last_chunk : int
        Range of chunk indices merged so far (only consecutive ranges merge).
    n : int
        Number of scenarios.
    weight_sum, mean, m2 : float
        Sum of weights, weighted mean loss and weighted sum of squared
        deviations (Chan et al. 1979 parallel update).
    obligor_loss : ndarray (n_obligors,)
        ``sum_s w_s * loss_is`` per obligor (simulation order).
    tail_loss, tail_weight : ndarray (k,)
        Tail buffer, sorted by loss descending then scenario number ascending.
    tail_scenario : ndarray of int64 (k,)
        Global scenario numbers of the buffer rows.
    tail_batch : ndarray of int64 (k,)
        Batch (fixed sub-chunk, see ``batches``) of every buffer row.
    tail_states : ndarray of uint8 (min(k, cap), n_obligors)
        Forward state (worst first) of every obligor for the first rows.
    histogram : ndarray (bins + 2,)
        Weighted counts: underflow, bins, overflow.
    batches : ndarray (batches, 5)
        Per batch (a fixed sub-range of a chunk, ``m`` per chunk): global batch id,
        scenario count, ``sum w``, ``sum w (L - c)`` and ``sum w (L - c)^2`` around the
        model's fixed centre ``c`` -- the sums the linearised error estimates of
        :mod:`riskdask.credit.uncertainty` are built from.
    """

    first_chunk: int
    last_chunk: int
    n: int
    weight_sum: float
    mean: float
    m2: float
    obligor_loss: np.ndarray
    tail_loss: np.ndarray
    tail_weight: np.ndarray
    tail_scenario: np.ndarray
    tail_batch: np.ndarray
    tail_states: np.ndarray
    histogram: np.ndarray
    batches: np.ndarray
    meta: dict = field(default_factory=dict)
    #: every scenario's loss and weight in scenario order (None unless the model keeps them:
    #: the what-if of :mod:`riskdask.credit.whatif`; 8 bytes a scenario, 16 with weights)
    scenario_loss: np.ndarray | None = None
    scenario_weight: np.ndarray | None = None


def sort_tail(loss, scenario) -> np.ndarray:
    """Order of rows by loss descending, ties by scenario number ascending."""
    return np.lexsort((scenario, -loss))


def keep_rows(weight_sorted, weight_needed: float) -> int:
    """Rows to keep: every row whose strictly-preceding cumulative weight is
    below ``weight_needed`` (such a row can still be among the worst ``a`` of
    any superset, since supersets only add rows in front of it)."""
    before = np.concatenate([[0.0], np.cumsum(weight_sorted)[:-1]])
    return int(np.searchsorted(before, weight_needed, side="left"))


def merge_summaries(a: LossSummary, b: LossSummary, *, weight_needed: float,
                    state_rows: int) -> LossSummary:
    """Summary of the union of two disjoint scenario sets (associative, exact)."""
    if a.last_chunk + 1 != b.first_chunk:
        # The reduce tree only merges neighbours; guard against misuse.
        a, b = (b, a) if b.last_chunk + 1 == a.first_chunk else (a, b)
    w = a.weight_sum + b.weight_sum
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.weight_sum / w)
    m2 = a.m2 + b.m2 + delta * delta * (a.weight_sum * b.weight_sum / w)

    loss = np.concatenate([a.tail_loss, b.tail_loss])
    weight = np.concatenate([a.tail_weight, b.tail_weight])
    scen = np.concatenate([a.tail_scenario, b.tail_scenario])
    batch = np.concatenate([a.tail_batch, b.tail_batch])
    order = sort_tail(loss, scen)
    keep = keep_rows(weight[order], weight_needed)
    order = order[:keep]
    # Rows that carry states: any row ranked < state_rows in the union was ranked
    # < state_rows in its own summary, so its states are available.
    n_states = min(keep, state_rows)
    n_a = a.tail_loss.size
    src = order[:n_states]
    # Each kept row's states from a or b, gathered straight into the result (stacking a
    # and b first would copy both blocks once more).
    states = np.empty((n_states, a.tail_states.shape[1]), dtype=a.tail_states.dtype)
    from_a = src < n_a
    states[from_a] = a.tail_states[src[from_a]]
    states[~from_a] = b.tail_states[src[~from_a] - n_a]
    return LossSummary(
        first_chunk=a.first_chunk,
        last_chunk=b.last_chunk,
        n=a.n + b.n,
        weight_sum=w,
        mean=mean,
        m2=m2,
        obligor_loss=a.obligor_loss + b.obligor_loss,
        tail_loss=loss[order],
        tail_weight=weight[order],
        tail_scenario=scen[order],
        tail_batch=batch[order],
        tail_states=states,
        histogram=a.histogram + b.histogram,
        batches=np.concatenate([a.batches, b.batches]),
        meta=a.meta,
        scenario_loss=_cat(a.scenario_loss, b.scenario_loss),
        scenario_weight=_cat(a.scenario_weight, b.scenario_weight),
    )


def _cat(x, y):
    return None if x is None or y is None else np.concatenate([x, y])


def tail_index(weight_sorted, a: float) -> int:
    """Position of SFV_(a): the first sorted row whose cumulative weight reaches ``a``.

    With unit weights this is row ``a - 1`` (0-based), the seed's ``SFV_(a)``.
    Returns ``len`` if the buffer does not reach ``a``.
    """
    cum = np.cumsum(weight_sorted)
    return int(np.searchsorted(cum, a, side="left"))


def var_es_from_sorted(loss_sorted, weight_sorted, mean_loss: float, a: int):
    """VaR and ES (seed Step 6) from a tail sorted by loss descending.

    Parameters
    ----------
    loss_sorted, weight_sorted : ndarray
        Losses ``FV_P - SFV`` sorted worst first, and their weights.
    mean_loss : float
        Weighted mean loss, ``FV_P - mean(SFV)``.
    a : int
        ``round(sim * (1 - confidence))``, at least 2.

    Returns
    -------
    var, es, k : float, float, int
        ``VaR = mean(SFV) - SFV_(a)`` and
        ``ES = mean(SFV) - sum_{i<a} w_i SFV_(i) / sum_{i<a} w_i`` -- with unit
        weights exactly the seed's ``1/(a-1) sum_{i=1}^{a-1} SFV_(i)`` -- and
        ``k``, the 0-based position of ``SFV_(a)``.
    """
    k = tail_index(weight_sorted, a)
    if k >= len(loss_sorted) or k == 0:
        return float("nan"), float("nan"), k
    var = float(loss_sorted[k] - mean_loss)
    w = weight_sorted[:k]
    es = float(exact_sum(w * loss_sorted[:k]) / exact_sum(w) - mean_loss)
    return var, es, k


def batch_means_se(values, sizes) -> float:
    """Standard error of a statistic from its values on B batches (chunks).

    ``SE^2 = B / (B - 1) * sum_b (n_b / N)^2 (x_b - xbar)^2`` with the
    size-weighted mean ``xbar``; with equal batches this is
    ``sd(x_b, ddof=1) / sqrt(B)``.  NaN if fewer than two batches have a value.
    """
    b, share, dev = batch_deviations(values, sizes)
    if b < 2:
        return float("nan")
    return float(np.sqrt(b / (b - 1) * exact_sum(share ** 2 * dev ** 2)))


def batch_deviations(values, sizes):
    """The batches with a value: their count ``B``, size shares ``n_b / N`` and deviations
    ``x_b - xbar`` from the size-weighted mean (the terms of the batch-means variance)."""
    x = np.asarray(values, dtype=float)
    nb = np.asarray(sizes, dtype=float)
    ok = np.isfinite(x)
    x, nb = x[ok], nb[ok]
    if x.size == 0:
        return 0, x, x
    total = exact_sum(nb)
    xbar = exact_sum(nb * x) / total
    return x.size, nb / total, x - xbar
