"""Report sections of the hazard job (pure functions over its results).

Every section is built with :mod:`riskdask.htmlkit`, so every value is escaped (statements,
notes, file names), and every number is formatted by :mod:`riskdask.formatting`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import pandas as pd

from .. import htmlkit as h
from ..formatting import integer, sig
from ..htmlkit import Markup

__all__ = ["frame_table", "method_html", "optimum_html", "fixed_html", "splits_html",
           "panel_rules_html", "prediction_html", "sensitivity_html", "smoothing_html",
           "ranked_html"]

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


def method_html(cfg, rule, best, n_splits: int, invariant: bool) -> Markup:
    """Report section: how the time-at-risk, the hazard, Dev and the prediction are made."""
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
        h.p("Next-year closure probability: 1 − exp(−(H(T_next) − H(T_now))) with H the "
            "integral of the full-sample smoothed hazard at the chosen coefficients "
            f"(k1={sig(best.k1, 4)}, k2={sig(best.k2, 4)}, k0={sig(best.k0, 4)}); past the "
            "last observed failure time the last smoothed hazard is carried forward (rows "
            "flagged beyond_data). T_next is the time-at-risk after one more year without a "
            "grant (ranking) or with one."),
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


def prediction_html(info: dict) -> Markup:
    grant = ("" if info["if_grant_defined"] else
             f" The “if granted” probability is {info['if_grant_note']}.")
    return h.p(f"{integer(info['n_beyond_data'])} of {integer(info['n_active'])} active NPOs "
               "are flagged ", h.code("beyond_data"), ": their next-year time-at-risk exceeds "
               f"the last observed failure time ({sig(info['last_failure_time'], 4)}), "
               f"{integer(info['n_wholly_beyond_data'])} of them already are at or past it "
               f"today; for them {info['extrapolation_rule']}.", grant)


def ranked_html(info: dict, ranked: pd.DataFrame, n: int) -> Markup:
    """The prediction note and the ``n`` NPOs most likely to close within the next year."""
    return h.join([prediction_html(info), frame_table(ranked.head(n))])


def sensitivity_html(table: pd.DataFrame) -> Markup:
    return h.join([h.p("Sensitivity of the interior optimum to the bandwidth fraction "
                       "(direction search on the same splits):"), frame_table(table)])


def smoothing_html(cv: dict | None, boundary: str) -> Markup:
    edge = ("none (the seed's Gaussian kernel as written)" if boundary == "none" else
            "reflection about T = 0")
    parts = [h.p(f"Boundary correction at T = 0: {edge}.")]
    if cv is not None:
        parts.append(h.p(
            "Bandwidth by least-squares cross-validation of the kernel hazard (full sample, "
            f"at {cv['at']}): {sig(cv['fraction'], 3)} × max(T)",
            " — at the end of the candidates, the true minimiser may lie outside"
            if cv["at_edge"] else "", "."))
    return h.join(parts)
