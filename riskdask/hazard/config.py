"""The hazard job's configuration: pydantic models, their defaults the job's defaults.

``configs/hazard*.toml`` override only what a size needs; ``Config()`` is the canonical
default (``tests/test_architecture.py`` checks the shipped files against it). Imported by the
client only: no kernel or task module imports this one (it loads pydantic).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .estimators import GridRule
from .panel import PanelRules

__all__ = ["Config", "PeriodConfig", "SyntheticConfig", "RulesConfig", "DataConfig", "Axis",
           "KAxis", "K0Axis", "ThetaAxis", "GridConfig", "SmoothingConfig", "SplitConfig",
           "BootstrapConfig", "LikelihoodConfig", "PredictionConfig"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodConfig(_Section):
    start: int = Field(1997, ge=1900, le=2100)
    end: int = Field(2007, ge=1900, le=2100)
    first_closure_year: int | None = Field(
        None, ge=1900, le=2100,
        description="closures before this year are not counted (default: the year after "
                    "start, as the seed's 1998 for 1997; at most end)")

    @model_validator(mode="after")
    def _order(self):
        if not self.start <= self.closures_from() <= self.end:
            raise ValueError("need start <= first_closure_year <= end")
        return self

    def closures_from(self) -> int:
        """``first_closure_year``, or (unset) the year after ``start`` (at most ``end``)."""
        if self.first_closure_year is not None:
            return self.first_closure_year
        return min(self.start + 1, self.end)


class SyntheticConfig(_Section):
    n_npos: int = Field(2660, gt=1, le=5_000_000)
    p_initial_grant: float = Field(0.85, gt=0, le=1)
    p_keep: float = Field(0.8, ge=0, le=1)
    p_regain: float = Field(0.45, ge=0, le=1)
    peak_hazard: float = Field(0.07, gt=0, lt=1)
    peak_time: float = Field(5.0, gt=0)
    true_k1: float = Field(1.0, ge=0)
    true_k2: float = Field(1.0, ge=0)
    shape: Literal["inverted_u", "linear", "constant"] = Field(
        "inverted_u", description="true hazard of the generator (riskdask.hazard.synthetic."
                                  "true_hazard); the true direction is atan2(true_k2, true_k1)")

    @model_validator(mode="after")
    def _direction(self):
        if self.true_k1 == 0 and self.true_k2 == 0:
            raise ValueError("true_k1 and true_k2 cannot both be 0")
        return self


class RulesConfig(_Section):
    """How real panel shapes are treated (riskdask.hazard.panel.PanelRules); each is counted."""

    rows_outside_period: Literal["ignore", "error"] = Field(
        "ignore", description="rows before period.start or after period.end: left out and "
                              "counted, or an error")
    closure_after_period: Literal["censor", "error"] = Field(
        "censor", description="closed_year > period.end: censored at the end of the period "
                              "(active), or an error")
    missing_closure_year_row: Literal["no_grant", "error"] = Field(
        "no_grant", description="no row for the closure year: read as a no-grant year, or an "
                                "error")

    def rules(self) -> PanelRules:
        return PanelRules(rows_outside_period=self.rows_outside_period,
                          closure_after_period=self.closure_after_period,
                          missing_closure_year_row=self.missing_closure_year_row)


class DataConfig(_Section):
    path: str | None = Field(None, description="CSV or Parquet panel; omit for the synthetic "
                                               "panel below")
    synthetic: SyntheticConfig = SyntheticConfig()
    rules: RulesConfig = RulesConfig()


class Axis(_Section):
    """Evenly spaced values ``linspace(start, stop, num)``, or an explicit ``values`` list.

    Giving any of ``start/stop/num`` without ``values`` means the evenly spaced values, so an
    axis whose default is a ``values`` list (k0) can be overridden by a range.
    """

    start: float = 0.0
    stop: float = 1.0
    num: int = Field(11, ge=0, le=100_000)
    values: list[float] | None = None

    @model_validator(mode="after")
    def _range_given(self):
        given = self.model_fields_set
        if {"start", "stop", "num"} & given and "values" not in given:
            self.values = None
        return self

    def array(self) -> np.ndarray:
        if self.values is not None:
            return np.asarray(self.values, dtype=np.float64)
        return np.linspace(self.start, self.stop, self.num)


# Each axis carries its own defaults in its type, so that overriding one key of it
# (``--set grid.k1.num=9``) keeps the others (start, stop) at that axis's defaults.
class KAxis(Axis):
    """k1 or k2: ``linspace(0.05, 2.05, 41)`` by default (k = 0 is an axis, evaluated apart)."""

    start: float = 0.05
    stop: float = 2.05
    num: int = Field(41, ge=0, le=100_000)


class K0Axis(Axis):
    """k0: the single value 0 by default."""

    values: list[float] | None = [0.0]


class ThetaAxis(Axis):
    """Direction search: ``linspace(0, 90, 181)`` degrees by default."""

    start: float = 0.0
    stop: float = 90.0
    num: int = Field(181, ge=0, le=100_000)


class GridConfig(_Section):
    mode: Literal["k1k2", "direction"] = Field(
        "k1k2", description="k1 x k2 grid, or the 1-D direction search k1=cos(theta), "
                            "k2=sin(theta)")
    k1: KAxis = KAxis()
    k2: KAxis = KAxis()
    k0: K0Axis = K0Axis()
    theta_deg: ThetaAxis = ThetaAxis()
    tile_size: int = Field(420, gt=0, description="grid points per Dask task")


class SmoothingConfig(_Section):
    mode: Literal["relative", "absolute"] = "relative"
    bandwidth_fraction: float = Field(0.1, gt=0, le=10,
                                      description="relative: b = fraction * max(T)")
    bandwidth_rule: Literal["fixed", "cv"] = Field(
        "fixed", description="relative mode: 'cv' replaces bandwidth_fraction by the "
                             "least-squares cross-validated one of the full-sample kernel "
                             "hazard at k1 = k2")
    grid_start: Literal["support", "zero"] = Field(
        "support", description="relative mode: the 101-point grid starts at the definition's "
                               "smallest possible T (k1 + k2 for T and T1, 1 for T0, T2, T3), "
                               "where the data start, or at 0")
    boundary: Literal["none", "reflect"] = Field(
        "none", description="kernel boundary correction where the data start (the "
                            "definition's smallest possible T): 'reflect' mirrors the failure "
                            "times about it (the seed's formula as written: 'none')")
    ties: Literal["direction_limit", "data"] = Field(
        "direction_limit",
        description="the search's Dev where T values tie only because k2/k1 is a simple "
                    "ratio (1/2, 1, 2, 3 ...): 'direction_limit' orders them as the directions "
                    "just above do (Dev(theta) is the limit from above, no ray is special); "
                    "'data' groups them (the per-split optima then pile on such rays). The "
                    "axes and the fixed choices (T0, k1 = k2, k1 = 0) always keep the data's "
                    "ties: they are models of their own")
    sensitivity_fractions: list[float] = Field(
        [0.05, 0.1, 0.2], description="relative mode: bandwidth fractions of the sensitivity "
                                      "table of the optimum ([] = none)")
    grid_max_fraction: float = Field(1.0, gt=0, le=10,
                                     description="relative: grid 0..fraction*max(T)")
    bandwidth: float = Field(1.0, gt=0, description="absolute: b in units of T")
    grid_min: float = 0.0
    grid_max: float = Field(11.0, description="absolute: grid end in units of T")

    @model_validator(mode="after")
    def _range(self):
        if self.mode == "absolute" and not self.grid_max > self.grid_min:
            raise ValueError("absolute mode needs grid_max > grid_min")
        if self.mode == "absolute" and self.bandwidth_rule == "cv":
            raise ValueError("bandwidth_rule = 'cv' chooses a fraction of max(T): it needs "
                             "mode = 'relative'")
        if any(not 0 < f <= 10 for f in self.sensitivity_fractions):
            raise ValueError("sensitivity_fractions must lie in (0, 10]")
        return self

    def rule(self) -> GridRule:
        return GridRule(mode=self.mode, bandwidth_fraction=self.bandwidth_fraction,
                        grid_max_fraction=self.grid_max_fraction, bandwidth=self.bandwidth,
                        grid_min=self.grid_min, grid_max=self.grid_max, boundary=self.boundary,
                        ties=self.ties, grid_start=self.grid_start)


class SplitConfig(_Section):
    n_splits: int = Field(5, ge=1, le=10_000, description="R repeated balanced splits")
    sample_one: Literal[1, 2] = Field(1, description="which half is sample 1, the 'standard' "
                                                     "curve")
    age_bands: list[int] = Field([0, 5, 15, 30], min_length=1,
                                 description="left edges of the age bands (age at the first "
                                             "break)")
    unusable: Literal["redraw", "exclude"] = Field(
        "redraw", description="a split with a half without NPOs at risk or closures: redrawn "
                              "(up to max_redraws times, then excluded) or excluded; always "
                              "counted")
    max_redraws: int = Field(20, ge=0, le=1000)
    min_usable: int | None = Field(None, ge=1,
                                   description="fewest usable splits a run needs (default: "
                                               "half of n_splits, at least 1)")
    interval_level: float = Field(0.9, gt=0, lt=1,
                                  description="coverage of the ranges across splits")

    @model_validator(mode="after")
    def _increasing(self):
        if any(b <= a for a, b in zip(self.age_bands, self.age_bands[1:])):
            raise ValueError("age_bands must be strictly increasing")
        if self.min_usable is not None and self.min_usable > self.n_splits:
            raise ValueError(f"min_usable = {self.min_usable} is more than n_splits = "
                             f"{self.n_splits}: no run could have that many usable splits")
        return self

    def needed(self) -> int:
        """The fewest usable splits a run needs (``min_usable``, default half of n_splits)."""
        return self.min_usable or max(1, -(-self.n_splits // 2))


class BootstrapConfig(_Section):
    n_boot: int = Field(200, ge=0, le=100_000)
    chunk_size: int = Field(50, gt=0)
    level: float = Field(0.95, gt=0, lt=1)


class LikelihoodConfig(_Section):
    """The profile likelihood of the direction (riskdask.hazard.likelihood)."""

    df: int = Field(6, ge=1, le=20, description="B-spline degrees of freedom of the baseline "
                                               "log-hazard in T (cubic; df - 4 interior knots)")
    n_theta: int = Field(181, ge=3, le=100_000,
                         description="profile grid: linspace(0, 90, n_theta) degrees, axes "
                                     "included")
    tile_size: int = Field(46, gt=0, description="directions per Dask task")
    holdout: bool = Field(True, description="temporal holdout of the directions (fit on years "
                                            "<= t, predict t + 1)")
    holdout_min_train_years: int = Field(
        5, ge=1, le=100, description="an origin t is scored only when the training years "
                                     "first_closure_year..t number at least this many (with "
                                     "fewer the direction is not estimable: N1 barely varies "
                                     "in the first years)")
    reliability_bins: int = Field(10, ge=2, le=100)


class PredictionConfig(_Section):
    """Next-year closure probabilities: from the person-year model at this direction."""

    direction: Literal["likelihood", "dev", "T0"] | list[float] = Field(
        "likelihood", description="'likelihood' (the profile maximum), 'dev' (the Dev "
                                  "optimum), 'T0' (k2 = 0) or [k1, k2]; definitions T and T1 "
                                  "only (T0, T2, T3 predict at their own fixed weights)")

    @model_validator(mode="after")
    def _pair(self):
        d = self.direction
        if isinstance(d, list):
            if len(d) != 2 or min(d) < 0 or max(d) <= 0:
                raise ValueError("prediction.direction = [k1, k2] needs two values >= 0, not "
                                 "both 0")
        return self


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(2018, ge=0)
    period: PeriodConfig = PeriodConfig()
    data: DataConfig = DataConfig()
    definition: Literal["T", "T0", "T1", "T2", "T3"] = Field(
        "T", description="T = k1*N0 + k2*N1 (seed eq. 5); T0..T3 of Appendix A")
    grid: GridConfig = GridConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    split: SplitConfig = SplitConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    likelihood: LikelihoodConfig = LikelihoodConfig()
    prediction: PredictionConfig = PredictionConfig()
    top_n_report: int = Field(20, ge=0, description="NPOs shown in the report's ranked table")
    covariates: list[Literal["field", "function", "age"]] = Field(
        [], description="optional: also fit lifelines' CoxPHFitter at the optimum and report "
                        "its smoothed baseline hazard")
