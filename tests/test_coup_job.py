"""The coup job end to end on real clusters: bit-identical on 1 and 2 workers and with a
worker killed mid-run; outputs as COUP.md lists; every bad-input case through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (average_precision_score, brier_score_loss, r2_score,
                             roc_auc_score)

from conftest import REPO, assert_runs_identical, leftovers, run_dirs
from riskdask.coup.schema import GOVERNMENT_TYPES
from riskdask.coup.synthetic import synthetic_reign
from riskdask.coup.sweep import threshold_grid
from riskdask import run_job

# A small but complete run: 40 synthetic countries (~26k rows), 12 trees in 6 sub-forests.
SMALL = ["data.synthetic_countries=40", "forest.n_trees=12", "forest.trees_per_task=2",
         "forest.max_depth=12", "importance.permutation_rows=300",
         "importance.permutation_repeats=2", "backtest.first_test_year=2017",
         "backtest.n_trees=4", "backtest.trees_per_task=2", 'backtest.models=["forest","logistic"]',
         "league.n_trees=4"]
TABLES = ("sweep", "confusion_tables", "importances", "predictions", "league_table", "backtest",
          "backtest_predictions", "backtest_sweep", "calibration", "brier_decomposition",
          "model_comparison", "convergence")


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run_dir / "tables" / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def small_runs(local_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("coup_runs")
    one = run_job("coup", overrides=SMALL, client=local_client(1), out=out / "w1")
    two = run_job("coup", overrides=SMALL, client=local_client(2), out=out / "w2")
    return one, two


def test_bit_identical_on_1_and_2_workers(small_runs):
    one, two = small_runs
    assert_runs_identical(one, two, TABLES)
    assert (one.manifest["cluster"]["n_workers"], two.manifest["cluster"]["n_workers"]) == (1, 2)


def test_outputs_are_complete_and_consistent(small_runs):
    run, _ = small_runs
    s = run.summary
    files = {p.name for p in run.run_dir.rglob("*") if p.is_file()}
    assert {"summary.json", "manifest.json", "report.html", "precision_recall_f1_vs_threshold.png",
            "pr_curve.png", "importances_top20.png", "league_table_top20.png"} <= files
    t = _tables(run.run_dir)
    sweep = t["sweep"]
    assert len(sweep) == 1000 and np.array_equal(sweep["threshold"], threshold_grid())
    # every threshold's counts add up to the test set; TP/FP fall as the threshold rises
    assert ((sweep[["FN", "TP", "TN", "FP"]].sum(axis=1)) == s["n_test"]).all()
    assert (np.diff(sweep["TP"]) <= 0).all() and (np.diff(sweep["FP"]) <= 0).all()
    assert (sweep["TP"] + sweep["FN"] == s["attempts_test"]).all()
    # independent re-computation from the written test predictions with sklearn
    pred = t["predictions"]
    test = pred[pred["split"] == "test"]
    y, p = test["target"].to_numpy(), test["probability"].to_numpy()
    assert s["test_roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert s["test_pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert s["test_brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert s["test_r2"] == pytest.approx(r2_score(y, p), abs=1e-12)
    for name, opt in s["optimal_thresholds"].items():
        thr = opt["threshold"]
        tp = int(((p > thr) & (y == 1)).sum())
        fp = int(((p > thr) & (y == 0)).sum())
        assert opt["confusion"]["TP"] == tp and opt["confusion"]["FP"] == fp, name
    assert list(s["confusion_tables"]["f1"]) == ["FN", "TP", "TN", "FP"]
    f1 = sweep["f1"].to_numpy()
    assert s["optimal_thresholds"]["f1"]["index"] == int(np.argmax(f1))
    # OOB score: sklearn's R² over training rows that have an OOB prediction
    train = pred[(pred["split"] == "train") & (pred["oob_trees"] > 0)]
    assert s["oob_score"] == pytest.approx(r2_score(train["target"], train["probability"]),
                                           abs=1e-12)
    assert s["oob_rows_without_trees"] == int(((pred["split"] == "train")
                                               & (pred["oob_trees"] == 0)).sum())
    # the league table: the latest month, every country once, honest scores only, ranked
    league = t["league_table"]
    assert s["league_month"] == "2019-03" and league["country"].is_unique
    assert set(league["score_source"]) == {"temporal"}          # the temporal model ranks
    probs = league["probability"].dropna().to_numpy()
    assert (np.diff(probs) <= 0).all()
    thr = s["backtest"]["optimal_thresholds"]["f1"]["threshold"]
    assert (league["clears_f1_threshold"] == (league["probability"] > thr)).all()
    imp = t["importances"]
    assert len(imp) == s["n_features"] == 46
    assert imp["impurity_importance"].sum() == pytest.approx(1.0, abs=1e-12)
    assert imp["permutation_importance"].notna().all()
    assert imp["permutation_importance_std"].notna().all()
    # every test attempt is among the permuted rows
    assert s["permutation_attempts"] == s["attempts_test"] and s["permutation_rows"] == 300
    bt = t["backtest"]
    assert set(bt["test_year"]) == {2017, 2018, 2019} and set(bt["model"]) == {"forest",
                                                                              "logistic"}
    assert bt.loc[bt["model"] == "forest", "attempts"].sum() == s["backtest"]["attempts"]
    # convergence: the last level is the whole forest
    conv = t["convergence"]
    assert conv["n_trees"].iloc[-1] == s["n_trees"]
    assert conv["test_brier"].iloc[-1] == pytest.approx(s["test_brier"], abs=1e-15)
    assert conv["oob_r2"].iloc[-1] == pytest.approx(s["oob_score"], abs=1e-15)
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert (any(e["source"] == "oob" for e in manifest["exclusions"])
            == (s["oob_rows_without_trees"] > 0))


def test_worker_killed_mid_run_gives_identical_results(cli_cluster, local_client, tmp_path):
    # one tree per task and deeper trees: enough tasks that most are still to run at the kill
    args = ["data.synthetic_countries=40", "forest.n_trees=24", "forest.trees_per_task=1",
            "importance.permutation_repeats=0", "backtest.enabled=false"]
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "riskdask", "run", "coup", "--scheduler", cli_cluster.address,
           "--out", str(out), "--quiet"]
    for a in args:
        cmd += ["--set", a]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cli_cluster.wait_until("subforests-", at_least=2)
    done_at_kill = cli_cluster.tasks_in_memory("subforests-")
    cli_cluster.kill_worker("worker-2")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert cli_cluster.n_workers() == 1
    assert done_at_kill < 24                             # the kill came mid-forest
    [run] = run_dirs(out, "coup")
    reference = run_job("coup", overrides=args, client=local_client(1), out=tmp_path / "ref")
    assert_runs_identical(run, reference, ("sweep", "predictions", "importances", "league_table"))


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def base_frame():
    frame = synthetic_reign(seed=5, n_countries=8)
    assert frame["pt_attempt"].sum() >= 4
    return frame


def _bad_file(tmp_path, frame) -> Path:
    path = tmp_path / "reign_bad.csv"
    frame.to_csv(path, index=False)
    return path


def _expect_bad_input(cli, tmp_path, path, *words, extra=()):
    out = tmp_path / "runs"
    r = cli("run", "coup", "--set", f"data.path={path}", *extra, "--out", out, "--quiet")
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err   # one message
    assert str(path) in r.err
    for w in words:
        assert w in r.err, (w, r.err)
    assert run_dirs(out, "coup") == []                                    # nothing written
    assert [p for p in leftovers(out) if p != out / "coup"] == []
    assert not (out / "coup").exists() or not any((out / "coup").iterdir())
    return r


def test_bad_missing_required_column(cli, tmp_path, base_frame):
    # identifiers and the target are required; a missing seed *feature* is left out (below)
    path = _bad_file(tmp_path, base_frame.drop(columns=["leader"]))
    _expect_bad_input(cli, tmp_path, path, "column 'leader'", "missing required column")


def test_bad_non_numeric_value(cli, tmp_path, base_frame):
    frame = base_frame.astype({"age": object})
    frame.loc[10, "age"] = "fifty"
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "row 11", "column 'age'", "'fifty'")


def test_bad_pt_attempt_not_binary(cli, tmp_path, base_frame):
    frame = base_frame.copy()
    frame.loc[20, "pt_attempt"] = 2
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "row 21", "column 'pt_attempt'", "0 or 1")


def test_bad_unknown_government_label_as_a_real_process(run_cli, tmp_path, base_frame):
    frame = base_frame.copy()
    frame.loc[30, "government"] = "Theocracy"
    path = _bad_file(tmp_path, frame)
    out = tmp_path / "runs"
    r = run_cli("run", "coup", "--set", f"data.path={path}", "--out", out, "--quiet")
    assert r.returncode == 2, r.stderr
    assert str(path) in r.stderr and "row 31" in r.stderr and "column 'government'" in r.stderr
    assert "'Theocracy'" in r.stderr
    assert all(g in r.stderr for g in GOVERNMENT_TYPES)                  # lists the known ones
    assert run_dirs(out, "coup") == []
    # `validate` finds the same problem without running anything
    r2 = run_cli("validate", "coup", "--set", f"data.path={path}")
    assert r2.returncode == 2 and "'Theocracy'" in r2.stderr


def test_bad_duplicate_country_month(cli, tmp_path, base_frame):
    frame = pd.concat([base_frame, base_frame.iloc[[40]]], ignore_index=True)
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, f"row {len(frame)}", "duplicate row key",
                      f"rows 41 and {len(frame)}")


def test_bad_month_outside_1_to_12(cli, tmp_path, base_frame):
    frame = base_frame.copy()
    frame.loc[50, "month"] = 13
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "row 51", "column 'month'", "1-12")


def test_bad_no_positive_rows_in_training_set(cli, tmp_path, base_frame):
    frame = base_frame.copy()
    early = frame["year"] <= 1990
    assert frame.loc[~early, "pt_attempt"].sum() > 0
    frame.loc[early, ["pt_attempt", "pt_suc"]] = 0
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "column 'pt_attempt'", "no positive rows",
                      "training set",
                      extra=("--set", "split.kind=temporal",
                             "--set", "split.train_until_year=1990"))


# ----------------------------------------------------------------------------- other paths
EXCERPT = Path(__file__).parent / "data" / "coup_reign_excerpt.csv"


def test_validate_and_run_on_real_reign_rows(cli, local_client, tmp_path):
    args = ["--set", f"data.path={EXCERPT}", "--set", "backtest.enabled=false"]
    r = cli("validate", "coup", *args)
    assert r.code == 0, r.err
    assert "300 rows" in r.out and "would exclude 10 rows" in r.out
    res = run_job("coup", overrides=[f"data.path={EXCERPT}", "backtest.enabled=false",
                              "forest.n_trees=6", "forest.trees_per_task=3",
                              "importance.permutation_rows=50"],
                   client=local_client(2), out=tmp_path / "runs")
    s = res.summary
    assert s["rows"] == 290 and s["n_features"] == 46 and s["n_train"] + s["n_test"] == 290
    assert res.manifest["excluded_rows_total"] >= 10
    assert res.manifest["inputs"][0]["sha256"] and res.manifest["inputs"][0]["rows"] == 300
    assert len(res.table("sweep")) == 1000


def test_temporal_split_with_lead_months(local_client, tmp_path):
    res = run_job("coup", overrides=["data.synthetic_countries=20", "split.kind=temporal",
                              "split.train_until_year=2005", "split.lead_months=3",
                              "forest.n_trees=4", "forest.trees_per_task=2",
                              "forest.max_depth=8", "importance.permutation_repeats=0",
                              "backtest.enabled=false"],
                   client=local_client(2), out=tmp_path / "runs")
    s = res.summary
    pred = res.table("predictions")
    assert pred.loc[pred["split"] == "train", "year"].max() == 2005
    assert pred.loc[pred["split"] == "test", "year"].min() == 2006
    # each country loses its last 3 months (no complete 3-month window ahead): counted
    ex = [e for e in res.manifest["exclusions"] if "next 3 months" in e["reason"]]
    assert ex and ex[0]["count"] == 20 * 3
    # the league ranks the file's latest month (features, no target needed) ...
    assert s["lead_months"] == 3 and s["league_month"] == "2019-03"
    league = res.table("league_table")
    assert set(league["score_source"]) == {"temporal"} and league["ccode"].is_unique
    raw = synthetic_reign(2019, 20)
    assert len(league) == raw.loc[raw["year"].eq(2019) & raw["month"].eq(3), "ccode"].nunique()
    # ... by a model whose every row's target (months m+1..m+3) closed before 2019-03
    assert (league["trained_through"] == "2018-11").all()


# ----------------------------------------------------------------------------- issue 12
def test_bad_year_out_of_range(cli, tmp_path, base_frame):
    frame = base_frame.copy()
    frame.loc[60, "year"] = 1850
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "row 61", "column 'year'", "1900-")


@pytest.mark.parametrize("column", ["tenure_months", "age", "lastelection", "loss"])
def test_bad_negative_count(cli, tmp_path, base_frame, column):
    frame = base_frame.copy()
    frame[column] = frame[column].astype(float)
    frame.loc[70, column] = -3
    path = _bad_file(tmp_path, frame)
    _expect_bad_input(cli, tmp_path, path, "row 71", f"column '{column}'", "negative")


def test_bad_line_with_too_few_fields(cli, tmp_path, base_frame):
    path = _bad_file(tmp_path, base_frame.head(200))
    lines = path.read_text().splitlines()
    lines[81] = ",".join(lines[81].split(",")[:-3])          # data row 81 loses 3 fields
    path.write_text("\n".join(lines) + "\n")
    _expect_bad_input(cli, tmp_path, path, "row 81", "field")


def test_bad_directory_as_data_path(cli, tmp_path):
    d = tmp_path / "reign_dir.csv"
    d.mkdir()
    _expect_bad_input(cli, tmp_path, d, "directory")


def test_bad_explicit_feature_missing_from_file(cli, tmp_path):
    _expect_bad_input(cli, tmp_path, LEADER_MONTHS, "column 'precip'", "key 'data.features'",
                      extra=("--set", 'data.features=["age","precip"]'))


def test_bad_duplicate_leader_month_key(cli, tmp_path):
    lines = LEADER_MONTHS.read_text().splitlines()
    path = tmp_path / "dup.csv"
    path.write_text("\n".join(lines + [lines[18]]) + "\n")   # data row 18 again, at the end
    _expect_bad_input(cli, tmp_path, path, "duplicate row key", "rows 18 and 7815")


LEADER_MONTHS = Path(__file__).parent / "data" / "coup_reign_leader_months.csv"
REAL = [f"data.path={LEADER_MONTHS}", "forest.n_trees=6", "forest.trees_per_task=3",
        "importance.permutation_rows=400", "importance.permutation_repeats=2",
        "backtest.first_test_year=2000", "backtest.n_trees=4", "backtest.trees_per_task=2",
        'backtest.models=["forest","hgb","logistic"]', "backtest.bootstrap_replicates=50",
        "league.n_trees=4"]

@pytest.fixture(scope="module")
def real_runs(local_client, tmp_path_factory):
    """One run on the real-format leader-month file (1 vs 2 workers: ``small_runs``, which
    has the same backtest tables, and tests/test_coup_realdata.py for the plan itself)."""
    out = tmp_path_factory.mktemp("coup_real")
    return (run_job("coup", overrides=REAL, client=local_client(2), out=out / "w2"),)


def test_leader_month_file_runs_without_precip_and_says_so(real_runs):
    (run,) = real_runs
    s = run.summary
    assert s["rows"] == 7814 and s["attempts_train"] + s["attempts_test"] == 88
    assert s["features_missing"] == ["precip"] and s["n_features"] == 45
    [ex] = [e for e in run.manifest["exclusions"] if e["unit"] == "features"]
    assert ex["rows"] == ["precip"] and ex["count"] == 1
    # a feature is not a row: the total counts row exclusions only (here: OOB-less rows)
    assert run.manifest["excluded_rows_total"] == sum(
        e["count"] for e in run.manifest["exclusions"] if e["unit"] == "rows")
    page = (run.run_dir / "report.html").read_text()
    top = page[:page.index("<h2>Figures</h2>")]
    assert "precip" in top and str(LEADER_MONTHS) in top
    assert "data.path=" in top                                     # the overrides, at the top


def test_pooled_backtest_is_out_of_sample_and_scored_like_sklearn(real_runs):
    (run,) = real_runs
    s, pooled = run.summary, run.table("backtest_predictions")
    # every row predicted by a model trained only on earlier years
    assert (pooled["train_last_year"] < pooled["year"]).all()
    assert (pooled["train_last_year"] == pooled["test_year"] - 1).all()
    assert set(pooled["test_year"]) == set(range(2000, 2020))
    f = pooled[pooled["model"] == "forest"]
    y, p = f["target"].to_numpy(), f["probability"].to_numpy()
    b = s["backtest"]
    assert b["attempts"] == int(y.sum()) == int(run.table("predictions").query(
        "year >= 2000")["target"].sum())
    assert b["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert b["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert b["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    lo, hi = b["roc_auc_95"]
    assert lo < hi
    comp = run.table("model_comparison").set_index("model")
    assert list(comp.index) == ["forest", "hgb", "logistic", "climatology", "forest (isotonic)",
                                "hgb (isotonic)", "logistic (isotonic)"]
    # skill against climatology, each fold's training attempt rate, by direct numpy
    clim = pooled[pooled["model"] == "climatology"]
    assert (clim["target"].to_numpy() == y).all()
    rate = run.table("predictions").assign(t=lambda d: d["target"])
    for year, g in clim.groupby("test_year"):
        before = rate.loc[rate["year"] < year, "t"]
        assert g["probability"].iloc[0] == pytest.approx(before.mean(), rel=1e-12)
    bs_ref = np.mean((clim["probability"].to_numpy() - y) ** 2)
    assert comp.loc["forest", "brier_skill"] == pytest.approx(
        1 - np.mean((p - y) ** 2) / bs_ref, rel=1e-10)
    assert comp.loc["climatology", "brier_skill"] == pytest.approx(0.0, abs=1e-15)
    assert comp.loc["forest", "pr_auc_base"] == pytest.approx(y.mean(), rel=1e-12)
    assert comp.loc["forest", "beats_base_rate"] == (comp.loc["forest", "brier_skill"] > 0)
    for m, g in pooled.groupby("model"):
        assert comp.loc[m, "pr_auc"] == pytest.approx(
            average_precision_score(g["target"], g["probability"]), abs=1e-12)
    per_year = run.table("backtest")
    fy = per_year[per_year["model"] == "forest"].set_index("test_year")
    for year, g in f.groupby("test_year"):
        assert fy.loc[year, "attempts"] == int(g["target"].sum())
        assert (fy.loc[year, "note"] == "no attempt") == (g["target"].sum() == 0)
    assert sorted(b["years_without_attempt"]) == sorted(
        int(v) for v in fy.index[fy["attempts"] == 0])
    # calibration tables from the same pooled predictions
    cal = run.table("calibration")
    assert cal["count"].sum() == len(f) and cal["positives"].sum() == int(y.sum())
    d = run.table("brier_decomposition").iloc[0]
    assert d["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert (d["reliability"] - d["resolution"] + d["uncertainty"] + d["within_bin_variance"]
            - d["within_bin_covariance"]) == pytest.approx(d["brier"], abs=1e-12)


def test_league_model_never_saw_the_ranked_month(real_runs):
    (run,) = real_runs
    s, league = run.summary, run.table("league_table")
    assert s["league_month"] == "2019-03" and len(league) == 10 and league["ccode"].is_unique
    assert set(league["score_source"]) == {"temporal"}
    assert (league["trained_through"] == "2019-02").all()
    assert "temporal" in s["league_model"] and "2019-02" in s["league_model"]
    pred = run.table("predictions")
    before = int(((pred["year"] * 12 + pred["month"]) < 2019 * 12 + 3).sum())
    assert (league["n_train"] == before).all()
    assert (league["trained_through"] < s["league_month"]).all()


def test_split_seed_moves_the_split_only(local_client, tmp_path):
    base = ["data.synthetic_countries=20", "forest.n_trees=2", "forest.trees_per_task=2",
            "forest.max_depth=4", "importance.permutation_repeats=0", "backtest.enabled=false",
            "league.model=split", "split.stratify=false"]
    a = run_job("coup", overrides=base, client=local_client(2), out=tmp_path / "a")
    b = run_job("coup", overrides=base + [f"split.seed={a.summary['split_seed']}"],
                 client=local_client(2), out=tmp_path / "b")
    c = run_job("coup", overrides=base + ["split.seed=1"], client=local_client(2),
                out=tmp_path / "c")
    assert a.summary["split_seed"] == 2019
    pa, pb, pc = (r.table("predictions") for r in (a, b, c))
    pd.testing.assert_frame_equal(pa, pb)
    assert not pa["split"].equals(pc["split"])
    s = c.summary
    assert s["attempts_train"] + s["attempts_test"] == int(pc["target"].sum())
    assert s["attempts_test"] == int(pc.loc[pc["split"] == "test", "target"].sum())


def test_validate_names_the_missing_seed_feature(cli):
    r = cli("validate", "coup", "--set", f"data.path={LEADER_MONTHS}")
    assert r.code == 0, r.err
    assert "7814 rows" in r.out or "7,814 rows" in r.out
    assert "would exclude 1 features from reign" in r.out and "precip" in r.out
