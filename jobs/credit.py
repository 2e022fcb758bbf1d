"""credit: CreditMetrics portfolio credit risk (seed ``004_8c70402d356208da.txt``, 3.2-3.3).

Analytic FV, EFV, EL (split into migration and default) and UL (eqs. 3.1-3.11); distributed
Monte Carlo VaR and ES (Steps 0-6) with an exact tree reduce, Monte Carlo standard errors,
optional importance sampling, and each obligor's contribution to ES.

Wiring only: config -> data (riskdask.credit.data / synthetic) -> Step 0 and analytics ->
simulation chunks (and, for a full correlation matrix, analytic pair tiles) on the engine ->
outputs. The maths is in ``riskdask/credit/``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskdask.credit import figures
from riskdask.credit.data import (align_curves, build_portfolio, load_cashflows,
                                  load_correlation_matrix, load_curves, load_factor_correlation,
                                  load_loadings, load_matrix, load_portfolio_file,
                                  sector_country_loadings, validate_portfolio)
from riskdask.credit.analytic import ul_from_covariance_sum
from riskdask.credit.adaptive import MIN_TAIL_ROWS, run_in_waves
from riskdask.credit.display import sig, with_error
from riskdask.credit.model import (CreditInputs, SimulationRun, analytic_moments, check_levels,
                                   factor_loadings_checked, finish_analytics, level_key,
                                   pair_tiles, risk_levels, riskless_note, shift_for,
                                   simulation_model, step7_fits, tile_covariance_task,
                                   ul_by_cells)
from riskdask.credit.simulation import (add_arrays, combine_summaries, needs_contribution_pass,
                                        simulate_chunk, simulation_statistics, tail_cuts,
                                        tail_obligor_sums)
from riskdask.credit.summary import exact_sum
from riskdask.credit.uncertainty import batches_per_chunk
from riskdask.credit.synthetic import DATA_DIR, synthetic_portfolio
from riskdask.engine import map_chunks, map_reduce, plan_chunks
from riskdask.errors import ConfigError
from riskdask.protocol import Job, Outputs

NAME = "credit"
DESCRIPTION = ("CreditMetrics portfolio credit risk: analytic EL/UL, distributed Monte Carlo "
               "VaR/ES with exact reduce, importance sampling, ES contributions")
TITLE = "riskdask · credit — CreditMetrics portfolio VaR / ES (ECB approach, seed §3.2–3.3)"

EMBEDDED_MATRIX = DATA_DIR / "migration_creditmetrics_1997.csv"
EMBEDDED_CURVES = DATA_DIR / "curves.csv"
MATRIX_CITATION = ("J.P. Morgan, CreditMetrics - Technical Document (1997), Table 6.3: one-year "
                   "transition matrix (S&P)")


# ----------------------------------------------------------------------------- config
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


# ----------------------------------------------------------------------------- inputs
def load_inputs(cfg: Config, record=None) -> CreditInputs:
    """Read and validate matrix, curves, portfolio (and cash flows) and correlation."""
    check_levels(cfg.simulation.n_scenarios, cfg.simulation.confidence)
    notes = []
    matrix_path = cfg.matrix.path or EMBEDDED_MATRIX
    matrix, rescaled = load_matrix(matrix_path, units=cfg.matrix.units,
                                   normalize=cfg.matrix.normalize,
                                   tolerance=cfg.matrix.tolerance,
                                   normalize_limit=cfg.matrix.normalize_tolerance,
                                   source=MATRIX_CITATION if cfg.matrix.path is None else "")
    for rating, total in rescaled:
        notes.append(f"migration matrix row {rating} summed to {total:.6f}; rescaled to 1 "
                     "(matrix.normalize = true)")
    if cfg.portfolio.path is None:
        raw = synthetic_portfolio(cfg.portfolio.synthetic_seed, cfg.portfolio.synthetic_obligors)
        portfolio_path = f"<synthetic portfolio seed={cfg.portfolio.synthetic_seed}>"
    else:
        portfolio_path = cfg.portfolio.path
        raw = load_portfolio_file(portfolio_path)
    positions = validate_portfolio(raw, portfolio_path, matrix,
                                   need_terms=cfg.portfolio.cashflows is None,
                                   allow_short=cfg.portfolio.allow_short)
    cashflows = None
    if cfg.portfolio.cashflows is not None:
        cashflows = load_cashflows(cfg.portfolio.cashflows, positions["position_id"],
                                   nominal=positions["nominal"],
                                   allow_short=cfg.portfolio.allow_short)
    portfolio = build_portfolio(positions, matrix, cashflows)
    riskless = riskless_note(portfolio, matrix)
    if riskless:
        notes.append(riskless)
    if (portfolio.obligors["recovery_sd"] > 0).any():
        notes.append("uncertain recovery: beta law per obligor (mean recovery_rate, sd "
                     "recovery_sd, CreditMetrics); the analytic UL adds p(D) Nom^2 sd^2 per "
                     "obligor (seed after eq. 3.8)")
    curves_path = cfg.curves.path or EMBEDDED_CURVES
    curves = align_curves(load_curves(curves_path), matrix,
                          sorted(set(portfolio.obligors["rating"])), curves_path)

    ids = list(portfolio.obligors["obligor_id"])
    kind = cfg.correlation.kind
    inputs = CreditInputs(matrix=matrix, curves=curves, portfolio=portfolio,
                          correlation_kind=kind, notes=notes)
    if kind == "uniform":
        inputs.loadings = np.full((len(ids), 1), np.sqrt(cfg.correlation.rho))
        inputs.factor_names = ["uniform"]
    elif kind == "factor":
        if cfg.correlation.loadings is None:
            loadings, names = sector_country_loadings(
                portfolio.obligors, cfg.correlation.global_loading,
                cfg.correlation.sector_loading, cfg.correlation.country_loading)
            where, key = "<sector/country loadings>", "correlation.global_loading"
        else:
            loadings, names = load_loadings(cfg.correlation.loadings, ids)
            where, key = cfg.correlation.loadings, None
        fc = None
        if cfg.correlation.factor_correlation is not None:
            fc = load_factor_correlation(cfg.correlation.factor_correlation, names)
        loadings = factor_loadings_checked(loadings, ids, where=where, key=key,
                                           factor_correlation=fc)
        inputs.loadings, inputs.factor_names = loadings, names
    else:
        if cfg.correlation.matrix is None:
            raise ConfigError("correlation.kind = 'matrix' needs correlation.matrix (a CSV)",
                              key="correlation.matrix")
        inputs.correlation = load_correlation_matrix(cfg.correlation.matrix, ids)
    if record is not None:
        _record_inputs(cfg, record, inputs, matrix_path, curves_path, portfolio_path)
    return inputs


def _record_inputs(cfg, record, inputs, matrix_path, curves_path, portfolio_path):
    record.add_input("migration_matrix", matrix_path, rows=len(inputs.matrix.initial_ratings),
                  description=inputs.matrix.source)
    record.add_input("curves", curves_path, rows=int(inputs.curves.tenors.size),
                  description="rating zero curves (continuous compounding)")
    if cfg.portfolio.path is None:
        record.add_input("portfolio", rows=len(inputs.portfolio.positions),
                      fingerprint=f"synthetic seed={cfg.portfolio.synthetic_seed} "
                                  f"obligors={cfg.portfolio.synthetic_obligors}",
                      description="embedded synthetic central-bank-style portfolio (a stand-in)")
    else:
        record.add_input("portfolio", portfolio_path, rows=len(inputs.portfolio.positions),
                      description="positions")
    if cfg.portfolio.cashflows:
        record.add_input("cashflows", cfg.portfolio.cashflows, rows=len(inputs.portfolio.cf_time))
    for name in ("loadings", "factor_correlation", "matrix"):
        path = getattr(cfg.correlation, name)
        if path and (name != "matrix" or inputs.correlation_kind == "matrix") and \
                (name == "matrix" or inputs.correlation_kind == "factor"):
            record.add_input(f"correlation_{name}", path)


# ----------------------------------------------------------------------------- stages
def _analytics(cfg: Config, ctx, inputs: CreditInputs):
    """Analytic FV, EFV, EL and UL; the full-matrix UL's pair tiles run on the cluster."""
    pf, matrix = inputs.portfolio, inputs.matrix
    moments = analytic_moments(pf, matrix, inputs.curves)
    if inputs.correlation_kind in ("uniform", "factor"):
        ul = ul_by_cells(moments, pf.initial_index, inputs.loadings, matrix.probabilities)
    else:
        tiles = pair_tiles(pf.n_obligors, cfg.correlation.tile_obligors)
        parts = map_chunks(tile_covariance_task, plan_chunks(len(tiles), 1, cfg.seed),
                           client=ctx.client,
                           shared={"deviations": moments.deviations, "bounds": moments.bounds,
                                   "correlation": inputs.correlation},
                           kernel_kwargs={"tiles": tiles}, label="credit-ul-tiles")
        ul = ul_from_covariance_sum(moments.ul2_sum, exact_sum(parts))
    return finish_analytics(moments, ul)


def _model(cfg: Config, inputs: CreditInputs, an, *, shift):
    return simulation_model(an, inputs.portfolio.initial_index, inputs.matrix.n_states,
                            correlation_kind=inputs.correlation_kind, loadings=inputs.loadings,
                            correlation=inputs.correlation,
                            confidence=cfg.simulation.confidence,
                            n_scenarios=cfg.simulation.n_scenarios,
                            histogram_bins=cfg.simulation.histogram_bins,
                            contribution_rows=cfg.simulation.contribution_rows, shift=shift,
                            batches_per_chunk=_batches_per_chunk(cfg),
                            portfolio=inputs.portfolio)


def _batches_per_chunk(cfg: Config) -> int:
    """Fixed sub-ranges per chunk for the error estimates: at least 32 batches in the plan,
    and with adaptive stopping already in its first wave (the first decision needs them)."""
    sim = cfg.simulation
    n = sim.n_scenarios
    if sim.target_relative_se is not None:
        n = min(n, sim.wave_chunks * sim.chunk_size)
    return batches_per_chunk(n, sim.chunk_size)


def _shift(cfg: Config, inputs: CreditInputs, an):
    if not cfg.importance_sampling.enabled:
        return None
    return shift_for(an, correlation_kind=inputs.correlation_kind, loadings=inputs.loadings,
                     correlation=inputs.correlation,
                     target_confidence=cfg.importance_sampling.target_confidence,
                     shift=cfg.importance_sampling.shift)


def _simulate(cfg: Config, ctx, model, fv_p: float, label: str,
              n_chunks: int | None = None) -> SimulationRun:
    """Map and exactly reduce the scenario chunks (Steps 1-6).

    With ``simulation.target_relative_se`` the plan's chunks run in waves until the ES error
    at the highest level is small enough (``n_chunks`` caps the plan instead: the plain twin
    of an adaptive IS run uses the same scenario count).  ES contributions of a tail longer
    than the state buffer (typical under importance sampling) come from a second pass over
    the same chunks.
    """
    chunks = plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size,
                         ctx.streams.seed("scenarios"))

    def run_wave(block):
        return map_reduce(simulate_chunk, block, combine_summaries, client=ctx.client,
                          shared=model, label=label)

    def statistics(summary):
        return simulation_statistics(summary, model, fv_p)

    adaptive = None
    target = cfg.simulation.target_relative_se
    if n_chunks is not None:
        chunks = chunks[:n_chunks]
        summary = run_wave(chunks)
        stats = statistics(summary)
    elif target is not None:
        res = run_in_waves(chunks, cfg.simulation.wave_chunks, run_wave, combine_summaries,
                           statistics, target)
        summary, stats = res.summary, res.stats
        chunks = chunks[:res.summary.last_chunk + 1]
        def finite(r):
            return float(r) if np.isfinite(r) else None     # inf: tail still too short

        adaptive = {"target_relative_se": target, "reached": res.reached,
                    "relative_se": finite(res.relative_error), "waves_run": res.waves_run,
                    "waves_planned": res.waves_planned, "scenarios_used": int(summary.n),
                    "scenarios_cap": cfg.simulation.n_scenarios,
                    "min_tail_rows": MIN_TAIL_ROWS,
                    "history": [[n, finite(r)] for n, r in res.history]}
    else:
        summary = run_wave(chunks)
        stats = statistics(summary)
    second = needs_contribution_pass(stats)
    if second:
        sums = map_reduce(tail_obligor_sums, chunks, add_arrays, client=ctx.client,
                          shared=model, kernel_kwargs={"cuts": tail_cuts(summary, model)},
                          label=f"{label}-contributions")
        stats = simulation_statistics(summary, model, fv_p, tail_sums=sums)
    return SimulationRun(summary=summary, stats=stats, n_chunks=len(chunks), adaptive=adaptive,
                         contribution_pass=second)


# ----------------------------------------------------------------------------- outputs
def _tables(cfg, out: Outputs, inputs, an, run: SimulationRun, model, fits):
    """Parquet tables; ES contributions come from the reported run itself (under importance
    sampling its likelihood-weighted tail, from the buffer or the second pass)."""
    stats = run.stats
    pf = inputs.portfolio
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

    cfv = pd.DataFrame(an.cfv, columns=[f"cfv_{r}" for r in inputs.matrix.scale])
    cfv.insert(0, "obligor_id", pf.obligors["obligor_id"].to_numpy())
    cfv.insert(1, "rating", pf.obligors["rating"].to_numpy())
    out.table("cfv_matrix", cfv)

    s = run.summary
    edges = model.hist_edges
    hist = s.histogram / s.n                 # (1/sim) sum of weights: unbiased under IS
    out.table("loss_histogram", pd.DataFrame({
        "loss_from": np.concatenate([[-np.inf], edges[:-1], [edges[-1]]]),
        "loss_to": np.concatenate([[edges[0]], edges[1:], [np.inf]]),
        "probability": hist}))

    k = min(cfg.outputs.tail_rows, s.tail_loss.size)
    tail = pd.DataFrame({"rank": np.arange(1, k + 1), "scenario": s.tail_scenario[:k],
                         "loss": s.tail_loss[:k], "sfv": an.fv_portfolio - s.tail_loss[:k],
                         "weight": s.tail_weight[:k]})
    m = min(k, s.tail_states.shape[0])
    defaults = np.full(k, -1)
    downgrades = np.full(k, -1)
    if m:
        st = s.tail_states[:m]
        defaults[:m] = (st == 0).sum(axis=1)
        downgrades[:m] = ((st < model.initial_state[None, :]) & (st > 0)).sum(axis=1)
    tail["n_defaults"] = defaults
    tail["n_downgrades"] = downgrades
    out.table("tail_scenarios", tail)

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
    if fits is not None:
        out.table("tail_fits", pd.DataFrame([
            {"fit": f.name, "ok": f.ok, "note": f.note, **lv}
            for f in fits["fits"] for lv in (f.levels if f.ok else [{}])]))


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


def _notes(stats, plain, inputs, run: SimulationRun, shift) -> list[str]:
    notes = list(inputs.notes)
    if stats.degenerate:
        notes.append("degenerate loss law: every simulated scenario has the same loss, so "
                     "every Monte Carlo error is exactly 0")
    for lv in stats.levels:
        if lv.se_note and not stats.degenerate:
            notes.append(f"confidence {lv.confidence:g}: {lv.se_note}")
    for name, v in (("EL", stats.el_se), ("UL", stats.ul_se)):
        if not np.isfinite(v):
            notes.append(f"no standard error of the simulated {name}: fewer than two batches")
    if run.contribution_pass:
        notes.append("ES contributions of the tails longer than simulation.contribution_rows "
                     "came from a second pass over the same chunks (exact)")
    no_contrib = [lv.confidence for lv in stats.levels if not lv.contributions]
    if no_contrib:
        notes.append("no ES contributions at confidence "
                     f"{', '.join(map(str, no_contrib))}: VaR / ES are undefined there")
    if shift is not None:
        notes.append("importance sampling: VaR and ES are measured from the analytic mean "
                     "(sum of EFV_i); " + ("EL and UL simulated by the plain-sampling run"
                                          if plain is not None else
                                          "EL and UL are likelihood-ratio estimates (noisy)"))
    a = run.adaptive
    if a is not None:
        if a["reached"]:
            notes.append(f"adaptive stopping: ES {100 * stats.levels[-1].confidence:g}% "
                         f"reached relative SE {a['relative_se']:.3g} <= "
                         f"{a['target_relative_se']:g} after {a['scenarios_used']:,} scenarios "
                         f"({a['waves_run']} of {a['waves_planned']} waves)")
        else:
            reached = ("n/a (the tail never held "
                       f"{a['min_tail_rows']} scenarios)" if a["relative_se"] is None
                       else f"{a['relative_se']:.3g}")
            notes.append(f"adaptive stopping: target relative SE {a['target_relative_se']:g} "
                         f"not reached; stopped at the cap simulation.n_scenarios = "
                         f"{a['scenarios_cap']:,} with relative SE {reached}")
    return notes


def _ratio(num, den):
    """``num / den`` or None (a z-score of an exact estimate has no meaning)."""
    if den is None or not np.isfinite(den) or den == 0 or not np.isfinite(num):
        return None
    return float(num / den)


def compute(cfg: Config, inputs: CreditInputs, ctx) -> Outputs:
    """Analytics, the Monte Carlo (and its plain twin under IS), Step 7, then the outputs."""
    out = Outputs()
    with ctx.stage("analytics"):
        an = _analytics(cfg, ctx, inputs)
    with ctx.stage("simulation"):
        shift = _shift(cfg, inputs, an)
        model = _model(cfg, inputs, an, shift=shift)
        run = _simulate(cfg, ctx, model, an.fv_portfolio, "credit-scenarios")
    stats = run.stats
    plain_run = None
    if shift is not None and cfg.importance_sampling.compare_plain:
        with ctx.stage("plain_sampling"):
            plain_model = _model(cfg, inputs, an, shift=None)
            plain_run = _simulate(cfg, ctx, plain_model, an.fv_portfolio, "credit-plain",
                                  n_chunks=run.n_chunks)
    plain = plain_run.stats if plain_run is not None else None
    levels = risk_levels(stats, plain)
    fv_p = an.fv_portfolio
    # EL / UL from plain sampling when there is one: the likelihood-ratio-weighted moments
    # are dominated by rare huge weights (VaR/ES use the analytic mean then, see
    # SimulationModel.reference_mean).
    moments = plain if plain is not None else stats
    fits = None
    if cfg.simulation.tail_fits:
        with ctx.stage("tail_fits"):
            fits = step7_fits(stats, run.summary, model, moments)
    notes = _notes(stats, plain, inputs, run, shift)
    summary = {
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
        "importance_sampling": shift is not None,
        "el_simulated": moments.el, "el_simulated_se": moments.el_se,
        "el_simulated_pct": 100 * moments.el / fv_p,
        "ul_simulated": moments.ul, "ul_simulated_se": moments.ul_se,
        "ul_simulated_pct": 100 * moments.ul / fv_p,
        "el_z": _ratio(moments.el - an.el, moments.el_se),
        "ul_z": _ratio(moments.ul - an.ul, moments.ul_se),
        "mean_sfv": moments.mean_sfv,
        "degenerate": stats.degenerate,
        "levels": levels,
        "notes": notes,
    }
    if run.adaptive is not None:
        summary["adaptive"] = run.adaptive
    if fits is not None:
        summary["tail_fits"] = _fit_summary(fits)
    if shift is not None:
        summary["importance_shift"] = [float(x) for x in np.atleast_1d(shift)[:50]]
        summary["importance_shift_norm"] = float(np.linalg.norm(shift))
    with ctx.stage("outputs"):
        _tables(cfg, out, inputs, an, run, model, fits)
        out.figure("loss_distribution",
                   figures.loss_distribution(model.hist_edges, run.summary, stats, fv_p,
                                             fits=fits["fits"] if fits else ()),
                   caption="Simulated one-year loss distribution (FV_P − SFV) with VaR "
                           "and ES at each confidence level"
                           + ("; dotted: the VaR of the Step 7 tail fits" if fits else ""))
        if fits is not None and any(f.ok for f in fits["fits"]):
            s = run.summary
            out.figure("tail_fits", figures.tail_fits(s.tail_loss, s.tail_weight, s.n,
                                                      fits["fits"], fits["qq"]),
                       caption="Seed Step 7: the simulated tail with the Vasicek and GPD "
                               "fits (survival function) and their QQ panel")
        j = len(cfg.simulation.confidence) - 1
        while j >= 0 and not stats.levels[j].contributions:
            j -= 1
        if j >= 0:
            out.figure("top_contributors",
                       figures.top_contributors(inputs.portfolio.obligors,
                                                stats.contributions[:, j],
                                                stats.levels[j],
                                                cfg.outputs.top_contributors),
                       caption="Obligors with the largest contribution to ES "
                               f"({100 * cfg.simulation.confidence[j]:g}%)")
    out.section("Risk measures (seed Step 6)", _report_html(summary))
    if fits is not None:
        out.section("Tail fits (seed Step 7)", _fits_html(summary))
    out.summary = summary
    return out


def headline(summary: dict) -> list[tuple[str, object]]:
    """Console lines: every estimate with its error, rounded to what the error supports."""
    out = [("obligors / positions", f"{summary['n_obligors']} / {summary['n_positions']}"),
           ("FV_P (EUR)", sig(summary["fv_portfolio"], 12)),  # analytic: not an estimate
           ("EL analytic / simulated", f"{sig(summary['el_analytic'], 6)} / "
                                       f"{with_error(summary['el_simulated'], summary['el_simulated_se'])}"),
           ("UL analytic / simulated", f"{sig(summary['ul_analytic'], 6)} / "
                                       f"{with_error(summary['ul_simulated'], summary['ul_simulated_se'])}"),
           ("scenarios", f"{summary['n_scenarios']:,}")]
    for lv in summary["levels"]:
        out.append((f"VaR / ES {100 * lv['confidence']:g}%",
                    f"{with_error(lv['var'], lv['var_se'])} / {with_error(lv['es'], lv['es_se'])}"
                    f" ({sig(lv['var_pct'], 3)}% / {sig(lv['es_pct'], 3)}%)"))
        if lv.get("variance_reduction_es") is not None:
            ci = (f" (95% {sig(lv['variance_reduction_es_low'], 2)}–"
                  f"{sig(lv['variance_reduction_es_high'], 2)})"
                  if lv.get("variance_reduction_es_low") is not None else "")
            out.append((f"  IS variance reduction ES {100 * lv['confidence']:g}%",
                        f"{sig(lv['variance_reduction_es'], 2)}{ci}"))
    a = summary.get("adaptive")
    if a is not None:
        out.append(("adaptive stop", f"{a['scenarios_used']:,} scenarios, relative SE "
                                     f"{sig(a['relative_se'], 2) if a['relative_se'] else 'n/a'}"
                                     " (target "
                                     f"{a['target_relative_se']:g}"
                                     f"{'' if a['reached'] else ', not reached: cap'})"))
    for note in summary["notes"]:
        if note.startswith(("degenerate", "riskless", "no obligor can default")):
            out.append(("note", note))
    return out


def _report_html(summary: dict) -> str:
    """Risk-measure table (with Monte Carlo errors) and the run's notes, for report.html."""
    def pm(v, se):
        return with_error(v, se)

    is_run = summary["importance_sampling"]
    head = ("<tr><th>confidence</th><th>a</th><th>VaR (EUR) ± SE</th><th>VaR 95% CI</th>"
            "<th>VaR % FV</th><th>ES (EUR) ± SE</th><th>ES % FV</th>"
            + ("<th>variance reduction VaR / ES (95% CI)</th>" if is_run else "") + "</tr>")
    rows = []
    for lv in summary["levels"]:
        extra = ""
        if is_run:
            ci = (f" ({sig(lv.get('variance_reduction_es_low'), 2)}–"
                  f"{sig(lv.get('variance_reduction_es_high'), 2)})"
                  if lv.get("variance_reduction_es_low") is not None else "")
            vr = (f"{sig(lv.get('variance_reduction_var'), 2)} / "
                  f"{sig(lv.get('variance_reduction_es'), 2)}{ci}")
            if lv.get("variance_reduction_note"):
                vr += f" — {lv['variance_reduction_note']}"
            extra = f"<td>{vr}</td>"
        rows.append(f"<tr><td>{100 * lv['confidence']:g}%</td><td>{lv['a']:,}</td>"
                    f"<td>{pm(lv['var'], lv['var_se'])}</td>"
                    f"<td>{sig(lv['var_ci_low'], 4)} – {sig(lv['var_ci_high'], 4)}</td>"
                    f"<td>{sig(lv['var_pct'], 3)}</td><td>{pm(lv['es'], lv['es_se'])}</td>"
                    f"<td>{sig(lv['es_pct'], 3)}</td>{extra}</tr>")
    moments = (f"<p>EL analytic {sig(summary['el_analytic'], 6)} (migration "
               f"{sig(summary['el_migration'], 4)}, default {sig(summary['el_default'], 4)}), "
               f"simulated {pm(summary['el_simulated'], summary['el_simulated_se'])}; "
               f"UL analytic {sig(summary['ul_analytic'], 6)}, simulated "
               f"{pm(summary['ul_simulated'], summary['ul_simulated_se'])} "
               "(seed eqs. 3.6-3.11 and Step 6).  Errors: linearised batch means over "
               f"{summary['n_batches']} fixed batches of scenarios, and for VaR the sampling "
               "law of the order statistic SFV_(a) (its 95% interval in the table); valid "
               "for discrete loss laws and for importance-sampling weights.</p>")
    notes = "".join(f"<li>{n}</li>" for n in summary["notes"])
    return (moments + f"<table>{head}{''.join(rows)}</table>"
            + (f"<ul>{notes}</ul>" if notes else ""))


def _fits_html(summary: dict) -> str:
    """Step 7: each fit's VaR / ES beside the empirical ones, and which fits the tail."""
    fits = summary["tail_fits"]
    emp = {lv["confidence"]: lv for lv in summary["levels"]}
    rows = []
    for name in ("vasicek", "gpd"):
        f = fits[name]
        if not f["ok"]:
            rows.append(f"<tr><td>{name}</td><td colspan='4'>no fit: {f['note']}</td></tr>")
            continue
        for lv in f["levels"]:
            e = emp[lv["confidence"]]
            rows.append(f"<tr><td>{name}</td><td>{100 * lv['confidence']:g}%</td>"
                        f"<td>{with_error(lv['var'], lv['var_se'])} (simulated "
                        f"{with_error(e['var'], e['var_se'])})</td>"
                        f"<td>{with_error(lv['es'], lv['es_se'])} (simulated "
                        f"{with_error(e['es'], e['es_se'])})</td>"
                        f"<td>{sig(f['qq_max_rel_deviation'], 2)}</td></tr>")
    best = fits["best"]
    verdict = (f"<p>Closer to the simulated tail (QQ panel, largest relative deviation of the "
               f"fitted from the simulated tail quantiles): <b>{best}</b>. Vasicek's law "
               "assumes an infinitely granular default-mode portfolio (seed footnote 6); the "
               "GPD describes only the tail above its threshold.</p>") if best else         "<p>Neither fit is usable for this tail.</p>"
    head = ("<tr><th>fit</th><th>confidence</th><th>VaR ± SE</th><th>ES ± SE</th>"
            "<th>QQ max rel. dev.</th></tr>")
    return verdict + f"<table>{head}{''.join(rows)}</table>"


JOB = Job(name=NAME, description=DESCRIPTION, title=TITLE, config=Config, load=load_inputs,
          compute=compute, headline=headline, primary_stream="scenarios")
