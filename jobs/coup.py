"""coup: coup-attempt risk from a REIGN-format panel (seed ``000_68eb94656699ea41.txt``).

A random-forest regressor gives every country-month a probability of a coup attempt; the
exact one-pass sweep over the seed's 1,000 thresholds gives precision, recall and F1 at each,
the optimal and default thresholds and their confusion tables; impurity and permutation
importances; the league table of the latest month; a yearly temporal backtest.

Wiring only: config -> data (riskdask.coup.reign / synthetic / prepare) -> sub-forests and
sweep partitions on the engine -> outputs. The maths is in ``riskdask/coup/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskdask.coup import evaluate, figures
from riskdask.coup.distributed import distributed_forest
from riskdask.coup.forest import permutation_blocks, permutation_plan
from riskdask.coup.prepare import check_training_positives, feature_matrix, \
    forbidden_features, lead_target, random_split, temporal_split
from riskdask.coup.reign import LoadedPanel, read_reign_csv, validate_panel
from riskdask.coup.schema import DEFAULT_NUMERIC_FEATURES, TARGET
from riskdask.coup.sweep import BinCounts, combine_bin_counts, confusion_tables, \
    optimal_thresholds, sweep_table, threshold_grid
from riskdask.coup.synthetic import synthetic_reign
from riskdask.coup.tasks import sweep_task
from riskdask.engine import map_reduce, plan_chunks, spawn_streams
from riskdask.errors import ConfigError, InputError
from riskdask.protocol import Job, Outputs

NAME = "coup"
DESCRIPTION = ("coup-attempt risk: distributed random-forest regressor on REIGN-format data, "
               "exact 1,000-threshold sweep, importances, league table, backtest")
TITLE = "riskdask · coup — coup-attempt risk (random-forest regressor, 1,000-threshold sweep)"


# ----------------------------------------------------------------------------- config
class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="REIGN-format CSV; omit for the synthetic panel")
    synthetic_seed: int = Field(2019, ge=0, description="seed of the embedded synthetic panel")
    synthetic_countries: int = Field(200, ge=2, le=676)
    features: list[str] = Field(default_factory=lambda: list(DEFAULT_NUMERIC_FEATURES),
                                description="numeric feature columns (seed's choice default)")
    one_hot_government: bool = Field(True, description="add the 16 government_<type> dummies")

    @field_validator("features")
    @classmethod
    def _no_leaks(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) & forbidden_features())
        if bad:
            raise ValueError(f"not allowed as features (target, its leak, text ids or the "
                             f"seed's dropped columns): {', '.join(bad)}")
        if len(set(v)) != len(v):
            raise ValueError("features listed twice")
        return v


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "temporal"] = "random"
    test_size: float = Field(0.3, gt=0, lt=1, description="random split: test share (seed 0.3)")
    stratify: bool = True
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

    def sklearn_params(self) -> dict:
        return self.model_dump(exclude={"n_trees", "trees_per_task"})


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows_per_partition: int = Field(500_000, ge=1)
    default_threshold: float = Field(0.5, ge=0, le=1)


class ImportanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permutation_repeats: int = Field(3, ge=0, le=100, description="0 turns it off")
    permutation_rows: int = Field(2000, ge=10, description="test rows used (random subset)")
    copies_per_task: int = Field(46, ge=1, description="permuted copies (feature, repeat) "
                                 "per task; tasks = sub-forests x blocks of copies")


class BacktestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    first_test_year: int = 2016
    last_test_year: int | None = Field(None, description="default: the last year in the data")
    n_trees: int = Field(24, ge=1, le=1_000_000)
    trees_per_task: int = Field(12, ge=1)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(2019, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    forest: ForestConfig = Field(default_factory=ForestConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)


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


def _load_panel(cfg: Config) -> tuple[LoadedPanel, str | None]:
    if cfg.data.path is None:
        frame = synthetic_reign(cfg.data.synthetic_seed, cfg.data.synthetic_countries)
        source = f"synthetic REIGN-like panel (seed {cfg.data.synthetic_seed})"
        path = None
    else:
        path = cfg.data.path
        frame = read_reign_csv(path)
        source = path
    return validate_panel(frame, source=source, numeric_features=cfg.data.features,
                          use_government=cfg.data.one_hot_government), path


def load_inputs(cfg: Config, record=None) -> CoupInputs:
    """Load (or generate) and validate the panel, prepare features, target and split."""
    loaded, path = _load_panel(cfg)
    if record is not None:
        if path is None:
            record.add_input("reign", rows=loaded.n_rows_read,
                          fingerprint=f"synthetic seed={cfg.data.synthetic_seed} "
                                      f"countries={cfg.data.synthetic_countries}",
                          description="embedded synthetic REIGN-like panel (a stand-in)")
        else:
            record.add_input("reign", path, rows=loaded.n_rows_read,
                          description="REIGN-format country-month panel")
        for reason, count in loaded.exclusions.items():
            record.exclude("reign", reason, count, loaded.excluded_rows[reason])
    panel = loaded.frame
    y, complete = lead_target(panel, cfg.split.lead_months)
    if not complete.all():
        if record is not None:
            record.exclude("reign", f"next {cfg.split.lead_months} months not all in the panel "
                        "(no lead target)", int((~complete).sum()),
                        panel["source_row"].to_numpy()[~complete].tolist())
        panel, y = panel.loc[complete].reset_index(drop=True), y[complete]
    X, names = feature_matrix(panel, cfg.data.features, cfg.data.one_hot_government)
    if cfg.split.kind == "random":
        check_training_positives(y, source=loaded.source, what="data")
        if cfg.split.stratify and np.sum(y == 1) < 2:
            raise InputError(f"only one positive row ({TARGET} = 1): a stratified split needs "
                             "two", file=loaded.source, column=TARGET)
        train, test = random_split(y, cfg.split.test_size, cfg.seed, cfg.split.stratify)
    else:
        train, test = temporal_split(panel["year"].to_numpy(), cfg.split.train_until_year)
        if len(test) == 0:
            raise ConfigError(f"no rows after {cfg.split.train_until_year} to test on",
                              key="split.train_until_year")
    check_training_positives(y[train], source=loaded.source)
    if cfg.backtest.enabled:
        for year in _backtest_years(cfg, panel):
            check_training_positives(y[panel["year"].to_numpy() < year], source=loaded.source,
                                     what=f"backtest training set before {year}")
    return CoupInputs(panel=panel, source=loaded.source, X=X, y=y, names=names,
                      train=train, test=test)


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


def _backtest(cfg: Config, ctx, data: CoupInputs) -> pd.DataFrame:
    """Train on all years before Y (thresholds chosen on its OOB sweep), score year Y."""
    years_all = data.panel["year"].to_numpy()
    params = cfg.forest.sklearn_params()
    rows = []
    years = _backtest_years(cfg, data.panel)
    year_streams = spawn_streams(ctx.streams.seed("backtest"), len(years))
    for i, year in enumerate(years):
        tr, te = np.flatnonzero(years_all < year), np.flatnonzero(years_all == year)
        res, _ = distributed_forest(ctx.client, data.X[tr], data.y[tr], data.X[te],
                                    cfg.backtest.n_trees, cfg.backtest.trees_per_task,
                                    year_streams[i], params, label=f"backtest-{year}")
        has = ~np.isnan(res.oob_prediction)
        oob_table = sweep_table(_sweep(ctx, res.oob_prediction[has], data.y[tr][has],
                                       cfg.sweep.rows_per_partition, f"backtest-oob-{year}"))
        chosen = optimal_thresholds(oob_table, cfg.sweep.default_threshold)
        test_table = sweep_table(_sweep(ctx, res.test_prediction, data.y[te],
                                        cfg.sweep.rows_per_partition, f"backtest-sweep-{year}"))
        scores = evaluate.forest_scores(data.y[tr], res.oob_prediction, data.y[te],
                                        res.test_prediction)
        for kind, opt in chosen.items():
            r = test_table.iloc[opt["index"]]
            rows.append({"test_year": year, "threshold_kind": kind,
                         "threshold": opt["threshold"], "chosen_on": "training OOB",
                         "n_train": len(tr), "n_test": len(te),
                         "test_attempts": int(data.y[te].sum()),
                         **{k: int(r[k]) for k in ("FN", "TP", "TN", "FP")},
                         "precision": float(r["precision"]), "recall": float(r["recall"]),
                         "f1": float(r["f1"]),
                         "roc_auc": scores["test_roc_auc"], "pr_auc": scores["test_pr_auc"],
                         "brier": scores["test_brier"]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- run
def compute(cfg: Config, data: CoupInputs, ctx) -> Outputs:
    """The forest with its branches, the sweep, scores, importances, league table, backtest."""
    out = Outputs()
    X_train, y_train = data.X[data.train], data.y[data.train]
    X_test, y_test = data.X[data.test], data.y[data.test]

    plan, perm_rows = [], None
    if cfg.importance.permutation_repeats:
        n_rows = min(cfg.importance.permutation_rows, len(data.test))
        perm_rows = np.sort(np.random.default_rng(ctx.streams.seed("subsample")).choice(
            len(data.test), n_rows, replace=False))
        plan = permutation_plan(X_test.shape[1], cfg.importance.permutation_repeats,
                                ctx.streams.seed("permutation"))

    perm_blocks = permutation_blocks(plan, cfg.importance.copies_per_task)
    with ctx.stage("forest"):
        res, perm_prediction = distributed_forest(
            ctx.client, X_train, y_train, X_test, cfg.forest.n_trees,
            cfg.forest.trees_per_task, ctx.streams.seed("forest"), cfg.forest.sklearn_params(),
            X_perm_rows=None if perm_rows is None else X_test[perm_rows],
            perm_blocks=perm_blocks)
    if res.oob_count.min() == 0:
        ctx.record.exclude("oob", "training rows no tree left out of bag (no OOB score; left out of "
                    "the OOB estimate and the league table)", int((res.oob_count == 0).sum()))

    with ctx.stage("sweep"):
        counts = _sweep(ctx, res.test_prediction, y_test, cfg.sweep.rows_per_partition)
        table = sweep_table(counts, threshold_grid())
        optimal = optimal_thresholds(table, cfg.sweep.default_threshold)
        confusion = confusion_tables(optimal)

    with ctx.stage("evaluate"):
        scores = evaluate.forest_scores(y_train, res.oob_prediction, y_test, res.test_prediction)
        perm = None
        if plan:
            perm = evaluate.permutation_importance_table(
                data.names, plan, y_test[perm_rows], res.test_prediction[perm_rows],
                perm_prediction)
        importances = evaluate.importance_table(data.names, res.feature_importances, perm)
        score, source = evaluate.honest_scores(len(data.panel), data.train, data.test,
                                               res.oob_prediction, res.test_prediction)
        f1_t = optimal["f1"]["threshold"]
        league, (ly, lm) = evaluate.league_table(data.panel, score, source, f1_t)

    backtest = None
    if cfg.backtest.enabled:
        with ctx.stage("backtest"):
            backtest = _backtest(cfg, ctx, data)

    with ctx.stage("outputs"):
        split = np.full(len(data.panel), "none", dtype=object)
        split[data.train], split[data.test] = "train", "test"
        predictions = pd.DataFrame({
            "ccode": data.panel["ccode"], "country": data.panel["country"],
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
        out.figure("precision_recall_f1_vs_threshold",
                         figures.prf_vs_threshold(table, optimal),
                         caption="Precision, recall and F1 on the test set at each of the 1,000 "
                                 "thresholds (positive when p > t)")
        out.figure("pr_curve", figures.pr_curve(table, base_rate),
                         caption="Precision-recall curve traced by the threshold sweep")
        out.figure("importances_top20", figures.importances_top(importances, 20),
                         caption="Top 20 features: impurity importance (the seed's) and "
                                 "permutation importance on test rows")
        out.figure("league_table_top20", figures.league_top(league, f1_t, 20),
                         caption=f"League table {ly}-{lm:02d}: honest (out-of-bag or "
                                 "out-of-sample) probabilities; red clears the F1 threshold")
        if backtest is not None and len(backtest):
            out.table("backtest", backtest)
            out.figure("backtest", figures.backtest_figure(
                backtest[backtest["threshold_kind"] == "f1"].rename(
                    columns={"f1": "f1_at_train_f1_threshold"})),
                caption="Temporal backtest: train on all earlier years, score the year")

    n_subforests = -(-cfg.forest.n_trees // cfg.forest.trees_per_task)
    summary = {
        "data": data.source,
        "rows": int(len(data.panel)), "n_train": int(len(data.train)),
        "n_test": int(len(data.test)), "n_features": len(data.names),
        "attempts_train": int(y_train.sum()), "attempts_test": int(y_test.sum()),
        "split": cfg.split.kind, "lead_months": cfg.split.lead_months,
        "n_trees": res.n_trees, "n_subforests": n_subforests,
        "permutation_copies": len(plan), "permutation_tasks": n_subforests * len(perm_blocks),
        "optimal_thresholds": optimal,
        "confusion_tables": {k: v["confusion"] for k, v in optimal.items()},
        **scores,
        "top_importances": importances.head(6)[["feature", "impurity_importance"]]
        .to_dict(orient="records"),
        "league_month": f"{ly}-{lm:02d}",
        "league_top5": league.head(5)[["country", "probability", "clears_f1_threshold"]]
        .to_dict(orient="records"),
    }
    if backtest is not None and len(backtest):
        f1_rows = backtest[backtest["threshold_kind"] == "f1"]
        summary["backtest_years"] = [int(v) for v in f1_rows["test_year"]]
        summary["backtest_f1_at_oob_f1_threshold"] = [float(v) for v in f1_rows["f1"]]
    out.summary = summary
    return out


def headline(summary: dict) -> list[tuple[str, object]]:
    opt = summary["optimal_thresholds"]
    return [("rows (train / test)", f"{summary['n_train']:,} / {summary['n_test']:,}"),
            ("trees", summary["n_trees"]), ("features", summary["n_features"]),
            ("OOB score (R²)", summary["oob_score"]), ("test ROC-AUC", summary["test_roc_auc"]),
            ("test PR-AUC", summary["test_pr_auc"]), ("test Brier", summary["test_brier"]),
            ("F1-optimal threshold", opt["f1"]["threshold"]), ("F1 there", opt["f1"]["f1"]),
            ("league table month", summary["league_month"])]


JOB = Job(name=NAME, description=DESCRIPTION, title=TITLE, config=Config, load=load_inputs,
          compute=compute, headline=headline, primary_stream="forest")
