"""The credit model assembled from its parts: analytic moments, the simulation model, the
importance-sampling shift and the reported risk levels (seed 004, sections 3.2-3.3).

Everything here is a function of arrays and plain parameters (no config object, no Dask);
:mod:`riskdask.credit.pipeline` calls these and runs the heavy parts on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .analytic import deviations_worst_first, obligor_bounds, pair_tile_covariance, ul_collapsed
from .data import Portfolio
from .ratings import MigrationMatrix
from .simulation import (SimulationModel, SimulationStats, build_factor_model,
                         build_matrix_model, importance_shift)
from .summary import exact_sum, tail_count
from .tail import (MIN_DISTINCT, TailFit, gpd_fit, held_out_verdict, lattice_gpd_fit,
                   lattice_step, qq_points, vasicek_fit)
from .uncertainty import MIN_BATCHES, lattice_reason, variance_reduction
from .valuation import conditional_forward_values, obligor_analytics

__all__ = ["CreditInputs", "AnalyticMoments", "Analytics", "check_levels",
           "factor_loadings_checked", "analytic_moments", "ul_by_cells", "pair_tiles",
           "tile_covariance_task", "finish_analytics", "simulation_model", "shift_for",
           "level_key", "risk_levels", "SimulationRun", "default_value_variance",
           "riskless_note", "step7_fits"]


@dataclass
class CreditInputs:
    """Validated inputs of one credit run."""

    matrix: MigrationMatrix
    curves: object
    portfolio: Portfolio
    correlation_kind: str
    loadings: np.ndarray | None = None        # (n, K) on independent factors
    factor_names: list = field(default_factory=list)
    correlation: np.ndarray | None = None     # (n, n)
    notes: list = field(default_factory=list)


def check_levels(n_scenarios: int, confidence: Sequence[float]) -> None:
    """The seed's a = round(sim (1 - confidence)) must be at least 2 (ES averages a - 1)."""
    for c in confidence:
        a = tail_count(n_scenarios, c)
        if a < 2:
            raise ConfigError(f"confidence level {c} is too high for {n_scenarios:,} scenarios: "
                              f"a = round({n_scenarios} x (1 - {c})) = {a} < 2 (need at least "
                              f"{int(np.ceil(1.5 / (1 - c))):,} scenarios)",
                              key="simulation.confidence")


def factor_loadings_checked(loadings: np.ndarray, obligor_ids: Sequence, *, where: str,
                            key: str | None, factor_correlation: np.ndarray | None = None
                            ) -> np.ndarray:
    """Loadings on independent factors (``B L`` with ``L L' =`` the factor correlation); each
    obligor's systematic variance ``sum_k b_ik^2`` must stay below 1."""
    if factor_correlation is not None:
        loadings = loadings @ np.linalg.cholesky(factor_correlation)
    r2 = np.einsum("ik,ik->i", loadings, loadings)
    bad = np.flatnonzero(r2 >= 1.0)
    if bad.size:
        i = int(bad[0])
        msg = (f"obligor {obligor_ids[i]!r}: systematic variance {r2[i]:.4f} >= 1 (sum of "
               "squared loadings, after the factor correlation) leaves no idiosyncratic part")
        if key is not None:
            raise ConfigError(msg, key=key)
        raise InputError(msg, file=where, row=i + 1)
    return loadings


@dataclass
class AnalyticMoments:
    """Per-obligor analytics (eqs. 3.1-3.7) and what the portfolio UL needs."""

    cfv: np.ndarray            # (n, r) conditional forward values, best rating first
    per_obligor: object        # valuation.ObligorAnalytics
    bounds: np.ndarray         # (n, r + 1) asset-return thresholds, Table 3.1
    deviations: np.ndarray     # CFV - EFV, worst state first
    ul2_sum: float             # sum_i UL_i^2, exactly rounded


def analytic_moments(portfolio: Portfolio, matrix: MigrationMatrix, curves) -> AnalyticMoments:
    """CFV matrix (eq. 3.4), FV/EFV/EL/UL_i per obligor (eqs. 3.5-3.7) and the thresholds."""
    pf = portfolio
    cfv = conditional_forward_values(pf.cf_obligor, pf.cf_time, pf.cf_amount, curves,
                                     pf.obligors["recovery_value"].to_numpy(), pf.n_obligors)
    per = obligor_analytics(cfv, pf.initial_index, matrix.probabilities,
                            default_value_var=default_value_variance(pf))
    bounds = obligor_bounds(pf.initial_index, matrix.probabilities)
    return AnalyticMoments(cfv=cfv, per_obligor=per, bounds=bounds,
                           deviations=deviations_worst_first(cfv, per.efv),
                           ul2_sum=exact_sum(per.ul ** 2))


def default_value_variance(portfolio: Portfolio) -> np.ndarray | None:
    """``Var(Nom_i R_i)`` of each obligor's value in default under beta recovery
    (``(Nom_i sd_i)^2``); None when every recovery is fixed (eq. 3.8 bit for bit)."""
    ob = portfolio.obligors
    if "recovery_sd" not in ob or not np.any(ob["recovery_sd"].to_numpy() > 0):
        return None
    return (ob["nominal"].to_numpy(dtype=float) * ob["recovery_sd"].to_numpy(dtype=float)) ** 2


def riskless_note(portfolio: Portfolio, matrix: MigrationMatrix) -> str | None:
    """A note when no obligor can default (PD = 0 for every initial rating in use)."""
    pd_ = matrix.probabilities[portfolio.initial_index, -1]
    if np.any(pd_ > 0):
        return None
    moves = matrix.probabilities[portfolio.initial_index, portfolio.initial_index]
    if np.all(moves == 1.0):
        return ("riskless portfolio: no obligor can default or migrate (PD = 0 and no "
                "migration for every rating in use): every loss is 0")
    return ("no obligor can default (PD = 0 for every rating in use): the risk is migration "
            "risk only")


def ul_by_cells(moments: AnalyticMoments, initial_index: np.ndarray, loadings: np.ndarray,
                probabilities: np.ndarray) -> float:
    """Portfolio UL (eqs. 3.8-3.11) for factor correlations, collapsed into cells.

    Obligors with the same initial rating and the same loadings share every pair table
    (eq. 3.9), so the double sum runs over cells, not obligor pairs.
    """
    key = np.column_stack([initial_index.astype(float), loadings])
    cells_key, cell = np.unique(key, axis=0, return_inverse=True)
    cell_loadings = cells_key[:, 1:]
    cell_rating = cells_key[:, 0].astype(np.int64)
    return ul_collapsed(moments.deviations, obligor_bounds(cell_rating, probabilities),
                        cell.ravel(), cell_loadings @ cell_loadings.T, moments.ul2_sum)


def pair_tiles(n_obligors: int, tile_obligors: int) -> list:
    """Upper-triangle tiles ``((i0, i1), (j0, j1))`` of the obligor-pair matrix."""
    edges = list(range(0, n_obligors, tile_obligors)) + [n_obligors]
    blocks = list(zip(edges[:-1], edges[1:]))
    return [(bi, bj) for a, bi in enumerate(blocks) for bj in blocks[a:]]


def tile_covariance_task(chunk, shared, *, tiles):
    """Engine kernel: the analytic UL covariance sum (eq. 3.11) over one tile of pairs."""
    (i0, i1), (j0, j1) = tiles[chunk.index]
    d, b, c = shared["deviations"], shared["bounds"], shared["correlation"]
    return pair_tile_covariance(d[i0:i1], d[j0:j1], b[i0:i1], b[j0:j1], c[i0:i1, j0:j1],
                                same_block=(i0 == j0))


@dataclass
class Analytics:
    """Portfolio analytics: FV_P, sum EFV, EL (migration/default split) and UL."""

    cfv: np.ndarray
    per_obligor: object
    fv_portfolio: float
    efv_sum: float
    el: float
    el_migration: float
    el_default: float
    ul: float
    bounds: np.ndarray


def finish_analytics(moments: AnalyticMoments, ul: float) -> Analytics:
    """Portfolio sums (eqs. 3.6-3.7), each rounded exactly once."""
    per = moments.per_obligor
    fv_p = exact_sum(per.fv)
    efv_sum = exact_sum(per.efv)
    return Analytics(cfv=moments.cfv, per_obligor=per, fv_portfolio=fv_p, efv_sum=efv_sum,
                     el=fv_p - efv_sum, el_migration=exact_sum(per.el_migration),
                     el_default=exact_sum(per.el_default), ul=ul, bounds=moments.bounds)


def simulation_model(an: Analytics, initial_index: np.ndarray, n_states: int, *,
                     correlation_kind: str, loadings: np.ndarray | None,
                     correlation: np.ndarray | None, confidence: Sequence[float],
                     n_scenarios: int, histogram_bins: int, contribution_rows: int,
                     shift, batches_per_chunk: int = MIN_BATCHES,
                     portfolio: Portfolio | None = None) -> SimulationModel:
    """The scenario kernel's read-only model (Steps 1-4): losses by state, thresholds, the
    correlation structure, the histogram range (from the analytic EL and UL), the shift, the
    fixed batches of the error estimates and (from ``portfolio``) beta recovery."""
    loss_by_state = (an.per_obligor.fv[:, None] - an.cfv)[:, ::-1]
    initial_state = (n_states - 1) - initial_index
    thresholds = an.bounds[:, 1:-1]
    lo = max(exact_sum(loss_by_state.min(axis=1)), an.el - 4.0 * an.ul)
    hi = min(exact_sum(loss_by_state.max(axis=1)), an.el + 30.0 * an.ul)
    if not hi > lo:
        hi = lo + 1.0
    common = dict(confidence=confidence, n_scenarios=n_scenarios,
                  hist_edges=np.linspace(lo, hi, histogram_bins + 1),
                  state_rows=contribution_rows, shift=shift,
                  expected_loss=an.per_obligor.fv - an.per_obligor.efv,
                  batches_per_chunk=batches_per_chunk)
    if portfolio is not None and default_value_variance(portfolio) is not None:
        ob = portfolio.obligors
        common["recovery"] = (ob["recovery_mean"].to_numpy(float),
                              ob["recovery_sd"].to_numpy(float), ob["nominal"].to_numpy(float))
    if correlation_kind == "matrix":
        return build_matrix_model(loss_by_state, initial_state, thresholds, correlation,
                                  **common)
    return build_factor_model(loss_by_state, initial_state, thresholds, loadings, **common)


def shift_for(an: Analytics, *, correlation_kind: str, loadings: np.ndarray | None,
              correlation: np.ndarray | None, target_confidence: float, shift: float | None):
    """The importance-sampling mean shift of the systematic factors (see
    :func:`riskdask.credit.simulation.importance_shift`)."""
    lgd = an.per_obligor.fv - an.cfv[:, -1]
    b_default = an.bounds[:, 1]
    if correlation_kind == "matrix":
        return importance_shift("matrix", lgd, b_default, np.linalg.cholesky(correlation),
                                target_confidence, shift)
    return importance_shift("factor", lgd, b_default, loadings, target_confidence, shift)


def level_key(c: float) -> str:
    """``0.999`` -> ``"99_9"`` (column names)."""
    return f"{100 * c:g}".replace(".", "_")


@dataclass
class SimulationRun:
    """One Monte Carlo run: the merged summary, its Step 6 statistics and how it stopped."""

    summary: object                  # summary.LossSummary
    stats: SimulationStats           # simulation.simulation_statistics
    n_chunks: int                    # chunks of the plan that ran
    adaptive: dict | None = None     # target, reached, waves, relative error, history
    contribution_pass: bool = False  # ES contributions needed the second pass


_LEVEL_KEYS = ("confidence", "a", "var", "var_se", "var_ci_low", "var_ci_high", "var_pct",
               "es", "es_se", "es_pct", "se_note", "tail_scenarios", "contribution_source",
               "lattice_spacing", "tail_distinct", "tail_effective")


def risk_levels(stats: SimulationStats, plain: SimulationStats | None) -> list[dict]:
    """The reported VaR/ES per confidence level (summary.json entries, plain values), with
    the plain run beside an IS run.

    The variance reduction is ``(SE_plain / SE_IS)^2`` of the same estimator on both runs
    (:func:`riskdask.credit.uncertainty.variance_reduction`) -- VaR / ES measured from the
    analytic mean, as the IS run reports them, so the plain run's error without its
    simulated mean's (``*_se_fixed_mean``): for ES with a 95 % interval
    from the relative errors of the two squared errors; None (with the reason) wherever an
    error is 0 or undefined -- never a division by zero.
    """
    levels = []
    for j, lv in enumerate(stats.levels):
        entry = {k: getattr(lv, k) for k in _LEVEL_KEYS}
        if plain is not None:
            p = plain.levels[j]
            entry["plain_var"], entry["plain_var_se"] = p.var, p.var_se
            entry["plain_es"], entry["plain_es_se"] = p.es, p.es_se
            vr_var = variance_reduction(p.var_se_fixed_mean, lv.var_se)
            vr_es = variance_reduction(p.es_se_fixed_mean, lv.es_se,
                                       p.es_var_rel_fixed_mean, lv.es_var_rel)
            notes = {}
            for key, vr, se_p, se_q in (("var", vr_var, p.var_se_fixed_mean, lv.var_se),
                                        ("es", vr_es, p.es_se_fixed_mean, lv.es_se)):
                why = lattice_reason(key, [
                    ("plain", se_p, p.lattice_spacing, p.tail_distinct),
                    ("importance-sampling", se_q, lv.lattice_spacing, lv.tail_distinct)])
                if why is not None:
                    vr.update(value=None, low=None, high=None, reason=why)
                notes[key] = vr["reason"]
            entry["variance_reduction_var"] = vr_var["value"]
            entry["variance_reduction_es"] = vr_es["value"]
            entry["variance_reduction_es_low"] = vr_es["low"]
            entry["variance_reduction_es_high"] = vr_es["high"]
            entry["variance_reduction_var_note"] = notes["var"]
            entry["variance_reduction_es_note"] = notes["es"]
            entry["variance_reduction_note"] = vr_es["reason"] or vr_var["reason"]
        levels.append(entry)
    return levels


#: Vasicek's granular law is not fitted to a portfolio of fewer effective names
#: (``(sum LGD_i)^2 / sum LGD_i^2``, the inverse exposure HHI).
MIN_VASICEK_NAMES = 10


def step7_fits(stats: SimulationStats, summary, model: SimulationModel,
               moments: SimulationStats) -> dict:
    """The seed's Step 7 tail fits beside the empirical VaR / ES.

    Vasicek's law moment-matched to the simulated EL and UL of ``moments`` (the plain run
    under importance sampling: its moments are not likelihood-ratio noise), with the
    exposure ``sum_i (FV_i - CFV_i^D)``; a peaks-over-threshold GPD through the merged tail
    buffer above the loss where its weight reaches 90 % of the buffer's -- on a lattice tail
    (:func:`~riskdask.credit.tail.lattice_step`) the continuity-corrected one
    (:func:`~riskdask.credit.tail.lattice_gpd_fit`).  A tail buffer with fewer than
    ``MIN_DISTINCT`` distinct losses gets no fit ("not meaningful: discrete loss law").  The
    verdict is :func:`~riskdask.credit.tail.held_out_verdict` (held-out tail
    log-likelihood with its error).  Returns ``{"fits": [TailFit, ...], "qq": {name:
    qq_points}, "verdict": dict, "lattice_step": float or None}``.
    """
    exposure = exact_sum(model.loss_by_state[:, 0])
    reference = stats.reference_mean_loss
    loss, weight = summary.tail_loss, summary.tail_weight
    threshold_weight = 0.9 * float(np.sum(weight))
    distinct = int(np.unique(loss).size)
    step = lattice_step(loss)
    if distinct < MIN_DISTINCT:
        why = (f"not meaningful: discrete loss law (only {distinct} distinct losses in the "
               f"tail buffer, need {MIN_DISTINCT})")
        fits = [TailFit("vasicek", {}, ok=False, note=why), TailFit("gpd", {}, ok=False,
                                                                     note=why)]
    else:
        vas = vasicek_fit(moments.el, moments.ul, moments.el_se, moments.ul_se,
                          exposure, reference, model.confidence)
        lgd = model.loss_by_state[:, 0]
        names = exact_sum(lgd) ** 2 / exact_sum(lgd * lgd) if np.any(lgd > 0) else 0.0
        if names < MIN_VASICEK_NAMES:
            vas = TailFit("vasicek", {}, ok=False,
                          note=f"not meaningful: discrete loss law (effective number of names "
                               f"{names:.3g} < {MIN_VASICEK_NAMES}: Vasicek's law is the limit "
                               "of an infinitely granular portfolio)")
        if step is not None:
            gpd = lattice_gpd_fit(loss, weight, summary.n, reference, model.confidence,
                                  threshold_weight=threshold_weight, step=step)
        else:
            gpd = gpd_fit(loss, weight, summary.n, reference, model.confidence,
                          threshold_weight=threshold_weight)
        fits = [vas, gpd]
    qq = {f.name: qq_points(loss, weight, summary.n, f) for f in fits}
    verdict = held_out_verdict(fits, loss, weight, summary.tail_batch, summary.n, reference,
                               model.confidence, threshold_weight=threshold_weight, step=step)
    return {"fits": fits, "qq": qq, "verdict": verdict, "lattice_step": step}
