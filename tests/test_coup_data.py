"""REIGN loader on real rows, the synthetic panel's documented properties, the seed's
preparation (feature count), the lead target and the splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskdask.coup.prepare import (check_training_positives, feature_matrix, lead_target,
                                   random_split, temporal_split)
from riskdask.coup.reign import read_reign_csv, validate_panel
from riskdask.coup.schema import (DEFAULT_FEATURE_COUNT, DEFAULT_NUMERIC_FEATURES,
                                  GOVERNMENT_TYPES, SEED_COLUMNS)
from riskdask.coup.synthetic import SYNTHETIC_PROPERTIES, synthetic_reign
from riskdask.errors import InputError

EXCERPT = Path(__file__).parent / "data" / "coup_reign_excerpt.csv"


@pytest.fixture(scope="module")
def panel():
    return synthetic_reign()


def test_seed_column_counts():
    # seed: 38 columns; minus irregular/couprisk/pctile_risk = 35; one-hot government = 50
    assert len(SEED_COLUMNS) == 38 and len(set(SEED_COLUMNS)) == 38
    assert len(GOVERNMENT_TYPES) == 16
    assert 38 - 3 - 1 + 16 == 50
    # of those 50, the target, pt_suc and the text identifiers country/leader are not features
    assert DEFAULT_FEATURE_COUNT == 50 - 4 == 46
    assert len(DEFAULT_NUMERIC_FEATURES) == 30


def test_synthetic_panel_documented_properties(panel):
    props = SYNTHETIC_PROPERTIES
    lo, hi = props["rows"]
    assert lo <= len(panel) <= hi
    assert panel["ccode"].nunique() == props["n_countries"]
    rate = panel["pt_attempt"].mean()
    assert props["attempt_rate"][0] <= rate <= props["attempt_rate"][1]
    share = panel["pt_suc"].sum() / panel["pt_attempt"].sum()
    assert props["success_share"][0] <= share <= props["success_share"][1]
    assert (panel["pt_suc"] <= panel["pt_attempt"]).all()          # a success is an attempt
    first = panel[["year", "month"]].min(axis=0)
    first_year = panel["year"].min()
    assert (first_year, panel.loc[panel["year"] == first_year, "month"].min()) == (
        props["first_month"])
    last = panel.loc[panel["year"] == panel["year"].max(), "month"].max()
    assert (panel["year"].max(), last) == props["last_month"]
    assert first["month"] == 1
    # countries enter at independence: many start after 1950
    starts = panel.groupby("ccode")["year"].min()
    assert (starts == 1950).mean() < 0.6 and (starts >= 1956).sum() > 60
    # REIGN's columns, in the seed's order, with REIGN-like types
    assert list(panel.columns) == list(SEED_COLUMNS)
    for c in ("ccode", "year", "month", "tenure_months", "age", "pt_attempt", "pt_suc",
              "elected", "male", "militarycareer", "anticipation", "delayed"):
        assert panel[c].dtype == np.int64, c
    for c in ("precip", "lastelection", "loss", "couprisk", "pctile_risk", "irregular"):
        assert panel[c].dtype == np.float64, c
    for c in ("country", "leader", "government"):
        assert panel[c].dtype == object, c
    assert set(panel["government"]) == set(GOVERNMENT_TYPES)
    assert not panel.duplicated(["ccode", "year", "month"]).any()
    # it passes the loader's own checks, nothing excluded
    loaded = validate_panel(panel, source="synthetic", numeric_features=DEFAULT_NUMERIC_FEATURES)
    assert loaded.exclusions == {} and len(loaded.frame) == len(panel)


def test_synthetic_panel_is_deterministic_and_seed_dependent():
    a = synthetic_reign(seed=7, n_countries=12)
    b = synthetic_reign(seed=7, n_countries=12)
    c = synthetic_reign(seed=8, n_countries=12)
    pd.testing.assert_frame_equal(a, b)
    assert not a["precip"].equals(c["precip"]) or len(a) != len(c)


def test_synthetic_dependence_is_plausible(panel):
    """Attempts more frequent under juntas/provisional regimes than democracies, with extreme
    precipitation, after delayed elections, and in the early decades."""
    rate = panel.groupby("government")["pt_attempt"].mean()
    dem = panel["government"].str.contains("Democracy")
    junta = panel["government"].isin(["Military", "Provisional - Military",
                                      "Provisional - Civilian"])
    assert panel.loc[junta, "pt_attempt"].mean() > 4 * panel.loc[dem, "pt_attempt"].mean()
    assert rate["Parliamentary Democracy"] < rate["Presidential Democracy"]
    extreme = panel["precip"].abs() > 1.6
    assert panel.loc[extreme, "pt_attempt"].mean() > 1.3 * panel.loc[~extreme, "pt_attempt"].mean()
    early = panel["year"] < 1985
    assert panel.loc[early, "pt_attempt"].mean() > 2 * panel.loc[~early, "pt_attempt"].mean()
    # democracy spreads over time, as in the seed's trend analysis
    assert dem[panel["year"] >= 2010].mean() > dem[panel["year"] < 1970].mean() + 0.3
    # leader age and tenure in plausible ranges
    assert 50 < panel["age"].mean() < 62 and 40 < panel["tenure_months"].mean() < 110


def test_preparation_gives_documented_feature_count(panel):
    X, names = feature_matrix(panel, DEFAULT_NUMERIC_FEATURES)
    assert X.shape == (len(panel), DEFAULT_FEATURE_COUNT) and len(names) == 46
    assert not {"pt_attempt", "pt_suc", "country", "leader", "irregular", "couprisk",
                "pctile_risk", "government"} & set(names)
    gov = X[:, 30:]
    np.testing.assert_array_equal(gov.sum(axis=1), 1.0)
    # the dummies agree with pandas get_dummies over all 16 categories
    ref = pd.get_dummies(pd.Categorical(panel["government"], categories=GOVERNMENT_TYPES),
                         prefix="government", prefix_sep="_").astype(float)
    assert list(ref.columns) == names[30:]
    np.testing.assert_array_equal(gov, ref.to_numpy())
    with pytest.raises(ValueError, match="pt_suc"):
        feature_matrix(panel, ["age", "pt_suc"])


def test_real_reign_layout_is_accepted_and_missing_rows_counted():
    raw = read_reign_csv(EXCERPT)
    assert raw.shape[1] == 67                         # 37 REIGN 2021 + 30 Cline columns
    loaded = validate_panel(raw, source=str(EXCERPT), numeric_features=DEFAULT_NUMERIC_FEATURES)
    assert loaded.n_rows_read == 300
    assert sum(loaded.exclusions.values()) == 10        # the rows without REIGN values
    [(reason, rows)] = loaded.excluded_rows.items()
    assert "government" in reason and len(rows) == 10
    assert raw["government"].iloc[np.array(rows) - 1].isna().all()
    frame = loaded.frame
    assert len(frame) == 290 and set(frame["government"]) <= set(GOVERNMENT_TYPES)
    X, names = feature_matrix(frame, DEFAULT_NUMERIC_FEATURES)
    assert X.shape == (290, 46) and np.isfinite(X).all()
    assert frame["pt_attempt"].isin([0, 1]).all() and frame["pt_attempt"].sum() > 100


def test_lead_target_against_a_direct_loop():
    p = synthetic_reign(seed=3, n_countries=5)
    p = p.drop(index=p.index[100:103]).reset_index(drop=True)   # a gap inside a country
    loaded = validate_panel(p, source="x", numeric_features=DEFAULT_NUMERIC_FEATURES).frame
    k = 3
    y, complete = lead_target(loaded, k)
    key = {(c, yy * 12 + m - 1): a for c, yy, m, a in
           loaded[["ccode", "year", "month", "pt_attempt"]].itertuples(index=False)}
    for i, (c, yy, m) in enumerate(loaded[["ccode", "year", "month"]].itertuples(index=False)):
        mi = yy * 12 + m - 1
        ahead = [key.get((c, mi + s)) for s in range(1, k + 1)]
        if any(a is None for a in ahead):
            assert not complete[i] and np.isnan(y[i])
        else:
            assert complete[i] and y[i] == max(ahead)
    assert (~complete).sum() == 5 * 3 + 3          # the end of each country + before the gap
    y0, c0 = lead_target(loaded, 0)
    assert c0.all() and np.array_equal(y0, loaded["pt_attempt"].to_numpy())


def test_splits(panel):
    y = panel["pt_attempt"].to_numpy()
    train, test = random_split(y, 0.3, seed=1)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    assert abs(len(test) / len(y) - 0.3) < 1e-4
    assert abs(y[train].mean() - y[test].mean()) < 2e-4          # stratified
    train2, _ = random_split(y, 0.3, seed=1)
    np.testing.assert_array_equal(train, train2)
    tr, te = temporal_split(panel["year"].to_numpy(), 2009)
    assert panel["year"].to_numpy()[tr].max() == 2009 and panel["year"].to_numpy()[te].min() == 2010
    with pytest.raises(InputError, match="no positive rows"):
        check_training_positives(np.zeros(10), source="f.csv")
