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

from riskdask.formatting import estimate, integer, is_finite, sig
from riskdask.htmlkit import b, join, p, table, ul
from riskdask.protocol import Metric, Outputs

from .config import Config
from .model import level_key
from .pipeline import CreditResult
from .whatif_run import kept_tables

__all__ = ["present", "metrics", "summary"]

#: Notes worth a console line (the rest are in summary.json and the report).
_HEADLINE_NOTES = ("degenerate", "riskless", "no obligor can default", "caution")


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
    if "concentration" in s:
        out.section("Concentration and granularity adjustment", _concentration_html(s))
    if s.get("stress"):
        out.section("Factor stress (from the run's own scenarios)", _stress_html(s))
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
    if result.concentration is not None:
        c = result.concentration
        out["concentration"] = {
            "name_hhi": c.name_hhi, "effective_names": c.effective_names,
            "sector_hhi": c.sector_hhi, "largest_share": c.largest_share,
            "levels": [dict(lv) for lv in c.levels]}
    if result.stress:
        out["stress"] = [{k: v for k, v in st.items() if k != "stats"} for st in result.stress]
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
    verdict = fits.get("verdict") or {}
    out["verdict"] = dict(verdict)
    out["best"] = verdict.get("best")
    out["lattice_step"] = fits.get("lattice_step")
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
    out.table("positions", pf.positions)     # the validated book (what-if: the run's own)

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
    if s.scenario_loss is not None:          # kept for `riskdask whatif` (whatif_run)
        for name, frame in kept_tables(s, model).items():
            out.table(name, frame)

    # ES contribution = tail expected loss - the mean it is measured from: the simulated
    # mean loss (plain sampling), the analytic EL_i under importance sampling (as VaR / ES)
    analytic_mean = stats.mean_reference == "analytic"
    mean_loss = per.el if analytic_mean else stats.obligor_mean_loss
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
                         "mean_loss": mean_loss[i],
                         "mean_loss_source": "analytic EL_i" if analytic_mean else "simulated",
                         "simulated_mean_loss": stats.obligor_mean_loss[i],
                         "es_contribution": contrib[i],
                         "share_of_es": contrib[i] / level.es if level.es else np.nan})
    out.table("es_contributions", pd.DataFrame(rows))

    if result.stress:
        out.table("stress", pd.DataFrame([
            {"stress": st["name"], "factor": st["factor"], "kind": st["kind"],
             "value": st["value"], "el": st["el"], "el_se": st["el_se"], **lv}
            for st in result.stress for lv in st["levels"]]))
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
                    f"{_var_text(lv)} / {_es_text(lv)}"
                    f" ({sig(lv['var_pct'], 3)}% / {sig(lv['es_pct'], 3)}%)"))
        if "variance_reduction_es" in lv:
            out.append((f"  IS variance reduction VaR / ES {_pct(lv)}",
                        f"{_reduction(lv, 'var')} / {_reduction(lv, 'es')}"))
    for st in s.get("stress", ()):
        lv = st["levels"][-1]
        out.append((f"stress {st['name']}",
                    f"EL {estimate(st['el'], st['el_se'])}, VaR / ES {_pct(lv)} "
                    f"{estimate(lv['var'], lv['var_se'])} / {estimate(lv['es'], lv['es_se'])}"))
    c = s.get("concentration")
    if c is not None:
        out.append(("name / sector HHI",
                    f"{sig(c['name_hhi'], 3)} ({sig(c['effective_names'], 3)} effective names)"
                    f" / {sig(c['sector_hhi'], 3, undefined='no sectors')}"))
    a = s.get("adaptive")
    if a is not None:
        out.append(("adaptive stop",
                    f"{integer(a['scenarios_used'])} scenarios, relative SE "
                    f"{sig(a['relative_se'], 2)} (target {a['target_relative_se']:g}"
                    f"{'' if a['reached'] else ', not reached: cap'})"))
    out += [("note", note) for note in s["notes"] if note.startswith(_HEADLINE_NOTES)]
    return out


def _var_text(lv: dict) -> str:
    """VaR ± SE; on a loss atom (the error below the lattice spacing: the tiny probability
    of jumping to the next atom) the value and where it sits instead of an error like
    1e-22."""
    spacing, se = lv.get("lattice_spacing"), lv.get("var_se")
    if is_finite(spacing) and is_finite(se) and se < spacing:
        return (f"{sig(lv['var'], 6)} (on a loss atom: its error is below the lattice "
                f"spacing {sig(spacing, 3)})")
    return estimate(lv["var"], se)


def _es_text(lv: dict) -> str:
    """ES ± SE; an ES tail on one loss atom (ES is that atom; its error only the chance of
    a jump to the next one) says so instead of an error like 1e-5."""
    spacing, se = lv.get("lattice_spacing"), lv.get("es_se")
    if lv.get("tail_distinct") == 1 and is_finite(spacing) and is_finite(se) and se < spacing:
        return f"{sig(lv['es'], 6)} (the ES tail is one loss atom)"
    return estimate(lv["es"], se)


def _reduction(lv: dict, measure: str) -> str:
    """The IS variance reduction of ``measure`` ("var" / "es"), with its 95 % interval when
    there is one; where it is not meaningful (a discrete loss law, an error of 0) the reason
    instead of a number (:func:`riskdask.credit.uncertainty.lattice_reason`)."""
    value = lv.get(f"variance_reduction_{measure}")
    note = lv.get(f"variance_reduction_{measure}_note")
    if value is None:
        return sig(None, undefined=note or "no variance ratio")
    if lv.get(f"variance_reduction_{measure}_low") is None:
        return sig(value, 2)
    return (estimate(value, lo=lv[f"variance_reduction_{measure}_low"],
                     hi=lv[f"variance_reduction_{measure}_high"]) + " (95% interval)")


# ----------------------------------------------------------------------------- report
def _risk_html(s: dict):
    """Risk-measure table (with Monte Carlo errors) and the run's notes, for report.html."""
    is_run = s["importance_sampling"]
    header = ["confidence", "a", "VaR (EUR) ± SE", "VaR 95% CI", "VaR % FV", "ES (EUR) ± SE",
              "ES % FV"] + (["variance reduction VaR / ES (95% interval)"] if is_run else [])
    rows = []
    for lv in s["levels"]:
        row = [_pct(lv), integer(lv["a"]), _var_text(lv),
               f"{sig(lv['var_ci_low'], 4)} – {sig(lv['var_ci_high'], 4)}",
               sig(lv["var_pct"], 3), _es_text(lv), sig(lv["es_pct"], 3)]
        if is_run:
            row.append(f"{_reduction(lv, 'var')} / {_reduction(lv, 'es')}"
                       if "variance_reduction_es" in lv else "no plain twin")
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
            rows.append([name, "", f"no fit: {f['note']}", "", ""])   # the reason, no value
            continue
        for lv in f["levels"]:
            e = emp[lv["confidence"]]
            rows.append([name, _pct(lv),
                         f"{estimate(lv['var'], lv['var_se'])} (simulated "
                         f"{estimate(e['var'], e['var_se'])})",
                         f"{estimate(lv['es'], lv['es_se'])} (simulated "
                         f"{estimate(e['es'], e['es_se'])})",
                         sig(f["qq_max_rel_deviation"], 2, undefined="no QQ check")])
    verdict = fits.get("verdict") or {}
    best = fits["best"]
    d, d_se = verdict.get("difference"), verdict.get("difference_se")
    if d is not None:
        decided = (join([b(best), " fits better"]) if verdict.get("decisive") else
                   f"neither is preferred ({verdict.get('reason')}; {best} is higher)")
        verdict_p = p("Which fits: by the ", verdict["criterion"], ", ",
                      estimate(d, d_se), " nats per tail scenario over ",
                      integer(verdict["held_out_scenarios"]), " held-out tail scenarios: ",
                      decided, ". Vasicek's law assumes an infinitely granular default-mode "
                      "portfolio (seed footnote 6); the GPD describes only the tail above its "
                      "threshold" + (" and, on this loss lattice (step "
                                     f"{sig(fits['lattice_step'], 4)}), is continuity-corrected"
                                     if fits.get("lattice_step") else "") + ".")
    elif best:
        verdict_p = p("Only ", b(best), " is meaningful for this tail (", verdict.get("reason"),
                      ").")
    else:
        verdict_p = p("Neither fit is meaningful for this tail.")
    header = ["fit", "confidence", "VaR ± SE", "ES ± SE", "QQ max rel. dev."]
    return join([verdict_p, table(header, rows)])


def _concentration_html(s: dict):
    """HHI and the asymptotic (ASRF) VaR with its granularity adjustment beside the
    simulated VaR, and why they differ."""
    c = s["concentration"]
    emp = {lv["confidence"]: lv for lv in s["levels"]}
    rows = []
    for lv in c["levels"]:
        e = emp[lv["confidence"]]
        rows.append([_pct(lv), sig(lv["asrf_var"], 4), sig(lv["granularity_adjustment"], 3),
                     sig(lv["adjusted_var"], 4), estimate(e["var"], e["var_se"])])
    head = p(f"Name HHI {sig(c['name_hhi'], 3)} (effective number of names "
             f"{sig(c['effective_names'], 3)}, largest exposure share "
             f"{sig(100 * c['largest_share'], 3)}%); sector HHI "
             f"{sig(c['sector_hhi'], 3, undefined='no sector column')}. Exposure: the loss in "
             "default FV_i - CFV_i^D.")
    why = p("The asymptotic single-risk-factor VaR (Vasicek 2002) assumes an infinitely "
            "granular portfolio; the granularity adjustment (Gordy 2003, eq. 7; Gordy & "
            "Lütkebohmert 2013, in its one-factor Gaussian form) adds the first-order effect "
            "of name concentration. Both are default-mode and one-factor (each obligor's "
            "systematic R^2 as its correlation), so they differ from the simulated VaR by the "
            "migration losses, the diversification across sector / country factors, and the "
            "higher-order granularity terms of a very concentrated book (few effective names).")
    header = ["confidence", "ASRF VaR", "granularity adjustment", "ASRF + GA",
              "simulated VaR ± SE"]
    return join([head, table(header, rows), why])


def _stress_html(s: dict):
    """Conditional EL / VaR / ES of each configured stress beside the unstressed run."""
    base = {lv["confidence"]: lv for lv in s["levels"]}
    rows = []
    for st in s["stress"]:
        what = (f"{st['factor']} {st['value']:+g} sigma" if st["kind"] == "shift" else
                f"worst {100 * st['value']:g}% of {st['factor']} ({st['worst_side']} side)")
        for lv in st["levels"]:
            b0 = base[lv["confidence"]]
            rows.append([st["name"], what, estimate(st["el"], st["el_se"]), _pct(lv),
                         estimate(lv["var"], lv["var_se"]), estimate(lv["es"], lv["es_se"]),
                         estimate(b0["es"], b0["es_se"])])
    text = p("No new scenarios: the run's own chunks re-weighted -- a shift of a factor's "
             "mean by k sigma by the likelihood ratio exp(k eta - k^2/2), a conditioning on "
             "its worst q by the indicator over q (times the importance-sampling weight where "
             "it is on). VaR / ES are measured from the stressed mean (seed convention). A "
             "large shift leaves few effective scenarios (about n exp(-k^2)): read the errors.")
    header = ["stress", "scenario", "EL ± SE", "confidence", "VaR ± SE", "ES ± SE",
              "unstressed ES ± SE"]
    return join([text, table(header, rows)])
