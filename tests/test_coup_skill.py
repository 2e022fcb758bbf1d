"""Skill against the base rate, paired comparisons, streams keyed by model, out-of-sample
decisions, ties in the league table and no leakage with leads -- each against a direct
computation (numpy / scikit-learn), never against the code under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from riskdask.coup import backtest as bt
from riskdask.coup import decisions, evaluate
from riskdask.coup.forest import as_float32
from riskdask.coup.prepare import feature_matrix, month_index, purge_overlapping
from riskdask.coup.reign import read_reign_csv, resolve_features, validate_panel
from riskdask.coup.sweep import optimal_thresholds, sweep_table, threshold_grid
from riskdask.coup.tasks import sweep_task
from riskdask.engine import plan_chunks, reduce_local

LEADER_MONTHS = Path(__file__).parent / "data" / "coup_reign_leader_months.csv"


def _rare(seed=0, n=4000, groups=30):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 40, n)
    y = (rng.random(n) < p).astype(float)
    return p, y, rng.integers(0, groups, n)


def test_skill_scores_against_direct_numpy():
    p, y, _ = _rare()
    rate = 0.0123
    s = evaluate.skill_scores(y, p, rate)
    bs, bs_ref = np.mean((p - y) ** 2), np.mean((rate - y) ** 2)
    assert s["brier_skill"] == pytest.approx(1 - bs / bs_ref, rel=1e-12)
    q = np.clip(p, 1e-6, 1 - 1e-6)
    ll = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    ll_ref = -np.mean(y * np.log(rate) + (1 - y) * np.log(1 - rate))
    assert evaluate.log_loss(y, p) == pytest.approx(ll, rel=1e-12)
    assert evaluate.log_loss(y, p) == pytest.approx(log_loss(y, q), rel=1e-10)
    assert s["log_loss_skill"] == pytest.approx(1 - ll / ll_ref, rel=1e-12)
    assert s["pr_auc_base"] == y.mean()
    # a constant forecast: PR-AUC = the base rate, skill 0 against itself
    const = np.full(len(y), rate)
    assert average_precision_score(y, const) == pytest.approx(s["pr_auc_base"])
    assert evaluate.skill_scores(y, const, rate)["brier_skill"] == pytest.approx(0, abs=1e-15)
    # a forest's exact zeros on attempts: finite log loss, worse than the base rate
    zeros = np.where(y == 1, 0.0, p)
    assert evaluate.skill_scores(y, zeros, rate)["log_loss_skill"] < 0
    # no division by a reference that is zero
    assert evaluate.skill(0.1, 0.0) is None and evaluate.skill(None, 1.0) is None
    assert evaluate.binary_scores(y, p)["brier"] == pytest.approx(brier_score_loss(y, p))


def test_paired_bootstrap_against_explicit_resampling():
    p, y, g = _rare(1)
    rng = np.random.default_rng(9)
    other = np.clip(p + rng.normal(0, 0.01, len(p)), 0, 1)
    clim = np.full(len(y), y.mean())
    preds = {"a": p, "b": other, "climatology": clim}
    n_boot = 30
    iv, diff = evaluate.paired_bootstrap(y, preds, g, n_boot, seed=4)
    # direct: the same draws of countries, the rows of each drawn country repeated
    codes = np.unique(g)
    draw_rng = np.random.default_rng(4)
    d = {k: [] for k in ("roc_auc", "pr_auc", "brier", "log_loss")}
    bss_a = []
    for _ in range(n_boot):
        drawn = draw_rng.integers(0, len(codes), len(codes))
        rows = np.concatenate([np.flatnonzero(g == codes[c]) for c in drawn])
        yy = y[rows]
        sa = [roc_auc_score(yy, p[rows]), average_precision_score(yy, p[rows]),
              brier_score_loss(yy, p[rows]), evaluate.log_loss(yy, p[rows])]
        sb = [roc_auc_score(yy, other[rows]), average_precision_score(yy, other[rows]),
              brier_score_loss(yy, other[rows]), evaluate.log_loss(yy, other[rows])]
        for k, va, vb in zip(d, sa, sb):
            d[k].append(va - vb)
        bss_a.append(1 - sa[2] / brier_score_loss(yy, clim[rows]))
    ab = diff[(diff["model_a"] == "a") & (diff["model_b"] == "b")].set_index("metric")
    for k, v in d.items():
        assert ab.loc[k, "low95"] == pytest.approx(np.quantile(v, 0.025), rel=1e-9, abs=1e-12)
        assert ab.loc[k, "high95"] == pytest.approx(np.quantile(v, 0.975), rel=1e-9, abs=1e-12)
        assert ab.loc[k, "replicates"] == n_boot
    assert ab.loc["brier", "difference"] == pytest.approx(
        brier_score_loss(y, p) - brier_score_loss(y, other))
    lo, hi = iv["a"]["brier_skill"]
    assert lo == pytest.approx(np.quantile(bss_a, 0.025)) and hi == pytest.approx(
        np.quantile(bss_a, 0.975))
    # every pair is there, and `better` follows the interval and the metric's direction
    assert len(diff) == 3 * 4
    for r in diff.itertuples():
        if r.better:
            assert r.low95 > 0 or r.high95 < 0
    # adding a model changes no other model's numbers (one draw of countries per replicate)
    iv2, diff2 = evaluate.paired_bootstrap(y, {"a": p, "z": p[::-1].copy(), "b": other,
                                                "climatology": clim}, g, n_boot, seed=4)
    assert iv2["a"] == iv["a"] and iv2["b"] == iv["b"]
    pd.testing.assert_frame_equal(
        diff2[(diff2["model_a"] == "a") & (diff2["model_b"] == "b")].reset_index(drop=True),
        diff[(diff["model_a"] == "a") & (diff["model_b"] == "b")].reset_index(drop=True))


@pytest.fixture(scope="module")
def excerpt():
    raw = read_reign_csv(LEADER_MONTHS)
    choice = resolve_features(raw.columns, source="x")
    frame = validate_panel(raw, source="x", numeric_features=choice.features).frame
    X, _ = feature_matrix(frame, choice.features)
    return frame, as_float32(X), frame["pt_attempt"].to_numpy(np.float64), month_index(frame)


def _local_backtest(X, y, mi, folds, seed=3):
    tasks = bt.backtest_tasks(folds, n_trees=4, trees_per_task=2)
    models = [m for m in bt.MODELS if any(m in f.models for f in folds)]
    rows, offsets = bt.pooled_layout(folds)
    shared = {"X": X, "y": y, "month_idx": mi, "lead_months": 0, "pooled_rows": rows,
              "offsets": offsets, "cutoffs": np.array([f.cutoff for f in folds])}
    parts = [bt.backtest_kernel(c, shared, tasks, models, {"max_depth": 5})
             for c in bt.task_chunks(tasks, folds, seed)]
    return models, reduce_local(parts, bt.combine_pooled).dense()


def test_adding_a_model_changes_no_other_models_numbers(excerpt):
    frame, X, y, mi = excerpt
    out, clim = {}, None
    for models in (("forest", "climatology"), ("forest", "hgb", "logistic", "climatology"),
                   ("logistic", "forest", "climatology")):
        folds = bt.year_folds(mi, [1990, 1991], models=models)
        names, sums = _local_backtest(X, y, mi, folds)
        table = bt.pooled_table(frame, y, folds, names, sums)
        out[models] = {m: g["probability"].to_numpy() for m, g in table.groupby("model")}
        clim = table[table["model"] == "climatology"]
    a, b, c = out.values()
    np.testing.assert_array_equal(a["forest"], b["forest"])
    np.testing.assert_array_equal(a["forest"], c["forest"])
    np.testing.assert_array_equal(b["logistic"], c["logistic"])
    # and the climatology forecast is the training rows' attempt rate of each fold
    for year, g in clim.groupby("test_year"):
        assert np.all(g["probability"] == np.mean(y[mi < 12 * year]))


def _pooled(seed=0, years=range(2000, 2008), n=300):
    rng = np.random.default_rng(seed)
    rows = []
    for yr in years:
        for model in ("forest", "logistic"):
            p = rng.beta(0.6, 20, n)
            y = (rng.random(n) < p * 1.5).astype(float)
            rows.append(pd.DataFrame({"model": model, "test_year": yr, "year": yr,
                                      "month": rng.integers(1, 13, n),
                                      "ccode": np.arange(n) % 25, "probability": p,
                                      "target": y}))
    return pd.concat(rows, ignore_index=True)


def test_out_of_fold_threshold_never_sees_its_test_year():
    pooled = _pooled()
    grid = threshold_grid()
    table = decisions.rolling_threshold(pooled, grid)
    f = pooled[pooled["model"] == "forest"]
    for r in table[table["model"] == "forest"].itertuples():
        before = f[f["test_year"] < r.test_year]
        if before.empty:
            assert np.isnan(r.threshold) and r.chosen_on_years == ""
            continue
        # the same optimum as the project's exact 1,000-threshold sweep on the earlier years
        counts = sweep_task(plan_chunks(len(before), len(before), 0)[0], rows={
            "p": before["probability"].to_numpy(), "y": before["target"].to_numpy()})
        ref = optimal_thresholds(sweep_table(counts, grid), 0.5).f1.threshold
        assert r.threshold == pytest.approx(ref, abs=1e-12)
        now = f[f["test_year"] == r.test_year]
        flag = now["probability"].to_numpy() > r.threshold
        assert r.TP == int(np.sum(flag & (now["target"].to_numpy() == 1)))
        assert r.FP == int(np.sum(flag & (now["target"].to_numpy() == 0)))
    # changing a test year's outcomes never moves that year's threshold
    moved = pooled.copy()
    last = moved["test_year"] == 2007
    moved.loc[last, "target"] = 1 - moved.loc[last, "target"]
    t2 = decisions.rolling_threshold(moved, grid)
    np.testing.assert_array_equal(t2["threshold"], table["threshold"])
    s = decisions.rolling_threshold_summary(table).set_index("model")
    scored = table[(table["model"] == "forest") & table["threshold"].notna()]
    tp, fp, fn = scored["TP"].sum(), scored["FP"].sum(), scored["FN"].sum()
    assert s.loc["forest", "f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_isotonic_recalibration_is_fitted_on_earlier_years_only():
    pooled = _pooled(2)
    out = decisions.rolling_isotonic(pooled)
    f = pooled[pooled["model"] == "forest"]
    for yr in (2003, 2007):
        before, now = f[f["test_year"] < yr], f[f["test_year"] == yr]
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(
            before["probability"], before["target"])
        np.testing.assert_allclose(out[now.index], iso.predict(now["probability"]), atol=1e-15)
    first = f[f["test_year"] == 2000]
    np.testing.assert_array_equal(out[first.index], first["probability"])  # nothing earlier
    moved = pooled.copy()
    moved.loc[moved["test_year"] == 2007, "target"] = 1.0
    np.testing.assert_array_equal(decisions.rolling_isotonic(moved)[f.index[
        f["test_year"] == 2007]], out[f.index[f["test_year"] == 2007]])


def test_alert_budget_counts_hits_and_shares_ties():
    pooled = pd.DataFrame({
        "model": "m", "test_year": 2000, "year": 2000, "month": [1] * 5 + [2] * 5,
        "ccode": [1, 2, 3, 4, 5] * 2,
        "probability": [0.9, 0.5, 0.5, 0.5, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2],
        "target": [0, 1, 0, 0, 0, 0, 0, 1, 0, 0.0]})
    [r] = decisions.alert_budget(pooled, 2).itertuples()
    # month 1: country 1 flagged, one slot shared by three tied at 0.5 (one attempt): 1/3 hit
    # month 2: all five tied, two slots: 2/5 of the one attempt
    assert r.flags == pytest.approx(4) and r.hits == pytest.approx(1 / 3 + 2 / 5)
    assert r.attempts == 2 and r.misses == pytest.approx(2 - 1 / 3 - 2 / 5)
    assert r.random_recall == pytest.approx((2 / 5 + 2 / 5) / 2)


def test_league_ties_share_a_rank_and_are_not_ordered_by_code():
    panel = pd.DataFrame({"ccode": [5, 1, 3, 2, 4], "country": ["E", "D", "C", "B", "A"],
                          "leader": list("vwxyz"), "year": 2019, "month": 3,
                          "government": "Monarchy"}).sort_values("ccode").reset_index(drop=True)
    score = panel["ccode"].map({1: 0.0, 2: 0.3, 3: 0.0, 4: 0.3, 5: 0.1}).to_numpy()
    table, _ = evaluate.league_table(panel, score, np.full(5, "t"), 0.2)
    assert table["country"].tolist() == ["A", "B", "E", "C", "D"]
    assert table["rank"].tolist() == [1, 1, 3, 4, 4] and table["tied"].tolist() == [2, 2, 1, 2, 2]


def test_purged_split_drops_every_overlapping_training_row():
    rng = np.random.default_rng(0)
    ccode = rng.integers(0, 5, 3000)
    mi = rng.integers(0, 200, 3000)
    idx = np.arange(3000)
    test = np.sort(rng.choice(idx, 900, replace=False))
    train = np.setdiff1d(idx, test)
    for k in (1, 2, 3):
        keep, gone = purge_overlapping(train, test, ccode, mi, k)
        assert np.array_equal(np.sort(np.concatenate([keep, gone])), train)
        # direct: a training row overlaps when a test row of its country is < k months away
        for i in train[:400]:
            near = np.any((ccode[test] == ccode[i]) & (np.abs(mi[test] - mi[i]) < k))
            assert near == (i in set(gone))


def test_random_split_with_a_lead_refuses_and_says_why(cli):
    r = cli("validate", "coup", "--set", f"data.path={LEADER_MONTHS}",
            "--set", "split.lead_months=3")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert "split.kind" in r.err and "temporal" in r.err and "leaks" in r.err


def test_random_split_with_a_one_month_lead_purges_shared_country_months(cli):
    r = cli("validate", "coup", "--set", f"data.path={LEADER_MONTHS}",
            "--set", "split.lead_months=1")
    assert r.code == 0, r.err
    assert "purged" in r.out + r.err and "same country-month" in r.out + r.err
