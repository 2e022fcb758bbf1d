"""The temporal holdout of the directions (issue 22, item 3): never fits on year t + 1.

Seed: 003_ae2b3031728223ec.txt; spec: HAZARD.md; riskdask.hazard.holdout.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from riskdask.hazard import holdout as H
from riskdask.hazard import likelihood as L
from riskdask.hazard.panel import Period, build_panel
from riskdask.hazard.synthetic import generate_panel

PERIOD = Period()


@pytest.fixture(scope="module")
def py():
    panel = build_panel(generate_panel(4000, PERIOD, 21, true_k1=1.0, true_k2=2.0), PERIOD)
    f = panel.features
    return L.person_years(panel.grants, f.break_index, f.end_index, panel.event,
                          PERIOD.first_closure_year - PERIOD.start)


@pytest.mark.parametrize("t", [5, 8])
def test_a_fold_never_uses_year_t_plus_one_or_later(py, t):
    """Scrambling every outcome of the years after t changes no prediction of fold t, and
    the fold predicts exactly the person-years of year t + 1."""
    fold = H.holdout_fold(py, t, "T", 0.0, 80.0)
    later = py.year_index > t
    rng = np.random.default_rng(0)
    scrambled = replace(py, event=np.where(later, rng.integers(0, 2, py.size), py.event))
    again = H.holdout_fold(scrambled, t, "T", 0.0, 80.0)
    assert np.array_equal(fold["rows"], np.flatnonzero(py.year_index == t + 1))
    assert fold["theta"] == again["theta"]
    for c in H.CRITERIA:
        assert np.array_equal(fold["p"][c], again["p"][c])
    # while scrambling a training year does move the fit
    early = py.year_index == t
    moved = replace(py, event=np.where(early, 1 - py.event, py.event))
    assert not np.array_equal(H.holdout_fold(moved, t, "T", 0.0, 80.0)["p"]["T0"],
                              fold["p"]["T0"])


def test_report_pools_the_folds_scores_and_pairs(py):
    folds = [H.holdout_fold(py, t, "T", 0.0, 80.0) for t in (6, 7, 8, 9)]
    rep = H.holdout_report(py, folds, n_bins=5)
    rows = np.concatenate([f["rows"] for f in folds])
    y = py.event[rows]
    for c in H.CRITERIA:
        p = np.concatenate([f["p"][c] for f in folds])
        pc = np.clip(p, 1e-12, 1 - 1e-12)  # the documented clip
        got = rep.scores.set_index("criterion").loc[c]
        assert got.log_score == pytest.approx(np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
        assert got.brier == pytest.approx(np.mean((p - y) ** 2))
        r = rep.reliability[rep.reliability.criterion == c]
        assert r.n.sum() == y.size
        assert np.average(r.mean_predicted, weights=r.n) == pytest.approx(p.mean())
    assert rep.best == rep.scores.criterion[rep.scores.log_score.idxmax()]
    assert set(rep.paired.versus) == set(H.CRITERIA) - {rep.best}
    assert (rep.paired.mean_log_score_difference >= 0).all()
    assert (rep.paired.ci95_lo <= rep.paired.mean_log_score_difference).all()
    assert rep.best in rep.statement
