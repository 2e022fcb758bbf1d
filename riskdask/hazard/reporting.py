"""Report sections of the hazard job (pure functions over its results).

Every section is built with :mod:`riskdask.htmlkit`, so every value is escaped (statements,
notes, file names), and every number is formatted by :mod:`riskdask.formatting`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import pandas as pd

from .. import htmlkit as h
from ..formatting import estimate, integer, sig
from ..htmlkit import Markup

__all__ = ["frame_table", "method_html", "optimum_html", "fixed_html", "splits_html",
           "panel_rules_html", "prediction_html", "sensitivity_html", "smoothing_html",
           "ranked_html", "likelihood_text", "likelihood_html", "holdout_html"]

FORMULAS = {"T": "T = k1·N0 + k2·N1 (seed eq. 5)", "T0": "T0 = N0 (Appendix A, eq. 9)",
            "T1": "T1 = k1·N0 + k2·Y, Y = N1 + (1+k0)·N2 + (1+2k0)·N3 + … (eqs. 10, 12)",
            "T2": "T2 = Y (eq. 13)", "T3": "T3 = X (eq. 14)"}


def _cell(value, digits: int) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return integer(value)
    if isinstance(value, Real):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return sig(value, digits)
    return str(value)


def frame_table(df: pd.DataFrame, digits: int = 4) -> Markup:
    """A DataFrame as an escaped table; floats to ``digits`` significant digits."""
    rows = [[_cell(v, digits) for v in record]
            for record in df.itertuples(index=False, name=None)]
    return h.tag("div", h.table([str(c) for c in df.columns], rows), class_="scroll")


def weights_text(weights: dict, times: str = "·") -> str:
    """``1·N0 + 0.5·X``: the nonzero feature weights of a fixed definition."""
    return " + ".join(f"{_weight(v)}{times}{k}" for k, v in weights.items() if v)


def _weight(v: float) -> str:
    return integer(v) if float(v).is_integer() else sig(v, 4)


def method_html(cfg, rule, best, n_splits: int, invariant: bool, weights=None) -> Markup:
    """Report section: how the time-at-risk, the hazard, Dev and the prediction are made.

    ``weights`` (feature -> weight) are shown for a definition without k1/k2 (T0, T2, T3):
    its real weights, not the placeholder k1 = k2 = 1 the grid carries.
    """
    from .timeatrisk import USES

    uses = USES[cfg.definition]
    if "k1" in uses:
        chosen = f"k1={sig(best.k1, 4)}, k2={sig(best.k2, 4)}" + (
            f", k0={sig(best.k0, 4)}" if "k0" in uses else "")
    else:
        chosen = f"{cfg.definition} = {weights_text(weights or {})} (no k1, k2)" + (
            f", k0={sig(best.k0, 4)}" if "k0" in uses else "")
    scale = ("In this mode Dev(c·k1, c·k2) = Dev(k1, k2): only the direction k2/k1 matters "
             "and the minimum is a ray, reported as k2/k1 and its angle. " if invariant else
             "In this mode the scale of the coefficients matters. ")
    return h.join([
        h.p("Time-at-risk: ", h.b(FORMULAS[cfg.definition]), ". N0 counts the years from the "
            "first no-grant year after a grant year ", h.tag("i", "to and including"),
            f" the closure year (or {cfg.period.end}); N_j is the number of no-grant spells "
            "of at least j years in that window, X the no-grant years."),
        h.p("Baseline hazard: Breslow/Nelson–Aalen increments d/n at the distinct failure "
            "times (T rounded to 9 decimals), smoothed with the Gaussian kernel "
            "h(t) = (1/b) Σ K((t−t_i)/b) ΔH(t_i) (seed eq. 4). Grid and bandwidth: ",
            h.b(rule.describe()), ". ", scale,
            f"Dev = sqrt(S/101)/V with V from sample {cfg.split.sample_one} (the standard "
            f"curve), averaged over {integer(n_splits)} balanced splits (strata: field × "
            f"function × age band {cfg.split.age_bands})."),
        h.p("Chosen coefficients (Dev): ", chosen, ". Next-year closure probability: the "
            "annual closure probability of the person-year Poisson model (cubic B-spline "
            "log-hazard in T) at the direction prediction.direction names, evaluated at the "
            "time-at-risk the NPO reaches next year without a grant (ranking) or with one; "
            "past the largest T of the data the fitted hazard there is carried forward (rows "
            "flagged beyond_data)."),
    ])


def optimum_html(rep) -> Markup:
    """Report section: the optimum with its uncertainty (an ``OptimumReport``)."""
    if rep.interior is None:
        return h.p(rep.statement)
    ib, iv = rep.interior, rep.theta_interval
    axes = pd.DataFrame([{"axis": n, "dev_mean": a.dev_mean, "dev_sd": a.dev_sd,
                          "beats_interior": a.beats_interior}
                         for n, a in rep.axes.items() if a])
    spread = (f"sd over splits {sig(ib.dev_sd, 2)}" if math.isfinite(ib.dev_sd) else
              "one split: no spread")
    comparison = rep.comparison[["fixed_choice", "dev_fixed_mean", "mean_difference",
                                 "win_fraction_in_sample", "mean_difference_held_out",
                                 "win_fraction_held_out"]]
    return h.join([
        h.p("Headline (", h.b("identified" if rep.identified else "not identified"), "): ",
            rep.headline.text, "."),
        h.p(rep.statement, "."),
        h.p(f"Interior optimum (k1 > 0, k2 > 0) of the mean Dev over {integer(rep.n_splits)} "
            f"split(s): theta = {sig(ib.theta_deg, 4)}°, k2/k1 = {sig(ib.ratio_k2_k1, 4)}, "
            f"Dev = {sig(ib.dev_mean, 4)} ({spread}). Per-split optima: median "
            f"{sig(iv.median, 3)}°, range {sig(iv.min, 3)}° .. {sig(iv.max, 3)}°; in "
            f"{integer(iv.n_splits_best_on_axis)} of {integer(rep.n_splits)} splits the best "
            "point overall lies on an axis."),
        h.p("The axes are separate models, evaluated on their own: at k2 = 0 the second "
            "feature stops breaking ties in N0, so Dev jumps there (it is not the limit of the "
            "interior)."),
        frame_table(axes),
        h.p("Paired comparison across splits with fixed choices (difference = Dev at the "
            "optimum − Dev of the fixed choice; a win is a split where the optimum's Dev is "
            "lower). ", h.tag("i", "In-sample"), ": the optimum was chosen on these splits, "
            "so it wins on average by construction; ", h.tag("i", "held out"), ": chosen on "
            "the other splits, scored on the one left out."),
        frame_table(comparison),
        h.p("The splits reuse the same NPOs: the spread across them shows how much the choice "
            "depends on the split, it is not a sampling standard error."),
    ])


def fixed_html(rep) -> Markup:
    """Report text for a :class:`~riskdask.hazard.uncertainty.FixedDefinition`."""
    return h.p(f"{rep.statement}: T = {weights_text(rep.weights)}. Dev over "
               f"{integer(rep.n_splits)} splits: {sig(rep.dev_mean, 3)} "
               f"(sd {sig(rep.dev_sd, 2, undefined='one split')}).")


def splits_html(usable) -> Markup:
    """Report text on unusable splits (:class:`~riskdask.hazard.split.UsableSplits`)."""
    return h.p(usable.describe(), ".")


def panel_rules_html(counts: dict, sentences: dict) -> Markup:
    rows = pd.DataFrame([{"rule": k, "what": sentences[k], "count": int(v)}
                         for k, v in counts.items()])
    return h.join([h.p("Panel shapes handled by rule (each can be made an error with ",
                       h.code('data.rules.<rule> = "error"'), "):"),
                   frame_table(rows)])


def likelihood_text(rep) -> str:
    """``theta = 64 deg (95% profile CI 52 .. 73), k2/k1 = 2.1; LR vs theta = 0: 27``."""
    lo, hi = rep.ci95_deg
    t0 = rep.lr_tests["theta = 0 (T0 = N0)"]
    rlo, rhi = rep.ratio_ci95
    if not math.isfinite(rep.k2_over_k1):
        ratio = f"∞ [{sig(rlo, 3)}, ∞)"
    elif not math.isfinite(rhi):
        ratio = f"{sig(rep.k2_over_k1, 3)} [{sig(rlo, 2)}, ∞)"
    else:
        ratio = estimate(rep.k2_over_k1, lo=rlo, hi=rhi)
    return (f"theta = {estimate(rep.theta_deg, lo=lo, hi=hi)}° (95% profile-likelihood "
            f"interval), k2/k1 = {ratio}; LR vs theta = 0: {sig(t0['lr_statistic'], 3)} "
            f"(p = {sig(t0['p_value'], 2)})")


def likelihood_html(rep, optimum=None) -> Markup:
    """Report section: the profile likelihood of theta beside the Dev optimum."""
    tests = pd.DataFrame([{"null": k, "LR statistic": v["lr_statistic"],
                           "p value": v["p_value"], "reference": v["reference"],
                           "rejected at 5%": v["rejected_at_5pct"]}
                          for k, v in rep.lr_tests.items()])
    beside = ([] if optimum is None or optimum.interior is None else [h.p(
        "Beside it, the seed's Dev criterion: ", optimum.headline.text, ". Dev compares the "
        "shapes of two half-sample curves; the likelihood asks how well T explains who closed "
        "when, and it is the one whose interval means what it says (on simulated panels with "
        "a known direction it covers it; see benchmarks/hazard.py).")])
    return h.join([
        h.p(h.b("Likelihood direction: "), likelihood_text(rep), "."),
        h.p(f"Discrete-time person-year Poisson model ({integer(rep.n_person_years)} "
            f"NPO-years from the first year closures count, {integer(rep.n_closures)} "
            f"closures), log-hazard a cubic B-spline in T_theta with {integer(rep.df)} degrees "
            "of freedom, profiled over theta in [0°, 90°] (axes included); interval "
            "{theta: 2 (l_max − l(theta)) ≤ 3.84}. At theta = 0 and 90 the test's null lies on "
            "the boundary: p from 0.5 χ²₀ + 0.5 χ²₁."),
        frame_table(tests), *beside])


def holdout_html(rep) -> Markup:
    """Report section: the temporal holdout of the directions (a ``HoldoutReport``)."""
    years = rep.folds.origin_year.tolist() if "origin_year" in rep.folds else []
    span = f" (origins {years[0]}–{years[-1]})" if years else ""
    rel = rep.reliability.pivot_table(index="bin", columns="criterion",
                                      values=["mean_predicted", "observed_rate"])
    rel.columns = [f"{c} {v}" for v, c in rel.columns]
    return h.join([
        h.p(h.b("Which criterion predicts: "), rep.statement, "."),
        h.p(f"Temporal holdout{span}: for each origin year t the person-year model is fitted "
            "on the years up to t only and predicts the closures of year t + 1; the likelihood "
            "direction is re-estimated in every fold, the Dev direction is the run's (chosen "
            "on all years, so if anything favoured). Log score: mean of y log p + (1 − y) "
            "log(1 − p), higher is better; Brier: mean (p − y)², lower is better."),
        frame_table(rep.scores, 5),
        h.p("Paired differences of the log score (best − other) per NPO-year, 95% interval "
            "from the NPO-clustered standard error:"),
        frame_table(rep.paired, 3),
        h.p("Reliability (deciles of each criterion's predictions): mean predicted vs "
            "observed closure rate."),
        frame_table(rel.reset_index(), 3),
        h.p("Directions used per fold:"), frame_table(rep.folds, 3)])


def prediction_html(info: dict) -> Markup:
    grant = ("" if info["if_grant_defined"] else
             f" The “if granted” probability is {info['if_grant_note']}.")
    d = info.get("direction", {})
    where = d.get("source", "")
    if "theta_deg" in d:
        where += f", theta = {sig(d['theta_deg'], 3)}°"
    return h.p(f"Probabilities from the {info['model']} at the direction {where} "
               "(config prediction.direction). "
               f"{integer(info['n_beyond_data'])} of {integer(info['n_active'])} active NPOs "
               "are flagged ", h.code("beyond_data"), ": their next-year time-at-risk exceeds "
               f"the largest in the data ({sig(info['largest_time_at_risk'], 4)}), "
               f"{integer(info['n_wholly_beyond_data'])} of them already are at or past it "
               f"today; for them {info['extrapolation_rule']}.", grant)


def ranked_html(info: dict, ranked: pd.DataFrame, n: int) -> Markup:
    """The prediction note and the ``n`` NPOs most likely to close within the next year."""
    return h.join([prediction_html(info), frame_table(ranked.head(n))])


def sensitivity_html(table: pd.DataFrame) -> Markup:
    return h.join([h.p("Sensitivity of the interior optimum to the bandwidth fraction "
                       "(direction search on the same splits):"), frame_table(table)])


def smoothing_html(cv: dict | None, boundary: str, origin: float = 0.0,
                   ties: str = "data") -> Markup:
    edge = ("none (the seed's Gaussian kernel as written)" if boundary == "none" else
            f"reflection about the smallest possible T at the chosen coefficients, "
            f"T = {sig(origin, 4)} (a failure exactly there is counted once)")
    tie = ("Ties on rational rays (k2/k1 = 1/2, 1, 2 …, where distinct (N0, N1) give the same "
           "T) are broken in the search as the directions just above them do, so Dev(theta) "
           "has no special values there; the axes and the fixed choices keep the data's ties."
           if ties == "direction_limit" else
           "Ties on rational rays are grouped as in the data (Breslow d/n), so Dev jumps on "
           "every simple-ratio ray.")
    parts = [h.p(f"Boundary correction where the data start: {edge}."), h.p(tie)]
    if cv is not None:
        parts.append(h.p(
            "Bandwidth by least-squares cross-validation of the kernel hazard (full sample, "
            f"at {cv['at']}): {sig(cv['fraction'], 3)} × max(T)",
            " — at the end of the candidates, the true minimiser may lie outside"
            if cv["at_edge"] else "", "."))
    return h.join(parts)
