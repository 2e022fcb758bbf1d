"""Homogeneous one-factor pools with a known law, shared by the credit tests.

- :func:`exact_pool`: the exact law of the number of defaults of ``n`` identical names (the
  binomial mixed over the Gaussian factor, trapezoid on [-9, 9]) -- the closed-form reference
  of the lattice, concentration and stress tests.
- :func:`default_only`: the simulation model of such a pool (default or not, loss 1 a name),
  plain or with the importance-sampling shift.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import binom

from riskdask.credit.simulation import build_factor_model, importance_shift
from riskdask.credit.uncertainty import batches_per_chunk


def exact_pool(n, pd_, rho, nodes=4001):
    """P(N = k), k = 0..n, for n names of default probability ``pd_`` and asset correlation
    ``rho`` (Vasicek's one-factor model, finite n)."""
    z = np.linspace(-9, 9, nodes)
    wz = np.exp(-0.5 * z * z)
    wz /= wz.sum()
    p = ndtr((ndtri(pd_) - np.sqrt(rho) * z) / np.sqrt(1 - rho))
    k = np.arange(n + 1)
    return (wz[:, None] * binom.pmf(k[None, :], n, p[:, None])).sum(axis=0)


def default_only(n_names, pd_, rho, n_sim, chunk, importance, confidence=(0.99, 0.999),
                 state_rows=0):
    """The factor-path simulation model of the pool: states default / not, loss 1 a default;
    with ``importance`` the mean shift for the 99.9 % level."""
    lbs = np.zeros((n_names, 2))
    lbs[:, 0] = 1.0
    thr = np.full((n_names, 1), ndtri(pd_))
    loadings = np.full((n_names, 1), np.sqrt(rho))
    shift = (importance_shift("factor", lbs[:, 0], thr[:, 0], loadings, 0.999)
             if importance else None)
    return build_factor_model(lbs, np.ones(n_names, int), thr, loadings,
                              confidence=confidence, n_scenarios=n_sim,
                              hist_edges=np.linspace(0, n_names, 11), shift=shift,
                              expected_loss=np.full(n_names, pd_), state_rows=state_rows,
                              batches_per_chunk=batches_per_chunk(n_sim, chunk))
