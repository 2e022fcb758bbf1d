"""Scores, permutation importance and the league table of the reduced forest.

Seed, "Building the Model" and "Analyzing the Results": the out-of-bag estimate (the seed
relies on it instead of cross-validation), then, beyond the seed, test R², ROC-AUC, PR-AUC
(average precision) and the Brier score -- all from scikit-learn -- and the league table of the
latest month with honest (out-of-bag or out-of-sample) scores. :func:`binary_scores` is the
one definition of ROC-AUC, PR-AUC and Brier that the forest, its convergence table and the
backtest share (this module imports no other module of the package).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, r2_score, roc_auc_score

#: Forecasts are clipped to [LOG_EPS, 1 - LOG_EPS] for the log loss: a regression forest gives
#: exact 0s, and one attempt forecast at 0 would make the loss infinite. With 1e-6 such a row
#: costs -ln(1e-6) = 13.8 nats, a penalty the skill score shows rather than hides.
LOG_EPS = 1e-6

__all__ = ["LOG_EPS", "log_loss", "skill", "skill_scores", "paired_bootstrap",
           "binary_scores", "ForestScores", "forest_scores", "permutation_importance_table",
           "honest_scores", "league_table", "latest_month_rows", "importance_table",
           "stratified_rows", "bootstrap_intervals"]


def _row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), LOG_EPS, 1.0 - LOG_EPS)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def log_loss(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean log loss ``-(1/n) sum_i [o_i ln q_i + (1 - o_i) ln(1 - q_i)]`` (nats), with
    ``q_i = clip(p_i, LOG_EPS, 1 - LOG_EPS)`` (:data:`LOG_EPS`); None without rows."""
    return float(np.mean(_row_log_loss(y, p))) if len(y) else None


def skill(score: float | None, reference: float | None) -> float | None:
    """Skill score ``1 - score / reference`` of a negatively oriented score (Brier, log loss)
    against a no-skill reference on the same rows: 0 = no better than the reference, 1 =
    perfect, < 0 worse. None when either is undefined or the reference is 0 (then every
    forecast that is not perfect has no finite skill)."""
    if score is None or reference is None or not reference > 0:
        return None
    return float(1.0 - score / reference)


def skill_scores(y: np.ndarray, p: np.ndarray, base_rate: float) -> dict[str, float | None]:
    """Each probabilistic score beside its no-skill reference, climatology ``base_rate``
    (the attempt rate of the training rows) forecast for every row.

    Brier skill score ``BSS = 1 - BS / BS_clim`` with ``BS_clim = (1/n) sum_i (r - o_i)^2``;
    log-loss skill ``1 - LL / LL_clim``; ``pr_auc_base``: the attempt share of the evaluated
    rows, the PR-AUC (average precision) of a forecast without skill.
    """
    y = np.asarray(y, dtype=np.float64)
    ref = np.full(len(y), float(base_rate))
    s = binary_scores(y, p)
    brier_ref = float(np.mean((ref - y) ** 2)) if len(y) else None
    ll_ref = log_loss(y, ref)
    return {"base_rate": float(base_rate), "brier_climatology": brier_ref,
            "brier_skill": skill(s["brier"], brier_ref), "log_loss_climatology": ll_ref,
            "log_loss_skill": skill(s["log_loss"], ll_ref),
            "pr_auc_base": float(np.mean(y)) if len(y) else None}


def binary_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC, PR-AUC (average precision), Brier (scikit-learn), log loss; None where
    undefined.

    ROC-AUC and PR-AUC need both classes; the Brier score and log loss need rows. Scores are
    clipped to [0, 1] for the Brier score (a regressor on a 0/1 target already stays inside)
    and to [LOG_EPS, 1 - LOG_EPS] for the log loss (:func:`log_loss`).
    """
    y, p = np.asarray(y), np.asarray(p)
    both = 0 < np.sum(y == 1) < len(y)
    return {"roc_auc": float(roc_auc_score(y, p)) if both else None,
            "pr_auc": float(average_precision_score(y, p)) if both else None,
            "brier": float(brier_score_loss(y, np.clip(p, 0.0, 1.0))) if len(y) else None,
            "log_loss": log_loss(y, p)}


@dataclass(frozen=True)
class ForestScores:
    """The reduced forest's scores (:func:`forest_scores`); None where undefined."""

    oob_score: float | None          # R² of the OOB predictions, as sklearn's ``oob_score_``
    oob_rows_without_trees: int
    test_r2: float | None
    test_roc_auc: float | None
    test_pr_auc: float | None
    test_brier: float | None
    test_log_loss: float | None
    oob_roc_auc: float | None
    oob_pr_auc: float | None
    oob_brier: float | None
    oob_log_loss: float | None
    base_rate: float | None = None             # attempt rate of the training rows
    test_brier_climatology: float | None = None
    test_brier_skill: float | None = None
    test_log_loss_climatology: float | None = None
    test_log_loss_skill: float | None = None
    test_pr_auc_base: float | None = None      # test attempt share: PR-AUC without skill
    oob_brier_skill: float | None = None

    def as_dict(self) -> dict:
        """Plain values for ``summary.json``."""
        return dataclasses.asdict(self)


def forest_scores(y_train: np.ndarray, oob_prediction: np.ndarray, y_test: np.ndarray,
                  test_prediction: np.ndarray) -> ForestScores:
    """OOB score (R², as sklearn's ``oob_score_``), test R², ROC-AUC, PR-AUC, Brier.

    Training rows never out of bag (NaN) are left out of the OOB score and counted in
    ``oob_rows_without_trees`` (sklearn would score them as a prediction of 0).
    """
    has = ~np.isnan(oob_prediction)
    test = binary_scores(y_test, test_prediction)
    oob = binary_scores(y_train[has], oob_prediction[has])
    rate = float(np.mean(y_train)) if len(y_train) else None
    ref = (skill_scores(y_test, test_prediction, rate) if rate is not None else {})
    oob_ref = (skill_scores(y_train[has], oob_prediction[has], rate)
               if rate is not None and has.any() else {})
    return ForestScores(
        base_rate=rate, test_brier_climatology=ref.get("brier_climatology"),
        test_brier_skill=ref.get("brier_skill"),
        test_log_loss_climatology=ref.get("log_loss_climatology"),
        test_log_loss_skill=ref.get("log_loss_skill"), test_pr_auc_base=ref.get("pr_auc_base"),
        oob_brier_skill=oob_ref.get("brier_skill"),
        oob_score=float(r2_score(y_train[has], oob_prediction[has])) if has.sum() > 1 else None,
        oob_rows_without_trees=int((~has).sum()),
        test_r2=float(r2_score(y_test, test_prediction)) if len(y_test) > 1 else None,
        **{f"test_{k}": v for k, v in test.items()}, **{f"oob_{k}": v for k, v in oob.items()})


def importance_table(names: Sequence[str], impurity: np.ndarray,
                     permutation: pd.DataFrame | None = None) -> pd.DataFrame:
    """Impurity importances (the seed's) beside permutation importances, ranked by impurity."""
    table = pd.DataFrame({"feature": list(names), "impurity_importance": impurity})
    if permutation is not None:
        table = table.merge(permutation, on="feature", how="left")
    table = table.sort_values("impurity_importance", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def stratified_rows(y: np.ndarray, n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows for permutation importance: every positive, and negatives at random to ``n_rows``.

    A random subset of a rare-event test set holds almost no positives (2,000 random rows of
    the real panel held 3 attempts), so shuffling a feature can hardly change the score. Here
    every positive is kept and the negatives are a simple random sample, weighted by the
    inverse of their sampling fraction, so that weighted scores on the rows estimate the scores
    on the whole evaluation set (Horvitz-Thompson weights; positives have weight 1).

    Returns
    -------
    rows : ndarray of int64
        Sorted positions into ``y``.
    weights : ndarray of float64
        Per row: 1 for positives, ``n_negatives / n_sampled_negatives`` for negatives.
    """
    y = np.asarray(y)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    n_neg = int(min(len(neg), max(n_rows - len(pos), 0)))
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(neg), n_neg, replace=False)) if n_neg else np.array([], int)
    rows = np.sort(np.concatenate([pos, neg[picked]])).astype(np.int64)
    weights = np.where(y[rows] == 1, 1.0, len(neg) / n_neg if n_neg else 1.0)
    return rows, weights


def permutation_importance_table(names: Sequence[str], plan: Sequence[tuple[int, int, int]],
                                 y_rows: np.ndarray, base_prediction: np.ndarray,
                                 perm_prediction: np.ndarray,
                                 weights: np.ndarray | None = None) -> pd.DataFrame:
    """Mean and spread over repeats of the drop in R² when one feature's column is shuffled.

    As ``sklearn.inspection.permutation_importance`` with the regressor's default score (R²):
    ``importance = R²(rows) - R²(rows with feature f shuffled)``, each R² weighted by
    ``weights`` (:func:`stratified_rows`). Spread: the standard deviation over repeats
    (``ddof=0``, as sklearn's ``importances_std``), and the min and max over repeats.
    """
    base = r2_score(y_rows, base_prediction, sample_weight=weights)
    drops: dict[int, list[float]] = {}
    for i, (feature, _repeat, _seed) in enumerate(plan):
        drops.setdefault(feature, []).append(
            base - r2_score(y_rows, perm_prediction[i], sample_weight=weights))
    return pd.DataFrame({
        "feature": [names[f] for f in drops],
        "permutation_importance": [float(np.mean(v)) for v in drops.values()],
        "permutation_importance_std": [float(np.std(v)) for v in drops.values()],
        "permutation_importance_min": [float(np.min(v)) for v in drops.values()],
        "permutation_importance_max": [float(np.max(v)) for v in drops.values()],
        "permutation_repeats": [len(v) for v in drops.values()],
    })


def honest_scores(n_rows: int, train_idx: np.ndarray, test_idx: np.ndarray,
                  oob_prediction: np.ndarray, test_prediction: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's score that did not see the row: out-of-bag (training) or test prediction.

    Returns the score (NaN where none exists: a training row no tree left out of bag, or a
    row in neither set) and its source label (``"oob"``, ``"test"``, ``"none"``).
    """
    score = np.full(n_rows, np.nan)
    source = np.full(n_rows, "none", dtype=object)
    score[train_idx] = oob_prediction
    source[train_idx] = np.where(np.isnan(oob_prediction), "none", "oob")
    score[test_idx] = test_prediction
    source[test_idx] = "test"
    return score, source


def latest_month_rows(panel: pd.DataFrame, month: int | None = None) -> np.ndarray:
    """Rows of the league table's month: one per country, the leader in office at its end.

    ``month`` is a month index (``year * 12 + month - 1``; default: the latest in the panel).
    In a leader-change month REIGN has one row per leader, the outgoing one first; the
    country's row is its last row of the month (the panel keeps the file's order there), so
    every country appears once, with the leader who holds office now.
    """
    ym = panel["year"].to_numpy(np.int64) * 12 + panel["month"].to_numpy(np.int64) - 1
    month = int(ym.max()) if month is None else int(month)
    rows = np.flatnonzero(ym == month)
    codes = panel["ccode"].to_numpy()[rows]
    # last row per country: rows are sorted by country, file order inside the month
    last = np.r_[codes[1:] != codes[:-1], True]
    return rows[last]


def league_table(panel: pd.DataFrame, score: np.ndarray, source: np.ndarray,
                 f1_threshold: float, month: int | None = None
                 ) -> tuple[pd.DataFrame, tuple[int, int]]:
    """Countries ranked by their honest score in the latest year-month of the panel.

    Seed: "subset the data to examine only the most recent year and month ... a league table
    of countries ordered by likelihood of coup attempt", compared with the F1 threshold (a
    country clears it when its probability is > the threshold, the sweep's rule). Equal
    scores are ties: the same ``rank`` (the best of the group), ``tied`` = the group's size;
    a country without a score has no rank. One row per
    country (:func:`latest_month_rows`); ``leader_rows`` says how many leader rows the country
    had that month (2+ in a leader-change month).
    """
    ym = panel["year"].to_numpy(np.int64) * 12 + panel["month"].to_numpy(np.int64) - 1
    latest = int(ym.max()) if month is None else int(month)
    rows = latest_month_rows(panel, latest)
    in_month = ym == latest
    n_leader_rows = pd.Series(panel["ccode"].to_numpy()[in_month]).value_counts()
    codes = panel["ccode"].to_numpy()[rows]
    table = pd.DataFrame({
        "ccode": codes,
        "country": panel["country"].to_numpy()[rows],
        "leader": panel["leader"].to_numpy()[rows] if "leader" in panel else None,
        "year": latest // 12, "month": latest % 12 + 1,
        "probability": np.asarray(score)[rows],
        "score_source": np.asarray(source)[rows],
        "government": panel["government"].to_numpy()[rows] if "government" in panel else None,
        "leader_rows": n_leader_rows.reindex(codes).to_numpy(np.int64),
    })
    table["clears_f1_threshold"] = table["probability"] > f1_threshold
    # ties are ties: equal scores share the best rank of their group (competition ranking,
    # "1, 2, 2, 4"), listed alphabetically by country inside it -- never ranked by code
    table = table.sort_values(["probability", "country"], ascending=[False, True],
                              na_position="last", kind="stable").reset_index(drop=True)
    rank = table["probability"].rank(method="min", ascending=False, na_option="keep")
    table.insert(0, "rank", rank.astype("Int64"))
    table.insert(1, "tied", table.groupby("probability", dropna=False)["ccode"]
                 .transform("size").to_numpy(np.int64))
    table.loc[table["probability"].isna(), "tied"] = 0
    return table, (latest // 12, latest % 12 + 1)


class _SortedScores:
    """Scores sorted once, so that weighted ROC-AUC and average precision of many bootstrap
    replicates cost a cumulative sum each, not a sort.

    Same definitions as scikit-learn (``_binary_clf_curve``): the curve's points are the
    distinct score values, descending; ROC-AUC is the trapezoidal area under (FPR, TPR) from
    (0, 0); average precision is ``sum_k (R_k - R_{k-1}) P_k``. Tested against
    ``roc_auc_score``/``average_precision_score`` with ``sample_weight``.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray):
        order = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
        ps = np.asarray(p, dtype=np.float64)[order]
        self.order = order
        self.y = np.asarray(y, dtype=np.float64)[order]
        # last index of each run of equal scores
        self.ends = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]

    def scores(self, w: np.ndarray) -> tuple[float | None, float | None]:
        w = np.asarray(w, dtype=np.float64)[self.order]
        tps = np.cumsum(w * self.y)[self.ends]
        fps = np.cumsum(w * (1.0 - self.y))[self.ends]
        if tps[-1] <= 0 or fps[-1] <= 0:
            return None, None
        tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
        trapezoid = np.trapezoid if hasattr(np, "trapezoid") else np.trapz  # numpy < 2
        auc = float(trapezoid(tpr, fpr))
        precision = tps / np.maximum(tps + fps, np.finfo(float).tiny)
        recall = tps / tps[-1]
        ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
        return auc, ap


def bootstrap_intervals(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int,
                        seed, level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of ROC-AUC, PR-AUC and Brier from a bootstrap over countries.

    Rows of one country are not independent (an attempt is followed by attempts, regimes
    persist), so whole countries are resampled with replacement (a cluster bootstrap; Davison
    and Hinkley 1997, sec. 3.8): replicate ``b`` weights each row by how often its country
    was drawn -- scikit-learn's metrics with those counts as ``sample_weight`` give the same
    values (computed here from one sort, :class:`_SortedScores`). A replicate with one class
    only has no AUC and is skipped; an interval needs 20 valid replicates or is None.
    ``seed``: the run's ``bootstrap`` stream.  One model of :func:`paired_bootstrap` (the
    same draws, hence the same intervals).
    """
    return paired_bootstrap(y, {"model": p}, groups, n_boot, seed, level,
                            reference=None)[0]["model"]


#: The scores of :func:`paired_bootstrap`, and whether higher is better.
PAIRED_METRICS = {"roc_auc": True, "pr_auc": True, "brier": False, "log_loss": False}


def paired_bootstrap(y: np.ndarray, predictions: dict[str, np.ndarray], groups: np.ndarray,
                     n_boot: int, seed, level: float = 0.95,
                     reference: str | None = "climatology") -> tuple[dict, pd.DataFrame]:
    """Country-bootstrap intervals of every model's scores and of every difference between
    two models, each replicate scoring **all models on the same resampled rows** (paired).

    Replicate ``b`` draws countries with replacement (one draw per replicate, independent of
    the models: adding a model changes no other model's numbers) and weights each row by how
    often its country was drawn, as :func:`bootstrap_intervals`. For a pair ``(a, b)`` the
    difference ``score_a - score_b`` is computed inside every replicate, so what the two
    share (the same hard countries, the same quiet years) cancels; its percentile interval
    excludes 0 when the data separate them. With ``reference`` (the climatology forecast) in
    ``predictions``, each model's Brier and log-loss skill ``1 - S_m / S_ref`` also gets its
    interval.

    Returns
    -------
    intervals : dict
        ``model -> {metric: (low, high) or None}`` (metrics: ROC-AUC, PR-AUC, Brier, log
        loss, and ``brier_skill``/``log_loss_skill`` against ``reference``).
    differences : DataFrame
        One row per unordered pair (models in the order given) and metric: ``model_a``,
        ``model_b``, ``metric``, ``difference`` (a - b on all rows), ``low95``, ``high95``,
        ``replicates`` (valid ones), ``better`` (the model the interval favours, or "" when it
        includes 0).
    """
    y = np.asarray(y, dtype=np.float64)
    names = list(predictions)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    sorted_scores = {m: _SortedScores(y, predictions[m]) for m in names}
    sq = {m: (np.clip(np.asarray(predictions[m], float), 0.0, 1.0) - y) ** 2 for m in names}
    ll = {m: _row_log_loss(y, predictions[m]) for m in names}
    metrics = list(PAIRED_METRICS)
    draws = np.full((n_boot, len(names), len(metrics)), np.nan)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, len(codes), len(codes)),
                        minlength=len(codes))[inverse].astype(np.float64)
        total = w.sum()
        for i, m in enumerate(names):
            auc, ap = sorted_scores[m].scores(w)
            draws[b, i] = [np.nan if auc is None else auc, np.nan if ap is None else ap,
                           np.dot(w, sq[m]) / total, np.dot(w, ll[m]) / total]
    full = {m: binary_scores(y, predictions[m]) for m in names}
    a = (1 - level) / 2

    def interval(v):
        v = v[~np.isnan(v)]
        return (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) if len(v) >= 20 else None

    intervals = {m: {k: interval(draws[:, i, j]) for j, k in enumerate(metrics)}
                 for i, m in enumerate(names)}
    if reference in names:
        r = names.index(reference)
        for i, m in enumerate(names):
            for j, k in ((2, "brier_skill"), (3, "log_loss_skill")):
                ref = draws[:, r, j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.where(ref > 0, 1.0 - draws[:, i, j] / ref, np.nan)
                intervals[m][k] = interval(v)
    rows = []
    for i, ma in enumerate(names):
        for i2 in range(i + 1, len(names)):
            mb = names[i2]
            for j, k in enumerate(metrics):
                d = draws[:, i, j] - draws[:, i2, j]
                iv = interval(d)
                va, vb = full[ma][k], full[mb][k]
                better = ""
                if iv is not None and (iv[0] > 0 or iv[1] < 0):
                    a_higher = iv[0] > 0
                    better = ma if a_higher == PAIRED_METRICS[k] else mb
                rows.append({"model_a": ma, "model_b": mb, "metric": k,
                             "difference": None if va is None or vb is None else va - vb,
                             "low95": None if iv is None else iv[0],
                             "high95": None if iv is None else iv[1],
                             "replicates": int(np.sum(~np.isnan(d))), "better": better})
    return intervals, pd.DataFrame(rows, columns=["model_a", "model_b", "metric", "difference",
                                                  "low95", "high95", "replicates", "better"])
