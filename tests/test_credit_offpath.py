"""The credit job off the happy path, end to end on real clusters: importance sampling on
discrete portfolios (one bond, two bonds, identical default-only names) beside plain
sampling; IS-only ES contributions; degenerate and bad inputs (``run`` and ``validate``
agree: exit 2 with one located message); short positions; adaptive stopping (bit-identical
on 1 and 2 workers, target reached, cap with a note); Step 7 fits in the outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_runs_identical, leftovers, run_dirs
from riskdask import run_job
from riskdask.credit.synthetic import DATA_DIR

QUICK = ["simulation.n_scenarios=100000", "simulation.chunk_size=25000",
         "simulation.confidence=[0.99, 0.999]", "correlation.kind=uniform"]
BONDS = {
    "one_bond": [("b1", "o1", "BBB", 100, 0.4, 0.05, 1, 5)],
    "two_bonds": [("b1", "o1", "BBB", 100, 0.4, 0.05, 1, 5),
                  ("b2", "o2", "BB", 50, 0.3, 0.06, 1, 3)],
}
HEADER = "position_id,obligor_id,rating,nominal,recovery_rate,coupon,frequency,maturity"


def _write(tmp_path: Path, name: str, rows) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def _matrix(tmp_path: Path, edit) -> Path:
    lines = [ln for ln in (DATA_DIR / "migration_creditmetrics_1997.csv").read_text()
             .splitlines() if not ln.startswith("#")]
    path = tmp_path / "matrix.csv"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def _default_only_row(lines, rating, pd_pct):
    """The row of ``rating``: stays or defaults (a default-only portfolio)."""
    header = lines[0].split(",")
    out = []
    for ln in lines:
        cells = ln.split(",")
        if cells[0] == rating:
            vals = ["0"] * (len(header) - 1)
            vals[header.index(rating) - 1] = str(100 - pd_pct)
            vals[-1] = str(pd_pct)
            ln = ",".join([rating] + vals)
        out.append(ln)
    return out


def _check_is_beside_plain(summary):
    assert summary["importance_sampling"]
    for lv in summary["levels"]:
        for key in ("var", "es"):
            se, pse = lv[f"{key}_se"], lv[f"plain_{key}_se"]
            assert se > 0 and pse > 0, (key, lv)
            assert abs(lv[key] - lv[f"plain_{key}"]) <= (
                3.5 * np.hypot(se, pse) + 1e-9 * abs(lv[key])), (key, lv)
        assert lv["variance_reduction_es"] is None or lv["variance_reduction_es"] > 0


@pytest.mark.parametrize("case", sorted(BONDS))
def test_importance_sampling_on_discrete_portfolios_runs_and_agrees(local_client, tmp_path,
                                                                     case):
    path = _write(tmp_path, "pf.csv", BONDS[case])
    run = run_job("credit", overrides=[*QUICK, f"portfolio.path={path}",
                                       "importance_sampling.enabled=true"],
                  client=local_client(2), out=tmp_path / "runs")
    _check_is_beside_plain(run.summary)
    assert run.summary["el_simulated_se"] > 0 and run.summary["ul_simulated_se"] > 0
    # the console keeps the digits the errors support (a face-100 bond: EL ~ 0.4, not "0")
    lines = dict(run.headline)
    el_line = lines["EL analytic / simulated"]
    assert el_line.startswith("0.") and " ± 0.0" in el_line, el_line


def test_one_chunk_has_every_error_and_no_chunk_note(local_client, tmp_path):
    run = run_job("credit", overrides=["portfolio.synthetic_obligors=40",
                                       "simulation.n_scenarios=20000",
                                       "simulation.chunk_size=20000",
                                       "simulation.confidence=[0.99, 0.999]"],
                  client=local_client(1), out=tmp_path / "one")
    s = run.summary
    assert s["n_chunks"] == 1 and s["n_batches"] == 32
    assert s["el_simulated_se"] > 0 and s["ul_simulated_se"] > 0
    for lv in s["levels"]:
        assert lv["var_se"] > 0 and lv["es_se"] > 0 and lv["se_note"] is None
    assert not any("chunk_size" in n for n in s["notes"])


def test_identical_default_only_names_with_is_and_is_only_contributions(local_client, tmp_path):
    rows = [(f"b{i}", f"o{i}", "BB", 10, 0.4, 0.05, 1, 4) for i in range(40)]
    path = _write(tmp_path, "pf.csv", rows)
    mpath = _matrix(tmp_path, lambda ls: _default_only_row(ls, "BB", 2.0))
    common = [*QUICK, "simulation.n_scenarios=40000", "simulation.chunk_size=10000",
              f"portfolio.path={path}", f"matrix.path={mpath}",
              "importance_sampling.enabled=true"]
    both = run_job("credit", overrides=common, client=local_client(2), out=tmp_path / "a")
    _check_is_beside_plain(both.summary)
    # IS only, with a state buffer far too small for the weighted tail: the contributions
    # come from the IS run's own tail (second pass) and sum to the IS ES.
    only = run_job("credit", overrides=[*common, "importance_sampling.compare_plain=false",
                                        "simulation.contribution_rows=10"],
                   client=local_client(2), out=tmp_path / "b")
    ob = pd.read_parquet(only.run_dir / "tables" / "obligors.parquet")
    for lv in only.summary["levels"]:
        assert lv["contribution_source"] == "second pass"
        key = f"es_contribution_{100 * lv['confidence']:g}".replace(".", "_")
        assert ob[key].sum() == pytest.approx(lv["es"], rel=1e-9)
        # identical names: identical shares, up to Monte Carlo error
        assert ob[key].std() < 0.2 * ob[key].mean()
    assert any("second pass" in n for n in only.summary["notes"])


def test_riskless_portfolios_give_valid_zero_risk_runs(local_client, tmp_path):
    path = _write(tmp_path, "pf.csv", BONDS["two_bonds"])

    def no_default(lines):           # PD 0 (moved onto the diagonal), migration stays
        header = lines[0].split(",")
        out = [lines[0]]
        for ln in lines[1:]:
            cells = ln.split(",")
            vals = [float(x) for x in cells[1:]]
            vals[header.index(cells[0]) - 1] += vals[-1]
            vals[-1] = 0.0
            out.append(",".join([cells[0]] + [repr(v) for v in vals]))
        return out

    def identity(lines):
        header = lines[0].split(",")
        return [lines[0]] + [",".join([ln.split(",")[0]] + [
            "100" if h == ln.split(",")[0] else "0" for h in header[1:]]) for ln in lines[1:]]

    for edit, degenerate in ((no_default, False), (identity, True)):
        mpath = _matrix(tmp_path, edit)
        run = run_job("credit", overrides=[*QUICK, f"portfolio.path={path}",
                                           f"matrix.path={mpath}",
                                           "importance_sampling.enabled=true"],
                      client=local_client(1), out=tmp_path / f"r{degenerate}")
        s = run.summary
        assert s["el_default"] == 0
        assert any("PD = 0" in n for n in s["notes"]), s["notes"]
        if degenerate:
            assert s["degenerate"] and s["el_analytic"] == 0 and s["ul_analytic"] == 0
            for lv in s["levels"]:
                assert lv["var"] == 0 and lv["es"] == 0 and lv["var_se"] == 0
                assert lv["variance_reduction_es"] is None
            assert any("degenerate" in n for n in s["notes"])
            assert s["el_z"] is None


# ----------------------------------------------------------------------------- bad input
def _bad_both(cli, tmp_path, *sets, words=(), file=None):
    """``run`` and ``validate`` refuse the same input with the same one-line message."""
    args = [a for s in (*QUICK, *sets) for a in ("--set", s)]
    out = tmp_path / "runs"
    r = cli("run", "credit", *args, "--out", out, "--quiet")
    v = cli("validate", "credit", *args)
    for res in (r, v):
        assert res.code == 2, res.err
        assert res.err.startswith("error: ") and res.err.count("\n") == 1, res.err
        if file is not None:
            assert str(file) in res.err
        for w in words:
            assert w in res.err, (w, res.err)
    assert r.err == v.err
    assert run_dirs(out, "credit") == []
    assert [p for p in leftovers(out) if p != out / "credit"] == []


def test_bad_all_zero_nominals(cli, tmp_path):
    path = _write(tmp_path, "pf.csv", [("b1", "o1", "A", 0, 0.4, 0.05, 1, 5),
                                       ("b2", "o2", "BB", 0, 0.4, 0.05, 1, 5)])
    _bad_both(cli, tmp_path, f"portfolio.path={path}", file=path,
              words=("column 'nominal'", "no exposure"))


def test_bad_zero_matrix_row_even_with_normalize(cli, tmp_path):
    mpath = _matrix(tmp_path, lambda ls: [",".join(["BB"] + ["0"] * 8) if ln.startswith("BB,")
                                          else ln for ln in ls])
    _bad_both(cli, tmp_path, f"matrix.path={mpath}", "matrix.normalize=true", file=mpath,
              words=("row 5", "'BB' is all zeros"))


def test_bad_matrix_entry_above_one(cli, tmp_path):
    mpath = _matrix(tmp_path, lambda ls: [",".join(["A", "0", "1", "120", "0", "0", "0", "0",
                                                    "0"]) if ln.startswith("A,") else ln
                                          for ln in ls])
    _bad_both(cli, tmp_path, f"matrix.path={mpath}", file=mpath,
              words=("row 3", "row 'A'", "not a probability"))


def test_bad_row_sum_beyond_the_normalize_tolerance(cli, tmp_path):
    # the A row scaled to 98%: normalize = true (the default) must not hide it
    def scale(lines):
        out = []
        for ln in lines:
            if ln.startswith("A,"):
                cells = ln.split(",")
                ln = ",".join(["A"] + [repr(float(x) * 0.98) for x in cells[1:]])
            out.append(ln)
        return out

    mpath = _matrix(tmp_path, scale)
    _bad_both(cli, tmp_path, f"matrix.path={mpath}", file=mpath,
              words=("row 3", "'A' sums to 98", "normalize_tolerance"))


def test_bad_negative_cash_flow_unless_short_positions_are_allowed(cli, local_client,
                                                                   tmp_path):
    path = _write(tmp_path, "pf.csv", BONDS["two_bonds"])
    flows = tmp_path / "cf.csv"
    flows.write_text("position_id,time,amount\nb1,5,-105\nb2,3,53\n")
    _bad_both(cli, tmp_path, f"portfolio.path={path}", f"portfolio.cashflows={flows}",
              file=flows, words=("row 1", "column 'amount'", "negative cash-flow amount"))
    # A short first bond: negative nominal and cash flows, accepted with allow_short; it
    # mirrors the long one: its EL is minus the long one's.
    short = _write(tmp_path, "short.csv", [("b1", "o1", "BBB", -100, 0.4, 0.05, 1, 5),
                                           ("b2", "o2", "BB", 50, 0.3, 0.06, 1, 3)])
    runs = {}
    for name, pf, cf in (("short", short, flows), ("long", path, None)):
        sets = [*QUICK, f"portfolio.path={pf}", "portfolio.allow_short=true"]
        if cf is not None:
            sets.append(f"portfolio.cashflows={cf}")
        else:
            long_flows = tmp_path / "cf_long.csv"
            long_flows.write_text("position_id,time,amount\nb1,5,105\nb2,3,53\n")
            sets.append(f"portfolio.cashflows={long_flows}")
        runs[name] = run_job("credit", overrides=sets, client=local_client(1),
                             out=tmp_path / name)
    ob_s = pd.read_parquet(runs["short"].run_dir / "tables" / "obligors.parquet")
    ob_l = pd.read_parquet(runs["long"].run_dir / "tables" / "obligors.parquet")
    assert ob_s["el"].iloc[0] == pytest.approx(-ob_l["el"].iloc[0], rel=1e-12)
    assert ob_s["fv"].iloc[0] == pytest.approx(-ob_l["fv"].iloc[0], rel=1e-12)
    assert ob_s["el"].iloc[1] == ob_l["el"].iloc[1]


# ----------------------------------------------------------------------------- adaptive
ADAPTIVE = ["portfolio.synthetic_obligors=60", "simulation.n_scenarios=200000",
            "simulation.chunk_size=10000", "simulation.confidence=[0.99, 0.999]",
            "simulation.wave_chunks=2"]


def test_adaptive_stopping_is_bit_identical_and_reaches_the_target(local_client, tmp_path):
    sets = [*ADAPTIVE, "simulation.target_relative_se=0.03"]
    one = run_job("credit", overrides=sets, client=local_client(1), out=tmp_path / "w1")
    two = run_job("credit", overrides=sets, client=local_client(2), out=tmp_path / "w2")
    assert_runs_identical(one, two, ("obligors", "risk_measures", "tail_scenarios"))
    a = one.summary["adaptive"]
    before = a["history"][-2][1]
    assert a["reached"] and a["relative_se"] <= 0.03 and (before is None or before > 0.03)
    # no stop on a tail shorter than MIN_TAIL_ROWS scenarios; >= 32 batches from wave 1 on
    assert one.summary["levels"][-1]["tail_scenarios"] >= a["min_tail_rows"]
    assert one.summary["n_batches"] >= 32 * a["waves_run"]
    assert a["scenarios_used"] == one.summary["n_scenarios"] < 200_000
    lv = one.summary["levels"][-1]
    assert lv["es_se"] / lv["es"] == pytest.approx(a["relative_se"])
    assert any("adaptive stopping" in n and "reached" in n for n in one.summary["notes"])


def test_adaptive_stopping_at_the_cap_says_so(local_client, tmp_path):
    sets = [*ADAPTIVE, "simulation.n_scenarios=40000", "simulation.target_relative_se=0.001"]
    run = run_job("credit", overrides=sets, client=local_client(2), out=tmp_path / "cap")
    a = run.summary["adaptive"]
    assert not a["reached"] and a["scenarios_used"] == 40_000
    assert any("not reached" in n and "cap" in n for n in run.summary["notes"])


def test_step7_fits_are_in_the_outputs(local_client, tmp_path):
    run = run_job("credit", overrides=["portfolio.synthetic_obligors=60",
                                       "simulation.n_scenarios=40000",
                                       "simulation.chunk_size=10000"],
                  client=local_client(2), out=tmp_path / "fits")
    fits = run.summary["tail_fits"]
    assert fits["gpd"]["ok"] and fits["vasicek"]["ok"] and fits["best"] in ("gpd", "vasicek")
    for name in ("gpd", "vasicek"):
        for lv in fits[name]["levels"]:
            assert lv["var_se"] > 0 and lv["es"] > lv["var"]
    assert (run.run_dir / "figures" / "tail_fits.png").is_file()
    table = pd.read_parquet(run.run_dir / "tables" / "tail_fits.parquet")
    assert set(table["fit"]) == {"gpd", "vasicek"}
    assert "Tail fits (seed Step 7)" in (run.run_dir / "report.html").read_text()
