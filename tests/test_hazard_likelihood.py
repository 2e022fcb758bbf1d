"""The likelihood estimator of the direction and its calibrated closure probabilities, proven
on simulated panels with a known truth (issue 22, items 1, 2 and 4).

Seed: 003_ae2b3031728223ec.txt (Section 2.4, eq. 5; Appendix A); spec: HAZARD.md.
The references are independent: scikit-learn's PoissonRegressor on the raw person-years, the
generator's own next-year probabilities, and the simulator's known theta*.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from riskdask.hazard import likelihood as L
from riskdask.hazard.panel import Period, build_panel
from riskdask.hazard.predict import model_next_year_table
from riskdask.hazard.synthetic import (generate_panel, true_hazard, true_next_year_probability,
                                       true_theta_deg)

PERIOD = Period()
THETA = np.linspace(0.0, 90.0, 181)


def _panel(n, k1, k2, seed, shape="inverted_u"):
    return build_panel(generate_panel(n, PERIOD, seed, true_k1=k1, true_k2=k2, shape=shape),
                       PERIOD)


def _person_years(panel):
    f = panel.features
    return L.person_years(panel.grants, f.break_index, f.end_index, panel.event,
                          PERIOD.first_closure_year - PERIOD.start)


def _profile(panel, definition="T"):
    py = _person_years(panel)
    agg = L.aggregate(py.features, py.event)
    ll = L.profile_loglik(agg, np.stack([L.direction_coef(definition, t) for t in THETA]))
    rep = L.profile_report(THETA, ll,
                           lambda t: L.fit_at(agg, L.direction_coef(definition, t)).loglik,
                           py.size, int(py.event.sum()))
    return rep, agg, py


@pytest.fixture(scope="module")
def panel_63():
    """theta* = 63.4 deg (k2*/k1* = 2), 20,000 NPOs: the issue's calibration panel."""
    return _panel(20_000, 1.0, 2.0, seed=11)


def test_simulator_knows_its_truth_and_shapes():
    assert true_theta_deg(1.0, 2.0) == pytest.approx(63.43, abs=0.01)
    assert true_theta_deg(2.0, 1.0) == pytest.approx(26.57, abs=0.01)
    assert true_hazard([1.0, 9.0], "constant", 0.05).tolist() == [0.05, 0.05]
    assert true_hazard([2.5, 5.0], "linear", 0.1, 5.0).tolist() == [0.05, 0.1]
    assert true_hazard([5.0], "inverted_u", 0.07, 5.0)[0] == pytest.approx(0.07)
    with pytest.raises(ValueError, match="shape"):
        generate_panel(10, PERIOD, 1, shape="wavy")
    # a constant hazard: the closure rate per person-year is the constant
    py = _person_years(_panel(8000, 1.0, 1.0, seed=3, shape="constant"))
    rate = py.event.mean()
    assert abs(rate - 0.07) < 3 * math.sqrt(0.07 * 0.93 / py.size)


def test_person_years_end_at_the_panels_features(panel_63):
    """The last person-year of every NPO carries the features of spell_features (Appendix A),
    one closure per closed NPO, in its closure year; no year before first_closure_year."""
    py = _person_years(panel_63)
    last = np.r_[np.flatnonzero(np.diff(py.npo)), py.size - 1]
    assert np.array_equal(py.npo[last], np.arange(len(panel_63.npos)))
    np.testing.assert_array_equal(py.features[last], panel_63.features.matrix())
    assert py.event.sum() == panel_63.event.sum()
    assert np.array_equal(py.event[last] == 1, panel_63.event)
    assert py.year_index.min() >= PERIOD.first_closure_year - PERIOD.start
    # N0 counts the years of the window, inclusive, so consecutive rows of an NPO add 1
    same = np.diff(py.npo) == 0
    assert (np.diff(py.features[:, 0])[same] == 1).all()


@pytest.mark.filterwarnings("ignore:The inner solver")
@pytest.mark.parametrize("theta", [0.0, 63.4, 90.0])
def test_profile_value_equals_a_direct_glm_fit(panel_63, theta):
    """l(theta) from the aggregated Newton fit = scikit-learn's PoissonRegressor fitted on the
    raw person-year rows with the same spline design (an independent implementation)."""
    from sklearn.linear_model import PoissonRegressor

    rep, agg, py = _profile(panel_63)
    fit = L.fit_at(agg, L.direction_coef("T", theta))
    assert fit.converged
    T = py.features @ L.direction_coef("T", theta)
    B = L.spline_basis(T, fit.lo, fit.hi, fit.df)
    ref = PoissonRegressor(alpha=0.0, fit_intercept=False, solver="newton-cholesky",
                           tol=1e-12, max_iter=1000).fit(B, py.event)
    eta = B @ ref.coef_
    ll_ref = float(np.sum(py.event * eta - np.exp(eta)))
    assert fit.loglik == pytest.approx(ll_ref, rel=1e-9, abs=1e-6)
    assert fit.loglik >= ll_ref - 1e-6  # ours is at least as good a maximum
    # the profile's grid value is this very fit
    k = int(np.argmin(np.abs(THETA - theta)))
    if THETA[k] == theta:
        assert rep.grid_loglik[k] == fit.loglik
    # calibration in the large: fitted closures add up to the observed ones
    assert np.sum(agg.exposure * fit.rate(agg.features @ fit.coef)) == pytest.approx(
        agg.deaths.sum(), rel=1e-8)


def test_interval_covers_theta_star_and_excludes_zero_at_63(panel_63):
    rep, _, _ = _profile(panel_63)
    lo, hi = rep.ci95_deg
    assert lo <= true_theta_deg(1.0, 2.0) <= hi
    assert lo > 0.0 and hi < 90.0 and hi - lo < 35.0
    t0 = rep.lr_tests["theta = 0 (T0 = N0)"]
    assert t0["rejected_at_5pct"] and t0["lr_statistic"] > 10
    assert rep.lr_tests["theta = 90 (k1 = 0)"]["rejected_at_5pct"]
    assert rep.k2_over_k1 == pytest.approx(math.tan(math.radians(rep.theta_deg)))
    # the interval's ends are where the LR statistic crosses 3.84
    for end in (lo, hi):
        ll = L.fit_at(L.aggregate(_person_years(panel_63).features,
                                  _person_years(panel_63).event),
                      L.direction_coef("T", end)).loglik
        assert 2 * (rep.loglik_max - ll) == pytest.approx(L.CHI2_95, abs=1e-3)


def test_interval_covers_zero_when_theta_star_is_zero():
    rep, _, _ = _profile(_panel(20_000, 1.0, 0.0, seed=5))
    assert rep.ci95_deg[0] == 0.0
    assert not rep.lr_tests["theta = 0 (T0 = N0)"]["rejected_at_5pct"]


def test_closure_probabilities_are_calibrated_at_the_likelihood_direction(panel_63):
    """Issue item 4: at theta* = 63.4 deg and 20,000 NPOs the mean predicted next-year
    probability is within 10 % of the generator's, Spearman with the truth >= 0.8."""
    rep, agg, _ = _profile(panel_63)
    fit = L.fit_at(agg, L.direction_coef("T", rep.theta_deg))
    f = panel_63.features
    table, info = model_next_year_table(panel_63.npos, panel_63.grants, f.end_index,
                                        f.matrix(), panel_63.event, fit, {"source": "test"})
    truth = true_next_year_probability(panel_63, true_k1=1.0, true_k2=2.0)
    active_ids = panel_63.npos.npo_id.to_numpy()[~panel_63.event]
    pred = table.set_index("npo_id").loc[active_ids, "p_close_next_year"].to_numpy()
    assert abs(pred.mean() / truth.mean() - 1) < 0.10
    assert spearmanr(pred, truth)[0] >= 0.8
    assert info["mean_p_close_next_year"] == pytest.approx(pred.mean())
    truth_g = true_next_year_probability(panel_63, true_k1=1.0, true_k2=2.0, grant_next=1)
    pred_g = table.set_index("npo_id").loc[active_ids, "p_close_next_year_if_grant"]
    assert abs(pred_g.mean() / truth_g.mean() - 1) < 0.10
