"""The credit job's outputs: summary, tables, figures, report sections, headline and the
run-history metrics, all from a :class:`~riskdask.credit.pipeline.CreditResult` (no cluster
work here).

Every number of the headline and the report goes through :mod:`riskdask.formatting`
(estimates rounded to what their errors support), every report section through
:mod:`riskdask.htmlkit` (every value escaped). The strings of ``summary.json`` (the notes)
are the result's own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskdask.formatting import estimate, integer, sig
from riskdask.htmlkit import b, join, p, table, ul
from riskdask.protocol import Metric, Outputs

from .config import Config
from .model import level_key
from .pipeline import CreditResult

__all__ = ["present", "metrics", "summary"]

#: Notes worth a console line (the rest are in summary.json and the report).
_HEADLINE_NOTES = ("degenerate", "riskless", "no obligor can default")


def present(result: CreditResult, cfg: Config) -> Outputs:
    """Summary, Parquet tables, figures, the Step 6 (and Step 7) report sections and the
    headline of one run."""
    out = Outputs()
    s = summary(result, cfg)
    _tables(cfg, out, result)
    _figures(cfg, out, result)
    out.section("Risk measures (seed Step 6)", _risk_html(s))
    if result.fits is not None:
        out.section("Tail fits (seed Step 7)", _fits_html(s))
    out.summary = s
    out.headline = _headline(s)
    return out


def metrics(result: CreditResult) -> dict:
    """The run-history row: simulated EL and UL, VaR and ES per confidence level, each
    ± one Monte Carlo standard error (an exact figure has a zero-width interval, an
    undefined error none)."""
    m = result.moments
    out = {"EL": Metric.pm(m.el, m.el_se), "UL": Metric.pm(m.ul, m.ul_se)}
    for lv in result.stats.levels:
        c = f"{100 * lv.confidence:g}%"
        out[f"VaR {c}"] = Metric.pm(lv.var, lv.var_se)
        out[f"ES {c}"] = Metric.pm(lv.es, lv.es_se)
    return out


# ----------------------------------------------------------------------------- summary
def summary(result: CreditResult, cfg: Config) -> dict:
    """``summary.json``: the analytic and simulated figures with their errors, the levels,
    the notes, adaptive stopping, Step 7 and the importance-sampling shift."""
    inputs, an, stats, moments = result.inputs, result.analytics, result.stats, result.moments
    fv_p = an.fv_portfolio
    out = {
        "portfolio": "synthetic" if cfg.portfolio.path is None else cfg.portfolio.path,
        "n_obligors": inputs.portfolio.n_obligors,
        "n_positions": len(inputs.portfolio.positions),
        "migration_matrix": inputs.matrix.source,
        "correlation": inputs.correlation_kind,
        "fv_portfolio": fv_p,
        "efv_sum": an.efv_sum,
        "el_analytic": an.el, "el_analytic_pct": 100 * an.el / fv_p,
        "el_migration": an.el_migration, "el_default": an.el_default,
        "ul_analytic": an.ul, "ul_analytic_pct": 100 * an.ul / fv_p,
        "n_scenarios": stats.n_scenarios, "n_chunks": stats.n_chunks,
        "n_batches": stats.n_batches,
        "importance_sampling": result.importance_sampling,
        "el_simulated": moments.el, "el_simulated_se": moments.el_se,
        "el_simulated_pct": 100 * moments.el / fv_p,
        "ul_simulated": moments.ul, "ul_simulated_se": moments.ul_se,
        "ul_simulated_pct": 100 * moments.ul / fv_p,
        "el_z": result.el_z,
        "ul_z": result.ul_z,
        "mean_sfv": moments.mean_sfv,
        "degenerate": stats.degenerate,
        "levels": [dict(lv) for lv in result.levels],
        "notes": list(result.notes),
    }
    if result.run.adaptive is not None:
        out["adaptive"] = result.run.adaptive
    if result.fits is not None:
        out["tail_fits"] = _fit_summary(result.fits)
    if result.shift is not None:
        out["importance_shift"] = [float(x) for x in np.atleast_1d(result.shift)[:50]]
        out["importance_shift_norm"] = float(np.linalg.norm(result.shift))
    return out


def _fit_summary(fits) -> dict:
    """Step 7 for summary.json: per fit, parameters, VaR / ES per level and the QQ check."""
    out = {}
    for f in fits["fits"]:
        out[f.name] = {"ok": f.ok, "note": f.note,
                       "params": {k: float(v) for k, v in f.params.items()},
                       "levels": f.levels,
                       "qq_max_rel_deviation": fits["qq"][f.name]["max_rel_deviation"]}
    usable = {k: v["qq_max_rel_deviation"] for k, v in out.items()
              if v["ok"] and np.isfinite(v["qq_max_rel_deviation"])}
    out["best"] = min(usable, key=usable.get) if usable else None
    return out


# ----------------------------------------------------------------------------- tables
def _tables(cfg: Config, out: Outputs, result: CreditResult) -> None:
    """Parquet tables; ES contributions come from the reported run itself (under importance
    sampling its likelihood-weighted tail, from the buffer or the second pass)."""
    stats, an, model = result.stats, result.analytics, result.model
    pf = result.inputs.portfolio
    per = an.per_obligor
    ob = pf.obligors.copy()
    ob["fv"] = per.fv
    ob["efv"] = per.efv
    ob["el"] = per.el
    ob["el_migration"] = per.el_migration
    ob["el_default"] = per.el_default
    ob["ul"] = per.ul
    ob["simulated_mean_loss"] = stats.obligor_mean_loss
    for j, c in enumerate(cfg.simulation.confidence):
        ob[f"es_contribution_{level_key(c)}"] = stats.contributions[:, j]
    out.table("obligors", ob)

    cfv = pd.DataFrame(an.cfv, columns=[f"cfv_{r}" for r in result.inputs.matrix.scale])
    cfv.insert(0, "obligor_id", pf.obligors["obligor_id"].to_numpy())
    cfv.insert(1, "rating", pf.obligors["rating"].to_numpy())
    out.table("cfv_matrix", cfv)

    s = result.run.summary
    edges = model.hist_edges
    hist = s.histogram / s.n                 # (1/sim) sum of weights: unbiased under IS
    out.table("loss_histogram", pd.DataFrame({
        "loss_from": np.concatenate([[-np.inf], edges[:-1], [edges[-1]]]),
        "loss_to": np.concatenate([[edges[0]], edges[1:], [np.inf]]),
        "probability": hist}))

    out.table("tail_scenarios", _tail_table(cfg, result))

    rows = []
    for j, level in enumerate(stats.levels):
        if not level.contributions:
            continue
        contrib = stats.contributions[:, j]
        order = np.argsort(-contrib, kind="stable")
        for rank, i in enumerate(order, 1):
            rows.append({"confidence": level.confidence, "rank": rank,
                         "obligor_id": pf.obligors["obligor_id"].iloc[i],
                         "name": pf.obligors["name"].iloc[i],
                         "rating": pf.obligors["rating"].iloc[i],
                         "tail_expected_loss": stats.tail_obligor_loss[i, j],
                         "mean_loss": stats.obligor_mean_loss[i],
                         "es_contribution": contrib[i],
                         "share_of_es": contrib[i] / level.es if level.es else np.nan})
    out.table("es_contributions", pd.DataFrame(rows))

    out.table("risk_measures", pd.DataFrame([
        {k: v for k, v in lv.as_dict().items() if k != "contributions"}
        for lv in stats.levels]))
    if result.fits is not None:
        out.table("tail_fits", pd.DataFrame([
            {"fit": f.name, "ok": f.ok, "note": f.note, **lv}
            for f in result.fits["fits"] for lv in (f.levels if f.ok else [{}])]))


def _tail_table(cfg: Config, result: CreditResult) -> pd.DataFrame:
    """The worst scenarios: loss, SFV, weight, and (where the states were kept) how many
    obligors defaulted or were downgraded (-1: not kept)."""
    s = result.run.summary
    k = min(cfg.outputs.tail_rows, s.tail_loss.size)
    tail = pd.DataFrame({"rank": np.arange(1, k + 1), "scenario": s.tail_scenario[:k],
                         "loss": s.tail_loss[:k],
                         "sfv": result.analytics.fv_portfolio - s.tail_loss[:k],
                         "weight": s.tail_weight[:k]})
    m = min(k, s.tail_states.shape[0])
    defaults = np.full(k, -1)
    downgrades = np.full(k, -1)
    if m:
        st = s.tail_states[:m]
        defaults[:m] = (st == 0).sum(axis=1)
        downgrades[:m] = ((st < result.model.initial_state[None, :]) & (st > 0)).sum(axis=1)
    tail["n_defaults"] = defaults
    tail["n_downgrades"] = downgrades
    return tail


# ----------------------------------------------------------------------------- figures
def _figures(cfg: Config, out: Outputs, result: CreditResult) -> None:
    # matplotlib only when a run presents its figures (not on `riskdask jobs` / validate)
    from . import figures

    stats, fits, s = result.stats, result.fits, result.run.summary
    out.figure("loss_distribution",
               figures.loss_distribution(result.model.hist_edges, s, stats,
                                         result.analytics.fv_portfolio,
                                         fits=fits["fits"] if fits else ()),
               caption="Simulated one-year loss distribution (FV_P − SFV) with VaR "
                       "and ES at each confidence level"
                       + ("; dotted: the VaR of the Step 7 tail fits" if fits else ""))
    if fits is not None and any(f.ok for f in fits["fits"]):
        out.figure("tail_fits", figures.tail_fits(s.tail_loss, s.tail_weight, s.n,
                                                  fits["fits"], fits["qq"]),
                   caption="Seed Step 7: the simulated tail with the Vasicek and GPD "
                           "fits (survival function) and their QQ panel")
    j = len(cfg.simulation.confidence) - 1
    while j >= 0 and not stats.levels[j].contributions:
        j -= 1
    if j >= 0:
        out.figure("top_contributors",
                   figures.top_contributors(result.inputs.portfolio.obligors,
                                            stats.contributions[:, j], stats.levels[j],
                                            cfg.outputs.top_contributors),
                   caption="Obligors with the largest contribution to ES "
                           f"({100 * cfg.simulation.confidence[j]:g}%)")


# ----------------------------------------------------------------------------- headline
def _pct(level: dict) -> str:
    return f"{100 * level['confidence']:g}%"


def _headline(s: dict) -> list[tuple[str, str]]:
    """Console lines: every estimate with its error, rounded to what the error supports."""
    out = [("obligors / positions", f"{integer(s['n_obligors'])} / {integer(s['n_positions'])}"),
           ("FV_P (EUR)", sig(s["fv_portfolio"], 12)),  # analytic: not an estimate
           ("EL analytic / simulated",
            f"{sig(s['el_analytic'], 6)} / {estimate(s['el_simulated'], s['el_simulated_se'])}"),
           ("UL analytic / simulated",
            f"{sig(s['ul_analytic'], 6)} / {estimate(s['ul_simulated'], s['ul_simulated_se'])}"),
           ("scenarios", integer(s["n_scenarios"]))]
    for lv in s["levels"]:
        out.append((f"VaR / ES {_pct(lv)}",
                    f"{estimate(lv['var'], lv['var_se'])} / {estimate(lv['es'], lv['es_se'])}"
                    f" ({sig(lv['var_pct'], 3)}% / {sig(lv['es_pct'], 3)}%)"))
        if lv.get("variance_reduction_es") is not None:
            out.append((f"  IS variance reduction ES {_pct(lv)}", _reduction_es(lv)))
    a = s.get("adaptive")
    if a is not None:
        out.append(("adaptive stop",
                    f"{integer(a['scenarios_used'])} scenarios, relative SE "
                    f"{sig(a['relative_se'], 2)} (target {a['target_relative_se']:g}"
                    f"{'' if a['reached'] else ', not reached: cap'})"))
    out += [("note", note) for note in s["notes"] if note.startswith(_HEADLINE_NOTES)]
    return out


def _reduction_es(lv: dict) -> str:
    """The IS variance reduction of ES, with its 95 % interval when there is one."""
    if lv.get("variance_reduction_es_low") is None:
        return sig(lv.get("variance_reduction_es"), 2)
    return (estimate(lv["variance_reduction_es"], lo=lv["variance_reduction_es_low"],
                     hi=lv["variance_reduction_es_high"]) + " (95% interval)")


# ----------------------------------------------------------------------------- report
def _risk_html(s: dict):
    """Risk-measure table (with Monte Carlo errors) and the run's notes, for report.html."""
    is_run = s["importance_sampling"]
    header = ["confidence", "a", "VaR (EUR) ± SE", "VaR 95% CI", "VaR % FV", "ES (EUR) ± SE",
              "ES % FV"] + (["variance reduction VaR / ES (95% interval)"] if is_run else [])
    rows = []
    for lv in s["levels"]:
        row = [_pct(lv), integer(lv["a"]), estimate(lv["var"], lv["var_se"]),
               f"{sig(lv['var_ci_low'], 4)} – {sig(lv['var_ci_high'], 4)}",
               sig(lv["var_pct"], 3), estimate(lv["es"], lv["es_se"]), sig(lv["es_pct"], 3)]
        if is_run:
            vr = f"{sig(lv.get('variance_reduction_var'), 2)} / {_reduction_es(lv)}"
            if lv.get("variance_reduction_note"):
                vr += f" — {lv['variance_reduction_note']}"
            row.append(vr)
        rows.append(row)
    moments = p(
        f"EL analytic {sig(s['el_analytic'], 6)} (migration {sig(s['el_migration'], 4)}, "
        f"default {sig(s['el_default'], 4)}), simulated "
        f"{estimate(s['el_simulated'], s['el_simulated_se'])}; UL analytic "
        f"{sig(s['ul_analytic'], 6)}, simulated "
        f"{estimate(s['ul_simulated'], s['ul_simulated_se'])} (seed eqs. 3.6-3.11 and Step 6). "
        f" Errors: linearised batch means over {integer(s['n_batches'])} fixed batches of "
        "scenarios, and for VaR the sampling law of the order statistic SFV_(a) (its 95% "
        "interval in the table); valid for discrete loss laws and for importance-sampling "
        "weights.")
    return join([moments, table(header, rows), ul(s["notes"])])


def _fits_html(s: dict):
    """Step 7: each fit's VaR / ES beside the empirical ones, and which fits the tail."""
    fits = s["tail_fits"]
    emp = {lv["confidence"]: lv for lv in s["levels"]}
    rows = []
    for name in ("vasicek", "gpd"):
        f = fits[name]
        if not f["ok"]:
            rows.append([name, "", f"no fit: {f['note']}", "", ""])
            continue
        for lv in f["levels"]:
            e = emp[lv["confidence"]]
            rows.append([name, _pct(lv),
                         f"{estimate(lv['var'], lv['var_se'])} (simulated "
                         f"{estimate(e['var'], e['var_se'])})",
                         f"{estimate(lv['es'], lv['es_se'])} (simulated "
                         f"{estimate(e['es'], e['es_se'])})",
                         sig(f["qq_max_rel_deviation"], 2)])
    best = fits["best"]
    if best:
        verdict = p("Closer to the simulated tail (QQ panel, largest relative deviation of the "
                    "fitted from the simulated tail quantiles): ", b(best), ". Vasicek's law "
                    "assumes an infinitely granular default-mode portfolio (seed footnote 6); "
                    "the GPD describes only the tail above its threshold.")
    else:
        verdict = p("Neither fit is usable for this tail.")
    header = ["fit", "confidence", "VaR ± SE", "ES ± SE", "QQ max rel. dev."]
    return join([verdict, table(header, rows)])
