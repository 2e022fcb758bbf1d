"""Small items of issue 22 (item 7): config rules, a flat surface, the real weights of the
fixed definitions.

Seed: 003_ae2b3031728223ec.txt; spec: HAZARD.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from riskdask import run_job
from riskdask.hazard.config import Config
from riskdask.hazard.gridsearch import direction_points
from riskdask.hazard.uncertainty import optimum_report, reference_points


def test_first_closure_year_follows_the_period_start_unless_set():
    assert Config().period.closures_from() == 1998
    assert Config(period={"start": 2001, "end": 2010}).period.closures_from() == 2002
    assert Config(period={"start": 2001, "end": 2010,
                          "first_closure_year": 2001}).period.closures_from() == 2001
    with pytest.raises(ValidationError, match="first_closure_year"):
        Config(period={"start": 2001, "end": 2010, "first_closure_year": 2000})


def test_min_usable_above_n_splits_is_a_config_error():
    with pytest.raises(ValidationError, match="min_usable = 6 is more than n_splits = 5"):
        Config(split={"n_splits": 5, "min_usable": 6})
    assert Config(split={"n_splits": 5, "min_usable": 5}).split.needed() == 5


def test_a_flat_surface_reports_no_range():
    pts = direction_points(np.radians(np.linspace(5, 85, 17)))
    dev = np.full((pts.size, 4), 0.25)
    ref = reference_points([0.0])
    rep = optimum_report(pts, dev, ref, np.full((ref.size, 4), 0.25))
    assert not rep.identified and "flat" in rep.statement
    assert math.isnan(rep.theta_interval.lo) and math.isnan(rep.theta_interval.hi)
    assert rep.headline.theta_deg is None and "no range" in rep.headline.text


def test_fixed_definitions_show_their_real_weights(local_client, tmp_path):
    res = run_job("hazard", client=local_client(1), out=tmp_path,
                  overrides=["definition=T3", "split.n_splits=2", "bootstrap.n_boot=0"])
    surface = res.table("deviation_surface")
    assert surface[["k1", "k2", "theta_deg", "ratio_k2_k1"]].isna().all().all()
    weights = surface[["weight_N0", "weight_N1", "weight_X", "weight_Z"]].iloc[0].tolist()
    assert weights == [0.0, 0.0, 1.0, 0.0]
    assert res.table("optimum_per_split").theta_deg.isna().all()
    html = (res.run_dir / "report.html").read_text()
    assert "T3 = 1·X (no k1, k2)" in html and "k1=1, k2=1" not in html
    assert "theta = 45" not in html.split("Method")[1].split("Splits and panel rules")[0]
    assert res.summary["likelihood"]["theta_deg"] is None
    assert res.summary["prediction"]["direction"]["source"] == "fixed definition"


def test_prediction_direction_choices():
    from types import SimpleNamespace

    from riskdask.hazard.pipeline import prediction_direction

    best = SimpleNamespace(theta_deg=80.0, k0=0.0)
    prof = SimpleNamespace(theta_deg=63.0)

    def at(direction):
        cfg = Config(prediction={"direction": direction})
        return prediction_direction(cfg, prof, best, np.array([9.0, 9.0, 0, 0]))

    coef, d = at("likelihood")
    assert d["theta_deg"] == 63.0 and coef[:2] == pytest.approx(
        [math.cos(math.radians(63)), math.sin(math.radians(63))])
    assert at("dev")[1]["theta_deg"] == 80.0
    assert at("T0")[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    coef, d = at([1.0, 2.0])
    assert d["theta_deg"] == pytest.approx(63.435, abs=1e-3)
    assert coef[1] / coef[0] == pytest.approx(2.0)
    # a fixed definition predicts at its own weights, whatever is asked
    coef, d = prediction_direction(Config(definition="T3"), None, best, np.array([0, 0, 1.0, 0]))
    assert d["source"] == "fixed definition" and coef.tolist() == [0, 0, 1.0, 0]
    for bad in ([0.0, 0.0], [1.0], [-1.0, 2.0]):
        with pytest.raises(ValidationError, match="prediction.direction"):
            Config(prediction={"direction": bad})
