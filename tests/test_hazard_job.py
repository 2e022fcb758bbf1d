"""The hazard job end to end on real Dask clusters: determinism, a killed worker, bad input.

Seed: 003_ae2b3031728223ec.txt; spec: HAZARD.md; issue 4.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, assert_runs_identical, leftovers, read_summary, run_dirs
from riskdask import run_job
from riskdask.history import HISTORY_FILE, META_COLUMNS
from riskdask.hazard.panel import Period, build_panel, read_panel_file
from riskdask.hazard.synthetic import generate_panel

SMALL = ["grid.k1.num=9", "grid.k2.num=9", "grid.tile_size=10", "split.n_splits=3",
         "bootstrap.n_boot=24", "bootstrap.chunk_size=5"]
TABLES = ("deviation_surface", "hazard_curves", "closure_next_year", "optimum_per_split", "balance",
          "likelihood_profile", "holdout_scores", "holdout_reliability")


def _same_run(a, b):
    assert_runs_identical(a, b, TABLES)


def test_bit_identical_on_one_and_two_workers(local_client, tmp_path):
    sets = SMALL + ['covariates=["field", "function", "age"]']
    one = run_job("hazard", overrides=sets, client=local_client(1), out=tmp_path / "one")
    two = run_job("hazard", overrides=sets, client=local_client(2), out=tmp_path / "two")
    _same_run(one, two)
    pd.testing.assert_frame_equal(one.table("cox_coefficients"), two.table("cox_coefficients"))
    assert one.table("hazard_curves").hazard_cox_baseline.gt(0).all()
    # the run did real work: 81 points x 3 splits, in 9 tiles, and a finite optimum
    assert one.summary["n_grid_points"] == 81 and one.summary["n_tiles"] == 9
    assert np.isfinite(one.summary["optimum"]["interior"]["dev_mean"])
    surface = one.table("deviation_surface")
    assert surface.dev_mean.notna().all()
    # outputs HAZARD.md asks for
    figs = {p.name for p in (one.run_dir / "figures").glob("*.png")}
    assert {"fig1_hazard_vs_time_at_risk.png", "fig2_dev_vs_k1.png",
            "dev_surface_heatmap.png"} <= figs
    assert (one.run_dir / "report.html").stat().st_size > 10_000
    # next-year probabilities from the person-year model at the likelihood direction (the
    # default): never an exact 0 for an active NPO here (closures exist), and the flagged rows
    # are those whose next-year T passes the largest T of the person-years
    ranked = one.table("closure_next_year")
    pred, lik = one.summary["prediction"], one.summary["likelihood"]
    assert pred["direction"]["theta_deg"] == lik["theta_deg"]
    assert lik["ci95_deg"][0] <= lik["theta_deg"] <= lik["ci95_deg"][1]
    assert set(lik["lr_tests"]) == {"theta = 0 (T0 = N0)", "theta = 45 (seed k1 = k2)",
                                    "theta = 90 (k1 = 0)"}
    assert "likelihood direction" in dict(one.headline)
    assert (ranked.p_close_next_year > 0).all()
    assert ranked.beyond_data.tolist() == (ranked.time_at_risk_next
                                           > pred["largest_time_at_risk"]).tolist()
    assert pred["n_beyond_data"] == int(ranked.beyond_data.sum()) > 0
    assert one.summary["max_stratum_count_difference"] <= 1
    assert abs(one.summary["sample_sizes"][0] - one.summary["sample_sizes"][1]) <= 1


def test_k0_config_and_direction_search_run(local_client, tmp_path):
    k0 = run_job("hazard", REPO / "configs" / "hazard-k0.toml", client=local_client(2),
                 out=tmp_path / "k0", overrides=["grid.k1.num=5", "grid.k2.num=5",
                                                 "split.n_splits=2", "bootstrap.n_boot=0"])
    assert k0.summary["definition"] == "T1" and k0.summary["n_grid_points"] == 5 * 5 * 5
    assert k0.summary["optimum"]["interior"]["k0"] in (0.0, 0.25, 0.5, 1.0, 2.0)
    assert (k0.run_dir / "figures" / "dev_vs_k0.png").exists()
    surface = k0.table("deviation_surface")
    # relative mode: Dev depends on k2/k1 only -> equal on the diagonal k1 = k2 for each k0
    diag = surface[np.isclose(surface.k1, surface.k2)]
    spread = diag.groupby("k0").dev_mean.agg(lambda v: v.max() - v.min())
    assert (spread <= 1e-9 * diag.dev_mean.max()).all()
    d = run_job("hazard", client=local_client(2), out=tmp_path / "dir",
                overrides=["grid.mode=direction", "grid.theta_deg.num=31", "split.n_splits=2",
                           "bootstrap.n_boot=0"])
    assert d.summary["n_grid_points"] == 31
    assert 0.0 < d.summary["optimum"]["interior"]["theta_deg"] < 90.0
    assert (d.run_dir / "figures" / "dev_vs_direction.png").exists()


KILL = ["grid.k1.num=101", "grid.k2.num=101", "grid.tile_size=50", "split.n_splits=40",
        "bootstrap.n_boot=0"]


def test_worker_killed_mid_grid_search_gives_identical_result(cli_cluster, local_client, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "riskdask", "run", "hazard", "--scheduler", cli_cluster.address,
           "--out", str(out), "--quiet"]
    for a in KILL:
        cmd += ["--set", a]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cli_cluster.wait_until("hazard-grid-", at_least=3)  # 3 of 205 tiles done
    done_at_kill = cli_cluster.tasks_in_memory("hazard-grid-")
    cli_cluster.kill_worker("worker-2")
    # really killed mid-grid-search: the job still running, most tiles still to do (~12 here)
    assert proc.poll() is None and done_at_kill < 150
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert cli_cluster.n_workers() == 1
    [run] = run_dirs(out, "hazard")
    reference = run_job("hazard", overrides=KILL, client=local_client(2), out=tmp_path / "ref")
    assert read_summary(run) == reference.summary
    got = pd.read_parquet(run / "tables" / "deviation_surface.parquet")
    pd.testing.assert_frame_equal(got, reference.table("deviation_surface"), check_exact=True)


# -- bad input via the CLI ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def panel_frame():
    return generate_panel(120, Period(), seed=7)


def _write_config(tmp_path, frame, extra=""):
    data = tmp_path / "panel.csv"
    frame.to_csv(data, index=False)
    cfg = tmp_path / "hazard.toml"
    cfg.write_text(f'job = "hazard"\n[data]\npath = "{data}"\n{extra}')
    return cfg, data


def _expect_bad(cli, tmp_path, cfg, *fragments, sets=None):
    out = tmp_path / "runs"
    sets = SUM_SETS if sets is None else sets
    res = cli("run", "hazard", "--config", cfg, "--out", out, "--quiet", *sets)
    assert res.code == 2, res.err
    line = res.err.strip()
    assert line.startswith("error: ") and "\n" not in line
    for f in fragments:
        assert f in line, line
    assert leftovers(out) == []
    return line


SUM_SETS = ("--set", "grid.k1.values=[0.5, 1.0, 1.5]", "--set", "grid.k2.values=[0.5, 1.0]",
            "--set", "bootstrap.n_boot=0")


def _run_ok(cli, cfg, out, client):
    """``riskdask run hazard`` on ``client``'s scheduler, which must succeed: the run's summary
    and manifest."""
    res = cli("run", "hazard", "--config", cfg, "--out", out, "--quiet", "--scheduler",
              client.scheduler.address, *SUM_SETS)
    assert res.code == 0, res.err
    [run] = run_dirs(out, "hazard")
    return read_summary(run), json.loads((run / "manifest.json").read_text())


def _row_of(frame, mask) -> int:
    return int(np.flatnonzero(mask)[0]) + 1  # 1-based data row, header excluded


def test_duplicate_npo_year_row(cli, tmp_path, panel_frame):
    bad = pd.concat([panel_frame, panel_frame.iloc[[5]]], ignore_index=True)
    cfg, data = _write_config(tmp_path, bad)
    _expect_bad(cli, tmp_path, cfg, str(data), f"row {len(bad)}", "column 'year'", "duplicate")


def test_grant_not_zero_or_one(cli, tmp_path, panel_frame):
    bad = panel_frame.copy()
    bad["grant"] = bad["grant"].astype(object)
    bad.loc[17, "grant"] = 2
    cfg, data = _write_config(tmp_path, bad)
    _expect_bad(cli, tmp_path, cfg, str(data), "row 18", "column 'grant'", "0 or 1")


def test_closure_year_before_the_period(cli, tmp_path, panel_frame):
    bad = panel_frame.copy()
    first_npo = bad.npo_id == bad.npo_id.iloc[0]
    bad.loc[first_npo, "closed_year"] = 1995
    cfg, data = _write_config(tmp_path, bad)
    _expect_bad(cli, tmp_path, cfg, str(data), "row 1", "column 'closed_year'",
                "before the study period")


def test_year_outside_the_period_is_an_error_when_switched(cli, tmp_path, panel_frame):
    bad = panel_frame.copy()
    bad.loc[30, "year"] = 2009
    cfg, data = _write_config(tmp_path, bad, '[data.rules]\nrows_outside_period = "error"\n')
    _expect_bad(cli, tmp_path, cfg, str(data), "row 31", "column 'year'",
                "outside the study period")


def test_missing_column(cli, tmp_path, panel_frame):
    cfg, data = _write_config(tmp_path, panel_frame.drop(columns=["function"]))
    _expect_bad(cli, tmp_path, cfg, str(data), "column 'function'", "missing column")


def test_empty_grid(cli, tmp_path, panel_frame):
    cfg, _ = _write_config(tmp_path, panel_frame, "[grid]\nk2 = { values = [] }\n")
    _expect_bad(cli, tmp_path, cfg, str(cfg), "key 'grid.k2'", "empty grid", sets=())


def test_k_values_that_make_time_at_risk_negative(cli, tmp_path, panel_frame):
    cfg, _ = _write_config(tmp_path, panel_frame,
                           "[grid]\nk1 = { values = [-1.0, 0.5] }\nk2 = { values = [0.5, 1.0] }\n")
    _expect_bad(cli, tmp_path, cfg, str(cfg), "key 'grid.k1'", "k1=-1", "negative", sets=())


def test_npo_without_any_grant_is_excluded_and_counted(cli, tmp_path, panel_frame, local_client):
    never = pd.DataFrame({"npo_id": "NEVER", "year": np.arange(1997, 2008), "grant": 0,
                          "field": "culture", "function": "services", "founded_year": 1980,
                          "closed_year": pd.array([pd.NA] * 11, dtype="Int64")})
    frame = pd.concat([panel_frame, never], ignore_index=True)
    cfg, data = _write_config(tmp_path, frame)
    summary, manifest = _run_ok(cli, cfg, tmp_path / "runs", local_client(1))
    [ex] = manifest["exclusions"]
    assert ex["count"] == 1 and "no grant in any year" in ex["reason"] and ex["source"] == str(data)
    assert ex["rows"] == ["NEVER"]
    assert manifest["excluded_rows_total"] == 1
    assert summary["n_npos_at_risk"] == 120
    assert summary["excluded_npos"]["no grant in any year"] == 1


# -- loader and generator --------------------------------------------------------------------
def test_csv_and_parquet_loaders_agree(tmp_path, panel_frame):
    panel_frame.to_csv(tmp_path / "p.csv", index=False)
    panel_frame.to_parquet(tmp_path / "p.parquet", index=False)
    a = build_panel(read_panel_file(tmp_path / "p.csv"), Period(), source="p.csv")
    b = build_panel(read_panel_file(tmp_path / "p.parquet"), Period(), source="p.parquet")
    pd.testing.assert_frame_equal(a.npos, b.npos)
    assert np.array_equal(a.grants, b.grants)


def test_synthetic_generator_deterministic_and_inverted_u():
    from riskdask.hazard.estimators import GridRule, breslow_increments, smooth_hazard
    from riskdask.hazard.timeatrisk import time_at_risk

    a = generate_panel(seed=11)
    assert a.equals(generate_panel(seed=11))
    assert not a.equals(generate_panel(seed=12))
    panel = build_panel(a, Period())
    assert len(panel.npos) == 2660 and sum(panel.exclusions.values()) == 0
    closed = panel.npos.closed_year.dropna()
    assert closed.min() >= 1998 and 0.15 < panel.event.mean() < 0.5
    # hazard in the generating time-at-risk N0 + N1 rises, peaks inside the range, then falls
    t = time_at_risk(panel.features.matrix(), "T", 1.0, 1.0)
    times, dH = breslow_increments(t, panel.event)
    grid, bw = GridRule().grid_and_bandwidth(t.max())
    h = smooth_hazard(grid, times, dH, bw)
    peak = int(np.argmax(h))
    assert 15 < peak < 85
    assert h[0] < 0.5 * h[peak] and h[-1] < 0.8 * h[peak]


# -- issue 14: unusable splits, fixed definitions, panel rules, smoothing options ----------------
def test_single_npo_at_risk_is_exit_2_with_counts(cli, tmp_path, panel_frame):
    one = panel_frame[panel_frame.npo_id == panel_frame.npo_id.iloc[0]]
    cfg, data = _write_config(tmp_path, one, "[split]\nn_splits = 1\n")
    line = _expect_bad(cli, tmp_path, cfg, str(data), "1 NPO(s) at risk", "closure(s)")
    assert "exit" not in line and "Traceback" not in line


def _two_closure_panel(panel_frame):
    """The panel with all but two closures removed (NPOs closed later become active ones)."""
    closed_ids = panel_frame.loc[panel_frame.closed_year.notna(), "npo_id"].unique()
    drop = set(closed_ids[2:])
    return panel_frame[~panel_frame.npo_id.isin(drop)].reset_index(drop=True)


def test_unusable_splits_excluded_counted_or_exit_2(cli, tmp_path, panel_frame, local_client):
    from riskdask.hazard.split import age_band, balanced_splits, split_counts, stratum_codes

    frame = _two_closure_panel(panel_frame)
    panel = build_panel(frame, Period())
    npos = panel.npos
    strata = stratum_codes(npos.field, npos.function,
                           age_band((npos.first_break_year - npos.founded_year).to_numpy(),
                                    [0, 5, 15, 30]))
    from riskdask.hazard.pipeline import PURPOSES
    from riskdask.streams import Streams

    # the run's split stream (the job's declared purposes), first draws only
    c = split_counts(balanced_splits(strata, Streams(2018, PURPOSES).seed("split"), 8),
                     panel.event)
    bad = int(((c.closures_sample1 == 0) | (c.closures_sample2 == 0)).sum())
    assert 0 < bad < 8
    rules = "[split]\nn_splits = 8\nunusable = \"exclude\"\nmin_usable = 1\n"
    cfg, data = _write_config(tmp_path, frame, rules)
    summary, manifest = _run_ok(cli, cfg, tmp_path / "runs", local_client(1))
    assert summary["splits"]["excluded"] == bad and summary["n_splits"] == 8 - bad
    [ex] = [e for e in manifest["exclusions"] if e["source"] == "splits"]
    assert ex["count"] == bad
    # redrawn instead: all 8 usable, every discarded draw counted in the manifest
    (tmp_path / "redraw").mkdir()
    cfg3, _ = _write_config(tmp_path / "redraw", frame, rules.replace('"exclude"', '"redraw"'))
    summary, manifest = _run_ok(cli, cfg3, tmp_path / "redraw" / "runs", local_client(1))
    assert summary["n_splits"] == 8 and summary["splits"]["redrawn"] == bad
    [ex] = [e for e in manifest["exclusions"] if "redrawn" in e["reason"]]
    assert ex["count"] == sum(summary["splits"]["unusable_draws"].values()) >= bad
    # the same with every split required: exit 2 with the counts
    cfg2, _ = _write_config(tmp_path, frame, rules.replace("min_usable = 1", "min_usable = 8"))
    (tmp_path / "again").mkdir()
    _expect_bad(cli, tmp_path / "again", cfg2, f"only {8 - bad} of 8", "split.min_usable",
                "no closure")


def test_fixed_definitions_report_no_optimum(local_client, tmp_path):
    res = run_job("hazard", client=local_client(1), out=tmp_path,
                  overrides=["definition=T0", "split.n_splits=3", "bootstrap.n_boot=0"])
    s = res.summary
    assert "optimum" not in s and s["fixed"]["searched"] is False
    assert s["fixed"]["weights"] == {"N0": 1.0, "N1": 0.0, "X": 0.0, "Z": 0.0}
    assert s["coefficients_searched"] == [] and s["n_grid_points"] == 1
    text = dict(res.headline)
    assert "nothing searched" in text["coefficients"] and "optimum direction" not in text
    # nothing searched: the history follows the fixed definition's Dev, and no optimum
    row = _history_row(res)
    assert row["Dev (fixed definition)"] == s["fixed"]["dev_mean"]
    assert row["Dev (fixed definition) [lo]"] <= row["Dev (fixed definition) [hi]"]
    assert not any(c.startswith(("optimum", "Dev at")) for c in row.index)
    t3 = run_job("hazard", client=local_client(1), out=tmp_path / "t3",
                 overrides=["definition=T3", "split.n_splits=2", "bootstrap.n_boot=0"])
    ranked = t3.table("closure_next_year")
    assert ranked.p_close_next_year_if_grant.isna().all()
    assert not t3.summary["prediction"]["if_grant_defined"]
    assert (ranked.p_close_next_year > 0).all()


def test_panel_rules_counted_in_manifest_and_summary(cli, tmp_path, panel_frame, local_client):
    extra = pd.DataFrame({"npo_id": "LATE", "year": np.arange(1995, 2009),
                          "grant": [1] * 4 + [0] + [1] * 9,
                          "field": "culture", "function": "services", "founded_year": 1980,
                          "closed_year": pd.array([2010] * 14, dtype="Int64")})
    old = pd.DataFrame({"npo_id": "OLD", "year": np.arange(1990, 1996), "grant": 1,
                        "field": "culture", "function": "services", "founded_year": 1980,
                        "closed_year": pd.array([pd.NA] * 6, dtype="Int64")})
    frame = pd.concat([panel_frame, extra, old], ignore_index=True)
    cfg, data = _write_config(tmp_path, frame)
    summary, manifest = _run_ok(cli, cfg, tmp_path / "runs", local_client(1))
    assert summary["panel_rules"] == {"rows_outside_period": 9, "closure_after_period": 1,
                                      "missing_closure_year_row": 0,
                                      "npos_wholly_outside_period": 1}
    [ex] = [e for e in manifest["exclusions"] if "panel rows outside" in e["reason"]]
    assert ex["count"] == 9
    # every panel-rule count is in the manifest, the NPOs named
    [late] = [e for e in manifest["exclusions"] if "closed after the study" in e["reason"]]
    assert (late["count"], late["unit"], late["rows"]) == (1, "NPOs", ["LATE"])
    [gone] = [e for e in manifest["exclusions"] if "all of whose rows" in e["reason"]]
    assert (gone["count"], gone["rows"]) == (1, ["OLD"])
    (tmp_path / "again").mkdir()
    cfg2, data2 = _write_config(tmp_path / "again", frame,
                                '[data.rules]\nclosure_after_period = "error"\n')
    _expect_bad(cli, tmp_path / "again", cfg2, str(data2), "column 'closed_year'",
                "after the study period")


def test_cv_bandwidth_and_boundary_recorded(local_client, tmp_path):
    res = run_job("hazard", client=local_client(1), out=tmp_path,
                  overrides=SMALL + ["smoothing.bandwidth_rule=cv", "smoothing.boundary=reflect"])
    s = res.summary
    assert s["boundary"] == "reflect" and s["bandwidth_rule"] == "cv"
    frac = s["cv_bandwidth"]["fraction"]
    assert s["bandwidth"] == pytest.approx(frac * s["max_time_at_risk"])
    assert "boundary correction at the support's start: reflect" in s["grid_rule"]
    sens = res.table("bandwidth_sensitivity")
    assert sens.bandwidth_fraction.tolist() == [0.05, 0.1, 0.2]
    assert (res.run_dir / "figures" / "cv_bandwidth.png").exists()
    assert (res.run_dir / "figures" / "optimum_theta_per_split.png").exists()


def _history_row(res) -> pd.Series:
    return pd.read_parquet(res.run_dir.parent / HISTORY_FILE).iloc[-1]


def test_history_follows_the_optimum_with_its_spread_over_splits(default_run):
    """The default run's history row (``metrics``): the interior optimum direction with the
    90 % range of the per-split optima, k2/k1 and Dev at the optimum -- every one non-null
    (the history used to read keys the hazard summary never had, and recorded none)."""
    res = default_run("hazard")
    row = _history_row(res)
    o = res.summary["optimum"]["interior"]
    per = res.table("optimum_per_split")
    assert row["optimum theta (deg)"] == o["theta_deg"]
    iv = res.summary["optimum"]["theta_interval"]  # the range the report shows
    lo, hi = np.quantile(per.theta_deg, [0.05, 0.95])
    assert (row["optimum theta (deg) [lo]"], row["optimum theta (deg) [hi]"]) == (
        iv["lo"], iv["hi"]) == pytest.approx((lo, hi))
    assert row["optimum k2/k1"] == o["ratio_k2_k1"]
    assert row["optimum k2/k1 [lo]"] == pytest.approx(np.tan(np.radians(iv["lo"])))
    assert row["Dev at optimum"] == o["dev_mean"]
    assert row["Dev at optimum [lo]"] < o["dev_mean"] < row["Dev at optimum [hi]"]
    assert row["optimum identified"] == ("yes" if res.summary["optimum"]["identified"] else "no")
    lik = res.summary["likelihood"]
    assert row["likelihood theta (deg)"] == lik["theta_deg"]
    lo_hi = [row["likelihood theta (deg) [lo]"], row["likelihood theta (deg) [hi]"]]
    assert lo_hi == lik["ci95_deg"]
    assert row["LR theta = 0"] == lik["lr_tests"]["theta = 0 (T0 = N0)"]["lr_statistic"]
    assert row["mean P(close next year)"] == res.summary["prediction"]["mean_p_close_next_year"]
    metrics = row.drop(list(META_COLUMNS))
    # the LR statistic and the mean probability are single figures: no interval columns
    bare = [f"{m} [{e}]" for m in ("LR theta = 0", "mean P(close next year)")
            for e in ("lo", "hi")]
    assert len(metrics) == 22 and metrics[bare].isna().all(), metrics
    assert metrics.drop(bare).notna().all(), metrics
