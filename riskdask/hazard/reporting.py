"""Plain summary values and report HTML for the hazard job's uncertainty outputs (pure functions).

Every number leaves here as a Python ``float``/``int``/``bool``/``str`` (no numpy scalars in
``summary.json`` or messages); headline values carry the rounding their interval supports.
"""

from __future__ import annotations

import dataclasses
import html
import math

import numpy as np
import pandas as pd

__all__ = ["plain", "optimum_summary", "optimum_html", "splits_html", "prediction_html",
           "panel_rules_html", "sensitivity_html", "smoothing_html", "fixed_html"]


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
            "win_fraction_held_out": r.win_fraction_held_out} for r in rep.comparison.itertuples()},
    })


def _table(df: pd.DataFrame, fmt: str = "%.4g") -> str:
    return df.to_html(index=False, float_format=lambda v: fmt % v, na_rep="–")


def optimum_html(rep) -> str:
    """Report section: the optimum with its uncertainty (an ``OptimumReport``)."""
    if rep.interior is None:
        return f"<p>{html.escape(rep.statement)}</p>"
    ib, iv = rep.interior, rep.theta_interval
    axes_rows = [{"axis": n, "dev_mean": a.dev_mean, "dev_sd": a.dev_sd,
                  "beats_interior": a.beats_interior} for n, a in rep.axes.items() if a]
    verdict = ("<b>identified</b>" if rep.identified else "<b>not identified</b>")
    spread = (f"sd over splits {ib.dev_sd:.2g}" if math.isfinite(ib.dev_sd) else "one split: no spread")
    return (
        f"<p>Headline ({verdict}): {html.escape(rep.headline.text)}.</p>"
        f"<p>{html.escape(rep.statement)}.</p>"
        f"<p>Interior optimum (k1 &gt; 0, k2 &gt; 0) of the mean Dev over {rep.n_splits} split(s): "
        f"theta = {ib.theta_deg:.4g}°, k2/k1 = {ib.ratio_k2_k1:.4g}, "
        f"Dev = {ib.dev_mean:.4g} ({spread}). Per-split optima: median "
        f"{iv.median:.3g}°, range {iv.min:.3g}° .. {iv.max:.3g}°; in "
        f"{iv.n_splits_best_on_axis} of {rep.n_splits} splits the best point overall lies on an "
        f"axis.</p>"
        "<p>The axes are separate models, evaluated on their own: at k2 = 0 the second feature stops "
        "breaking ties in N0, so Dev jumps there (it is not the limit of the interior).</p>"
        + _table(pd.DataFrame(axes_rows))
        + "<p>Paired comparison across splits with fixed choices (difference = Dev at the optimum − "
          "Dev of the fixed choice; a win is a split where the optimum's Dev is lower). <i>In-sample</i>: "
          "the optimum was chosen on these splits, so it wins on average by construction; "
          "<i>held out</i>: chosen on the other splits, scored on the one left out.</p>"
        + _table(rep.comparison[["fixed_choice", "dev_fixed_mean", "mean_difference", "win_fraction_in_sample",
                                 "mean_difference_held_out", "win_fraction_held_out"]])
        + "<p>The splits reuse the same NPOs: the spread across them shows how much the choice "
          "depends on the split, it is not a sampling standard error.</p>")


def splits_html(usable) -> str:
    """Report section text on unusable splits (:class:`~riskdask.hazard.split.UsableSplits`)."""
    return f"<p>{html.escape(usable.describe())}.</p>"


def prediction_html(info: dict) -> str:
    grant = ("" if info["if_grant_defined"] else
             f" The “if granted” probability is {html.escape(info['if_grant_note'])}.")
    return (f"<p>{info['n_beyond_data']} of {info['n_active']} active NPOs are flagged "
            f"<code>beyond_data</code>: their next-year time-at-risk exceeds the last observed failure "
            f"time ({info['last_failure_time']:.4g}), {info['n_wholly_beyond_data']} of them already "
            f"are at or past it today; for them {html.escape(info['extrapolation_rule'])}."
            f"{grant}</p>")


def panel_rules_html(counts: dict, sentences: dict) -> str:
    rows = [{"rule": k, "what": sentences[k], "count": int(v)} for k, v in counts.items()]
    return ("<p>Panel shapes handled by rule (each can be made an error with "
            "<code>data.rules.&lt;rule&gt; = \"error\"</code>):</p>" + _table(pd.DataFrame(rows)))


def sensitivity_html(table: pd.DataFrame) -> str:
    return ("<p>Sensitivity of the interior optimum to the bandwidth fraction (direction search on "
            "the same splits):</p>" + _table(table))


def smoothing_html(cv: dict | None, boundary: str) -> str:
    edge = ("none (the seed's Gaussian kernel as written)" if boundary == "none" else
            "reflection about T = 0")
    text = f"<p>Boundary correction at T = 0: {edge}.</p>"
    if cv is not None:
        text += (f"<p>Bandwidth by least-squares cross-validation of the kernel hazard (full sample, "
                 f"at {html.escape(cv['at'])}): {cv['fraction']:.3g} × max(T)"
                 + (" — at the end of the candidates, the true minimiser may lie outside" if cv["at_edge"] else "")
                 + ".</p>")
    return text


def fixed_html(rep) -> str:
    """Report text for a :class:`~riskdask.hazard.uncertainty.FixedDefinition`."""
    w = " + ".join(f"{v:g}·{k}" for k, v in rep.weights.items() if v)
    return (f"<p>{html.escape(rep.statement)}: T = {w}. Dev over {rep.n_splits} splits: "
            f"{rep.dev_mean:.3g} (sd {rep.dev_sd:.2g}).</p>")
