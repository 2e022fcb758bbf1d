"""What-if from a run's own scenarios (riskdask.credit.whatif, ``riskdask whatif``).

- the regenerated states of an obligor are the run's own, bit for bit (both draw paths);
- remove one position: equal (to rounding) to a full rerun with its nominal 0 (the same
  draw layout), and within 2 SE of a full rerun without it;
- add one position to an existing obligor: equal (to rounding) to a full rerun with it
  (the same layout); add a new obligor, and add + remove: within 2 SE of a full rerun;
- the CLI: exit 0 with the figures, exit 2 with one message for a bad id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskdask import run_job
from riskdask.credit.synthetic import synthetic_portfolio
from riskdask.credit.whatif import obligor_states_chunk
from riskdask.credit.whatif_run import whatif
from riskdask.engine import plan_chunks
from test_credit_lattice import LocalContext, local_compute

SIM = ["simulation.n_scenarios=40000", "simulation.chunk_size=10000",
       "simulation.confidence=[0.99, 0.999]", "simulation.tail_fits=false"]


@pytest.mark.parametrize("kind,n", [("factor", 60), ("uniform", 300)])
def test_regenerated_states_are_the_runs_own(kind, n):
    """Normal draws (factor: many groups) and 32-bit uniforms (uniform: few groups)."""
    cfg, r = local_compute({"seed": 3, "portfolio": {"synthetic_obligors": n},
                            "correlation": {"kind": kind},
                            "simulation": {"n_scenarios": 10_000, "chunk_size": 5_000,
                                           "confidence": [0.99, 0.999],
                                           "tail_fits": False}})
    m, s = r.model, r.run.summary
    chunks = plan_chunks(10_000, 5_000, LocalContext(3).streams.seed("scenarios"))
    cols = [0, m.n_obligors // 2, m.n_obligors - 1]
    states = np.concatenate([obligor_states_chunk(c, m, cols)[0] for c in chunks], axis=1)
    rows = s.tail_scenario[:s.tail_states.shape[0]]
    np.testing.assert_array_equal(states[:, rows].T, s.tail_states[:, cols])
    every = np.concatenate([obligor_states_chunk(c, m, range(m.n_obligors))[0]
                            for c in chunks], axis=1)
    total = m.loss_by_state[np.arange(m.n_obligors)[:, None], every].sum(axis=0)
    np.testing.assert_allclose(total, s.scenario_loss, rtol=1e-12, atol=1e-6)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    d = tmp_path_factory.mktemp("whatif")
    pf = synthetic_portfolio(2009, 40)
    pf.to_csv(d / "pf.csv", index=False)
    return d, pf


def _run(client, d, frame, name):
    path = d / f"{name}.csv"
    frame.to_csv(path, index=False)
    return run_job("credit", overrides=[*SIM, f"portfolio.path={path}"], client=client,
                   out=d / f"runs-{name}", quiet=True)


def _close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _within(res, run, k=2.0):
    for lv, ref in zip(res["levels"], run.summary["levels"]):
        for key in ("var", "es"):
            err = np.hypot(lv[f"{key}_se"], ref[f"{key}_se"])
            assert abs(lv[key] - ref[key]) < k * err, (key, lv, ref)


def test_whatif_against_full_reruns(local_client, book):
    d, pf = book
    client = local_client(1)
    base = _run(client, d, pf, "base")
    assert (base.run_dir / "tables" / "scenario_losses.parquet").is_file()
    # -- remove one position
    victim = pf["position_id"].iloc[5]
    res = whatif(base.run_dir, remove=[victim])
    zero = pf.copy()
    zero.loc[zero["position_id"] == victim, "nominal"] = 0.0
    same_layout = _run(client, d, zero, "zero")
    for lv, ref in zip(res["levels"], same_layout.summary["levels"]):
        assert _close(lv["var"], ref["var"]) and _close(lv["es"], ref["es"]), (lv, ref)
    _within(res, _run(client, d, pf[pf["position_id"] != victim], "removed"))
    # -- add one position to an existing obligor (same rating): the same draws
    extra = pf.iloc[[7]].copy()
    extra["position_id"] = "ADD1"
    extra["nominal"] = 2.5e7
    extra.to_csv(d / "add_existing.csv", index=False)
    res = whatif(base.run_dir, add=d / "add_existing.csv")
    full = _run(client, d, pd.concat([pf, extra]), "added_existing")
    for lv, ref in zip(res["levels"], full.summary["levels"]):
        assert _close(lv["var"], ref["var"]) and _close(lv["es"], ref["es"]), (lv, ref)
        assert lv["es_change_se"] > 0
    # -- add a new obligor, and add + remove: within 2 SE of the full reruns
    new = pf.iloc[[3]].copy()
    new["position_id"], new["obligor_id"], new["nominal"] = "NEW1", "ONEW", 6e7
    new.to_csv(d / "add_new.csv", index=False)
    res = whatif(base.run_dir, add=d / "add_new.csv")
    _within(res, _run(client, d, pd.concat([pf, new]), "added_new"))
    both = whatif(base.run_dir, add=d / "add_new.csv", remove=[victim])
    _within(both, _run(client, d, pd.concat([pf[pf["position_id"] != victim], new]), "both"))
    added = [p for p in both["positions"] if p["id"] == "ONEW"][0]
    assert added["marginal_es"][0] > 0
    assert both["kept_bytes"] == 8 * 40_000


def test_whatif_cli(cli, local_client, book):
    d, pf = book
    base = _run(local_client(1), d, pf, "cli")
    r = cli("whatif", str(base.run_dir), "--remove", pf["position_id"].iloc[2])
    assert r.code == 0, r.err
    assert "ES 99%" in r.out and "change" in r.out
    r = cli("whatif", str(base.run_dir), "--remove", "NO_SUCH_ID")
    assert r.code == 2 and "NO_SUCH_ID" in r.err and r.err.count("\n") <= 1
