"""Pure coup kernels against independent references: a numpy-mask loop, sklearn's
confusion_matrix, the seed's printed table, and one sklearn forest holding all the trees."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import confusion_matrix

from riskdask.coup.forest import (as_float32, chunk_random_state, combine_aggregates,
                                  finalize_aggregate, fit_subforest, permutation_blocks,
                                  permutation_plan, permutation_sums, permuted_matrix,
                                  subforest_aggregate)
from riskdask.coup.sweep import (CONFUSION_ORDER, BinCounts, bin_counts, combine_bin_counts,
                                 confusion_from_counts, confusion_tables, optimal_thresholds,
                                 sweep_table, threshold_bins, threshold_grid)


# --------------------------------------------------------------------------- sweep
def _awkward_scores(rng: np.random.Generator, n: int = 6000):
    """Scores with ties, exact 0 and 1, values equal to grid thresholds, and their float
    neighbours (the cases where a binning shortcut would disagree with ``p > t``)."""
    grid = threshold_grid()
    parts = [
        rng.random(n),                                   # generic
        np.zeros(200), np.ones(200),                     # p exactly 0 and 1
        grid[rng.integers(0, grid.size, 800)],           # exactly on thresholds
        np.nextafter(grid[rng.integers(0, grid.size, 300)], 2.0),   # just above
        np.nextafter(grid[rng.integers(0, grid.size, 300)], -1.0),  # just below
        np.round(rng.random(1000), 2),                   # heavy ties
        np.arange(1000) / 999.0,                         # j/999 computed another way
        np.full(150, 0.127127127127127),                 # near the seed's F1 threshold
    ]
    p = np.concatenate(parts)
    y = (rng.random(p.size) < 0.2 + 0.5 * p).astype(int)
    return p, y


def _mask_loop(p, y):
    grid = threshold_grid()
    out = {k: np.empty(grid.size, dtype=np.int64) for k in ("TP", "FP", "TN", "FN")}
    for j, t in enumerate(grid):
        pred = p > t
        out["TP"][j] = np.sum(pred & (y == 1))
        out["FP"][j] = np.sum(pred & (y == 0))
        out["TN"][j] = np.sum(~pred & (y == 0))
        out["FN"][j] = np.sum(~pred & (y == 1))
    return out


def test_grid_is_the_seeds():
    grid = threshold_grid()
    assert grid.size == 1000 and grid[0] == 0.0 and grid[-1] == 1.0
    # the seed prints 0.127127 (optimal F1), 0.222222 (precision) and 0.500501 (default)
    assert round(grid[127], 6) == 0.127127
    assert round(grid[222], 6) == 0.222222
    assert round(grid[500], 6) == 0.500501


def test_one_pass_sweep_equals_mask_loop_and_confusion_matrix():
    rng = np.random.default_rng(7)
    p, y = _awkward_scores(rng)
    # three partitions, counted separately and summed: the distributed shape of the sweep
    cuts = [0, 2500, 7000, p.size]
    parts = [bin_counts(p[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    counts = combine_bin_counts(combine_bin_counts(parts[0], parts[1]), parts[2])
    got = confusion_from_counts(counts)
    want = _mask_loop(p, y)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    grid = threshold_grid()
    for j, t in enumerate(grid):
        tn, fp, fn, tp = confusion_matrix(y, (p > t).astype(int), labels=[0, 1]).ravel()
        assert (got["TN"][j], got["FP"][j], got["FN"][j], got["TP"][j]) == (tn, fp, fn, tp), j


def test_bins_use_the_same_comparison_as_the_rule():
    grid = threshold_grid()
    p = np.concatenate([grid, np.nextafter(grid, 2.0), np.nextafter(grid, -1.0), [0.0, 1.0]])
    k = threshold_bins(p)
    # k(p) must be exactly the number of thresholds t with p > t
    np.testing.assert_array_equal(k, (p[:, None] > grid[None, :]).sum(axis=1))
    assert k[-2] == 0 and k[-1] == 999  # p = 0 is never positive; p = 1 is, except at t = 1


def test_float32_scores_compare_as_float64():
    rng = np.random.default_rng(3)
    p32 = rng.random(3000).astype(np.float32)
    y = rng.integers(0, 2, 3000)
    got = confusion_from_counts(bin_counts(p32, y))
    want = _mask_loop(p32, y)  # numpy promotes float32 > float64 to float64, exactly
    np.testing.assert_array_equal(got["TP"], want["TP"])
    np.testing.assert_array_equal(got["FP"], want["FP"])


def test_metrics_reproduce_the_seeds_printed_table():
    """Feed the seed's confusion counts back in; its printed precision/recall/F1 come out."""
    # (threshold index, FN, TP, TN, FP, precision, recall, f1) from the seed's tables
    seed_rows = [(222, 147, 4, 39637, 70, 0.054054, 0.026490, 0.035556),
                 (0, 28, 123, 16909, 22798, 0.005366, 0.814570, 0.010662),
                 (127, 144, 7, 39539, 168, 0.040000, 0.046358, 0.042945)]
    n_pos, n_neg = 151, 39707
    for j, fn, tp, tn, fp, prec, rec, f1 in seed_rows:
        assert fn + tp == n_pos and tn + fp == n_neg
        pos = np.zeros(1001, dtype=np.int64)
        neg = np.zeros(1001, dtype=np.int64)
        pos[j + 1], pos[0] = tp, fn           # tp rows just above threshold j, the rest at 0
        neg[j + 1], neg[0] = fp, tn
        row = sweep_table(BinCounts(pos, neg)).iloc[j]
        assert (row["FN"], row["TP"], row["TN"], row["FP"]) == (fn, tp, tn, fp)
        assert round(row["precision"], 6) == prec
        assert round(row["recall"], 6) == rec
        assert round(row["f1"], 6) == f1


def test_undefined_metrics_are_zero_and_flagged():
    p = np.array([0.1, 0.2, 0.3, 0.05])
    y = np.array([0, 0, 0, 0])
    table = sweep_table(bin_counts(p, y))
    # no positives at all: recall undefined everywhere; precision undefined above 0.3
    assert table["recall_undefined"].all() and (table["recall"] == 0).all()
    above = table["threshold"] >= 0.3
    assert table.loc[above, "precision_undefined"].all()
    assert (table.loc[above, "precision"] == 0).all()
    assert not table.loc[~above, "precision_undefined"].any()


def test_optimal_thresholds_are_the_first_reaching_the_max():
    rng = np.random.default_rng(11)
    p, y = _awkward_scores(rng, 3000)
    table = sweep_table(bin_counts(p, y))
    opt = optimal_thresholds(table)
    for metric in ("precision", "recall", "f1"):
        values = table[metric].to_numpy()
        j = getattr(opt, metric).index
        assert values[j] == values.max()
        assert (values[:j] < values.max()).all()
        # independent check of the metric values themselves with the mask loop's counts
        c = _mask_loop(p, y)
        tp, fp, fn = c["TP"][j], c["FP"][j], c["FN"][j]
        ref = {"precision": tp / (tp + fp) if tp + fp else 0.0,
               "recall": tp / (tp + fn) if tp + fn else 0.0,
               "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0}[metric]
        assert getattr(opt, metric).threshold == table["threshold"][j]
        assert values[j] == pytest.approx(ref, rel=1e-15)
    assert opt.default.index == 500 and round(opt.default.threshold, 6) == 0.500501
    assert opt.as_dict()["f1"]["confusion"] == opt.f1.confusion
    tables = confusion_tables(opt)
    assert list(tables.index) == list(CONFUSION_ORDER) == ["FN", "TP", "TN", "FP"]
    assert list(tables.columns) == ["precision", "recall", "f1", "default"]
    assert tables["f1"].sum() == p.size


# --------------------------------------------------------------------------- forest
def _toy_data(seed=0, n_train=600, n_test=250, d=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_test, d))
    X[:, 0] = np.round(X[:, 0], 1)  # ties, as in REIGN's integer columns
    logit = -3 + 1.5 * X[:, 1] - X[:, 2] ** 2 + 0.8 * X[:, 0]
    y = (rng.random(n_train + n_test) < 1 / (1 + np.exp(-logit))).astype(float)
    return (as_float32(X[:n_train]), y[:n_train], as_float32(X[n_train:]), y[n_train:])


def _reference_forest(subforests, X_train, y_train):
    """One fitted sklearn forest holding every sub-forest's trees, in chunk order."""
    trees = [t for f in subforests for t in f.estimators_]
    ref = RandomForestRegressor(n_estimators=len(trees), max_depth=subforests[0].max_depth,
                                min_samples_leaf=subforests[0].min_samples_leaf)
    ref.estimators_ = trees
    ref.n_features_in_ = X_train.shape[1]
    ref.n_outputs_ = 1
    ref._n_samples = X_train.shape[0]
    ref._n_samples_bootstrap = subforests[0]._n_samples_bootstrap
    ref._sample_weight = None
    ref._set_oob_score_and_attributes(X_train, y_train[:, None])
    return ref


@pytest.mark.parametrize("params", [{"max_depth": None}, {"max_depth": 6, "min_samples_leaf": 3}])
def test_reduced_subforests_equal_one_sklearn_forest(params):
    X_train, y_train, X_test, _ = _toy_data()
    seeds = np.random.SeedSequence(123).spawn(4)
    sizes = [7, 7, 7, 4]  # a short last chunk, as plan_chunks makes
    subforests = [fit_subforest(X_train, y_train, k, chunk_random_state(s), params)
                  for k, s in zip(sizes, seeds)]
    aggs = [subforest_aggregate(f, X_train, X_test) for f in subforests]
    # the engine's fixed binary tree: ((0+1)+(2+3))
    reduced = finalize_aggregate(combine_aggregates(combine_aggregates(aggs[0], aggs[1]),
                                                    combine_aggregates(aggs[2], aggs[3])))
    ref = _reference_forest(subforests, X_train, y_train)
    assert reduced.n_trees == 25
    np.testing.assert_allclose(reduced.test_prediction, ref.predict(X_test), rtol=0, atol=1e-12)
    has = reduced.oob_count > 0
    assert has.mean() > 0.99
    np.testing.assert_allclose(reduced.oob_prediction[has], ref.oob_prediction_[has],
                               rtol=0, atol=1e-12)
    # rows never out of bag: sklearn reports 0, we report NaN and count them
    assert np.all(ref.oob_prediction_[~has] == 0) and np.all(np.isnan(reduced.oob_prediction[~has]))
    np.testing.assert_allclose(reduced.feature_importances, ref.feature_importances_,
                               rtol=0, atol=1e-12)
    # and the per-row OOB counts are sklearn's: rows not in a tree's bootstrap draw
    counts = np.zeros(X_train.shape[0], dtype=int)
    for in_bag in ref.estimators_samples_:
        counts += np.bincount(in_bag, minlength=X_train.shape[0]) == 0
    np.testing.assert_array_equal(reduced.oob_count, counts)


def test_importances_skip_single_node_trees_like_sklearn():
    """A constant target makes root-only trees; sklearn leaves them out of the mean."""
    X_train, y_train, X_test, _ = _toy_data(n_train=60)
    y_rare = np.zeros_like(y_train)
    y_rare[:2] = 1.0  # most bootstrap draws miss both positives -> single-node trees
    seeds = np.random.SeedSequence(5).spawn(3)
    subforests = [fit_subforest(X_train, y_rare, 10, chunk_random_state(s)) for s in seeds]
    node_counts = [t.tree_.node_count for f in subforests for t in f.estimators_]
    assert min(node_counts) == 1 and max(node_counts) > 1
    aggs = [subforest_aggregate(f, X_train, X_test) for f in subforests]
    reduced = finalize_aggregate(combine_aggregates(combine_aggregates(aggs[0], aggs[1]), aggs[2]))
    ref = _reference_forest(subforests, X_train, y_rare)
    np.testing.assert_allclose(reduced.feature_importances, ref.feature_importances_,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(reduced.test_prediction, ref.predict(X_test), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Some inputs do not have OOB scores")
def test_permuted_predictions_equal_the_forest_on_permuted_rows():
    X_train, y_train, X_test, _ = _toy_data()
    seeds = np.random.SeedSequence(9).spawn(2)
    subforests = [fit_subforest(X_train, y_train, 6, chunk_random_state(s), {"max_depth": 5})
                  for s in seeds]
    plan = permutation_plan(X_test.shape[1], 2, seed=4)
    assert len(plan) == 14 and len({rs for *_, rs in plan}) == 14
    blocks = permutation_blocks(plan, 4)
    assert [len(b) for b in blocks] == [4, 4, 4, 2] and sum(blocks, []) == plan
    rows = X_test[:80]
    # sub-forests x blocks, summed over sub-forests per block, blocks concatenated in order
    sums = np.concatenate([permutation_sums(subforests[0], rows, b)
                           + permutation_sums(subforests[1], rows, b) for b in blocks])
    prediction = sums / 12
    ref = _reference_forest(subforests, X_train, y_train)
    X_perm = permuted_matrix(rows, plan)
    for i, (feature, _r, rs) in enumerate(plan):
        shuffled = rows.copy()
        shuffled[:, feature] = rows[np.random.default_rng(rs).permutation(80), feature]
        np.testing.assert_allclose(prediction[i], ref.predict(shuffled), rtol=0, atol=1e-12)
        # only that column moved
        others = np.delete(np.arange(rows.shape[1]), feature)
        np.testing.assert_array_equal(X_perm[i][:, others], rows[:, others])
        np.testing.assert_array_equal(X_perm[i], shuffled)


def test_fast_bins_equal_searchsorted_on_even_and_uneven_grids():
    rng = np.random.default_rng(21)
    p, _ = _awkward_scores(rng, 20000)
    p = np.concatenate([p, [-0.5, 1.5, 1e-300, 1 - 1e-16]])      # outside [0, 1] and extremes
    for grid in (threshold_grid(), threshold_grid(7),
                 np.sort(np.concatenate([[0.0, 1.0], rng.random(50)]))):   # uneven grid
        k = threshold_bins(p, grid)
        np.testing.assert_array_equal(k, np.searchsorted(grid, p, side="left"))
        np.testing.assert_array_equal(k, (p[:, None] > grid[None, :]).sum(axis=1))


def test_blocked_counting_over_many_blocks_equals_mask_loop():
    """More rows than one 32k block (and a partial last block), labels as bool/int/float."""
    rng = np.random.default_rng(17)
    p, y = _awkward_scores(rng, 70_000)
    want = _mask_loop(p, y)
    for labels in (y, y.astype(bool), y.astype(np.int8), y.astype(float)):
        got = confusion_from_counts(bin_counts(p, labels))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    with pytest.raises(ValueError, match="0 or 1"):
        bin_counts(p[:3], np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="NaN"):
        bin_counts(np.array([0.1, np.nan]), np.array([0, 1]))


@pytest.mark.filterwarnings("ignore:Some inputs do not have OOB scores")
def test_convergence_levels_equal_sklearn_forests_of_the_first_trees():
    """Level c of the reduced aggregate is one sklearn forest of the plan's first c trees."""
    from riskdask.coup.forest import convergence_table, tree_checkpoints

    X_train, y_train, X_test, y_test = _toy_data()
    assert tree_checkpoints(25, 7, wanted=(14, 20, 50)) == [14, 25]
    assert tree_checkpoints(10_000, 5)[:4] == [50, 100, 200, 500]
    seeds = np.random.SeedSequence(123).spawn(4)
    sizes, stops = [7, 7, 7, 4], [7, 14, 21, 25]
    subforests = [fit_subforest(X_train, y_train, k, chunk_random_state(s), {"max_depth": 6})
                  for k, s in zip(sizes, seeds)]
    aggs = [subforest_aggregate(f, X_train, X_test, stop=e, checkpoints=[14, 25])
            for f, e in zip(subforests, stops)]
    total = combine_aggregates(combine_aggregates(aggs[0], aggs[1]),
                               combine_aggregates(aggs[2], aggs[3]))
    np.testing.assert_array_equal(total.level_trees, [14, 25])
    for level, k in ((0, 2), (1, 4)):
        ref = _reference_forest(subforests[:k], X_train, y_train)
        n = total.level_trees[level]
        np.testing.assert_allclose(total.level_test_sum[level] / n, ref.predict(X_test),
                                   rtol=0, atol=1e-12)
        cnt = total.level_oob_count[level]
        has = cnt > 0
        np.testing.assert_allclose(total.level_oob_sum[level][has] / cnt[has],
                                   ref.oob_prediction_[has], rtol=0, atol=1e-12)
    table = convergence_table(total, y_train, (y_test > 0.5).astype(float))
    assert list(table["n_trees"]) == [14, 25]
    final = finalize_aggregate(total)
    from sklearn.metrics import roc_auc_score
    assert table["test_roc_auc"].iloc[-1] == pytest.approx(
        roc_auc_score(y_test > 0.5, final.test_prediction), abs=1e-12)
