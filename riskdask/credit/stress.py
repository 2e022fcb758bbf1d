"""Factor stress from the run's own scenarios: conditional EL / VaR / ES when a systematic
factor is shifted by ``k`` sigma, or conditional on the worst ``q`` of that factor.

No new scenarios: the same chunks (the same streams, hence the same draws as the run) are
re-weighted.  With ``eta_f`` the factor's draw and ``w`` the run's weight (1, or the
importance-sampling likelihood ratio):

* **shift by k sigma** (the factor's law ``N(0, 1)`` becomes ``N(k, 1)``, the other factors and
  the idiosyncratic terms unchanged): ``w' = w exp(k eta_f - k^2 / 2)``, the likelihood ratio
  of the stressed to the model law -- unbiased for every conditional expectation, with an
  effective sample size ``~ n exp(-k^2)`` (reported);
* **worst q** (the factor's ``q`` tail in the direction that raises losses):
  ``w' = w 1{eta_f in the worst q} / q`` -- conditional on the event, with its exact
  probability ``q`` as denominator.

``k = 0`` gives ``w' = w``: the unstressed run's figures bit for bit.  The Step 6 statistics
and their errors are those of :func:`riskdask.credit.simulation.simulation_statistics` on the
re-weighted summary (weighted: the normal law of the order statistic, batch means), measured
from the stressed mean (seed convention).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.special import ndtri

from .simulation import (SimulationModel, chunk_losses, simulation_statistics,
                         weighted_summary)
from .summary import merge_summaries

__all__ = ["stress_weights", "stress_chunk", "combine_stress", "stress_statistics",
           "worse_when_low"]


def worse_when_low(model: SimulationModel, factor: int) -> bool:
    """Losses rise as factor ``factor`` falls (positive exposure-weighted loadings)."""
    g = model.group_loadings[model.group_of_obligor, factor]
    return bool(np.dot(model.loss_by_state[:, 0], g) >= 0)


def stress_weights(eta_f, weight, kind: str, value: float, low: bool = True):
    """The stressed weights ``w'`` of one chunk (module docstring)."""
    eta_f = np.asarray(eta_f, dtype=float)
    if kind == "shift":
        k = float(value)
        if k == 0.0:
            return weight
        return weight * np.exp(k * eta_f - 0.5 * k * k)
    q = float(value)
    cut = float(ndtri(q)) if low else float(ndtri(1.0 - q))
    hit = eta_f <= cut if low else eta_f >= cut
    return np.where(hit, weight / q, 0.0)


def stress_chunk(chunk, model: SimulationModel, stresses):
    """Engine kernel: one re-weighted :class:`~riskdask.credit.summary.LossSummary` per
    stress ``(kind, factor, value, low)`` for this chunk (its own draws, regenerated)."""
    loss, weight, eta = chunk_losses(chunk, model)
    return [weighted_summary(chunk, model, loss,
                             stress_weights(eta[:, f], weight, kind, value, low))
            for kind, f, value, low in stresses]


def combine_stress(a: list, b: list) -> list:
    """Merge the per-stress summaries of two neighbouring chunk ranges (exact)."""
    return [merge_summaries(x, y, weight_needed=x.meta["weight_needed"], state_rows=0)
            for x, y in zip(a, b)]


def stress_statistics(summary, model: SimulationModel, fv_portfolio: float, *,
                      unchanged: bool = False):
    """Step 6 of a re-weighted summary: EL (the stressed mean), VaR / ES measured from it,
    their errors (likelihood-ratio weights).  ``unchanged`` (a 0 sigma shift: the run's own
    weights): the run's own statistics, bit for bit."""
    if unchanged:
        return simulation_statistics(summary, model, fv_portfolio)
    k = model.group_loadings.shape[1] if model.group_loadings is not None else 1
    weighted = replace(model, shift=np.zeros(k) if model.shift is None else model.shift,
                       expected_loss=None, state_rows=0)
    return simulation_statistics(summary, weighted, fv_portfolio)
