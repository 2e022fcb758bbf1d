"""``riskdask whatif RUN --add positions.csv --remove ID,...``: the wiring of
:mod:`riskdask.credit.whatif` (config, inputs and the kept scenario data of a finished run
directory to the kernels, and the result to numbers for people).

What a run keeps (``simulation.keep_scenarios``, the default) and how it grows:

* ``tables/scenario_losses.parquet``: every scenario's portfolio loss, 8 bytes a scenario
  (16 with importance-sampling weights) -- linear in the scenarios, independent of the
  portfolio size;
* ``tables/tail_states.parquet``: the run's tail buffer worst first (scenario numbers, 8
  bytes a row: the old book's tail without a sort) and every obligor's forward state (one
  byte) on the rows that carry states: ``n x min(a - 1, contribution_rows)`` bytes with
  plain sampling (``a`` the 99 % tail count: grows with the scenarios up to the cap),
  ``n x contribution_rows`` with importance sampling.

Both are written plain and uncompressed (they hardly compress, and read back in ~5 ms at
a million scenarios), and read on a thread while the inputs are validated and the changed
obligors replayed.

:func:`whatif` is the Python API; the CLI prints :func:`whatif_lines`.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from riskdask.engine import plan_chunks
from riskdask.errors import ConfigError, InputError
from riskdask.formatting import estimate, integer, sig
from riskdask.streams import Streams

from .analytic import obligor_bounds
from .config import Config
from .data import (align_curves, build_portfolio, load_curves, load_portfolio_file,
                   validate_portfolio)
from .model import analytic_moments, level_key
from .simulation import (SimulationModel, batch_bounds, batch_of, batch_sums, scenario_summary,
                         simulation_statistics, top_rows)
from .summary import batch_means_se, exact_sum, ordered_sum
from .whatif import changed_losses_chunk, check_replayable, tail_loss_sums, tail_states_chunk

__all__ = ["whatif", "whatif_lines", "kept_tables", "SCENARIO_TABLE", "STATES_TABLE"]

SCENARIO_TABLE = "scenario_losses"
STATES_TABLE = "tail_states"
PURPOSE = "whatif"


# ----------------------------------------------------------------------------- the kept data
def kept_tables(summary, model: SimulationModel) -> dict:
    """The tables a run keeps for the what-if (module docstring), as ``pyarrow`` tables
    (written plain and uncompressed: read back whole in a few milliseconds): the scenario
    losses (and weights), and the tail buffer's scenarios worst first with every obligor's
    states (a fixed-width binary column, obligors in input order) on the rows that carry
    them and null on the rest."""
    import pyarrow as pa

    kept = {"loss": pa.array(np.asarray(summary.scenario_loss, dtype=float))}
    if summary.scenario_weight is not None and summary.scenario_weight.size:
        kept["weight"] = pa.array(np.asarray(summary.scenario_weight, dtype=float))
    inverse = model.input_columns()
    states = np.ascontiguousarray(summary.tail_states[:, inverse], dtype=np.uint8)
    rows, n = states.shape
    total = summary.tail_scenario.size
    data = np.zeros((total, n), dtype=np.uint8)
    data[:rows] = states
    valid = np.packbits(np.arange(total) < rows, bitorder="little")
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(n), total, [pa.py_buffer(valid), pa.py_buffer(data)])
    tail = pa.table({"scenario": pa.array(summary.tail_scenario.astype(np.int64)),
                     "states": column})
    return {SCENARIO_TABLE: pa.table(kept), STATES_TABLE: tail}


@dataclass(frozen=True)
class KeptRun:
    """A finished credit run's config and kept scenario data (:func:`kept_tables`)."""

    run_dir: Path
    manifest: dict
    config: Config
    loss: np.ndarray
    weight: np.ndarray                 # empty: plain sampling
    tail_scenario: np.ndarray          # scenario numbers of the kept states, worst first
    tail_states: np.ndarray            # (rows, n) uint8, input order, rows as tail_scenario
    tail_order: np.ndarray | None      # the run's tail buffer, worst first (None: older run)
    obligors: pd.DataFrame             # the run's obligors table
    summary: dict                      # the run's summary.json
    positions: pd.DataFrame | None     # the run's validated positions (None: an older run)

    @property
    def nbytes(self) -> int:
        return int(self.loss.nbytes + self.weight.nbytes + self.tail_states.nbytes
                   + self.tail_scenario.nbytes)


def load_run(run_dir) -> KeptRun:
    """Read a credit run directory's config and kept data; exit-2 errors name the file."""
    head = _open_run(run_dir)
    return _kept_run(head, _read_kept(head))


@dataclass(frozen=True)
class _RunHead:
    """What a what-if needs of a run before its kept scenario data: config, books, size."""

    run_dir: Path
    manifest: dict
    config: Config
    summary: dict
    obligors: pd.DataFrame
    positions: pd.DataFrame | None
    paths: dict
    n_kept: int


def _unreadable(exc, path):
    return InputError(f"unreadable kept table ({type(exc).__name__}: {exc})", file=path)


def _open_run(run_dir) -> _RunHead:
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a run directory (no manifest.json)", file=run_dir)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable manifest ({exc})", file=manifest_path) from None
    if manifest.get("job") != "credit":
        raise InputError(f"a {manifest.get('job')!r} run: what-if needs a credit run",
                         file=manifest_path)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable run summary ({exc})", file=run_dir / "summary.json"
                         ) from None
    tables = run_dir / "tables"
    paths = {name: tables / f"{name}.parquet" for name in (SCENARIO_TABLE, STATES_TABLE,
                                                          "obligors")}
    for name, path in paths.items():
        if not path.is_file():
            raise InputError("the run kept no scenario data (simulation.keep_scenarios = "
                             "false, more than 25,000,000 scenarios, or a run from before "
                             "the what-if kept tail states): rerun with them kept", file=path)
    # pyarrow raises several types for a damaged file
    try:
        obligors = pd.read_parquet(paths["obligors"])
    except Exception as exc:
        raise _unreadable(exc, paths["obligors"]) from None
    try:
        n_kept = pq.read_metadata(paths[SCENARIO_TABLE]).num_rows
    except Exception as exc:
        raise _unreadable(exc, paths[SCENARIO_TABLE]) from None
    book = tables / "positions.parquet"
    try:
        positions = pd.read_parquet(book) if book.is_file() else None
    except Exception as exc:
        raise _unreadable(exc, book) from None
    return _RunHead(run_dir, manifest, Config.model_validate(manifest["config"]), summary,
                    obligors, positions, paths, int(n_kept))


def _read_kept(head: _RunHead) -> tuple:
    """The kept scenario losses, weights and tail states (thread-safe: pyarrow reads
    without the GIL, so the what-if reads them while it prepares the replay)."""
    paths = head.paths
    try:
        kept = pq.read_table(paths[SCENARIO_TABLE])
    except Exception as exc:
        raise _unreadable(exc, paths[SCENARIO_TABLE]) from None
    try:
        tail = pq.read_table(paths[STATES_TABLE])
    except Exception as exc:
        raise _unreadable(exc, paths[STATES_TABLE]) from None
    names = set(kept.column_names)
    if "loss" not in names or not {"scenario", "states"} <= set(tail.column_names):
        raise InputError("kept tables without their columns (loss; scenario, states)",
                         file=paths[SCENARIO_TABLE].parent)
    loss = kept.column("loss").to_numpy().astype(float, copy=False)
    weight = (kept.column("weight").to_numpy().astype(float, copy=False) if "weight" in names
              else np.empty(0))
    if loss.size != head.n_kept:
        raise InputError("the kept scenario losses changed while being read",
                         file=paths[SCENARIO_TABLE])
    return (loss, weight) + _kept_states(tail, len(head.obligors), paths[STATES_TABLE])


def _kept_run(head: _RunHead, kept: tuple) -> KeptRun:
    return KeptRun(head.run_dir, head.manifest, head.config, *kept, head.obligors,
                   head.summary, head.positions)


def _kept_states(tail, n: int, path) -> tuple:
    """Scenarios and states (rows, n) of the kept tail rows, and the run's whole tail buffer
    worst first (None for a run that kept states as variable-length bytes, before the
    buffer's order was kept)."""
    import pyarrow as pa

    scen = tail.column("scenario").to_numpy().astype(np.int64, copy=False)
    column = tail.column("states").combine_chunks()
    if pa.types.is_fixed_size_binary(column.type):
        rows = len(column) - column.null_count
        if column.type.byte_width != n or column.is_valid().to_numpy(
                zero_copy_only=False)[:rows].sum() != rows:
            raise InputError(f"tail states of {column.type.byte_width} obligors for the "
                             f"obligors table's {n}, or not on the first rows", file=path)
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8,
                             count=len(column) * n, offset=column.offset * n)
        return scen[:rows], data.reshape(len(column), n)[:rows], scen
    blob = b"".join(column.to_pylist())
    if len(blob) != n * len(column):
        raise InputError(f"tail states of {len(blob) // max(len(column), 1)} obligors, the "
                         f"obligors table has {n}", file=path)
    return scen, np.frombuffer(blob, dtype=np.uint8).reshape(len(column), n), None


# ----------------------------------------------------------------------------- the change
def _rows(positions: pd.DataFrame, matrix, curves, curves_path, ratings):
    """``FV - CFV^w`` worst first for each obligor of ``positions`` (its positions summed),
    the analytic EL and FV of each, and the portfolio they form (``curves(ratings)``: forward
    curves covering those ratings)."""
    pf = build_portfolio(positions.reset_index(drop=True), matrix)
    mom = analytic_moments(pf, matrix, align_curves(curves(ratings), matrix,
                                                    sorted(set(ratings)), curves_path))
    per = mom.per_obligor
    return (per.fv[:, None] - mom.cfv)[:, ::-1], per.fv - per.efv, per.fv, pf


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


@dataclass
class _Change:
    """The changed positions, one entry per obligor touched (removals, then additions)."""

    columns: list        # simulation columns of changed obligors of the run
    rows: list           # their signed loss_by_state rows
    new: tuple | None    # the new obligors' (loadings, thresholds, states, rows, root, ids)
    entries: list        # per changed obligor: id, change, positions, analytic EL, ...
    el_change: float
    fv_change: float


def _change(cfg, inputs, model, streams, add, remove) -> _Change:
    from .pipeline import EMBEDDED_CURVES

    pf, matrix = inputs.portfolio, inputs.matrix
    curves_path = cfg.curves.path or EMBEDDED_CURVES
    run_ratings = set(pf.obligors["rating"])

    class _Curves:           # the run's aligned curves serve its own ratings; others: the file
        def __init__(self):
            self.loaded = None

        def __call__(self, ratings):
            if set(ratings) <= run_ratings:
                return inputs.curves
            if self.loaded is None:
                self.loaded = load_curves(curves_path)
            return self.loaded

    curves = _Curves()
    ob_ids = [str(o) for o in pf.obligors["obligor_id"]]
    index_of = {o: i for i, o in enumerate(ob_ids)}
    inverse = model.input_columns()
    ch = _Change([], [], None, [], 0.0, 0.0)

    remove = [str(r).strip() for r in remove if str(r).strip()]
    if remove:
        pos = pf.positions
        pid, oid = pos["position_id"].astype(str), pos["obligor_id"].astype(str)
        unknown = [r for r in remove if r not in set(pid) | set(oid)]
        if unknown:
            raise InputError(f"--remove: no position or obligor {unknown[0]!r} in the run's "
                             "portfolio")
        sub = pos[pid.isin(remove) | oid.isin(remove)]
        lrows, el_i, fv_i, spf = _rows(sub, matrix, curves, curves_path, sub["rating"])
        for j, o in enumerate(spf.obligors["obligor_id"]):
            i = index_of[str(o)]
            ch.columns.append(int(inverse[i]))
            ch.rows.append(-lrows[j])
            ch.el_change -= float(el_i[j])
            ch.fv_change -= float(fv_i[j])
            mine = sub["obligor_id"].astype(str) == str(o)
            whole = int(mine.sum()) == int((pos["obligor_id"].astype(str) == str(o)).sum())
            ch.entries.append({"id": str(o), "index": i,
                               "change": "removed" if whole else "removed (some positions)",
                               "positions": list(sub.loc[mine, "position_id"].astype(str)),
                               "analytic_el": -float(el_i[j])})
    if add is not None:
        raw = load_portfolio_file(add)
        added = validate_portfolio(raw, add, matrix, need_terms=True)
        clash = set(added["position_id"].astype(str)) & set(pf.positions["position_id"]
                                                              .astype(str))
        if clash:
            raise InputError(f"position {sorted(clash)[0]!r} is already in the run's portfolio",
                             file=add, column="position_id")
        lrows, el_i, fv_i, apf = _rows(added, matrix, curves, curves_path, added["rating"])
        new_l, new_t, new_s, new_r, new_ids = [], [], [], [], []
        for j, ob in apf.obligors.iterrows():
            o = str(ob["obligor_id"])
            ch.el_change += float(el_i[j])
            ch.fv_change += float(fv_i[j])
            entry = {"id": o, "positions": list(added.loc[added["obligor_id"].astype(str) == o,
                                                        "position_id"].astype(str)),
                     "analytic_el": float(el_i[j])}
            if o in index_of:
                i = index_of[o]
                if pf.obligors["rating"].iloc[i] != ob["rating"]:
                    raise InputError(f"obligor {o!r} is rated {pf.obligors['rating'].iloc[i]}"
                                     f" in the run, {ob['rating']} here", file=add,
                                     column="rating")
                ch.columns.append(int(inverse[i]))
                ch.rows.append(lrows[j])
                entry.update(change="added (existing obligor)", index=i)
            else:
                new_l.append(_new_loadings(cfg, inputs, ob, add))
                icr = int(apf.initial_index[j])
                new_t.append(obligor_bounds(np.array([icr]), matrix.probabilities)[0, 1:-1])
                new_s.append(matrix.n_states - 1 - icr)
                new_r.append(lrows[j])
                new_ids.append(o)
                entry.update(change="added (new obligor)", index=None)
            ch.entries.append(entry)
        if new_ids:
            ch.new = (np.array(new_l), np.array(new_t), np.array(new_s), new_r,
                      streams.seed(PURPOSE), new_ids)
    if not ch.entries:
        raise InputError("nothing to change: give --add FILE and/or --remove IDS")
    return ch


# ----------------------------------------------------------------------------- the what-if
def _map(kernel, chunks, model, engine, label, per_chunk=None, threads=True,
         **kwargs) -> list:
    """A kernel on every chunk, results in chunk order: on this machine's cores (threads:
    the replay's generators and compiled kernels release the GIL; ``threads=False``: one),
    or on the engine (the model sent once).  ``per_chunk``: keyword arguments that differ
    by chunk."""
    def one(j):
        extra = per_chunk[j] if per_chunk is not None else {}
        return kernel(chunks[j], model, **kwargs, **extra)

    if engine is None:
        workers = min(len(chunks), os.cpu_count() or 1) if threads else 1
        if workers <= 1:
            return [one(j) for j in range(len(chunks))]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(len(chunks))))
    if per_chunk is None:
        return engine.map_chunks(kernel, chunks, shared=model, kernel_kwargs=kwargs,
                                 label=label)
    return [engine.map_chunks(kernel, [c], shared=model, kernel_kwargs={**kwargs, **extra},
                              label=label)[0] for c, extra in zip(chunks, per_chunk)]


def _figures(level: dict) -> dict:
    """A level of the run's summary.json with its missing figures (null) as NaN."""
    return {key: (float("nan") if level.get(key) is None else level[key])
            for key in ("var", "var_se", "es", "es_se")} | {
        "tail_scenarios": int(level.get("tail_scenarios") or 0)}


def _linearised_es(loss, weight, rows, k, bounds, batch_mean):
    """Per-batch linearised ES ``Y_b = (n / W) sum_b w (L - q)^+ 1{tail}`` over the first
    ``k`` of the tail ``rows`` (sorted worst first; ``q`` the loss of row ``k``), minus the
    batch's mean loss ``batch_mean`` (None where the mean is analytic), for the batches of
    ``bounds`` (:func:`~riskdask.credit.simulation.batch_bounds`): its batch means give the
    error of an ES, and of the difference of two books' ES on the same scenarios."""
    n = loss.size
    if not 0 < k < rows.size:
        return None
    tail = rows[:k]
    q = float(loss[rows[k]])
    w_t = weight[tail]
    W = ordered_sum(w_t)
    nb_count = np.diff(bounds).astype(float)
    y = (n / W) * np.bincount(batch_of(bounds, tail), weights=w_t * (loss[tail] - q),
                              minlength=nb_count.size)
    with np.errstate(invalid="ignore", divide="ignore"):     # empty batches: dropped after
        y = y / nb_count
    return y if batch_mean is None else y - batch_mean


def _tail_states(kept: KeptRun, scen, chunks, model, engine, marks) -> tuple:
    """Where every obligor's states (input order) in the scenarios ``scen`` are: ``rows``
    into the kept states, or ``-1 - j`` into ``regenerated`` (j, n) for scenarios the run
    did not keep, regenerated exactly by chunk (:func:`~riskdask.credit.whatif.
    tail_loss_sums` reads both)."""
    n = model.n_obligors
    by_scenario = np.argsort(kept.tail_scenario, kind="stable")
    sorted_scen = kept.tail_scenario[by_scenario]
    pos = np.minimum(np.searchsorted(sorted_scen, scen), max(sorted_scen.size - 1, 0))
    found = (sorted_scen[pos] == scen) if sorted_scen.size else np.zeros(scen.size, bool)
    rows = np.where(found, by_scenario[pos] if sorted_scen.size else 0, -1).astype(np.int64)
    missing = np.flatnonzero(~found)
    regenerated = np.empty((missing.size, n), dtype=np.uint8)
    rows[missing] = -1 - np.arange(missing.size)
    if missing.size:
        starts = np.array([c.start for c in chunks])
        owner = np.searchsorted(starts, scen[missing], side="right") - 1
        todo = [c for c in chunks if np.any(owner == c.index)]
        # a few scenarios: one thread (the pool's start-up would cost more than it saves)
        parts = _map(tail_states_chunk, todo, model, engine, "credit-whatif-tail",
                     per_chunk=[{"rows": scen[missing[owner == c.index]] - c.start,
                                 "marks": marks[c.index]} for c in todo], threads=False)
        inverse = model.input_columns()
        for c, part in zip(todo, parts):
            regenerated[np.flatnonzero(owner == c.index)] = part[:, inverse]
    return rows, regenerated


def whatif(run_dir, *, add=None, remove=(), engine=None) -> dict:
    """VaR / ES of a finished credit run's portfolio with positions added and/or removed,
    from the run's own scenarios (:mod:`riskdask.credit.whatif`).

    Parameters
    ----------
    run_dir : path
        A credit run directory (its config and kept tables, module docstring).
    add : path, optional
        Positions to add (the portfolio file's format); an existing ``obligor_id`` adds to
        that obligor (same rating), a new one is a new obligor (sector / country loadings).
    remove : sequence of str
        Position ids (or obligor ids: all their positions) to remove.
    engine : riskdask.engine.Engine, optional
        Run the replays on a cluster; None: in this process (the default: a what-if is a
        replay of a few obligors' draws, cheaper than shipping the scenarios).

    Returns
    -------
    dict
        ``levels`` (per confidence: base and new VaR / ES with errors, the change of ES with
        its error), ``positions`` (the changed obligors: change, positions, analytic EL,
        marginal ES per level in the new book), ``obligors`` (DataFrame: the marginal ES of
        every obligor of the modified book per level; they sum to its ES), ``el_change``,
        ``kept_bytes``, ``regenerated_scenarios``, ``seconds`` and ``exactness``.
    """
    t0 = time.perf_counter()
    head = _open_run(run_dir)
    with ThreadPoolExecutor(1) as reader:       # the kept data, while the replay is prepared
        reading = reader.submit(_read_kept, head)
        return _whatif(head, reading, t0, add, remove, engine)


def _whatif(head, reading, t0, add, remove, engine) -> dict:
    cfg = head.config
    from .pipeline import PURPOSES, _shift, analytics, load_inputs, scenario_model

    if cfg.correlation.kind == "matrix":
        raise ConfigError("what-if needs a factor or uniform correlation (a full matrix has "
                          "no factors to regenerate obligors from)", key="correlation.kind")
    if cfg.correlation.factor_correlation is not None:
        raise ConfigError("what-if with correlation.factor_correlation is not supported (the "
                          "run's factors are rotated; a new obligor's loadings would be "
                          "too)", key="correlation.factor_correlation")
    inputs = load_inputs(cfg, None, None, positions=head.positions)
    ids = [str(o) for o in inputs.portfolio.obligors["obligor_id"]]
    if ids != [str(o) for o in head.obligors["obligor_id"]]:
        raise InputError("the run's portfolio has changed since the run (its obligors differ "
                         "from the run's obligors table)",
                         file=cfg.portfolio.path or "portfolio")
    an = analytics(cfg, inputs)
    model = scenario_model(cfg, inputs, an, shift=_shift(cfg, inputs, an))
    try:
        check_replayable(model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    streams = Streams(cfg.seed, PURPOSES)
    n_kept = head.n_kept
    chunks = [c for c in plan_chunks(cfg.simulation.n_scenarios, cfg.simulation.chunk_size,
                                     streams.seed("scenarios")) if c.stop <= n_kept]
    if not chunks or chunks[-1].stop != n_kept:
        raise InputError("the kept scenario losses do not match the run's plan",
                         file=head.paths[SCENARIO_TABLE])
    ch = _change(cfg, inputs, model, streams, add, remove)
    t_setup = time.perf_counter() - t0

    # -- 1. the changed positions' losses in every scenario (one replay per chunk)
    t1 = time.perf_counter()
    parts = _map(changed_losses_chunk, chunks, model, engine, "credit-whatif",
                 change={"columns": ch.columns, "rows": ch.rows, "new": ch.new})
    per = np.concatenate([p[0] for p in parts], axis=1)  # (changed, scenarios), signed
    marks = [p[1] for p in parts]
    kept = _kept_run(head, reading.result())
    base, weight = kept.loss, kept.weight
    loss = base + per.sum(axis=0)
    t_replay = time.perf_counter() - t1

    # -- 2. the Step 6 statistics of both books on the same scenarios
    weighted = model.shift is not None
    w = np.broadcast_to(1.0, loss.size) if weight.size == 0 else weight
    bounds = batch_bounds(chunks, model.batches_per_chunk)
    nb_count = np.diff(bounds).astype(float)
    # the run's own figures for its book; its tail rows (loss descending, ties by scenario)
    old = kept.summary["levels"]
    old_rows = (kept.tail_order if kept.tail_order is not None else
                top_rows(base, w, model.weight_needed))
    # every row of the new buffer lies at or above the least new loss of the old buffer's
    # rows, when they carry the weight a buffer needs (simulation.top_rows)
    floor = (float(loss[old_rows].min()) if old_rows.size
             and ordered_sum(w[old_rows]) >= model.weight_needed else None)
    new_sum = scenario_summary(chunks, model, loss, weight, histogram=False, floor=floor)
    new = simulation_statistics(new_sum, _stats_model(model, ch.el_change),
                                an.fv_portfolio + ch.fv_change)
    analytic = new.mean_reference == "analytic"

    # -- 3. marginal ES of every obligor of the modified book (Euler: they sum to its ES)
    t2 = time.perf_counter()
    run_mean = (np.asarray(an.per_obligor.fv - an.per_obligor.efv, dtype=float) if analytic
                else kept.obligors["simulated_mean_loss"].to_numpy(dtype=float))
    plan = _tail_plan(kept, new, new_sum, old_rows, w, run_mean)
    need = (np.unique(np.concatenate([p[1] for p in plan.values()])) if plan
            else np.empty(0, np.int64))
    rows, regenerated = _tail_states(kept, need, chunks, model, engine, marks)
    t_tail = time.perf_counter() - t2
    obligors, entries = _marginals(kept, model, ch, per, plan, need, rows, regenerated,
                                   new_sum, w, new, analytic, run_mean)

    levels = []
    filled = nb_count > 0                  # a last chunk shorter than m has empty batches

    def batch_mean(sums):                  # per batch: sum w L / n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums[:, 3] + model.center * sums[:, 2]) / nb_count

    mean_old = (None if analytic else
                batch_mean(batch_sums(bounds, base, weight, model.center)))
    mean_new = None if analytic else batch_mean(new_sum.batches)
    for j, c in enumerate(model.confidence):
        lo, ln = _figures(old[j]), new.levels[j]
        y_old = _linearised_es(base, w, old_rows, lo["tail_scenarios"], bounds, mean_old)
        y_new = _linearised_es(loss, w, new_sum.tail_scenario, ln.tail_scenarios, bounds,
                               mean_new)
        d_se = (batch_means_se((y_new - y_old)[filled], nb_count[filled])
                if y_old is not None and y_new is not None else float("nan"))
        levels.append({"confidence": c, "var_old": lo["var"], "es_old": lo["es"],
                       "var_old_se": lo["var_se"], "es_old_se": lo["es_se"],
                       "var": ln.var, "var_se": ln.var_se, "es": ln.es, "es_se": ln.es_se,
                       "var_change": ln.var - lo["var"], "es_change": ln.es - lo["es"],
                       "es_change_se": d_se, "tail_scenarios": ln.tail_scenarios,
                       "se_note": ln.se_note,
                       "marginal_es_sum": float(obligors[f"marginal_es_{level_key(c)}"]
                                                .sum()) if np.isfinite(ln.es) else
                       float("nan")})
    seconds = time.perf_counter() - t0
    return {"run": str(kept.run_dir), "levels": levels, "positions": entries,
            "obligors": obligors, "el_change": ch.el_change, "scenarios": int(loss.size),
            "weighted": weighted, "kept_bytes": kept.nbytes,
            "regenerated_scenarios": int(regenerated.shape[0]),
            "seconds": seconds,
            "timings": {"setup": t_setup, "replay": t_replay, "tail_states": t_tail,
                        "statistics": seconds - t_setup - t_replay - t_tail},
            "run_seconds": _run_seconds(kept.manifest),
            "exactness": ("the run's own scenarios: the changed obligors' states regenerated "
                          "bit for bit (a removal equals a rerun with that nominal 0, to "
                          "rounding); new obligors from streams keyed by their id. Against "
                          "a full rerun of the modified book (whose draws are laid out for "
                          "other obligors: another sample) within Monte Carlo error")}


def _stats_model(model: SimulationModel, expected_loss_change: float) -> SimulationModel:
    """The model whose Step 6 statistics describe the modified book: under importance
    sampling the analytic mean moves by the changed positions' analytic EL."""
    from dataclasses import replace

    if model.shift is None or model.expected_loss is None:
        return model
    el = np.concatenate([model.expected_loss, [expected_loss_change]])
    return replace(model, expected_loss=el)


def _tail_plan(kept, new, new_sum, old_rows, w, run_mean) -> dict:
    """Per level ``j`` of the modified book with an ES: ``(start, scenarios, signs)`` such
    that every unchanged obligor's tail sum ``sum_{s in tail'} w_s l_is`` is ``start_i +
    sum signs w_s l_is`` over ``scenarios``.

    Where the run reported the level's contributions, ``start`` is the run's own tail sum
    (its contribution plus its mean, times the run's tail weight) and only the scenarios
    that leave (-) or enter (+) the tail are visited: a change of a few positions moves a
    few hundred of them, though an importance-sampling tail holds most of the scenarios.
    Otherwise ``start`` is 0 and the scenarios are the new tail's."""
    n = len(run_mean)
    plan = {}
    for j, lv in enumerate(new.levels):
        k = lv.tail_scenarios
        if not (np.isfinite(lv.es) and k > 0):
            continue
        tail_new = new_sum.tail_scenario[:k]
        old = kept.summary["levels"][j] if j < len(kept.summary["levels"]) else {}
        k_old = int(old.get("tail_scenarios") or 0)
        col = f"es_contribution_{level_key(lv.confidence)}"
        contrib = (kept.obligors[col].to_numpy(dtype=float) if col in kept.obligors
                   else np.full(n, np.nan))
        if 0 < k_old < old_rows.size and np.all(np.isfinite(contrib)):
            tail_old = old_rows[:k_old]
            start = (contrib + run_mean) * exact_sum(w[tail_old])
            entering = np.setdiff1d(tail_new, tail_old, assume_unique=True)
            leaving = np.setdiff1d(tail_old, tail_new, assume_unique=True)
            plan[j] = (start, np.concatenate([entering, leaving]).astype(np.int64),
                       np.concatenate([np.ones(entering.size), -np.ones(leaving.size)]))
        else:
            plan[j] = (np.zeros(n), tail_new.astype(np.int64), np.ones(tail_new.size))
    return plan


def _marginals(kept, model, ch, per, plan, need, rows, regenerated, new_sum, w, new,
               analytic, run_mean):
    """The marginal (Euler) ES ``E_w[l_i | tail'] - mean l_i`` of every obligor of the
    modified book per level: unchanged obligors from the run's tail sums and the states of
    the scenarios that left or entered the tail (:func:`_tail_plan`; ``rows`` /
    ``regenerated`` hold the states of ``need``), changed ones with their positions' losses
    added, new ones from their own losses; means simulated (plain) or analytic (importance
    sampling), as the book's ES."""
    n = model.n_obligors
    lbs = model.loss_by_state[model.input_columns()]
    n_levels = len(new.levels)
    sums = np.full((n, n_levels), np.nan)
    for j, (start, scen, sign) in plan.items():
        at = np.searchsorted(need, scen)
        sums[:, j] = start + tail_loss_sums(kept.tail_states, lbs, w[scen] * sign,
                                            [scen.size], rows[at], regenerated)[:, 0]
    n_sc = w.size
    mean = run_mean.copy()
    ids = [str(o) for o in kept.obligors["obligor_id"]]
    status = np.array(["unchanged"] * n, dtype=object)
    entries = [dict(e) for e in ch.entries]
    # rows of `per`: existing-obligor entries in order, then new obligors
    existing = [e for e in entries if e["index"] is not None]
    fresh = [e for e in entries if e["index"] is None]
    k_of = np.array([lv.tail_scenarios if j in plan else 0
                     for j, lv in enumerate(new.levels)], dtype=np.int64)
    scen = new_sum.tail_scenario[:int(k_of.max(initial=0))]
    wt = w[scen]

    def tail_part(r):            # sum_{s < k} w_s l_s of changed row r, at every level's k
        c = np.concatenate([[0.0], np.cumsum(wt * per[r][scen])])
        return np.where(k_of > 0, c[k_of], np.nan)

    extra = []
    for r, e in enumerate(existing):
        i = e["index"]
        sums[i] += tail_part(r)
        mean[i] += (e["analytic_el"] if analytic else ordered_sum(w * per[r]) / n_sc)
        status[i] = "removed" if e["change"] == "removed" else "changed"
    for r, e in enumerate(fresh, start=len(existing)):
        extra.append((e["id"], tail_part(r),
                      e["analytic_el"] if analytic else ordered_sum(w * per[r]) / n_sc))
    if extra:
        sums = np.vstack([sums] + [x[1][None, :] for x in extra])
        mean = np.concatenate([mean, [x[2] for x in extra]])
    table = pd.DataFrame({"obligor_id": ids + [x[0] for x in extra],
                          "status": list(status) + ["added"] * len(extra),
                          "mean_loss": mean})
    for j, lv in enumerate(new.levels):
        key = f"marginal_es_{level_key(lv.confidence)}"
        table[key] = (sums[:, j] / ordered_sum(wt[:k_of[j]]) - mean if j in plan
                      else np.nan)
    table = table[table["status"] != "removed"].reset_index(drop=True)
    for e in entries:
        row = table[table["obligor_id"] == e["id"]]
        e["marginal_es"] = ([float(row[f"marginal_es_{level_key(lv.confidence)}"].iloc[0])
                             for lv in new.levels] if len(row) else
                            [0.0] * len(new.levels))
        e.pop("index", None)
    return table, entries


def _run_seconds(manifest: dict):
    t = manifest.get("timings") or {}
    return {"simulation": t.get("simulation"), "compute": t.get("compute"),
            "whole": sum(float(t[k]) for k in ("load", "compute", "present", "write")
                         if isinstance(t.get(k), (int, float))) or None}


def whatif_lines(res: dict, top: int = 5) -> list[str]:
    """Console lines of a what-if result (every estimate with its error)."""
    run = res.get("run_seconds") or {}
    out = [f"what-if on {res['run']}: {integer(res['scenarios'])} kept scenarios "
           f"({sig(res['kept_bytes'] / 2 ** 20, 3)} MiB kept), {sig(res['seconds'], 2)} s"
           + (f" (the run: {sig(run['whole'], 2)} s, its simulation "
              f"{sig(run['simulation'], 2)} s)" if run.get("whole") and run.get("simulation")
              else "")]
    for p in res["positions"]:
        out.append(f"  {p['change']}: {p['id']} ({', '.join(p['positions'])}), analytic EL "
                   f"{sig(p['analytic_el'], 4)}")
    out.append(f"EL change (analytic): {sig(res['el_change'], 4)}")
    table = res["obligors"]
    for j, lv in enumerate(res["levels"]):
        pct = f"{100 * lv['confidence']:g}%"
        out.append(f"VaR {pct}: {estimate(lv['var_old'], lv['var_old_se'])} -> "
                   f"{estimate(lv['var'], lv['var_se'])}")
        out.append(f"ES {pct}: {estimate(lv['es_old'], lv['es_old_se'])} -> "
                   f"{estimate(lv['es'], lv['es_se'])} "
                   f"(change {estimate(lv['es_change'], lv['es_change_se'])})")
        if lv.get("se_note"):
            out.append(f"  note: {lv['se_note']}")
        for p in res["positions"]:
            if p["change"] != "removed":
                out.append(f"  marginal ES {pct} of {p['id']}: {sig(p['marginal_es'][j], 4)}")
        key = f"marginal_es_{level_key(lv['confidence'])}"
        if key in table and table[key].notna().any():
            best = table.nlargest(top, key)
            out.append(f"  largest marginal ES {pct} (sum over the book "
                       f"{sig(lv['marginal_es_sum'], 6)}): " + ", ".join(
                           f"{o} {sig(v, 3)}" for o, v in zip(best["obligor_id"], best[key])))
    if res.get("regenerated_scenarios"):
        out.append(f"tail scenarios regenerated (not among the run's kept states): "
                   f"{integer(res['regenerated_scenarios'])}")
    out.append(f"exactness: {res['exactness']}")
    return out
