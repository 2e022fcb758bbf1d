"""coup: coup-attempt risk from a REIGN-format panel (seed ``000_68eb94656699ea41.txt``).

A random-forest regressor gives every leader-month a probability of a coup attempt; the
exact one-pass sweep over the seed's 1,000 thresholds gives precision, recall and F1 at each,
the optimal and default thresholds and their confusion tables; impurity and permutation
importances; tree-count convergence. The honest forecast evaluation is a rolling-origin
backtest pooled over its test years (ROC-AUC, PR-AUC, Brier, sweep, calibration), with the
seed's forest beside gradient boosting and a logistic regression; the league table of the
latest month is ranked by a model trained only on the months before it.

Wiring only: config -> data (riskdask.coup.reign / synthetic / prepare) -> sub-forests, the
backtest plan and sweep partitions on the engine -> outputs. The maths is in
``riskdask/coup/``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskdask.coup import backtest as bt
from riskdask.coup import calibration, evaluate, figures
from riskdask.coup.distributed import distributed_forest
from riskdask.coup.forest import convergence_table, permutation_blocks, permutation_plan, \
    tree_checkpoints
from riskdask.coup.prepare import check_training_positives, feature_matrix, \
    forbidden_features, lead_target, month_index, random_split, temporal_split
from riskdask.coup.reign import LoadedPanel, read_reign_csv, resolve_features, validate_panel
from riskdask.coup.schema import TARGET
from riskdask.coup.sweep import BinCounts, combine_bin_counts, confusion_tables, \
    OptimalThresholds, optimal_thresholds, sweep_table, threshold_grid
from riskdask.coup.synthetic import synthetic_reign
from riskdask.coup.tasks import sweep_task
from riskdask.engine import map_reduce, plan_chunks
from riskdask.errors import ConfigError, InputError
from riskdask.protocol import Job, Outputs

NAME = "coup"
DESCRIPTION = ("coup-attempt risk: distributed random-forest regressor on REIGN-format data, "
               "exact 1,000-threshold sweep, pooled rolling-origin backtest, calibration, "
               "model comparison, league table")
TITLE = "riskdask · coup — coup-attempt risk (random-forest regressor, 1,000-threshold sweep)"


# ----------------------------------------------------------------------------- config
def _check_features(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    bad = sorted(set(v) & forbidden_features())
    if bad:
        raise ValueError(f"not allowed as features (target, its leak, text ids or the "
                         f"seed's dropped columns): {', '.join(bad)}")
    if len(set(v)) != len(v):
        raise ValueError("features listed twice")
    return v


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="REIGN-format CSV; omit for the synthetic panel")
    synthetic_seed: int = Field(2019, ge=0, description="seed of the embedded synthetic panel")
    synthetic_countries: int = Field(200, ge=2, le=676)
    features: list[str] | None = Field(
        None, description="numeric feature columns; omitted: the seed's 30, less those the "
        "file lacks (named in features_missing); a listed column the file lacks is an error")
    drop_features: list[str] = Field(default_factory=list,
                                     description="features to leave out of the list")
    one_hot_government: bool = Field(True, description="add the 16 government_<type> dummies")

    @field_validator("features")
    @classmethod
    def _no_leaks(cls, v: list[str] | None) -> list[str] | None:
        return _check_features(v)


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "temporal"] = "random"
    test_size: float = Field(0.3, gt=0, lt=1, description="random split: test share (seed 0.3)")
    stratify: bool = True
    seed: int | None = Field(None, ge=0, description="random split's seed; omitted: the run "
                             "seed (the forest has its own stream either way)")
    train_until_year: int = Field(2009, description="temporal split: last training year")
    lead_months: int = Field(0, ge=0, le=36, description="0: attempt in the same month; k: "
                             "an attempt in the next k months")


class ForestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_trees: int = Field(200, ge=1, le=1_000_000, description="seed: 10,000")
    trees_per_task: int = Field(5, ge=1, le=100_000)
    criterion: Literal["squared_error", "friedman_mse", "absolute_error", "poisson"] = \
        "squared_error"
    max_depth: int | None = Field(None, ge=1)
    min_samples_split: int = Field(2, ge=2)
    min_samples_leaf: int = Field(1, ge=1)
    max_features: Union[float, int, Literal["sqrt", "log2"], None] = 1.0
    max_samples: Union[float, int, None] = Field(None, description="bootstrap sample size")
    convergence: bool = Field(True, description="scores at 50, 100, 200, 500, ... trees")

    def sklearn_params(self) -> dict:
        return self.model_dump(exclude={"n_trees", "trees_per_task", "convergence"})


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows_per_partition: int = Field(500_000, ge=1)
    default_threshold: float = Field(0.5, ge=0, le=1)


class ImportanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permutation_repeats: int = Field(3, ge=0, le=100, description="0 turns it off")
    permutation_rows: int = Field(2000, ge=10, description="test rows used: every attempt "
                                  "of the test set, negatives at random to this many")
    copies_per_task: int = Field(46, ge=1, description="permuted copies (feature, repeat) "
                                 "per task; tasks = sub-forests x blocks of copies")


class BacktestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    first_test_year: int = Field(1990, description="first test year Y (train on years < Y)")
    last_test_year: int | None = Field(None, description="default: the last year in the data")
    n_trees: int = Field(4, ge=1, le=1_000_000, description="forest trees per test year")
    trees_per_task: int = Field(4, ge=1)
    models: list[Literal["forest", "hgb", "logistic"]] = Field(
        default_factory=lambda: ["forest", "logistic"],
        description="forest (the seed's), hgb (HistGradientBoostingClassifier), logistic")
    bootstrap_replicates: int = Field(200, ge=0, le=100_000,
                                      description="country bootstrap for the intervals")
    calibration_bins: int = Field(10, ge=2, le=100)
    calibration_strategy: Literal["quantile", "uniform"] = "quantile"

    @field_validator("models")
    @classmethod
    def _forest_first(cls, v: list[str]) -> list[str]:
        if "forest" not in v:
            raise ValueError("the seed's forest must be among the models")
        if len(set(v)) != len(v):
            raise ValueError("models listed twice")
        return v


class LeagueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["temporal", "split"] = Field(
        "temporal", description="temporal: a forest trained only on months before the "
        "league month (backtest.n_trees trees); split: the random split's OOB/test scores")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(2019, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    forest: ForestConfig = Field(default_factory=ForestConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    league: LeagueConfig = Field(default_factory=LeagueConfig)


# ----------------------------------------------------------------------------- inputs
@dataclass
class CoupInputs:
    panel: pd.DataFrame        # validated rows with a defined target
    source: str
    X: np.ndarray              # float64 features of panel rows
    y: np.ndarray              # target of panel rows
    names: list[str]
    train: np.ndarray
    test: np.ndarray
    split_seed: int
    features_missing: list[str] = field(default_factory=list)
    features_dropped: list[str] = field(default_factory=list)
    backtest_years: list[int] = field(default_factory=list)


def _load_panel(cfg: Config) -> tuple[LoadedPanel, str | None, object]:
    if cfg.data.path is None:
        frame = synthetic_reign(cfg.data.synthetic_seed, cfg.data.synthetic_countries)
        source = f"synthetic REIGN-like panel (seed {cfg.data.synthetic_seed})"
        path = None
    else:
        path = cfg.data.path
        frame = read_reign_csv(path)
        source = path
    choice = resolve_features(frame.columns, source=source, features=cfg.data.features,
                              drop_features=cfg.data.drop_features)
    return validate_panel(frame, source=source, numeric_features=choice.features,
                          use_government=cfg.data.one_hot_government), path, choice


def load_inputs(cfg: Config, record=None) -> CoupInputs:
    """Load (or generate) and validate the panel, prepare features, target and split."""
    loaded, path, choice = _load_panel(cfg)
    if record is not None:
        if path is None:
            record.add_input("reign", rows=loaded.n_rows_read,
                             fingerprint=f"synthetic seed={cfg.data.synthetic_seed} "
                                         f"countries={cfg.data.synthetic_countries}",
                             description="embedded synthetic REIGN-like panel (a stand-in)")
        else:
            record.add_input("reign", path, rows=loaded.n_rows_read,
                             description="REIGN-format leader-month panel")
        for reason, count in loaded.exclusions.items():
            record.exclude("reign", reason, count, loaded.excluded_rows[reason])
        if choice.missing:
            record.exclude("reign", "seed feature(s) not in the file, left out of the model: "
                           + ", ".join(choice.missing), len(choice.missing), choice.missing,
                           unit="features")
    panel = loaded.frame
    y, complete = lead_target(panel, cfg.split.lead_months)
    if not complete.all():
        if record is not None:
            record.exclude("reign", f"next {cfg.split.lead_months} months not all in the panel "
                           "(no lead target)", int((~complete).sum()),
                           panel["source_row"].to_numpy()[~complete].tolist())
        panel, y = panel.loc[complete].reset_index(drop=True), y[complete]
    X, names = feature_matrix(panel, choice.features, cfg.data.one_hot_government)
    split_seed = cfg.seed if cfg.split.seed is None else cfg.split.seed
    if cfg.split.kind == "random":
        check_training_positives(y, source=loaded.source, what="data")
        if cfg.split.stratify and np.sum(y == 1) < 2:
            raise InputError(f"only one positive row ({TARGET} = 1): a stratified split needs "
                             "two", file=loaded.source, column=TARGET)
        train, test = random_split(y, cfg.split.test_size, split_seed, cfg.split.stratify)
    else:
        train, test = temporal_split(panel["year"].to_numpy(), cfg.split.train_until_year)
        if len(test) == 0:
            raise ConfigError(f"no rows after {cfg.split.train_until_year} to test on",
                              key="split.train_until_year")
    check_training_positives(y[train], source=loaded.source)
    mi = month_index(panel)
    years = _backtest_years(cfg, panel) if cfg.backtest.enabled else []
    cutoffs = [(f"backtest training set before {yy}", 12 * yy) for yy in years]
    if cfg.league.model == "temporal":
        cutoffs.append((f"league model's training set (months before the latest, "
                        f"{int(mi.max()) // 12}-{int(mi.max()) % 12 + 1:02d})", int(mi.max())))
    for what, cutoff in cutoffs:
        check_training_positives(y[bt.training_rows(mi, cutoff, cfg.split.lead_months)],
                                 source=loaded.source, what=what)
    return CoupInputs(panel=panel, source=loaded.source, X=X, y=y, names=names,
                      train=train, test=test, split_seed=split_seed,
                      features_missing=choice.missing, features_dropped=choice.dropped,
                      backtest_years=years)


def _backtest_years(cfg: Config, panel: pd.DataFrame) -> list[int]:
    last = int(panel["year"].max()) if cfg.backtest.last_test_year is None \
        else cfg.backtest.last_test_year
    years = [y for y in range(cfg.backtest.first_test_year, last + 1)
             if (panel["year"] == y).any()]
    if not years:
        raise ConfigError(f"no data in the backtest years {cfg.backtest.first_test_year}-{last}",
                          key="backtest.first_test_year")
    return years


# ----------------------------------------------------------------------------- stages
def _sweep(ctx, p, y, rows_per_partition, label="sweep") -> BinCounts:
    """Per-partition bin counts summed on the cluster (exact integer sums); each partition's
    scores go to one worker only."""
    chunks = plan_chunks(len(p), rows_per_partition, 0)
    return map_reduce(sweep_task, chunks, combine_bin_counts, client=ctx.client,
                      rows={"p": np.asarray(p, dtype=np.float64), "y": np.asarray(y)},
                      label=label)


@dataclass
class TemporalResults:
    pooled: pd.DataFrame | None = None        # year folds, every model
    league_scores: pd.DataFrame | None = None  # the league fold's forest predictions
    per_year: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    sweeps: dict = field(default_factory=dict)
    optimal: OptimalThresholds | None = None
    reliability: pd.DataFrame | None = None
    decomposition: dict | None = None
    intervals: dict = field(default_factory=dict)


def _temporal(cfg: Config, ctx, data: CoupInputs) -> TemporalResults:
    """The backtest folds and the league fold as one plan on the cluster, then the pooled
    evaluation: sweeps, per-year table, model comparison, calibration, intervals."""
    mi = month_index(data.panel)
    folds = bt.year_folds(mi, data.backtest_years, models=cfg.backtest.models)
    if cfg.league.model == "temporal":
        rows = evaluate.latest_month_rows(data.panel)
        folds.append(bt.month_fold(mi, int(mi.max()), rows=rows))
    out = TemporalResults()
    if not folds:
        return out
    models, sums = bt.run_backtest(
        ctx.client, data.X, data.y, mi, folds, lead_months=cfg.split.lead_months,
        n_trees=cfg.backtest.n_trees, trees_per_task=cfg.backtest.trees_per_task,
        seed=ctx.streams.seed("backtest"), params=cfg.forest.sklearn_params())
    table = bt.pooled_table(data.panel, data.y, folds, models, sums)
    out.league_scores = table[table["fold_kind"] == "league"].reset_index(drop=True)
    pooled = table[table["fold_kind"] == "year"].reset_index(drop=True)
    if pooled.empty:
        return out
    out.pooled = pooled
    for model in models:
        g = pooled[pooled["model"] == model]
        out.sweeps[model] = sweep_table(_sweep(ctx, g["probability"].to_numpy(),
                                               g["target"].to_numpy(),
                                               cfg.sweep.rows_per_partition,
                                               f"backtest-sweep-{model}"), threshold_grid())
        if cfg.backtest.bootstrap_replicates:
            out.intervals[model] = evaluate.bootstrap_intervals(
                g["target"].to_numpy(), g["probability"].to_numpy(), g["ccode"].to_numpy(),
                cfg.backtest.bootstrap_replicates,
                ctx.streams.seed("bootstrap").spawn(len(models))[models.index(model)])
    out.optimal = optimal_thresholds(out.sweeps["forest"], cfg.sweep.default_threshold)
    out.per_year = bt.per_year_table(pooled, out.optimal.f1.threshold)
    out.comparison = bt.comparison_table(pooled, out.sweeps, out.intervals)
    forest = pooled[pooled["model"] == "forest"]
    p, y = forest["probability"].to_numpy(), forest["target"].to_numpy()
    out.reliability = calibration.reliability_table(p, y, cfg.backtest.calibration_bins,
                                                    cfg.backtest.calibration_strategy)
    out.decomposition = calibration.brier_decomposition(p, y, cfg.backtest.calibration_bins,
                                                        cfg.backtest.calibration_strategy)
    return out


def _what_the_data_say(comparison: pd.DataFrame, n_trees: int) -> str:
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
        parts.append(f"{metric}: {best['model']} leads ({best[metric]:.3g} vs {second['model']} "
                     f"{second[metric]:.3g})" + ("; the runner-up lies inside the leader's 95% "
                                                  "interval, so the data do not separate them"
                                                  if overlap else ""))
    return ("; ".join(parts) + f". The forest has {n_trees} trees per test year "
            "(backtest.n_trees): its probabilities are coarse when that is small, see the "
            "convergence table; the comparison is on the same folds and rows for every model.")


# ----------------------------------------------------------------------------- run
def compute(cfg: Config, data: CoupInputs, ctx) -> Outputs:
    """The forest with its branches, the sweep, scores, importances, backtest, league table."""
    out = Outputs()
    X_train, y_train = data.X[data.train], data.y[data.train]
    X_test, y_test = data.X[data.test], data.y[data.test]

    plan, perm_rows, perm_weights = [], None, None
    if cfg.importance.permutation_repeats:
        perm_rows, perm_weights = evaluate.stratified_rows(
            y_test, cfg.importance.permutation_rows, ctx.streams.seed("subsample"))
        plan = permutation_plan(X_test.shape[1], cfg.importance.permutation_repeats,
                                ctx.streams.seed("permutation"))
    checkpoints = tree_checkpoints(cfg.forest.n_trees, cfg.forest.trees_per_task) \
        if cfg.forest.convergence else []

    perm_blocks = permutation_blocks(plan, cfg.importance.copies_per_task)
    with ctx.stage("forest"):
        res, perm_prediction = distributed_forest(
            ctx.client, X_train, y_train, X_test, cfg.forest.n_trees,
            cfg.forest.trees_per_task, ctx.streams.seed("forest"), cfg.forest.sklearn_params(),
            X_perm_rows=None if perm_rows is None else X_test[perm_rows],
            perm_blocks=perm_blocks, checkpoints=checkpoints)
    if res.oob_count.min() == 0:
        ctx.record.exclude("oob", "training rows no tree left out of bag (no OOB score; left "
                           "out of the OOB estimate)", int((res.oob_count == 0).sum()))

    with ctx.stage("sweep"):
        counts = _sweep(ctx, res.test_prediction, y_test, cfg.sweep.rows_per_partition)
        table = sweep_table(counts, threshold_grid())
        optimal = optimal_thresholds(table, cfg.sweep.default_threshold)
        confusion = confusion_tables(optimal)

    with ctx.stage("evaluate"):
        scores = evaluate.forest_scores(y_train, res.oob_prediction, y_test, res.test_prediction)
        test_iv = evaluate.bootstrap_intervals(
            y_test, res.test_prediction, data.panel["ccode"].to_numpy()[data.test],
            cfg.backtest.bootstrap_replicates, ctx.streams.seed("bootstrap")) \
            if cfg.backtest.bootstrap_replicates else {}
        perm = None
        if plan:
            perm = evaluate.permutation_importance_table(
                data.names, plan, y_test[perm_rows], res.test_prediction[perm_rows],
                perm_prediction, perm_weights)
        importances = evaluate.importance_table(data.names, res.feature_importances, perm)
        score, source = evaluate.honest_scores(len(data.panel), data.train, data.test,
                                               res.oob_prediction, res.test_prediction)
        convergence = convergence_table(res.aggregate, y_train, y_test) if checkpoints \
            else None

    with ctx.stage("backtest"):
        temporal = _temporal(cfg, ctx, data)

    with ctx.stage("league"):
        if cfg.league.model == "temporal":
            ls = temporal.league_scores
            league_score = np.full(len(data.panel), np.nan)
            league_source = np.full(len(data.panel), "none", dtype=object)
            league_score[ls["row"].to_numpy()] = ls["probability"].to_numpy()
            league_source[ls["row"].to_numpy()] = "temporal"
            f1_t = (temporal.optimal or optimal).f1.threshold
            league, (ly, lm) = evaluate.league_table(data.panel, league_score, league_source,
                                                     f1_t)
            last_y, last_m = int(ls["train_last_year"].max()), int(
                ls.loc[ls["train_last_year"] == ls["train_last_year"].max(),
                       "train_last_month"].max())
            league["model"] = "temporal forest"
            league["trained_through"] = f"{last_y}-{last_m:02d}"
            league["n_train"] = int(ls["n_train"].iloc[0])
            league_model = (f"temporal forest ({cfg.backtest.n_trees} trees) trained only on "
                            f"months through {last_y}-{last_m:02d}, "
                            f"{int(ls['n_train'].iloc[0]):,} rows; threshold: the pooled "
                            "backtest's F1 optimum" if temporal.optimal else
                            f"temporal forest ({cfg.backtest.n_trees} trees) trained only on "
                            f"months through {last_y}-{last_m:02d}; threshold: the random "
                            "split's F1 optimum")
            trained_through = f"{last_y}-{last_m:02d}"
        else:
            f1_t = optimal.f1.threshold
            league, (ly, lm) = evaluate.league_table(data.panel, score, source, f1_t)
            league["model"] = "random split (OOB or test)"
            league_model = ("random-split forest: out-of-bag or test scores (neighbouring "
                            "months of the same country are in its training set)")
            trained_through = None

    with ctx.stage("outputs"):
        split = np.full(len(data.panel), "none", dtype=object)
        split[data.train], split[data.test] = "train", "test"
        predictions = pd.DataFrame({
            "ccode": data.panel["ccode"], "country": data.panel["country"],
            "leader": data.panel["leader"],
            "year": data.panel["year"], "month": data.panel["month"], "split": split,
            "target": data.y, "probability": score, "score_source": source,
            "oob_trees": np.zeros(len(data.panel), dtype=np.int64),
        })
        predictions.loc[data.train, "oob_trees"] = res.oob_count
        out.table("sweep", table)
        out.table("confusion_tables", confusion.reset_index(names="cell"))
        out.table("importances", importances)
        out.table("predictions", predictions)
        out.table("league_table", league)
        base_rate = float(y_test.mean())
        out.figure("precision_recall_f1_vs_threshold", figures.prf_vs_threshold(table, optimal),
                   caption="Precision, recall and F1 on the test set at each of the 1,000 "
                           "thresholds (positive when p > t)")
        out.figure("pr_curve", figures.pr_curve(table, base_rate),
                   caption="Precision-recall curve traced by the threshold sweep")
        out.figure("importances_top20", figures.importances_top(importances, 20),
                   caption="Top 20 features: impurity importance (the seed's) and "
                           "permutation importance (± sd over repeats) on test rows holding "
                           "every test attempt")
        if perm is not None:
            out.figure("permutation_importance", figures.permutation_figure(perm, 20),
                       caption=f"Permutation importance, {cfg.importance.permutation_repeats} "
                               f"repeats on {len(perm_rows):,} test rows (all "
                               f"{int(y_test.sum())} attempts; negatives weighted to the "
                               "test set): mean ± sd, min and max over repeats")
        out.figure("league_table_top20", figures.league_top(league, f1_t, 20),
                   caption=f"League table {ly}-{lm:02d}, ranked by the {league_model}; red "
                           "clears the F1 threshold")
        if convergence is not None:
            out.table("convergence", convergence)
            out.figure("convergence", figures.convergence_figure(convergence),
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
                {bt.MODEL_LABELS[m]: s for m, s in temporal.sweeps.items()},
                float(temporal.pooled["target"].mean())),
                caption="Precision-recall on the same pooled backtest, per model")
        if data.features_missing:
            out.section("Features missing from the data file", "<p>Left out of the model: "
                        + html.escape(", ".join(data.features_missing)) + " (seed features "
                        "the file does not have; see README, coup: data.features).</p>")
        out.section("Which model ranks the league table", f"<p>{html.escape(league_model)}."
                    "</p>")
        if temporal.comparison is not None and len(temporal.comparison) > 1:
            reading = _what_the_data_say(temporal.comparison, cfg.backtest.n_trees)
            out.section("Model comparison: what the data say",
                        f"<p>{html.escape(reading)}</p>")

    n_subforests = -(-cfg.forest.n_trees // cfg.forest.trees_per_task)
    summary = {
        "data": data.source,
        "features_missing": data.features_missing,
        "features_dropped": data.features_dropped,
        "rows": int(len(data.panel)), "n_train": int(len(data.train)),
        "n_test": int(len(data.test)), "n_features": len(data.names),
        "attempts_train": int(y_train.sum()), "attempts_test": int(y_test.sum()),
        "split": cfg.split.kind, "split_seed": data.split_seed,
        "lead_months": cfg.split.lead_months,
        "n_trees": res.n_trees, "n_subforests": n_subforests,
        "permutation_copies": len(plan), "permutation_tasks": n_subforests * len(perm_blocks),
        "permutation_rows": 0 if perm_rows is None else int(len(perm_rows)),
        "permutation_attempts": 0 if perm_rows is None else int(y_test[perm_rows].sum()),
        "optimal_thresholds": optimal.as_dict(),
        "confusion_tables": {k: dict(v.confusion) for k, v in optimal.items()},
        **scores.as_dict(),
        **{f"test_{k}_95": v for k, v in test_iv.items()},
        "top_importances": importances.head(6)[["feature", "impurity_importance"]]
        .to_dict(orient="records"),
        "league_month": f"{ly}-{lm:02d}",
        "league_model": league_model,
        "league_trained_through": trained_through,
        "league_top5": league.head(5)[["country", "probability", "clears_f1_threshold"]]
        .to_dict(orient="records"),
    }
    if convergence is not None:
        summary["convergence"] = convergence.to_dict(orient="records")
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
    out.summary = summary
    return out


def _two_digits(value) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def headline(summary: dict) -> list[tuple[str, object]]:
    opt = summary["optimal_thresholds"]
    fmt = evaluate.format_estimate
    rows = [("data", summary["data"]),
            ("seed features missing from the file (left out)",
             ", ".join(summary["features_missing"]) or "none"),
            ("rows (train / test)", f"{summary['n_train']:,} / {summary['n_test']:,}"),
            ("attempts (train / test)",
             f"{summary['attempts_train']:,} / {summary['attempts_test']:,}"),
            ("trees", summary["n_trees"]), ("features", summary["n_features"]),
            # estimates without an interval here: two significant digits, no more
            ("OOB score (R²)", _two_digits(summary["oob_score"])),
            ("test ROC-AUC (random split, 95% country bootstrap)",
             fmt(summary["test_roc_auc"], summary.get("test_roc_auc_95"))),
            ("test PR-AUC", fmt(summary["test_pr_auc"], summary.get("test_pr_auc_95"))),
            ("test Brier", fmt(summary["test_brier"], summary.get("test_brier_95"))),
            ("F1-optimal threshold", opt["f1"]["threshold"]), ("F1 there (test set)", _two_digits(opt["f1"]["f1"]))]
    b = summary.get("backtest")
    if b:
        span = f"{b['years'][0]}-{b['years'][1]}"
        rows += [(f"pooled backtest {span}: rows / attempts", f"{b['rows']:,} / {b['attempts']}"),
                 ("pooled backtest ROC-AUC (95%)", fmt(b["roc_auc"], b.get("roc_auc_95"))),
                 ("pooled backtest PR-AUC (95%)", fmt(b["pr_auc"], b.get("pr_auc_95"))),
                 ("pooled backtest Brier (95%)", fmt(b["brier"], b.get("brier_95")))]
        if len(b["models"]) > 1:
            rows.append(("pooled PR-AUC by model", ", ".join(
                f"{m} {v['pr_auc']:.3g}" for m, v in b["models"].items())))
    rows += [("league table month", summary["league_month"]),
             ("league table ranked by", summary["league_model"])]
    return rows


JOB = Job(name=NAME, description=DESCRIPTION, title=TITLE, config=Config, load=load_inputs,
          compute=compute, headline=headline, primary_stream="forest")
