"""The credit job's load and compute stages (seed 004, sections 3.2-3.3).

- :func:`load_inputs`: matrix, curves, portfolio (and cash flows) and correlation, read and
  validated; the files go into the run's record.
- :func:`analytics`: Step 0 and the analytic FV, EFV, EL and UL (eqs. 3.1-3.11); for a full
  correlation matrix the UL's pair tiles run on the engine.
- :func:`scenario_model`, :func:`simulate`: the Monte Carlo (Steps 1-6) on the engine, with
  adaptive stopping and the second pass for ES contributions.
- :func:`compute`: the whole computation of one run, returning :class:`CreditResult`.

The maths is in the other modules of :mod:`riskdask.credit`; this module is wiring (config
to arrays, arrays to the engine) and so may import the config models -- no kernel imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from riskdask.engine import plan_chunks
from riskdask.errors import ConfigError

from .adaptive import MIN_TAIL_ROWS, run_in_waves
from .analytic import ul_from_covariance_sum
from .concentration import Concentration, concentration
from .config import Config
from .stress import combine_stress, stress_chunk, stress_statistics, worse_when_low
from .data import (align_curves, build_portfolio, load_cashflows, load_correlation_matrix,
                   load_curves, load_factor_correlation, load_loadings, load_matrix,
                   load_portfolio_file, sector_country_loadings, validate_portfolio)
from .model import (Analytics, CreditInputs, SimulationRun, analytic_moments, check_levels,
                    factor_loadings_checked, finish_analytics, pair_tiles, risk_levels,
                    riskless_note, shift_for, simulation_model, step7_fits,
                    tile_covariance_task, ul_by_cells)
from .simulation import (SimulationModel, SimulationStats, add_arrays, combine_summaries,
                         needs_contribution_pass, simulate_chunk, simulation_statistics,
                         tail_cuts, tail_obligor_sums)
from .summary import exact_sum
from .synthetic import DATA_DIR, synthetic_portfolio
from .uncertainty import batches_per_chunk

__all__ = ["PURPOSES", "EMBEDDED_MATRIX", "EMBEDDED_CURVES", "MATRIX_CITATION", "CreditResult",
           "load_inputs", "analytics", "scenario_model", "simulate", "compute"]

#: The job's random-stream purposes (the first is the primary one).
PURPOSES = ("scenarios", "ul_tiles", "whatif")

EMBEDDED_MATRIX = DATA_DIR / "migration_creditmetrics_1997.csv"
EMBEDDED_CURVES = DATA_DIR / "curves.csv"
MATRIX_CITATION = ("J.P. Morgan, CreditMetrics - Technical Document (1997), Table 6.3: one-year "
                   "transition matrix (S&P)")


@dataclass(frozen=True)
class CreditResult:
    """Every figure of one credit run, with its Monte Carlo errors.

    Attributes
    ----------
    inputs : CreditInputs
        The validated portfolio, matrix, curves and correlation (names and ratings of the
        tables, the input notes).
    analytics : Analytics
        Analytic FV_P, sum EFV, EL (migration / default) and UL, per obligor and in total.
    model : SimulationModel
        The reported run's scenario model (histogram edges, initial states, levels).
    run : SimulationRun
        The reported Monte Carlo run (under importance sampling the shifted one): merged
        summary, Step 6 statistics (VaR / ES per level with errors, ES contributions), how
        it stopped.
    plain : SimulationRun or None
        The plain-sampling twin of an importance-sampling run (``compare_plain``).
    shift : numpy.ndarray or None
        The importance-sampling mean shift (None: plain sampling).
    levels : tuple of dict
        VaR / ES per confidence level as reported, with the plain twin's figures and the
        variance reduction (and its 95 % interval) beside an IS run.
    fits : dict or None
        Step 7: ``{"fits": [TailFit, ...], "qq": {name: qq_points}, "verdict": ...}``.
    notes : tuple of str
        What a reader must know about the figures (rescaled rows, undefined errors, ...).
    concentration : Concentration
        Name / sector HHI, the ASRF quantile and its granularity adjustment
        (:mod:`riskdask.credit.concentration`).
    stress : tuple of dict
        The configured factor stresses (:mod:`riskdask.credit.stress`): conditional EL, UL,
        VaR / ES per level with errors, from the run's own chunks.
    """

    inputs: CreditInputs
    analytics: Analytics
    model: SimulationModel
    run: SimulationRun
    plain: SimulationRun | None
    shift: np.ndarray | None
    levels: tuple
    fits: dict | None
    notes: tuple
    concentration: object = None
    stress: tuple = ()

    @property
    def stats(self) -> SimulationStats:
        """Step 6 of the reported run."""
        return self.run.stats

    @property
    def moments(self) -> SimulationStats:
        """Where the simulated EL and UL come from: the plain twin when there is one (the
        likelihood-ratio-weighted moments are dominated by rare huge weights; VaR / ES use
        the analytic mean then, see ``SimulationModel.reference_mean``)."""
        return self.plain.stats if self.plain is not None else self.run.stats

    @property
    def importance_sampling(self) -> bool:
        return self.shift is not None

    @property
    def el_z(self) -> float | None:
        """(simulated - analytic EL) / its standard error; None for an exact estimate."""
        m = self.moments
        return _ratio(m.el - self.analytics.el, m.el_se)

    @property
    def ul_z(self) -> float | None:
        m = self.moments
        return _ratio(m.ul - self.analytics.ul, m.ul_se)


def _ratio(num, den):
    """``num / den`` or None (a z-score of an exact estimate has no meaning)."""
    if den is None or not np.isfinite(den) or den == 0 or not np.isfinite(num):
        return None
    return float(num / den)


# ----------------------------------------------------------------------------- load
def load_inputs(cfg: Config, record=None, streams=None, *, positions=None) -> CreditInputs:
    """Read and validate matrix, curves, portfolio (and cash flows) and correlation.

    ``streams`` is unused: the synthetic portfolio is fixed by ``portfolio.synthetic_seed``
    (an input, not a random stream of the run). ``record`` (optional) receives the inputs.
    ``positions``: a run's own validated positions (its ``tables/positions.parquet``) in place
    of ``portfolio.path`` or the synthetic portfolio -- the what-if's book is the run's even
    if the file changed since.
    """
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
    if positions is not None:
        raw, portfolio_path = positions, "<the run's positions table>"
    elif cfg.portfolio.path is None:
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
    stress_specs(cfg, inputs)          # a bad stress is a config error before any work
    if record is not None:
        _record_inputs(cfg, record, inputs, matrix_path, curves_path, portfolio_path)
    return inputs


def stress_specs(cfg: Config, inputs: CreditInputs) -> list[tuple]:
    """``(kind, factor index, value)`` of every configured stress; a stress the model
    cannot carry is a :class:`ConfigError` naming the key."""
    if not cfg.stress:
        return []
    if inputs.correlation_kind == "matrix":
        raise ConfigError("stress needs named systematic factors: correlation.kind = "
                          "'factor' or 'uniform' (a full matrix has none)", key="stress")
    if cfg.correlation.factor_correlation is not None and inputs.correlation_kind == "factor":
        raise ConfigError("stress of a named factor with correlation.factor_correlation is "
                          "not supported (the factors are then mixed)", key="stress")
    out = []
    for j, st in enumerate(cfg.stress):
        if st.factor not in inputs.factor_names:
            raise ConfigError(f"stress {st.name!r}: unknown factor {st.factor!r} (factors: "
                              f"{', '.join(inputs.factor_names[:12])}"
                              f"{' ...' if len(inputs.factor_names) > 12 else ''})",
                              key=f"stress[{j}].factor")
        f = inputs.factor_names.index(st.factor)
        out.append(("shift", f, st.shift) if st.shift is not None else ("worst", f, st.worst))
    return out


def _record_inputs(cfg, record, inputs, matrix_path, curves_path, portfolio_path):
    record.add_input("migration_matrix", matrix_path, rows=len(inputs.matrix.initial_ratings),
                     description=inputs.matrix.source)
    record.add_input("curves", curves_path, rows=int(inputs.curves.tenors.size),
                     description="rating zero curves (continuous compounding)")
    if cfg.portfolio.path is None:
        record.add_input("portfolio", rows=len(inputs.portfolio.positions),
                         fingerprint=f"synthetic seed={cfg.portfolio.synthetic_seed} "
                                     f"obligors={cfg.portfolio.synthetic_obligors}",
                         description="embedded synthetic central-bank-style portfolio "
                                     "(a stand-in)")
    else:
        record.add_input("portfolio", portfolio_path, rows=len(inputs.portfolio.positions),
                         description="positions")
    if cfg.portfolio.cashflows:
        record.add_input("cashflows", cfg.portfolio.cashflows,
                         rows=len(inputs.portfolio.cf_time))
    for name in ("loadings", "factor_correlation", "matrix"):
        path = getattr(cfg.correlation, name)
        used_by = "matrix" if name == "matrix" else "factor"
        if path and inputs.correlation_kind == used_by:
            record.add_input(f"correlation_{name}", path)


# ----------------------------------------------------------------------------- compute
def analytics(cfg: Config, inputs: CreditInputs, *, engine=None,
              tile_seed: np.random.SeedSequence | None = None) -> Analytics:
    """Analytic FV, EFV, EL and UL (eqs. 3.1-3.11).

    Uniform and factor correlations collapse into cells (no cluster needed); a full
    correlation matrix sums the UL's pair tiles on ``engine`` (a
    :class:`riskdask.engine.Engine`), one tile per chunk planned from ``tile_seed`` (the
    run's ``"ul_tiles"`` stream; the tile kernel draws nothing, so it fixes no figure).
    """
    pf, matrix = inputs.portfolio, inputs.matrix
    moments = analytic_moments(pf, matrix, inputs.curves)
    if inputs.correlation_kind in ("uniform", "factor"):
        ul = ul_by_cells(moments, pf.initial_index, inputs.loadings, matrix.probabilities)
    else:
        if engine is None:
            raise ValueError("the UL of a full correlation matrix runs its pair tiles on an "
                             "engine: pass engine=")
        tiles = pair_tiles(pf.n_obligors, cfg.correlation.tile_obligors)
        parts = engine.map_chunks(tile_covariance_task, plan_chunks(len(tiles), 1, tile_seed),
                                  shared={"deviations": moments.deviations,
                                          "bounds": moments.bounds,
                                          "correlation": inputs.correlation},
                                  kernel_kwargs={"tiles": tiles}, label="credit-ul-tiles")
        ul = ul_from_covariance_sum(moments.ul2_sum, exact_sum(parts))
    return finish_analytics(moments, ul)


#: The most scenarios whose losses a run keeps for the what-if (200 MB of float64).
KEEP_SCENARIOS_MAX = 25_000_000


def keeps_scenarios(cfg: Config) -> bool:
    """The run keeps every scenario's loss (``simulation.keep_scenarios``, up to
    :data:`KEEP_SCENARIOS_MAX` scenarios)."""
    return cfg.simulation.keep_scenarios and cfg.simulation.n_scenarios <= KEEP_SCENARIOS_MAX


def scenario_model(cfg: Config, inputs: CreditInputs, an: Analytics, *,
                   shift=None, keep: bool = False) -> SimulationModel:
    """The scenario kernel's read-only model for this config (``shift``: importance
    sampling's mean shift, None for plain sampling; ``keep``: keep every scenario's loss)."""
    model = _scenario_model(cfg, inputs, an, shift)
    return replace(model, keep_losses=True) if keep else model


def _scenario_model(cfg, inputs, an, shift):
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


def _shift(cfg: Config, inputs: CreditInputs, an: Analytics):
    if not cfg.importance_sampling.enabled:
        return None
    return shift_for(an, correlation_kind=inputs.correlation_kind, loadings=inputs.loadings,
                     correlation=inputs.correlation,
                     target_confidence=cfg.importance_sampling.target_confidence,
                     shift=cfg.importance_sampling.shift)


def simulate(cfg: Config, engine, model: SimulationModel, fv_p: float, *,
             seed: np.random.SeedSequence, label: str,
             n_chunks: int | None = None) -> SimulationRun:
    """Map and exactly reduce the scenario chunks (Steps 1-6) on ``engine``.

    The plan's chunk streams are spawned from ``seed`` (the run's ``"scenarios"`` stream).
    With ``simulation.target_relative_se`` the chunks run in waves until the ES error at the
    highest level is small enough (``n_chunks`` caps the plan instead: the plain twin of an
    adaptive IS run uses the same scenario count).  ES contributions of a tail longer than
    the state buffer (typical under importance sampling) come from a second pass over the
    same chunks.
    """
    chunks = plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size, seed)

    def run_wave(block):
        return engine.map_reduce(simulate_chunk, block, combine_summaries, shared=model,
                                 label=label)

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
        adaptive = {"target_relative_se": target, "reached": res.reached,
                    "relative_se": _finite(res.relative_error), "waves_run": res.waves_run,
                    "waves_planned": res.waves_planned, "scenarios_used": int(summary.n),
                    "scenarios_cap": cfg.simulation.n_scenarios,
                    "min_tail_rows": MIN_TAIL_ROWS,
                    "history": [[n, _finite(r)] for n, r in res.history]}
    else:
        summary = run_wave(chunks)
        stats = statistics(summary)
    second = needs_contribution_pass(stats)
    if second:
        sums = engine.map_reduce(tail_obligor_sums, chunks, add_arrays, shared=model,
                                 kernel_kwargs={"cuts": tail_cuts(summary, model)},
                                 label=f"{label}-contributions")
        stats = simulation_statistics(summary, model, fv_p, tail_sums=sums)
    return SimulationRun(summary=summary, stats=stats, n_chunks=len(chunks), adaptive=adaptive,
                         contribution_pass=second)


def _finite(r):
    return float(r) if np.isfinite(r) else None     # inf: the tail is still too short


def compute(cfg: Config, inputs: CreditInputs, ctx) -> CreditResult:
    """Analytics, the Monte Carlo (and its plain twin under IS) and Step 7 on ``ctx.engine``.

    The plain twin draws the same ``"scenarios"`` stream as the IS run (common random
    numbers, the same chunks), so the variance reduction compares like with like.
    """
    full_matrix = inputs.correlation_kind == "matrix"
    with ctx.stage("analytics"):
        an = analytics(cfg, inputs, engine=ctx.engine if full_matrix else None,
                       tile_seed=ctx.streams.seed("ul_tiles"))
    scenarios = ctx.streams.seed("scenarios")
    with ctx.stage("simulation"):
        shift = _shift(cfg, inputs, an)
        model = scenario_model(cfg, inputs, an, shift=shift, keep=keeps_scenarios(cfg))
        run = simulate(cfg, ctx.engine, model, an.fv_portfolio, seed=scenarios,
                       label="credit-scenarios")
    plain = None
    if shift is not None and cfg.importance_sampling.compare_plain:
        with ctx.stage("plain_sampling"):
            plain = simulate(cfg, ctx.engine, scenario_model(cfg, inputs, an, shift=None),
                             an.fv_portfolio, seed=scenarios, label="credit-plain",
                             n_chunks=run.n_chunks)
    plain_stats = plain.stats if plain is not None else None
    fits = None
    if cfg.simulation.tail_fits:
        with ctx.stage("tail_fits"):
            fits = step7_fits(run.stats, run.summary, model,
                              plain_stats if plain_stats is not None else run.stats)
    stress = ()
    specs = stress_specs(cfg, inputs)
    if specs:
        with ctx.stage("stress"):
            stress = run_stress(cfg, ctx.engine, model, run, specs, an.fv_portfolio,
                                seed=scenarios)
    return CreditResult(inputs=inputs, analytics=an, model=model, run=run, plain=plain,
                        shift=shift, levels=tuple(risk_levels(run.stats, plain_stats)),
                        fits=fits, notes=tuple(_notes(run, plain_stats, inputs, shift)),
                        concentration=concentration_of(cfg, inputs, an), stress=stress)


def run_stress(cfg: Config, engine, model: SimulationModel, run: SimulationRun, specs,
               fv_p: float, *, seed) -> tuple:
    """The configured factor stresses from the run's own chunks (:mod:`.stress`): one pass
    over the same chunks, every stress re-weighting the same scenarios."""
    chunks = plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size,
                         seed)[:run.n_chunks]
    kernel_specs = [(kind, f, value, worse_when_low(model, f)) for kind, f, value in specs]
    parts = engine.map_reduce(stress_chunk, chunks, combine_stress, shared=model,
                              kernel_kwargs={"stresses": kernel_specs}, label="credit-stress")
    out = []
    for st, (kind, f, value, low), summary in zip(cfg.stress, kernel_specs, parts):
        stats = stress_statistics(summary, model, fv_p,
                                  unchanged=(kind == "shift" and value == 0.0))
        w = summary.weight_sum
        out.append({"name": st.name, "factor": st.factor, "kind": kind, "value": value,
                    "worst_side": ("low" if low else "high") if kind == "worst" else None,
                    "el": stats.el, "el_se": stats.el_se, "ul": stats.ul,
                    "ul_se": stats.ul_se, "weight_sum": w, "stats": stats,
                    "levels": [{"confidence": lv.confidence, "var": lv.var,
                                "var_se": lv.var_se, "es": lv.es, "es_se": lv.es_se,
                                "tail_effective": lv.tail_effective,
                                "se_note": lv.se_note} for lv in stats.levels]})
    return tuple(out)


def concentration_of(cfg: Config, inputs: CreditInputs, an: Analytics) -> Concentration:
    """Name / sector HHI and the one-factor granularity adjustment of this portfolio: the
    exposure ``FV_i - CFV_i^D``, ``PD_i`` of the initial rating, and as ``rho_i`` the
    systematic R^2 of the obligor (factor loadings; the uniform rho; for a full matrix the
    mean of its row's correlations)."""
    pf = inputs.portfolio
    exposure = an.per_obligor.fv - an.cfv[:, -1]
    pd_ = inputs.matrix.probabilities[pf.initial_index, -1]
    if inputs.correlation_kind == "matrix":
        c = inputs.correlation
        n = c.shape[0]
        rho = (c.sum(axis=1) - 1.0) / max(n - 1, 1) if n > 1 else np.zeros(n)
    else:
        rho = np.einsum("ik,ik->i", inputs.loadings, inputs.loadings)
    rho = np.clip(rho, 1e-9, 1 - 1e-9)
    sectors = pf.obligors["sector"].to_numpy() if "sector" in pf.obligors else None
    return concentration(exposure, pd_, rho, cfg.simulation.confidence, sectors=sectors)


#: A level whose ES tail holds fewer (effective) scenarios than this gets a caution: its
#: VaR / ES rest on a handful of scenarios and their errors are themselves uncertain.
MIN_TAIL_SCENARIOS = MIN_TAIL_ROWS

IS_ONLY_CAVEAT = ("caution: importance sampling without the plain twin "
                  "(importance_sampling.compare_plain = false): the simulated EL and UL are "
                  "likelihood-ratio estimates whose variance comes from rare, heavily weighted "
                  "ordinary scenarios; their errors (batch means) are right on average over "
                  "seeds but a single run can be several SE off, and the analytic EL / UL are "
                  "the reliable figures")


def _small_tail(lv) -> str | None:
    """A caution when the ES tail of a level holds fewer than ``MIN_TAIL_SCENARIOS``
    (effective, under IS) scenarios."""
    count = lv.tail_effective if np.isfinite(lv.tail_effective) else lv.tail_scenarios
    if not np.isfinite(lv.var) or count >= MIN_TAIL_SCENARIOS:
        return None
    need = int(np.ceil((MIN_TAIL_SCENARIOS + 1) / (1.0 - lv.confidence)))
    return (f"caution: confidence {100 * lv.confidence:g}%: the ES tail holds "
            f"{count:.3g} scenario{'' if count == 1 else 's'} (effective), fewer than "
            f"{MIN_TAIL_SCENARIOS}: VaR / ES and their errors rest on a handful of scenarios "
            f"(about {need:,} plain scenarios give {MIN_TAIL_SCENARIOS})")


def _notes(run: SimulationRun, plain: SimulationStats | None, inputs: CreditInputs,
           shift) -> list[str]:
    stats = run.stats
    notes = list(inputs.notes)
    if stats.degenerate:
        notes.append("degenerate loss law: every simulated scenario has the same loss, so "
                     "every Monte Carlo error is exactly 0")
    for lv in stats.levels:
        if lv.se_note and not stats.degenerate:
            notes.append(f"confidence {lv.confidence:g}: {lv.se_note}")
    for lv in stats.levels:
        small = _small_tail(lv)
        if small:
            notes.append(small)
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
                                          "EL and UL are likelihood-ratio estimates"))
        if plain is None:
            notes.append(IS_ONLY_CAVEAT)
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
