"""The hazard job's run: inputs (``load_inputs``) and the computation (``compute``).

config -> NPO panel (synthetic or file; panel rules counted) -> usable balanced splits
(redrawn or excluded, counted) -> grid tiles of (k1, k2, k0) plus the fixed choices (T0 = N0,
k1 = k2, k1 = 0) on the cluster (Dev per split) -> the interior optimum with its uncertainty
and the axes apart (or the fixed definition), bandwidth sensitivity -> curves, bootstrap
band, next-year closure probabilities (flagged past the data).

Everything :mod:`riskdask.hazard.outputs` reports is in the frozen :class:`HazardResult`;
nothing here builds a presentation table or a figure. Client side only (imports the config
models, hence pydantic): the kernels the workers run live in :mod:`.gridsearch`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine import plan_chunks
from ..errors import ConfigError, InputError
from . import analysis, uncertainty
from .analysis import Optimum, theta_deg
from .bandwidth import bandwidth_sensitivity, cv_bandwidth
from .config import Config
from .covariates import cox_baseline, design_matrix
from .estimators import GridRule, smooth_hazard
from .gridsearch import (Curves, GridPoints, PatternTable, TileInput, bootstrap_curves,
                         coefficient_matrix, compress, concat_points, curves_for,
                         direction_points, evaluate_tile, make_grid_points, sample_weights,
                         tiebreak_matrix, time_at_risk_range)
from .panel import (RULE_SENTENCES, NPOPanel, Period, build_panel, exclusion_sentence,
                    read_panel_file)
from .holdout import HoldoutInput, HoldoutReport, holdout_report, holdout_tile
from .likelihood import (PoissonFit, ProfileInput, ProfileReport, aggregate,
                         direction_coef, fit_at, person_years, profile_report, profile_tile)
from .predict import model_next_year_table
from .split import (UsableSplits, age_band, balance_table, max_stratum_gap, stratum_codes,
                    usable_splits)
from .synthetic import generate_panel
from .timeatrisk import USES, coefficients
from .uncertainty import Direction, FixedDefinition, OptimumReport

__all__ = ["HazardInputs", "HazardResult", "CoxBaseline", "PURPOSES", "grid_points",
           "check_time_at_risk", "searches_direction", "load_inputs", "compute",
           "likelihood_profile", "prediction_direction"]

#: The random streams of a run. The first, SeedSequence(seed) itself, draws the synthetic
#: panel (as in every earlier release); splits and bootstrap resamples have their own.
PURPOSES = ("synthetic", "split", "bootstrap")


# -- inputs ----------------------------------------------------------------------------------
@dataclass
class HazardInputs:
    panel: NPOPanel
    strata: np.ndarray
    labels: dict
    points: GridPoints
    rule: GridRule
    source: str = "<panel>"


def grid_points(cfg: Config) -> GridPoints:
    """The points the run searches (a single point when the definition has nothing to search)."""
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
            raise ConfigError("the direction search needs smoothing.mode = 'relative' (only "
                              "the direction of (k1, k2) matters there)", key="grid.mode")
        theta = cfg.grid.theta_deg.array()
        if theta.size == 0:
            raise ConfigError("empty grid: no theta values", key="grid.theta_deg")
        return direction_points(np.radians(theta), k0)
    for name in ("k1", "k2"):
        if getattr(cfg.grid, name).array().size == 0:
            raise ConfigError(f"empty grid: no {name} values", key=f"grid.{name}")
    return make_grid_points(cfg.grid.k1.array(), cfg.grid.k2.array(), k0)


def check_time_at_risk(cfg: Config, panel: NPOPanel, points: GridPoints) -> None:
    """Every grid point must give T >= 0 for every NPO and a positive max T (the scale)."""
    tmin, tmax, worst = time_at_risk_range(panel.features.matrix(), cfg.definition, points)
    key = "grid.theta_deg" if cfg.grid.mode == "direction" else "grid.k1"
    bad = np.flatnonzero(tmin < 0)
    if bad.size:
        i = int(bad[0])
        n0, n1, x, z = worst[i]
        raise ConfigError(
            f"k1={points.k1[i]:g}, k2={points.k2[i]:g}, k0={points.k0[i]:g} make the "
            f"time-at-risk negative ({tmin[i]:g} for an NPO with N0={n0:g}, N1={n1:g}, "
            f"X={x:g}, Z={z:g}); {bad.size} of {points.size} grid points do", key=key)
    zero = np.flatnonzero(tmax <= 0)
    if zero.size:
        i = int(zero[0])
        raise ConfigError(f"k1={points.k1[i]:g}, k2={points.k2[i]:g}, k0={points.k0[i]:g} "
                          f"make the time-at-risk 0 for every NPO", key=key)


def _frame_digest(frame: pd.DataFrame) -> str:
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(rows.tobytes()).hexdigest()


def load_inputs(cfg: Config, record, streams) -> HazardInputs:
    """Load (or generate) the panel, validate it and the grid; record inputs and exclusions.

    The synthetic panel is drawn from ``streams.seed("synthetic")`` (the primary stream).
    """
    period = Period(cfg.period.start, cfg.period.end, cfg.period.closures_from())
    if cfg.data.path is None:
        s = cfg.data.synthetic
        frame = generate_panel(s.n_npos, period, streams.seed("synthetic"),
                               p_initial_grant=s.p_initial_grant, p_keep=s.p_keep,
                               p_regain=s.p_regain, peak_hazard=s.peak_hazard,
                               peak_time=s.peak_time, true_k1=s.true_k1, true_k2=s.true_k2,
                               shape=s.shape)
        source, path, digest = "synthetic panel", None, _frame_digest(frame)
        shape = {"inverted_u": f"inverted-U hazard peaking at T={s.peak_time:g}",
                 "linear": f"linear hazard ({s.peak_hazard:g} at T={s.peak_time:g})",
                 "constant": f"constant hazard {s.peak_hazard:g}"}[s.shape]
        desc = (f"synthetic: {s.n_npos} at-risk NPOs, {period.start}-{period.end}, {shape} "
                f"(T = {s.true_k1:g}*N0 + {s.true_k2:g}*N1), seed {cfg.seed}")
    else:
        path = Path(cfg.data.path)
        frame = read_panel_file(path)
        source, digest, desc = str(path), None, "NPO-year funding panel"
    panel = build_panel(frame, period, source=source, rules=cfg.data.rules.rules())
    record.add_input("npo_panel", path, rows=panel.n_rows, fingerprint=digest, description=desc)
    for reason, count in panel.exclusions.items():
        record.exclude(source, exclusion_sentence(reason, period), count,
                       rows=panel.excluded_ids[reason])
    # rows outside the period are left out of the analysis: panel rows, counted as such
    record.exclude(source, RULE_SENTENCES["rows_outside_period"]
                   + " (data.rules.rows_outside_period)",
                   panel.rule_counts.get("rows_outside_period", 0),
                   rows=panel.rule_ids.get("rows_outside_period"))
    # every other panel-rule count, in NPOs (kept, except those wholly outside the period)
    for rule in ("npos_wholly_outside_period", "closure_after_period",
                 "missing_closure_year_row"):
        key = "" if rule == "npos_wholly_outside_period" else f" (data.rules.{rule})"
        record.exclude(source, RULE_SENTENCES[rule] + key, panel.rule_counts.get(rule, 0),
                       rows=panel.rule_ids.get(rule), unit="NPOs")
    points = grid_points(cfg)
    check_time_at_risk(cfg, panel, points)
    npos = panel.npos
    band = age_band((npos.first_break_year - npos.founded_year).to_numpy(), cfg.split.age_bands)
    labels = {"field": npos.field.to_numpy(), "function": npos.function.to_numpy(),
              "age_band": band}
    strata = stratum_codes(labels["field"], labels["function"], band)
    return HazardInputs(panel=panel, strata=strata, labels=labels, points=points,
                        rule=cfg.smoothing.rule(), source=source)


# -- the result ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoxBaseline:
    """lifelines' Cox fit at the chosen coefficients (``covariates``), its baseline smoothed."""

    covariates: tuple
    hazard: np.ndarray          # on the curves' grid, same kernel and bandwidth
    params: pd.DataFrame        # covariate, coef, exp_coef, se, p
    concordance: float


@dataclass(frozen=True)
class HazardResult:
    """Every figure the hazard job reports.

    Attributes
    ----------
    panel : NPOPanel
        The at-risk NPOs, their exclusions and panel-rule counts.
    points : GridPoints
        The searched points (one point for a fixed definition); ``n_tiles`` Dask tasks.
    splits : UsableSplits
        The usable balanced splits and what happened to the unusable draws; ``min_usable``
        is how many the run needed, ``sample_sizes`` the two halves of split 0,
        ``stratum_gap`` the largest count difference of a stratum between halves (any split),
        ``balance`` the balance table of split 0.
    dev : ndarray, shape (points, splits)
        Dev of every searched point on every split.
    rule : GridRule
        The grid and bandwidth rule used (the cross-validated fraction when ``cv``).
    cv : dict or None
        The cross-validated bandwidth (:func:`~riskdask.hazard.bandwidth.cv_bandwidth`,
        with ``at``: where it was chosen).
    optimum : OptimumReport or None
        The direction search (T, T1): the interior optimum, the axes, the per-split optima,
        the theta interval and the paired comparisons.
    fixed : FixedDefinition or None
        A run that searched nothing (T0, T3; T2 with one k0).
    best : Direction or Optimum
        The chosen coefficients (the interior optimum, or the smallest mean Dev).
    per_split : pandas.DataFrame
        The optimum of every split on its own.
    dev_at_best : ndarray, shape (splits,)
        Dev of the chosen coefficients on every split.
    coef : ndarray, shape (4,)
        Feature weights of the chosen time-at-risk.
    sensitivity : pandas.DataFrame or None
        The interior optimum at other bandwidth fractions.
    curves : Curves
        Hazard curves of sample 1, sample 2 and the full sample (split 0) at ``coef``.
    band : (lower, upper) arrays or None
        The full sample's pointwise bootstrap band.
    between : float
        Share of grid points where the full curve lies between the two halves.
    cox : CoxBaseline or None
    ranked : pandas.DataFrame
        Active NPOs ranked by the probability of closure within the next year, from the
        person-year model at ``prediction.direction``; ``prediction`` what goes with it
        (the direction, counts beyond the data, the extrapolation rule).
    likelihood : ProfileReport or None
        The profile likelihood of theta (T, T1; :mod:`riskdask.hazard.likelihood`).
    model_fit : PoissonFit
        The person-year model the predictions come from.
    n_person_years : int
    holdout : HoldoutReport or None
        The temporal holdout of the directions (:mod:`riskdask.hazard.holdout`).
    """

    definition: str
    panel: NPOPanel
    points: GridPoints
    n_tiles: int
    splits: UsableSplits
    min_usable: int
    sample_sizes: tuple
    stratum_gap: int
    balance: pd.DataFrame
    dev: np.ndarray
    rule: GridRule
    cv: dict | None
    optimum: OptimumReport | None
    fixed: FixedDefinition | None
    best: Direction | Optimum
    per_split: pd.DataFrame
    dev_at_best: np.ndarray
    coef: np.ndarray
    sensitivity: pd.DataFrame | None
    curves: Curves
    band: tuple | None
    between: float
    cox: CoxBaseline | None
    ranked: pd.DataFrame
    prediction: dict
    likelihood: ProfileReport | None = None
    model_fit: PoissonFit | None = None
    n_person_years: int = 0
    holdout: HoldoutReport | None = None

    @property
    def searched(self) -> bool:
        """Whether any coefficient was searched (False for a fixed definition)."""
        return self.points.size > 1


# -- run -------------------------------------------------------------------------------------
def searches_direction(definition: str) -> bool:
    """T and T1 search the direction of (k1, k2); T0, T2, T3 do not (T2 at most over k0)."""
    return "k1" in USES[definition]


def _cv_fraction(cfg: Config, table: PatternTable, rule: GridRule) -> dict:
    """LSCV bandwidth fraction of the full-sample hazard at the seed's k1 = k2 (before the
    search)."""
    k0 = float(cfg.grid.k0.array()[0])
    coef = coefficients(cfg.definition, 1.0, 1.0, k0)
    cur = curves_for(table, table.counts(np.ones((table.inverse.size, 1))), coef, rule)
    times, inc = cur.failures(0)
    tau = float(rule.grid_and_bandwidth(cur.scale)[0][-1])
    cv = cv_bandwidth(times, inc, cur.scale, tau, rule.boundary)
    cv["at"] = (f"k1 = k2 = 1 ({cfg.definition})" if searches_direction(cfg.definition) else
                f"{cfg.definition}, k0 = {k0:g}")
    return cv


def _draw_splits(cfg: Config, inp: HazardInputs, ctx) -> UsableSplits:
    """The usable balanced splits; the excluded and the redrawn ones go to the manifest."""
    us = usable_splits(inp.strata, inp.panel.event, ctx.streams.seed("split"),
                       cfg.split.n_splits, policy=cfg.split.unusable,
                       max_redraws=cfg.split.max_redraws, min_usable=cfg.split.needed(),
                       source=inp.source)
    ctx.record.exclude("splits", "balanced splits left out: a half had no NPO at risk or no "
                                 "closure (split.unusable)", us.n_excluded,
                       rows=sorted(set(range(us.n_requested)) - set(us.index.tolist())))
    discarded = us.counts[~us.counts.usable & us.counts.split.isin(us.index)]
    ctx.record.exclude("splits", "unusable split draws discarded and redrawn (a half had no NPO "
                                 "at risk or no closure; split.unusable = 'redraw')",
                       len(discarded), rows=sorted(set(discarded.split.tolist())))
    return us


def _row_of(points: GridPoints, best) -> int:
    """The index of the chosen point among ``points``."""
    return int(np.flatnonzero((points.k1 == best.k1) & (points.k2 == best.k2)
                              & (points.k0 == best.k0))[0])


def compute(cfg: Config, inp: HazardInputs, ctx) -> HazardResult:
    """Splits, the grid search on the cluster, the optimum with its uncertainty, curves,
    bands and predictions."""
    panel, points, rule = inp.panel, inp.points, inp.rule
    event = panel.event
    level = cfg.split.interval_level

    with ctx.stage("split"):
        us = _draw_splits(cfg, inp, ctx)
        splits = us.splits
        table = compress(panel.features.matrix(), event)
        at_risk_w, death_w = sample_weights(table, splits, cfg.split.sample_one)
        balance = balance_table(splits[0], inp.labels, event)
        stratum_gap = max(max_stratum_gap(inp.strata, s) for s in splits)

    cv = None
    if cfg.smoothing.bandwidth_rule == "cv" and cfg.smoothing.mode == "relative":
        with ctx.stage("cv_bandwidth"):
            cv = _cv_fraction(cfg, table, rule)
            rule = replace(rule, bandwidth_fraction=cv["fraction"])

    searched = searches_direction(cfg.definition)
    ref = uncertainty.reference_points(np.unique(points.k0)) if searched else None
    with ctx.stage("grid_search"):
        # the fixed choices (T0 = N0, k1 = k2, k1 = 0) ride along as extra points
        all_points = points if ref is None else concat_points(points, ref)
        # interior searched points break ray ties by the direction's limit (rule.ties); the
        # axes and the fixed choices keep the data's ties
        n_ref = 0 if ref is None else ref.size
        inner = np.concatenate([(points.k1 > 0) & (points.k2 > 0) & searched,
                                np.zeros(n_ref, dtype=bool)])
        tiebreak = tiebreak_matrix(cfg.definition, all_points, inner)
        shared = TileInput(features=table.features, at_risk=at_risk_w, deaths=death_w,
                           coefs=coefficient_matrix(cfg.definition, all_points), rule=rule,
                           tiebreak=tiebreak if rule.ties == "direction_limit" else None)
        tiles = plan_chunks(all_points.size, cfg.grid.tile_size)  # no randomness in a tile
        dev_all = np.concatenate(ctx.engine.map_chunks(evaluate_tile, tiles, shared=shared,
                                                       label="hazard-grid"), axis=0)
        dev, ref_dev = dev_all[:points.size], dev_all[points.size:]

    rep = fixed = sens = None
    with ctx.stage("optimum"):
        if searched:
            rep = uncertainty.optimum_report(points, dev, ref, ref_dev, level)
            if rep.interior is None:
                raise InputError(f"{rep.statement} ({us.describe()})", file=inp.source)
            best, per_split = rep.interior, rep.per_split
            dev_at_best = dev[_row_of(points, best)]
        else:
            best = analysis.optimum(analysis.surface_frame(points, dev))
            per_split = analysis.per_split_optima(points, dev)
            dev_at_best = dev[best.index]
            if points.size == 1:
                fixed = uncertainty.fixed_report(
                    cfg.definition, coefficients(cfg.definition, best.k1, best.k2, best.k0),
                    dev[0])
    coef = coefficients(cfg.definition, best.k1, best.k2, best.k0)
    if (rep is not None and cfg.smoothing.mode == "relative"
            and cfg.smoothing.sensitivity_fractions):
        with ctx.stage("bandwidth_sensitivity"):
            # the run's own points and tie rule: the row at the run's fraction is the run
            idx = uncertainty.sensitivity_points(points, [
                (best.k1, best.k2, best.k0),
                *per_split[["k1", "k2", "k0"]].itertuples(index=False, name=None)])
            sub = GridPoints(k1=points.k1[idx], k2=points.k2[idx], k0=points.k0[idx],
                             shape=(idx.size,))
            sens = bandwidth_sensitivity(
                table.features, at_risk_w, death_w, coefficient_matrix(cfg.definition, sub),
                analysis.theta_deg(sub.k1, sub.k2), rule, cfg.smoothing.sensitivity_fractions,
                level, tiebreak[:points.size][idx])

    with ctx.stage("curves"):
        first, second = (1, 2) if cfg.split.sample_one == 1 else (2, 1)
        cols = np.column_stack([splits[0] == first, splits[0] == second, np.ones_like(event)])
        cur = curves_for(table, table.counts(cols.astype(float)), coef, rule)
        band = None
        if cfg.bootstrap.n_boot > 0:
            boot_chunks = plan_chunks(cfg.bootstrap.n_boot, cfg.bootstrap.chunk_size,
                                      ctx.streams.seed("bootstrap"))
            boot = np.concatenate(ctx.engine.map_chunks(
                bootstrap_curves, boot_chunks, label="hazard-bootstrap",
                shared={"table": table, "coef": coef, "rule": rule, "scale": cur.scale}),
                axis=0)
            band = analysis.bootstrap_band(boot, cfg.bootstrap.level)
        h = cur.hazard
        between = analysis.between_fraction(h[:, 2], h[:, 0], h[:, 1])
        cox = None
        if cfg.covariates:
            c_times, c_inc, c_params, c_index = cox_baseline(
                panel.features.matrix() @ coef, event, design_matrix(panel.npos, cfg.covariates))
            cox = CoxBaseline(covariates=tuple(cfg.covariates), params=c_params,
                              concordance=c_index,
                              hazard=smooth_hazard(cur.grid, c_times, c_inc, cur.bandwidth,
                                                   rule.boundary, cur.origin))

    with ctx.stage("likelihood"):
        f = panel.features
        py = person_years(panel.grants, f.break_index, f.end_index, event,
                          panel.period.first_closure_year - panel.period.start)
        agg = aggregate(py.features, py.event)
        prof = None
        if searched:
            prof = likelihood_profile(cfg, agg, best.k0, ctx.engine, py.size,
                                      int(py.event.sum()))

    hold = None
    if searched and cfg.likelihood.holdout:
        with ctx.stage("holdout"):
            hold = temporal_holdout(cfg, py, panel.period, best, ctx.engine)

    with ctx.stage("predict"):
        pcoef, pdir = prediction_direction(cfg, prof, best, coef)
        mfit = fit_at(agg, pcoef, cfg.likelihood.df)
        ranked, pinfo = model_next_year_table(panel.npos, panel.grants, f.end_index,
                                              f.matrix(), event, mfit, pdir)

    return HazardResult(
        definition=cfg.definition, panel=panel, points=points, n_tiles=len(tiles), splits=us,
        min_usable=int(cfg.split.needed()),
        sample_sizes=(int((splits[0] == first).sum()), int((splits[0] == second).sum())),
        stratum_gap=int(stratum_gap), balance=balance, dev=dev, rule=rule, cv=cv,
        optimum=rep, fixed=fixed, best=best, per_split=per_split,
        dev_at_best=np.asarray(dev_at_best, float), coef=coef, sensitivity=sens, curves=cur,
        band=band, between=between, cox=cox, ranked=ranked, prediction=pinfo,
        likelihood=prof, model_fit=mfit, n_person_years=int(py.size), holdout=hold)


def temporal_holdout(cfg: Config, py, period: Period, best, engine) -> HoldoutReport | None:
    """The holdout's folds as tasks on the engine, one per origin year (None: no origin)."""
    first = period.first_closure_year - period.start
    last = period.end - period.start
    origins = np.arange(first + cfg.likelihood.holdout_min_train_years - 1, last)
    origins = np.array([t for t in origins if py.event[py.year_index <= t].sum() > 0
                        and (py.year_index == t + 1).any()], dtype=np.int64)
    if origins.size == 0:
        return None
    shared = HoldoutInput(py=py, origins=origins, definition=cfg.definition, k0=float(best.k0),
                          dev_theta_deg=float(best.theta_deg), df=cfg.likelihood.df)
    folds = [f for part in engine.map_chunks(holdout_tile, plan_chunks(origins.size, 1),
                                             shared=shared, label="hazard-holdout")
             for f in part]
    rep = holdout_report(py, folds, cfg.likelihood.reliability_bins)
    years = rep.folds.origin_index + period.start
    return replace(rep, folds=rep.folds.assign(origin_year=years.astype(np.int64)))


def likelihood_profile(cfg: Config, agg, k0: float, engine, n_person_years: int = 0,
                       n_closures: int = 0) -> ProfileReport:
    """The profile likelihood of theta on ``linspace(0, 90, likelihood.n_theta)``, the grid's
    fits as tasks on the engine (:func:`~riskdask.hazard.likelihood.profile_tile`), the
    maximum and the interval refined on the client (the same pure fit)."""
    df = cfg.likelihood.df
    theta = np.linspace(0.0, 90.0, cfg.likelihood.n_theta)
    coefs = np.stack([direction_coef(cfg.definition, t, k0) for t in theta])
    tiles = plan_chunks(theta.size, cfg.likelihood.tile_size)
    ll = np.concatenate(engine.map_chunks(profile_tile, tiles,
                                          shared=ProfileInput(agg=agg, coefs=coefs, df=df),
                                          label="hazard-likelihood"))
    return profile_report(theta, ll,
                          lambda t: fit_at(agg, direction_coef(cfg.definition, t, k0), df).loglik,
                          n_person_years, n_closures, df)


def prediction_direction(cfg: Config, prof: ProfileReport | None, best, dev_coef):
    """Feature weights and description of ``prediction.direction`` (fixed definitions: their
    own weights)."""
    d = cfg.prediction.direction
    if prof is None:
        return dev_coef, {"source": "fixed definition", "requested": d,
                          "weights": dict(zip(("N0", "N1", "X", "Z"), map(float, dev_coef)))}
    if d == "likelihood":
        theta, source = prof.theta_deg, "likelihood (profile maximum)"
    elif d == "dev":
        theta, source = float(best.theta_deg), "dev (interior optimum of the mean Dev)"
    elif d == "T0":
        theta, source = 0.0, "T0 (k2 = 0)"
    else:
        theta = float(theta_deg(d[0], d[1]))
        source = f"given: k1 = {d[0]:g}, k2 = {d[1]:g}"
    coef = direction_coef(cfg.definition, theta, best.k0)
    return coef, {"source": source, "theta_deg": theta, "k0": float(best.k0),
                  "weights": dict(zip(("N0", "N1", "X", "Z"), map(float, coef)))}
