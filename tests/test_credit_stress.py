"""Factor stress from the run's own scenarios (riskdask.credit.stress): 0 sigma is the
unstressed run bit for bit (plain and IS); the worst 1 % of the factor against a direct
filter of a plain run's scenarios; a -2 sigma shift against the closed-form conditional EL of
a default-only pool; config errors; the job's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from riskdask.credit.simulation import (chunk_losses, simulate_local, simulation_statistics)
from riskdask.credit.stress import combine_stress, stress_chunk, stress_statistics
from riskdask.engine import plan_chunks, reduce_local
from riskdask.errors import ConfigError
from credit_pools import default_only
from test_credit_lattice import local_compute

N_NAMES, PD, RHO = 300, 0.01, 0.2


def _stressed(model, chunks, specs, fv):
    parts = reduce_local([stress_chunk(c, model, specs) for c in chunks], combine_stress)
    return [stress_statistics(s, model, fv, unchanged=(k == "shift" and v == 0.0))
            for (k, _, v, _), s in zip(specs, parts)]


@pytest.mark.parametrize("importance", [False, True])
def test_zero_sigma_is_the_unstressed_run_bit_for_bit(importance):
    n_sim, chunk = 20_000, 5_000
    model = default_only(N_NAMES, PD, RHO, n_sim, chunk, importance)
    chunks = plan_chunks(n_sim, chunk, 21)
    base = simulation_statistics(simulate_local(model, chunks), model, float(N_NAMES))
    st, = _stressed(model, chunks, [("shift", 0, 0.0, True)], float(N_NAMES))
    assert (st.el, st.el_se, st.ul, st.ul_se) == (base.el, base.el_se, base.ul, base.ul_se)
    for a, b in zip(st.levels, base.levels):
        assert (a.var, a.var_se, a.es, a.es_se) == (b.var, b.var_se, b.es, b.es_se)


def test_worst_one_percent_against_a_direct_filter_of_a_plain_run():
    n_sim, chunk = 200_000, 50_000
    model = default_only(N_NAMES, PD, RHO, n_sim, chunk, False, confidence=(0.9, 0.99))
    chunks = plan_chunks(n_sim, chunk, 5)
    st, = _stressed(model, chunks, [("worst", 0, 0.01, True)], float(N_NAMES))
    # the plain run's own scenarios, filtered directly
    parts = [chunk_losses(c, model) for c in chunks]
    loss = np.concatenate([p[0] for p in parts])
    eta = np.concatenate([p[2][:, 0] for p in parts])
    run = simulation_statistics(simulate_local(model, chunks), model, float(N_NAMES))
    assert loss.mean() == pytest.approx(run.el, rel=1e-12)        # the same scenarios
    kept = np.sort(loss[eta <= ndtri(0.01)])[::-1]
    assert abs(kept.size - 0.01 * n_sim) < 4 * np.sqrt(0.01 * n_sim)
    mean = kept.mean()
    assert abs(st.el - mean) < 3 * st.el_se and st.el > 5 * run.el
    for lv in st.levels:
        a = int(round(kept.size * (1 - lv.confidence)))
        var, es = kept[a - 1] - mean, kept[:a - 1].mean() - mean
        assert abs(lv.var - var) < 3 * np.hypot(lv.var_se, st.el_se), (lv, var)
        assert abs(lv.es - es) < 3 * np.hypot(lv.es_se, st.el_se), (lv, es)


@pytest.mark.parametrize("importance", [False, True])
def test_minus_two_sigma_shift_against_the_closed_form_conditional_el(importance):
    """Default-only pool: E[L | eta ~ N(k, 1)] = n Phi(Phi^-1(PD) - sqrt(rho) k)."""
    n_sim, chunk, k = 40_000, 10_000, -2.0
    model = default_only(N_NAMES, PD, RHO, n_sim, chunk, importance)
    st, = _stressed(model, plan_chunks(n_sim, chunk, 8), [("shift", 0, k, True)],
                    float(N_NAMES))
    exact = N_NAMES * ndtr(ndtri(PD) - np.sqrt(RHO) * k)
    assert exact > 3 * N_NAMES * PD
    assert abs(st.el - exact) < 3 * st.el_se, (st.el, st.el_se, exact)


def test_stress_in_the_job_outputs_and_bad_stress_configs():
    from riskdask.credit.outputs import present

    sim = {"n_scenarios": 20_000, "chunk_size": 5_000, "confidence": [0.99, 0.999],
           "tail_fits": False}
    cfg, result = local_compute({
        "seed": 4, "portfolio": {"synthetic_obligors": 40}, "simulation": sim,
        "stress": [{"name": "none", "factor": "global", "shift": 0.0},
                   {"name": "global -2", "factor": "global", "shift": -2.0},
                   {"name": "worst 1%", "factor": "global", "worst": 0.01}]})
    none, down, worst = result.stress
    assert none["el"] == result.stats.el and none["levels"][1]["es"] == result.stats.levels[1].es
    assert down["el"] > 2 * result.stats.el and worst["el"] > down["el"]
    out = present(result, cfg)
    assert len(out.tables["stress"]) == 6
    assert any(k == "stress global -2" for k, _ in out.headline)
    assert any(t.startswith("Factor stress") for t, _ in out.sections)
    with pytest.raises(ConfigError, match="unknown factor"):
        local_compute({"portfolio": {"synthetic_obligors": 40}, "simulation": sim,
                       "stress": [{"name": "x", "factor": "sector:nope", "shift": 1.0}]})
    with pytest.raises(ValueError, match="exactly one of shift"):
        local_compute({"stress": [{"name": "x", "factor": "global", "shift": 1.0,
                                   "worst": 0.1}]})
