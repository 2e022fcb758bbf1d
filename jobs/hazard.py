"""hazard: financial vulnerability of nonprofits (seed 003_ae2b3031728223ec.txt, spec HAZARD.md).

config -> NPO panel (synthetic or file; panel rules counted) -> usable balanced splits (redrawn
or excluded, counted) -> grid tiles of (k1, k2, k0) plus the fixed choices (T0 = N0, k1 = k2,
k1 = 0) on the cluster (Dev per split) -> the interior optimum with its uncertainty and the
axes apart (or the fixed definition), bandwidth sensitivity -> curves, bootstrap band,
next-year closure probabilities (flagged past the data).
The maths is in :mod:`riskdask.hazard`; this module only wires it together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from riskdask.engine import map_chunks, plan_chunks, stream_seed
from riskdask.errors import ConfigError, InputError
from riskdask.protocol import Job, Outputs
from riskdask.hazard import analysis, figures, reporting, uncertainty
from riskdask.hazard.bandwidth import bandwidth_sensitivity, cv_bandwidth
from riskdask.hazard.covariates import cox_baseline, design_matrix
from riskdask.hazard.estimators import GridRule, smooth_hazard
from riskdask.hazard.gridsearch import (GridPoints, TileInput, bootstrap_curves, concat_points,
                                        coefficient_matrix, compress, curves_for, direction_points,
                                        evaluate_tile, make_grid_points, sample_weights,
                                        time_at_risk_range)
from riskdask.hazard.panel import (RULE_SENTENCES, NPOPanel, PanelRules, Period, build_panel,
                                   exclusion_sentence, read_panel_file)
from riskdask.hazard.predict import next_year_table
from riskdask.hazard.split import (age_band, balance_table, max_stratum_gap, stratum_codes,
                                   usable_splits)
from riskdask.hazard.synthetic import generate_panel
from riskdask.hazard.timeatrisk import SCALABLE_DEFINITIONS, coefficients

NAME = "hazard"
DESCRIPTION = "nonprofit hazard analysis: generalized time-at-risk, two-sample Dev, k1/k2 grid search"
TITLE = "riskdask · hazard — financial vulnerability of nonprofits"
#: SeedSequence(seed) itself draws the synthetic panel (as in every earlier release); splits
#: and bootstrap resamples have streams of their own (riskdask.engine.stream_seed).
PRIMARY_STREAM = "synthetic"


# -- configuration ---------------------------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodConfig(_Section):
    start: int = Field(1997, ge=1900, le=2100)
    end: int = Field(2007, ge=1900, le=2100)
    first_closure_year: int = Field(1998, ge=1900, le=2100,
                                    description="closures before this year are not counted (seed: 1998)")

    @model_validator(mode="after")
    def _order(self):
        if not self.start <= self.first_closure_year <= self.end:
            raise ValueError("need start <= first_closure_year <= end")
        return self


class SyntheticConfig(_Section):
    n_npos: int = Field(2660, gt=1, le=5_000_000)
    p_initial_grant: float = Field(0.85, gt=0, le=1)
    p_keep: float = Field(0.8, ge=0, le=1)
    p_regain: float = Field(0.45, ge=0, le=1)
    peak_hazard: float = Field(0.07, gt=0, lt=1)
    peak_time: float = Field(5.0, gt=0)
    true_k1: float = Field(1.0, ge=0)
    true_k2: float = Field(1.0, ge=0)


class RulesConfig(_Section):
    """How real panel shapes are treated (riskdask.hazard.panel.PanelRules); each is counted."""

    rows_outside_period: Literal["ignore", "error"] = Field(
        "ignore", description="rows before period.start or after period.end: left out and "
                              "counted, or an error")
    closure_after_period: Literal["censor", "error"] = Field(
        "censor", description="closed_year > period.end: censored at the end of the period "
                              "(active), or an error")
    missing_closure_year_row: Literal["no_grant", "error"] = Field(
        "no_grant", description="no row for the closure year: read as a no-grant year, or an error")

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
        if {"start", "stop", "num"} & self.model_fields_set and "values" not in self.model_fields_set:
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
        "k1k2", description="k1 x k2 grid, or the 1-D direction search k1=cos(theta), k2=sin(theta)")
    k1: KAxis = KAxis()
    k2: KAxis = KAxis()
    k0: K0Axis = K0Axis()
    theta_deg: ThetaAxis = ThetaAxis()
    tile_size: int = Field(420, gt=0, description="grid points per Dask task")


class SmoothingConfig(_Section):
    mode: Literal["relative", "absolute"] = "relative"
    bandwidth_fraction: float = Field(0.1, gt=0, le=10, description="relative: b = fraction * max(T)")
    bandwidth_rule: Literal["fixed", "cv"] = Field(
        "fixed", description="relative mode: 'cv' replaces bandwidth_fraction by the least-squares "
                             "cross-validated one of the full-sample kernel hazard at k1 = k2")
    boundary: Literal["none", "reflect"] = Field(
        "none", description="kernel boundary correction at T = 0: 'reflect' mirrors the failure "
                            "times about 0 (the seed's formula as written: 'none')")
    sensitivity_fractions: list[float] = Field(
        [0.05, 0.1, 0.2], description="relative mode: bandwidth fractions of the sensitivity "
                                      "table of the optimum ([] = none)")
    grid_max_fraction: float = Field(1.0, gt=0, le=10, description="relative: grid 0..fraction*max(T)")
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
                        grid_min=self.grid_min, grid_max=self.grid_max, boundary=self.boundary)


class SplitConfig(_Section):
    n_splits: int = Field(5, ge=1, le=10_000, description="R repeated balanced splits")
    sample_one: Literal[1, 2] = Field(1, description="which half is sample 1, the 'standard' curve")
    age_bands: list[int] = Field([0, 5, 15, 30], min_length=1,
                                 description="left edges of the age bands (age at the first break)")
    unusable: Literal["redraw", "exclude"] = Field(
        "redraw", description="a split with a half without NPOs at risk or closures: redrawn (up "
                              "to max_redraws times, then excluded) or excluded; always counted")
    max_redraws: int = Field(20, ge=0, le=1000)
    min_usable: int | None = Field(None, ge=1, description="fewest usable splits a run needs "
                                                           "(default: half of n_splits, at least 1)")
    interval_level: float = Field(0.9, gt=0, lt=1, description="coverage of the ranges across splits")

    @model_validator(mode="after")
    def _increasing(self):
        if any(b <= a for a, b in zip(self.age_bands, self.age_bands[1:])):
            raise ValueError("age_bands must be strictly increasing")
        return self


class BootstrapConfig(_Section):
    n_boot: int = Field(200, ge=0, le=100_000)
    chunk_size: int = Field(50, gt=0)
    level: float = Field(0.95, gt=0, lt=1)


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
    top_n_report: int = Field(20, ge=0, description="NPOs shown in the report's ranked table")
    covariates: list[Literal["field", "function", "age"]] = Field(
        [], description="optional: also fit lifelines' CoxPHFitter at the optimum and report "
                        "its smoothed baseline hazard")


# -- inputs ----------------------------------------------------------------------------------
@dataclass
class HazardInputs:
    panel: NPOPanel
    strata: np.ndarray
    labels: dict
    points: GridPoints
    rule: GridRule
    source: str = "<panel>"


#: Which coefficients each definition uses (seed eqs. 5, 9-14).
USES = {"T": ("k1", "k2"), "T0": (), "T1": ("k1", "k2", "k0"), "T2": ("k0",), "T3": ()}


def _grid_points(cfg: Config) -> GridPoints:
    k0 = cfg.grid.k0.array()
    if k0.size == 0:
        raise ConfigError("empty grid: no k0 values", key="grid.k0")
    uses = USES[cfg.definition]
    if "k0" not in uses:
        k0 = k0[:1]
    if "k1" not in uses:  # T0, T2, T3: nothing to search over in (k1, k2)
        return make_grid_points([1.0], [1.0], k0)
    if cfg.grid.mode == "direction":
        if cfg.smoothing.mode != "relative":
            raise ConfigError("the direction search needs smoothing.mode = 'relative' (only the "
                              "direction of (k1, k2) matters there)", key="grid.mode")
        theta = cfg.grid.theta_deg.array()
        if theta.size == 0:
            raise ConfigError("empty grid: no theta values", key="grid.theta_deg")
        return direction_points(np.radians(theta), k0)
    for name in ("k1", "k2"):
        if getattr(cfg.grid, name).array().size == 0:
            raise ConfigError(f"empty grid: no {name} values", key=f"grid.{name}")
    return make_grid_points(cfg.grid.k1.array(), cfg.grid.k2.array(), k0)


def _check_time_at_risk(cfg: Config, panel: NPOPanel, points: GridPoints) -> None:
    """Every grid point must give T >= 0 for every NPO and a positive max T (the scale)."""
    tmin, tmax, worst = time_at_risk_range(panel.features.matrix(), cfg.definition, points)
    key = "grid.theta_deg" if cfg.grid.mode == "direction" else "grid.k1"
    bad = np.flatnonzero(tmin < 0)
    if bad.size:
        i = int(bad[0])
        n0, n1, x, z = worst[i]
        raise ConfigError(
            f"k1={points.k1[i]:g}, k2={points.k2[i]:g}, k0={points.k0[i]:g} make the time-at-risk "
            f"negative ({tmin[i]:g} for an NPO with N0={n0:g}, N1={n1:g}, X={x:g}, Z={z:g}); "
            f"{bad.size} of {points.size} grid points do", key=key)
    zero = np.flatnonzero(tmax <= 0)
    if zero.size:
        i = int(zero[0])
        raise ConfigError(f"k1={points.k1[i]:g}, k2={points.k2[i]:g}, k0={points.k0[i]:g} make the "
                          f"time-at-risk 0 for every NPO", key=key)


def load_inputs(cfg: Config, record=None) -> HazardInputs:
    """Load (or generate) the panel, validate it and the grid; record inputs and exclusions."""
    period = Period(cfg.period.start, cfg.period.end, cfg.period.first_closure_year)
    if cfg.data.path is None:
        s = cfg.data.synthetic
        frame = generate_panel(s.n_npos, period, stream_seed(cfg.seed, "synthetic", primary=PRIMARY_STREAM),
                               p_initial_grant=s.p_initial_grant,
                               p_keep=s.p_keep, p_regain=s.p_regain, peak_hazard=s.peak_hazard,
                               peak_time=s.peak_time, true_k1=s.true_k1, true_k2=s.true_k2)
        source = "synthetic panel"
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
        desc = (f"synthetic: {s.n_npos} at-risk NPOs, {period.start}-{period.end}, inverted-U hazard "
                f"peaking at T={s.peak_time:g} (T = {s.true_k1:g}*N0 + {s.true_k2:g}*N1), seed {cfg.seed}")
        path = None
    else:
        path = Path(cfg.data.path)
        frame = read_panel_file(path)
        source, digest, desc = str(path), None, "NPO-year funding panel"
    panel = build_panel(frame, period, source=source, rules=cfg.data.rules.rules())
    if record is not None:
        record.add_input("npo_panel", path, rows=panel.n_rows, fingerprint=digest,
                         description=desc)
        for reason, count in panel.exclusions.items():
            record.exclude(source, exclusion_sentence(reason, period), count,
                           rows=panel.excluded_ids[reason])
        # rows outside the period are left out of the analysis: panel rows, counted as such
        record.exclude(source, RULE_SENTENCES["rows_outside_period"] + " (data.rules.rows_outside_period)",
                       panel.rule_counts.get("rows_outside_period", 0),
                       rows=panel.rule_ids.get("rows_outside_period"))
    points = _grid_points(cfg)
    _check_time_at_risk(cfg, panel, points)
    npos = panel.npos
    band = age_band((npos.first_break_year - npos.founded_year).to_numpy(), cfg.split.age_bands)
    labels = {"field": npos.field.to_numpy(), "function": npos.function.to_numpy(), "age_band": band}
    strata = stratum_codes(labels["field"], labels["function"], band)
    return HazardInputs(panel=panel, strata=strata, labels=labels, points=points,
                        rule=cfg.smoothing.rule(), source=source)


# -- run -------------------------------------------------------------------------------------
def _searches_direction(cfg: Config) -> bool:
    """T and T1 search the direction of (k1, k2); T0, T2, T3 do not (T2 at most over k0)."""
    return "k1" in USES[cfg.definition]


def _cv_fraction(cfg: Config, table, rule: GridRule) -> dict:
    """LSCV bandwidth fraction of the full-sample hazard at the seed's k1 = k2 (before the search)."""
    coef = coefficients(cfg.definition, 1.0, 1.0, float(cfg.grid.k0.array()[0]))
    cur = curves_for(table, table.counts(np.ones((table.inverse.size, 1))), coef, rule)
    times, inc = cur.failures(0)
    tau = float(rule.grid_and_bandwidth(cur.scale)[0][-1])
    cv = cv_bandwidth(times, inc, cur.scale, tau, rule.boundary)
    cv["at"] = (f"k1 = k2 = 1 ({cfg.definition})" if _searches_direction(cfg) else
                f"{cfg.definition}, k0 = {float(cfg.grid.k0.array()[0]):g}")
    return cv


def compute(cfg: Config, inp: HazardInputs, ctx) -> Outputs:
    """Splits, the grid search on the cluster, the optimum with its uncertainty, curves, bands
    and predictions."""
    out = Outputs()
    panel, points, rule = inp.panel, inp.points, inp.rule
    event = panel.event
    level = cfg.split.interval_level

    with ctx.stage("split"):
        need = cfg.split.min_usable or max(1, -(-cfg.split.n_splits // 2))
        us = usable_splits(inp.strata, event, ctx.streams.seed("split"), cfg.split.n_splits,
                           policy=cfg.split.unusable, max_redraws=cfg.split.max_redraws,
                           min_usable=need, source=inp.source)
        splits = us.splits
        ctx.record.exclude("splits", "balanced splits left out: a half had no NPO at risk or no "
                                     "closure (split.unusable)", us.n_excluded,
                           rows=sorted(set(range(us.n_requested)) - set(us.index.tolist())))
        discarded = us.counts[~us.counts.usable & us.counts.split.isin(us.index)]
        ctx.record.exclude("splits", "unusable split draws discarded and redrawn (a half had no NPO "
                                     "at risk or no closure; split.unusable = 'redraw')",
                           len(discarded), rows=sorted(set(discarded.split.tolist())))
        table = compress(panel.features.matrix(), event)
        at_risk_w, death_w = sample_weights(table, splits, cfg.split.sample_one)
        balance = balance_table(splits[0], inp.labels, event)
        stratum_gap = max(max_stratum_gap(inp.strata, s) for s in splits)

    cv = None
    if cfg.smoothing.bandwidth_rule == "cv" and cfg.smoothing.mode == "relative":
        with ctx.stage("cv_bandwidth"):
            cv = _cv_fraction(cfg, table, rule)
            rule = replace(rule, bandwidth_fraction=cv["fraction"])

    searched = _searches_direction(cfg)
    ref = uncertainty.reference_points(np.unique(points.k0)) if searched else None
    with ctx.stage("grid_search"):
        # the fixed choices (T0 = N0, k1 = k2, k1 = 0) ride along as extra points
        all_points = points if ref is None else concat_points(points, ref)
        shared = TileInput(features=table.features, at_risk=at_risk_w, deaths=death_w,
                           coefs=coefficient_matrix(cfg.definition, all_points), rule=rule)
        tiles = plan_chunks(all_points.size, cfg.grid.tile_size)  # no randomness in a tile
        dev_all = np.concatenate(map_chunks(evaluate_tile, tiles, client=ctx.client, shared=shared,
                                            label="hazard-grid"), axis=0)
        dev, ref_dev = dev_all[:points.size], dev_all[points.size:]

    surface = analysis.surface_frame(points, dev)
    rep = fixed = sens = None
    with ctx.stage("optimum"):
        if searched:
            rep = uncertainty.optimum_report(points, dev, ref, ref_dev, level)
            if rep.interior is None:
                raise InputError(f"{rep.statement} ({us.describe()})", file=inp.source)
            best = rep.interior
            per_split = rep.per_split
        else:
            best = analysis.optimum(surface)
            per_split = analysis.per_split_optima(points, dev)
            if points.size == 1:
                fixed = uncertainty.fixed_report(
                    cfg.definition, coefficients(cfg.definition, best.k1, best.k2, best.k0), dev[0])
    coef = coefficients(cfg.definition, best.k1, best.k2, best.k0)
    if rep is not None and cfg.smoothing.mode == "relative" and cfg.smoothing.sensitivity_fractions:
        with ctx.stage("bandwidth_sensitivity"):
            th = uncertainty.sensitivity_directions(points, [best.theta_deg, *per_split.theta_deg])
            dpts = direction_points(np.radians(th), [best.k0])
            sens = bandwidth_sensitivity(table.features, at_risk_w, death_w,
                                         coefficient_matrix(cfg.definition, dpts), th, rule,
                                         cfg.smoothing.sensitivity_fractions, level)

    with ctx.stage("curves"):
        first, second = (1, 2) if cfg.split.sample_one == 1 else (2, 1)
        cols = np.column_stack([splits[0] == first, splits[0] == second, np.ones_like(event)])
        cur = curves_for(table, table.counts(cols.astype(float)), coef, rule)
        h = cur.hazard
        band_lo = band_hi = None
        if cfg.bootstrap.n_boot > 0:
            boot_chunks = plan_chunks(cfg.bootstrap.n_boot, cfg.bootstrap.chunk_size,
                                      ctx.streams.seed("bootstrap"))
            boot = np.concatenate(map_chunks(bootstrap_curves, boot_chunks, client=ctx.client,
                                             shared={"table": table, "coef": coef, "rule": rule,
                                                     "scale": cur.scale},
                                             label="hazard-bootstrap"), axis=0)
            band_lo, band_hi = analysis.bootstrap_band(boot, cfg.bootstrap.level)
        between = analysis.between_fraction(h[:, 2], h[:, 0], h[:, 1])
        cox = None
        if cfg.covariates:
            t_best = panel.features.matrix() @ coef
            c_times, c_inc, c_params, c_index = cox_baseline(
                t_best, event, design_matrix(panel.npos, cfg.covariates))
            cox = {"hazard": smooth_hazard(cur.grid, c_times, c_inc, cur.bandwidth, rule.boundary),
                   "params": c_params, "concordance": c_index}

    with ctx.stage("predict"):
        f_times, f_inc = cur.failures(2)
        ranked, pinfo = next_year_table(panel.npos, panel.grants, panel.features.end_index,
                                        panel.features.matrix(), event, coef, f_times, f_inc,
                                        cur.bandwidth, rule.boundary)

    with ctx.stage("tables"):
        curves = pd.DataFrame({"time_at_risk": cur.grid, "hazard_sample1": h[:, 0],
                               "hazard_sample2": h[:, 1], "hazard_full": h[:, 2]})
        if band_lo is not None:
            curves["full_lower"], curves["full_upper"] = band_lo, band_hi
        if cox is not None:
            curves["hazard_cox_baseline"] = cox["hazard"]
            out.table("cox_coefficients", cox["params"])
        breslow = pd.DataFrame({"time_at_risk": cur.times, "dH_sample1": cur.increments[:, 0],
                                "dH_sample2": cur.increments[:, 1],
                                "dH_full": cur.increments[:, 2]})
        breslow["H_full"] = np.cumsum(breslow.dH_full)
        out.table("deviation_surface", surface)
        out.table("optimum_per_split", per_split)
        out.table("balance", balance)
        out.table("hazard_curves", curves)
        out.table("breslow_increments", breslow)
        out.table("closure_next_year", ranked)
        out.table("npo_time_at_risk", _npo_table(panel, splits[0], coef))
        out.table("split_draws", us.counts)
        if rep is not None:
            out.table("dev_by_direction", rep.curve)
            out.table("optimum_vs_fixed_choices", rep.comparison)
        if sens is not None:
            out.table("bandwidth_sensitivity", sens)
        if cv is not None:
            out.table("cv_bandwidth_scores", cv["candidates"])
        _figures(out, cfg, surface, best, per_split, curves, rep, cv)
        out.section("Method", _method_html(cfg, rule, best, us.n_usable))
        if rep is not None:
            out.section("The optimum and its uncertainty", reporting.optimum_html(rep))
        if fixed is not None:
            out.section("Fixed definition", reporting.fixed_html(fixed))
        out.section("Splits and panel rules", reporting.splits_html(us)
                    + reporting.panel_rules_html(panel.rule_counts, RULE_SENTENCES))
        no_sens = ("<p>No bandwidth sensitivity table: it varies the relative bandwidth fraction, "
                   "and this run uses absolute units.</p>"
                   if rep is not None and cfg.smoothing.mode == "absolute" else "")
        out.section("Smoothing", reporting.smoothing_html(cv, rule.boundary)
                    + (reporting.sensitivity_html(sens) if sens is not None else no_sens))
        if cfg.top_n_report:
            out.section("Highest probability of closure within the next year",
                        reporting.prediction_html(pinfo)
                        + ranked.head(cfg.top_n_report).to_html(index=False, float_format="%.4f"))

    summary = {
        "definition": cfg.definition,
        "coefficients_searched": list(USES[cfg.definition]) if points.size > 1 else [],
        "grid_rule": rule.describe(),
        "scale_invariant": bool(cfg.smoothing.mode == "relative" and cfg.definition in SCALABLE_DEFINITIONS),
        "n_npos_at_risk": int(len(panel.npos)), "n_closed": int(event.sum()),
        "excluded_npos": dict(panel.exclusions),
        "panel_rules": dict(panel.rule_counts),
        "n_grid_points": int(points.size), "n_tiles": len(tiles),
        "n_splits": int(us.n_usable), "n_splits_requested": int(us.n_requested),
        "splits": {"usable": us.n_usable, "redrawn": us.n_redrawn, "excluded": us.n_excluded,
                   "unusable_draws": dict(us.reasons), "min_usable": int(need)},
        "sample_sizes": [int((splits[0] == first).sum()), int((splits[0] == second).sum())],
        "max_stratum_count_difference": int(stratum_gap),
        "full_curve_between_halves_fraction": between,
        "bandwidth": float(cur.bandwidth), "max_time_at_risk": float(cur.scale),
        "bandwidth_rule": cfg.smoothing.bandwidth_rule, "boundary": rule.boundary,
        "bootstrap": {"n_boot": cfg.bootstrap.n_boot, "level": cfg.bootstrap.level},
        "cox": None if cox is None else {
            "covariates": list(cfg.covariates), "concordance": cox["concordance"],
            "coefficients": cox["params"].set_index("covariate").coef.to_dict()},
        "prediction": pinfo,
        "n_active_ranked": int(len(ranked)),
        "top_closure_risk": ranked.head(5)[["npo_id", "p_close_next_year", "beyond_data"]].to_dict("records"),
    }
    if fixed is not None:
        summary["fixed"] = fixed
    elif rep is not None:
        summary["optimum"] = reporting.optimum_summary(rep)
    else:  # T2: a search over k0 only
        summary["optimum"] = {"searched": True, "k0": best.k0, "dev_mean": best.dev,
                              "k0_per_split": per_split.k0.tolist()}
    if cv is not None:
        summary["cv_bandwidth"] = {k: cv[k] for k in ("fraction", "bandwidth", "at_edge", "at")}
    if sens is not None:
        summary["bandwidth_sensitivity"] = sens.to_dict("records")
    out.summary = reporting.plain(summary)
    return out


def _npo_table(panel: NPOPanel, sample: np.ndarray, coef: np.ndarray) -> pd.DataFrame:
    out = panel.npos.copy()
    out["sample"] = sample
    out["time_at_risk"] = panel.features.matrix() @ coef
    return out


def _figures(out: Outputs, cfg: Config, surface, best, per_split, curves, rep, cv) -> None:
    name = {"T": "T = k1 N0 + k2 N1"}.get(cfg.definition, cfg.definition)
    where = ("at the interior optimum" if rep is not None else
             "(fixed definition)" if surface.shape[0] == 1 else "at the optimum")
    out.figure("fig1_hazard_vs_time_at_risk", figures.hazard_curves_figure(
        curves, f"{name} {where} k1={best.k1:.3g}, k2={best.k2:.3g}, k0={best.k0:.3g}"),
        caption="Seed Figure 1: smoothed hazard rate vs time-at-risk for the two samples "
                "(split 0), the full sample and its bootstrap band")
    if cfg.grid.mode == "k1k2" and np.unique(surface.k1).size > 1 and np.unique(surface.k2).size > 1:
        out.figure("fig2_dev_vs_k1", figures.dev_vs_k1_figure(surface, best.k0),
                   caption="Seed Figure 2: Dev vs k1 for several constant k2")
        out.figure("dev_surface_heatmap", figures.surface_heatmap(
            surface, best.k0, best.ratio_k2_k1, per_split.ratio_k2_k1.to_numpy()),
            caption="Dev over (k1, k2): in relative mode constant along rays k2/k1 = const; "
                    "red: the interior optimum ray; thin lines: each split's interior optimum")
    if rep is not None:
        out.figure("dev_vs_direction", figures.dev_theta_band_figure(rep.curve, rep.level),
                   caption=f"Dev(theta), theta = atan2(k2, k1): mean over splits with the "
                           f"{100 * rep.level:.0f}% range; the axes (theta = 0, 90) are separate "
                           f"models, shown as points")
        out.figure("optimum_theta_per_split", figures.theta_histogram_figure(
            rep.per_split, {"level": rep.theta_interval.level, "lo": rep.theta_interval.lo,
                            "hi": rep.theta_interval.hi}, rep.interior.theta_deg),
            caption="Interior optimum direction of every split, with the range across splits")
    if cv is not None:
        out.figure("cv_bandwidth", figures.cv_bandwidth_figure(cv["candidates"], cv["fraction"]),
                   caption="Least-squares cross-validation score of the kernel hazard bandwidth")
    if np.unique(surface.k0).size > 1:
        out.figure("dev_vs_k0", figures.dev_vs_k0_figure(surface),
                   caption="Smallest Dev over (k1, k2) at each k0 (Appendix A, T1)")


def _method_html(cfg: Config, rule: GridRule, best, n_splits: int) -> str:
    formula = {"T": "T = k1·N0 + k2·N1 (seed eq. 5)", "T0": "T0 = N0 (Appendix A, eq. 9)",
               "T1": "T1 = k1·N0 + k2·Y, Y = N1 + (1+k0)·N2 + (1+2k0)·N3 + … (eqs. 10, 12)",
               "T2": "T2 = Y (eq. 13)", "T3": "T3 = X (eq. 14)"}[cfg.definition]
    invariant = (cfg.smoothing.mode == "relative" and cfg.definition in SCALABLE_DEFINITIONS)
    return (
        f"<p>Time-at-risk: <b>{formula}</b>. N0 counts the years from the first no-grant year after "
        f"a grant year <i>to and including</i> the closure year (or {cfg.period.end}); N_j is the "
        f"number of no-grant spells of at least j years in that window, X the no-grant years.</p>"
        f"<p>Baseline hazard: Breslow/Nelson–Aalen increments d/n at the distinct failure times "
        f"(T rounded to 9 decimals), smoothed with the Gaussian kernel h(t) = (1/b) Σ K((t−t_i)/b) ΔH(t_i) "
        f"(seed eq. 4). Grid and bandwidth: <b>{rule.describe()}</b>. "
        + ("In this mode Dev(c·k1, c·k2) = Dev(k1, k2): only the direction k2/k1 matters and the "
           "minimum is a ray, reported as k2/k1 and its angle. " if invariant else
           "In this mode the scale of the coefficients matters. ")
        + f"Dev = sqrt(S/101)/V with V from sample {cfg.split.sample_one} (the standard curve), "
          f"averaged over {n_splits} balanced splits (strata: field × function × age band "
          f"{cfg.split.age_bands}).</p>"
        f"<p>Next-year closure probability: 1 − exp(−(H(T_next) − H(T_now))) with H the integral of "
        f"the full-sample smoothed hazard at the chosen coefficients (k1={best.k1:.4g}, "
        f"k2={best.k2:.4g}, k0={best.k0:.4g}); past the last observed failure time the last "
        f"smoothed hazard is carried forward (rows flagged beyond_data). T_next is the "
        f"time-at-risk after one more year without a grant (ranking) or with one.</p>")


def headline(summary: dict) -> list[tuple[str, object]]:
    rows = [("definition", summary["definition"]), ("grid rule", summary["grid_rule"]),
            ("NPOs at risk / closed", f"{summary['n_npos_at_risk']} / {summary['n_closed']}"),
            ("grid points x splits", f"{summary['n_grid_points']} x {summary['n_splits']}"
                                     f" (of {summary['n_splits_requested']} requested)")]
    if "fixed" in summary:
        f = summary["fixed"]
        rows += [("coefficients", "fixed: " + " + ".join(f"{v:g}*{k}" for k, v in f["weights"].items() if v)
                  + " (nothing searched)"),
                 ("Dev (mean over splits)", "undefined" if f["dev_mean"] is None else f"{f['dev_mean']:.3g}")]
    elif "interior" in summary["optimum"]:
        o = summary["optimum"]
        ax = o["axes"].get("k2 = 0 (theta = 0)")
        rows += [("optimum direction", o["headline"]),
                 ("Dev at the interior optimum", f"{o['interior']['dev_mean']:.3g} " + (
                     "(one split: no spread)" if o["interior"]["dev_sd"] is None else
                     f"(sd over splits {o['interior']['dev_sd']:.2g})")),
                 ("Dev on the axis k2 = 0 (T0)", f"{ax['dev_mean']:.3g}" if ax else "not evaluated"),
                 ("optimum identified", "yes" if o["identified"] else "no")]
    elif "k0" in summary["optimum"]:
        o = summary["optimum"]
        rows += [("optimum k0", f"{o['k0']:g}"), ("Dev at optimum", f"{o['dev_mean']:.3g}")]
    else:
        rows += [("optimum", summary["optimum"]["statement"])]
    p = summary["prediction"]
    rows += [("full curve between halves", f"{summary['full_curve_between_halves_fraction']:.2f}"),
             ("active NPOs beyond the data", f"{p['n_beyond_data']} of {p['n_active']}")]
    return rows


JOB = Job(name=NAME, description=DESCRIPTION, title=TITLE, config=Config, load=load_inputs,
          compute=compute, headline=headline, primary_stream=PRIMARY_STREAM)
