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


def league_description(league: LeagueResult, n_trees: int | None = None) -> str:
    """Which model ranks the league table, in words (``summary.json``: ``league_model``)."""
    n_trees = league.n_trees if league.n_trees is not None else n_trees
    if league.kind != "temporal":
        return ("random-split forest: out-of-bag or test scores (neighbouring months of the "
                "same country are in its training set)")
    if league.backtest_threshold:
        return (f"temporal forest ({n_trees} trees) trained on every month whose target was "
                f"known before {league.year}-{league.month:02d} (through "
                f"{league.trained_through}, {league.n_train:,} rows); threshold: the F1 "
                "optimum of the pooled out-of-sample backtest")
    return (f"temporal forest ({n_trees} trees) trained only on months through "
            f"{league.trained_through}; threshold: the random split's F1 optimum")


_METRIC_WORDS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier",
                 "log_loss": "log loss"}


def what_the_data_say(comparison: pd.DataFrame | None, differences: pd.DataFrame | None,
                      n_trees: int) -> str:
    """A plain-words reading of the model comparison: every model against the base rate
    (Brier skill), then every pair by the paired country bootstrap, for each metric."""
    if comparison is None or not len(comparison):
        return ""
    parts = []
    for r in comparison.itertuples():
        if r.model == "climatology":
            continue
        lo, hi = r.brier_skill_low95, r.brier_skill_high95
        words = ("does not beat the base rate" if r.brier_skill is None or r.brier_skill <= 0
                 else "beats the base rate")
        if r.brier_skill is not None and lo is not None and not pd.isna(lo):
            if r.brier_skill > 0 and lo <= 0:
                words = "is not distinguishable from the base rate"
            parts.append(f"{r.model} {words} (Brier skill "
                         f"{estimate(r.brier_skill, lo=lo, hi=hi)})")
        else:
            parts.append(f"{r.model} {words} (Brier skill {sig(r.brier_skill, 2)})")
    text = "Against the base rate (climatology of each fold's training rows): " + "; ".join(
        parts) + "."
    if differences is not None and len(differences):
        pairs = []
        for metric, g in differences.groupby("metric", sort=False):
            said = []
            for r in g.itertuples():
                if r.low95 is None or pd.isna(r.low95):
                    said.append(f"{r.model_a} vs {r.model_b}: no interval")
                elif r.better:
                    other = r.model_b if r.better == r.model_a else r.model_a
                    said.append(f"{r.better} better than {other} ({r.model_a} − "
                                f"{r.model_b} = "
                                f"{estimate(r.difference, lo=r.low95, hi=r.high95)})")
                else:
                    said.append(f"{r.model_a} and {r.model_b} not separated ("
                                f"{estimate(r.difference, lo=r.low95, hi=r.high95)})")
            pairs.append(f"{_METRIC_WORDS.get(metric, metric)}: " + "; ".join(said))
        text += (" Paired country bootstrap on identical rows (difference a - b, 95%): "
                 + ". ".join(pairs) + ".")
    return text + (f" The forest has {n_trees} trees per test year (backtest.n_trees).")


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
        "within_month_returns": {
            "leader_months": len(data.spells),
            "rows": int(sum(r["spells"] for r in data.spells)), "list": data.spells},
        "league_month": f"{league.year}-{league.month:02d}",
        "league_n_trees": league.n_trees,
        "league_top20_distinct_scores": int(league.table.head(20)["probability"].nunique()),
        "league_tied_at_top20": int(league.table.head(20)["tied"].gt(1).sum()),
        "league_model": league_description(league),
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
            "models": {r["model"]: {k: r[k] for k in (
                "roc_auc", "pr_auc", "pr_auc_base", "brier", "log_loss", "brier_skill",
                "log_loss_skill", "beats_base_rate", "best_f1")}
                | {"brier_skill_95": temporal.intervals.get(r["model"], {}).get("brier_skill")}
                for _, r in temporal.comparison.iterrows()},
            "paired_differences": (None if temporal.differences is None
                                   else temporal.differences.to_dict(orient="records")),
            "out_of_sample_threshold": temporal.rolling_summary.to_dict(orient="records"),
            "alert_budget": temporal.alerts.to_dict(orient="records"),
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
            ("test Brier skill vs the training base rate",
             _skill_words(summary.get("test_brier_skill"))),
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
        base = b["models"].get("climatology", {}).get("pr_auc_base")
        rows.append(("pooled PR-AUC by model (base rate "
                     f"{sig(base, 2)})", ", ".join(
                         f"{m} {sig(v['pr_auc'], 2)}" for m, v in b["models"].items()
                         if m != "climatology")))
        for m, v in b["models"].items():
            if m == "climatology":
                continue
            iv = v.get("brier_skill_95")
            rows.append((f"{m}: Brier skill vs base rate (95% paired)",
                         _skill_words(v["brier_skill"], iv)))
        for r in b.get("out_of_sample_threshold") or []:
            if r["model"] == "forest":
                rows.append(("forest F1, threshold from earlier years only",
                             f"{sig(r['f1'], 2)} ({integer(r['TP'])} hits, "
                             f"{integer(r['FP'])} false alarms, {integer(r['FN'])} missed)"))
        for r in b.get("alert_budget") or []:
            if r["model"] == "forest":
                rows.append((f"forest top-{r['k']} alerts per month: attempts caught",
                             f"{sig(r['hits'], 3)} of {integer(r['attempts'])} (random: "
                             f"{sig(r['random_recall'] * r['attempts'], 2)})"
                             if r["attempts"] else "no attempts"))
    w = summary.get("within_month_returns") or {}
    if w.get("leader_months"):
        rows.append(("within-month leader returns (kept as spells)",
                     f"{integer(w['leader_months'])} leader-months, {integer(w['rows'])} rows"))
    rows += [("league table month", summary["league_month"]),
             ("league table ranked by", summary["league_model"]),
             ("league top 20: distinct scores", integer(summary["league_top20_distinct_scores"]))]
    return rows


def _skill_words(value, interval=None) -> str:
    """A skill score with its interval and what it means in words."""
    if value is None:
        return "undefined"
    shown = sig(value, 2) if interval is None else estimate(value, lo=interval[0],
                                                           hi=interval[1])
    if value <= 0:
        return f"{shown}: does not beat the base rate"
    if interval is not None and interval[0] <= 0:
        return f"{shown}: not distinguishable from the base rate"
    return f"{shown}: beats the base rate"


# ----------------------------------------------------------------------------- present
def present(result: CoupResult, cfg: Config) -> Outputs:
    """Summary, tables, figures, report sections and headline of a coup run."""
    out = Outputs()
    data, league, temporal = result.inputs, result.league, result.backtest
    y_test = result.y_test
    league_table = league_output_table(league)
    league_model = league_description(league)
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
        if temporal.differences is not None:
            out.table("model_differences", temporal.differences)
        out.table("out_of_sample_threshold", temporal.rolling_threshold)
        out.table("alert_budget", temporal.alerts)
        if temporal.recalibrated_reliability is not None:
            out.table("calibration_recalibrated", temporal.recalibrated_reliability)
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
    if data.spells:
        out.section("Within-month leader returns (kept as spells)", p(
            f"{len(data.spells)} leader-month(s) have two or more rows of one leader that "
            "differ (a leader who left and returned within the month): kept, one row per "
            "spell, with one target per country-month and one league row per country: ",
            "; ".join(f"{r['country']} {r['year']}-{r['month']:02d} {r['leader']} "
                      f"({r['spells']} spells, rows {', '.join(map(str, r['source_rows']))})"
                      for r in data.spells[:20]), "."))
    top = league.table.head(20)
    out.section("Which model ranks the league table", p(
        f"{league_model}. Top 20: {top['probability'].nunique()} distinct scores; "
        f"{int(top['tied'].gt(1).sum())} of the {len(top)} countries share their score with "
        "another (equal rank, alphabetical inside a tie)."))
    skill = result.scores.test_brier_skill
    out.section("Skill against the base rate", p(
        "Random split: test Brier skill against the training rows' attempt rate "
        f"({sig(result.scores.base_rate, 2)}): {_skill_words(skill)}; test PR-AUC "
        f"{sig(result.scores.test_pr_auc, 2)} against {sig(result.scores.test_pr_auc_base, 2)} "
        "without skill."))
    if temporal.comparison is not None:
        out.section("Model comparison: what the data say",
                    p(what_the_data_say(temporal.comparison, temporal.differences,
                                        cfg.backtest.n_trees)))
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
    extra = {}
    comp = result.backtest.comparison
    if comp is not None and "forest" in set(comp["model"]):
        f = comp.set_index("model").loc["forest"]
        lo, hi = f["brier_skill_low95"], f["brier_skill_high95"]
        extra["backtest Brier skill (forest)"] = (
            Metric(f["brier_skill"]) if lo is None or pd.isna(lo)
            else Metric(f["brier_skill"], lo, hi))
    return {"OOB ROC-AUC": Metric(s.oob_roc_auc), "test ROC-AUC": test("roc_auc"),
            "OOB PR-AUC": Metric(s.oob_pr_auc), "test PR-AUC": test("pr_auc"),
            "test Brier": test("brier"),
            "league top 3": ", ".join(f"{r.country} {sig(r.probability, 2)}"
                                      for r in top.itertuples()), **extra}
