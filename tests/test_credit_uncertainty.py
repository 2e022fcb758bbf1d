"""Monte Carlo errors of VaR / ES (riskdask.credit.uncertainty) against the spread of the
estimates over independent seeds; discrete portfolios (one bond, two bonds, identical
names) with and without importance sampling; the variance-reduction factor; ES
contributions of the importance-sampling run's own tail (second pass); bad and degenerate
inputs of the loaders. No cluster: kernels are pure (the job tests run them on clusters)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri
from scipy.stats import binom

from riskdask.credit.analytic import obligor_bounds
from riskdask.credit.data import (align_curves, load_cashflows, load_curves, load_matrix,
                                  validate_portfolio)
from riskdask.credit.simulation import (add_arrays, build_factor_model, importance_shift,
                                        needs_contribution_pass, simulate_local,
                                        simulation_statistics, tail_cuts, tail_obligor_sums)
from riskdask.credit.synthetic import DATA_DIR
from riskdask.credit.uncertainty import (batches_per_chunk, quantile_law, variance_reduction)
from riskdask.credit.valuation import (bond_cash_flows, conditional_forward_values,
                                       obligor_analytics)
from riskdask.engine import plan_chunks, reduce_local
from riskdask.errors import InputError

from credit_pools import default_only

MATRIX, _ = load_matrix(DATA_DIR / "migration_creditmetrics_1997.csv", normalize=True)
CURVES = align_curves(load_curves(DATA_DIR / "curves.csv"), MATRIX, MATRIX.initial_ratings,
                      DATA_DIR / "curves.csv")


def _bond_model(bonds, rho, n_sim, chunk, *, importance=False, confidence=(0.99, 0.999),
                state_rows=10_000):
    """Model of bullet bonds ``(rating, nominal, recovery, coupon, maturity)``, one obligor
    each, uniform correlation: the same construction as the job (Step 0 + thresholds)."""
    ratings = [b[0] for b in bonds]
    nominal = np.array([b[1] for b in bonds], float)
    rr = np.array([b[2] for b in bonds], float)
    pos, t, amt = bond_cash_flows(nominal, np.array([b[3] for b in bonds], float),
                                  np.ones(len(bonds), int), np.array([b[4] for b in bonds]))
    icr = np.array([MATRIX.index(r) for r in ratings])
    cfv = conditional_forward_values(pos, t, amt, CURVES, nominal * rr, len(bonds))
    an = obligor_analytics(cfv, icr, MATRIX.probabilities)
    lbs = (an.fv[:, None] - cfv)[:, ::-1]
    thr = obligor_bounds(icr, MATRIX.probabilities)[:, 1:-1]
    loadings = np.full((len(bonds), 1), np.sqrt(rho))
    shift = (importance_shift("factor", lbs[:, 0], thr[:, 0], loadings, 0.999)
             if importance else None)
    model = build_factor_model(lbs, 7 - icr, thr, loadings, confidence=confidence,
                               n_scenarios=n_sim, hist_edges=np.linspace(0, 1, 3),
                               shift=shift, expected_loss=an.fv - an.efv,
                               state_rows=state_rows,
                               batches_per_chunk=batches_per_chunk(n_sim, chunk))
    return model, an


def _run(model, n_sim, chunk, seed, fv=1.0):
    chunks = plan_chunks(n_sim, chunk, seed)
    summary = simulate_local(model, chunks)
    stats = simulation_statistics(summary, model, fv)
    return stats, summary, chunks


def test_batches_depend_on_the_config_only():
    assert batches_per_chunk(200_000, 25_000) == 4          # 8 chunks x 4 = 32 batches
    assert batches_per_chunk(1000, 1000) == 32              # one chunk: still 32 batches
    assert batches_per_chunk(10**7, 25_000) == 1


def test_quantile_law_of_an_order_statistic_is_the_binomial_one():
    # Continuous sample: P(q* >= x_(j)) = P(Bin(n, j / n) >= a) exactly.
    rng = np.random.default_rng(3)
    n, a = 10_000, 30
    loss = np.sort(rng.exponential(size=n))[::-1][:200]
    law = quantile_law(loss, np.ones(200), a, n, weighted=False)
    j = np.arange(1, 201)
    np.testing.assert_allclose(law["survival"], binom.sf(a - 1, n, j / n), rtol=1e-10)
    assert np.exp(law["log_p"]).sum() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------- the IS crash cases
DISCRETE = {
    "one_bond": [("BBB", 100.0, 0.4, 0.05, 5.0)],
    "two_bonds": [("BBB", 100.0, 0.4, 0.05, 5.0), ("BB", 50.0, 0.3, 0.06, 3.0)],
}


@pytest.mark.parametrize("case", sorted(DISCRETE))
def test_discrete_portfolios_with_and_without_is_agree_and_no_se_is_zero(case):
    n_sim, chunk = 100_000, 25_000
    out = {}
    for importance in (False, True):
        model, an = _bond_model(DISCRETE[case], 0.3, n_sim, chunk, importance=importance)
        out[importance], _, _ = _run(model, n_sim, chunk, 5, fv=float(an.fv.sum()))
    for j in range(2):
        p, q = out[False].levels[j], out[True].levels[j]
        for key in ("var", "es"):
            se_p, se_q = getattr(p, f"{key}_se"), getattr(q, f"{key}_se")
            assert se_p > 0 and se_q > 0, (case, j, key, p, q)
            err = np.hypot(se_p, se_q)
            diff = abs(getattr(p, key) - getattr(q, key))
            assert diff <= 3.5 * err + 1e-9 * abs(getattr(p, key)), (case, key, p, q)
        vr = variance_reduction(p.es_se_fixed_mean, q.es_se, p.es_var_rel_fixed_mean,
                                q.es_var_rel)
        assert vr["reason"] is None and vr["value"] > 0
    assert out[False].el_se > 0 and out[False].ul_se > 0


def test_identical_default_only_names_with_and_without_is():
    # 50 identical names, default only: the loss is a multiple of one LGD (an atom lattice)
    n, n_sim, chunk = 50, 60_000, 15_000
    lbs = np.zeros((n, 2))
    lbs[:, 0] = 0.6
    thr = np.full((n, 1), ndtri(0.02))
    loadings = np.full((n, 1), np.sqrt(0.25))
    out = {}
    for importance in (False, True):
        shift = (importance_shift("factor", lbs[:, 0], thr[:, 0], loadings, 0.999)
                 if importance else None)
        model = build_factor_model(lbs, np.ones(n, int), thr, loadings,
                                   confidence=(0.99, 0.999), n_scenarios=n_sim,
                                   hist_edges=np.linspace(0, 30, 11), shift=shift,
                                   expected_loss=np.full(n, 0.6 * 0.02),
                                   batches_per_chunk=batches_per_chunk(n_sim, chunk))
        out[importance], _, _ = _run(model, n_sim, chunk, 9, fv=n * 0.6)
    for j in range(2):
        p, q = out[False].levels[j], out[True].levels[j]
        for key in ("var", "es"):
            se_p, se_q = getattr(p, f"{key}_se"), getattr(q, f"{key}_se")
            assert se_p > 0 and se_q > 0
            assert abs(getattr(p, key) - getattr(q, key)) < 3.5 * np.hypot(se_p, se_q)
        # VaR sits on the lattice of 0.6 multiples (minus the mean)
        lattice = (p.var + out[False].reference_mean_loss) / 0.6
        assert lattice == pytest.approx(round(lattice))
        assert p.var_ci_low <= p.var <= p.var_ci_high


def test_degenerate_loss_law_has_zero_errors_and_says_so():
    # PD 0 and no migration possible: every scenario loses exactly 0.
    n, n_sim = 5, 2000
    lbs = np.zeros((n, 2))
    thr = np.full((n, 1), -np.inf)
    model = build_factor_model(lbs, np.ones(n, int), thr, np.full((n, 1), 0.5),
                               confidence=(0.99,), n_scenarios=n_sim,
                               hist_edges=np.linspace(0, 1, 3), expected_loss=np.zeros(n))
    stats, _, _ = _run(model, n_sim, 500, 1)
    lv = stats.levels[0]
    assert stats.degenerate and stats.el == 0 and stats.ul == 0
    assert lv.var == 0 and lv.es == 0 and lv.var_se == 0 and lv.es_se == 0
    assert "degenerate" in lv.se_note
    vr = variance_reduction(lv.es_se, lv.es_se)
    assert vr["value"] is None and "0" in vr["reason"]          # no division by zero


def test_variance_reduction_interval():
    vr = variance_reduction(2.0, 0.5, 0.1, 0.2)
    assert vr["value"] == pytest.approx(16.0)
    z = ndtri(0.975)
    assert vr["low"] == pytest.approx(16 * np.exp(-z * np.hypot(0.1, 0.2)))
    assert vr["high"] == pytest.approx(16 * np.exp(z * np.hypot(0.1, 0.2)))
    assert variance_reduction(np.nan, 1.0)["value"] is None


# --------------------------------------------------------------- calibration over seeds
def test_reported_es_error_matches_the_spread_over_seeds_plain_and_is(capsys):
    """500 names, default only: the reported SE of ES 99.9% is within a factor 1.5 of the
    standard deviation of the estimate over 20 seeds (plain and IS), and the reported
    variance reduction within a factor 2 of the one measured across the seeds (~12 s;
    a = 60 tail scenarios: the spread over 20 seeds is itself uncertain by ~20 %)."""
    n_names, n_sim, chunk, seeds = 500, 60_000, 15_000, 20
    est, se = {}, {}
    analytic_el = n_names * 0.01
    for importance in (False, True):
        model = default_only(n_names, 0.01, 0.2, n_sim, chunk, importance, state_rows=10_000)
        model = type(model)(**{**model.__dict__, "state_rows": 0})      # no contributions
        runs = [_run(model, n_sim, chunk, 1000 + s, fv=float(n_names))[0] for s in range(seeds)]
        rows = [r.levels[1] for r in runs]
        est[importance] = np.array([r.es for r in rows])
        se[importance] = np.array([r.es_se for r in rows])
        if not importance:
            # the plain ES measured from the analytic mean, as an IS run measures it
            est["fixed"] = np.array([r.levels[1].es + r.el - analytic_el for r in runs])
            se["fixed"] = np.array([r.es_se_fixed_mean for r in rows])
    for key in (False, True, "fixed"):
        spread = est[key].std(ddof=1)
        ratio = se[key].mean() / spread
        assert 1 / 1.5 < ratio < 1.5, (key, spread, se[key].mean())
    measured = (est["fixed"].std(ddof=1) / est[True].std(ddof=1)) ** 2
    reported = np.median((se["fixed"] / se[True]) ** 2)
    with capsys.disabled():
        print(f"\nES 99.9% SE / seed spread: plain {se[False].mean() / est[False].std(ddof=1):.2f}"
              f", IS {se[True].mean() / est[True].std(ddof=1):.2f}; variance reduction "
              f"reported {reported:.0f}, measured over seeds {measured:.0f}")
    assert 0.5 < reported / measured < 2.0, (reported, measured)


# --------------------------------------------------------------- IS contributions
def test_is_contributions_from_its_own_tail_sum_to_the_is_es():
    n_names, n_sim, chunk = 200, 40_000, 10_000
    model = default_only(n_names, 0.01, 0.2, n_sim, chunk, True, state_rows=10_000)
    # A state buffer too small for the weighted tail: the second pass must supply them.
    small = type(model)(**{**model.__dict__, "state_rows": 50})
    stats, summary, chunks = _run(small, n_sim, chunk, 4, fv=float(n_names))
    assert needs_contribution_pass(stats)
    cuts = tail_cuts(summary, small)
    sums = reduce_local([tail_obligor_sums(c, small, cuts) for c in chunks], add_arrays)
    full = simulation_statistics(summary, small, float(n_names), tail_sums=sums)
    big_stats, _, _ = _run(model, n_sim, chunk, 4, fv=float(n_names))
    for j, lv in enumerate(full.levels):
        assert lv.contributions and lv.contribution_source == "second pass"
        assert full.contributions[:, j].sum() == pytest.approx(lv.es, rel=1e-9)
        # where the big buffer holds the tail, the two routes give the same numbers
        if big_stats.levels[j].contribution_source == "tail buffer":
            np.testing.assert_allclose(full.contributions[:, j],
                                       big_stats.contributions[:, j], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------- loaders: bad inputs
def _matrix_csv(tmp_path, edit):
    lines = [ln for ln in (DATA_DIR / "migration_creditmetrics_1997.csv").read_text()
             .splitlines() if not ln.startswith("#")]
    lines = edit(lines)
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _set_row(lines, rating, values):
    return [f"{rating}," + ",".join(map(str, values)) if ln.split(",")[0] == rating else ln
            for ln in lines]


def test_matrix_zero_row_is_refused_even_with_normalize(tmp_path):
    path = _matrix_csv(tmp_path, lambda ls: _set_row(ls, "BB", [0] * 8))
    with pytest.raises(InputError) as e:
        load_matrix(path, normalize=True)
    assert "row 'BB'" in str(e.value) and "all zeros" in str(e.value)
    assert str(path) in str(e.value) and "row 5" in str(e.value)


def test_matrix_entry_above_one_is_refused(tmp_path):
    path = _matrix_csv(tmp_path, lambda ls: _set_row(ls, "A", [0, 1, 101, 0, 0, 0, 0, 0]))
    with pytest.raises(InputError) as e:
        load_matrix(path, normalize=True)
    assert "row 'A'" in str(e.value) and "not a probability" in str(e.value)


@pytest.mark.parametrize("total,ok", [(100.4, True), (98.0, False), (129.0, False)])
def test_normalize_rescales_only_rounding_errors(tmp_path, total, ok):
    row = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    row[2] = row[3] = (total - 10.0) / 2                        # BB row, entries <= 100%
    row[4], row[7] = 8.0, 2.0
    path = _matrix_csv(tmp_path, lambda ls: _set_row(ls, "BB", row))
    if ok:
        matrix, rescaled = load_matrix(path, normalize=True)
        assert "BB" in dict(rescaled) and matrix.probabilities[4].sum() == pytest.approx(1)
    else:
        with pytest.raises(InputError) as e:
            load_matrix(path, normalize=True)
        assert "row 'BB'" in str(e.value) and "0.5%" in str(e.value)


def _positions(nominal):
    return pd.DataFrame({"position_id": ["p1", "p2"], "obligor_id": ["o1", "o2"],
                         "rating": ["A", "BBB"], "nominal": [str(x) for x in nominal],
                         "recovery_rate": ["0.4", "0.4"], "coupon": ["0.05", "0.04"],
                         "frequency": ["1", "1"], "maturity": ["5", "3"]})


def test_all_zero_nominals_are_refused_naming_the_file():
    with pytest.raises(InputError) as e:
        validate_portfolio(_positions([0, 0]), "pf.csv", MATRIX, need_terms=True)
    assert "pf.csv" in str(e.value) and "no exposure" in str(e.value)


def test_negative_cash_flows_refused_unless_short_positions_allowed(tmp_path):
    flows = tmp_path / "cf.csv"
    flows.write_text("position_id,time,amount\np1,5,-105\np2,3,104\n")
    with pytest.raises(InputError) as e:
        load_cashflows(flows, ["p1", "p2"], nominal=[100.0, 100.0])
    assert "row 1" in str(e.value) and "negative cash-flow amount" in str(e.value)
    with pytest.raises(InputError) as e:          # short allowed, but the signs disagree
        load_cashflows(flows, ["p1", "p2"], nominal=[100.0, 100.0], allow_short=True)
    assert "opposite sign" in str(e.value)
    frame = load_cashflows(flows, ["p1", "p2"], nominal=[-100.0, 100.0], allow_short=True)
    assert list(frame["amount"]) == [-105.0, 104.0]


def test_short_position_is_the_exact_mirror_of_the_long_one():
    long = validate_portfolio(_positions([100, 50]), "pf.csv", MATRIX, need_terms=True)
    with pytest.raises(InputError):
        validate_portfolio(_positions([-100, 50]), "pf.csv", MATRIX, need_terms=True)
    short = validate_portfolio(_positions([-100, 50]), "pf.csv", MATRIX, need_terms=True,
                               allow_short=True)
    values = []
    for frame in (long, short):
        pos, t, amt = bond_cash_flows(frame["nominal"], frame["coupon"], frame["frequency"],
                                      frame["maturity"])
        icr = np.array([MATRIX.index(r) for r in frame["rating"]])
        cfv = conditional_forward_values(pos, t, amt, CURVES,
                                         (frame["nominal"] * frame["recovery_rate"]).to_numpy(), 2)
        values.append(obligor_analytics(cfv, icr, MATRIX.probabilities))
    lo, sh = values
    # the short first bond: value, expected loss (a gain) and UL mirror the long one
    assert sh.fv[0] == pytest.approx(-lo.fv[0]) and sh.el[0] == pytest.approx(-lo.el[0])
    assert sh.ul[0] == pytest.approx(lo.ul[0]) and sh.el[1] == lo.el[1]
