"""The seed's preparation, the optional lead target and the train/test splits.

Seed, "Removing Undefined Features" and "Converting 'government' to Dummy Variables": drop
``irregular``, ``couprisk`` and ``pctile_risk``; one-hot encode ``government`` into 16 regime
columns; remove observations with missing values (done, and counted, by the loader). Target:
``pt_attempt``. ``pt_suc`` (a success implies an attempt) and the text identifiers are never
features. With the seed's column choice this gives
:data:`~riskdask.coup.schema.DEFAULT_FEATURE_COUNT` = 46 features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ..errors import InputError
from .schema import DROPPED, GOVERNMENT_TYPES, SUCCESS, TARGET, TEXT_COLUMNS, government_dummies

__all__ = ["feature_matrix", "lead_target", "country_month_key", "random_split",
           "purge_overlapping", "temporal_split",
           "check_training_positives", "month_index", "forbidden_features"]


def forbidden_features() -> set[str]:
    """Columns that may never be features: target, its leak, text ids, the seed's dropped ones."""
    return {TARGET, SUCCESS, "government", *TEXT_COLUMNS, *DROPPED}


def feature_matrix(panel: pd.DataFrame, numeric_features: Sequence[str],
                   use_government: bool = True) -> tuple[np.ndarray, list[str]]:
    """The model's feature matrix (float64) and its column names.

    Numeric features in the order given, then ``government_<type>`` dummies for all 16 REIGN
    types in a fixed order -- the same columns whichever types occur in the data, so that
    models trained on different slices (backtest years) line up.
    """
    bad = sorted(set(numeric_features) & forbidden_features())
    if bad:
        raise ValueError(f"not allowed as features: {', '.join(bad)}")
    names = list(numeric_features)
    blocks = [panel[names].to_numpy(dtype=np.float64)]
    if use_government:
        codes = pd.Categorical(panel["government"], categories=GOVERNMENT_TYPES).codes
        onehot = np.zeros((len(panel), len(GOVERNMENT_TYPES)), dtype=np.float64)
        onehot[np.arange(len(panel)), codes] = 1.0
        blocks.append(onehot)
        names += government_dummies()
    return np.hstack(blocks), names


def month_index(panel: pd.DataFrame) -> np.ndarray:
    """Months since January of year 0: consecutive months differ by exactly 1."""
    return panel["year"].to_numpy(np.int64) * 12 + panel["month"].to_numpy(np.int64) - 1


def country_month_key(panel: pd.DataFrame) -> np.ndarray:
    """One int64 per row naming its country-month (``ccode * 10**6 + month index``)."""
    return panel["ccode"].to_numpy(np.int64) * 1_000_000 + month_index(panel)


def lead_target(panel: pd.DataFrame, lead_months: int) -> tuple[np.ndarray, np.ndarray]:
    """Target "a coup attempt in the next ``lead_months`` months" (0: the same month, the seed's).

    The panel is a leader-month panel: a month in which the leader changes has one row per
    leader, and REIGN records the attempt on the row of the leader it was aimed at. "An attempt
    in country c in month m" is therefore the maximum of ``pt_attempt`` over c's rows in m, and
    the lead target of a row is the maximum of that over months ``m + 1 .. m + k`` -- the same
    for every leader row of the month. ``lead_months = 0`` keeps each row's own ``pt_attempt``
    (the seed's target, one row per leader-month).

    Returns
    -------
    y : ndarray of float64
        The target per row (NaN where undefined).
    complete : ndarray of bool
        False for rows whose next ``lead_months`` months are not all in the panel (the end of
        the data or a gap in a country's months): those rows have no target and are excluded.
    """
    attempt = panel[TARGET].to_numpy(np.float64)
    if lead_months == 0:
        return attempt, np.ones(len(panel), dtype=bool)
    key = country_month_key(panel)
    months, inverse = np.unique(key, return_inverse=True)
    any_attempt = np.zeros(len(months))
    np.maximum.at(any_attempt, inverse, attempt)
    n = len(panel)
    y = np.zeros(n)
    complete = np.ones(n, dtype=bool)
    for s in range(1, lead_months + 1):
        pos = np.searchsorted(months, key + s)
        found = pos < len(months)
        found[found] = months[pos[found]] == key[found] + s
        complete &= found
        y[found] = np.maximum(y[found], any_attempt[pos[found]])
    y[~complete] = np.nan
    return y, complete


def random_split(y: np.ndarray, test_size: float, seed: int, stratify: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The seed's random 70/30 split (stratified on the target): sorted train and test rows."""
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed,
                                   stratify=y if stratify else None)
    return np.sort(train), np.sort(test)


def purge_overlapping(train: np.ndarray, test: np.ndarray, ccode: np.ndarray,
                      month_idx: np.ndarray, lead_months: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop training rows whose target window overlaps a test row's of the same country.

    With a lead of ``k`` months a row of month ``m`` has the target "an attempt in ``m + 1 ..
    m + k``"; two rows of one country share target months when ``|m - m'| < k`` (for
    ``k = 1``: rows of the same country-month, a leader-change month's or a within-month
    return's rows), so a random split would train on the very attempts it tests (a purged
    split; López de Prado 2018, *Advances in Financial Machine Learning*, sec. 7.4). Returns
    the kept and the purged training rows; ``lead_months = 0`` purges nothing.
    """
    train, test = np.asarray(train), np.asarray(test)
    if lead_months <= 0 or not len(test):
        return train, train[:0]
    key = np.asarray(ccode, dtype=np.int64) * 1_000_000 + np.asarray(month_idx, dtype=np.int64)
    test_keys = np.unique(key[test])
    k = key[train]
    pos = np.searchsorted(test_keys, k - (lead_months - 1), side="left")
    near = pos < len(test_keys)
    near[near] = test_keys[pos[near]] <= k[near] + (lead_months - 1)
    return train[~near], train[near]


def temporal_split(years: np.ndarray, train_until_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Train on years ``<= train_until_year``, test on later years (the honest forecast split)."""
    years = np.asarray(years)
    return np.flatnonzero(years <= train_until_year), np.flatnonzero(years > train_until_year)


def check_training_positives(y_train: np.ndarray, *, source: str, what: str = "training set"
                             ) -> None:
    """A forest cannot learn attempts it never sees: no positive training row is bad input."""
    if len(y_train) == 0:
        raise InputError(f"the {what} is empty", file=source, column=TARGET)
    if not np.any(y_train == 1):
        raise InputError(f"no positive rows ({TARGET} = 1) in the {what} "
                         f"({len(y_train)} rows); nothing to learn from", file=source,
                         column=TARGET)
