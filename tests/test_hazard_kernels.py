"""Pure kernels of the hazard job against hand-worked values, lifelines and the seed's formulas.

No Dask here. Seed: 003_ae2b3031728223ec.txt (Appendix A for the time-at-risk, Section 2.1
eq. 4 for the kernel, Section 2.4 eqs. 6-8 for Dev).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, NelsonAalenFitter

from riskdask.hazard.estimators import (GridRule, breslow_increments, cumulative_hazard_at,
                                        deviation, gaussian_kernel, smooth_hazard)
from riskdask.hazard.gridsearch import (coefficient_matrix, compress, evaluate_points,
                                        make_grid_points, sample_weights)
from riskdask.hazard.split import (age_band, balance_table, balanced_split, balanced_splits,
                                   stratum_codes)
from riskdask.hazard.timeatrisk import spell_features, time_at_risk, y_weighted

_ = -1  # not alive that year
# 1997 .. 2007 (11 columns). Each case: history, end column (closure year or 2007), and the
# values worked out by hand with the inclusive convention N0 = y_e - y_b + 1.
CASES = {
    # leading no-grant years are not a break; first break 2001 -> N0 = 2007-2001+1 = 7
    "no-grant years before the first grant": (
        [0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1], 10,
        dict(y_b=2001, N0=7, N=[1, 0, 0], X=1, Z=0)),
    # break spell at the start of the window: 1998-2000, then funded to the end
    "spell at the start of the window": (
        [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], 10,
        dict(y_b=1998, N0=10, N=[1, 1, 1], X=3, Z=3)),
    # spell still running at the end of the period: 2005-2007
    "spell at the end of the period": (
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], 10,
        dict(y_b=2005, N0=3, N=[1, 1, 1], X=3, Z=3)),
    # alternating: five one-year spells 1998, 2000, 2002, 2004, 2006
    "alternating": (
        [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 10,
        dict(y_b=1998, N0=10, N=[5, 0, 0], X=5, Z=0)),
    # closes in 2000, its first no-grant year
    "closure in the break year": (
        [1, 1, 1, 0, _, _, _, _, _, _, _], 3,
        dict(y_b=2000, N0=1, N=[1, 0, 0], X=1, Z=0)),
    # never funded again after 1998: one spell of 9 years 1999-2007, Z = 0+1+...+8 = 36
    "never funded again": (
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 10,
        dict(y_b=1999, N0=9, N=[1, 1, 1, 1, 1, 1, 1, 1, 1], X=9, Z=36)),
    # never funded again and closed in 2002 (spell 2000-2002 includes the closure year)
    "never funded again, closed": (
        [1, 1, 1, 0, 0, 0, _, _, _, _, _], 5,
        dict(y_b=2000, N0=3, N=[1, 1, 1], X=3, Z=3)),
    # spells of 2 (1998-99), 1 (2001) and 3 (2004-06) years
    "mixed spells": (
        [1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1], 10,
        dict(y_b=1998, N0=10, N=[3, 2, 1], X=6, Z=4)),
    # founded 2003: first break 2005
    "founded during the period": (
        [_, _, _, _, _, _, 1, 1, 0, 1, 1], 10,
        dict(y_b=2005, N0=3, N=[1, 0, 0], X=1, Z=0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_spell_features_hand_worked(name):
    history, end, want = CASES[name]
    f = spell_features(np.array([history]), np.array([end]))
    assert f.at_risk[0]
    assert 1997 + f.break_index[0] == want["y_b"]
    assert f.N0[0] == want["N0"]
    n = want["N"]
    assert f.N[0, :len(n)].tolist() == n
    assert f.N[0, len(n):].sum() == 0
    assert f.X[0] == want["X"]
    assert f.Z[0] == want["Z"]


def test_not_at_risk_histories():
    never = [0] * 11
    always = [1] * 11
    closed_while_funded = [1, 1, 1, 1, _, _, _, _, _, _, _]
    f = spell_features(np.array([never, always, closed_while_funded]), np.array([10, 10, 3]))
    assert f.at_risk.tolist() == [False, False, False]
    assert f.N0.tolist() == [0, 0, 0]


def test_time_at_risk_definitions_mixed_spells():
    """'mixed spells': N0=10, N1=3, N2=2, N3=1, X=6 (all by hand above).

    Y(k0=0.5) = N1 + 1.5 N2 + 2 N3 = 3 + 3 + 2 = 8 (eq. 12).
    T0 = 10; T1(k1=0.5, k2=2, k0=0.5) = 0.5*10 + 2*8 = 21; T2 = 8; T3 = 6;
    seed eq. 5: T(k1=0.5, k2=2) = 0.5*10 + 2*3 = 11.
    """
    history, end, _want = CASES["mixed spells"]
    f = spell_features(np.array([history]), np.array([end]))
    assert y_weighted(f.N, 0.5)[0] == 8.0
    F = f.matrix()
    assert time_at_risk(F, "T0")[0] == 10.0
    assert time_at_risk(F, "T1", k1=0.5, k2=2.0, k0=0.5)[0] == 21.0
    assert time_at_risk(F, "T2", k0=0.5)[0] == 8.0
    assert time_at_risk(F, "T3")[0] == 6.0
    assert time_at_risk(F, "T", k1=0.5, k2=2.0)[0] == 11.0
    # Y(k0) = X + k0*Z for every k0 (so T1 is linear in the four features)
    for k0 in (0.0, 0.3, 1.0, 2.5):
        assert math.isclose(y_weighted(f.N, k0)[0], f.X[0] + k0 * f.Z[0], rel_tol=0, abs_tol=1e-12)


def _ties_and_censoring(seed=3, n=400):
    rng = np.random.default_rng(seed)
    n0 = rng.integers(1, 11, n)
    n1 = rng.integers(1, 5, n)
    event = rng.random(n) < 0.45
    # float sums that must tie: 0.1*n0 + 0.2*n1 reached by different orders of addition
    t_a = 0.1 * n0 + 0.2 * n1
    t_b = (0.2 * n1 + 0.1 * n0)
    return n0, n1, event, np.where(rng.random(n) < 0.5, t_a, t_b)


def test_breslow_matches_lifelines_nelson_aalen_with_ties_and_censoring():
    _, _, event, t = _ties_and_censoring()
    times, inc = breslow_increments(t, event)
    t_ref = np.round(t, 9)
    naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(t_ref, event)
    ref = naf.cumulative_hazard_
    ours = cumulative_hazard_at(times, inc, ref.index.to_numpy())
    np.testing.assert_allclose(ours, ref.iloc[:, 0].to_numpy(), rtol=0, atol=1e-10)
    assert len(times) < len(np.unique(t))  # the float sums really did need the rounding


def test_breslow_matches_covariate_free_coxph_baseline():
    _, _, event, t = _ties_and_censoring(seed=5)
    times, inc = breslow_increments(t, event)
    df = pd.DataFrame({"T": np.round(t, 9), "E": event})
    cph = CoxPHFitter().fit(df, "T", "E")
    base = cph.baseline_cumulative_hazard_
    ours = cumulative_hazard_at(times, inc, base.index.to_numpy())
    np.testing.assert_allclose(ours, base.iloc[:, 0].to_numpy(), rtol=0, atol=1e-10)


def test_breslow_with_risk_scores_matches_coxph_baseline_with_covariate():
    n0, n1, event, t = _ties_and_censoring(seed=7)
    x = (n1 % 2).astype(float)  # a binary covariate
    df = pd.DataFrame({"T": np.round(t, 9), "E": event, "x": x})
    cph = CoxPHFitter().fit(df, "T", "E")
    beta = cph.params_["x"]
    # lifelines' baseline is at the covariate means
    times, inc = breslow_increments(t, event, risk_score=np.exp((x - x.mean()) * beta))
    base = cph.baseline_cumulative_hazard_
    ours = cumulative_hazard_at(times, inc, base.index.to_numpy())
    np.testing.assert_allclose(ours, base.iloc[:, 0].to_numpy(), rtol=0, atol=1e-10)


def test_default_nelson_aalen_tie_correction_differs():
    """Why nelson_aalen_smoothing=False: 100 deaths among 1,000 at risk is 0.1000, not 0.1053."""
    t = np.ones(1000)
    e = np.arange(1000) < 100
    _, inc = breslow_increments(t, e)
    assert inc.tolist() == [0.1]
    default = NelsonAalenFitter().fit(t, e).cumulative_hazard_.iloc[-1, 0]
    assert abs(default - 0.1053) < 5e-4


def test_smoothing_equals_direct_kernel_formula():
    times = np.array([1.0, 2.5, 3.0, 7.25])
    dH = np.array([0.05, 0.2, 0.01, 0.3])
    b = 0.8
    grid = np.linspace(0, 8, 101)
    ours = smooth_hazard(grid, times, dH, b)
    direct = [sum((2 * math.pi) ** -0.5 * math.exp(-0.5 * ((g - ti) / b) ** 2) * d
                  for ti, d in zip(times, dH)) / b for g in grid]
    np.testing.assert_allclose(ours, direct, rtol=1e-13, atol=0)
    assert gaussian_kernel(0.0) == (2 * math.pi) ** -0.5


def test_dev_hand_computed():
    # H1 = 2 on the first 50 points and 0 on the other 51, H2 = 0: S = 50*4 = 200,
    # V = 100/101, Dev = sqrt(200/101) / (100/101) = 1.4212670403551895
    H1 = np.r_[np.full(50, 2.0), np.zeros(51)]
    H2 = np.zeros(101)
    assert deviation(H1, H2) == pytest.approx(1.4212670403551895, rel=1e-15)
    # constant offset of 0.1 on a curve of 1: Dev = 0.1; with the samples swapped the
    # standard curve is 1.1 and Dev = 0.1/1.1 (Dev is not symmetric)
    assert deviation(np.ones(101), np.full(101, 1.1)) == pytest.approx(0.1, rel=1e-13)
    assert deviation(np.full(101, 1.1), np.ones(101)) == pytest.approx(0.1 / 1.1, rel=1e-13)
    assert math.isnan(deviation(np.zeros(101), np.ones(101)))


def _strata(n=1000, seed=11):
    rng = np.random.default_rng(seed)
    field = rng.choice(["welfare", "culture", "health"], n)
    function = rng.choice(["services", "advocacy"], n, p=[0.7, 0.3])
    age = rng.integers(0, 60, n)
    return field, function, age_band(age, [0, 5, 15, 30])


def test_split_balanced_and_reproducible():
    field, function, band = _strata()
    strata = stratum_codes(field, function, band)
    s = balanced_splits(strata, seed=42, n_splits=3)
    again = balanced_splits(strata, seed=42, n_splits=3)
    other = balanced_splits(strata, seed=43, n_splits=1)
    assert np.array_equal(s, again)
    assert not np.array_equal(s[0], other[0])
    assert not np.array_equal(s[0], s[1])
    for row in s:
        assert set(np.unique(row)) == {1, 2}
        for c in np.unique(strata):
            m = strata == c
            assert abs(np.count_nonzero(row[m] == 1) - np.count_nonzero(row[m] == 2)) <= 1
        assert abs(np.count_nonzero(row == 1) - np.count_nonzero(row == 2)) <= 1
    # split r does not depend on how many splits are made
    assert np.array_equal(balanced_splits(strata, 42, 1)[0], s[0])
    table = balance_table(s[0], {"field": field, "function": function, "age_band": band},
                          event=np.zeros(field.size, dtype=bool))
    marg = table[table.variable.isin(["field", "function", "age_band"])]
    # marginal counts differ by at most the number of odd strata inside the level; here small
    assert (marg.abs_diff <= 3).all()
    assert table.loc[table.variable == "total", "abs_diff"].item() <= 1


def test_age_band_labels():
    assert age_band(np.array([0, 4, 5, 14, 15, 29, 30, 80]), [0, 5, 15, 30]).tolist() == [
        "0-4", "0-4", "5-14", "5-14", "15-29", "15-29", "30+", "30+"]


def _reference_dev(t, event, sample, rule):
    """Straightforward path: lifelines Nelson-Aalen per half-sample + direct numpy smoothing."""
    tr = np.round(t, 9)
    grid, bw = rule.grid_and_bandwidth(float(tr.max()))
    curves = []
    for s in (1, 2):
        m = sample == s
        naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(tr[m], event[m])
        H = naf.cumulative_hazard_.iloc[:, 0].to_numpy()
        dH = np.diff(np.r_[0.0, H])
        keep = dH > 0
        curves.append(smooth_hazard(grid, naf.cumulative_hazard_.index.to_numpy()[keep], dH[keep],
                                    bw))
    return deviation(curves[0], curves[1])


def test_grid_kernel_equals_lifelines_per_point_path():
    n0, n1, event, _ = _ties_and_censoring(seed=9, n=600)
    F = np.column_stack([n0, n1, n0 + n1, n1]).astype(float)
    split = balanced_split(np.zeros(n0.size, int), np.random.default_rng(1))
    table = compress(F, event)
    W, D = sample_weights(table, split[None, :])
    pts = make_grid_points([0.1, 0.7, 1.3], [0.2, 0.9])
    rule = GridRule()
    ours = evaluate_points(table.features, W, D, coefficient_matrix("T", pts), rule)[:, 0]
    ref = [_reference_dev(time_at_risk(F, "T", k1, k2), event, split, rule)
           for k1, k2 in zip(pts.k1, pts.k2)]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=0)


def test_relative_mode_scale_invariance_and_absolute_mode_not():
    n0, n1, event, _ = _ties_and_censoring(seed=13, n=800)
    F = np.column_stack([n0, n1, n0 + n1, n1]).astype(float)
    split = balanced_split(np.zeros(n0.size, int), np.random.default_rng(2))
    table = compress(F, event)
    W, D = sample_weights(table, split[None, :])
    pts = make_grid_points([0.3, 0.6, 1.2, 2.4], [0.5, 1.0, 2.0, 4.0])
    dev = evaluate_points(table.features, W, D, coefficient_matrix("T", pts), GridRule())[:, 0]
    dev = dev.reshape(4, 4)
    # Dev(c k1, c k2) = Dev(k1, k2): the diagonals (same k2/k1) agree
    for c in range(1, 4):
        np.testing.assert_allclose(np.diag(dev, 0)[c], np.diag(dev, 0)[0], rtol=1e-9)
        np.testing.assert_allclose(dev[c, c - 1], dev[1, 0], rtol=1e-9)
    absolute = GridRule(mode="absolute", bandwidth=1.0, grid_min=0.0, grid_max=10.0)
    dev_abs = evaluate_points(table.features, W, D, coefficient_matrix("T", pts), absolute)[:, 0]
    dev_abs = dev_abs.reshape(4, 4)
    assert abs(dev_abs[2, 2] - dev_abs[0, 0]) > 1e-3


def test_direction_search_equals_grid_on_the_same_ray():
    from riskdask.hazard.gridsearch import direction_points

    n0, n1, event, _ = _ties_and_censoring(seed=17, n=700)
    F = np.column_stack([n0, n1, n0 + n1, n1]).astype(float)
    split = balanced_split(np.zeros(n0.size, int), np.random.default_rng(4))
    table = compress(F, event)
    W, D = sample_weights(table, split[None, :])
    rule = GridRule()
    grid = make_grid_points([1.0, 2.0], [1.0, 1.0])  # directions 45 deg and atan(1/2)
    theta = direction_points(np.array([np.pi / 4, np.arctan2(1.0, 2.0)]))
    a = evaluate_points(table.features, W, D, coefficient_matrix("T", grid), rule)[:, 0]
    b = evaluate_points(table.features, W, D, coefficient_matrix("T", theta), rule)[:, 0]
    np.testing.assert_allclose(b, [a[0], a[2]], rtol=1e-9)


def test_extend_one_year_hand_worked():
    from riskdask.hazard.timeatrisk import extend_one_year

    # 'mixed spells' ends with a grant in 2007: a no-grant 2008 opens a 4th spell
    hist = np.array([CASES["mixed spells"][0], CASES["spell at the end of the period"][0]])
    end = np.array([10, 10])
    no = extend_one_year(hist, end, 0)
    yes = extend_one_year(hist, end, 1)
    assert no.N0.tolist() == [11, 4] and yes.N0.tolist() == [11, 4]
    assert no.N1.tolist() == [4, 1] and yes.N1.tolist() == [3, 1]
    assert no.X.tolist() == [7, 4] and yes.X.tolist() == [6, 3]
    # the running 3-year spell of the second history becomes 4 years: Z = 0+1+2+3 = 6
    assert no.Z.tolist() == [4, 6] and yes.Z.tolist() == [4, 3]


def test_next_year_probability_matches_lifelines_survival():
    from riskdask.hazard.gridsearch import next_year_probability

    _, _, event, t = _ties_and_censoring(seed=21)
    times, inc = breslow_increments(t, event)
    naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(np.round(t, 9), event)
    t_now = np.array([0.3, 0.7, 1.1, 1.6])
    t_next = t_now + 0.4
    H = lambda x: naf.cumulative_hazard_at_times(x).to_numpy()  # noqa: E731
    want = 1.0 - np.exp(-H(t_next)) / np.exp(-H(t_now))
    np.testing.assert_allclose(next_year_probability(times, inc, t_now, t_next), want,
                               rtol=1e-12, atol=1e-14)


def test_bootstrap_kernel_reproducible_and_resamples_n():
    from riskdask.engine import plan_chunks
    from riskdask.hazard.gridsearch import bootstrap_curves

    n0, n1, event, _ = _ties_and_censoring(seed=23, n=300)
    F = np.column_stack([n0, n1, n0 + n1, n1]).astype(float)
    table = compress(F, event)
    coef = np.array([1.0, 0.5, 0.0, 0.0])
    shared = {"table": table, "coef": coef, "rule": GridRule(), "scale": float((F @ coef).max())}
    chunks = plan_chunks(6, 3, seed=5)
    a = bootstrap_curves(chunks[1], shared)
    b = bootstrap_curves(chunks[1], shared)
    c = bootstrap_curves(chunks[0], shared)
    assert a.shape == (3, 101) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_cox_baseline_with_covariates_equals_breslow_with_risk_scores():
    from riskdask.hazard.covariates import cox_baseline, design_matrix
    from riskdask.hazard.panel import Period, build_panel
    from riskdask.hazard.synthetic import generate_panel
    from riskdask.hazard.timeatrisk import time_at_risk

    panel = build_panel(generate_panel(400, Period(), seed=3), Period())
    X = design_matrix(panel.npos, ["function", "age"])
    assert list(X.columns) == ["function_funding", "function_services", "function_umbrella", "age"]
    t = time_at_risk(panel.features.matrix(), "T", 0.7, 0.4)
    times, inc, params, _ = cox_baseline(t, panel.event, X)
    beta = params.set_index("covariate").coef.reindex(X.columns).to_numpy()
    Xc = X.to_numpy() - X.to_numpy().mean(axis=0)
    ref_times, ref_inc = breslow_increments(t, panel.event, risk_score=np.exp(Xc @ beta))
    np.testing.assert_array_equal(times, ref_times)
    np.testing.assert_allclose(np.cumsum(inc), np.cumsum(ref_inc), rtol=0, atol=1e-10)


def test_sample_one_names_the_standard_curve():
    n0, n1, event, _ = _ties_and_censoring(seed=29, n=500)
    F = np.column_stack([n0, n1, n0 + n1, n1]).astype(float)
    split = balanced_split(np.zeros(n0.size, int), np.random.default_rng(6))
    table = compress(F, event)
    pts = make_grid_points([0.8], [0.3])
    C = coefficient_matrix("T", pts)
    rule = GridRule()
    W1, D1 = sample_weights(table, split[None, :], sample_one=1)
    W2, D2 = sample_weights(table, split[None, :], sample_one=2)
    d1 = evaluate_points(table.features, W1, D1, C, rule)[0, 0]
    d2 = evaluate_points(table.features, W2, D2, C, rule)[0, 0]
    t = time_at_risk(F, "T", 0.8, 0.3)
    grid, bw = rule.grid_and_bandwidth(float(np.round(t, 9).max()))
    h = [smooth_hazard(grid, *breslow_increments(t[split == s], event[split == s]), bw)
         for s in (1, 2)]
    assert d1 == pytest.approx(deviation(h[0], h[1]), rel=1e-10)
    assert d2 == pytest.approx(deviation(h[1], h[0]), rel=1e-10)
    assert abs(d1 - d2) > 1e-6
