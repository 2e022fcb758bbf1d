"""The credit job end to end on real clusters: bit-identical on 1 and 2 workers and with a
worker killed mid-run; outputs as CREDIT.md lists, checked against brute-force eq. 3.11 on
the written CFV table; the full-matrix tiled UL on the cluster; importance sampling; every
bad-input case through the CLI (exit code 2, located message, no run directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, assert_runs_identical, leftovers, run_dirs
from riskdask import run_job
from riskdask.credit.analytic import ul_pairwise_bruteforce
from riskdask.credit.data import load_matrix
from riskdask.credit.synthetic import DATA_DIR, synthetic_portfolio

SMALL = ["portfolio.synthetic_obligors=60", "simulation.n_scenarios=40000",
         "simulation.chunk_size=2500", "simulation.confidence=[0.99, 0.999]"]
TABLES = ("obligors", "cfv_matrix", "loss_histogram", "tail_scenarios", "es_contributions",
          "risk_measures")


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run_dir / "tables" / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def small_runs(local_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("credit_runs")
    one = run_job("credit", overrides=SMALL, client=local_client(1), out=out / "w1")
    two = run_job("credit", overrides=SMALL, client=local_client(2), out=out / "w2")
    return one, two


def test_bit_identical_on_1_and_2_workers(small_runs):
    one, two = small_runs
    assert_runs_identical(one, two, TABLES)
    assert (one.manifest["cluster"]["n_workers"], two.manifest["cluster"]["n_workers"]) == (1, 2)


def test_cluster_result_equals_single_process_run_of_the_same_chunks(small_runs):
    from riskdask.config import load_config
    from riskdask.credit.config import Config
    from riskdask.credit.pipeline import analytics, load_inputs, scenario_model
    from riskdask.credit.simulation import simulate_local, simulation_statistics
    from riskdask.engine import plan_chunks

    run, _ = small_runs
    cfg = load_config("credit", Config, None, SMALL).config
    inputs = load_inputs(cfg)
    an = analytics(cfg, inputs)
    model = scenario_model(cfg, inputs, an)
    chunks = plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size, cfg.seed)
    local = simulation_statistics(simulate_local(model, chunks), model, an.fv_portfolio)
    assert run.summary["el_simulated"] == local.el
    assert run.summary["ul_simulated"] == local.ul
    for lv, ref in zip(run.summary["levels"], local.levels):
        assert ((lv["var"], lv["es"], lv["var_se"], lv["es_se"])
                == (ref.var, ref.es, ref.var_se, ref.es_se))


def _sector_country_correlation(obligors: pd.DataFrame) -> np.ndarray:
    same_sector = obligors["sector"].to_numpy()[:, None] == obligors["sector"].to_numpy()[None]
    same_country = obligors["country"].to_numpy()[:, None] == obligors["country"].to_numpy()[None]
    corr = 0.16 + 0.09 * same_sector + 0.09 * same_country
    np.fill_diagonal(corr, 1.0)
    return corr


def test_outputs_are_complete_and_consistent(small_runs):
    run, _ = small_runs
    s = run.summary
    files = {p.name for p in run.run_dir.rglob("*") if p.is_file()}
    assert {"summary.json", "manifest.json", "report.html", "loss_distribution.png",
            "top_contributors.png"} <= files
    t = _tables(run.run_dir)
    ob, cfv = t["obligors"], t["cfv_matrix"]
    assert s["n_obligors"] == len(ob) == 60
    assert s["fv_portfolio"] == pytest.approx(ob["fv"].sum(), rel=1e-12)
    assert s["el_analytic"] == pytest.approx(s["el_migration"] + s["el_default"], rel=1e-9)
    np.testing.assert_allclose(ob["el"], ob["fv"] - ob["efv"], rtol=1e-9, atol=1e-3)
    # independent brute-force eq. 3.11 from the written CFV matrix and the published matrix
    matrix, _ = load_matrix(DATA_DIR / "migration_creditmetrics_1997.csv", normalize=True)
    icr = np.array([matrix.index(r) for r in cfv["rating"]])
    values = cfv[[f"cfv_{r}" for r in matrix.scale]].to_numpy()
    brute = ul_pairwise_bruteforce(values, icr, matrix.probabilities,
                                   _sector_country_correlation(ob))
    assert s["ul_analytic"] == pytest.approx(brute, rel=1e-9)
    # simulated moments within Monte Carlo error of the analytic ones
    assert abs(s["el_z"]) < 3 and abs(s["ul_z"]) < 3
    # risk measures: ES >= VaR, percentages of FV_P, contributions add up to ES
    for lv in s["levels"]:
        assert lv["es"] >= lv["var"] > 0
        assert lv["var_pct"] == pytest.approx(100 * lv["var"] / s["fv_portfolio"], rel=1e-12)
        assert lv["var_se"] > 0 and lv["es_se"] > 0
        key = f"es_contribution_{100 * lv['confidence']:g}".replace(".", "_")
        assert ob[key].sum() == pytest.approx(lv["es"], rel=1e-9)
    contrib = t["es_contributions"]
    assert set(contrib["confidence"]) == {0.99, 0.999}
    # the tail table is sorted worst first; VaR is measured at its a-th row
    tail = t["tail_scenarios"]
    assert (np.diff(tail["loss"]) <= 0).all()
    lv = s["levels"][1]
    assert lv["a"] == 40
    assert lv["var"] == pytest.approx(tail["loss"].iloc[lv["a"] - 1] - s["el_simulated"],
                                      rel=1e-12)
    assert lv["es"] == pytest.approx(tail["loss"].iloc[:lv["a"] - 1].mean() - s["el_simulated"],
                                     rel=1e-12)
    hist = t["loss_histogram"]
    assert hist["probability"].sum() == pytest.approx(1.0, abs=1e-12)


def _portfolio_file(tmp_path, n=40) -> tuple[Path, pd.DataFrame]:
    frame = synthetic_portfolio(seed=3, n_obligors=n)
    path = tmp_path / "positions.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_full_matrix_tiles_equal_collapsed_path_and_importance_sampling(local_client, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    ids = list(dict.fromkeys(frame["obligor_id"]))
    rho = 0.25
    corr = np.full((len(ids), len(ids)), rho)
    np.fill_diagonal(corr, 1.0)
    cpath = tmp_path / "corr.csv"
    pd.DataFrame(corr, columns=ids).assign(obligor_id=ids)[["obligor_id", *ids]].to_csv(
        cpath, index=False)
    base = [f"portfolio.path={path}", "simulation.n_scenarios=40000",
            "simulation.chunk_size=2500", "simulation.confidence=[0.99, 0.999]"]
    client = local_client(2)
    uniform = run_job("credit", overrides=base + ["correlation.kind=uniform",
                                                  f"correlation.rho={rho}"],
                      client=client, out=tmp_path / "u")
    full = run_job("credit", overrides=base + ["correlation.kind=matrix",
                                               f"correlation.matrix={cpath}",
                                               "correlation.tile_obligors=16",
                                               "importance_sampling.enabled=true"],
                   client=client, out=tmp_path / "m")
    assert full.summary["ul_analytic"] == pytest.approx(uniform.summary["ul_analytic"], rel=1e-9)
    assert full.summary["el_analytic"] == uniform.summary["el_analytic"]
    assert abs(full.summary["el_z"]) < 3 and abs(full.summary["ul_z"]) < 3
    assert full.summary["importance_sampling"]
    for lv in full.summary["levels"]:
        diff = abs(lv["es"] - lv["plain_es"])
        assert diff < 3.5 * np.hypot(lv["es_se"], lv["plain_es_se"])
    # ES contributions come from the IS run's own weighted tail and add up to its ES
    ob = full.table("obligors")
    for lv in full.summary["levels"]:
        key = f"es_contribution_{100 * lv['confidence']:g}".replace(".", "_")
        assert ob[key].sum() == pytest.approx(lv["es"], rel=1e-9)
    # the shift targets 99.9%: there importance sampling must beat plain sampling
    assert full.summary["levels"][1]["variance_reduction_es"] > 2.0


def test_worker_killed_mid_run_gives_identical_results(cli_cluster, local_client, tmp_path):
    args = ["portfolio.synthetic_obligors=300", "simulation.n_scenarios=300000",
            "simulation.chunk_size=5000", "simulation.confidence=[0.99, 0.999]"]
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "riskdask", "run", "credit", "--scheduler", cli_cluster.address,
           "--out", str(out), "--quiet"]
    for a in args:
        cmd += ["--set", a]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cli_cluster.wait_until("credit-scenarios-", at_least=2)
    done_at_kill = cli_cluster.tasks_in_memory("credit-scenarios-")
    cli_cluster.kill_worker("worker-2")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert cli_cluster.n_workers() == 1
    assert done_at_kill < 60                                # the kill came mid-simulation
    [run] = run_dirs(out, "credit")
    reference = run_job("credit", overrides=args, client=local_client(1), out=tmp_path / "ref")
    assert_runs_identical(run, reference, TABLES)


# ----------------------------------------------------------------------------- bad input
def _expect_bad_input(cli, tmp_path, *sets, words=(), file=None):
    out = tmp_path / "runs"
    args = ["run", "credit"]
    for s in (*SMALL, *sets):
        args += ["--set", s]
    r = cli(*args, "--out", out, "--quiet")
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err   # one message
    if file is not None:
        assert str(file) in r.err
    for w in words:
        assert w in r.err, (w, r.err)
    assert run_dirs(out, "credit") == []                                  # nothing written
    assert [p for p in leftovers(out) if p != out / "credit"] == []
    return r


def _matrix_file(tmp_path, edit=None) -> Path:
    src = (DATA_DIR / "migration_creditmetrics_1997.csv").read_text().splitlines()
    lines = [ln for ln in src if not ln.startswith("#")]
    if edit:
        lines = edit(lines)
    path = tmp_path / "matrix.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_matrix_row_not_summing_to_one(cli, tmp_path):
    # the published table with its rounded rows, without normalize = true
    path = _matrix_file(tmp_path)
    _expect_bad_input(cli, tmp_path, f"matrix.path={path}", "matrix.normalize=false",
                      file=path, words=("row 6", "column 'rating'", "'B' sums to 99.99"))


def test_bad_unknown_rating(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    frame.loc[7, "rating"] = "AA+"
    frame.to_csv(path, index=False)
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", file=path,
                      words=("row 8", "column 'rating'", "unknown rating 'AA+'"))


def test_bad_negative_nominal(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    frame.loc[3, "nominal"] = -5e6
    frame.to_csv(path, index=False)
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", file=path,
                      words=("row 4", "column 'nominal'", "negative nominal"))


def test_bad_recovery_outside_unit_interval(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    frame.loc[11, "recovery_rate"] = 1.4
    frame.to_csv(path, index=False)
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", file=path,
                      words=("row 12", "column 'recovery_rate'", "outside [0, 1]"))


def test_bad_cash_flow_time_not_positive(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    flows = pd.DataFrame({"position_id": frame["position_id"], "time": frame["maturity"],
                          "amount": frame["nominal"]})
    flows.loc[5, "time"] = 0.0
    fpath = tmp_path / "cashflows.csv"
    flows.to_csv(fpath, index=False)
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", f"portfolio.cashflows={fpath}",
                      file=fpath, words=("row 6", "column 'time'", "<= 0"))


def test_bad_missing_curve_for_rating_in_use(cli, tmp_path):
    curves = pd.read_csv(DATA_DIR / "curves.csv", comment="#").drop(columns=["BBB"])
    cpath = tmp_path / "curves.csv"
    curves.to_csv(cpath, index=False)
    _expect_bad_input(cli, tmp_path, f"curves.path={cpath}", file=cpath,
                      words=("column 'BBB'", "no curve for rating 'BBB'"))


def test_bad_duplicate_position_ids(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    frame.loc[9, "position_id"] = frame.loc[2, "position_id"]
    frame.to_csv(path, index=False)
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", file=path,
                      words=("row 10", "column 'position_id'", "duplicate position id",
                             "first at row 3"))


def _corr_file(tmp_path, frame, mutate) -> Path:
    ids = list(dict.fromkeys(frame["obligor_id"]))
    corr = np.full((len(ids), len(ids)), 0.3)
    np.fill_diagonal(corr, 1.0)
    mutate(corr)
    path = tmp_path / "corr.csv"
    df = pd.DataFrame(corr, columns=ids)
    df.insert(0, "obligor_id", ids)
    df.to_csv(path, index=False)
    return path


def test_bad_correlation_not_positive_definite(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)

    def mutate(c):
        c[0, 1] = c[1, 0] = -0.9       # with rho 0.3 elsewhere: an impossible triangle
        c[0, 2] = c[2, 0] = 0.9
        c[1, 2] = c[2, 1] = 0.9
    cpath = _corr_file(tmp_path, frame, mutate)
    r = _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", "correlation.kind=matrix",
                          f"correlation.matrix={cpath}", file=cpath,
                          words=("not positive definite", "smallest eigenvalue -"))
    # the reported eigenvalue is the real one
    c = np.full((40, 40), 0.3)
    np.fill_diagonal(c, 1.0)
    mutate(c)
    assert f"{np.linalg.eigvalsh(c)[0]:.6g}" in r.err


def test_bad_correlation_not_symmetric(cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    cpath = _corr_file(tmp_path, frame, lambda c: c.__setitem__((4, 1), 0.31))
    _expect_bad_input(cli, tmp_path, f"portfolio.path={path}", "correlation.kind=matrix",
                      f"correlation.matrix={cpath}", file=cpath,
                      words=("not symmetric", "row 5", "column 'O0001'"))


def test_bad_confidence_too_high_for_scenarios(cli, tmp_path):
    r = _expect_bad_input(cli, tmp_path, "simulation.n_scenarios=1000",
                          "simulation.confidence=[0.99, 0.9995]",
                          words=("key 'simulation.confidence'", "a = round(1000 x (1 - 0.9995))"
                                 " = 0 < 2"))
    assert "0.99 " not in r.err


def test_bad_non_numeric_cell_as_a_real_process(run_cli, tmp_path):
    path, frame = _portfolio_file(tmp_path)
    frame["coupon"] = frame["coupon"].astype(object)
    frame.loc[14, "coupon"] = "4.5%"
    frame.to_csv(path, index=False)
    out = tmp_path / "runs"
    r = run_cli("run", "credit", "--set", f"portfolio.path={path}", "--out", out, "--quiet")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {path}: row 15, column 'coupon': not a finite number: '4.5%'")
    assert run_dirs(out, "credit") == [] and not any(p.is_dir() and p.name.startswith(".")
                                                     for p in leftovers(out))
