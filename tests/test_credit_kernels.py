"""credit kernels against independent references: the seed's Table 3.1, hand-computed
eqs. 3.1-3.8, numerical integration of the bivariate normal, brute-force eq. 3.11,
Vasicek's limiting distribution, the seed's Step 6 definitions on sorted arrays, and the
analytic EL/UL (simulation within Monte Carlo error). No cluster: kernels are pure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtr, ndtri
from scipy.stats import norm

from riskdask.credit.analytic import (deviations_worst_first, obligor_bounds,
                                      pair_tile_covariance, ul_collapsed,
                                      ul_from_covariance_sum, ul_pairwise_bruteforce)
from riskdask.credit.bvn import bvn_cdf, rectangle_probabilities
from riskdask.credit.data import load_matrix
from riskdask.credit.ratings import migration_thresholds
from riskdask.credit.simulation import (build_factor_model, build_matrix_model,
                                        combine_summaries, importance_shift, simulate_chunk,
                                        simulate_local, simulation_statistics,
                                        uses_uniform_draws)
from riskdask.credit.summary import (LossSummary, merge_summaries, tail_count,
                                     var_es_from_sorted)
from riskdask.credit.synthetic import DATA_DIR
from riskdask.credit.valuation import (RatingCurves, bond_cash_flows,
                                       conditional_forward_values, obligor_analytics)
from riskdask.engine import plan_chunks

MATRIX, _ = load_matrix(DATA_DIR / "migration_creditmetrics_1997.csv", normalize=True)
P = MATRIX.probabilities
RATINGS = MATRIX.initial_ratings


# ----------------------------------------------------------------------- Table 3.1
def test_table_3_1_boundaries_for_initial_rating_A():
    # seed Table 3.1 (S&P 2008a), forward ratings D, CCC-C, B, BB, BBB, A, AA, AAA
    probs = np.array([0.06, 0.03, 0.17, 0.41, 5.63, 91.49, 2.17, 0.04]) / 100
    table = [-3.24, -3.12, -2.79, -2.47, -1.53, 2.01, 3.35]
    assert np.round(migration_thresholds(probs), 2).tolist() == table
    # and the embedded matrix's thresholds are ascending, one set per initial rating
    thr = MATRIX.thresholds()
    assert thr.shape == (7, 7) and np.all(thr[:, 1:] >= thr[:, :-1])


# ----------------------------------------------------------------------- eqs. 3.1-3.8
def _curves():
    tenors = np.array([0.5, 1.0, 2.0, 5.0, 10.0])
    base = np.array([0.020, 0.022, 0.025, 0.030, 0.034])
    spreads = np.array([0.001, 0.002, 0.004, 0.010, 0.025, 0.045, 0.10])
    return RatingCurves(RATINGS, tenors, base[None, :] + spreads[:, None])


def test_forward_discount_factors_eq_3_3():
    curves = _curves()
    t = np.array([0.25, 1.0, 1.5, 3.0, 12.0])
    df = curves.forward_discount_factors(t)
    for r in range(len(RATINGS)):
        y = lambda x: np.interp(x, curves.tenors, curves.rates[r])  # noqa: E731
        expected = [1.0, 1.0, np.exp(y(1) - 1.5 * y(1.5)), np.exp(y(1) - 3 * y(3)),
                    np.exp(y(1) - 12 * curves.rates[r, -1])]
        np.testing.assert_allclose(df[r], expected, rtol=0, atol=1e-15)


def test_bond_cash_flows_from_terms():
    pos, t, amount = bond_cash_flows([100.0, 200.0], [0.05, 0.04], [1, 2], [3.0, 1.25])
    assert pos.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(t, [1, 2, 3, 0.25, 0.75, 1.25])
    np.testing.assert_allclose(amount, [5, 5, 105, 4, 4, 204])


def test_cfv_fv_efv_el_split_by_hand():
    curves = _curves()
    # obligor 0: rated A, two bonds; obligor 1: rated BB, one bond
    cf_obl = np.array([0, 0, 0, 1, 1])
    cf_t = np.array([0.5, 2.0, 5.0, 1.0, 3.0])
    cf_amt = np.array([3.0, 3.0, 103.0, 6.0, 106.0])
    rec = np.array([100 * 0.4, 100 * 0.5])
    cfv = conditional_forward_values(cf_obl, cf_t, cf_amt, curves, rec, 2)
    icr = np.array([RATINGS.index("A"), RATINGS.index("BB")])
    an = obligor_analytics(cfv, icr, P)
    for i in range(2):
        flows = [(t, a) for o, t, a in zip(cf_obl, cf_t, cf_amt) if o == i]
        cfv_hand = []
        for r in range(7):
            y = lambda x: np.interp(x, curves.tenors, curves.rates[r])  # noqa: E731
            cfv_hand.append(sum(a * (np.exp(y(1) - t * y(t)) if t > 1 else 1.0)
                                for t, a in flows))
        cfv_hand.append(rec[i])
        np.testing.assert_allclose(cfv[i], cfv_hand, rtol=1e-14)
        p = P[icr[i]]
        fv = cfv_hand[icr[i]]                                              # eq. 3.1
        efv = sum(p[f] * cfv_hand[f] for f in range(8))                    # eq. 3.5
        migration = sum(p[f] * (fv - cfv_hand[f]) for f in range(7))       # eq. 3.7
        default = p[7] * (fv - rec[i])
        ul2 = sum(p[f] * cfv_hand[f] ** 2 for f in range(8)) - efv ** 2    # eq. 3.8
        assert an.fv[i] == pytest.approx(fv, rel=1e-14)
        assert an.efv[i] == pytest.approx(efv, rel=1e-14)
        assert an.el_migration[i] == pytest.approx(migration, rel=1e-10)
        assert an.el_default[i] == pytest.approx(default, rel=1e-12)
        assert an.el[i] == pytest.approx(fv - efv, rel=1e-9)               # eq. 3.6
        assert an.ul[i] ** 2 == pytest.approx(ul2, rel=1e-8)


# ----------------------------------------------------------------------- bivariate normal
def _bvn_reference(h, k, r):
    """P(X<h, Y<k) by adaptive quadrature of phi(x) Phi((k - r x)/sqrt(1-r^2))."""
    if np.isneginf(h) or np.isneginf(k):
        return 0.0
    if np.isposinf(h):
        return float(ndtr(k))
    if np.isposinf(k):
        return float(ndtr(h))
    s = np.sqrt(1 - r * r)
    lo = -40.0
    pts = None
    if r != 0 and lo < k / r < h:
        pts = [k / r]           # where the conditional CDF switches: help the integrator
    val, _ = integrate.quad(lambda x: norm.pdf(x) * ndtr((k - r * x) / s), lo, h,
                            epsabs=1e-14, epsrel=1e-13, limit=500, points=pts)
    return val


def test_bivariate_normal_cdf_matches_quadrature_to_1e9():
    values = [-np.inf, -6.0, -3.24, -1.53, -0.4, 0.0, 0.9, 2.01, 3.35, 7.0, np.inf]
    rhos = [-0.99, -0.95, -0.7, -0.3, 0.0, 0.2, 0.5, 0.9, 0.93, 0.99]
    h, k, r = np.meshgrid(values, values, rhos, indexing="ij")
    got = bvn_cdf(h, k, r)
    with np.errstate(all="ignore"):
        ref = np.vectorize(_bvn_reference)(h, k, r)
    assert np.max(np.abs(got - ref)) < 1e-9
    # and the degenerate correlations
    assert bvn_cdf(0.3, 0.5, 1.0) == pytest.approx(ndtr(0.3), abs=1e-15)
    assert bvn_cdf(0.3, 0.5, -1.0) == pytest.approx(ndtr(0.3) - ndtr(-0.5), abs=1e-15)


def test_rectangle_tables_are_joint_distributions():
    bounds = obligor_bounds(np.array([2, 3]), P)
    joint = rectangle_probabilities(bounds[[0]], bounds[[1]], np.array([0.35]))[0]
    np.testing.assert_allclose(joint.sum(axis=1), P[2][::-1], atol=1e-14)
    np.testing.assert_allclose(joint.sum(axis=0), P[3][::-1], atol=1e-14)


# ----------------------------------------------------------------------- analytic UL
def _small_portfolio(n=30, seed=3):
    rng = np.random.default_rng(seed)
    icr = rng.integers(0, 6, n)
    nominal = rng.uniform(1e6, 2e7, n)
    pos, t, amount = bond_cash_flows(nominal, rng.uniform(0.0, 0.06, n), rng.integers(1, 3, n),
                                     rng.integers(1, 11, n).astype(float))
    rr = rng.uniform(0.2, 0.7, n)
    cfv = conditional_forward_values(pos, t, amount, _curves(), nominal * rr, n)
    return cfv, icr, obligor_analytics(cfv, icr, P)


def test_collapsed_ul_equals_bruteforce_uniform_and_factor():
    cfv, icr, an = _small_portfolio()
    n = len(icr)
    dev = deviations_worst_first(cfv, an.efv)
    ul2 = float(np.sum(an.ul ** 2))
    # uniform rho: cells = initial ratings
    rho = 0.27
    corr = np.full((n, n), rho)
    np.fill_diagonal(corr, 1.0)
    brute = ul_pairwise_bruteforce(cfv, icr, P, corr)
    cells = np.arange(7)
    collapsed = ul_collapsed(dev, obligor_bounds(cells, P), icr, np.full((7, 7), rho), ul2)
    assert collapsed == pytest.approx(brute, rel=1e-9)
    bounds = obligor_bounds(icr, P)
    tiled = sum(pair_tile_covariance(dev[a:b], dev[c:d], bounds[a:b], bounds[c:d],
                                     corr[a:b, c:d], same_block=(a == c))
                for (a, b), (c, d) in [((0, 12), (0, 12)), ((0, 12), (12, 30)),
                                       ((12, 30), (12, 30))])
    assert ul_from_covariance_sum(ul2, tiled) == pytest.approx(brute, rel=1e-9)
    # factor model: global + 3 sectors, cells = (rating, loadings)
    rng = np.random.default_rng(7)
    sector = rng.integers(0, 3, n)
    loadings = np.zeros((n, 4))
    loadings[:, 0] = 0.45
    loadings[np.arange(n), 1 + sector] = 0.35
    corr_f = loadings @ loadings.T
    np.fill_diagonal(corr_f, 1.0)
    brute_f = ul_pairwise_bruteforce(cfv, icr, P, corr_f)
    key = np.column_stack([icr, loadings])
    uniq, cell = np.unique(key, axis=0, return_inverse=True)
    collapsed_f = ul_collapsed(dev, obligor_bounds(uniq[:, 0].astype(int), P), cell.ravel(),
                               uniq[:, 1:] @ uniq[:, 1:].T, ul2)
    assert collapsed_f == pytest.approx(brute_f, rel=1e-9)
    assert brute_f != pytest.approx(brute, rel=1e-3)       # the correlations matter


# ----------------------------------------------------------------------- Step 6 and merge
def _summary_from(loss, weight, first_scenario, index, need, n_obligors=1):
    order = np.lexsort((np.arange(loss.size), -loss))
    before = np.concatenate([[0.0], np.cumsum(weight[order])[:-1]])
    keep = int(np.searchsorted(before, need, side="left"))
    order = order[:keep]
    w = weight.sum()
    mean = float(np.dot(weight, loss) / w)
    return LossSummary(index, index, loss.size, float(w), mean,
                       float(np.dot(weight, (loss - mean) ** 2)), np.zeros(n_obligors),
                       loss[order], weight[order], first_scenario + order,
                       np.full(order.size, index), np.zeros((0, n_obligors), np.uint8),
                       np.zeros(3), np.array([[index, loss.size, w, 0.0, 0.0]]),
                       {"weight_needed": need, "state_rows": 0})


def test_step6_var_es_follow_the_seed_definitions_after_any_merge():
    rng = np.random.default_rng(11)
    sim = 20_000
    sfv = 1e9 - rng.gamma(0.3, 2e6, sim) + np.round(rng.normal(0, 1e5, sim))
    sfv[[10, 20, 30]] = sfv[40]                                   # ties in the tail
    fv = 1e9
    loss = fv - sfv
    for conf in (0.99, 0.999, 0.9999):
        a = tail_count(sim, conf)
        srt = np.sort(sfv)                                       # Step 6: ascending
        mean = sfv.mean()
        var_seed = mean - srt[a - 1]                             # SFV_(a)
        es_seed = mean - srt[: a - 1].sum() / (a - 1)
        need = float(tail_count(sim, 0.99))
        parts = [_summary_from(loss[s:s + 3000], np.ones(min(3000, sim - s)), s, s // 3000, need)
                 for s in range(0, sim, 3000)]
        # merge in two different groupings: the tail buffer must be identical
        left = parts[0]
        for p in parts[1:]:
            left = merge_summaries(left, p, weight_needed=need, state_rows=0)
        level = list(parts)
        while len(level) > 1:
            nxt = [merge_summaries(level[i], level[i + 1], weight_needed=need, state_rows=0)
                   for i in range(0, len(level) - 1, 2)]
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        tree = level[0]
        assert np.array_equal(left.tail_loss, tree.tail_loss)
        assert np.array_equal(left.tail_scenario, tree.tail_scenario)
        var, es, k = var_es_from_sorted(tree.tail_loss, tree.tail_weight, tree.mean, a)
        assert k == a - 1
        assert var == pytest.approx(var_seed, rel=1e-9, abs=1e-3)
        assert es == pytest.approx(es_seed, rel=1e-9, abs=1e-3)
        assert tree.mean == pytest.approx(loss.mean(), rel=1e-12)
        assert np.sqrt(tree.m2 / tree.weight_sum) == pytest.approx(sfv.std(ddof=0), rel=1e-9)
    assert tail_count(1_000_000, 0.9999) == 100 and tail_count(200, 0.995) == 1


# ----------------------------------------------------------------------- Monte Carlo
def _model_inputs(cfv, icr, an):
    loss_by_state = (an.fv[:, None] - cfv)[:, ::-1]
    bounds = obligor_bounds(icr, P)
    return loss_by_state, 7 - icr, bounds[:, 1:-1]


def _edges(el, ul):
    return np.linspace(el - 5 * ul, el + 40 * ul, 101)


@pytest.mark.parametrize("kind", ["uniform", "factor", "matrix"])
def test_simulated_el_ul_within_3_standard_errors_of_analytic(kind):
    cfv, icr, an = _small_portfolio(n=40, seed=5)
    n = len(icr)
    dev = deviations_worst_first(cfv, an.efv)
    ul2 = float(np.sum(an.ul ** 2))
    el = float(an.fv.sum() - an.efv.sum())
    lbs, state0, thr = _model_inputs(cfv, icr, an)
    rng = np.random.default_rng(2)
    if kind == "uniform":
        loadings = np.full((n, 1), np.sqrt(0.3))
    else:
        loadings = np.column_stack([np.full(n, 0.4), 0.5 * np.eye(4)[rng.integers(0, 4, n)]])
    corr = loadings @ loadings.T
    np.fill_diagonal(corr, 1.0)
    ul = ul_pairwise_bruteforce(cfv, icr, P, corr)
    if kind != "matrix":
        key = np.column_stack([icr, loadings])
        uniq, cell = np.unique(key, axis=0, return_inverse=True)
        assert ul_collapsed(dev, obligor_bounds(uniq[:, 0].astype(int), P), cell.ravel(),
                            uniq[:, 1:] @ uniq[:, 1:].T, ul2) == pytest.approx(ul, rel=1e-9)
    n_sim = 120_000
    common = dict(confidence=(0.99, 0.999), n_scenarios=n_sim, hist_edges=_edges(el, ul))
    if kind == "matrix":
        model = build_matrix_model(lbs, state0, thr, corr, **common)
    else:
        model = build_factor_model(lbs, state0, thr, loadings, **common)
    chunks = plan_chunks(n_sim, 6000, 17)
    stats = simulation_statistics(simulate_local(model, chunks), model, float(an.fv.sum()))
    assert abs(stats.el - el) < 3 * stats.el_se, (stats.el, el, stats.el_se)
    assert abs(stats.ul - ul) < 3 * stats.ul_se, (stats.ul, ul, stats.ul_se)
    # per-obligor simulated mean loss vs analytic EL_i
    se_i = an.ul / np.sqrt(n_sim) * 4
    assert np.all(np.abs(stats.obligor_mean_loss - (an.fv - an.efv)) < 4 * se_i + 1e-6)
    # ES contributions add up to ES; tail states reproduce the tail losses exactly
    for j, level in enumerate(stats.levels):
        assert stats.contributions[:, j].sum() == pytest.approx(level.es, rel=1e-9)
    summary = simulate_local(model, chunks)
    rows = np.arange(n)
    recomputed = model.loss_by_state[rows[None, :], summary.tail_states].sum(axis=1)
    k = summary.tail_states.shape[0]
    np.testing.assert_allclose(recomputed, summary.tail_loss[:k], rtol=1e-12, atol=1e-6)


def test_both_idiosyncratic_samplers_are_exercised():
    n = 300
    lbs = np.zeros((n, 8))
    few = build_factor_model(lbs, np.full(n, 5), np.tile(MATRIX.thresholds()[2], (n, 1)),
                             np.full((n, 1), 0.5), confidence=(0.99,), n_scenarios=1000,
                             hist_edges=np.linspace(0, 1, 3))
    many = build_factor_model(lbs, np.full(n, 5), np.tile(MATRIX.thresholds()[2], (n, 1)),
                              np.eye(100)[np.arange(n) % 100] * 0.5, confidence=(0.99,),
                              n_scenarios=1000, hist_edges=np.linspace(0, 1, 3))
    assert uses_uniform_draws(few) and not uses_uniform_draws(many)


def _vasicek_model(n_names, pd_, rho, n_sim, conf, shift=None):
    lbs = np.zeros((n_names, 2))
    lbs[:, 0] = 1.0 / n_names                  # default loses the whole (equal) weight
    thr = np.full((n_names, 1), ndtri(pd_))
    return build_factor_model(lbs, np.ones(n_names, int), thr, np.full((n_names, 1),
                              np.sqrt(rho)), confidence=conf, n_scenarios=n_sim,
                              hist_edges=np.linspace(0, 1, 51), shift=shift)


def test_vasicek_limiting_loss_quantiles():
    n_names, pd_, rho, n_sim = 2000, 0.01, 0.2, 200_000
    conf = (0.99, 0.999)
    model = _vasicek_model(n_names, pd_, rho, n_sim, conf)
    stats = simulation_statistics(simulate_local(model, plan_chunks(n_sim, 20_000, 8)), model, 1.0)
    assert stats.el == pytest.approx(pd_, abs=3 * stats.el_se)
    for level in stats.levels:
        q = level.confidence
        vasicek = ndtr((ndtri(pd_) + np.sqrt(rho) * ndtri(q)) / np.sqrt(1 - rho))
        simulated = level.var + stats.el          # the loss quantile SFV_(a)
        assert abs(simulated - vasicek) < 3 * level.var_se + 1.0 / n_names, (
            q, simulated, vasicek, level.var_se)


def test_importance_sampling_agrees_and_cuts_variance_at_least_5x(capsys):
    cfv, icr, an = _small_portfolio(n=60, seed=9)
    n = len(icr)
    el = float(an.fv.sum() - an.efv.sum())
    lbs, state0, thr = _model_inputs(cfv, icr, an)
    loadings = np.full((n, 1), np.sqrt(0.3))
    ul = ul_pairwise_bruteforce(cfv, icr, P, np.where(np.eye(n) > 0, 1.0, 0.3))
    n_sim = 100_000
    shift = importance_shift("factor", lbs[:, 0], thr[:, 0], loadings, 0.999)
    assert shift.shape == (1,) and shift[0] == pytest.approx(-ndtri(0.999))
    chunks = plan_chunks(n_sim, 5000, 23)
    out = {}
    for name, s in (("plain", None), ("is", shift)):
        model = build_factor_model(lbs, state0, thr, loadings, confidence=(0.99, 0.999),
                                   n_scenarios=n_sim, hist_edges=_edges(el, ul), shift=s,
                                   expected_loss=an.fv - an.efv)
        out[name] = simulation_statistics(simulate_local(model, chunks), model,
                                          float(an.fv.sum()))
    for j in range(2):
        p, q = out["plain"].levels[j], out["is"].levels[j]
        for key in ("var", "es"):
            err = np.hypot(getattr(p, f"{key}_se"), getattr(q, f"{key}_se"))
            diff = abs(getattr(p, key) - getattr(q, key))
            assert diff < 3.5 * err, (key, getattr(p, key), getattr(q, key), err)
    reduction = (out["plain"].levels[1].es_se / out["is"].levels[1].es_se) ** 2
    with capsys.disabled():
        print(f"\n99.9% ES variance reduction by importance sampling: {reduction:.1f}x")
    assert reduction >= 5.0, reduction
    # with IS, VaR/ES are measured from the exact analytic mean (the weighted mean is noisy)
    assert (out["is"].mean_reference == "analytic"
            and out["plain"].mean_reference == "simulated")


def test_chunk_results_do_not_depend_on_grouping_or_order():
    cfv, icr, an = _small_portfolio(n=25, seed=1)
    el = float(an.fv.sum() - an.efv.sum())
    lbs, state0, thr = _model_inputs(cfv, icr, an)
    model = build_factor_model(lbs, state0, thr, np.full((len(icr), 1), 0.5),
                               confidence=(0.99, 0.999), n_scenarios=30_000,
                               hist_edges=_edges(el, el))
    chunks = plan_chunks(30_000, 3000, 5)
    a = simulate_local(model, chunks)
    b = simulate_local(model, chunks)
    parts = [simulate_chunk(c, model) for c in reversed(chunks)][::-1]
    left = parts[0]
    for p in parts[1:]:
        left = combine_summaries(left, p)
    for x in (b, left):
        assert np.array_equal(a.tail_loss, x.tail_loss)
        assert np.array_equal(a.tail_scenario, x.tail_scenario)
        assert np.array_equal(a.tail_states, x.tail_states)
        assert a.n == x.n and np.array_equal(a.histogram, x.histogram)
    assert a.mean == b.mean and a.m2 == b.m2           # same tree: bit-identical


def test_state_buffer_keeps_only_tails_that_can_get_contributions():
    from riskdask.credit.simulation import effective_state_rows

    levels = (0.99, 0.999, 0.9999)
    # plain sampling: the ES tail of a level is a - 1 rows
    assert effective_state_rows(10_000, 1_000_000, levels, weighted=False) == 9_999
    assert effective_state_rows(10_000, 4_000_000, levels, weighted=False) == 3_999
    assert effective_state_rows(10, 1_000_000, levels, weighted=False) == 0
    # likelihood-ratio weights: the tail length is unknown, keep the cap
    assert effective_state_rows(10_000, 4_000_000, levels, weighted=True) == 10_000


@pytest.mark.parametrize("case", ["plain-small-blocks", "plain-few-state-rows", "weighted"])
def test_chunk_tail_and_states_equal_a_full_sort_of_the_chunk(case):
    """The chunk's tail buffer and state block against the definition: every scenario's loss
    and migrations from the block generator, one full sort (loss descending, ties by
    scenario), the first rows kept, their states written densely -- whatever shortcuts
    simulate_chunk takes (no sort of blocks that are kept whole, a partition before the
    final sort, records only for rows above the running state_rows-th loss)."""
    from riskdask.credit.simulation import _blocks
    from riskdask.credit.summary import keep_rows, sort_tail

    cfv, icr, an = _small_portfolio(n=40, seed=4)
    el = float(an.fv.sum() - an.efv.sum())
    lbs, state0, thr = _model_inputs(cfv, icr, an)
    loadings = np.full((len(icr), 1), 0.5)
    shift = None
    if case == "weighted":
        shift = importance_shift("factor", lbs[:, 0], thr[:, 0], loadings, 0.999)
    model = build_factor_model(lbs, state0, thr, loadings, confidence=(0.99, 0.999),
                               n_scenarios=40_000, hist_edges=_edges(el, el), shift=shift,
                               state_rows=50 if case == "plain-few-state-rows" else 10_000,
                               block=64 if case == "plain-small-blocks" else 700)
    chunk = plan_chunks(40_000, 8_000, 9)[2]
    loss, weight, recs = [], [], []
    for b0, sb, w, s, i, new_state, step_loss, scen_loss in _blocks(chunk, model):
        loss.append(scen_loss)
        weight.append(w)
        recs.append((b0 + s, i, new_state))
    loss, weight = np.concatenate(loss), np.concatenate(weight)
    order = sort_tail(loss, chunk.start + np.arange(loss.size))
    keep = keep_rows(weight[order], model.weight_needed)
    rows = order[:keep]
    dense = np.repeat(model.initial_state.astype(np.uint8)[None, :], loss.size, axis=0)
    for s, i, new_state in recs:
        dense[s, i] = new_state

    got = simulate_chunk(chunk, model)
    assert keep < loss.size                            # the buffer really cuts
    np.testing.assert_array_equal(got.tail_scenario, chunk.start + rows)
    np.testing.assert_array_equal(got.tail_loss, loss[rows])
    np.testing.assert_array_equal(got.tail_weight, weight[rows])
    n_states = min(keep, model.state_rows)
    assert n_states > 0
    np.testing.assert_array_equal(got.tail_states, dense[rows[:n_states]])


def test_exact_sum_is_math_fsum_bit_for_bit():
    """The compiled exact sum is CPython's math.fsum step for step: the same bits (and the
    same sign of zero) on cancellations, ties, wide exponent ranges; non-finite terms and
    intermediate overflow behave as math.fsum does."""
    import math

    from riskdask.credit.summary import exact_sum

    rng = np.random.default_rng(0)
    cases = [np.array([1e-16, 1.0, 1e16]), np.array([1e16, 1.0, -1e16]), np.array([]),
             np.array([0.0, -0.0]), np.array([1.0, 2.0 ** -60, -1.0, 2.0 ** -110]),
             rng.normal(size=5000) * 10.0 ** rng.integers(-300, 300, 5000),
             rng.normal(size=200_000) * 1e6]
    for _ in range(1000):
        m = int(rng.integers(1, 40))
        cases.append(rng.normal(size=m) * 10.0 ** rng.integers(-20, 20, m))
        cases.append(np.round(rng.normal(size=m) * 1e3) / 8)         # exact halves: ties
    for c in cases:
        ref, got = math.fsum(c.tolist()), exact_sum(c)
        assert got == ref and math.copysign(1.0, got) == math.copysign(1.0, ref), c[:4]
    assert exact_sum(np.array([np.inf, 1.0])) == math.inf
    assert math.isnan(exact_sum(np.array([np.nan, 1.0])))
    with pytest.raises(OverflowError):
        exact_sum(np.array([1e308, 1e308, -1e308]))
