"""Issue 14: real panel shapes, unusable splits, closure probabilities past the data, the optimum
with its uncertainty, and smoothing beyond lifelines (boundary correction, CV bandwidth).

Pure domain functions, no Dask. References: lifelines (NelsonAalenFitter), scipy quadrature,
closed forms, direct numpy recomputation. Seed: 003_ae2b3031728223ec.txt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import NelsonAalenFitter
from scipy.integrate import quad

from riskdask.errors import InputError
from riskdask.hazard.estimators import breslow_increments, smooth_hazard
from riskdask.hazard.panel import (PanelRules, Period, build_panel, exclusion_sentence)
from riskdask.hazard.synthetic import generate_panel
from riskdask.hazard.timeatrisk import coefficients, extend_one_year

PERIOD = Period()


@pytest.fixture(scope="module")
def frame():
    return generate_panel(150, PERIOD, seed=5)


@pytest.fixture(scope="module")
def big_panel():
    return build_panel(generate_panel(2660, PERIOD, seed=2018), PERIOD)


# -- panel rules (item 4) and plain messages (item 7) -------------------------------------------
def _one_npo(years, grants, closed=None, npo="EXTRA", founded=1980):
    return pd.DataFrame({"npo_id": npo, "year": years, "grant": grants, "field": "culture",
                         "function": "services", "founded_year": founded,
                         "closed_year": pd.array([closed] * len(years), dtype="Int64")})


def test_rows_outside_the_period_ignored_and_counted_or_an_error(frame):
    extra = _one_npo(list(range(1993, 2010)), [1] * 5 + [1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    data = pd.concat([frame, extra], ignore_index=True)
    got = build_panel(data, PERIOD)
    outside = (data.year < 1997) | (data.year > 2007)
    assert got.rule_counts["rows_outside_period"] == int(outside.sum()) == 6
    assert got.rule_ids["rows_outside_period"] == (np.flatnonzero(outside) + 1).tolist()
    # the same result as a panel cut to the period by hand
    ref = build_panel(data[~outside], PERIOD)
    pd.testing.assert_frame_equal(got.npos, ref.npos)
    row = got.npos.set_index("npo_id").loc["EXTRA"]
    assert row.first_break_year == 1999 and row.N0 == 9 and row.N1 == 1 and row.X == 2
    with pytest.raises(InputError) as err:
        build_panel(data, PERIOD, rules=PanelRules(rows_outside_period="error"))
    first = int(np.flatnonzero(outside)[0]) + 1
    assert f"row {first}" in str(err.value) and "outside the study period" in str(err.value)
    assert "data.rules.rows_outside_period" in str(err.value)


def test_closure_after_the_period_censored_at_its_end_or_an_error(frame):
    extra = _one_npo(list(range(1997, 2008)), [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], closed=2009)
    data = pd.concat([frame, extra], ignore_index=True)
    got = build_panel(data, PERIOD)
    assert got.rule_counts["closure_after_period"] == 1
    assert got.rule_ids["closure_after_period"] == ["EXTRA"]
    row = got.npos.set_index("npo_id").loc["EXTRA"]
    assert not row.closed and pd.isna(row.closed_year) and row.end_year == 2007
    # equal to the NPO written as active
    active = build_panel(pd.concat([frame, _one_npo(list(range(1997, 2008)),
                                                     [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])],
                                   ignore_index=True), PERIOD)
    pd.testing.assert_frame_equal(got.npos, active.npos)
    with pytest.raises(InputError) as err:
        build_panel(data, PERIOD, rules=PanelRules(closure_after_period="error"))
    assert f"row {len(frame) + 1}" in str(err.value) and "column 'closed_year'" in str(err.value)
    assert "after the study period" in str(err.value)


def test_missing_closure_year_row_read_as_no_grant_or_an_error(frame):
    # closed in 2003, rows only to 2002 (grant in 2002): 2003 becomes a no-grant year
    extra = _one_npo(list(range(1997, 2003)), [1, 1, 0, 1, 1, 1], closed=2003)
    data = pd.concat([frame, extra], ignore_index=True)
    got = build_panel(data, PERIOD)
    assert got.rule_counts["missing_closure_year_row"] == 1
    full = pd.concat([frame, _one_npo(list(range(1997, 2004)), [1, 1, 0, 1, 1, 1, 0], closed=2003)],
                     ignore_index=True)
    ref = build_panel(full, PERIOD)
    pd.testing.assert_frame_equal(got.npos, ref.npos)
    row = got.npos.set_index("npo_id").loc["EXTRA"]
    assert row.closed and row.N0 == 2003 - 1999 + 1 and row.N1 == 2 and row.X == 2
    with pytest.raises(InputError) as err:
        build_panel(data, PERIOD, rules=PanelRules(missing_closure_year_row="error"))
    assert "no row for 2003" in str(err.value) and "missing_closure_year_row" in str(err.value)
    # a gap that is not the closure year stays an error under the default rules
    gap = pd.concat([frame, _one_npo([1997, 1998, 2000, 2001, 2002, 2003], [1, 0, 1, 1, 1, 0],
                                     closed=2003)], ignore_index=True)
    with pytest.raises(InputError, match="no row for 1999"):
        build_panel(gap, PERIOD)


def test_rule_values_are_checked():
    with pytest.raises(ValueError, match="rows_outside_period"):
        PanelRules(rows_outside_period="drop")


def test_messages_print_plain_numbers(frame):
    bad = frame.copy()
    bad["grant"] = bad["grant"].astype(object)
    bad.loc[3, "grant"] = np.int64(2)
    with pytest.raises(InputError) as err:
        build_panel(bad, PERIOD)
    assert "got 2" in str(err.value) and "np." not in str(err.value)
    bad = frame.copy()
    bad["founded_year"] = bad["founded_year"].astype(float)
    bad.loc[4, "founded_year"] = np.nan
    with pytest.raises(InputError) as err:
        build_panel(bad, PERIOD)
    msg = str(err.value)
    assert "empty cell" in msg and "np." not in msg and "row 5" in msg


def test_rows_after_ignored_ones_keep_their_file_row_numbers(frame):
    # two rows outside the period first; the bad cell's row number is still its row in the file
    extra = _one_npo([1990, 1991], [1, 1], npo="OLD")
    data = pd.concat([extra, frame], ignore_index=True)
    data["grant"] = data["grant"].astype(object)
    data.loc[9, "grant"] = "yes"
    with pytest.raises(InputError) as err:
        build_panel(data, PERIOD)
    assert "row 10" in str(err.value) and "column 'grant'" in str(err.value)
    data = pd.concat([extra, frame], ignore_index=True)
    data["founded_year"] = data["founded_year"].astype(object)
    data.loc[6, "founded_year"] = "19x0"
    with pytest.raises(InputError) as err:
        build_panel(data, PERIOD)
    assert "row 7" in str(err.value) and "column 'founded_year'" in str(err.value)


def test_exclusion_sentences_read_correctly():
    text = exclusion_sentence("closed before closures are counted", Period(1997, 2007, 1998))
    assert text == ("NPOs (one row here = one NPO) that closed before 1998, the first year in "
                    "which closures are counted")
    assert "with closed" not in text
    for reason in ("no grant in any year", "no break in grants (never at risk)"):
        assert exclusion_sentence(reason, PERIOD).startswith("NPOs (one row here = one NPO) with ")


# -- split evaluability (item 1) ----------------------------------------------------------------
def _two_closures(n=40):
    event = np.zeros(n, dtype=bool)
    event[[3, 17]] = True
    return np.zeros(n, dtype=int), event


def test_unusable_splits_are_redrawn_and_counted():
    from riskdask.hazard.split import balanced_splits, split_counts, usable_splits

    strata, event = _two_closures()
    # the first draws are the historical balanced_splits streams: count their unusable ones directly
    first = split_counts(balanced_splits(strata, 11, 12), event)
    bad = ((first.closures_sample1 == 0) | (first.closures_sample2 == 0)).to_numpy()
    assert 0 < bad.sum() < 12  # the case this test is about occurs
    got = usable_splits(strata, event, 11, 12, policy="redraw")
    assert got.n_usable == 12 and got.n_excluded == 0 and got.n_redrawn == int(bad.sum())
    assert got.index.tolist() == list(range(12))
    c = split_counts(got.splits, event)
    assert (c.closures_sample1 > 0).all() and (c.closures_sample2 > 0).all()
    assert sum(got.reasons.values()) == int((~got.counts.usable).sum())
    # deterministic: same config, same splits
    again = usable_splits(strata, event, 11, 12, policy="redraw")
    assert np.array_equal(again.splits, got.splits)


def test_unusable_splits_excluded_and_counted_min_usable_enforced():
    from riskdask.hazard.split import balanced_splits, split_counts, usable_splits

    strata, event = _two_closures()
    first = split_counts(balanced_splits(strata, 11, 12), event)
    bad = ((first.closures_sample1 == 0) | (first.closures_sample2 == 0)).to_numpy()
    got = usable_splits(strata, event, 11, 12, policy="exclude")
    assert got.n_excluded == int(bad.sum()) and got.n_usable == 12 - int(bad.sum())
    assert got.index.tolist() == np.flatnonzero(~bad).tolist()
    assert np.array_equal(got.splits, balanced_splits(strata, 11, 12)[~bad])
    with pytest.raises(InputError) as err:
        usable_splits(strata, event, 11, 12, policy="exclude", min_usable=12, source="p.csv")
    msg = str(err.value)
    assert f"only {12 - int(bad.sum())} of 12" in msg
    assert "split.min_usable" in msg and "p.csv" in msg


def test_a_single_split_without_closures_in_sample_one_is_exit_2():
    from riskdask.hazard.split import balanced_splits, split_counts, usable_splits

    strata, event = _two_closures()
    seeds = [s for s in range(40) if split_counts(balanced_splits(strata, s, 1), event)
             .closures_sample1.iloc[0] == 0]
    assert seeds
    with pytest.raises(InputError) as err:
        usable_splits(strata, event, seeds[0], 1, policy="exclude")
    assert "only 0 of 1" in str(err.value) and "sample 1 has no closure" in str(err.value)


@pytest.mark.parametrize("n,closed", [(1, 1), (1, 0), (2, 1), (30, 0)])
def test_empty_sample_or_one_npo_at_risk_is_refused_with_counts(n, closed):
    from riskdask.hazard.split import usable_splits

    event = np.zeros(n, dtype=bool)
    event[:closed] = True
    with pytest.raises(InputError) as err:
        usable_splits(np.zeros(n, int), event, 1, 1)
    assert f"{n} NPO(s) at risk with {closed} closure(s)" in str(err.value)


# -- closure probabilities past the data (item 2) -------------------------------------------------
@pytest.mark.parametrize("definition,k", [("T", (1.0, 1.0)), ("T", (1.0, 0.1)), ("T0", (1, 1))])
def test_no_exact_zero_probability_and_flag_equals_beyond_last_failure(big_panel, definition, k):
    from riskdask.hazard.predict import closure_probability

    coef = coefficients(definition, *k)
    F = big_panel.features.matrix()
    t = np.round(F @ coef, 9)
    active = ~big_panel.event
    t_next = extend_one_year(big_panel.grants[active], big_panel.features.end_index[active],
                             0).matrix() @ coef
    times, inc = breslow_increments(t, big_panel.event)
    p, beyond = closure_probability(times, inc, t[active], t_next, 0.1 * t.max())
    assert (p > 0).all() and (p < 1).all()
    # independent: lifelines' last observed event time
    naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(t, big_panel.event)
    table = naf.event_table
    last = table.index[table.observed > 0].max()
    assert np.array_equal(beyond, t_next > last)
    assert beyond.any()  # the longest at risk exist here (they got an exact 0 before)
    # those are exactly the NPOs the Breslow step function gives 0
    H = naf.cumulative_hazard_at_times
    step = 1 - np.exp(-(H(t_next).to_numpy() - H(t[active]).to_numpy()))
    assert (step[beyond & (t[active] >= last)] == 0).all()


def test_integrated_hazard_matches_quadrature_and_carries_the_last_hazard_forward():
    from riskdask.hazard.predict import integrated_hazard

    rng = np.random.default_rng(4)
    t = rng.integers(1, 9, 300).astype(float)
    e = rng.random(300) < 0.4
    times, inc = breslow_increments(t, e)
    b = 0.9
    for boundary in ("none", "reflect"):
        h = lambda u: smooth_hazard([u], times, inc, b, boundary)[0]  # noqa: E731
        for x in (0.4, 2.5, times.max()):
            assert integrated_hazard(x, times, inc, b, boundary) == pytest.approx(
                quad(h, 0, x)[0], rel=1e-9)
        far = times.max() + 3.0
        want = quad(h, 0, times.max())[0] + 3.0 * h(times.max())
        assert integrated_hazard(far, times, inc, b, boundary) == pytest.approx(want, rel=1e-9)


def test_probability_zero_only_when_the_data_have_no_closure():
    from riskdask.hazard.predict import closure_probability

    p, beyond = closure_probability(np.array([]), np.array([]), [1.0, 2.0], [2.0, 3.0], 0.5)
    assert (p == 0).all() and beyond.all()


def test_if_grant_probability_defined_per_definition(big_panel):
    from riskdask.hazard.predict import closure_probability, if_grant_status

    for d in ("T2", "T3"):
        ok, why = if_grant_status(coefficients(d))
        assert not ok and "adds nothing to T" in why
        # why: a granted year leaves T unchanged under these definitions (checked on the panel)
        act = ~big_panel.event
        G, end = big_panel.grants[act], big_panel.features.end_index[act]
        c = coefficients(d)
        assert np.array_equal(extend_one_year(G, end, 1).matrix() @ c,
                              big_panel.features.matrix()[act] @ c)
    assert not if_grant_status(coefficients("T", 0.0, 1.0))[0]
    assert if_grant_status(coefficients("T", 0.5, 1.0))[0]
    # T0: a year with or without a grant both add 1 to N0: equal probabilities
    c = coefficients("T0")
    act = ~big_panel.event
    G, end = big_panel.grants[act], big_panel.features.end_index[act]
    t = big_panel.features.matrix() @ c
    times, inc = breslow_increments(t, big_panel.event)
    p0, _ = closure_probability(times, inc, t[act], extend_one_year(G, end, 0).matrix() @ c, 1.0)
    p1, _ = closure_probability(times, inc, t[act], extend_one_year(G, end, 1).matrix() @ c, 1.0)
    assert if_grant_status(c)[0] and np.array_equal(p0, p1)


# -- optimum with its uncertainty (items 3, 5) ---------------------------------------------------
@pytest.fixture(scope="module")
def split_setup():
    from riskdask.hazard.gridsearch import compress, sample_weights
    from riskdask.hazard.split import balanced_splits

    panel = build_panel(generate_panel(800, PERIOD, seed=9), PERIOD)
    splits = balanced_splits(np.zeros(len(panel.npos), int), 3, 5)
    table = compress(panel.features.matrix(), panel.event)
    W, D = sample_weights(table, splits)
    return table, W, D


def _dev(setup, points, rule=None):
    from riskdask.hazard.estimators import GridRule
    from riskdask.hazard.gridsearch import coefficient_matrix, evaluate_points

    table, W, D = setup
    return evaluate_points(table.features, W, D, coefficient_matrix("T", points),
                           rule or GridRule())


def test_grid_and_direction_modes_report_the_same_optimum(split_setup):
    from riskdask.hazard.gridsearch import direction_points, make_grid_points
    from riskdask.hazard.uncertainty import optimum_report, reference_points, theta_deg

    vals = [0.25, 0.5, 1.0, 1.5, 2.0]
    grid = make_grid_points(vals, [0.0] + vals)   # contains the axis k2 = 0 too
    th = np.unique(np.round(theta_deg(grid.k1, grid.k2), 12))
    dirs = direction_points(np.radians(np.concatenate([th, [90.0]])))
    ref = reference_points([0.0])
    ref_dev = _dev(split_setup, ref)
    a = optimum_report(grid, _dev(split_setup, grid), ref, ref_dev)
    b = optimum_report(dirs, _dev(split_setup, dirs), ref, ref_dev)
    assert a.interior.theta_deg == pytest.approx(b.interior.theta_deg, abs=1e-9)
    assert a.interior.dev_mean == pytest.approx(b.interior.dev_mean, rel=1e-9)
    assert 0 < a.interior.theta_deg < 90
    np.testing.assert_allclose(a.per_split.theta_deg, b.per_split.theta_deg, atol=1e-9)
    for axis in ("k2 = 0 (theta = 0)", "k1 = 0 (theta = 90)"):
        assert a.axes[axis].dev_mean == pytest.approx(b.axes[axis].dev_mean, rel=1e-9)
    assert a.headline == b.headline
    assert (a.comparison.win_fraction_held_out.tolist()
            == b.comparison.win_fraction_held_out.tolist())


def test_optimum_report_against_direct_numpy(split_setup):
    from riskdask.hazard.gridsearch import direction_points
    from riskdask.hazard.uncertainty import REFERENCE_DIRECTIONS, optimum_report, reference_points

    th = np.arange(0.0, 90.1, 2.5)
    pts = direction_points(np.radians(th))
    dev = _dev(split_setup, pts)
    ref = reference_points([0.0])
    ref_dev = _dev(split_setup, ref)
    rep = optimum_report(pts, dev, ref, ref_dev, level=0.9)
    inner = (th > 0) & (th < 90)
    mean = dev.mean(axis=1)
    i = np.flatnonzero(inner)[np.argmin(mean[inner])]
    assert rep.interior.theta_deg == pytest.approx(th[i])
    assert rep.axes["k2 = 0 (theta = 0)"].dev_mean == pytest.approx(mean[0])
    per = th[np.flatnonzero(inner)[np.argmin(dev[inner], axis=0)]]
    np.testing.assert_allclose(rep.per_split.theta_deg, per)
    lo, hi = np.quantile(per, [0.05, 0.95])
    assert rep.theta_interval.lo == pytest.approx(lo) and rep.theta_interval.hi == pytest.approx(hi)
    # Dev(theta) curve: mean and sd over splits at every direction (the reference rays merged in)
    curve = rep.curve.set_index("theta_deg")
    np.testing.assert_allclose(curve.loc[th, "dev_mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(curve.loc[th, "dev_sd"], dev.std(axis=1, ddof=1), rtol=1e-6)
    # paired comparison with k1 = k2 (theta = 45), in-sample and held out
    comp = rep.comparison.set_index("fixed_choice")
    name = "seed k1 = k2 (theta = 45)"
    j = list(REFERENCE_DIRECTIONS).index(name)
    diff = dev[i] - ref_dev[j]
    tie = 1e-9 * np.abs(ref_dev[j])
    assert comp.loc[name, "win_fraction_in_sample"] == pytest.approx(np.mean(diff < -tie))
    held = []
    for r in range(dev.shape[1]):
        m = np.delete(dev, r, axis=1).mean(axis=1)
        k = np.flatnonzero(inner)[np.argmin(m[inner])]
        held.append(dev[k, r] - ref_dev[j, r])
    assert comp.loc[name, "win_fraction_held_out"] == pytest.approx(np.mean(np.array(held) < -tie))
    assert isinstance(rep.identified, bool) and rep.statement


def test_round_to_interval_and_identification_rule():
    from riskdask.hazard.uncertainty import identification, round_to_interval

    assert round_to_interval(6.1, 1.4, 71.6) == (10.0, 0)
    assert round_to_interval(6.1234, 5.9, 6.3) == pytest.approx((6.1, 1))
    assert round_to_interval(6.1234, 6.1, 6.1, floor_step=0.5) == (6.1, 1)
    assert round_to_interval(6.1234, 6.1, 6.1, floor_step=2.0) == (6.0, 0)
    ok, why = identification(70.2, 90.0, {"a": 0.9}, 20)
    assert not ok and "do not identify" in why and "70" in why
    ok, why = identification(5.0, 90.0, {"a": 0.4, "b": 0.9}, 20)
    assert not ok and "a (40% of splits)" in why
    assert identification(5.0, 90.0, {"a": 0.8}, 20)[0]
    assert not identification(5.0, 90.0, {"a": 0.8}, 2)[0]


def test_fixed_definitions_report_their_coefficients_not_an_optimum():
    from riskdask.hazard.uncertainty import fixed_report

    rep = fixed_report("T3", coefficients("T3"), np.array([0.2, 0.3, 0.25]))
    assert rep.searched is False and rep.weights == {"N0": 0.0, "N1": 0.0, "X": 1.0, "Z": 0.0}
    assert rep.dev_mean == pytest.approx(0.25) and rep.dev_sd == pytest.approx(0.05)
    assert "nothing was searched" in rep.statement


# -- smoothing beyond lifelines (item 6) ----------------------------------------------------------
def test_reflection_corrects_the_boundary_bias_at_zero():
    lam = 0.5
    rng = np.random.default_rng(12)
    t = rng.exponential(1 / lam, 5000)
    c = rng.uniform(0, 6, 5000)
    e = t <= c
    times, inc = breslow_increments(np.minimum(t, c), e)
    b = 0.3
    near = np.array([0.0, 0.05, 0.1])
    plain = smooth_hazard(near, times, inc, b)
    fixed = smooth_hazard(near, times, inc, b, "reflect")
    assert np.all(np.abs(fixed / lam - 1) < 0.10)
    assert 0.4 < plain[0] / lam < 0.6  # about half at T = 0
    # away from the boundary both agree (the mirror terms vanish)
    far = np.array([3.0])
    assert smooth_hazard(far, times, inc, b, "reflect")[0] == pytest.approx(
        smooth_hazard(far, times, inc, b)[0], rel=1e-12)


def test_cv_bandwidth_within_factor_two_of_the_ise_optimum():
    from riskdask.hazard.bandwidth import cv_bandwidth

    def h_true(t):
        return 0.3 + 1.2 * np.exp(-(t - 1.5) ** 2 / (2 * 0.4 ** 2))

    g = np.linspace(0, 8, 8001)
    Hg = np.concatenate([[0], np.cumsum((h_true(g[1:]) + h_true(g[:-1])) / 2 * np.diff(g))])
    rng = np.random.default_rng(3)
    n = 2000
    T = np.interp(rng.exponential(size=n), Hg, g)  # inverse cumulative hazard
    C = rng.uniform(0, 4, n)
    times, inc = breslow_increments(np.minimum(T, C), T <= C)
    scale, tau = 3.0, 3.0
    fr = np.geomspace(0.01, 0.5, 18)
    got = cv_bandwidth(times, inc, scale, tau, "reflect", fractions=fr)
    grid = np.linspace(0, tau, 512)
    ise = [np.trapezoid((smooth_hazard(grid, times, inc, f * scale, "reflect")
                         - h_true(grid)) ** 2, grid)
           for f in fr]
    b_ise = fr[int(np.argmin(ise))] * scale
    assert not got["at_edge"]
    assert 0.5 <= got["bandwidth"] / b_ise <= 2.0


def test_cv_does_not_collapse_on_lattice_times(big_panel):
    from riskdask.hazard.bandwidth import cv_bandwidth

    t = big_panel.features.matrix() @ coefficients("T", 1.0, 1.0)
    times, inc = breslow_increments(t, big_panel.event)
    got = cv_bandwidth(times, inc, float(t.max()))
    assert got["fraction"] > 0.02 and np.isfinite(got["candidates"].cv).all()


def test_bandwidth_sensitivity_table(split_setup):
    from riskdask.hazard.bandwidth import bandwidth_sensitivity
    from riskdask.hazard.estimators import GridRule
    from riskdask.hazard.gridsearch import coefficient_matrix, direction_points

    table, W, D = split_setup
    th = np.arange(2.0, 90.0, 4.0)
    pts = direction_points(np.radians(th))
    out = bandwidth_sensitivity(table.features, W, D, coefficient_matrix("T", pts), th, GridRule())
    assert out.bandwidth_fraction.tolist() == [0.05, 0.1, 0.2]
    dev = _dev(split_setup, pts, GridRule(bandwidth_fraction=0.2))
    assert out.theta_deg.iloc[2] == th[np.argmin(dev.mean(axis=1))]
    assert (out.theta_lo <= out.theta_hi).all()


def test_next_year_table_ranks_with_flags(big_panel):
    from riskdask.hazard.predict import closure_probability, next_year_table

    coef = coefficients("T", 1.0, 0.5)
    F = big_panel.features.matrix()
    t = F @ coef
    times, inc = breslow_increments(t, big_panel.event)
    table, info = next_year_table(big_panel.npos, big_panel.grants, big_panel.features.end_index, F,
                                  big_panel.event, coef, times, inc, 0.1 * t.max())
    assert len(table) == int((~big_panel.event).sum()) == info["n_active"]
    assert info["n_beyond_data"] == int(table.beyond_data.sum()) > 0
    assert table.p_close_next_year.is_monotonic_decreasing and (table.p_close_next_year > 0).all()
    assert table.p_close_next_year_if_grant.notna().all() and info["if_grant_defined"]
    row = table.iloc[7]
    p, _ = closure_probability(times, inc, [row.time_at_risk], [row.time_at_risk_next],
                               0.1 * t.max())
    assert row.p_close_next_year == p[0]
    t3, info3 = next_year_table(big_panel.npos, big_panel.grants, big_panel.features.end_index, F,
                                big_panel.event, coefficients("T3"), *breslow_increments(
                                    F @ coefficients("T3"), big_panel.event), 1.0)
    assert t3.p_close_next_year_if_grant.isna().all() and not info3["if_grant_defined"]
    assert "adds nothing" in info3["if_grant_note"]


def test_report_section_and_summary_are_complete_and_plain(split_setup):
    import json

    from riskdask.hazard import reporting
    from riskdask.hazard.outputs import optimum_summary
    from riskdask.hazard.gridsearch import direction_points
    from riskdask.hazard.uncertainty import REFERENCE_DIRECTIONS, optimum_report, reference_points

    th = np.arange(0.0, 90.1, 5.0)
    pts = direction_points(np.radians(th))
    ref = reference_points([0.0])
    rep = optimum_report(pts, _dev(split_setup, pts), ref, _dev(split_setup, ref))
    text = reporting.optimum_html(rep)
    assert rep.headline.text.split(";")[0] in text and "Paired comparison" in text
    for name in REFERENCE_DIRECTIONS:
        assert name in text
    summ = optimum_summary(rep)
    dumped = json.dumps(summ)  # plain values only (json refuses numpy scalars)
    assert "np." not in dumped and summ["interior"]["theta_deg"] == rep.interior.theta_deg
    one = optimum_report(pts, _dev(split_setup, pts)[:, :1], ref, _dev(split_setup, ref)[:, :1])
    assert "one split: no spread" in reporting.optimum_html(one) and not one.identified
