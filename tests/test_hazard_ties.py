"""Dev without tie artefacts (issue 22, item 5): rational rays are not special, and the
bandwidth-sensitivity table evaluates Dev exactly as the grid does.

Seed: 003_ae2b3031728223ec.txt (Section 2.4, eqs. 6-8); spec: HAZARD.md.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from riskdask import run_job
from riskdask.hazard.estimators import GridRule
from riskdask.hazard.gridsearch import (coefficient_matrix, compress, direction_points,
                                        evaluate_points, make_grid_points, sample_weights,
                                        tiebreak_matrix)
from riskdask.hazard.panel import Period, build_panel
from riskdask.hazard.split import stratum_codes, usable_splits
from riskdask.hazard.synthetic import generate_panel


@pytest.fixture(scope="module")
def setup():
    period = Period()
    panel = build_panel(generate_panel(3000, period, 8, true_k1=1.0, true_k2=2.0), period)
    n = len(panel.npos)
    strata = stratum_codes(panel.npos.field.to_numpy(), panel.npos.function.to_numpy(),
                           np.zeros(n, dtype=int))
    us = usable_splits(strata, panel.event, np.random.SeedSequence(3), 4)
    table = compress(panel.features.matrix(), panel.event)
    W, D = sample_weights(table, us.splits)
    return table, W, D


@pytest.mark.parametrize("k1, k2", [(1.0, 1.0), (1.0, 2.0), (2.0, 1.0), (1.0, 3.0)])
def test_direction_limit_is_dev_just_above_the_ray(setup, k1, k2):
    """On a rational ray, the tie-broken Dev equals the data-tie Dev at a direction 1e-7 rad
    above it (where no pattern ties), an independent evaluation; the data's ties differ."""
    table, W, D = setup
    pts = make_grid_points([k1], [k2])
    tb = tiebreak_matrix("T", pts, np.array([True]))
    coefs = coefficient_matrix("T", pts)
    limit = evaluate_points(table.features, W, D, coefs, GridRule(ties="direction_limit"), tb)
    th = np.arctan2(k2, k1) + 1e-7
    above = evaluate_points(table.features, W, D,
                            coefficient_matrix("T", direction_points([th])), GridRule())
    np.testing.assert_allclose(limit, above, rtol=1e-5)
    tied = evaluate_points(table.features, W, D, coefs, GridRule(), tb)
    assert np.max(np.abs(tied - limit) / limit) > 1e-4  # the artefact the rule removes
    # the axes keep the data's ties: a zero tiebreak row changes nothing
    axis = coefficient_matrix("T", make_grid_points([1.0], [0.0]))
    np.testing.assert_array_equal(
        evaluate_points(table.features, W, D, axis, GridRule(ties="direction_limit"),
                        np.zeros((1, 4))),
        evaluate_points(table.features, W, D, axis, GridRule()))


def test_sensitivity_row_at_the_runs_bandwidth_is_the_run(local_client, tmp_path):
    res = run_job("hazard", client=local_client(2), out=tmp_path,
                  overrides=["grid.k1.num=13", "grid.k2.num=13", "split.n_splits=4",
                             "bootstrap.n_boot=0", "likelihood.holdout=false",
                             "smoothing.sensitivity_fractions=[0.05, 0.1]"])
    s = res.summary
    row = res.table("bandwidth_sensitivity").set_index("bandwidth_fraction").loc[0.1]
    o = s["optimum"]["interior"]
    assert row.theta_deg == o["theta_deg"] and row.dev_mean == o["dev_mean"]
    iv = s["optimum"]["theta_interval"]
    assert (row.theta_lo, row.theta_hi) == (iv["lo"], iv["hi"])
    assert "ties on rational rays broken" in s["grid_rule"]
    assert "holdout" not in s
    assert replace(GridRule(), ties="data").describe() == GridRule().describe()
