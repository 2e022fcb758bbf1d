"""What a hazard run shows: summary, tables, figures, report sections, headline
(:func:`present`) and its run-history row (:func:`metrics`).

Nothing here computes on the cluster; everything comes from a
:class:`~riskdask.hazard.pipeline.HazardResult`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from .. import htmlkit as h
from ..formatting import integer, sig
from ..protocol import Metric, Outputs
from . import figures, reporting
from .analysis import surface_frame
from .config import Config
from .panel import RULE_SENTENCES
from .pipeline import HazardResult
from .timeatrisk import SCALABLE_DEFINITIONS, USES, coefficients

__all__ = ["present", "metrics", "summary", "headline", "tables", "plain", "optimum_summary",
           "likelihood_summary"]


# -- summary.json ----------------------------------------------------------------------------
def plain(value):
    """Numpy scalars / arrays / dataclasses / containers -> plain Python values (nan -> None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                      if not isinstance(getattr(value, f.name), pd.DataFrame)})
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def optimum_summary(rep) -> dict:
    """The parts of an :class:`~riskdask.hazard.uncertainty.OptimumReport` for summary.json."""
    if rep.interior is None:
        return {"searched": True, "identified": False, "statement": rep.statement}
    return plain({
        "searched": True,
        "headline": rep.headline.text,
        "theta_deg": rep.headline.theta_deg, "ratio_k2_k1": rep.headline.ratio_k2_k1,
        "identified": rep.identified, "statement": rep.statement,
        "interior": rep.interior, "axes": rep.axes, "theta_interval": rep.theta_interval,
        "paired_comparison": {r.fixed_choice: {
            "dev_fixed_mean": r.dev_fixed_mean, "mean_difference": r.mean_difference,
            "win_fraction_in_sample": r.win_fraction_in_sample,
            "win_fraction_held_out": r.win_fraction_held_out}
            for r in rep.comparison.itertuples()},
    })


def likelihood_summary(result: HazardResult) -> dict:
    """``summary.json["likelihood"]``: the profile maximum, its 95 % interval, k2/k1 and the
    LR tests (a fixed definition: its log-likelihood only, nothing profiled)."""
    r = result
    if r.likelihood is not None:
        return plain(r.likelihood.summary())
    fit = r.model_fit
    return plain({"theta_deg": None, "ci95_deg": None, "k2_over_k1": None, "lr_tests": {},
                  "loglik": None if fit is None else fit.loglik,
                  "spline_df": None if fit is None else fit.df,
                  "statement": f"{r.definition} has no direction to profile"})


def _scale_invariant(cfg: Config) -> bool:
    return bool(cfg.smoothing.mode == "relative" and cfg.definition in SCALABLE_DEFINITIONS)


def summary(result: HazardResult, cfg: Config) -> dict:
    """The run's ``summary.json`` (plain values)."""
    r, panel, us, cur = result, result.panel, result.splits, result.curves
    ranked = r.ranked
    s = {
        "definition": cfg.definition,
        "coefficients_searched": list(USES[cfg.definition]) if r.searched else [],
        "grid_rule": r.rule.describe(),
        "scale_invariant": _scale_invariant(cfg),
        "n_npos_at_risk": int(len(panel.npos)), "n_closed": int(panel.event.sum()),
        "excluded_npos": dict(panel.exclusions),
        "panel_rules": dict(panel.rule_counts),
        "n_grid_points": int(r.points.size), "n_tiles": r.n_tiles,
        "n_splits": int(us.n_usable), "n_splits_requested": int(us.n_requested),
        "splits": {"usable": us.n_usable, "redrawn": us.n_redrawn, "excluded": us.n_excluded,
                   "unusable_draws": dict(us.reasons), "min_usable": int(r.min_usable)},
        "sample_sizes": list(r.sample_sizes),
        "max_stratum_count_difference": int(r.stratum_gap),
        "full_curve_between_halves_fraction": r.between,
        "bandwidth": float(cur.bandwidth), "max_time_at_risk": float(cur.scale),
        "bandwidth_rule": cfg.smoothing.bandwidth_rule, "boundary": r.rule.boundary,
        "bootstrap": {"n_boot": cfg.bootstrap.n_boot, "level": cfg.bootstrap.level},
        "cox": None if r.cox is None else {
            "covariates": list(r.cox.covariates), "concordance": r.cox.concordance,
            "coefficients": r.cox.params.set_index("covariate").coef.to_dict()},
        "prediction": r.prediction,
        "n_active_ranked": int(len(ranked)),
        "top_closure_risk": ranked.head(5)[["npo_id", "p_close_next_year",
                                            "beyond_data"]].to_dict("records"),
    }
    if r.fixed is not None:
        s["fixed"] = r.fixed
    elif r.optimum is not None:
        s["optimum"] = optimum_summary(r.optimum)
    else:  # T2: a search over k0 only
        s["optimum"] = {"searched": True, "k0": r.best.k0, "dev_mean": r.best.dev,
                        "k0_per_split": r.per_split.k0.tolist()}
    s["likelihood"] = likelihood_summary(r)
    if r.holdout is not None:
        s["holdout"] = plain(r.holdout.summary())
    if r.cv is not None:
        s["cv_bandwidth"] = {k: r.cv[k] for k in ("fraction", "bandwidth", "at_edge", "at")}
    if r.sensitivity is not None:
        s["bandwidth_sensitivity"] = r.sensitivity.to_dict("records")
    return plain(s)


# -- tables ----------------------------------------------------------------------------------
def _curves_table(result: HazardResult) -> pd.DataFrame:
    cur = result.curves
    h = cur.hazard
    curves = pd.DataFrame({"time_at_risk": cur.grid, "hazard_sample1": h[:, 0],
                           "hazard_sample2": h[:, 1], "hazard_full": h[:, 2]})
    if result.band is not None:
        curves["full_lower"], curves["full_upper"] = result.band
    if result.cox is not None:
        curves["hazard_cox_baseline"] = result.cox.hazard
    return curves


def _breslow_table(result: HazardResult) -> pd.DataFrame:
    cur = result.curves
    breslow = pd.DataFrame({"time_at_risk": cur.times, "dH_sample1": cur.increments[:, 0],
                            "dH_sample2": cur.increments[:, 1],
                            "dH_full": cur.increments[:, 2]})
    breslow["H_full"] = np.cumsum(breslow.dH_full)
    return breslow


def _npo_table(result: HazardResult) -> pd.DataFrame:
    panel = result.panel
    out = panel.npos.copy()
    out["sample"] = result.splits.splits[0]
    out["time_at_risk"] = panel.features.matrix() @ result.coef
    return out


def _weights(coef) -> dict:
    return dict(zip(("N0", "N1", "X", "Z"), (float(c) for c in coef)))


def _real_weights(frame: pd.DataFrame, definition: str) -> pd.DataFrame:
    """A definition without k1/k2 (T0, T2, T3): the placeholder k1 = k2 = 1 (theta = 45) of
    its grid point blanked, the definition's real feature weights added."""
    if "k1" in USES[definition] or "k1" not in frame:
        return frame
    out = frame.copy()
    for col in ("k1", "k2", "ratio_k2_k1", "theta_deg"):
        if col in out:
            out[col] = np.nan
    k0 = out.k0.to_numpy(float) if "k0" in out else np.zeros(len(out))
    w = np.array([coefficients(definition, 1.0, 1.0, v) for v in k0]).reshape(-1, 4)
    for j, name in enumerate(("N0", "N1", "X", "Z")):
        out[f"weight_{name}"] = w[:, j]
    return out


def tables(result: HazardResult) -> dict[str, pd.DataFrame]:
    """Every table of the run, in the order written (``tables/<name>.parquet``)."""
    r = result
    out = {}
    if r.cox is not None:
        out["cox_coefficients"] = r.cox.params
    out.update({"deviation_surface": _real_weights(surface_frame(r.points, r.dev), r.definition),
                "optimum_per_split": _real_weights(r.per_split, r.definition),
                "balance": r.balance,
                "hazard_curves": _curves_table(r), "breslow_increments": _breslow_table(r),
                "closure_next_year": r.ranked, "npo_time_at_risk": _npo_table(r),
                "split_draws": r.splits.counts})
    if r.optimum is not None:
        out["dev_by_direction"] = r.optimum.curve
        out["optimum_vs_fixed_choices"] = r.optimum.comparison
    if r.sensitivity is not None:
        out["bandwidth_sensitivity"] = r.sensitivity
    if r.cv is not None:
        out["cv_bandwidth_scores"] = r.cv["candidates"]
    if r.likelihood is not None:
        out["likelihood_profile"] = pd.DataFrame({
            "theta_deg": r.likelihood.grid_theta, "loglik": r.likelihood.grid_loglik,
            "lr_vs_max": 2 * (r.likelihood.loglik_max - r.likelihood.grid_loglik)})
    if r.holdout is not None:
        out["holdout_scores"] = r.holdout.scores
        out["holdout_paired"] = r.holdout.paired
        out["holdout_reliability"] = r.holdout.reliability
        out["holdout_folds"] = r.holdout.folds
    return out


# -- figures ---------------------------------------------------------------------------------
def _percent(level: float) -> str:
    return f"{sig(100 * level, 2)}%"


def _figures(out: Outputs, cfg: Config, result: HazardResult, surface, curves) -> None:
    best, rep, cv = result.best, result.optimum, result.cv
    name = {"T": "T = k1 N0 + k2 N1"}.get(cfg.definition, cfg.definition)
    where = ("at the interior optimum" if rep is not None else
             "(fixed definition)" if surface.shape[0] == 1 else "at the optimum")
    if "k1" in USES[cfg.definition]:
        title = f"{name} {where} k1={sig(best.k1, 3)}, k2={sig(best.k2, 3)}"
    else:
        title = f"{name} = {reporting.weights_text(_weights(result.coef), ' ')} {where}"
    if "k0" in USES[cfg.definition]:
        title += f", k0={sig(best.k0, 3)}"
    out.figure("fig1_hazard_vs_time_at_risk", figures.hazard_curves_figure(curves, title),
               caption="Seed Figure 1: smoothed hazard rate vs time-at-risk for the two "
                       "samples (split 0), the full sample and its bootstrap band")
    if (cfg.grid.mode == "k1k2" and "k1" in USES[cfg.definition]
            and np.unique(surface.k1).size > 1
            and np.unique(surface.k2).size > 1):
        out.figure("fig2_dev_vs_k1", figures.dev_vs_k1_figure(surface, best.k0),
                   caption="Seed Figure 2: Dev vs k1 for several constant k2")
        out.figure("dev_surface_heatmap", figures.surface_heatmap(
            surface, best.k0, best.ratio_k2_k1, result.per_split.ratio_k2_k1.to_numpy()),
            caption="Dev over (k1, k2): in relative mode constant along rays k2/k1 = const; "
                    "red: the interior optimum ray; thin lines: each split's interior optimum")
    if rep is not None:
        iv = rep.theta_interval
        out.figure("dev_vs_direction", figures.dev_theta_band_figure(rep.curve, rep.level),
                   caption=f"Dev(theta), theta = atan2(k2, k1): mean over splits with the "
                           f"{_percent(rep.level)} range; the axes (theta = 0, 90) are "
                           f"separate models, shown as points")
        out.figure("optimum_theta_per_split", figures.theta_histogram_figure(
            rep.per_split, {"level": iv.level, "lo": iv.lo, "hi": iv.hi},
            rep.interior.theta_deg),
            caption="Interior optimum direction of every split, with the range across splits")
    if cv is not None:
        out.figure("cv_bandwidth", figures.cv_bandwidth_figure(cv["candidates"], cv["fraction"]),
                   caption="Least-squares cross-validation score of the kernel hazard "
                           "bandwidth")
    if np.unique(surface.k0).size > 1:
        out.figure("dev_vs_k0", figures.dev_vs_k0_figure(surface),
                   caption="Smallest Dev over (k1, k2) at each k0 (Appendix A, T1)")


# -- report and headline ---------------------------------------------------------------------
def _sections(out: Outputs, cfg: Config, result: HazardResult) -> None:
    r = result
    out.section("Method", reporting.method_html(cfg, r.rule, r.best, r.splits.n_usable,
                                                _scale_invariant(cfg), _weights(r.coef)))
    if r.optimum is not None:
        out.section("The optimum and its uncertainty", reporting.optimum_html(r.optimum))
    if r.fixed is not None:
        out.section("Fixed definition", reporting.fixed_html(r.fixed))
    out.section("Splits and panel rules", reporting.splits_html(r.splits)
                + reporting.panel_rules_html(r.panel.rule_counts, RULE_SENTENCES))
    smoothing = reporting.smoothing_html(r.cv, r.rule.boundary, r.curves.origin, r.rule.ties)
    if r.sensitivity is not None:
        smoothing += reporting.sensitivity_html(r.sensitivity)
    elif r.optimum is not None and cfg.smoothing.mode == "absolute":
        smoothing += h.p("No bandwidth sensitivity table: it varies the relative bandwidth "
                         "fraction, and this run uses absolute units.")
    out.section("Smoothing", smoothing)
    if r.likelihood is not None:
        out.section("The likelihood direction", reporting.likelihood_html(r.likelihood,
                                                                          r.optimum))
    if r.holdout is not None:
        out.section("Which criterion predicts", reporting.holdout_html(r.holdout))
    if cfg.top_n_report:
        out.section("Highest probability of closure within the next year",
                    reporting.ranked_html(r.prediction, r.ranked, cfg.top_n_report))


def headline(result: HazardResult) -> list[tuple[str, str]]:
    """The console lines and the report's headline table."""
    r, us = result, result.splits
    rows = [("definition", r.definition), ("grid rule", r.rule.describe()),
            ("NPOs at risk / closed",
             f"{integer(len(r.panel.npos))} / {integer(int(r.panel.event.sum()))}"),
            ("grid points x splits", f"{integer(r.points.size)} x {integer(us.n_usable)} "
                                     f"(of {integer(us.n_requested)} requested)")]
    if r.fixed is not None:
        f = r.fixed
        rows += [("coefficients",
                  f"fixed: {reporting.weights_text(f.weights, '*')} (nothing searched)"),
                 ("Dev (mean over splits)",
                  sig(f.dev_mean, 3, undefined="Dev undefined on a split"))]
    elif r.optimum is not None:
        o, ib = r.optimum, r.optimum.interior
        ax = o.axes.get("k2 = 0 (theta = 0)")
        spread = ("(one split: no spread)" if not math.isfinite(ib.dev_sd) else
                  f"(sd over splits {sig(ib.dev_sd, 2)})")
        rows += [("optimum direction (Dev)", o.headline.text),
                 ("Dev at the interior optimum", f"{sig(ib.dev_mean, 3)} {spread}"),
                 ("Dev on the axis k2 = 0 (T0)",
                  sig(ax.dev_mean, 3) if ax else "not evaluated"),
                 ("optimum identified", "yes" if o.identified else "no")]
        if r.likelihood is not None:
            rows += [("likelihood direction", reporting.likelihood_text(r.likelihood))]
        if r.holdout is not None:
            rows += [("temporal holdout", r.holdout.statement)]
    else:
        rows += [("optimum k0", sig(r.best.k0, 4)), ("Dev at optimum", sig(r.best.dev, 3))]
    p = r.prediction
    rows += [("full curve between halves", sig(r.between, 2)),
             ("next-year closure probabilities at",
              p["direction"]["source"] + ("" if "theta_deg" not in p["direction"] else
                                          f", theta = {sig(p['direction']['theta_deg'], 3)}°")),
             ("active NPOs beyond the data",
              f"{integer(p['n_beyond_data'])} of {integer(p['n_active'])}")]
    return rows


def present(result: HazardResult, cfg: Config) -> Outputs:
    """Summary, tables, figures, report sections and headline of a hazard run."""
    out = Outputs()
    for name, frame in tables(result).items():
        out.table(name, frame)
    _figures(out, cfg, result, out.tables["deviation_surface"], out.tables["hazard_curves"])
    _sections(out, cfg, result)
    out.summary = summary(result, cfg)
    out.headline = headline(result)
    return out


# -- run history -----------------------------------------------------------------------------
def _quartiles(values) -> tuple[float | None, float | None]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None
    lo, hi = np.quantile(v, [0.25, 0.75])
    return float(lo), float(hi)


def metrics(result: HazardResult) -> dict:
    """The run-history row, each figure with the quartiles over the splits as its interval.

    - direction search (T, T1): ``optimum theta (deg)`` and ``optimum k2/k1`` of the interior
      optimum of the mean Dev (interval: the ``split.interval_level`` range of the per-split
      optima, the range the report shows; none on a flat surface), ``optimum identified``
      (yes/no);
    - when k0 is searched (T1, T2 with several k0): ``optimum k0`` (quartiles of the
      per-split optima);
    - ``likelihood theta (deg)`` and ``likelihood k2/k1``: the profile-likelihood maximum with
      its 95 % interval; ``LR theta = 0``: the likelihood-ratio statistic against T0 = N0;
      ``mean P(close next year)`` of the active NPOs at ``prediction.direction``;
    - ``Dev at optimum`` (mean over splits; quartiles of that point's Dev over the splits);
      a definition with nothing to search (T0, T3; T2 with one k0) has no optimum: it gives
      ``Dev (fixed definition)`` instead, and no theta, k2/k1 or k0.
    """
    r = result
    out: dict = {}
    dev_lo, dev_hi = _quartiles(r.dev_at_best)
    if r.optimum is not None:
        ib, iv = r.optimum.interior, r.optimum.theta_interval
        lo, hi = (iv.lo, iv.hi) if math.isfinite(iv.lo) else (None, None)
        out["optimum theta (deg)"] = Metric(ib.theta_deg, lo, hi)
        ratio = (None, None) if lo is None else (math.tan(math.radians(lo)), math.inf if hi >= 90
                                                 else math.tan(math.radians(hi)))
        out["optimum k2/k1"] = Metric(ib.ratio_k2_k1, *ratio)
    if r.searched and "k0" in USES[r.definition] and np.unique(r.points.k0).size > 1:
        out["optimum k0"] = Metric(r.best.k0, *_quartiles(r.per_split.k0))
    if r.fixed is not None:
        out["Dev (fixed definition)"] = Metric(r.fixed.dev_mean, dev_lo, dev_hi)
    else:
        value = r.optimum.interior.dev_mean if r.optimum is not None else r.best.dev
        out["Dev at optimum"] = Metric(value, dev_lo, dev_hi)
    if r.optimum is not None:
        out["optimum identified"] = "yes" if r.optimum.identified else "no"
    if r.likelihood is not None:
        lk = r.likelihood
        out["likelihood theta (deg)"] = Metric(lk.theta_deg, *lk.ci95_deg)
        out["likelihood k2/k1"] = Metric(lk.k2_over_k1, *lk.ratio_ci95)
        out["LR theta = 0"] = lk.lr_tests["theta = 0 (T0 = N0)"]["lr_statistic"]
    p = r.prediction.get("mean_p_close_next_year")
    if p is not None:
        out["mean P(close next year)"] = p
    return out
