"""The credit job's configuration (pydantic models; their defaults are the job's defaults).

``configs/credit.toml`` only overrides what a size needs. Imported by the job's pipeline and
outputs, never by a kernel module (pydantic stays off the workers).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PortfolioConfig", "MatrixConfig", "CurvesConfig", "CorrelationConfig",
           "SimulationConfig", "ImportanceConfig", "OutputConfig", "StressConfig", "Config"]


class PortfolioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="positions CSV/Parquet; omit for the synthetic "
                                               "central-bank-style portfolio")
    cashflows: str | None = Field(None, description="explicit cash flows CSV (position_id, "
                                                    "time, amount) instead of bond terms")
    synthetic_seed: int = Field(2009, ge=0)
    synthetic_obligors: int = Field(200, ge=2, le=100_000)
    allow_short: bool = Field(False, description="accept short positions: a negative nominal "
                              "and negative cash flows (of the nominal's sign); the default "
                              "of a short position is a gain")


class MatrixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="migration matrix CSV; omit for the embedded "
                                               "CreditMetrics (1997) table")
    units: Literal["percent", "fraction"] = "percent"
    normalize: bool = Field(True, description="rescale rows that do not sum to 1 (recorded); "
                            "the published CreditMetrics table is rounded (rows B and CCC sum "
                            "to 99.99%/100.01%)")
    tolerance: float = Field(1e-6, gt=0, le=0.01)
    normalize_tolerance: float = Field(0.005, gt=0, le=0.05,
                                       description="normalize rescales only rows off 1 by at "
                                                   "most this (rounding); a row further off, "
                                                   "or all zeros, is an error naming the row")


class CurvesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="zero curves CSV; omit for the embedded ones")


class CorrelationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["uniform", "factor", "matrix"] = "factor"
    rho: float = Field(0.3, ge=0, lt=1, description="uniform asset correlation")
    loadings: str | None = Field(None, description="factor: loadings CSV; omit to build them "
                                                   "from sector and country")
    factor_correlation: str | None = Field(None, description="factor: K x K factor correlation "
                                                             "CSV (default: independent)")
    global_loading: float = Field(0.4, ge=0, lt=1)
    sector_loading: float = Field(0.3, ge=0, lt=1)
    country_loading: float = Field(0.3, ge=0, lt=1)
    matrix: str | None = Field(None, description="matrix: full n x n correlation CSV")
    tile_obligors: int = Field(128, ge=8, le=4096, description="matrix: obligors per side of "
                                                                "an analytic UL pair tile")


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_scenarios: int = Field(200_000, ge=100, le=10**10)
    chunk_size: int = Field(25_000, ge=100, le=10**8)
    confidence: list[float] = Field(default_factory=lambda: [0.99, 0.999, 0.9999])
    contribution_rows: int = Field(10_000, ge=0, le=10**7,
                                   description="tail scenarios that keep per-obligor states "
                                               "(ES contributions; caps worker memory)")
    histogram_bins: int = Field(200, ge=10, le=100_000)
    target_relative_se: float | None = Field(
        None, gt=0, lt=1, description="adaptive stopping: run chunks in waves until the "
        "standard error of ES at the highest confidence level is at most this fraction of ES; "
        "n_scenarios is the cap")
    wave_chunks: int = Field(4, ge=1, le=10_000, description="adaptive stopping: chunks per "
                             "wave (with the plan, fixed by the config: the same stop on any "
                             "number of workers)")
    tail_fits: bool = Field(True, description="seed Step 7: Vasicek and peaks-over-threshold "
                            "GPD fits of the tail beside the empirical VaR / ES")
    keep_scenarios: bool = Field(True, description="keep every scenario's portfolio loss "
                                 "(and IS weight) in the run directory for `riskdask whatif`:"
                                 " 8 bytes a scenario (16 with importance sampling); not kept "
                                 "above 25,000,000 scenarios")

    @field_validator("confidence")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one confidence level")
        for c in v:
            if not 0.5 <= c < 1:
                raise ValueError(f"confidence level {c} outside [0.5, 1)")
        if len(set(v)) != len(v):
            raise ValueError("a confidence level is listed twice")
        return sorted(v)


class ImportanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    target_confidence: float = Field(0.999, ge=0.5, lt=1,
                                     description="shift size Phi^-1(target) unless shift is set")
    shift: float | None = Field(None, ge=0, le=10, description="length of the mean shift")
    compare_plain: bool = Field(True, description="also run plain sampling (same scenario "
                                                  "count) and report the variance reduction")


class StressConfig(BaseModel):
    """One factor stress, computed from the run's own scenarios (re-weighted chunks)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=80)
    factor: str = Field("global", description="a factor name: 'global', 'sector:<s>', "
                        "'country:<c>', a loadings-file column, or 'uniform'")
    shift: float | None = Field(None, ge=-6, le=6, description="shift the factor's mean by "
                                "this many sigma (negative: a fall)")
    worst: float | None = Field(None, gt=0, lt=1, description="condition on the worst "
                                "fraction q of the factor (the side that raises losses)")

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.shift is None) == (self.worst is None):
            raise ValueError(f"stress {self.name!r}: give exactly one of shift (sigma) or "
                             "worst (a fraction)")
        return self


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_contributors: int = Field(20, ge=1, le=10_000)
    tail_rows: int = Field(1000, ge=1, le=10**6, description="rows of the tail-scenario table")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(2009, ge=0)
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig)
    matrix: MatrixConfig = Field(default_factory=MatrixConfig)
    curves: CurvesConfig = Field(default_factory=CurvesConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    importance_sampling: ImportanceConfig = Field(default_factory=ImportanceConfig)
    outputs: OutputConfig = Field(default_factory=OutputConfig)
    stress: list[StressConfig] = Field(default_factory=list, description="factor stresses "
                                       "([[stress]] tables), from the run's own scenarios")
