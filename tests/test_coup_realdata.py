"""The real-format leader-month excerpt, feature resolution, range checks, the pooled backtest
kernels, calibration and stratified permutation rows -- each against an independent reference
(the file itself read with plain pandas, scikit-learn, a direct numpy computation)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor

from riskdask.coup import backtest as bt
from riskdask.coup.calibration import brier_decomposition, reliability_table
from riskdask.coup.evaluate import latest_month_rows, league_table, stratified_rows
from riskdask.coup.forest import as_float32
from riskdask.coup.prepare import feature_matrix, lead_target, month_index
from riskdask.coup.reign import read_reign_csv, resolve_features, validate_panel
from riskdask.coup.schema import DEFAULT_NUMERIC_FEATURES
from riskdask.engine import Engine, reduce_local
from riskdask.errors import ConfigError, InputError

LEADER_MONTHS = Path(__file__).parent / "data" / "coup_reign_leader_months.csv"


@pytest.fixture(scope="module")
def raw():
    return read_reign_csv(LEADER_MONTHS)


def _load(frame, source="f.csv", **kw):
    choice = resolve_features(frame.columns, source=source, **kw)
    return validate_panel(frame, source=source, numeric_features=choice.features), choice


def test_leader_month_excerpt_loads_as_it_is(raw):
    loaded, choice = _load(raw, str(LEADER_MONTHS))
    frame = loaded.frame
    # the README's figures, recounted from the file with plain pandas
    assert loaded.n_rows_read == len(raw) == 7814 and len(frame) == 7814
    assert loaded.exclusions == {}
    assert int(frame["pt_attempt"].sum()) == int(raw["pt_attempt"].sum()) == 88
    assert int(frame["pt_suc"].sum()) == 45
    in_change = frame.duplicated(["ccode", "year", "month"], keep=False)
    assert int(in_change.sum()) == 324
    assert choice.missing == ["precip"] and "precip" not in choice.features
    assert len(choice.features) == len(DEFAULT_NUMERIC_FEATURES) - 1
    X, names = feature_matrix(frame, choice.features)
    assert X.shape == (7814, 45) and np.isfinite(X).all()
    # sorted by country and month; inside a change month the file's order (outgoing first)
    order = np.lexsort((frame["source_row"], frame["month"], frame["year"], frame["ccode"]))
    np.testing.assert_array_equal(order, np.arange(len(frame)))
    dup = frame[in_change]
    assert (dup.groupby(["ccode", "year", "month"])["source_row"]
            .apply(lambda s: s.is_monotonic_increasing)).all()


def test_duplicate_key_names_both_rows(raw):
    frame = pd.concat([raw, raw.iloc[[17]]], ignore_index=True)    # data row 18 again
    with pytest.raises(InputError) as e:
        _load(frame)
    msg = str(e.value)
    assert "duplicate row key" in msg and "rows 18 and 7815" in msg
    assert "'Ballivian Rojas'" in msg and "row 7815" in msg


def test_explicit_features_and_drop_features(raw):
    with pytest.raises(InputError) as e:
        resolve_features(raw.columns, source="r.csv", features=["age", "precip"])
    assert e.value.column == "precip" and e.value.key == "data.features"
    assert "r.csv" in str(e.value) and "'precip'" in str(e.value)
    c = resolve_features(raw.columns, source="r.csv", features=["age", "tenure_months", "month"],
                         drop_features=["month"])
    assert c.features == ["age", "tenure_months"] and c.dropped == ["month"] and c.missing == []
    c = resolve_features(raw.columns, source="r.csv", drop_features=["precip", "month"])
    assert c.missing == [] and c.dropped == ["month", "precip"]
    assert "month" not in c.features and len(c.features) == 28
    with pytest.raises(ConfigError) as e:
        resolve_features(raw.columns, source="r.csv", drop_features=["agee"])
    assert e.value.key == "data.drop_features" and "'agee'" in str(e.value)


@pytest.mark.parametrize("column,value,words", [
    ("year", 1899, ["year must be 1900-"]),
    ("year", datetime.date.today().year + 2, ["year must be 1900-"]),
    ("tenure_months", -1, ["must not be negative"]),
    ("age", -40, ["must not be negative"]),
    ("lastelection", -0.5, ["must not be negative"]),
    ("loss", -2, ["must not be negative"]),
])
def test_range_checks_name_file_row_column(raw, column, value, words):
    frame = raw.copy()
    frame[column] = frame[column].astype(float)
    frame.loc[99, column] = value
    with pytest.raises(InputError) as e:
        _load(frame, "r.csv")
    assert (e.value.file, e.value.row, e.value.column) == ("r.csv", 100, column)
    for w in words:
        assert w in str(e.value)


def test_lead_target_on_leader_change_months(raw):
    frame = _load(raw)[0].frame
    k = 2
    y, complete = lead_target(frame, k)
    # direct loop: an attempt in country c in month m is any of its leader rows having one
    any_attempt = frame.groupby(["ccode", month_index(frame)])["pt_attempt"].max().to_dict()
    for i, (c, mi) in enumerate(zip(frame["ccode"], month_index(frame))):
        ahead = [any_attempt.get((c, mi + s)) for s in range(1, k + 1)]
        if any(a is None for a in ahead):
            assert not complete[i]
        else:
            assert complete[i] and y[i] == max(ahead)
    # every leader row of a month gets the same lead target
    g = pd.Series(y).groupby([frame["ccode"], month_index(frame)]).nunique(dropna=False)
    assert (g == 1).all()


def test_league_table_one_row_per_country_leader_in_office(raw):
    frame = _load(raw)[0].frame
    # make the latest month a leader-change month for one country: its successor's row after
    last = frame[(frame["year"] == 2019) & (frame["month"] == 3)]
    extra = last.iloc[[0]].assign(leader="Successor", tenure_months=1.0,
                                  source_row=frame["source_row"].max() + 1)
    frame2 = pd.concat([frame, extra]).sort_values(["ccode", "year", "month", "source_row"],
                                                   kind="stable").reset_index(drop=True)
    score = np.linspace(0, 1, len(frame2))
    table, (yy, mm) = league_table(frame2, score, np.full(len(frame2), "test"), 0.5)
    assert (yy, mm) == (2019, 3) and table["ccode"].is_unique and len(table) == 10
    row = table[table["ccode"] == extra["ccode"].iloc[0]].iloc[0]
    assert row["leader"] == "Successor" and row["leader_rows"] == 2
    rows = latest_month_rows(frame2)
    assert len(rows) == 10 and (frame2.loc[rows, "year"] == 2019).all()


# ----------------------------------------------------------------------------- backtest
@pytest.fixture(scope="module")
def small_problem(raw):
    frame = _load(raw)[0].frame
    X, _ = feature_matrix(frame, [f for f in DEFAULT_NUMERIC_FEATURES if f != "precip"])
    return frame, as_float32(X), frame["pt_attempt"].to_numpy(np.float64), month_index(frame)


def _shared(X, y, mi, folds, lead=0):
    rows, offsets = bt.pooled_layout(folds)
    return {"X": X, "y": y, "month_idx": mi, "lead_months": lead, "pooled_rows": rows,
            "offsets": offsets, "cutoffs": np.array([f.cutoff for f in folds])}


def test_backtest_kernels_match_sklearn_and_never_see_the_test_year(small_problem):
    frame, X, y, mi = small_problem
    folds = bt.year_folds(mi, [1985, 1986], models=("forest", "hgb", "logistic"))
    folds.append(bt.month_fold(mi, int(mi.max())))
    tasks = bt.backtest_tasks(folds, n_trees=6, trees_per_task=3)
    assert [t.fold for t in tasks][:1] == [2]                    # the latest cut-off first
    chunks = bt.task_chunks(tasks, folds, 11)
    shared = _shared(X, y, mi, folds)
    parts = [bt.backtest_kernel(c, shared, tasks, bt.MODELS, {"max_depth": 6}) for c in chunks]
    sums = reduce_local(parts, bt.combine_pooled)
    pooled = bt.pooled_table(frame, y, folds, bt.MODELS, sums)
    # no model saw its test period: last training month strictly before every predicted row
    test_m = pooled["year"] * 12 + pooled["month"] - 1
    train_m = pooled["train_last_year"] * 12 + pooled["train_last_month"] - 1
    assert (train_m < test_m).all() and (pooled["train_last_year"] < pooled["year"]).where(
        pooled["fold_kind"] == "year", True).all()
    assert set(pooled.loc[pooled["fold_kind"] == "league", "model"]) == {"forest"}
    # one fit per fold for hgb equals scikit-learn's own, with the chunk's random_state
    from riskdask.coup.forest import chunk_random_state
    i = next(i for i, t in enumerate(tasks) if t.model == "hgb" and t.fold == 0)
    train = np.flatnonzero(mi < 12 * 1985)
    ref = HistGradientBoostingClassifier(random_state=chunk_random_state(chunks[i].seed)).fit(
        X[train], y[train].astype(int)).predict_proba(X[folds[0].test])[:, 1]
    got = pooled[(pooled["model"] == "hgb") & (pooled["fold"] == "1985")]
    np.testing.assert_allclose(got["probability"], ref, rtol=0, atol=1e-15)
    # a forest task's sum is n_trees times sklearn's forest.predict with its random_state
    j = next(i for i, t in enumerate(tasks) if t.model == "forest" and t.fold == 1)
    train = np.flatnonzero(mi < 12 * 1986)
    rf = RandomForestRegressor(n_estimators=3, random_state=chunk_random_state(chunks[j].seed),
                               max_depth=6, n_jobs=1).fit(X[train], y[train])
    lo, hi = shared["offsets"][1], shared["offsets"][2]
    np.testing.assert_allclose(parts[j].dense().sums[0, lo:hi], 3 * rf.predict(X[folds[1].test]),
                               rtol=1e-12, atol=1e-12)
    assert (sums.fits[0, :] == 6).all() and sums.fits[1, 2] == 0
    per_year = bt.per_year_table(pooled[pooled["fold_kind"] == "year"], 0.05)
    assert set(per_year["test_year"]) == {1985, 1986}
    att = {yy: int(y[mi // 12 == yy].sum()) for yy in (1985, 1986)}
    for _, r in per_year.iterrows():
        assert r["attempts"] == att[r["test_year"]]
        assert (r["note"] == "no attempt") == (att[r["test_year"]] == 0)
        assert (r["roc_auc"] is None or np.isnan(r["roc_auc"])) == (att[r["test_year"]] == 0)


def test_lead_months_training_rows_are_settled_before_the_cutoff():
    mi = np.arange(24000, 24036)
    rows = bt.training_rows(mi, 24024, 3)
    assert mi[rows].max() + 3 < 24024 and len(rows) == 21


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_against_direct_numpy(strategy):
    rng = np.random.default_rng(3)
    p = rng.beta(0.3, 20, 5000)
    y = (rng.random(5000) < p * 1.3).astype(float)
    table = reliability_table(p, y, 8, strategy)
    d = brier_decomposition(p, y, 8, strategy)
    if strategy == "quantile":
        edges = np.unique(np.r_[0.0, np.quantile(p, np.arange(1, 8) / 8), 1.0])
    else:
        edges = np.linspace(0, 1, 9)
    rel = res = wbv = wbc = 0.0
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p > lo) & (p <= hi) if lo > 0 else (p >= 0) & (p <= hi)
        if not m.any():
            continue
        pk, ok = p[m].mean(), y[m].mean()
        rows.append((m.sum(), pk, ok))
        rel += m.sum() * (pk - ok) ** 2
        res += m.sum() * (ok - y.mean()) ** 2
        wbv += ((p[m] - pk) ** 2).sum()
        wbc += 2 * ((y[m] - ok) * (p[m] - pk)).sum()
    n = len(p)
    ref = np.array(rows)
    np.testing.assert_array_equal(table["count"], ref[:, 0])
    np.testing.assert_allclose(table["mean_predicted"], ref[:, 1], rtol=1e-12)
    np.testing.assert_allclose(table["observed_rate"], ref[:, 2], rtol=1e-12)
    assert d["reliability"] == pytest.approx(rel / n, rel=1e-10)
    assert d["resolution"] == pytest.approx(res / n, rel=1e-10)
    assert d["uncertainty"] == pytest.approx(y.mean() * (1 - y.mean()), rel=1e-12)
    assert d["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    parts = (d["reliability"] - d["resolution"] + d["uncertainty"] + d["within_bin_variance"]
             - d["within_bin_covariance"])
    assert parts == pytest.approx(d["brier"], abs=1e-14)
    assert d["within_bin_variance"] == pytest.approx(wbv / n, rel=1e-10)
    assert d["within_bin_covariance"] == pytest.approx(wbc / n, rel=1e-9, abs=1e-15)
    assert ((table["observed_low95"] <= table["observed_rate"])
            & (table["observed_rate"] <= table["observed_high95"])).all()


# ----------------------------------------------------------------------------- permutation
def test_stratified_permutation_rows_keep_every_positive():
    y = np.zeros(10_000)
    y[np.random.default_rng(0).choice(10_000, 30, replace=False)] = 1
    rows, w = stratified_rows(y, 2000, seed=4)
    assert len(rows) == 2000 and set(np.flatnonzero(y == 1)) <= set(rows)
    assert w.sum() == pytest.approx(len(y))                       # estimates the whole set
    assert (w[y[rows] == 1] == 1).all()
    again, _ = stratified_rows(y, 2000, seed=4)
    np.testing.assert_array_equal(rows, again)
    few, wf = stratified_rows(y, 10, seed=4)                     # fewer rows than positives
    assert len(few) == 30 and (wf == 1).all()


def test_pooled_backtest_on_the_cluster_is_bit_identical_on_1_and_2_workers(local_client,
                                                                          small_problem):
    frame, X, y, mi = small_problem
    folds = bt.year_folds(mi, range(1980, 1990), models=("forest", "logistic"))
    folds.append(bt.month_fold(mi, int(mi.max())))
    kw = dict(lead_months=0, n_trees=4, trees_per_task=2, seed=7, params={"max_depth": 8})
    runs = [bt.run_backtest(Engine(local_client(n)), X, y, mi, folds, **kw) for n in (1, 2)]
    (m1, s1), (m2, s2) = runs
    assert m1 == m2 == ["forest", "logistic"]
    for name in ("sums", "fits", "train_last_month", "n_train"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    # and equal to the same plan run in one process
    tasks = bt.backtest_tasks(folds, 4, 2)
    local = reduce_local([bt.backtest_kernel(c, _shared(X, y, mi, folds), tasks, m1,
                                             {"max_depth": 8})
                          for c in bt.task_chunks(tasks, folds, 7)], bt.combine_pooled)
    np.testing.assert_array_equal(local.dense().sums, s1.sums)
    pooled = bt.pooled_table(frame, y, folds, m1, s1)
    years = pooled[pooled["fold_kind"] == "year"]
    assert (years["train_last_year"] < years["year"]).all()
    assert len(years) == 2 * int((mi // 12 >= 1980).sum() - (mi // 12 >= 1990).sum())


def test_country_bootstrap_weights_equal_resampled_rows():
    """One replicate with counts as sample_weight equals the metrics on the resampled rows."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from riskdask.coup.evaluate import bootstrap_intervals

    rng = np.random.default_rng(0)
    p = rng.random(3000) * 0.1
    y = (rng.random(3000) < p).astype(float)
    g = rng.integers(0, 40, 3000)
    iv = bootstrap_intervals(y, p, g, 1, seed=5)
    assert iv["roc_auc"] is None                                   # < 20 replicates
    draw = np.random.default_rng(5).integers(0, 40, 40)
    rows = np.concatenate([np.flatnonzero(g == c) for c in draw])  # countries drawn, repeated
    iv = bootstrap_intervals(y, p, g, 25, seed=5)
    lo, hi = iv["roc_auc"]
    assert lo <= roc_auc_score(y, p) <= hi or hi - lo < 0.2
    # the first replicate's ROC-AUC and PR-AUC by explicit resampling
    ref_auc = roc_auc_score(y[rows], p[rows])
    ref_ap = average_precision_score(y[rows], p[rows])
    w = np.bincount(draw, minlength=40)[g]
    assert roc_auc_score(y[w > 0], p[w > 0], sample_weight=w[w > 0]) == pytest.approx(ref_auc)
    assert (average_precision_score(y[w > 0], p[w > 0], sample_weight=w[w > 0])
            == pytest.approx(ref_ap))
    # the one-sort weighted curves equal sklearn's with sample_weight, ties included
    from riskdask.coup.evaluate import _SortedScores
    pt = np.round(p, 2)                                           # many tied scores
    for wt in (w, np.ones_like(w), rng.integers(0, 4, len(w))):
        auc, ap = _SortedScores(y, pt).scores(wt)
        assert auc == pytest.approx(roc_auc_score(y, pt, sample_weight=wt), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(y, pt, sample_weight=wt), abs=1e-12)


def test_calibration_gives_exact_zeros_a_bin_of_their_own():
    rng = np.random.default_rng(8)
    p = np.where(rng.random(4000) < 0.8, 0.0, rng.beta(0.5, 30, 4000))
    y = (rng.random(4000) < p + 0.002).astype(float)
    table = reliability_table(p, y, 5)
    zero = p == 0
    q = np.quantile(p[~zero], [0.25, 0.5, 0.75])
    groups = [zero] + [(p > lo) & (p <= hi) for lo, hi in zip(np.r_[0, q], np.r_[q, 1])]
    np.testing.assert_array_equal(table["count"], [g.sum() for g in groups])
    np.testing.assert_allclose(table["observed_rate"], [y[g].mean() for g in groups],
                               rtol=1e-12)
    assert table["upper"].iloc[0] == 0 and table["lower"].iloc[0] == 0
    d = brier_decomposition(p, y, 5)
    assert d["n_bins"] == 5
    parts = (d["reliability"] - d["resolution"] + d["uncertainty"] + d["within_bin_variance"]
             - d["within_bin_covariance"])
    assert parts == pytest.approx(np.mean((p - y) ** 2), abs=1e-14)


def test_pooled_spans_add_like_dense_sums_bit_for_bit():
    """A backtest partial covers its fold's rows only; combining spans (overlapping, adjacent
    or apart, in any tree) equals adding the same partials over all rows."""
    rng = np.random.default_rng(3)
    n_pooled, n_folds = 50, 4
    spans = [(0, 10), (5, 20), (30, 41), (41, 50), (12, 12), (0, 50)]
    parts, dense = [], []
    for k, (lo, hi) in enumerate(spans):
        p = bt.empty_pooled(2, n_pooled, n_folds, lo, hi)
        p.sums[k % 2] = rng.random(hi - lo) * 10.0 ** rng.integers(-9, 3)
        p.train_last_month[k % 2] = rng.integers(0, 400)
        p.fits[k % 2, k % n_folds] = k + 1
        p.n_train[k % 2, k % n_folds] = 10 * k
        parts.append(p)
        dense.append(p.dense())
    for order in (parts, parts[::-1]):
        got = reduce_local(list(order), bt.combine_pooled).dense()
        acc = dense[0] if order is parts else dense[-1]
        rest = dense[1:] if order is parts else dense[-2::-1]
        want = acc
        for d in rest:
            want = bt.PooledSums(want.sums + d.sums, want.fits + d.fits,
                                 np.maximum(want.train_last_month, d.train_last_month),
                                 np.maximum(want.n_train, d.n_train))
        # a left-to-right chain over dense arrays: reduce_local's tree adds in another
        # order where three or more partials meet, so the sums agree to rounding there
        np.testing.assert_allclose(got.sums, want.sums, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(got.train_last_month, want.train_last_month)
        np.testing.assert_array_equal(got.fits, want.fits)
        np.testing.assert_array_equal(got.n_train, want.n_train)
        assert got.sums.shape == (2, n_pooled) and got.start == 0
    # bit for bit against the same tree over dense partials
    assert np.array_equal(reduce_local(parts, bt.combine_pooled).dense().sums,
                          reduce_local(dense, bt.combine_pooled).dense().sums)
