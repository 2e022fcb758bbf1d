"""``riskdask whatif RUN --add positions.csv --remove ID,...``: the wiring of
:mod:`riskdask.credit.whatif` (config, inputs and the kept scenario losses of a finished
run directory to the kernels, and the result to numbers for people).

:func:`whatif` is the Python API; the CLI prints :func:`whatif_lines`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from riskdask.engine import plan_chunks, reduce_local
from riskdask.errors import ConfigError, InputError
from riskdask.formatting import estimate, integer, sig
from riskdask.streams import Streams

from .analytic import obligor_bounds
from .config import Config
from .data import (align_curves, build_portfolio, load_curves, load_portfolio_file,
                   validate_portfolio)
from .model import analytic_moments
from .simulation import simulation_statistics, top_rows
from .summary import batch_means_se, exact_sum, tail_count, tail_index
from .uncertainty import local_batch
from .whatif import changed_losses_chunk, combine_changes, statistics_model

__all__ = ["whatif", "whatif_lines", "SCENARIO_TABLE"]

SCENARIO_TABLE = "scenario_losses"
PURPOSE = "whatif"


def _load_run(run_dir: Path):
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a run directory (no manifest.json)", file=run_dir)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("job") != "credit":
        raise InputError(f"a {manifest.get('job')!r} run: what-if needs a credit run",
                         file=manifest_path)
    table = run_dir / "tables" / f"{SCENARIO_TABLE}.parquet"
    if not table.is_file():
        raise InputError("the run kept no scenario losses (simulation.keep_scenarios = "
                         "false, or more than 25,000,000 scenarios): rerun with them kept",
                         file=table)
    kept = pd.read_parquet(table)
    loss = kept["loss"].to_numpy(dtype=float)
    weight = kept["weight"].to_numpy(dtype=float) if "weight" in kept else np.empty(0)
    return manifest, Config.model_validate(manifest["config"]), loss, weight, table


def _rows(positions: pd.DataFrame, matrix, curves_path, ratings) -> np.ndarray:
    """``FV - CFV^w`` worst first for each obligor of ``positions`` (its positions summed)."""
    pf = build_portfolio(positions.reset_index(drop=True), matrix)
    curves = align_curves(load_curves(curves_path), matrix, sorted(set(ratings)), curves_path)
    mom = analytic_moments(pf, matrix, curves)
    per = mom.per_obligor
    return (per.fv[:, None] - mom.cfv)[:, ::-1], per.fv - per.efv, pf


def whatif(run_dir, *, add=None, remove=(), engine=None) -> dict:
    """VaR / ES of a finished credit run's portfolio with positions added and/or removed,
    from the run's own scenarios (:mod:`riskdask.credit.whatif`).

    Parameters
    ----------
    run_dir : path
        A credit run directory (its config and ``tables/scenario_losses.parquet``).
    add : path, optional
        Positions to add (the portfolio file's format); an existing ``obligor_id`` adds to
        that obligor (same rating), a new one is a new obligor (sector / country loadings).
    remove : sequence of str
        Position ids (or obligor ids: all their positions) to remove.
    engine : riskdask.engine.Engine, optional
        Run the chunks on a cluster; None: in this process.

    Returns
    -------
    dict
        ``levels`` (per confidence: base and new VaR / ES with errors, the change of ES with
        its error), ``positions`` (the changed positions: sign, analytic EL, marginal ES per
        level in the new book), ``el_change``, ``kept_bytes``, ``seconds`` and
        ``exactness``.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    manifest, cfg, base_loss, base_weight, table = _load_run(run_dir)
    from .pipeline import (EMBEDDED_CURVES, PURPOSES, _shift, analytics, load_inputs,
                           scenario_model)

    if cfg.correlation.kind == "matrix":
        raise ConfigError("what-if needs a factor or uniform correlation (a full matrix has "
                          "no factors to regenerate obligors from)", key="correlation.kind")
    if cfg.correlation.factor_correlation is not None:
        raise ConfigError("what-if with correlation.factor_correlation is not supported",
                          key="correlation.factor_correlation")
    inputs = load_inputs(cfg, None, None)
    an = analytics(cfg, inputs)
    model = scenario_model(cfg, inputs, an, shift=_shift(cfg, inputs, an))
    if model.recovery is not None:
        raise ConfigError("what-if with uncertain recovery (recovery_sd) is not supported")
    streams = Streams(cfg.seed, PURPOSES)
    n_kept = base_loss.size
    chunks = plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size,
                         streams.seed("scenarios"))
    chunks = [c for c in chunks if c.stop <= n_kept]
    if not chunks or chunks[-1].stop != n_kept:
        raise InputError("the kept scenario losses do not match the run's plan", file=table)

    pf, matrix = inputs.portfolio, inputs.matrix
    curves_path = cfg.curves.path or EMBEDDED_CURVES
    ob_ids = list(pf.obligors["obligor_id"])
    inverse = np.empty_like(model.order)
    inverse[model.order] = np.arange(model.order.size)
    columns, rows, changed = [], [], []
    el_change = 0.0

    # ---- removals: positions (or obligors) of the run
    remove = [str(r).strip() for r in remove if str(r).strip()]
    if remove:
        pos = pf.positions
        pick = pos["position_id"].astype(str).isin(remove) | pos["obligor_id"].astype(
            str).isin(remove)
        known = set(pos["position_id"].astype(str)) | set(pos["obligor_id"].astype(str))
        unknown = [r for r in remove if r not in known]
        if unknown:
            raise InputError(f"--remove: no position or obligor {unknown[0]!r} in the run's "
                             "portfolio")
        sub = pos[pick]
        lrows, el_i, spf = _rows(sub, matrix, curves_path, sub["rating"])
        for j, oid in enumerate(spf.obligors["obligor_id"]):
            columns.append(int(inverse[ob_ids.index(oid)]))
            rows.append(-lrows[j])
            el_change -= float(el_i[j])
            changed.append({"id": str(oid), "change": "removed",
                            "positions": list(sub.loc[sub["obligor_id"] == oid,
                                                      "position_id"].astype(str)),
                            "analytic_el": -float(el_i[j])})

    # ---- additions
    new = None
    if add is not None:
        raw = load_portfolio_file(add)
        added = validate_portfolio(raw, add, matrix, need_terms=True)
        clash = set(added["position_id"].astype(str)) & set(pf.positions["position_id"]
                                                              .astype(str))
        if clash:
            raise InputError(f"position {sorted(clash)[0]!r} is already in the run's portfolio",
                             file=add, column="position_id")
        lrows, el_i, apf = _rows(added, matrix, curves_path, added["rating"])
        new_l, new_t, new_s, new_r, new_ids = [], [], [], [], []
        for j, ob in apf.obligors.iterrows():
            oid = ob["obligor_id"]
            el_change += float(el_i[j])
            entry = {"id": str(oid), "positions": list(added.loc[added["obligor_id"] == oid,
                                                               "position_id"].astype(str)),
                     "analytic_el": float(el_i[j])}
            if oid in ob_ids:
                i = ob_ids.index(oid)
                if pf.obligors["rating"].iloc[i] != ob["rating"]:
                    raise InputError(f"obligor {oid!r} is rated {pf.obligors['rating'].iloc[i]}"
                                     f" in the run, {ob['rating']} here", file=add,
                                     column="rating")
                columns.append(int(inverse[i]))
                rows.append(lrows[j])
                entry["change"] = "added (existing obligor)"
            else:
                new_l.append(_new_loadings(cfg, inputs, ob, add))
                icr = int(apf.initial_index[j])
                new_t.append(obligor_bounds(np.array([icr]), matrix.probabilities)[0, 1:-1])
                new_s.append(matrix.n_states - 1 - icr)
                new_r.append(lrows[j])
                new_ids.append(str(oid))
                entry["change"] = "added (new obligor)"
            changed.append(entry)
        if new_ids:
            new = (np.array(new_l), np.array(new_t), np.array(new_s), new_r,
                   streams.seed(PURPOSE), new_ids)
    if not changed:
        raise InputError("nothing to change: give --add FILE and/or --remove IDS")

    change = {"columns": columns, "rows": rows, "new": new}
    shared = {"model": model, "loss": base_loss, "weight": base_weight}
    if engine is None:
        parts = [changed_losses_chunk(c, shared, change=change) for c in chunks]
        summary, per, loss = reduce_local(parts, combine_changes)
    else:
        summary, per, loss = engine.map_reduce(changed_losses_chunk, chunks, combine_changes,
                                               shared=shared, kernel_kwargs={"change": change},
                                               label="credit-whatif")
    fv_new = an.fv_portfolio
    stats_model = statistics_model(model, el_change)
    new_stats = simulation_statistics(summary, stats_model, fv_new)
    weight = np.ones(loss.size) if base_weight.size == 0 else base_weight
    batch = np.concatenate([c.index * model.batches_per_chunk
                            + local_batch(c.size, model.batches_per_chunk) for c in chunks])
    weighted = model.shift is not None
    base_mean = exact_sum(model.expected_loss) if weighted else None
    new_mean = base_mean + el_change if weighted else None
    # the changed positions, in `changed` order: existing-obligor rows first, then new
    order_rows = [k for k, e in enumerate(changed) if "new obligor" not in e["change"]] + [
        k for k, e in enumerate(changed) if "new obligor" in e["change"]]
    levels = []
    need = max(tail_count(loss.size, c) for c in model.confidence) + 1
    order_old = top_rows(base_loss, weight, need)
    order_new = top_rows(loss, weight, need)
    if not weighted:     # the simulated means, once
        base_mean = exact_sum(base_loss) / loss.size
        new_mean = exact_sum(loss) / loss.size
    for j, c in enumerate(model.confidence):
        old = _es_parts(base_loss, weight, c, batch, base_mean, order_old, weighted)
        nw = _es_parts(loss, weight, c, batch, new_mean, order_new, weighted)
        lv = new_stats.levels[j]
        d_se = (batch_means_se(nw["y"] - old["y"], old["nb"])
                if old["y"] is not None and nw["y"] is not None else float("nan"))
        levels.append({"confidence": c, "var_old": old["var"], "es_old": old["es"],
                       "var": lv.var, "var_se": lv.var_se, "es": lv.es, "es_se": lv.es_se,
                       "var_change": lv.var - old["var"], "es_change": lv.es - old["es"],
                       "es_change_se": d_se})
        for r, k in enumerate(order_rows):
            l_pos = per[r] * (1.0 if "removed" not in changed[k]["change"] else -1.0)
            mean_pos = (changed[k]["analytic_el"] if weighted
                        else float(np.dot(weight, per[r])) / loss.size)
            if "removed" in changed[k]["change"]:
                marginal = 0.0        # not in the new book
            else:
                marginal = (exact_sum(weight[nw["tail"]] * l_pos[nw["tail"]]) / nw["W"]
                            - mean_pos) if nw["tail"] is not None else float("nan")
            changed[k].setdefault("marginal_es", []).append(marginal)
    return {"run": str(run_dir), "levels": levels, "positions": changed,
            "el_change": el_change, "scenarios": int(loss.size),
            "kept_bytes": int(base_loss.nbytes + base_weight.nbytes),
            "seconds": time.perf_counter() - t0,
            "run_simulation_seconds": (manifest.get("timings") or {}).get("simulation"),
            "exactness": ("the run's scenarios: existing obligors' states regenerated bit for "
                          "bit; new obligors from streams keyed by their id; equal to a full "
                          "rerun of the modified book within Monte Carlo error (its draws "
                          "are laid out for other obligors)")}


def _new_loadings(cfg: Config, inputs, ob, where) -> np.ndarray:
    """Loadings of a new obligor on the run's (independent) factors."""
    names = inputs.factor_names
    if cfg.correlation.kind == "uniform":
        return np.array([np.sqrt(cfg.correlation.rho)])
    if cfg.correlation.loadings is not None:
        raise InputError(f"new obligor {ob['obligor_id']!r}: the run's factor loadings come "
                         "from a file; add it to that file and rerun", file=where)
    out = np.zeros(len(names))
    out[0] = cfg.correlation.global_loading
    for prefix, key, value in (("sector", "sector", cfg.correlation.sector_loading),
                               ("country", "country", cfg.correlation.country_loading)):
        name = f"{prefix}:{ob[key]}"
        if name not in names:
            raise InputError(f"new obligor {ob['obligor_id']!r}: {prefix} {ob[key]!r} is not a "
                             "factor of the run", file=where, column=key)
        out[names.index(name)] = value
    return out


def _es_parts(loss, weight, c, batch, mean, order, analytic):
    """VaR / ES (seed convention) of full scenario arrays and the per-batch linearised ES
    ``Y = n w (L - q)^+ / W`` (minus ``w L`` unless the mean is ``analytic``) for the error of a
    change (the same scenarios, so the difference's batch means).  ``order``: the worst rows
    sorted (:func:`~riskdask.credit.simulation.top_rows`), at least to the level's tail."""
    n = loss.size
    a = tail_count(n, c)
    k = tail_index(weight[order], a)
    if a < 2 or not 0 < k < order.size:
        return {"var": float("nan"), "es": float("nan"), "y": None, "nb": None, "tail": None,
                "W": float("nan")}
    tail = order[:k]
    q = float(loss[order[k]])
    W = exact_sum(weight[tail])
    es = exact_sum(weight[tail] * loss[tail]) / W - mean
    ids, inv = np.unique(batch, return_inverse=True)
    nb = np.bincount(inv, minlength=ids.size).astype(float)
    excess = np.zeros(n)
    excess[tail] = weight[tail] * (loss[tail] - q)
    y = (n / W) * np.bincount(inv, weights=excess, minlength=ids.size) / nb
    if not analytic:
        y = y - np.bincount(inv, weights=weight * loss, minlength=ids.size) / nb
    return {"var": q - mean, "es": float(es), "y": y, "nb": nb, "tail": tail, "W": W}


def whatif_lines(res: dict) -> list[str]:
    """Console lines of a what-if result (every estimate with its error)."""
    out = [f"what-if on {res['run']}: {integer(res['scenarios'])} kept scenarios "
           f"({sig(res['kept_bytes'] / 2 ** 20, 3)} MiB), {sig(res['seconds'], 2)} s"
           + (f" (the run's simulation: {sig(res['run_simulation_seconds'], 2)} s)"
              if res.get("run_simulation_seconds") else "")]
    for p in res["positions"]:
        out.append(f"  {p['change']}: {p['id']} ({', '.join(p['positions'])}), analytic EL "
                   f"{sig(p['analytic_el'], 4)}")
    out.append(f"EL change (analytic): {sig(res['el_change'], 4)}")
    for j, lv in enumerate(res["levels"]):
        pct = f"{100 * lv['confidence']:g}%"
        out.append(f"VaR {pct}: {sig(lv['var_old'], 6)} -> {estimate(lv['var'], lv['var_se'])}"
                   f" (change {sig(lv['var_change'], 4)})")
        out.append(f"ES {pct}: {sig(lv['es_old'], 6)} -> {estimate(lv['es'], lv['es_se'])} "
                   f"(change {estimate(lv['es_change'], lv['es_change_se'])})")
        for p in res["positions"]:
            if "removed" not in p["change"]:
                out.append(f"  marginal ES {pct} of {p['id']}: {sig(p['marginal_es'][j], 4)}")
    out.append(f"exactness: {res['exactness']}")
    return out
