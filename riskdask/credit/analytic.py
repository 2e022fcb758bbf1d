"""Analytic unexpected loss of the portfolio (seed eqs. 3.8-3.11).

Three routes to the same number:

* :func:`ul_pairwise_bruteforce` -- eqs. 3.8, 3.10 and 3.11 literally, one
  two-obligor sub-portfolio at a time.  O(n^2) tables; the reference.
* :func:`ul_collapsed` -- for a uniform correlation or a factor model the joint
  migration table of a pair depends only on the pair's *cells* (initial rating,
  loading vector), so the pair sum collapses to a sum over cell pairs of
  per-cell deviation sums: O(m^2) tables for m cells, whatever n is.
* :func:`pair_tile_covariance` -- for a full correlation matrix: the covariance
  sum over one tile of obligor pairs, run per tile on the cluster and added in a
  fixed order (:func:`ul_from_covariance_sum`).

All three use the identity behind eq. 3.11 (seed footnote 3):
``UL_P^2 = sum_i UL_i^2 + 2 sum_{i<j} Cov_ij`` with
``Cov_ij = (UL_{i+j}^2 - UL_i^2 - UL_j^2) / 2 = sum_ab p_ab D_i^a D_j^b``, where
``D_i^a = CFV_i^a - EFV_i`` and ``p_ab`` is the joint table of eq. 3.9.
"""

from __future__ import annotations

import numpy as np

from .bvn import rectangle_probabilities
from .ratings import interval_bounds, migration_thresholds
from .summary import exact_sum

__all__ = [
    "ul_pairwise_bruteforce",
    "ul_collapsed",
    "pair_tile_covariance",
    "ul_from_covariance_sum",
    "obligor_bounds",
    "deviations_worst_first",
]


def obligor_bounds(initial_index, probabilities) -> np.ndarray:
    """Interval edges of every obligor's forward states, worst first.

    Parameters
    ----------
    initial_index : ndarray of int, shape (n,)
        Best-first scale index of each initial rating.
    probabilities : ndarray, shape (R - 1, R)
        Migration matrix in scale order.

    Returns
    -------
    ndarray, shape (n, R + 1)
        ``[-inf, b_0, ..., b_{R-2}, +inf]`` (Table 3.1 boundaries).
    """
    thresholds = migration_thresholds(np.asarray(probabilities)[:, ::-1])
    return interval_bounds(thresholds)[np.asarray(initial_index)]


def deviations_worst_first(cfv, efv) -> np.ndarray:
    """``D_i^a = CFV_i^a - EFV_i`` with forward states reordered worst first."""
    return np.ascontiguousarray((np.asarray(cfv) - np.asarray(efv)[:, None])[:, ::-1])


def ul_pairwise_bruteforce(cfv, initial_index, probabilities, correlation,
                           default_value_var=None) -> float:
    """Portfolio UL by eqs. 3.8, 3.10 and 3.11 over all n(n-1)/2 pairs.

    Parameters
    ----------
    cfv : ndarray, shape (n, R)
        Conditional forward values, scale order.
    initial_index : ndarray of int, shape (n,)
    probabilities : ndarray, shape (R - 1, R)
    correlation : ndarray, shape (n, n)
        Asset correlations rho_ij.
    default_value_var : ndarray, shape (n,), optional
        Variance of the value in default (uncertain recovery, seed after eq. 3.8): added to
        the squared conditional forward value of the default state, in eq. 3.8 and in
        every pair of eq. 3.10 (recoveries independent of each other and of the ratings).

    Returns
    -------
    float
        ``sqrt(sum_{i<j} UL_{i+j}^2 - (n - 2) sum_i UL_i^2)``, eq. 3.11,
        with UL_i^2 = sum p CFV^2 - EFV^2 (eq. 3.8) and UL_{i+j}^2 from the
        joint tables of eq. 3.9 (eq. 3.10), exactly as written in the seed.
    """
    cfv = np.asarray(cfv, dtype=float)
    idx = np.asarray(initial_index)
    p = np.asarray(probabilities, dtype=float)[idx]
    n = cfv.shape[0]
    efv = np.einsum("ij,ij->i", p, cfv)
    var_d = np.zeros(n) if default_value_var is None else np.asarray(default_value_var, float)
    sq = cfv * cfv
    sq[:, -1] += var_d                                     # E[V^2 | D] = CFV_D^2 + Var
    ul2 = np.einsum("ij,ij->i", p, sq) - efv * efv  # eq. 3.8
    bounds = obligor_bounds(idx, probabilities)
    cfv_w = cfv[:, ::-1]
    ii, jj = np.triu_indices(n, k=1)
    rho = np.asarray(correlation, dtype=float)[ii, jj]
    joint = rectangle_probabilities(bounds[ii], bounds[jj], rho)  # eq. 3.9
    pair_values = cfv_w[ii][:, :, None] + cfv_w[jj][:, None, :]
    pair_sq = pair_values ** 2
    pair_sq[:, 0, :] += var_d[ii][:, None]                 # worst first: state 0 is D
    pair_sq[:, :, 0] += var_d[jj][:, None]
    ul2_pairs = (np.einsum("pab,pab->p", joint, pair_sq)
                 - (efv[ii] + efv[jj]) ** 2)  # eq. 3.10
    total = ul2_pairs.sum() - (n - 2) * ul2.sum()  # eq. 3.11
    return float(np.sqrt(total))


def ul_collapsed(deviations, bounds_by_cell, cell_of_obligor, cell_correlation,
                 ul2_sum: float) -> float:
    """Portfolio UL from cell-level sums (uniform or factor correlation).

    Parameters
    ----------
    deviations : ndarray, shape (n, R)
        ``D_i^a = CFV_i^a - EFV_i``, forward states worst first.
    bounds_by_cell : ndarray, shape (m, R + 1)
        Interval edges of the initial rating of each cell.
    cell_of_obligor : ndarray of int, shape (n,)
        Cell of each obligor.  Obligors in one cell share the initial rating
        and the correlation with every other obligor.
    cell_correlation : ndarray, shape (m, m)
        Asset correlation between two *distinct* obligors of cells c and d
        (also on the diagonal: two different obligors of the same cell).
    ul2_sum : float
        ``sum_i UL_i^2`` (eq. 3.8).

    Returns
    -------
    float
        UL_P of eq. 3.11.

    Notes
    -----
    ``sum_{i != j} Cov_ij = sum_{c,d} S_c' P^{cd} S_d - sum_c <P^{cc}, Q_c>`` with
    ``S_c = sum_{i in c} D_i`` and ``Q_c = sum_{i in c} D_i D_i'``: the second
    term removes the i = j terms that the first includes.  Only m^2 joint
    tables (eq. 3.9) are evaluated.
    """
    d = np.asarray(deviations, dtype=float)
    cells = np.asarray(cell_of_obligor)
    m = len(bounds_by_cell)
    r = d.shape[1]
    s = np.zeros((m, r))
    np.add.at(s, cells, d)
    q = np.zeros((m, r, r))
    np.add.at(q, cells, d[:, :, None] * d[:, None, :])
    ci, cj = np.triu_indices(m)
    bounds = np.asarray(bounds_by_cell, dtype=float)
    rho = np.asarray(cell_correlation, dtype=float)[ci, cj]
    # A joint table depends only on (bounds of c, bounds of d, rho): with a few
    # ratings and a few distinct correlations there are far fewer tables than
    # cell pairs, so evaluate each distinct one once (eq. 3.9).
    _, bound_id = np.unique(bounds, axis=0, return_inverse=True)
    bound_id = bound_id.ravel()
    key = np.column_stack([bound_id[ci], bound_id[cj], rho])
    uniq, table_of_pair = np.unique(key, axis=0, return_inverse=True)
    table_of_pair = table_of_pair.ravel()
    first = np.zeros(uniq.shape[0], dtype=np.int64)
    first[table_of_pair[::-1]] = np.arange(ci.size)[::-1]
    tables = rectangle_probabilities(bounds[ci[first]], bounds[cj[first]], rho[first])
    cross = np.empty(ci.size)
    pair_order = np.argsort(table_of_pair, kind="stable")
    edges = np.searchsorted(table_of_pair[pair_order], np.arange(uniq.shape[0] + 1))
    for t in range(uniq.shape[0]):
        sel = pair_order[edges[t]:edges[t + 1]]
        cross[sel] = np.einsum("pa,ab,pb->p", s[ci[sel]], tables[t], s[cj[sel]])
    # Off-diagonal cell pairs appear twice in the ordered sum over (c, d).
    ordered = exact_sum(np.where(ci == cj, 1.0, 2.0) * cross)
    diagonal = ci == cj
    self_terms = exact_sum(np.einsum("cab,cab->c", tables[table_of_pair[diagonal]],
                                     q[ci[diagonal]]))
    cov_sum_ordered = ordered - self_terms
    return float(np.sqrt(ul2_sum + cov_sum_ordered))


def pair_tile_covariance(dev_i, dev_j, bounds_i, bounds_j, rho_block,
                         same_block: bool) -> float:
    """Sum of Cov_ij over one tile of obligor pairs (full correlation matrix).

    Parameters
    ----------
    dev_i, dev_j : ndarray, shape (a, R) and (b, R)
        Deviations ``CFV - EFV`` (worst first) of the tile's row and column
        obligors.
    bounds_i, bounds_j : ndarray, shape (a, R + 1) and (b, R + 1)
    rho_block : ndarray, shape (a, b)
        Correlations between the row and column obligors.
    same_block : bool
        Row and column obligors are the same set: only pairs i < j are counted.

    Returns
    -------
    float
        ``sum_{pairs} sum_ab p_ab(rho_ij) D_i^a D_j^b`` (eqs. 3.9-3.10).
    """
    a, b = rho_block.shape
    if same_block:
        ii, jj = np.triu_indices(a, k=1)
    else:
        ii, jj = np.divmod(np.arange(a * b), b)
    if ii.size == 0:
        return 0.0
    parts = []
    step = 4096
    for start in range(0, ii.size, step):
        pi = ii[start:start + step]
        pj = jj[start:start + step]
        joint = rectangle_probabilities(bounds_i[pi], bounds_j[pj], rho_block[pi, pj])
        parts.append(np.einsum("pa,pab,pb->p", dev_i[pi], joint, dev_j[pj]))
    return exact_sum(np.concatenate(parts))


def ul_from_covariance_sum(ul2_sum: float, cov_sum_upper: float) -> float:
    """UL_P = sqrt(sum_i UL_i^2 + 2 sum_{i<j} Cov_ij) (eq. 3.11 rearranged)."""
    return float(np.sqrt(ul2_sum + 2.0 * cov_sum_upper))
