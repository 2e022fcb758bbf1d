"""What-if from a run's own scenarios: add or remove positions without re-simulating the
rest of the portfolio.

The run keeps every scenario's portfolio loss ``L_s`` (and its importance-sampling weight):
8 bytes a scenario (16 with IS), linear in the scenarios and independent of the portfolio
size (``tables/scenario_losses.parquet``).  A change of the book needs only the losses of the
changed positions in the same scenarios:

* a position of an obligor **in the run**: the obligor's forward state in every scenario is
  regenerated exactly -- the chunk's stream is replayed for the systematic factors and then
  *advanced* (``PCG64.advance``) straight to the obligor's idiosyncratic draws (the kernel
  lays them out obligor-major), which are classified by the kernel's own compiled
  migration step on a one-group problem: the same states, bit for bit, at the cost of the
  factor draws plus ``sb`` draws per block instead of ``n sb``;
* a position of a **new** obligor: its idiosyncratic uniforms come from a stream keyed by
  its obligor id (purpose ``"whatif"``), combined with the regenerated systematic factors
  and its loadings (sector / country, or the uniform rho) -- an exact sample of the model
  for the new obligor, jointly with the run's scenarios.

The modified losses ``L'_s = L_s + sum_added l_s - sum_removed l_s`` are summarised chunk by
chunk exactly like the run's (:func:`riskdask.credit.simulation.weighted_summary`) and give
VaR / ES with the run's Monte Carlo errors; the change of ES carries the batch-means error of
the difference (the linearised ES of both books on the same scenarios), and each changed
position its marginal (Euler) ES in the new book, ``E[l | new tail] - mean l``.

Exactness: a removal equals a full rerun in which the removed position's nominal is 0 (the
draw layout is then unchanged) up to floating-point rounding of the loss sums; against a
full rerun of the *modified* portfolio with the same seed -- whose draws are laid out for a
different set of obligors, so a different sample -- the figures agree within their Monte
Carlo errors (tests check 2 SE).
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from .migration import normal_migrations, uniform_migrations
from .simulation import (SimulationModel, _systematic_returns, _TWO_PI_2M32,
                         uses_uniform_draws, weighted_summary)
from .summary import merge_summaries

__all__ = ["obligor_states_chunk", "new_obligor_states_chunk", "changed_losses_chunk",
           "combine_changes", "whatif_stream"]


def whatif_stream(root: np.random.SeedSequence, obligor_id: str,
                  chunk_index: int) -> np.random.SeedSequence:
    """The idiosyncratic stream of a new obligor in one chunk: keyed by its id (crc32),
    so the same added obligor draws the same in every what-if of the run."""
    code = zlib.crc32(str(obligor_id).encode()) or 1
    return np.random.SeedSequence(root.entropy,
                                  spawn_key=tuple(root.spawn_key) + (code, int(chunk_index)))


def _fetch(bitgen, ranges, total: int) -> dict:
    """Raw 64-bit draws ``[r0, r1)`` of a block's stream for each range (sorted, possibly
    overlapping), advancing over the rest; the stream ends at the block's end (``total``)."""
    out, pos = {}, 0
    merged = []
    for r0, r1 in sorted(ranges):
        if merged and r0 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r1)
        else:
            merged.append([r0, r1])
    for r0, r1 in merged:
        if r0 > pos:
            bitgen.advance(r0 - pos)
        out[(r0, r1)] = bitgen.random_raw(r1 - r0)
        pos = r1
    if total > pos:
        bitgen.advance(total - pos)
    return out


def _take(fetched: dict, r0: int, r1: int) -> np.ndarray:
    for (a, b), raw in fetched.items():
        if a <= r0 and r1 <= b:
            return raw[r0 - a:r1 - a]
    raise AssertionError("range not fetched")


def _normals_at(raw_cos, raw_sin):
    """The Box-Muller float32 normals of :func:`~riskdask.credit.simulation.
    standard_normals_f32` for given raws (cos half and sin half), same arithmetic."""
    parts = []
    for raw, fn in ((raw_cos, np.cos), (raw_sin, np.sin)):
        if raw.size == 0:
            parts.append(np.empty(0, np.float32))
            continue
        halves = raw.view(np.uint32).reshape(raw.size, 2)
        u = halves[:, 1].astype(np.float64) * 2.0 ** -32 + 2.0 ** -33
        radius = np.sqrt(-2.0 * np.log(u)).astype(np.float32)
        theta = halves[:, 0].astype(np.float32) * _TWO_PI_2M32
        parts.append(np.multiply(radius, fn(theta)))
    return np.concatenate(parts)


def obligor_states_chunk(chunk, model: SimulationModel, columns) -> tuple:
    """Forward states (worst first) of the obligors in simulation ``columns`` in every
    scenario of the chunk, regenerated exactly, and the chunk's systematic draws.

    Returns
    -------
    states : ndarray of uint8 (len(columns), size)
    eta : ndarray (size, K)
    """
    if model.kind != "factor":
        raise ValueError("what-if regenerates obligors on the factor path only")
    if model.recovery is not None:
        raise ValueError("what-if with uncertain recovery is not supported (the beta draws "
                         "follow every block's defaults)")
    rng = chunk.rng()
    bitgen = rng.bit_generator
    n, size = model.n_obligors, chunk.size
    columns = [int(c) for c in columns]
    states = np.empty((len(columns), size), dtype=np.uint8)
    etas = []
    uniform = uses_uniform_draws(model)
    reps = model.group_start[:-1]
    for b0 in range(0, size, model.block):
        sb = min(model.block, size - b0)
        eta = rng.standard_normal((sb, model.group_loadings.shape[1]))
        if model.shift is not None:
            eta += model.shift
        etas.append(eta)
        if uniform:
            total = (sb * n + 1) // 2
            spans = {k: ((k * sb) // 2, ((k + 1) * sb + 1) // 2) for k in columns}
            fetched = _fetch(bitgen, list(spans.values()), total)
        else:
            m = (n * sb + 1) // 2
            total = m
            spans = {}
            for k in columns:
                a0, a1 = k * sb, (k + 1) * sb
                cos_r = (min(a0, m), min(a1, m))
                sin_r = (max(a0, m) - m, max(a1, m) - m)
                spans[k] = (cos_r, sin_r)
            ranges = [r for c, s in spans.values() for r in (c, s) if r[1] > r[0]]
            fetched = _fetch(bitgen, ranges, total)
        for row, k in enumerate(columns):
            g = int(model.group_of_obligor[k])
            systematic = _systematic_returns(eta, model.group_loadings[g:g + 1])
            thr = model.thresholds[reps[g]:reps[g] + 1]
            sd = model.group_idio[g:g + 1]
            state0 = model.initial_state[reps[g]:reps[g] + 1]
            start = np.array([0, 1], dtype=np.int64)
            if uniform:
                r0, r1 = spans[k]
                raw = _take(fetched, r0, r1)
                off = (k * sb) % 2
                draw = np.ascontiguousarray(raw.view(np.uint32)[off:off + sb]).reshape(1, sb)
                s, _, new = uniform_migrations(draw, thr, systematic, sd, start, state0)
            else:
                (c0, c1), (s0, s1) = spans[k]
                raw_c = _take(fetched, c0, c1) if c1 > c0 else np.empty(0, np.uint64)
                raw_s = _take(fetched, s0, s1) if s1 > s0 else np.empty(0, np.uint64)
                draw = _normals_at(raw_c, raw_s).reshape(1, sb)
                s, _, new = normal_migrations(draw, thr, systematic, sd, start, state0)
            col = np.full(sb, model.initial_state[k], dtype=np.uint8)
            col[s] = new
            states[row, b0:b0 + sb] = col
    return states, np.concatenate(etas)


def new_obligor_states_chunk(chunk, eta, loadings, thresholds, initial_state, streams):
    """Forward states of new obligors (rows of ``loadings`` (m, K), ``thresholds`` (m, R-1),
    worst-first ``initial_state`` (m,)) given the chunk's systematic draws ``eta``: 32-bit
    uniforms from each obligor's own stream (``streams[j]``: a SeedSequence) classified by
    the kernel's compiled migration step."""
    m, size = len(streams), eta.shape[0]
    out = np.empty((m, size), dtype=np.uint8)
    for j in range(m):
        rng = np.random.Generator(np.random.PCG64(streams[j]))
        raw = rng.bit_generator.random_raw((size + 1) // 2)
        draw = np.ascontiguousarray(raw.view(np.uint32)[:size]).reshape(1, size)
        b = np.asarray(loadings[j], dtype=float)[None, :]
        sd = np.sqrt(np.array([1.0 - float((b * b).sum())]))
        s, _, new = uniform_migrations(draw, np.asarray(thresholds[j], float)[None, :],
                                       _systematic_returns(eta, b), sd,
                                       np.array([0, 1], dtype=np.int64),
                                       np.array([initial_state[j]], dtype=np.int64))
        col = np.full(size, initial_state[j], dtype=np.uint8)
        col[s] = new
        out[j] = col
    return out


def changed_losses_chunk(chunk, shared, *, change):
    """Engine kernel: the chunk's summary of the modified book and the changed positions'
    per-scenario losses.

    ``shared``: ``{"model", "loss", "weight"}`` (the run's model, the kept losses and
    weights of all scenarios); ``change``: ``{"columns", "rows" (loss_by_state rows of the
    changed positions on existing obligors, signed: + added, - removed), "new": (loadings,
    thresholds, initial_state, rows, streams root, ids) or None}``.

    Returns
    -------
    (LossSummary, ndarray (positions, size))
    """
    model = shared["model"]
    base = shared["loss"][chunk.start:chunk.stop]
    w = shared["weight"]
    weight = np.ones(chunk.size) if w is None or w.size == 0 else w[chunk.start:chunk.stop]
    cols = change["columns"]
    losses = []
    if cols:
        states, eta = obligor_states_chunk(chunk, model, sorted(set(cols)))
        where = {c: r for r, c in enumerate(sorted(set(cols)))}
        for c, row in zip(cols, change["rows"]):
            losses.append(row[states[where[c]]])
    else:
        eta = None
    new = change.get("new")
    if new is not None:
        loadings, thresholds, initial, rows, root, ids = new
        if eta is None:
            _, eta = obligor_states_chunk(chunk, model, [])
        streams = [whatif_stream(root, i, chunk.index) for i in ids]
        st = new_obligor_states_chunk(chunk, eta, loadings, thresholds, initial, streams)
        for j, row in enumerate(rows):
            losses.append(row[st[j]])
    per = np.vstack(losses) if losses else np.zeros((0, chunk.size))
    loss = base + per.sum(axis=0) if losses else base.copy()
    return weighted_summary(chunk, model, loss, weight), per, loss


def combine_changes(a, b):
    """Merge two neighbouring chunk ranges of :func:`changed_losses_chunk` (exact)."""
    return (merge_summaries(a[0], b[0], weight_needed=a[0].meta["weight_needed"],
                            state_rows=0),
            np.concatenate([a[1], b[1]], axis=1), np.concatenate([a[2], b[2]]))


def statistics_model(model: SimulationModel, expected_loss_change: float) -> SimulationModel:
    """The model whose Step 6 statistics describe the modified book: under importance
    sampling the analytic mean moves by the changed positions' analytic EL."""
    if model.shift is None or model.expected_loss is None:
        return model
    el = np.concatenate([model.expected_loss, [expected_loss_change]])
    return replace(model, expected_loss=el)
