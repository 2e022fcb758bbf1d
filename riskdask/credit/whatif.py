"""What-if from a run's own scenarios: add or remove positions without re-simulating the
rest of the portfolio (kernels: pure functions of a chunk, its stream and the model).

The run keeps every scenario's portfolio loss ``L_s`` (and its importance-sampling weight)
and the forward state of every obligor in its worst scenarios (the tail buffer's states).
A change of the book needs only

* the losses of the **changed positions** in every scenario.  For an obligor of the run,
  its forward state is regenerated exactly: the chunk's stream is replayed for the
  systematic factors and then *advanced* (``PCG64.advance``) straight to the obligor's
  idiosyncratic draws (the kernel lays each block's draws out obligor-major), which are
  classified by the kernel's own compiled migration step -- the same states, bit for bit,
  at the cost of the factor draws plus one draw per scenario.  A **new** obligor draws its
  idiosyncratic uniforms from a stream keyed by its obligor id (purpose ``"whatif"``),
  combined with the regenerated systematic factors and its loadings: an exact sample of
  the model for the new obligor, jointly with the run's scenarios;
* the states of every obligor in the scenarios that **enter** the modified book's tail but
  were not among the run's kept tail rows (for the marginal ES of every obligor): from the
  stream's state at the start of the block holding such a scenario (recorded by the first
  walk), the systematic draws are regenerated and the PCG64 state is jumped straight to
  each obligor's draw (:mod:`riskdask.credit.pcg64_jump`): n raw draws a scenario.

Both are one walk over a chunk's stream (:func:`replay_chunk`).  The statistics of the
modified book ``L'_s = L_s + sum_added l_s - sum_removed l_s`` are the run's Step 6 on the
whole scenario array (:func:`riskdask.credit.simulation.scenario_summary`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from riskdask.streams import keyed_seed

from .migration import normal_migrations, uniform_column_states, uniform_migrations
from .pcg64_jump import raws_at, state_words
from .simulation import SimulationModel, _systematic_returns, _TWO_PI_2M32, uses_uniform_draws

__all__ = ["replay_chunk", "tail_loss_sums", "changed_losses_chunk", "tail_states_chunk",
           "new_obligor_states", "whatif_stream", "check_replayable"]


def whatif_stream(root: np.random.SeedSequence, obligor_id: str,
                  chunk_index: int) -> np.random.SeedSequence:
    """The idiosyncratic stream of a new obligor in one chunk: keyed by its id
    (:func:`riskdask.streams.keyed_seed`), so the same added obligor draws the same in every
    what-if of the run."""
    return keyed_seed(root, str(obligor_id), int(chunk_index))


def check_replayable(model: SimulationModel) -> None:
    """Refuse a model whose draws the what-if cannot replay obligor by obligor."""
    if model.kind != "factor":
        raise ValueError("what-if regenerates obligors on the factor path only")
    if model.recovery is not None:
        raise ValueError("what-if with uncertain recovery is not supported (the beta draws "
                         "follow every block's defaults)")


def _word_spans(columns, sb: int, n: int, uniform: bool):
    """Raw 64-bit draw ranges ``[r0, r1)`` of each column's draws in a block.

    Uniform path: column ``k`` is 32-bit words ``[k sb, (k + 1) sb)`` of the block.  Normal
    path (Box-Muller, :func:`~riskdask.credit.simulation.standard_normals_f32`): normal ``a``
    is the cos half of raw ``a`` for ``a < m`` and the sin half of raw ``a - m`` above.
    """
    if uniform:
        return {k: ((k * sb) // 2, ((k + 1) * sb + 1) // 2) for k in columns}
    m = (n * sb + 1) // 2
    spans = {}
    for k in columns:
        a0, a1 = k * sb, (k + 1) * sb
        spans[k] = ((min(a0, m), min(a1, m)), (max(a0, m) - m, max(a1, m) - m))
    return spans


def _fetch(bitgen, ranges, total: int) -> dict:
    """Raw 64-bit draws ``[r0, r1)`` of a block's stream for each range (possibly
    overlapping), advancing over the rest; the stream ends at the block's end (``total``)."""
    out, pos = {}, 0
    merged = []
    for r0, r1 in sorted(r for r in ranges if r[1] > r[0]):
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


def _slice(fetched: dict, r0: int, r1: int) -> np.ndarray:
    if r1 <= r0:
        return np.empty(0, np.uint64)
    for (a, b), raw in fetched.items():
        if a <= r0 and r1 <= b:
            return raw[r0 - a:r1 - a]
    raise AssertionError("range not fetched")


def _box_muller(raw, fn) -> np.ndarray:
    """The float32 normals of :func:`~riskdask.credit.simulation.standard_normals_f32` of
    given raws (``fn``: ``np.cos`` or ``np.sin`` half), with the same arithmetic."""
    if raw.size == 0:
        return np.empty(0, np.float32)
    halves = raw.view(np.uint32).reshape(raw.size, 2)
    u = halves[:, 1].astype(np.float64) * 2.0 ** -32 + 2.0 ** -33
    radius = np.sqrt(-2.0 * np.log(u)).astype(np.float32)
    theta = halves[:, 0].astype(np.float32) * _TWO_PI_2M32
    return np.multiply(radius, fn(theta))


def _column_draws(fetched, span, k: int, sb: int, uniform: bool) -> np.ndarray:
    if uniform:
        raw = _slice(fetched, *span)
        off = (k * sb) % 2
        return raw.view(np.uint32)[off:off + sb]
    (c0, c1), (s0, s1) = span
    return np.concatenate([_box_muller(_slice(fetched, c0, c1), np.cos),
                           _box_muller(_slice(fetched, s0, s1), np.sin)])


def _scenario_words(rows, sb: int, n: int, uniform: bool, total: int):
    """Every obligor's draw at block ``rows``: its word index (n, len(rows)) in the block
    and the raw 64-bit draw that holds it (uniform: word ``2p`` / ``2p + 1`` is the low /
    high half of raw ``p``; normal: normal ``a`` the cos half of raw ``a`` below ``total``,
    the sin half of raw ``a - total`` above)."""
    words = np.arange(n)[:, None] * sb + np.asarray(rows)[None, :]
    at = words // 2 if uniform else np.where(words < total, words, words - total)
    return words, at


def _draws_of(raw, words, uniform: bool, total: int) -> np.ndarray:
    """The kernel's draws (uint32 uniforms or float32 normals) at ``words`` from the raws
    holding them (``raw``, shaped as ``words``)."""
    if uniform:      # the halves as the kernel's raw.view(np.uint32) orders them
        halves = np.ascontiguousarray(raw).view(np.uint32).reshape(raw.shape + (2,))
        return np.take_along_axis(halves, (words % 2)[..., None], axis=-1)[..., 0]
    flat, cos = raw.ravel(), (words < total).ravel()
    out = np.empty(flat.size, np.float32)
    out[cos] = _box_muller(flat[cos], np.cos)
    out[~cos] = _box_muller(flat[~cos], np.sin)
    return out.reshape(words.shape)


def _scenario_draws(bitgen, rows, sb: int, n: int, uniform: bool, total: int):
    """Every obligor's draw (n, len(rows)) at block ``rows``, the stream standing at the
    block's idiosyncratic draws: just the raws they need, computed by jumping the PCG64
    state (:func:`~riskdask.credit.pcg64_jump.raws_at`, bit for bit numpy's) rather than
    walking the block; the stream then stands at the block's end."""
    words, at = _scenario_words(rows, sb, n, uniform, total)
    raw = raws_at(state_words(bitgen.state), at)
    bitgen.advance(total)
    return _draws_of(raw, words, uniform, total)


def replay_chunk(chunk, model: SimulationModel, columns=(), rows=(), marks=None):
    """One walk over a chunk's stream: the systematic draws, the idiosyncratic draws of
    some obligors in every scenario and of every obligor in some scenarios.

    Parameters
    ----------
    chunk : riskdask.engine.Chunk
    model : SimulationModel
        The run's model (factor path, no uncertain recovery).
    columns : sequence of int
        Obligors (simulation order) whose draws are wanted in every scenario.
    rows : sequence of int
        Scenarios (0-based within the chunk) whose draws of every obligor are wanted
        (``columns`` or ``rows``, not both).
    marks : list, optional
        The stream's state at every block's start, from an earlier walk (the ``marks``
        this function returns): with them only the blocks holding ``rows`` are visited
        (``columns`` must then be empty).

    Returns
    -------
    eta : ndarray (size, K) or None
        Systematic factor draws, importance-sampling shift added (as the kernel); with
        ``marks``, None and ``row_eta`` instead.
    column_draws : ndarray (len(columns), size)
        uint32 uniforms or float32 normals, the kernel's own.
    row_draws : ndarray (n, len(rows))
        The same for every obligor at ``rows``, in the order given.
    row_eta : ndarray (len(rows), K)
        The systematic draws at ``rows``.
    marks : list of dict
        The bit generator's state at every block's start.
    """
    check_replayable(model)
    rng = chunk.rng()
    bitgen = rng.bit_generator
    n, size, n_factors = model.n_obligors, chunk.size, model.group_loadings.shape[1]
    uniform = uses_uniform_draws(model)
    columns = [int(c) for c in columns]
    rows = np.asarray(rows, dtype=np.int64)
    dtype = np.uint32 if uniform else np.float32
    col_out = np.empty((len(columns), size), dtype=dtype)
    row_out = np.empty((n, rows.size), dtype=dtype)
    row_eta = np.empty((rows.size, n_factors))
    where = np.argsort(rows, kind="stable")
    sorted_rows = rows[where]
    etas, new_marks = [], []
    starts = range(0, size, model.block)
    if columns and rows.size:
        raise ValueError("replay_chunk: give columns or rows, not both")
    if marks is not None:
        if columns:
            raise ValueError("replay_chunk: marks visit only the blocks holding rows")
        hit = np.unique(sorted_rows // model.block)
        starts = [int(b) * model.block for b in hit]
    spans_of = {}
    for b0 in starts:
        sb = min(model.block, size - b0)
        if marks is not None:
            bitgen.state = marks[b0 // model.block]
        else:
            new_marks.append(bitgen.state)
        eta = rng.standard_normal((sb, n_factors))
        if model.shift is not None:
            eta += model.shift
        if marks is None:
            etas.append(eta)
        total = (sb * n + 1) // 2
        lo, hi = np.searchsorted(sorted_rows, [b0, b0 + sb])
        if sb not in spans_of:
            spans_of[sb] = _word_spans(columns, sb, n, uniform)
        spans = spans_of[sb]
        if hi > lo:                              # scenarios wanted whole: every obligor
            local = sorted_rows[lo:hi] - b0
            row_out[:, where[lo:hi]] = _scenario_draws(bitgen, local, sb, n, uniform, total)
            row_eta[where[lo:hi]] = eta[local]
            continue
        if not columns:
            bitgen.advance(total)
            continue
        ranges = [r for s in spans.values() for r in ((s,) if uniform else s)]
        fetched = _fetch(bitgen, ranges, total)
        for j, k in enumerate(columns):
            col_out[j, b0:b0 + sb] = _column_draws(fetched, spans[k], k, sb, uniform)
    eta = np.concatenate(etas) if etas else None
    return eta, col_out, row_out, row_eta, new_marks


def _classify(model: SimulationModel, draw, eta, groups, group_start, initial):
    """Forward states (worst first) of draws (m, s) by the kernel's migration step: rows of
    ``draw`` grouped by ``group_start`` with the rating groups ``groups`` of the model."""
    systematic = _systematic_returns(eta, model.group_loadings[groups])
    reps = model.group_start[:-1][groups]
    fn = uniform_migrations if uses_uniform_draws(model) else normal_migrations
    s, i, new = fn(np.ascontiguousarray(draw), model.thresholds[reps], systematic,
                   model.group_idio[groups], group_start, model.initial_state[reps])
    states = np.repeat(np.asarray(initial, dtype=np.uint8)[:, None], draw.shape[1], axis=1)
    states[i, s] = new
    return states


def column_states(model: SimulationModel, columns, draws, eta) -> np.ndarray:
    """States (len(columns), size) of obligors (simulation order) from their draws: the
    one-obligor kernel :func:`~riskdask.credit.migration.uniform_column_states` on the
    uniform path, the group kernel on one group otherwise (the same states either way)."""
    out = np.empty(draws.shape, dtype=np.uint8)
    uniform = uses_uniform_draws(model)
    for j, k in enumerate(columns):
        g = int(model.group_of_obligor[k])
        if uniform:
            rep = model.group_start[g]
            systematic = _systematic_returns(eta, model.group_loadings[g:g + 1])[0]
            out[j] = uniform_column_states(draws[j], model.thresholds[rep], systematic,
                                           model.group_idio[g])
        else:
            out[j] = _classify(model, draws[j:j + 1], eta, np.array([g]),
                               np.array([0, 1], dtype=np.int64), [model.initial_state[k]])[0]
    return out


def scenario_states(model: SimulationModel, draws, eta_rows) -> np.ndarray:
    """Every obligor's state (rows, n) in some scenarios from their draws (n, rows)."""
    groups = np.arange(model.group_start.size - 1)
    return _classify(model, draws, eta_rows, groups, model.group_start,
                     model.initial_state).T


def new_obligor_states(eta, loadings, thresholds, initial_state, streams) -> np.ndarray:
    """Forward states of new obligors (rows of ``loadings`` (m, K), ``thresholds``
    (m, R-1), worst-first ``initial_state`` (m,)) given a chunk's systematic draws ``eta``:
    32-bit uniforms from each obligor's own stream (``streams[j]``: a SeedSequence)
    classified by the kernel's compiled migration step."""
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


@njit(cache=True, nogil=True, boundscheck=False)
def _tail_sums_kernel(states, extra, rows, loss_by_state, weight, ks, out):
    n = states.shape[1]
    acc = np.zeros(n)
    j = 0
    for r in range(rows.size):
        while j < ks.size and ks[j] == r:
            out[:, j] = acc
            j += 1
        w = weight[r]
        row = states[rows[r]] if rows[r] >= 0 else extra[-1 - rows[r]]
        for i in range(n):
            acc[i] += w * loss_by_state[i, row[i]]
    while j < ks.size:
        out[:, j] = acc
        j += 1


def tail_loss_sums(states, loss_by_state, weight, ks, rows=None, extra=None) -> np.ndarray:
    """``sum_{r < k} w_r loss_by_state[i, s_ri]`` per obligor ``i`` for every ``k`` in ``ks``
    (ascending), in one pass over the tail rows (worst first; ``s_r`` the states of row
    ``r``): the ES contribution sums of Step 6 (row by row, as
    :func:`riskdask.credit.simulation._tail_state_sums`, so the same bits).

    Parameters
    ----------
    states : ndarray of uint8 (m, n)
    loss_by_state : ndarray (n, R)
    weight : ndarray (rows,)
        The tail rows' weights.
    ks : sequence of int, ascending, each <= rows
    rows : ndarray of int64 (rows,), optional
        Where each tail row's states are: ``states[rows[r]]``, or ``extra[-1 - rows[r]]``
        for ``rows[r] < 0`` (kept rows and regenerated ones, without copying either);
        default: ``states`` are the tail rows in order.
    extra : ndarray of uint8 (e, n), optional

    Returns
    -------
    ndarray (n, len(ks))
    """
    ks = np.asarray(ks, dtype=np.int64)
    states = np.ascontiguousarray(states, dtype=np.uint8)
    rows = (np.arange(states.shape[0], dtype=np.int64) if rows is None
            else np.asarray(rows, dtype=np.int64))
    extra = (np.zeros((0, states.shape[1]), np.uint8) if extra is None
             else np.ascontiguousarray(extra, dtype=np.uint8))
    out = np.empty((states.shape[1], ks.size))
    _tail_sums_kernel(states, extra, rows, np.ascontiguousarray(loss_by_state, dtype=np.float64),
                      np.ascontiguousarray(weight, dtype=np.float64), ks, out)
    return out


def changed_losses_chunk(chunk, model: SimulationModel, *, change):
    """Engine kernel: the changed positions' signed losses (positions, size) in the chunk,
    and the stream's state at every block's start (for :func:`tail_states_chunk`).

    ``change``: ``{"columns": simulation columns of the changed positions on obligors of
    the run, "rows": their signed ``loss_by_state`` rows (+ added, - removed), "new":
    (loadings, thresholds, initial_state, rows, streams root, ids) or None}``; rows of the
    result: the existing obligors' positions in order, then the new obligors'.
    """
    cols = sorted(set(change["columns"]))
    eta, draws, _, _, marks = replay_chunk(chunk, model, cols)
    states = column_states(model, cols, draws, eta)
    where = {c: r for r, c in enumerate(cols)}
    losses = [row[states[where[c]]] for c, row in zip(change["columns"], change["rows"])]
    new = change.get("new")
    if new is not None:
        loadings, thresholds, initial, rows, root, ids = new
        streams = [whatif_stream(root, i, chunk.index) for i in ids]
        st = new_obligor_states(eta, loadings, thresholds, initial, streams)
        losses.extend(row[st[j]] for j, row in enumerate(rows))
    return (np.vstack(losses) if losses else np.zeros((0, chunk.size))), marks


def tail_states_chunk(chunk, model: SimulationModel, *, rows, marks=None) -> np.ndarray:
    """Engine kernel: every obligor's state (len(rows), n) at chunk-local scenario
    ``rows``, regenerated exactly (each row's n draws by jumping the block's stream to
    them; with the ``marks`` of :func:`changed_losses_chunk`, only the blocks holding
    ``rows`` are visited)."""
    _, _, draws, eta, _ = replay_chunk(chunk, model, (), rows, marks)
    return scenario_states(model, draws, eta)
