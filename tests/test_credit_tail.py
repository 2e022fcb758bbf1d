"""Step 7 tail fits (riskdask.credit.tail) against independent references: the exact law of
a finite homogeneous default-mode portfolio (binomial mixture, scipy) for the Vasicek fit,
and known generalized-Pareto draws for the peaks-over-threshold fit."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import ndtr, ndtri
from scipy.stats import binom, genpareto

from riskdask.credit.simulation import build_factor_model, simulate_local, simulation_statistics
from riskdask.credit.tail import (gpd_fit, gpd_logpdf, qq_points, vasicek_fit, vasicek_quantile,
                                  vasicek_rho_from_moments)
from riskdask.credit.uncertainty import batches_per_chunk
from riskdask.engine import plan_chunks


def _exact_finite_quantile(n_names, pd_, rho, confidence):
    """Default fraction quantile of n_names identical names: P(D <= k) is the binomial
    mixture over the factor, integrated by 160-point Gauss-Hermite quadrature."""
    z, wz = hermegauss(160)
    wz = wz / wz.sum()
    p = ndtr((ndtri(pd_) - np.sqrt(rho) * z) / np.sqrt(1 - rho))
    k = np.arange(n_names + 1)
    cdf = (binom.cdf(k[:, None], n_names, p[None, :]) * wz[None, :]).sum(axis=1)
    return np.array([np.searchsorted(cdf, c) / n_names for c in confidence])


def test_rho_from_moments_inverts_the_vasicek_variance():
    from riskdask.credit.tail import _vasicek_second_moment

    for pd_, rho in ((0.01, 0.2), (0.05, 0.05), (0.002, 0.5)):
        sd = np.sqrt(_vasicek_second_moment(pd_, rho) - pd_ ** 2)
        assert vasicek_rho_from_moments(pd_, sd) == pytest.approx(rho, rel=1e-6)


def test_vasicek_fit_is_within_5pct_of_the_exact_finite_portfolio_quantiles():
    n_names, pd_, rho, n_sim, chunk = 2000, 0.01, 0.2, 100_000, 25_000
    conf = (0.99, 0.999)
    lbs = np.zeros((n_names, 2))
    lbs[:, 0] = 1.0 / n_names
    model = build_factor_model(lbs, np.ones(n_names, int), np.full((n_names, 1), ndtri(pd_)),
                               np.full((n_names, 1), np.sqrt(rho)), confidence=conf,
                               n_scenarios=n_sim, hist_edges=np.linspace(0, 1, 11),
                               batches_per_chunk=batches_per_chunk(n_sim, chunk))
    stats = simulation_statistics(simulate_local(model, plan_chunks(n_sim, chunk, 31)), model, 1.0)
    fit = vasicek_fit(stats.el, stats.ul, stats.el_se, stats.ul_se, 1.0,
                      stats.el, conf)
    assert fit.ok and fit.params["rho"] == pytest.approx(rho, rel=0.15)
    exact = _exact_finite_quantile(n_names, pd_, rho, conf)
    for level, x in zip(fit.levels, exact):
        fitted = level["var"] + stats.el              # the loss-fraction quantile
        assert abs(fitted - x) < 0.05 * x, (level["confidence"], fitted, x)
        assert level["var_se"] > 0 and level["es"] > level["var"]
    # the limiting law itself vs the exact finite one, with the true parameters
    lim = vasicek_quantile(pd_, rho, np.array(conf))
    np.testing.assert_allclose(lim, exact, rtol=0.05)


def test_gpd_fit_recovers_a_known_tail():
    xi, sigma, n = 0.2, 1.0, 200_000
    draws = genpareto.rvs(xi, scale=sigma, size=n, random_state=np.random.default_rng(5))
    srt = np.sort(draws)[::-1][:4000]
    conf = (0.99, 0.999, 0.9999)
    fit = gpd_fit(srt, np.ones(srt.size), n, 0.0, conf, threshold_weight=3000)
    assert fit.ok
    assert abs(fit.params["xi"] - xi) < 3 * fit.params["xi_se"], fit.params
    u = fit.params["threshold"]
    assert fit.params["sigma"] == pytest.approx(sigma + xi * u, rel=4 * fit.params["sigma_se"] /
                                                fit.params["sigma"])
    for level in fit.levels:
        c = level["confidence"]
        true_q = genpareto.ppf(c, xi, scale=sigma)
        true_es = (true_q + sigma) / (1 - xi)
        assert abs(level["var"] - true_q) < 3 * level["var_se"], (c, level, true_q)
        assert abs(level["es"] - true_es) < 3 * level["es_se"], (c, level, true_es)
    qq = qq_points(srt, np.ones(srt.size), n, fit)
    assert qq["max_rel_deviation"] < 0.1


@pytest.mark.parametrize("xi", [0.3, 1e-7, 0.0, -0.2, -0.7, 1.5])
@pytest.mark.parametrize("sigma", [0.37, 2.0e6])
def test_gpd_logpdf_is_scipys_genpareto_logpdf_bit_for_bit(xi, sigma):
    rng = np.random.default_rng(11)
    y = np.concatenate([rng.exponential(sigma, 500), [0.0, sigma, 50 * sigma]])
    if xi < 0:      # the support's end, and points beyond it (-inf for both)
        y = np.concatenate([y, [-sigma / xi, -sigma / xi * 1.5]])
    ours = gpd_logpdf(y, xi, sigma)
    ref = genpareto.logpdf(y, xi, loc=0.0, scale=sigma)
    np.testing.assert_array_equal(ours, ref)
    assert np.isneginf(ours).any() == (xi < 0)


def test_gpd_refuses_a_lattice_tail():
    loss = np.repeat([5.0, 4.0, 3.0, 2.0], 100)
    fit = gpd_fit(loss, np.ones(loss.size), 100_000, 0.0, (0.999,), threshold_weight=300)
    assert not fit.ok and "lattice" in fit.note


# ----------------------------------------------------------------------- adaptive stopping
def _default_model(n_sim, chunk, n_names=200, pd_=0.02, rho=0.2):
    lbs = np.zeros((n_names, 2))
    lbs[:, 0] = 1.0
    return build_factor_model(lbs, np.ones(n_names, int), np.full((n_names, 1), ndtri(pd_)),
                              np.full((n_names, 1), np.sqrt(rho)), confidence=(0.99, 0.999),
                              n_scenarios=n_sim, hist_edges=np.linspace(0, n_names, 11),
                              batches_per_chunk=batches_per_chunk(n_sim, chunk))


def test_adaptive_stopping_reaches_the_target_or_stops_at_the_cap():
    from riskdask.credit.adaptive import run_in_waves
    from riskdask.credit.simulation import combine_summaries

    n_sim, chunk = 200_000, 10_000
    model = _default_model(n_sim, chunk)
    chunks = plan_chunks(n_sim, chunk, 3)
    runs = {}
    for target in (0.02, 1e-4):
        runs[target] = run_in_waves(chunks, 2, lambda cs: simulate_local(model, cs),
                                    combine_summaries,
                                    lambda s: simulation_statistics(s, model, 200.0), target)
    easy, hard = runs[0.02], runs[1e-4]
    assert easy.reached and easy.waves_run < easy.waves_planned
    assert easy.waves_run > 1 and easy.relative_error <= 0.02 < easy.history[-2][1]
    assert easy.stats.n_scenarios == easy.waves_run * 2 * chunk
    # the stopped run is exactly the run of its chunks (same summary as a fresh run)
    again = run_in_waves(chunks, 2, lambda cs: simulate_local(model, cs), combine_summaries,
                         lambda s: simulation_statistics(s, model, 200.0), 0.02)
    assert (again.waves_run == easy.waves_run
            and again.stats.levels[-1].es == easy.stats.levels[-1].es)
    assert not hard.reached and hard.waves_run == hard.waves_planned
    assert hard.stats.n_scenarios == n_sim
