"""credit inputs: the embedded data files, the deterministic synthetic portfolio, and the
user-file loaders (CSV/Parquet portfolio, explicit cash flows, factor loadings, factor
correlation) agreeing with the built-in forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskdask.config import load_config
from riskdask.credit.config import Config
from riskdask.credit.data import load_matrix
from riskdask.credit.pipeline import analytics, load_inputs
from riskdask.credit.synthetic import (DATA_DIR, illustrative_curves, synthetic_portfolio,
                                       write_curves_csv)
from riskdask.errors import InputError


def _inputs(*overrides):
    cfg = load_config("credit", Config, None, list(overrides)).config
    return cfg, load_inputs(cfg)


def test_embedded_matrix_is_the_published_table_with_its_citation():
    text = (DATA_DIR / "migration_creditmetrics_1997.csv").read_text()
    assert "CreditMetrics - Technical Document" in text and "Table 6.3" in text
    matrix, rescaled = load_matrix(DATA_DIR / "migration_creditmetrics_1997.csv", normalize=True)
    assert matrix.scale == ("AAA", "AA", "A", "BBB", "BB", "B", "CCC-C", "D")
    assert dict(rescaled) == pytest.approx({"B": 0.9999, "CCC-C": 1.0001}, abs=1e-12)
    # a few published cells (percent): A -> A 91.05, BBB -> D 0.18, CCC -> D 19.79 (rescaled)
    assert matrix.probabilities[2, 2] == pytest.approx(0.9105, abs=1e-12)
    assert matrix.probabilities[3, 7] == pytest.approx(0.0018, abs=1e-12)
    assert matrix.probabilities[6, 7] == pytest.approx(0.1979 / 1.0001, abs=1e-12)
    np.testing.assert_allclose(matrix.probabilities.sum(axis=1), 1.0, atol=1e-15)


def test_embedded_curves_file_is_the_generators_output(tmp_path):
    written = write_curves_csv(tmp_path / "curves.csv")
    assert written.read_text() == (DATA_DIR / "curves.csv").read_text()
    curves = illustrative_curves()
    spreads = curves.drop(columns="tenor").diff(axis=1).iloc[:, 1:]
    assert (spreads.to_numpy() > 0).all()           # worse rating, higher yield everywhere


def test_synthetic_portfolio_is_deterministic_and_central_bank_shaped():
    a = synthetic_portfolio(2009, 200)
    pd.testing.assert_frame_equal(a, synthetic_portfolio(2009, 200))
    obligors = a.groupby("obligor_id").first()
    assert len(obligors) == 200
    assert set(obligors["sector"]) == {"sovereign", "supranational", "agency", "bank"}
    share = obligors["rating"].value_counts(normalize=True)
    assert share[["AAA", "AA", "A"]].sum() > 0.75                   # mostly AAA-A
    assert share.get("BBB", 0) > 0.05 and share.drop(["AAA", "AA", "A", "BBB"]).sum() > 0
    assert a["maturity"].between(1, 10).all() and a["position_id"].is_unique
    assert a["recovery_rate"].between(0, 1).all() and (a["nominal"] > 0).all()


def test_user_files_reproduce_the_embedded_run_inputs(tmp_path):
    frame = synthetic_portfolio(4, 30)
    csv = tmp_path / "p.csv"
    frame.to_csv(csv, index=False)
    pq = tmp_path / "p.parquet"
    frame.to_parquet(pq, index=False)
    _, from_csv = _inputs(f"portfolio.path={csv}")
    cfg, from_pq = _inputs(f"portfolio.path={pq}")
    # explicit cash flows equal to the ones generated from the bond terms
    pf = from_csv.portfolio
    pos_ids = frame["position_id"].to_numpy()
    from riskdask.credit.valuation import bond_cash_flows
    p, t, amt = bond_cash_flows(frame["nominal"], frame["coupon"], frame["frequency"],
                                frame["maturity"])
    flows = pd.DataFrame({"position_id": pos_ids[p], "time": t, "amount": amt})
    fcsv = tmp_path / "cf.csv"
    flows.to_csv(fcsv, index=False)
    _, from_cf = _inputs(f"portfolio.path={csv}", f"portfolio.cashflows={fcsv}")
    a1 = analytics(cfg, from_csv)
    a2 = analytics(cfg, from_pq)
    a3 = analytics(cfg, from_cf)
    np.testing.assert_allclose(a2.cfv, a1.cfv, rtol=1e-15)
    np.testing.assert_allclose(a3.cfv, a1.cfv, rtol=1e-12)
    # a loadings file with the sector/country rule, and an identity factor correlation
    ids = list(pf.obligors["obligor_id"])
    load = pd.DataFrame(from_csv.loadings, columns=[f"f{k}" for k in
                                                    range(from_csv.loadings.shape[1])])
    load.insert(0, "obligor_id", ids)
    lpath = tmp_path / "loadings.csv"
    load.iloc[::-1].to_csv(lpath, index=False)                    # any row order
    fc = pd.DataFrame(np.eye(load.shape[1] - 1), columns=list(load.columns[1:]))
    fc.insert(0, "factor", list(load.columns[1:]))
    fpath = tmp_path / "fc.csv"
    fc.to_csv(fpath, index=False)
    _, from_file = _inputs(f"portfolio.path={csv}", f"correlation.loadings={lpath}",
                           f"correlation.factor_correlation={fpath}")
    np.testing.assert_array_equal(from_file.loadings, from_csv.loadings)
    assert analytics(cfg, from_file).ul == a1.ul


def test_correlated_factors_change_the_pair_correlations(tmp_path):
    frame = synthetic_portfolio(4, 30)
    csv = tmp_path / "p.csv"
    frame.to_csv(csv, index=False)
    ids = list(dict.fromkeys(frame["obligor_id"]))
    load = pd.DataFrame({"obligor_id": ids, "a": 0.4, "b": 0.3})
    lpath = tmp_path / "l.csv"
    load.to_csv(lpath, index=False)
    fpath = tmp_path / "fc.csv"
    pd.DataFrame({"factor": ["a", "b"], "a": [1.0, 0.5], "b": [0.5, 1.0]}).to_csv(fpath,
                                                                                  index=False)
    _, inputs = _inputs(f"portfolio.path={csv}", f"correlation.loadings={lpath}",
                        f"correlation.factor_correlation={fpath}")
    beta = inputs.loadings
    # rho_ij = b' Sigma b = 0.16 + 0.09 + 2 * 0.5 * 0.12 = 0.37
    assert (beta @ beta.T)[0, 1] == pytest.approx(0.37, abs=1e-14)
    bad = tmp_path / "l2.csv"
    pd.DataFrame({"obligor_id": ids, "a": 0.9, "b": 0.9}).to_csv(bad, index=False)
    with pytest.raises(InputError, match="systematic variance"):
        _inputs(f"portfolio.path={csv}", f"correlation.loadings={bad}")
