"""Uncertain (beta) recovery, seed after eq. 3.8: the analytic UL with the recovery variance
against brute-force eqs. 3.8-3.11 over all pairs, the simulation within Monte Carlo error,
and sd = 0 bit-identical to fixed recovery."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta as beta_law

from riskdask.credit.analytic import (deviations_worst_first, obligor_bounds, ul_collapsed,
                                      ul_pairwise_bruteforce)
from riskdask.credit.data import align_curves, load_curves, load_matrix
from riskdask.credit.simulation import (build_factor_model, simulate_local,
                                        simulation_statistics)
from riskdask.credit.synthetic import DATA_DIR
from riskdask.credit.uncertainty import batches_per_chunk
from riskdask.credit.valuation import (beta_parameters, bond_cash_flows,
                                       conditional_forward_values, obligor_analytics)
from riskdask.engine import plan_chunks

MATRIX, _ = load_matrix(DATA_DIR / "migration_creditmetrics_1997.csv", normalize=True)
CURVES = align_curves(load_curves(DATA_DIR / "curves.csv"), MATRIX, MATRIX.initial_ratings,
                      DATA_DIR / "curves.csv")


def _portfolio(n=16, seed=4):
    rng = np.random.default_rng(seed)
    icr = rng.integers(2, 7, n)                       # A .. CCC-C
    nominal = rng.uniform(1e6, 5e6, n)
    rr = rng.uniform(0.2, 0.6, n)
    sd = np.where(np.arange(n) % 3 == 0, 0.0, 0.25 * np.sqrt(rr * (1 - rr)) * 2)
    pos, t, amt = bond_cash_flows(nominal, np.full(n, 0.05), np.ones(n, int),
                                  rng.uniform(2, 8, n))
    cfv = conditional_forward_values(pos, t, amt, CURVES, nominal * rr, n)
    return icr, nominal, rr, sd, cfv


def test_beta_parameters_have_the_requested_moments():
    a, b = beta_parameters([0.5, 0.3], [0.2, 0.1])
    np.testing.assert_allclose(beta_law.mean(a, b), [0.5, 0.3], rtol=1e-12)
    np.testing.assert_allclose(beta_law.std(a, b), [0.2, 0.1], rtol=1e-12)


def test_analytic_ul_with_recovery_variance_equals_bruteforce_eq_3_11():
    icr, nominal, rr, sd, cfv = _portfolio()
    var_d = (nominal * sd) ** 2
    n = icr.size
    rho = 0.3
    corr = np.where(np.eye(n) > 0, 1.0, rho)
    brute = ul_pairwise_bruteforce(cfv, icr, MATRIX.probabilities, corr, default_value_var=var_d)
    an = obligor_analytics(cfv, icr, MATRIX.probabilities, default_value_var=var_d)
    key = np.column_stack([icr, np.full(n, np.sqrt(rho))])
    uniq, cell = np.unique(key, axis=0, return_inverse=True)
    collapsed = ul_collapsed(deviations_worst_first(cfv, an.efv),
                             obligor_bounds(uniq[:, 0].astype(int), MATRIX.probabilities),
                             cell.ravel(), uniq[:, 1:] @ uniq[:, 1:].T, float(np.sum(an.ul ** 2)))
    assert collapsed == pytest.approx(brute, rel=1e-9)
    fixed = ul_pairwise_bruteforce(cfv, icr, MATRIX.probabilities, corr)
    p_d = MATRIX.probabilities[icr, -1]
    assert brute ** 2 == pytest.approx(fixed ** 2 + np.sum(p_d * var_d), rel=1e-9)
    assert brute > fixed * (1 + 1e-6)
    # EL does not move
    base = obligor_analytics(cfv, icr, MATRIX.probabilities)
    np.testing.assert_array_equal(an.el, base.el)


def _model(icr, nominal, rr, sd, cfv, an, n_sim, chunk, recovery=True):
    lbs = (an.fv[:, None] - cfv)[:, ::-1]
    thr = obligor_bounds(icr, MATRIX.probabilities)[:, 1:-1]
    el = an.fv - an.efv
    return build_factor_model(lbs, 7 - icr, thr, np.full((icr.size, 1), np.sqrt(0.3)),
                              confidence=(0.99,), n_scenarios=n_sim,
                              hist_edges=np.linspace(0, 1e7, 11), expected_loss=el,
                              batches_per_chunk=batches_per_chunk(n_sim, chunk),
                              recovery=(rr, sd, nominal) if recovery else None)


def test_simulation_with_beta_recovery_matches_the_analytic_el_and_ul():
    icr, nominal, rr, sd, cfv = _portfolio()
    n = icr.size
    var_d = (nominal * sd) ** 2
    an = obligor_analytics(cfv, icr, MATRIX.probabilities, default_value_var=var_d)
    corr = np.where(np.eye(n) > 0, 1.0, 0.3)
    ul = ul_pairwise_bruteforce(cfv, icr, MATRIX.probabilities, corr, default_value_var=var_d)
    n_sim, chunk = 200_000, 25_000
    model = _model(icr, nominal, rr, sd, cfv, an, n_sim, chunk)
    assert model.recovery is not None and model.state_rows == 0
    stats = simulation_statistics(simulate_local(model, plan_chunks(n_sim, chunk, 8)), model,
                                  float(an.fv.sum()))
    el = float(np.sum(an.fv - an.efv))
    assert abs(stats.el - el) < 3 * stats.el_se, (stats.el, el, stats.el_se)
    assert abs(stats.ul - ul) < 3 * stats.ul_se, (stats.ul, ul, stats.ul_se)
    fixed = ul_pairwise_bruteforce(cfv, icr, MATRIX.probabilities, corr)
    assert abs(stats.ul - fixed) > 3 * stats.ul_se      # the variance term is visible


def test_zero_recovery_sd_is_bit_identical_to_fixed_recovery():
    icr, nominal, rr, _, cfv = _portfolio()
    an = obligor_analytics(cfv, icr, MATRIX.probabilities, default_value_var=np.zeros(icr.size))
    base = obligor_analytics(cfv, icr, MATRIX.probabilities)
    np.testing.assert_array_equal(an.ul, base.ul)
    n_sim, chunk = 20_000, 5_000
    chunks = plan_chunks(n_sim, chunk, 2)
    with_sd0 = _model(icr, nominal, rr, np.zeros(icr.size), cfv, an, n_sim, chunk)
    plain = _model(icr, nominal, rr, None, cfv, an, n_sim, chunk, recovery=False)
    assert with_sd0.recovery is None
    a, b = simulate_local(with_sd0, chunks), simulate_local(plain, chunks)
    assert a.mean == b.mean and a.m2 == b.m2
    np.testing.assert_array_equal(a.tail_loss, b.tail_loss)
    np.testing.assert_array_equal(a.tail_states, b.tail_states)
