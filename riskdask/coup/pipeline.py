"""The coup job's load and compute: inputs, the forest with its branches, the sweep, scores,
importances, the pooled backtest and the league table (:mod:`riskdask.protocol`).

``load_inputs(cfg, record, streams)`` reads (or generates) and validates the panel and fixes
features, target and split; ``compute(cfg, inputs, ctx)`` runs every plan on ``ctx.engine``
with the run's streams (``ctx.streams``) and returns a :class:`CoupResult`. Presentation
(summary, tables, figures, report) is :mod:`riskdask.coup.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..engine import plan_chunks
from ..errors import ConfigError, InputError
from ..streams import keyed_seed
from . import backtest as bt
from . import calibration, decisions, evaluate
from .config import Config
from .distributed import distributed_forest
from .evaluate import ForestScores
from .forest import (ForestResult, convergence_table, permutation_blocks, permutation_plan,
                     tree_checkpoints)
from .prepare import (check_training_positives, feature_matrix, lead_target, month_index,
                      purge_overlapping, random_split, temporal_split)
from .reign import read_reign_csv, resolve_features, validate_panel
from .schema import TARGET
from .sweep import (BinCounts, OptimalThresholds, combine_bin_counts, confusion_tables,
                    optimal_thresholds, sweep_table, threshold_grid)
from .synthetic import synthetic_reign
from .tasks import sweep_task

__all__ = ["PURPOSES", "CoupInputs", "BacktestResult", "LeagueResult", "CoupResult",
           "load_inputs", "split_seed", "spells_records", "backtest_years", "sweep_counts",
           "run_temporal", "rank_league", "compute"]

#: The random streams of the job; the first is the primary one, ``SeedSequence(cfg.seed)``
#: itself (the forest's stream in every earlier release).
PURPOSES = ("forest", "split", "subsample", "permutation", "bootstrap", "backtest")


# ----------------------------------------------------------------------------- inputs
@dataclass
class CoupInputs:
    """The validated panel, its features, target and split (what ``load_inputs`` returns)."""

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
    spells: list[dict] = field(default_factory=list)  # within-month returns (kept)
    league_panel: pd.DataFrame | None = None   # every row of the file's latest month
    league_X: np.ndarray | None = None         # their features (targets not needed)


def split_seed(cfg: Config, streams) -> int:
    """The integer seed (scikit-learn ``random_state``) of the random split: the ``split``
    purpose of the run.

    ``split.seed`` overrides it (it moves the split alone). Omitted, it is the run's seed as
    an integer, ``streams.root`` -- the seed every earlier release gave the split, kept so that
    the pinned numbers stay bit-identical. It is not ``streams.seed("split")``: that
    ``SeedSequence([seed, crc32("split")])`` would draw another split and move every figure.
    An integer seeds scikit-learn's legacy ``RandomState`` (MT19937 seeded directly), which
    shares no state with the ``SeedSequence`` streams of the other purposes (the forest's
    ``SeedSequence(seed)`` included).
    """
    if "split" not in streams.purposes:
        raise ValueError("the random split's stream 'split' is not a declared purpose")
    return streams.root if cfg.split.seed is None else int(cfg.split.seed)


def _load_panel(cfg: Config):
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
                          use_government=cfg.data.one_hot_government,
                          duplicates=cfg.data.duplicates), path, choice


def load_inputs(cfg: Config, record, streams) -> CoupInputs:
    """Load (or generate) and validate the panel, prepare features, target and split.

    Files, row exclusions and seed features the file lacks go to ``record``; a training set
    without an attempt (the split's, a backtest year's or the league model's) is bad input.
    """
    loaded, path, choice = _load_panel(cfg)
    if path is None:
        record.add_input("reign", rows=loaded.n_rows_read,
                         fingerprint=f"synthetic seed={cfg.data.synthetic_seed} "
                                     f"countries={cfg.data.synthetic_countries}",
                         description="embedded synthetic REIGN-like panel (a stand-in)")
    else:
        record.add_input("reign", path, rows=loaded.n_rows_read,
                         description="REIGN-format leader-month panel")
    if len(loaded.spells):
        # kept, not excluded: counted beside the input in the manifest
        record.inputs[-1]["description"] += (
            f"; {loaded.spell_rows} rows are {len(loaded.spells)} within-month leader "
            "return(s), kept as spells")
        record.inputs[-1]["within_month_returns"] = spells_records(loaded.spells)
    for reason, count in loaded.exclusions.items():
        record.exclude("reign", reason, count, loaded.excluded_rows[reason])
    if choice.missing:
        record.exclude("reign", "seed feature(s) not in the file, left out of the model: "
                       + ", ".join(choice.missing), len(choice.missing), choice.missing,
                       unit="features")
    panel = loaded.frame
    # the league table ranks the file's latest month: forecasts need features, not targets,
    # so its rows are kept even when a lead target cannot be settled yet
    full_mi = month_index(panel)
    league_panel = panel.loc[full_mi == full_mi.max()].reset_index(drop=True)
    league_X, _ = feature_matrix(league_panel, choice.features, cfg.data.one_hot_government)
    y, complete = lead_target(panel, cfg.split.lead_months)
    if not complete.all():
        record.exclude("reign", f"next {cfg.split.lead_months} months not all in the panel "
                       "(no lead target)", int((~complete).sum()),
                       panel["source_row"].to_numpy()[~complete].tolist())
        panel, y = panel.loc[complete].reset_index(drop=True), y[complete]
    X, names = feature_matrix(panel, choice.features, cfg.data.one_hot_government)
    seed = split_seed(cfg, streams)
    if cfg.split.kind == "random" and cfg.split.lead_months > 1:   # 1: purged below
        raise ConfigError(
            f"split.kind = \"random\" with split.lead_months = {cfg.split.lead_months} leaks: "
            "rows of one country less than lead_months apart share target months, so a random "
            "split tests on attempts its training rows already hold (ROC-AUC 0.99 against 0.56 "
            "in the backtest on a real-format excerpt; purging the overlapping rows still "
            "leaves 0.70 on a fifth of the training set). Use split.kind = \"temporal\" (and "
            "the backtest, which trains only on rows whose target closed before the test "
            "year), or split.lead_months = 0 or 1", key="split.lead_months")
    if cfg.split.kind == "random":
        check_training_positives(y, source=loaded.source, what="data")
        if cfg.split.stratify and np.sum(y == 1) < 2:
            raise InputError(f"only one positive row ({TARGET} = 1): a stratified split needs "
                             "two", file=loaded.source, column=TARGET)
        train, test = random_split(y, cfg.split.test_size, seed, cfg.split.stratify)
        if cfg.split.lead_months == 1:
            train, purged = purge_overlapping(train, test, panel["ccode"].to_numpy(),
                                              month_index(panel), 1)
            record.exclude("split", "training rows purged: same country-month as a test row "
                           "(lead_months = 1: one target month, shared)", len(purged),
                           panel["source_row"].to_numpy()[purged].tolist())
    else:
        train, test = temporal_split(panel["year"].to_numpy(), cfg.split.train_until_year)
        if len(test) == 0:
            raise ConfigError(f"no rows after {cfg.split.train_until_year} to test on",
                              key="split.train_until_year")
    check_training_positives(y[train], source=loaded.source)
    mi = month_index(panel)
    years = backtest_years(cfg, panel) if cfg.backtest.enabled else []
    cutoffs = [(f"backtest training set before {yy}", 12 * yy) for yy in years]
    if cfg.league.model == "temporal":
        last = int(full_mi.max())
        cutoffs.append((f"league model's training set (months whose target was known before "
                        f"the latest, {last // 12}-{last % 12 + 1:02d})", last))
    for what, cutoff in cutoffs:
        check_training_positives(y[bt.training_rows(mi, cutoff, cfg.split.lead_months)],
                                 source=loaded.source, what=what)
    return CoupInputs(panel=panel, source=loaded.source, X=X, y=y, names=names,
                      train=train, test=test, split_seed=seed,
                      features_missing=choice.missing, features_dropped=choice.dropped,
                      backtest_years=years, spells=spells_records(loaded.spells),
                      league_panel=league_panel, league_X=league_X)


def spells_records(spells: pd.DataFrame) -> list[dict]:
    """Within-month returns as plain records (manifest, summary): ccode, country, year, month,
    leader, spells, source_rows."""
    return [{"ccode": int(r.ccode), "country": str(r.country), "year": int(r.year),
             "month": int(r.month), "leader": str(r.leader), "spells": int(r.spells),
             "source_rows": [int(v) for v in r.source_rows]} for r in spells.itertuples()]


def backtest_years(cfg: Config, panel: pd.DataFrame) -> list[int]:
    """The backtest's test years that have data (``backtest.first_test_year`` .. last)."""
    last = (int(panel["year"].max()) if cfg.backtest.last_test_year is None
            else cfg.backtest.last_test_year)
    years = [y for y in range(cfg.backtest.first_test_year, last + 1)
             if (panel["year"] == y).any()]
    if not years:
        raise ConfigError(f"no data in the backtest years {cfg.backtest.first_test_year}-{last}",
                          key="backtest.first_test_year")
    return years


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class BacktestResult:
    """The pooled rolling-origin backtest and the league fold (all None when disabled)."""

    pooled: pd.DataFrame | None = None         # year folds, every model
    league_scores: pd.DataFrame | None = None  # the league fold's forest predictions
    per_year: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    sweeps: dict = field(default_factory=dict)  # model -> its 1,000-threshold sweep
    optimal: OptimalThresholds | None = None
    reliability: pd.DataFrame | None = None
    decomposition: dict | None = None
    intervals: dict = field(default_factory=dict)  # model -> 95% paired-bootstrap intervals
    differences: pd.DataFrame | None = None     # paired differences between models
    rolling_threshold: pd.DataFrame | None = None   # F1 threshold from earlier years, per year
    rolling_summary: pd.DataFrame | None = None     # ... pooled per model
    alerts: pd.DataFrame | None = None           # top-k countries per month, per model
    recalibrated_reliability: pd.DataFrame | None = None  # forest after isotonic (earlier yrs)


@dataclass(frozen=True)
class LeagueResult:
    """The latest month's countries ranked by an honest score.

    ``kind``: ``"temporal"`` (a forest trained only on the months before) or ``"split"``
    (the random split's OOB/test scores); ``trained_through`` (``"2019-02"``), ``n_train``
    and ``backtest_threshold`` (the threshold is the pooled backtest's F1 optimum) for the
    temporal model.
    """

    table: pd.DataFrame
    year: int
    month: int
    f1_threshold: float
    kind: str
    trained_through: str | None = None
    n_train: int | None = None
    backtest_threshold: bool = False
    n_trees: int | None = None


@dataclass(frozen=True)
class CoupResult:
    """Every figure the coup job reports (:func:`compute`)."""

    inputs: CoupInputs
    forest: ForestResult
    n_subforests: int
    permutation_plan: list          # (feature, repeat, seed) per permuted copy
    permutation_tasks: int
    permutation_rows: np.ndarray | None  # test-set positions of the permuted rows
    sweep: pd.DataFrame
    optimal: OptimalThresholds
    confusion: pd.DataFrame
    scores: ForestScores
    test_intervals: dict            # 95% country-bootstrap intervals of the test scores
    permutation: pd.DataFrame | None
    importances: pd.DataFrame
    honest_score: np.ndarray        # per panel row: OOB or test prediction (NaN: none)
    honest_source: np.ndarray       # "oob", "test", "none"
    convergence: pd.DataFrame | None
    backtest: BacktestResult
    league: LeagueResult

    @property
    def y_test(self) -> np.ndarray:
        return self.inputs.y[self.inputs.test]

    @property
    def y_train(self) -> np.ndarray:
        return self.inputs.y[self.inputs.train]


# ----------------------------------------------------------------------------- stages
def sweep_counts(engine, p, y, rows_per_partition: int, label: str = "sweep") -> BinCounts:
    """Per-partition bin counts summed on ``engine`` (exact integer sums); each partition's
    scores go to one worker only."""
    chunks = plan_chunks(len(p), rows_per_partition, 0)
    return engine.map_reduce(sweep_task, chunks, combine_bin_counts,
                             rows={"p": np.asarray(p, dtype=np.float64), "y": np.asarray(y)},
                             label=label)


def paired_seed(streams, what: str) -> np.random.SeedSequence:
    """The ``bootstrap`` stream's child for one paired comparison, keyed by ``what``."""
    return keyed_seed(streams.seed("bootstrap"), what)


def run_temporal(cfg: Config, engine, streams, data: CoupInputs) -> BacktestResult:
    """The backtest folds and the league fold as one plan on ``engine``, then the pooled
    evaluation: sweeps, per-year table, skill against climatology, paired comparisons,
    out-of-sample decisions (rolling threshold, alert budget, isotonic recalibration),
    calibration before and after."""
    mi = month_index(data.panel)
    models = [*cfg.backtest.models, "climatology"]
    folds = bt.year_folds(mi, data.backtest_years, models=models)
    X, y, panel, mi_all = data.X, data.y, data.panel, mi
    if cfg.league.model == "temporal":
        lp = data.league_panel
        n = len(data.panel)
        X = np.vstack([data.X, data.league_X])
        y = np.concatenate([data.y, np.full(len(lp), np.nan)])
        panel = pd.concat([data.panel, lp], ignore_index=True)
        mi_all = np.concatenate([mi, month_index(lp)])
        rows = n + evaluate.latest_month_rows(lp)
        folds.append(bt.month_fold(mi_all, int(mi_all.max()), rows=rows,
                                   n_trees=cfg.league_trees()))
    if not folds:
        return BacktestResult()
    plan_models, sums = bt.run_backtest(
        engine, X, np.nan_to_num(y), mi_all, folds, lead_months=cfg.split.lead_months,
        n_trees=cfg.backtest.n_trees, trees_per_task=cfg.backtest.trees_per_task,
        seed=streams.seed("backtest"), params=cfg.forest.sklearn_params())
    table = bt.pooled_table(panel, y, folds, plan_models, sums)
    league_scores = table[table["fold_kind"] == "league"].reset_index(drop=True)
    pooled = table[table["fold_kind"] == "year"].reset_index(drop=True)
    if pooled.empty:
        return BacktestResult(league_scores=league_scores)
    pooled["target"] = pooled["target"].astype(np.float64)
    if cfg.backtest.recalibration == "isotonic":
        pooled["recalibrated"] = decisions.rolling_isotonic(pooled)
    names = [m for m in plan_models if m in models]
    sweeps = {}
    for model in names:
        if model == "climatology":
            continue
        g = pooled[pooled["model"] == model]
        sweeps[model] = sweep_table(sweep_counts(engine, g["probability"].to_numpy(),
                                                 g["target"].to_numpy(),
                                                 cfg.sweep.rows_per_partition,
                                                 f"backtest-sweep-{model}"), threshold_grid())
    first = pooled[pooled["model"] == names[0]]
    preds = {m: pooled.loc[pooled["model"] == m, "probability"].to_numpy() for m in names}
    if cfg.backtest.recalibration == "isotonic":
        preds.update({f"{m} (isotonic)": pooled.loc[pooled["model"] == m,
                                                      "recalibrated"].to_numpy()
                      for m in names if m != "climatology"})
    intervals, differences = {}, None
    if cfg.backtest.bootstrap_replicates:
        intervals, differences = evaluate.paired_bootstrap(
            first["target"].to_numpy(), preds, first["ccode"].to_numpy(),
            cfg.backtest.bootstrap_replicates, paired_seed(streams, "backtest"))
    optimal = optimal_thresholds(sweeps["forest"], cfg.sweep.default_threshold)
    forest = pooled[pooled["model"] == "forest"]
    p, yy = forest["probability"].to_numpy(), forest["target"].to_numpy()
    rolling = decisions.rolling_threshold(pooled[pooled["model"] != "climatology"],
                                          threshold_grid())
    reliability = calibration.reliability_table(p, yy, cfg.backtest.calibration_bins,
                                                cfg.backtest.calibration_strategy)
    recal_reliability = None
    if cfg.backtest.recalibration == "isotonic":
        recal_reliability = calibration.reliability_table(
            forest["recalibrated"].to_numpy(), yy, cfg.backtest.calibration_bins,
            cfg.backtest.calibration_strategy)
    return BacktestResult(
        pooled=pooled, league_scores=league_scores,
        per_year=bt.per_year_table(pooled[pooled["model"] != "climatology"],
                                   optimal.f1.threshold, cfg.backtest.min_attempts_auc),
        comparison=bt.comparison_table(pooled, sweeps, intervals, preds),
        sweeps=sweeps, optimal=optimal, reliability=reliability,
        decomposition=calibration.brier_decomposition(p, yy, cfg.backtest.calibration_bins,
                                                      cfg.backtest.calibration_strategy),
        intervals=intervals, differences=differences,
        rolling_threshold=rolling,
        rolling_summary=decisions.rolling_threshold_summary(rolling),
        alerts=decisions.alert_budget(pooled, cfg.backtest.alert_k),
        recalibrated_reliability=recal_reliability)


def rank_league(cfg: Config, data: CoupInputs, temporal: BacktestResult,
                optimal: OptimalThresholds, score: np.ndarray, source: np.ndarray
                ) -> LeagueResult:
    """The league table of the latest month, ranked by the temporal model (its scores from
    the backtest plan's league fold) or by the random split's honest scores."""
    if cfg.league.model != "temporal":
        f1_t = optimal.f1.threshold
        table, (ly, lm) = evaluate.league_table(data.panel, score, source, f1_t)
        return LeagueResult(table=table, year=ly, month=lm, f1_threshold=f1_t, kind="split")
    ls = temporal.league_scores
    lp = data.league_panel
    rows = ls["row"].to_numpy() - len(data.panel)       # the league rows follow the panel's
    league_score = np.full(len(lp), np.nan)
    league_source = np.full(len(lp), "none", dtype=object)
    league_score[rows] = ls["probability"].to_numpy()
    league_source[rows] = "temporal"
    f1_t = (temporal.optimal or optimal).f1.threshold
    table, (ly, lm) = evaluate.league_table(lp, league_score, league_source, f1_t)
    last_y = int(ls["train_last_year"].max())
    last_m = int(ls.loc[ls["train_last_year"] == ls["train_last_year"].max(),
                        "train_last_month"].max())
    return LeagueResult(table=table, year=ly, month=lm, f1_threshold=f1_t, kind="temporal",
                        trained_through=f"{last_y}-{last_m:02d}",
                        n_train=int(ls["n_train"].iloc[0]),
                        backtest_threshold=temporal.optimal is not None,
                        n_trees=int(ls["fits"].iloc[0]))


# ----------------------------------------------------------------------------- compute
def compute(cfg: Config, data: CoupInputs, ctx) -> CoupResult:
    """The forest with its branches, the sweep, scores, importances, backtest, league table."""
    engine, streams = ctx.engine, ctx.streams
    X_train, y_train = data.X[data.train], data.y[data.train]
    X_test, y_test = data.X[data.test], data.y[data.test]

    plan, perm_rows, perm_weights = [], None, None
    if cfg.importance.permutation_repeats:
        perm_rows, perm_weights = evaluate.stratified_rows(
            y_test, cfg.importance.permutation_rows, streams.seed("subsample"))
        plan = permutation_plan(X_test.shape[1], cfg.importance.permutation_repeats,
                                streams.seed("permutation"))
    checkpoints = (tree_checkpoints(cfg.forest.n_trees, cfg.forest.trees_per_task)
                   if cfg.forest.convergence else [])

    perm_blocks = permutation_blocks(plan, cfg.importance.copies_per_task)
    with ctx.stage("forest"):
        res, perm_prediction = distributed_forest(
            engine, X_train, y_train, X_test, cfg.forest.n_trees,
            cfg.forest.trees_per_task, streams.seed("forest"), cfg.forest.sklearn_params(),
            X_perm_rows=None if perm_rows is None else X_test[perm_rows],
            perm_blocks=perm_blocks, checkpoints=checkpoints)
    if res.oob_count.min() == 0:
        ctx.record.exclude("oob", "training rows no tree left out of bag (no OOB score; left "
                           "out of the OOB estimate)", int((res.oob_count == 0).sum()))

    with ctx.stage("sweep"):
        counts = sweep_counts(engine, res.test_prediction, y_test, cfg.sweep.rows_per_partition)
        table = sweep_table(counts, threshold_grid())
        optimal = optimal_thresholds(table, cfg.sweep.default_threshold)

    with ctx.stage("evaluate"):
        scores = evaluate.forest_scores(y_train, res.oob_prediction, y_test, res.test_prediction)
        test_iv = (evaluate.bootstrap_intervals(
            y_test, res.test_prediction, data.panel["ccode"].to_numpy()[data.test],
            cfg.backtest.bootstrap_replicates, streams.seed("bootstrap"))
            if cfg.backtest.bootstrap_replicates else {})
        perm = None
        if plan:
            perm = evaluate.permutation_importance_table(
                data.names, plan, y_test[perm_rows], res.test_prediction[perm_rows],
                perm_prediction, perm_weights)
        importances = evaluate.importance_table(data.names, res.feature_importances, perm)
        score, source = evaluate.honest_scores(len(data.panel), data.train, data.test,
                                               res.oob_prediction, res.test_prediction)
        convergence = (convergence_table(res.aggregate, y_train, y_test) if checkpoints
                       else None)

    with ctx.stage("backtest"):
        temporal = run_temporal(cfg, engine, streams, data)

    with ctx.stage("league"):
        league = rank_league(cfg, data, temporal, optimal, score, source)

    n_subforests = -(-cfg.forest.n_trees // cfg.forest.trees_per_task)
    return CoupResult(
        inputs=data, forest=res, n_subforests=n_subforests, permutation_plan=plan,
        permutation_tasks=n_subforests * len(perm_blocks), permutation_rows=perm_rows,
        sweep=table, optimal=optimal, confusion=confusion_tables(optimal), scores=scores,
        test_intervals=test_iv, permutation=perm, importances=importances,
        honest_score=score, honest_source=source, convergence=convergence,
        backtest=temporal, league=league)
