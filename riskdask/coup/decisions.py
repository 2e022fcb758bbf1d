"""Out-of-sample decisions on the pooled backtest: thresholds, alert budgets, recalibration.

Every choice a user would act on is made on earlier folds only and applied to the next one, so
the figures forecast rather than describe (Tashman 2000, rolling origin):

- :func:`rolling_threshold`: for test year ``Y`` the F1-optimal threshold of the seed's
  1,000-point grid is chosen on the pooled predictions of the years before ``Y`` (positive
  when ``p > t``, the first threshold reaching the maximum) and applied to ``Y``'s rows; the
  counts are pooled over the years. A year with no earlier attempt has no threshold and is
  left out (counted).
- :func:`alert_budget`: each month the ``k`` countries with the highest forecast are flagged
  (a country's forecast is the maximum over its rows of the month, its outcome whether an
  attempt occurred). Ties at the budget's edge share the remaining slots equally (each tied
  country counts ``slots / tied``): the expected hits of a random tie-break, never an order
  by country code. A forecast without skill (climatology, constant inside a year) flags at
  random, which is its expected hit rate ``k / countries``.
- :func:`rolling_isotonic`: isotonic regression (pool-adjacent-violators; Zadrozny and Elkan
  2002) fitted on the pooled predictions of the years before ``Y`` and their outcomes, applied
  to ``Y`` -- a recalibration that never sees the year it recalibrates.

Pure functions of arrays and tables (no Dask).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["f1_optimum", "rolling_threshold", "rolling_threshold_summary", "alert_budget",
           "rolling_isotonic"]


def f1_optimum(p: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[float, float] | None:
    """The first threshold of ``grid`` with the largest F1 (positive when ``p > t``), and F1.

    ``F1 = 2 TP / (2 TP + FP + FN)``; None when ``y`` has no positive. Counts from sorted
    scores: ``TP(t) = #{positives with p > t}``.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y != 1])
    if not len(pos):
        return None
    tp = len(pos) - np.searchsorted(pos, grid, side="right")
    fp = len(neg) - np.searchsorted(neg, grid, side="right")
    fn = len(pos) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    i = int(np.argmax(f1))
    return float(grid[i]), float(f1[i])


def rolling_threshold(pooled: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    """Per model and test year: the F1 threshold chosen on earlier years, applied to this one.

    ``pooled``: the backtest's year folds (``model``, ``test_year``, ``probability``,
    ``target``). Returns ``model``, ``test_year``, ``threshold`` (NaN: no earlier attempt),
    ``chosen_on_years`` (``"1990-1994"``), ``TP``, ``FP``, ``FN``, ``attempts``.
    """
    out = []
    for model, g in pooled.groupby("model", sort=False):
        years = np.sort(g["test_year"].unique())
        ty = g["test_year"].to_numpy()
        p, y = g["probability"].to_numpy(), g["target"].to_numpy()
        for yr in years:
            before, now = ty < yr, ty == yr
            opt = f1_optimum(p[before], y[before], grid) if before.any() else None
            row = {"model": model, "test_year": int(yr), "attempts": int(np.sum(y[now] == 1)),
                   "chosen_on_years": f"{int(years[0])}-{int(yr) - 1}" if before.any() else "",
                   "threshold": np.nan, "TP": 0, "FP": 0, "FN": 0}
            if opt is not None:
                flag = p[now] > opt[0]
                row.update(threshold=opt[0], TP=int(np.sum(flag & (y[now] == 1))),
                           FP=int(np.sum(flag & (y[now] != 1))),
                           FN=int(np.sum(~flag & (y[now] == 1))))
            out.append(row)
    return pd.DataFrame(out)


def _scores(tp: float, fp: float, fn: float) -> dict[str, float | None]:
    return {"precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None}


def rolling_threshold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Pooled over the years that had a threshold: TP, FP, FN, precision, recall, F1."""
    out = []
    for model, g in table.groupby("model", sort=False):
        has = g["threshold"].notna()
        tp, fp, fn = (int(g.loc[has, c].sum()) for c in ("TP", "FP", "FN"))
        out.append({"model": model, "years_scored": int(has.sum()),
                    "years_without_earlier_attempt": int((~has).sum()),
                    "attempts_scored": int(g.loc[has, "attempts"].sum()),
                    "TP": tp, "FP": fp, "FN": fn, **_scores(tp, fp, fn)})
    return pd.DataFrame(out)


def alert_budget(pooled: pd.DataFrame, k: int) -> pd.DataFrame:
    """Flag the top ``k`` countries each month; hits and misses pooled over the backtest.

    Returns one row per model: ``k``, ``months``, ``flags`` (country-months flagged, ties
    counted fractionally), ``hits`` (flagged country-months with an attempt), ``attempts``
    (country-months with an attempt), ``misses`` (= attempts - hits), ``precision`` (hits /
    flags), ``recall`` (hits / attempts), and ``random_recall`` (``k`` / countries per month,
    averaged over attempts: what flagging at random would catch).
    """
    out = []
    for model, g in pooled.groupby("model", sort=False):
        cm = (g.groupby(["year", "month", "ccode"], sort=True)
              .agg(p=("probability", "max"), o=("target", "max")).reset_index())
        flags = hits = random_hits = 0.0
        attempts, months = 0, 0
        for _, m in cm.groupby(["year", "month"], sort=True):
            p, o = m["p"].to_numpy(), m["o"].to_numpy()
            n = len(p)
            months += 1
            attempts += int(np.sum(o == 1))
            w = _budget_weights(p, min(k, n))
            flags += w.sum()
            hits += float(np.dot(w, o == 1))
            random_hits += min(k, n) / n * float(np.sum(o == 1))
        out.append({"model": model, "k": int(k), "months": months, "flags": flags,
                    "hits": hits, "attempts": attempts, "misses": attempts - hits,
                    "precision": hits / flags if flags else None,
                    "recall": hits / attempts if attempts else None,
                    "random_recall": random_hits / attempts if attempts else None})
    return pd.DataFrame(out)


def _budget_weights(p: np.ndarray, k: int) -> np.ndarray:
    """Weight 1 for the ``k`` highest scores; a tie across the k-th place shares its slots."""
    w = np.zeros(len(p))
    if k <= 0:
        return w
    kth = np.sort(p)[::-1][k - 1]
    above = p > kth
    tied = p == kth
    w[above] = 1.0
    w[tied] = (k - above.sum()) / tied.sum()
    return w


def rolling_isotonic(pooled: pd.DataFrame) -> np.ndarray:
    """Recalibrated probabilities of ``pooled``'s rows: per model and year, an isotonic map
    fitted on the model's predictions of the earlier years (NaN-free, both classes needed;
    otherwise the year is left as it is).

    Returns an array aligned with ``pooled``'s rows.
    """
    from sklearn.isotonic import IsotonicRegression

    out = pooled["probability"].to_numpy(dtype=np.float64).copy()
    for _, g in pooled.groupby("model", sort=False):
        idx = g.index.to_numpy()
        ty = g["test_year"].to_numpy()
        p, y = g["probability"].to_numpy(np.float64), g["target"].to_numpy(np.float64)
        for yr in np.unique(ty):
            before, now = ty < yr, ty == yr
            if not (np.any(y[before] == 1) and np.any(y[before] == 0)):
                continue
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(p[before], y[before])
            out[idx[now]] = iso.predict(p[now])
    return out
