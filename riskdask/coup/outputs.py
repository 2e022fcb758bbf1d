"""The coup job's outputs: summary, tables, figures, report sections, headline
(:func:`present`) and its run-history row (:func:`metrics`), from a
:class:`~riskdask.coup.pipeline.CoupResult`. Nothing here touches the cluster.

Strings that go to ``summary.json`` (the league model's description) keep their own
formatting, which the pinned numbers fix; every number of the headline and the report goes
through :mod:`riskdask.formatting`, every report section through :mod:`riskdask.htmlkit`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..formatting import estimate, integer, sig
from ..htmlkit import p
from ..protocol import Metric, Outputs
from . import figures
from .backtest import MODEL_LABELS
from .config import Config
from .pipeline import CoupResult, LeagueResult

__all__ = ["present", "metrics", "predictions_table", "league_output_table",
           "league_description", "what_the_data_say", "summary_of", "headline_of"]


# ----------------------------------------------------------------------------- tables
def predictions_table(result: CoupResult) -> pd.DataFrame:
    """Every panel row with its split, target and honest (OOB or test) score."""
    data = result.inputs
    split = np.full(len(data.panel), "none", dtype=object)
    split[data.train], split[data.test] = "train", "test"
    predictions = pd.DataFrame({
        "ccode": data.panel["ccode"], "country": data.panel["country"],
        "leader": data.panel["leader"],
        "year": data.panel["year"], "month": data.panel["month"], "split": split,
        "target": data.y, "probability": result.honest_score,
        "score_source": result.honest_source,
        "oob_trees": np.zeros(len(data.panel), dtype=np.int64),
    })
    predictions.loc[data.train, "oob_trees"] = result.forest.oob_count
    return predictions


def league_output_table(league: LeagueResult) -> pd.DataFrame:
    """The league table with the model that ranked it (and, temporal, what it trained on)."""
    table = league.table.copy()
    if league.kind == "temporal":
        table["model"] = "temporal forest"
        table["trained_through"] = league.trained_through
        table["n_train"] = league.n_train
    else:
        table["model"] = "random split (OOB or test)"
    return table


def league_description(league: LeagueResult, n_trees: int) -> str:
    """Which model ranks the league table, in words (``summary.json``: ``league_model``)."""
    if league.kind != "temporal":
        return ("random-split forest: out-of-bag or test scores (neighbouring months of the "
                "same country are in its training set)")
    if league.backtest_threshold:
        return (f"temporal forest ({n_trees} trees) trained only on months through "
                f"{league.trained_through}, {league.n_train:,} rows; threshold: the pooled "
                "backtest's F1 optimum")
    return (f"temporal forest ({n_trees} trees) trained only on months through "
            f"{league.trained_through}; threshold: the random split's F1 optimum")


def what_the_data_say(comparison: pd.DataFrame | None, n_trees: int) -> str:
    """A plain-words reading of the model comparison (which model leads, and by how much
    compared with the intervals)."""
    if comparison is None or len(comparison) < 2:
        return ""
    parts = []
    for metric, better in (("pr_auc", "higher"), ("roc_auc", "higher"), ("brier", "lower")):
        c = comparison.dropna(subset=[metric])
        if len(c) < 2:
            continue
        order = c.sort_values(metric, ascending=(better == "lower"))
        best, second = order.iloc[0], order.iloc[1]
        lo, hi = best.get(f"{metric}_low95"), best.get(f"{metric}_high95")
        overlap = lo is not None and not pd.isna(lo) and lo <= second[metric] <= hi
        parts.append(f"{metric}: {best['model']} leads ({sig(best[metric], 3)} vs "
                     f"{second['model']} {sig(second[metric], 3)})"
                     + ("; the runner-up lies inside the leader's 95% interval, so the data "
                        "do not separate them" if overlap else ""))
    return ("; ".join(parts) + f". The forest has {n_trees} trees per test year "
            "(backtest.n_trees): its probabilities are coarse when that is small, see the "
            "convergence table; the comparison is on the same folds and rows for every model.")


# ----------------------------------------------------------------------------- summary
def summary_of(result: CoupResult, cfg: Config) -> dict:
    """``summary.json``: the run's headline figures as plain values."""
    data, res, optimal = result.inputs, result.forest, result.optimal
    y_train, y_test = result.y_train, result.y_test
    perm_rows = result.permutation_rows
    league = result.league
    summary = {
        "data": data.source,
        "features_missing": data.features_missing,
        "features_dropped": data.features_dropped,
        "rows": int(len(data.panel)), "n_train": int(len(data.train)),
        "n_test": int(len(data.test)), "n_features": len(data.names),
        "attempts_train": int(y_train.sum()), "attempts_test": int(y_test.sum()),
        "split": cfg.split.kind, "split_seed": data.split_seed,
        "lead_months": cfg.split.lead_months,
        "n_trees": res.n_trees, "n_subforests": result.n_subforests,
        "permutation_copies": len(result.permutation_plan),
        "permutation_tasks": result.permutation_tasks,
        "permutation_rows": 0 if perm_rows is None else int(len(perm_rows)),
        "permutation_attempts": 0 if perm_rows is None else int(y_test[perm_rows].sum()),
        "optimal_thresholds": optimal.as_dict(),
        "confusion_tables": {k: dict(v.confusion) for k, v in optimal.items()},
        **result.scores.as_dict(),
        **{f"test_{k}_95": v for k, v in result.test_intervals.items()},
        "top_importances": result.importances.head(6)[["feature", "impurity_importance"]]
        .to_dict(orient="records"),
        "league_month": f"{league.year}-{league.month:02d}",
        "league_model": league_description(league, cfg.backtest.n_trees),
        "league_trained_through": league.trained_through,
        "league_top5": league.table.head(5)[["country", "probability", "clears_f1_threshold"]]
        .to_dict(orient="records"),
    }
    if result.convergence is not None:
        summary["convergence"] = result.convergence.to_dict(orient="records")
    temporal = result.backtest
    if temporal.pooled is not None:
        f = temporal.comparison.set_index("model").loc["forest"]
        fy = temporal.per_year[temporal.per_year["model"] == "forest"]
        summary["backtest"] = {
            "years": [int(min(data.backtest_years)), int(max(data.backtest_years))],
            "rows": int(f["n_rows"]), "attempts": int(f["attempts"]),
            "years_without_attempt": [int(v) for v in fy.loc[fy["attempts"] == 0, "test_year"]],
            "n_trees_per_year": cfg.backtest.n_trees,
            "roc_auc": f["roc_auc"], "pr_auc": f["pr_auc"], "brier": f["brier"],
            **{f"{k}_95": temporal.intervals.get("forest", {}).get(k)
               for k in ("roc_auc", "pr_auc", "brier")},
            "optimal_thresholds": temporal.optimal.as_dict(),
            "brier_decomposition": temporal.decomposition,
            "models": {r["model"]: {k: r[k] for k in ("roc_auc", "pr_auc", "brier", "best_f1")}
                       for _, r in temporal.comparison.iterrows()},
        }
    return summary


# ----------------------------------------------------------------------------- headline
def _with_interval(value, interval) -> str:
    """An estimate with its 95% interval (``n/a`` when undefined)."""
    if value is None:
        return sig(value, undefined="one class only")
    if interval is None:
        return f"{sig(value, 2)} (no interval)"
    return estimate(value, lo=interval[0], hi=interval[1])


def headline_of(summary: dict) -> list[tuple[str, str]]:
    """The console lines and the report's headline table, formatted."""
    opt = summary["optimal_thresholds"]
    rows = [("data", summary["data"]),
            ("seed features missing from the file (left out)",
             ", ".join(summary["features_missing"]) or "none"),
            ("rows (train / test)",
             f"{integer(summary['n_train'])} / {integer(summary['n_test'])}"),
            ("attempts (train / test)",
             f"{integer(summary['attempts_train'])} / {integer(summary['attempts_test'])}"),
            ("trees", integer(summary["n_trees"])), ("features", integer(summary["n_features"])),
            # estimates without an interval: two significant digits, no more
            ("OOB score (R²)", sig(summary["oob_score"], 2)),
            ("test ROC-AUC (random split, 95% country bootstrap)",
             _with_interval(summary["test_roc_auc"], summary.get("test_roc_auc_95"))),
            ("test PR-AUC", _with_interval(summary["test_pr_auc"], summary.get("test_pr_auc_95"))),
            ("test Brier", _with_interval(summary["test_brier"], summary.get("test_brier_95"))),
            ("F1-optimal threshold", sig(opt["f1"]["threshold"], 6)),
            ("F1 there (test set)", sig(opt["f1"]["f1"], 2))]
    b = summary.get("backtest")
    if b:
        span = f"{b['years'][0]}-{b['years'][1]}"
        rows += [(f"pooled backtest {span}: rows / attempts",
                  f"{integer(b['rows'])} / {integer(b['attempts'])}"),
                 ("pooled backtest ROC-AUC (95%)", _with_interval(b["roc_auc"], b["roc_auc_95"])),
                 ("pooled backtest PR-AUC (95%)", _with_interval(b["pr_auc"], b["pr_auc_95"])),
                 ("pooled backtest Brier (95%)", _with_interval(b["brier"], b["brier_95"]))]
        if len(b["models"]) > 1:
            rows.append(("pooled PR-AUC by model", ", ".join(
                f"{m} {sig(v['pr_auc'], 3)}" for m, v in b["models"].items())))
    rows += [("league table month", summary["league_month"]),
             ("league table ranked by", summary["league_model"])]
    return rows


# ----------------------------------------------------------------------------- present
def present(result: CoupResult, cfg: Config) -> Outputs:
    """Summary, tables, figures, report sections and headline of a coup run."""
    out = Outputs()
    data, league, temporal = result.inputs, result.league, result.backtest
    y_test = result.y_test
    league_table = league_output_table(league)
    league_model = league_description(league, cfg.backtest.n_trees)
    table, optimal, importances = result.sweep, result.optimal, result.importances

    out.table("sweep", table)
    out.table("confusion_tables", result.confusion.reset_index(names="cell"))
    out.table("importances", importances)
    out.table("predictions", predictions_table(result))
    out.table("league_table", league_table)
    out.figure("precision_recall_f1_vs_threshold", figures.prf_vs_threshold(table, optimal),
               caption="Precision, recall and F1 on the test set at each of the 1,000 "
                       "thresholds (positive when p > t)")
    out.figure("pr_curve", figures.pr_curve(table, float(y_test.mean())),
               caption="Precision-recall curve traced by the threshold sweep")
    out.figure("importances_top20", figures.importances_top(importances, 20),
               caption="Top 20 features: impurity importance (the seed's) and "
                       "permutation importance (± sd over repeats) on test rows holding "
                       "every test attempt")
    if result.permutation is not None:
        out.figure("permutation_importance", figures.permutation_figure(result.permutation, 20),
                   caption=f"Permutation importance, "
                           f"{integer(cfg.importance.permutation_repeats)} "
                           f"repeats on {integer(len(result.permutation_rows))} test rows (all "
                           f"{integer(int(y_test.sum()))} attempts; negatives weighted to the "
                           "test set): mean ± sd, min and max over repeats")
    out.figure("league_table_top20", figures.league_top(league_table, league.f1_threshold, 20),
               caption=f"League table {league.year}-{league.month:02d}, ranked by the "
                       f"{league_model}; red clears the F1 threshold")
    if result.convergence is not None:
        out.table("convergence", result.convergence)
        out.figure("convergence", figures.convergence_figure(result.convergence),
                   caption="Scores of the forest made of the plan's first n trees (OOB on "
                           "training rows, and test)")
    if temporal.pooled is not None:
        out.table("backtest_predictions", temporal.pooled)
        out.table("backtest", temporal.per_year)
        out.table("backtest_sweep", temporal.sweeps["forest"])
        out.table("calibration", temporal.reliability)
        out.table("brier_decomposition", pd.DataFrame([temporal.decomposition]))
        out.table("model_comparison", temporal.comparison)
        fy = temporal.per_year[temporal.per_year["model"] == "forest"]
        out.figure("backtest", figures.pooled_backtest_figure(fy),
                   caption="Rolling-origin backtest: each test year predicted by a forest "
                           "trained only on earlier years; attempts per year (x: none)")
        out.figure("calibration", figures.reliability_figure(temporal.reliability,
                                                             temporal.decomposition),
                   caption="Reliability of the pooled out-of-sample forest probabilities "
                           f"({cfg.backtest.calibration_strategy} bins, counts beside the "
                           "points) and the Brier decomposition")
        out.figure("model_comparison_pr", figures.model_pr_figure(
            {MODEL_LABELS[m]: s for m, s in temporal.sweeps.items()},
            float(temporal.pooled["target"].mean())),
            caption="Precision-recall on the same pooled backtest, per model")
    if data.features_missing:
        out.section("Features missing from the data file",
                    p("Left out of the model: ", ", ".join(data.features_missing),
                      " (seed features the file does not have; see README, coup: "
                      "data.features)."))
    out.section("Which model ranks the league table", p(f"{league_model}."))
    if temporal.comparison is not None and len(temporal.comparison) > 1:
        out.section("Model comparison: what the data say",
                    p(what_the_data_say(temporal.comparison, cfg.backtest.n_trees)))
    out.summary = summary_of(result, cfg)
    out.headline = headline_of(out.summary)
    return out


# ----------------------------------------------------------------------------- history
def metrics(result: CoupResult) -> dict:
    """The run-history row: OOB and test ROC-AUC and PR-AUC, test Brier (test scores with
    their 95% country-bootstrap interval when there is one), and the league's top 3."""
    s, iv = result.scores, result.test_intervals

    def test(name: str):
        value, interval = getattr(s, f"test_{name}"), iv.get(name)
        return Metric(value) if interval is None else Metric(value, *interval)

    top = result.league.table.head(3)
    return {"OOB ROC-AUC": Metric(s.oob_roc_auc), "test ROC-AUC": test("roc_auc"),
            "OOB PR-AUC": Metric(s.oob_pr_auc), "test PR-AUC": test("pr_auc"),
            "test Brier": test("brier"),
            "league top 3": ", ".join(f"{r.country} {sig(r.probability, 2)}"
                                      for r in top.itertuples())}
