"""The coup job's configuration (pydantic; the model's defaults are the job's defaults).

``configs/coup.toml`` only overrides what a size needs; ``riskdask run coup --set KEY=VALUE``
sets one key. Imported by the job declaration and the pipeline, never by a worker task.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .prepare import forbidden_features

__all__ = ["Config", "DataConfig", "SplitConfig", "ForestConfig", "SweepConfig",
           "ImportanceConfig", "BacktestConfig", "LeagueConfig", "LEAGUE_MIN_TREES"]


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
    duplicates: Literal["error", "drop"] = Field(
        "error", description="a row identical in every column to another: error (exit 2 "
        "naming both rows) or drop (left out, counted). Rows of one (ccode, year, month, "
        "leader) that differ are a leader's spells (a within-month return) and always kept")

    @field_validator("features")
    @classmethod
    def _no_leaks(cls, v: list[str] | None) -> list[str] | None:
        return _check_features(v)


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "temporal"] = "random"
    test_size: float = Field(0.3, gt=0, lt=1, description="random split: test share (seed 0.3)")
    stratify: bool = True
    seed: int | None = Field(None, ge=0, description="override of the random split's seed "
                             "(the 'split' stream); omitted: the run seed. Moves the split "
                             "alone: the forest and the other purposes have streams of their "
                             "own either way")
    train_until_year: int = Field(2009, description="temporal split: last training year")
    lead_months: int = Field(0, ge=0, le=36, description="0: attempt in the same month; k: "
                             "an attempt in the next k months")


class ForestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_trees: int = Field(200, ge=1, le=1_000_000, description="seed: 10,000")
    trees_per_task: int = Field(5, ge=1, le=100_000)
    criterion: Literal["squared_error", "friedman_mse", "absolute_error", "poisson"] = (
        "squared_error")
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
    first_test_year: int = Field(2010, description="first test year Y (train on years < Y)")
    last_test_year: int | None = Field(None, description="default: the last year in the data")
    n_trees: int = Field(25, ge=1, le=1_000_000, description="forest trees per test year")
    trees_per_task: int = Field(5, ge=1)
    models: list[Literal["forest", "hgb", "logistic"]] = Field(
        default_factory=lambda: ["forest", "logistic"],
        description="forest (the seed's), hgb (HistGradientBoostingClassifier), logistic")
    bootstrap_replicates: int = Field(200, ge=0, le=100_000,
                                      description="country bootstrap for the intervals")
    calibration_bins: int = Field(10, ge=2, le=100)
    calibration_strategy: Literal["quantile", "uniform"] = "quantile"
    min_attempts_auc: int = Field(3, ge=1, description="per-year ROC-AUC and PR-AUC only "
                                  "for a test year with at least this many attempts")
    alert_k: int = Field(5, ge=1, description="alert budget: countries flagged per month")
    recalibration: Literal["isotonic", "none"] = Field(
        "isotonic", description="isotonic recalibration fitted on earlier years only")

    @field_validator("models")
    @classmethod
    def _forest_first(cls, v: list[str]) -> list[str]:
        if "forest" not in v:
            raise ValueError("the seed's forest must be among the models")
        if len(set(v)) != len(v):
            raise ValueError("models listed twice")
        return v


#: The league model's floor: a forest of fewer trees gives a handful of distinct forecasts,
#: so most countries tie (4 trees: 191 of 194 countries at exactly 0).
LEAGUE_MIN_TREES = 100


class LeagueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["temporal", "split"] = Field(
        "temporal", description="temporal: a forest trained on every month whose target was "
        "known before the file's latest month; split: the random split's OOB/test scores")
    n_trees: int | None = Field(None, ge=1, le=1_000_000, description="trees of the temporal "
                                f"league forest; omitted: {LEAGUE_MIN_TREES} (the floor: "
                                "fewer trees give a handful of distinct scores and ties)")


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

    def league_trees(self) -> int:
        """Trees of the temporal league forest (``league.n_trees``; default
        :data:`LEAGUE_MIN_TREES`, the documented floor: the main forest's size is the full
        config's, ``configs/coup-full.toml``)."""
        if self.league.n_trees is not None:
            return self.league.n_trees
        return LEAGUE_MIN_TREES
