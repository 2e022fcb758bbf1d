"""Monte Carlo kernel of the CreditMetrics model (seed section 3.3, Steps 0-6).

Step 0 (the conditional-forward-value matrix) is computed once and enters the
kernel as ``loss_by_state[i, w] = FV_i - CFV_i^w``; Steps 1-4 run per chunk of
scenarios in :func:`simulate_chunk`; Step 5 is the engine's map over chunks and
the exact tree reduce of :func:`combine_summaries`; Step 6 is
:func:`simulation_statistics`.

Two correlation paths, both exact samplers of the seed's model:

* **factor** (uniform rho = one factor with loading sqrt(rho), or sector /
  country factor loadings): ``x_i = beta_i' eta + s_i eps_i`` with independent
  standard normal factors ``eta`` and idiosyncratic ``eps_i``.  Given the
  factors, ``x_i < b_k`` iff ``U_i < Phi((b_k - beta_i' eta) / s_i)`` with
  ``U_i = Phi(eps_i)`` uniform, so the idiosyncratic normal is drawn as its
  uniform -- one 32-bit integer compared with integer thresholds -- instead of
  a normal deviate and a matrix product (Step 2 without the n x n Cholesky
  product).  The conditional probabilities depend only on the obligor's *group*
  (initial rating, loadings), i.e. a handful of ``ndtr`` calls per scenario.  The
  band test, the walk to the new state and those ``ndtr`` calls run in one compiled
  pass (:mod:`riskdask.credit.migration`), bit-identical to the numpy formulation.
  Rounding probabilities down to multiples of 2^-32 moves each migration
  probability by less than 2.4e-10.  When there are many groups (sector x
  country x rating) the per-group ``ndtr`` calls would cost more than the draws,
  and ``eps_i`` is drawn as a float32 normal (Box-Muller) compared with the
  standardised boundaries ``(b_k - beta_i' eta) / s_i`` instead
  (:func:`uses_uniform_draws` picks the cheaper).
* **matrix** (a full correlation matrix): Step 2 literally, ``x_c = L x`` with
  the Cholesky factor (BLAS ``strmm``), in float32: only a return within ~1e-7 of
  a boundary can change state, probability ~1e-7 per entry.

Step 3 maps returns to states by the boundaries of Table 3.1.  Most obligors keep
their rating, so the kernel first tests the "unchanged" band (two comparisons),
then resolves the exact state only for the entries that migrated.

Importance sampling (seed Step 1, "sampling with a higher probability from the
tail"; the mean shift of Glasserman & Li 2005): the systematic normals are drawn
from ``N(mu, I)`` and every scenario carries the likelihood ratio
``w = exp(-mu' z + mu' mu / 2)``.  VaR and ES are then weighted: ``SFV_(a)`` is the
first sorted scenario whose cumulative weight reaches ``a``, ES the weighted mean
of the scenarios before it (with unit weights exactly the seed's definitions).

Every reduction whose bits matter is order- and alignment-free (``math.fsum``,
``bincount``, cumulative sums, fixed-order multiply-adds) so that a chunk's
summary is the same bits in any worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numba import njit
from scipy.special import ndtri

from riskdask.engine import reduce_local

from .migration import (indexed_sums, normal_migrations, scatter_states, select_records,
                        uniform_migrations)
from .summary import (LossSummary, exact_sum, keep_rows, merge_summaries, ordered_sum,
                      sort_tail, tail_count, tail_index, var_es_from_sorted)
from .uncertainty import MIN_BATCHES, local_batch, moment_errors, tail_errors

__all__ = [
    "SimulationModel",
    "build_factor_model",
    "build_matrix_model",
    "simulate_chunk",
    "combine_summaries",
    "simulate_local",
    "simulation_statistics",
    "importance_shift",
    "uses_uniform_draws",
    "standard_normals_f32",
    "effective_state_rows",
    "tail_cuts",
    "tail_obligor_sums",
    "weighted_summary",
    "scenario_summary",
    "batch_bounds",
    "batch_sums",
    "batch_of",
    "top_rows",
    "chunk_losses",
    "add_arrays",
    "needs_contribution_pass",
    "lattice_facts",
    "LevelStats",
    "SimulationStats",
]

# Per-obligor tail states are uint8: cap the buffer at this many bytes per chunk summary so
# worker memory is bounded in the number of obligors too (the second pass, see
# tail_obligor_sums, covers tails that do not fit).
STATE_BYTES = 64 * 2 ** 20


@dataclass(frozen=True)
class SimulationModel:
    """Everything a worker needs; scattered once to the cluster.

    Obligors are stored in *simulation order* (sorted by group so that each
    group is a contiguous block); ``order[k]`` is the input position of the
    obligor simulated in column k.
    """

    kind: str                      # "factor" or "matrix"
    loss_by_state: np.ndarray      # (n, R) FV_i - CFV_i^w, states worst first
    initial_state: np.ndarray      # (n,) worst-first state index of the initial rating
    thresholds: np.ndarray         # (n, R - 1) Table 3.1 boundaries per obligor
    order: np.ndarray              # (n,) input position of each simulated column
    confidence: tuple              # confidence levels
    n_scenarios: int               # sim, for a = round(sim * (1 - confidence))
    state_rows: int                # tail rows that keep per-obligor states
    hist_edges: np.ndarray         # loss histogram edges
    block: int                     # scenarios per cache-sized block
    shift: np.ndarray | None = None          # IS mean shift of the systematic normals
    # factor path
    group_start: np.ndarray | None = None    # (G + 1,) block boundaries
    group_loadings: np.ndarray | None = None  # (G, K) loadings on independent factors
    group_idio: np.ndarray | None = None     # (G,) idiosyncratic standard deviation
    group_of_obligor: np.ndarray | None = None  # (n,)
    # matrix path
    cholesky: np.ndarray | None = None       # (n, n) float32 lower triangular
    # importance sampling: analytic EL_i (simulation order), the mean VaR/ES are measured from
    expected_loss: np.ndarray | None = None
    # error estimates: fixed sub-ranges per chunk (a function of the config) and the
    # centre c of the batch sums sum w (L - c)^k (the analytic EL: no cancellation)
    batches_per_chunk: int = MIN_BATCHES
    center: float = 0.0
    # uncertain recovery (simulation order): beta alpha, beta (alpha = 0: fixed recovery),
    # nominal and mean recovery rate; None: every recovery fixed (no extra draws)
    recovery: tuple | None = None
    # keep every scenario's loss (and weight) in the merged summary (what-if)
    keep_losses: bool = False

    def input_columns(self) -> np.ndarray:
        """The simulated column of every obligor in input order (the inverse of ``order``)."""
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(self.order.size)
        return inverse

    def reference_mean(self, simulated_mean: float) -> float:
        """The mean in ``VaR = mean - SFV_(a)``: the simulated one (seed Step 6), or with
        importance sampling the exact analytic EL -- the likelihood-ratio-weighted mean is
        dominated by rare huge weights in good scenarios and would only add noise."""
        if self.shift is not None and self.expected_loss is not None:
            return exact_sum(self.expected_loss)
        return simulated_mean

    @property
    def cholesky_f(self) -> np.ndarray:
        """The float32 Cholesky factor in Fortran order (for BLAS ``strmm``)."""
        return np.asfortranarray(self.cholesky)

    @property
    def n_obligors(self) -> int:
        return self.loss_by_state.shape[0]

    @property
    def n_states(self) -> int:
        return self.loss_by_state.shape[1]

    @property
    def tail_counts(self) -> list[int]:
        return [tail_count(self.n_scenarios, c) for c in self.confidence]

    @property
    def weight_needed(self) -> float:
        """Tail weight to keep: twice the largest ``a`` over the confidence levels (at
        least ``a + 5 sqrt(a) + 10``), so that the buffer also holds the losses just below
        each ``SFV_(a)`` -- the sampling law of the order statistic
        (:mod:`riskdask.credit.uncertainty`) -- and the exceedances of the Step 7
        peaks-over-threshold fit."""
        a = float(max(self.tail_counts))
        return float(max(2.0 * a, a + 5.0 * np.sqrt(a) + 10.0))


def effective_state_rows(state_rows: int, n_scenarios: int, confidence, weighted: bool,
                         n_obligors: int | None = None) -> int:
    """Tail rows that need per-obligor states.

    With plain sampling the ES tail of a level is exactly ``a - 1`` rows, so only
    the largest ``a - 1`` that fits in ``state_rows`` is kept: a tail too long for
    the buffer gets no contributions anyway, and keeping fewer rows keeps worker
    memory from growing with the scenario count.  With likelihood-ratio weights
    the tail length is not known in advance: keep ``state_rows``.
    """
    if weighted:
        return int(state_rows)
    fits = [tail_count(n_scenarios, c) - 1 for c in confidence]
    fits = [k for k in fits if k <= state_rows]
    return int(max(fits, default=0))


def _common(loss_by_state, initial_state, thresholds, confidence, n_scenarios,
            state_rows, hist_edges, block, weighted, expected_loss=None,
            batches_per_chunk=MIN_BATCHES):
    loss_by_state = np.ascontiguousarray(loss_by_state, dtype=float)
    n = loss_by_state.shape[0]
    if block is None:
        block = int(max(64, min(8192, (1 << 20) // max(n, 1))))
    return dict(loss_by_state=loss_by_state,
                initial_state=np.asarray(initial_state, dtype=np.int64),
                thresholds=np.asarray(thresholds, dtype=float),
                confidence=tuple(float(c) for c in confidence),
                n_scenarios=int(n_scenarios),
                state_rows=effective_state_rows(state_rows, n_scenarios, confidence, weighted,
                                                n),
                hist_edges=np.asarray(hist_edges, dtype=float), block=int(block),
                batches_per_chunk=int(batches_per_chunk),
                center=0.0 if expected_loss is None else exact_sum(expected_loss))


def _with_recovery(model: SimulationModel, recovery) -> SimulationModel:
    """Attach beta-distributed recovery (``recovery = (mean, sd, nominal)`` per obligor,
    input order).  None or all sd 0: the model unchanged -- no extra random draws, so
    every result is bit-identical to fixed recovery.  With uncertain recovery the tail
    states no longer determine the tail losses: ES contributions come from the second pass
    (``state_rows = 0``)."""
    if recovery is None:
        return model
    from .valuation import beta_parameters

    mean, sd, nominal = (np.asarray(x, dtype=float) for x in recovery)
    if not np.any(sd > 0):
        return model
    alpha, beta = np.zeros_like(sd), np.zeros_like(sd)
    on = sd > 0
    alpha[on], beta[on] = beta_parameters(mean[on], sd[on])
    o = model.order
    return replace(model, state_rows=0,
                   recovery=(alpha[o], beta[o], nominal[o], mean[o]))


def build_factor_model(loss_by_state, initial_state, thresholds, loadings, *, confidence,
                       n_scenarios, hist_edges, state_rows=10_000, shift=None,
                       expected_loss=None, block=None,
                       batches_per_chunk=MIN_BATCHES, recovery=None) -> SimulationModel:
    """Model for a uniform correlation or a factor model.

    Parameters
    ----------
    loss_by_state : ndarray, shape (n, R)
        ``FV_i - CFV_i^w`` with states worst first (zero at the initial state).
    initial_state : ndarray of int, shape (n,)
        Worst-first index of each initial rating.
    thresholds : ndarray, shape (n, R - 1)
        Migration boundaries (Table 3.1) of each obligor.
    loadings : ndarray, shape (n, K)
        Loadings on *independent* standard normal factors (uniform rho: one
        column sqrt(rho)); each row's squared norm must be below 1.
    confidence, n_scenarios, hist_edges, state_rows, shift, expected_loss, block
        See :class:`SimulationModel`.
    batches_per_chunk : int
        Fixed sub-ranges per chunk for the error estimates
        (:func:`riskdask.credit.uncertainty.batches_per_chunk` of the config).
    recovery : tuple of ndarray (mean, sd, nominal), optional
        Beta-distributed recovery per obligor (see :func:`_with_recovery`).
    """
    base = _common(loss_by_state, initial_state, thresholds, confidence, n_scenarios,
                   state_rows, hist_edges, block, weighted=shift is not None,
                   expected_loss=expected_loss, batches_per_chunk=batches_per_chunk)
    loadings = np.atleast_2d(np.asarray(loadings, dtype=float))
    r2 = np.einsum("ik,ik->i", loadings, loadings)
    if np.any(r2 >= 1.0):
        raise ValueError("factor loadings must have squared norm below 1")
    key = np.column_stack([base["initial_state"].astype(float), base["thresholds"], loadings])
    _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    group_sorted = group[order]
    n_groups = first.size
    group_start = np.searchsorted(group_sorted, np.arange(n_groups + 1))
    reps = order[group_start[:-1]]
    return _with_recovery(SimulationModel(
        kind="factor",
        loss_by_state=base["loss_by_state"][order],
        initial_state=base["initial_state"][order],
        thresholds=base["thresholds"][order],
        order=order,
        confidence=base["confidence"], n_scenarios=base["n_scenarios"],
        state_rows=base["state_rows"], hist_edges=base["hist_edges"], block=base["block"],
        batches_per_chunk=base["batches_per_chunk"], center=base["center"],
        shift=None if shift is None else np.asarray(shift, dtype=float).ravel(),
        group_start=group_start,
        group_loadings=np.ascontiguousarray(loadings[reps]),
        group_idio=np.sqrt(1.0 - r2[reps]),
        group_of_obligor=group_sorted,
        expected_loss=None if expected_loss is None else np.asarray(expected_loss, float)[order],
    ), recovery)


def build_matrix_model(loss_by_state, initial_state, thresholds, correlation, *, confidence,
                       n_scenarios, hist_edges, state_rows=10_000, shift=None,
                       expected_loss=None, block=None,
                       batches_per_chunk=MIN_BATCHES, recovery=None) -> SimulationModel:
    """Model for a full n x n correlation matrix (Step 2 by Cholesky).

    ``correlation`` must be symmetric positive definite (the loaders check and
    report the smallest eigenvalue otherwise).
    """
    base = _common(loss_by_state, initial_state, thresholds, confidence, n_scenarios,
                   state_rows, hist_edges, block, weighted=shift is not None,
                   expected_loss=expected_loss, batches_per_chunk=batches_per_chunk)
    chol = np.linalg.cholesky(np.asarray(correlation, dtype=float))
    n = chol.shape[0]
    return _with_recovery(SimulationModel(
        kind="matrix", order=np.arange(n), cholesky=np.asfortranarray(chol, dtype=np.float32),
        shift=None if shift is None else np.asarray(shift, dtype=float).ravel(),
        expected_loss=None if expected_loss is None else np.asarray(expected_loss, float),
        **base), recovery)


def importance_shift(model_kind: str, loss_at_default, default_threshold, loadings_or_chol,
                     target_confidence: float, size: float | None = None) -> np.ndarray:
    """Mean shift of the systematic normals for importance sampling.

    Factor models: the direction is the gradient, at zero, of the conditional
    expected default loss ``sum_i LGD_i * Phi((b_D,i - beta_i' z) / s_i)`` with
    respect to the independent systematic normals (negated: towards losses).
    Full matrix: the top eigenvector of the correlation matrix, mapped to the
    independent normals by the Cholesky factor.  The length is
    ``Phi^-1(target_confidence)`` unless ``size`` is given, which centres the
    sampling at the factor quantile that drives the target tail (Glasserman &
    Li 2005, one-factor case; the seed's Step 1).

    Parameters
    ----------
    model_kind : {"factor", "matrix"}
    loss_at_default : ndarray (n,)
    default_threshold : ndarray (n,)
        ``b_D`` of each obligor.
    loadings_or_chol : ndarray
        (n, K) loadings on independent factors, or the (n, n) Cholesky factor.
    target_confidence : float
    size : float, optional
    """
    lgd = np.asarray(loss_at_default, dtype=float)
    b = np.asarray(default_threshold, dtype=float)
    a = np.asarray(loadings_or_chol, dtype=float)
    dens = np.where(np.isfinite(b), np.exp(-0.5 * np.where(np.isfinite(b), b, 0.0) ** 2), 0.0)
    if model_kind == "factor":
        sd = np.sqrt(np.clip(1.0 - np.einsum("ik,ik->i", a, a), 1e-12, None))
        g = ((lgd * dens / sd)[:, None] * a).cumsum(axis=0)[-1]     # fixed order
    else:
        # A full matrix has no named factors: shift along its systematic direction,
        # the top eigenvector u of R = L L' oriented towards the exposures; in the
        # independent normals that is L'u (x_c moves by -t sqrt(lambda) u).  For a
        # uniform matrix this is exactly the one-factor shift.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            _, vectors = np.linalg.eigh(a @ a.T)
        u = vectors[:, -1]
        if exact_sum(lgd * dens * u) < 0:
            u = -u
        g = (u[:, None] * a).cumsum(axis=0)[-1]                      # L'u, fixed order
    norm = np.sqrt(exact_sum(g * g))
    if norm == 0.0:
        g = a.cumsum(axis=0)[-1]
        norm = np.sqrt(exact_sum(g * g))
    direction = g / norm
    length = ndtri(target_confidence) if size is None else float(size)
    return -length * direction


# ------------------------------------------------------------------------------ kernel
_TWO_PI_2M32 = np.float32(2.0 * np.pi / 2.0 ** 32)


def standard_normals_f32(rng, count: int) -> np.ndarray:
    """``count`` independent standard normals (float32) by the Box-Muller transform.

    Each 64-bit draw gives two uniforms: the high 32 bits the radius
    ``sqrt(-2 log u)`` (in float64, u in (0, 1) on a 2^-32 grid: tails to 6.6
    sigma, probability 3e-11 cut), the low 32 bits the angle (float32 sin/cos, SIMD).
    About twice as fast here as numpy's float32 ziggurat, and it consumes a fixed
    number of draws.
    """
    m = (count + 1) // 2
    raw = rng.bit_generator.random_raw(m)
    halves = raw.view(np.uint32).reshape(m, 2)           # little endian: [low, high]
    u = halves[:, 1].astype(np.float64) * 2.0 ** -32 + 2.0 ** -33
    radius = np.sqrt(-2.0 * np.log(u)).astype(np.float32)
    theta = halves[:, 0].astype(np.float32) * _TWO_PI_2M32
    out = np.empty(2 * m, dtype=np.float32)
    np.multiply(radius, np.cos(theta), out=out[:m])
    np.multiply(radius, np.sin(theta), out=out[m:])
    return out[:count]


def _fixed_order_product(z, loadings):
    """``z @ loadings.T`` as a fixed sequence of elementwise multiply-adds.

    BLAS may pick different kernels for differently aligned memory; the sampled
    states must be the same bits in every worker process, so small products are
    spelled out.
    """
    out = z[:, :1] * loadings[None, :, 0]
    for k in range(1, z.shape[1]):
        out += z[:, k:k + 1] * loadings[None, :, k]
    return out


def _systematic_returns(eta, loadings):
    """``beta_g' eta_s`` for every group g and scenario s, shape (G, sb).

    A fixed sequence of multiply-adds over the factors (bit-identical in every
    process, unlike BLAS), skipping zero loadings: sector/country loadings have a
    few non-zeros per row, so this is several times less work than a dense product.
    """
    out = np.zeros((loadings.shape[0], eta.shape[0]))
    for k in range(loadings.shape[1]):
        rows = np.flatnonzero(loadings[:, k])
        if rows.size == loadings.shape[0]:
            out += loadings[:, k][:, None] * eta[:, k][None, :]
        elif rows.size:
            out[rows] += loadings[rows, k][:, None] * eta[:, k][None, :]
    return out


def _weights(z, shift):
    """Likelihood ratios ``exp(-mu'z + mu'mu/2)`` of a mean-shifted normal sample."""
    if shift is None:
        return np.ones(z.shape[0])
    return np.exp(-_fixed_order_product(z, shift[None, :])[:, 0]
                  + 0.5 * exact_sum(shift * shift))


def uses_uniform_draws(model: SimulationModel) -> bool:
    """Idiosyncratic draws as 32-bit uniforms (few groups) or as normals (many groups).

    Uniforms cost ~1.5 ns each but need the conditional probabilities of every
    group's R - 1 boundaries per scenario (``ndtr``, ~20 ns each); normals cost
    ~6 ns each (Box-Muller) and need only two standardised boundaries per group
    plus the others for the ~10% of entries that migrate.  Both are exact samplers of the
    same model; pick the cheaper one.
    """
    n_groups = model.group_start.size - 1
    return 140 * n_groups + 2 * model.n_obligors < 6 * n_groups + 8 * model.n_obligors


def _factor_block(rng, model: SimulationModel, sb: int, factors: list | None = None):
    """Steps 1-3 for ``sb`` scenarios of the factor path; returns migrations (and appends
    the block's systematic factor draws to ``factors`` when given).

    Returns the scenario weights and, for every obligor whose rating changed,
    its scenario (row in the block), its column and its new worst-first state.
    Draws are laid out obligor-major (n, sb): the band test then runs over
    contiguous memory, three times faster than scenario-major.
    """
    n = model.n_obligors
    eta = rng.standard_normal((sb, model.group_loadings.shape[1]))
    if model.shift is not None:
        eta += model.shift
    if factors is not None:
        factors.append(eta)
    w = _weights(eta, model.shift)
    systematic = _systematic_returns(eta, model.group_loadings)            # (G, sb)
    reps = model.group_start[:-1]
    thr = model.thresholds[reps]                                           # (G, R-1)
    state0 = model.initial_state[reps]
    sd = model.group_idio
    if uses_uniform_draws(model):
        # x_i < b  <=>  U_i < Phi((b - beta'eta) / s), compared on the 2^32 grid.
        raw = rng.bit_generator.random_raw((sb * n + 1) // 2)
        draw = raw.view(np.uint32)[: sb * n].reshape(n, sb)
        s, i, new_state = uniform_migrations(draw, thr, systematic, sd, model.group_start,
                                             state0)
        return w, s, i, new_state
    # eps_i < (b - beta'eta) / s  <=>  x_i < b: standardised boundaries, band first.
    draw = standard_normals_f32(rng, n * sb).reshape(n, sb)
    s, i, new_state = normal_migrations(draw, thr, systematic, sd, model.group_start, state0)
    return w, s, i, new_state


def _count_reached(values, boundaries_t, row):
    """New worst-first state: how many of the ascending boundaries each value reaches.

    ``boundaries_t[k]`` holds boundary k for every table row (``row`` selects the
    row of each value; ``None``: one row per value).  Seven gathers of one
    column each are much cheaper than fancy-indexing (m, 7) blocks.
    """
    count = np.zeros(values.size, dtype=np.uint8)
    for k in range(boundaries_t.shape[0]):
        column = boundaries_t[k] if row is None else boundaries_t[k][row]
        count += values >= column
    return count


def _matrix_block(rng, model: SimulationModel, sb: int, factors: list | None = None):
    """Steps 1-3 for ``sb`` scenarios of the full-matrix path (x_c = L x).

    The product with the lower-triangular Cholesky factor is a BLAS ``strmm``
    (half the flops of a general product), in float32.
    """
    from scipy.linalg.blas import strmm

    n = model.n_obligors
    e = standard_normals_f32(rng, sb * n).reshape(sb, n)                  # Step 1
    if model.shift is not None:
        e += model.shift.astype(np.float32)[None, :]
        w = np.exp(-(e.astype(np.float64) * model.shift[None, :]).cumsum(axis=1)[:, -1]
                   + 0.5 * exact_sum(model.shift * model.shift))
    else:
        w = np.ones(sb)
    # e.T is the Fortran-ordered (n, sb) matrix of draws: x_c = L x, Step 2.  (The
    # caller limits BLAS to one thread.)
    x = strmm(1.0, model.cholesky_f, e.T, lower=1).T                      # (sb, n), C order
    lo, hi = model_band_f32(model)
    moved = x < lo
    moved |= x >= hi
    idx = np.flatnonzero(moved)
    s = idx // n
    i = idx - s * n
    new_state = _count_reached(x.ravel()[idx], model_thresholds_t_f32(model), i)
    return w, s, i, new_state


def model_band_f32(model: SimulationModel):
    """Per-obligor bounds of the unchanged-rating band, float32 (matrix path)."""
    n = model.n_obligors
    thr = model.thresholds.astype(np.float32)
    padded = np.concatenate([np.full((n, 1), -np.inf, np.float32), thr,
                             np.full((n, 1), np.inf, np.float32)], axis=1)
    rows = np.arange(n)
    return padded[rows, model.initial_state], padded[rows, model.initial_state + 1]


def model_thresholds_t_f32(model: SimulationModel):
    return np.ascontiguousarray(model.thresholds.astype(np.float32).T)


def _running_top(top, new, k):
    """The ``k`` largest of ``top`` and ``new`` (any order), and the smallest of them
    (``-inf`` while fewer than ``k`` values were seen)."""
    both = np.concatenate([top, new])
    if both.size < k or k == 0:
        return both, -np.inf
    kept = np.partition(both, both.size - k)[both.size - k:]
    return kept, kept.min()


def _states_for(rows, size, s, i, new_state, initial_state):
    """Dense forward states (uint8) of the selected scenario rows of a chunk, from the
    sparse migration records ``(scenario s, obligor i, state)``."""
    states = np.repeat(initial_state.astype(np.uint8)[None, :], rows.size, axis=0)
    pos = np.full(size, -1, dtype=np.int64)
    pos[rows] = np.arange(rows.size)
    return scatter_states(states, pos, s, i, new_state)


def _histogram(loss, w, edges):
    counts, _ = np.histogram(loss, bins=edges, weights=w)
    under = exact_sum(w[loss < edges[0]])
    over = exact_sum(w[loss > edges[-1]])
    return np.concatenate([[under], counts, [over]])


def _blas_threads(limit):
    """``threadpool_limits(limit)`` once per chunk (it inspects the loaded libraries,
    too slow per block); a no-op context for ``None``."""
    import contextlib

    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limit)


def _blocks(chunk, model: SimulationModel, factors: list | None = None):
    """Steps 1-4 for one chunk, block by block (the same draws on every call).

    Yields ``(b0, sb, w, s, i, new_state, step_loss, scen_loss)``: the block's first row
    and size, scenario weights, the migration records (scenario row in the block, obligor
    column, new worst-first state), each record's loss and the scenario losses.  With a
    list ``factors`` (factor path), each block's systematic draws ``eta`` (sb, K) are
    appended to it before the block is yielded (the draws are the same either way).
    """
    rng = chunk.rng()
    size = chunk.size
    block_fn = _factor_block if model.kind == "factor" else _matrix_block
    # One BLAS thread for the matrix path's strmm: workers are single-threaded
    # processes, and a fixed thread count keeps the product bit-identical.
    with _blas_threads(1 if model.kind == "matrix" else None):
        for b0 in range(0, size, model.block):
            sb = min(model.block, size - b0)
            w, s, i, new_state = block_fn(rng, model, sb, factors)
            step_loss = model.loss_by_state.ravel()[i * model.n_states + new_state]  # Step 4
            if model.recovery is not None:
                # Beta recovery for the defaults of uncertain-recovery obligors: the value
                # in default is Nom_i R instead of Nom_i E[R] (drawn after the block's
                # migrations, from the chunk's own stream).
                alpha, beta, nominal, mean = model.recovery
                d = np.flatnonzero((new_state == 0) & (alpha[i] > 0))
                if d.size:
                    j = i[d]
                    step_loss[d] += nominal[j] * (mean[j] - rng.beta(alpha[j], beta[j]))
            scen_loss = indexed_sums(s, step_loss, sb)
            yield b0, sb, w, s, i, new_state, step_loss, scen_loss


def _batch_sums(chunk, model: SimulationModel, loss, weight) -> np.ndarray:
    """Per fixed sub-range of the chunk: id, n_b, sum w, sum w (L - c), sum w (L - c)^2
    (one compiled pass adding each batch's terms in scenario order: the same bits in every
    process)."""
    m = model.batches_per_chunk
    out = np.zeros((m, 5))
    out[:, 0] = np.arange(m) + chunk.index * m
    _batch_sums_kernel(local_batch_bounds(chunk.size, m),
                       np.ascontiguousarray(loss, dtype=float),
                       np.ascontiguousarray(weight, dtype=float), float(model.center), False,
                       out)
    return out


def simulate_chunk(chunk, model: SimulationModel) -> LossSummary:
    """Steps 1-4 for one chunk of scenarios, summarised for an exact merge.

    Parameters
    ----------
    chunk : riskdask.engine.Chunk
        Scenario range ``[start, stop)`` and its random stream.
    model : SimulationModel

    Returns
    -------
    LossSummary
        Moments, per-obligor loss sums, the tail buffer with states and batches, the loss
        histogram and the per-batch sums of the error estimates.
    """
    n = model.n_obligors
    size = chunk.size
    need = model.weight_needed
    loss = np.empty(size)
    weight = np.empty(size)
    obligor_loss = np.zeros(n)
    cand = []                              # per block: selected local rows
    rec_s, rec_i, rec_state = [], [], []   # migrations of rows that may keep states
    top_losses = np.empty(0)               # the state_rows largest losses so far
    plain = model.shift is None            # every weight exactly 1
    for b0, sb, w, s, i, new_state, step_loss, scen_loss in _blocks(chunk, model):
        loss[b0:b0 + sb] = scen_loss
        weight[b0:b0 + sb] = w
        # (plain sampling: w = 1 exactly, and step_loss * 1.0 is step_loss bit for bit)
        obligor_loss += (indexed_sums(i, step_loss, n) if model.shift is None
                         else indexed_sums(i, step_loss, n, w, s))
        # Rows that can still be in the tail of any superset (see keep_rows).
        if plain and sb <= min(need, model.state_rows):
            sel = np.arange(sb)            # unit weights: all of them; no order needed
        else:
            order = sort_tail(scen_loss, b0 + np.arange(sb))
            sel = order[:keep_rows(w[order], need)]
        cand.append(b0 + sel)
        # States only for rows that can still be among the chunk's first state_rows: a
        # row whose loss is below the state_rows-th largest loss seen so far never is
        # (that threshold only rises), so most of a chunk's migrations are not kept.
        head = sel[: model.state_rows]
        top_losses, floor = _running_top(top_losses, scen_loss[head], model.state_rows)
        mark = np.zeros(sb, dtype=bool)
        mark[head[scen_loss[head] >= floor]] = True
        rs, ri, rst = select_records(mark, s, i, new_state, b0)
        rec_s.append(rs)
        rec_i.append(ri)
        rec_state.append(rst)
    cand = np.concatenate(cand)
    if plain and cand.size > need:
        # Unit weights keep the ceil(need) largest rows: sort only those at or above the
        # ceil(need)-th largest loss (the same rows in the same order as a full sort).
        keep = int(np.ceil(need))
        cut = np.partition(loss[cand], cand.size - keep)[cand.size - keep]
        cand = cand[loss[cand] >= cut]
    order = sort_tail(loss[cand], chunk.start + cand)
    keep = keep_rows(weight[cand][order], need)
    rows = cand[order[:keep]]
    n_states = min(keep, model.state_rows)
    states = _states_for(rows[:n_states], size, np.concatenate(rec_s), np.concatenate(rec_i),
                         np.concatenate(rec_state), model.initial_state)
    t_loss, t_w, t_id = loss[rows], weight[rows], chunk.start + rows
    t_batch = (chunk.index * model.batches_per_chunk
               + local_batch(size, model.batches_per_chunk)[rows])

    w_sum = exact_sum(weight)
    mean = exact_sum(weight * loss) / w_sum
    m2 = exact_sum(weight * (loss - mean) ** 2)
    return LossSummary(
        first_chunk=chunk.index, last_chunk=chunk.index, n=size, weight_sum=w_sum,
        mean=mean, m2=m2, obligor_loss=obligor_loss, tail_loss=t_loss, tail_weight=t_w,
        tail_scenario=t_id, tail_batch=t_batch, tail_states=states,
        histogram=_histogram(loss, weight, model.hist_edges),
        batches=_batch_sums(chunk, model, loss, weight),
        meta={"weight_needed": need, "state_rows": model.state_rows},
        scenario_loss=loss if model.keep_losses else None,
        scenario_weight=(None if not model.keep_losses else
                         weight if model.shift is not None else np.empty(0)),
    )


def top_rows(loss, weight, weight_needed: float, first: int = 0, floor=None) -> np.ndarray:
    """The rows a tail buffer keeps (:func:`~riskdask.credit.summary.keep_rows` of the rows
    sorted by loss descending, ties by scenario number ``first + row``), in that order.  With
    unit weights only the rows at or above the ``ceil(weight_needed)``-th largest loss are
    sorted (the same rows in the same order as a full sort).

    ``floor``: a loss known to be at most the buffer's last loss (e.g. the smallest loss, in
    these losses, of rows whose weights reach ``weight_needed``): only rows at or above it
    are candidates, which spares the partition of the whole array -- the same rows again,
    since every kept row lies at or above any such floor.
    """
    size = loss.size
    keep_n = int(np.ceil(weight_needed))
    unit = not np.any(weight != 1.0)
    cand = np.arange(size) if floor is None else np.flatnonzero(loss >= floor)
    if cand.size > keep_n > 0 and unit:
        sub = loss if floor is None else loss[cand]
        cut = np.partition(sub, sub.size - keep_n)[sub.size - keep_n]
        cand = cand[sub >= cut]
    order = cand[sort_tail(loss[cand], first + cand)]
    return order[:keep_rows(weight[order], weight_needed)]


def weighted_summary(chunk, model: SimulationModel, loss, weight) -> LossSummary:
    """A chunk's :class:`LossSummary` of given scenario losses under given weights, without
    per-obligor states or sums: exactly the rows, moments, histogram and batch sums
    :func:`simulate_chunk` keeps for these weights (so at the run's own weights the Step 6
    statistics are the run's, bit for bit).  Used by the factor stress
    (:mod:`riskdask.credit.stress`), whose weights are the run's times a likelihood ratio or
    an indicator."""
    size = loss.size
    rows = top_rows(loss, weight, model.weight_needed, chunk.start)
    w_sum = exact_sum(weight)
    mean = exact_sum(weight * loss) / w_sum if w_sum > 0 else 0.0
    m2 = exact_sum(weight * (loss - mean) ** 2)
    return LossSummary(
        first_chunk=chunk.index, last_chunk=chunk.index, n=size, weight_sum=w_sum,
        mean=mean, m2=m2, obligor_loss=np.zeros(model.n_obligors), tail_loss=loss[rows],
        tail_weight=weight[rows], tail_scenario=chunk.start + rows,
        tail_batch=(chunk.index * model.batches_per_chunk
                    + local_batch(size, model.batches_per_chunk)[rows]),
        tail_states=np.zeros((0, model.n_obligors), dtype=np.uint8),
        histogram=_histogram(loss, weight, model.hist_edges),
        batches=_batch_sums(chunk, model, loss, weight),
        meta={"weight_needed": model.weight_needed, "state_rows": 0})


@njit(cache=True, nogil=True, boundscheck=False)
def _batch_sums_kernel(bounds, loss, weight, center, plain, out):
    # per batch b (rows bounds[b] .. bounds[b+1]-1), in scenario order: count, sum w,
    # sum w d, sum w d^2 with d = L - center (plain: w = 1 exactly, and 1.0 * d is d
    # bit for bit)
    for b in range(bounds.size - 1):
        for i in range(bounds[b], bounds[b + 1]):
            d = loss[i] - center
            w = 1.0 if plain else weight[i]
            wd = d if plain else w * d
            out[b, 1] += 1.0
            out[b, 2] += w
            out[b, 3] += wd
            out[b, 4] += wd * d


def local_batch_bounds(size: int, m: int) -> np.ndarray:
    """First row of each of a chunk's ``m`` batches, and ``size``: the rows ``r`` with
    ``(r m) // size == b`` (:func:`~riskdask.credit.uncertainty.local_batch`) are
    ``ceil(b size / m) <= r < ceil((b + 1) size / m)``."""
    b = np.arange(m + 1, dtype=np.int64)
    return (b * int(size) + int(m) - 1) // int(m)


def batch_bounds(chunks, m: int) -> np.ndarray:
    """First scenario of every batch of consecutive ``chunks`` (``m`` a chunk, global batch
    ``chunk.index * m + b``), and the end: ``len(chunks) m + 1`` values."""
    return np.concatenate([c.start + local_batch_bounds(c.size, m)[:-1] for c in chunks]
                          + [[chunks[-1].stop]]).astype(np.int64)


def batch_sums(bounds, loss, weight, center: float) -> np.ndarray:
    """Per batch of :func:`batch_bounds`: id, ``n_b``, ``sum w``, ``sum w (L - c)``,
    ``sum w (L - c)^2`` (the chunks' :func:`_batch_sums`, bit for bit); ``weight`` None or
    empty: plain sampling."""
    plain = weight is None or np.size(weight) == 0
    loss = np.ascontiguousarray(loss, dtype=float)
    out = np.zeros((bounds.size - 1, 5))
    out[:, 0] = np.arange(bounds.size - 1)
    _batch_sums_kernel(bounds, loss, loss if plain else np.ascontiguousarray(weight, float),
                       float(center), plain, out)
    return out


def batch_of(bounds, scenarios) -> np.ndarray:
    """The batch of each scenario (:func:`batch_bounds`; an empty batch holds none)."""
    return np.searchsorted(bounds, scenarios, side="right") - 1


@njit(cache=True, nogil=True, boundscheck=False)
def _moments_kernel(loss, weight, plain):
    # compensated (Neumaier, as summary.ordered_sum) sums in scenario order: sum w, sum w L,
    # then sum w (L - mean)^2 -- the products rounded first, as numpy's arrays would be
    sums = np.zeros(3)
    comp = np.zeros(3)
    for p in range(2):
        mean = 0.0
        if p == 1:
            w_sum = float(loss.size) if plain else sums[0] + comp[0]
            mean = (sums[1] + comp[1]) / w_sum if w_sum > 0 else 0.0
        for i in range(loss.size):
            w = 1.0 if plain else weight[i]
            if p == 0:
                terms = (w, loss[i] if plain else w * loss[i])
                for j in range(2):
                    v = terms[j]
                    t = sums[j] + v
                    if abs(sums[j]) >= abs(v):
                        comp[j] += (sums[j] - t) + v
                    else:
                        comp[j] += (v - t) + sums[j]
                    sums[j] = t
            else:
                d = loss[i] - mean
                v = d * d if plain else w * d * d
                t = sums[2] + v
                if abs(sums[2]) >= abs(v):
                    comp[2] += (sums[2] - t) + v
                else:
                    comp[2] += (v - t) + sums[2]
                sums[2] = t
    return sums + comp


def scenario_summary(chunks, model: SimulationModel, loss, weight=None, *,
                     histogram: bool = True, floor=None) -> LossSummary:
    """The merged :class:`LossSummary` of consecutive ``chunks`` (from chunk 0) for given
    per-scenario losses and weights (None or empty: plain sampling), from the whole arrays
    at once, without per-obligor states or sums.

    The tail rows, their batches and the batch sums are those of merging
    :func:`weighted_summary` over the chunks, bit for bit (each batch lies in one chunk and
    is summed in scenario order either way); the weight sum, mean, ``m2`` and histogram are
    whole-array sums (compensated, in scenario order) and may differ from the merged ones in
    the last bits.  Used by the what-if (:mod:`riskdask.credit.whatif_run`),
    whose modified book is a whole array.  ``histogram=False`` leaves the histogram empty
    (a caller that reads no histogram saves a pass); ``floor``: a lower bound of the tail
    buffer's last loss (:func:`top_rows`).
    """
    size = loss.size
    plain = weight is None or np.size(weight) == 0
    w = np.broadcast_to(1.0, size) if plain else np.asarray(weight, dtype=float)
    m = model.batches_per_chunk
    if chunks[0].index != 0 or chunks[-1].stop != size:
        raise ValueError("scenario_summary needs consecutive chunks from chunk 0 covering "
                         "the losses")
    bounds = batch_bounds(chunks, m)
    loss = np.ascontiguousarray(loss, dtype=float)
    rows = top_rows(loss, w, model.weight_needed, floor=floor)
    weights = loss if plain else np.ascontiguousarray(w)      # not read when plain
    w_sum, wl_sum, m2 = _moments_kernel(loss, weights, plain)
    w_sum = float(size) if plain else float(w_sum)
    mean = float(wl_sum) / w_sum if w_sum > 0 else 0.0
    batches = batch_sums(bounds, loss, weight, model.center)
    if histogram:
        counts, _ = np.histogram(loss, bins=model.hist_edges, weights=None if plain else w)
        below, above = loss < model.hist_edges[0], loss > model.hist_edges[-1]
        hist = np.concatenate([[ordered_sum(w[below])], counts.astype(float),
                               [ordered_sum(w[above])]])
    else:
        hist = np.empty(0)
    return LossSummary(
        first_chunk=chunks[0].index, last_chunk=chunks[-1].index, n=size, weight_sum=w_sum,
        mean=mean, m2=float(m2), obligor_loss=np.zeros(model.n_obligors),
        tail_loss=loss[rows], tail_weight=w[rows], tail_scenario=rows.astype(np.int64),
        tail_batch=batch_of(bounds, rows),
        tail_states=np.zeros((0, model.n_obligors), dtype=np.uint8), histogram=hist,
        batches=batches, meta={"weight_needed": model.weight_needed, "state_rows": 0})


def chunk_losses(chunk, model: SimulationModel):
    """Per-scenario losses, weights and (factor path) systematic draws of one chunk: the
    same draws as :func:`simulate_chunk` (``factors`` None on the full-matrix path)."""
    size = chunk.size
    loss, weight = np.empty(size), np.empty(size)
    factors: list | None = [] if model.kind == "factor" else None
    for b0, sb, w, s, i, new_state, step_loss, scen_loss in _blocks(chunk, model, factors):
        loss[b0:b0 + sb] = scen_loss
        weight[b0:b0 + sb] = w
    eta = np.concatenate(factors) if factors else None
    return loss, weight, eta


def tail_cuts(summary: LossSummary, model: SimulationModel) -> list:
    """Per level, ``(loss, scenario)`` of ``SFV_(a)``: a scenario is in the ES tail iff it
    sorts before this row (loss descending, ties by scenario number); None if the buffer
    does not reach it."""
    cuts = []
    for c in model.confidence:
        a = tail_count(summary.n, c)
        k = tail_index(summary.tail_weight, a) if a >= 2 else summary.tail_loss.size
        if 0 < k < summary.tail_loss.size:
            cuts.append((float(summary.tail_loss[k]), int(summary.tail_scenario[k])))
        else:
            cuts.append(None)
    return cuts


def tail_obligor_sums(chunk, model: SimulationModel, cuts) -> np.ndarray:
    """Second pass for ES contributions: ``sum_{s in tail} w_s loss_is`` per obligor and level.

    Re-runs the chunk's blocks (the same stream, so the same scenarios bit for bit) and
    keeps, for every level's tail (``cuts`` from :func:`tail_cuts`), the weighted loss of
    each obligor.  Worker memory is an ``(n, levels)`` array whatever the tail length,
    which is what the likelihood-ratio-weighted tail of an importance-sampling run needs
    (it has many more than ``a`` rows).  Reduced by addition in the chunk tree.
    """
    n = model.n_obligors
    out = np.zeros((n, len(cuts)))
    for b0, sb, w, s, i, new_state, step_loss, scen_loss in _blocks(chunk, model):
        scen = chunk.start + b0 + np.arange(sb)
        for j, cut in enumerate(cuts):
            if cut is None:
                continue
            q, sq = cut
            tail = (scen_loss > q) | ((scen_loss == q) & (scen < sq))
            if not tail.any():
                continue
            hit = tail[s]
            out[:, j] += np.bincount(i[hit], weights=step_loss[hit] * w[s[hit]], minlength=n)
    return out


def add_arrays(a, b):
    """Combine for :func:`tail_obligor_sums` partials (tree order fixed by chunk index)."""
    return a + b


def _mean_and_sd(n: int, weight_sum: float, mean: float, m2: float):
    """Mean loss and population standard deviation, ``(1/sim) sum w L`` and
    ``sqrt((1/sim) sum w (L - mean)^2)``.

    With unit weights (plain sampling) this is exactly the seed's Step 6.  With
    likelihood-ratio weights it is the unbiased importance-sampling estimator:
    dividing by ``sim`` rather than by the (very noisy) sum of the weights.
    """
    if weight_sum == n:
        return mean, float(np.sqrt(m2 / n))
    el = mean * weight_sum / n
    return el, float(np.sqrt((m2 + weight_sum * (mean - el) ** 2) / n))


def combine_summaries(a: LossSummary, b: LossSummary) -> LossSummary:
    """Associative exact merge for the engine's tree reduce (Step 5)."""
    return merge_summaries(a, b, weight_needed=a.meta["weight_needed"],
                           state_rows=a.meta["state_rows"])


def simulate_local(model: SimulationModel, chunks) -> LossSummary:
    """Single-process run of the same chunks, reduced in the engine's tree order."""
    return reduce_local([simulate_chunk(c, model) for c in chunks], combine_summaries)


# --------------------------------------------------------------------------- Step 6
@dataclass
class LevelStats:
    """Step 6 at one confidence level (seed definitions), with its Monte Carlo errors.

    ``var_se`` / ``es_se`` and the VaR interval come from
    :func:`riskdask.credit.uncertainty.tail_errors`; the ``*_fixed_mean`` errors are the same
    statistics measured from a fixed mean (what an importance-sampling run reports);
    ``se_note`` says why an error is 0 or undefined (None otherwise).
    """

    confidence: float
    a: int
    var: float
    var_se: float
    var_ci_low: float
    var_ci_high: float
    es: float
    es_se: float
    es_var_rel: float
    var_se_fixed_mean: float
    es_se_fixed_mean: float
    es_var_rel_fixed_mean: float
    se_note: str | None
    var_pct: float
    es_pct: float
    tail_scenarios: int
    contributions: bool
    contribution_source: str | None
    lattice_spacing: float = float("nan")
    tail_distinct: int = 0
    tail_effective: float = float("nan")

    def as_dict(self) -> dict:
        """Plain values (for tables and summary.json)."""
        return dict(self.__dict__)


@dataclass
class SimulationStats:
    """Seed Step 6 of a merged summary: moments, levels and ES contributions.

    ``contributions`` (n, levels): each obligor's expected loss in the ES tail minus its mean
    loss, summing to ES; ``tail_obligor_loss`` (n, levels) the expected loss in the tail
    (NaN where unavailable); ``obligor_mean_loss`` (n,); all in input order.
    """

    n_scenarios: int
    n_chunks: int
    n_batches: int
    mean_sfv: float
    el: float
    el_se: float
    ul: float
    ul_se: float
    weight_sum: float
    degenerate: bool
    levels: list
    obligor_mean_loss: np.ndarray
    mean_reference: str
    reference_mean_loss: float
    contributions: np.ndarray
    tail_obligor_loss: np.ndarray


def needs_contribution_pass(stats: SimulationStats) -> bool:
    """True if some level's ES tail is longer than the state buffer (its contributions
    then come from :func:`tail_obligor_sums`)."""
    return any(lv.tail_scenarios > 0 and not lv.contributions for lv in stats.levels)


def _tail_state_sums(summary: LossSummary, model: SimulationModel, ks) -> dict:
    """``{k: sum_{s < k} w_s loss_is}`` per obligor over the first ``k`` tail-buffer rows,
    for every ``k`` in ``ks`` that the state block covers, in one pass over the rows.

    Row by row, so each sum has the bits of ``(w[:, None] * per).cumsum(axis=0)[k - 1]``
    in any process (numpy's cumsum along axis 0 of a (k, n) block walks the columns with
    a stride: several times slower, and it was run once per level).
    """
    ks = sorted({int(k) for k in ks if 0 < k <= summary.tail_states.shape[0]})
    if not ks:
        return {}
    w = summary.tail_weight
    plain = not bool((w[:ks[-1]] != 1.0).any())
    per = model.loss_by_state[np.arange(model.n_obligors)[None, :], summary.tail_states[:ks[-1]]]
    acc = np.zeros(model.n_obligors)
    out, r = {}, 0
    for k in ks:
        for r in range(r, k):
            # w = 1 exactly in plain sampling, and x * 1.0 is x bit for bit
            acc += per[r] if plain else w[r] * per[r]
        r = k
        out[k] = acc.copy()
    return out


def lattice_facts(loss_sorted, weight_sorted, k: int) -> dict:
    """What a reader needs to judge a tail estimate on a discrete (lattice) loss law.

    Returns
    -------
    dict
        ``lattice_spacing``: the larger of the gaps between the quantile's loss value
        ``L_(a)`` (buffer row ``k``) and its distinct neighbours in the buffer (NaN without
        a neighbour; on a continuous law this is tiny, on a lattice one atom step);
        ``tail_distinct``: distinct loss values among the ES tail rows before ``k``;
        ``tail_effective``: the effective number of tail scenarios
        ``(sum w)^2 / sum w^2`` over those rows (``k`` with unit weights).
    """
    loss = np.asarray(loss_sorted, dtype=float)
    w = np.asarray(weight_sorted, dtype=float)
    if not 0 < k < loss.size:
        return {"lattice_spacing": float("nan"), "tail_distinct": 0,
                "tail_effective": float("nan")}
    q = loss[k]
    above, below = loss[:k][loss[:k] > q], loss[k + 1:][loss[k + 1:] < q]
    gaps = ([float(above.min() - q)] if above.size else []) + (
        [float(q - below.max())] if below.size else [])
    wk = w[:k]
    return {"lattice_spacing": max(gaps) if gaps else float("nan"),
            "tail_distinct": int(np.unique(loss[:k]).size),
            "tail_effective": float(exact_sum(wk) ** 2 / exact_sum(wk * wk))}


def simulation_statistics(summary: LossSummary, model: SimulationModel, fv_portfolio: float,
                          tail_sums: np.ndarray | None = None) -> SimulationStats:
    """Seed Step 6 from a merged summary, with Monte Carlo errors.

    Parameters
    ----------
    summary : LossSummary
        The merged summary of all chunks run (``summary.n`` scenarios: with adaptive
        stopping fewer than ``model.n_scenarios``; ``a`` follows ``summary.n``).
    model : SimulationModel
    fv_portfolio : float
    tail_sums : ndarray (n, levels), optional
        Reduced :func:`tail_obligor_sums` (simulation order): ES contributions for the
        levels whose tail the state buffer does not hold.

    Returns
    -------
    SimulationStats
        EL and UL (seed definitions: ``FV_P - mean SFV`` and the population standard
        deviation) with their errors, and per confidence level a :class:`LevelStats`
        (linearised batch means and the order statistic's sampling law,
        :mod:`riskdask.credit.uncertainty`).
    """
    n_total = summary.n
    mean_loss, ul = _mean_and_sd(n_total, summary.weight_sum, summary.mean, summary.m2)
    el_se, ul_se = moment_errors(summary.batches, n_total, mean_loss, ul, model.center)
    weighted = model.shift is not None
    inverse = model.input_columns()
    obligor_mean = summary.obligor_loss / n_total
    obligor_mean_input = obligor_mean[inverse]
    contributions = np.full((model.n_obligors, len(model.confidence)), np.nan)
    tail_losses = np.full_like(contributions, np.nan)
    reference = model.reference_mean(mean_loss)
    analytic = model.shift is not None and model.expected_loss is not None
    if analytic:
        obligor_mean = model.expected_loss
    # k of each level (the 0-based position of SFV_(a)) for the contribution sums
    state_sums = _tail_state_sums(summary, model, [
        tail_index(summary.tail_weight, tail_count(n_total, c)) for c in model.confidence
        if tail_count(n_total, c) >= 2])
    levels = []
    for j, c in enumerate(model.confidence):
        a = tail_count(n_total, c)
        if a < 2:
            var, es, k = float("nan"), float("nan"), 0
        else:
            var, es, k = var_es_from_sorted(summary.tail_loss, summary.tail_weight, reference, a)
        err = tail_errors(summary, a, k, reference, weighted=weighted,
                          simulated_mean=not analytic, el_se=el_se, center=model.center)
        if a < 2:
            err["reason"] = f"a = round({n_total} x (1 - {c:g})) = {a} < 2"
        has = bool(0 < k <= summary.tail_states.shape[0])
        source = None
        if has:
            tail_mean = state_sums[k] / exact_sum(summary.tail_weight[:k])
            source = "tail buffer"
        elif tail_sums is not None and k > 0 and np.isfinite(var):
            tail_mean = tail_sums[:, j] / exact_sum(summary.tail_weight[:k])
            has, source = True, "second pass"
        if has:
            tail_losses[:, j] = tail_mean[inverse]
            contributions[:, j] = (tail_mean - obligor_mean)[inverse]
        levels.append(LevelStats(
            confidence=c, a=a, var=var, var_se=err["var_se"],
            var_ci_low=err["var_ci"][0], var_ci_high=err["var_ci"][1],
            es=es, es_se=err["es_se"], es_var_rel=err["es_var_rel"],
            var_se_fixed_mean=err["var_se_fixed_mean"],
            es_se_fixed_mean=err["es_se_fixed_mean"],
            es_var_rel_fixed_mean=err["es_var_rel_fixed_mean"], se_note=err["reason"],
            var_pct=100.0 * var / fv_portfolio, es_pct=100.0 * es / fv_portfolio,
            tail_scenarios=k, contributions=has, contribution_source=source,
            **lattice_facts(summary.tail_loss, summary.tail_weight, k)))
    return SimulationStats(
        n_scenarios=n_total, n_chunks=summary.last_chunk - summary.first_chunk + 1,
        n_batches=int(np.count_nonzero(summary.batches[:, 1])),
        mean_sfv=fv_portfolio - mean_loss, el=mean_loss, el_se=el_se, ul=ul, ul_se=ul_se,
        weight_sum=summary.weight_sum, degenerate=bool(summary.m2 == 0.0), levels=levels,
        obligor_mean_loss=obligor_mean_input,
        mean_reference="analytic" if analytic else "simulated",
        reference_mean_loss=reference, contributions=contributions,
        tail_obligor_loss=tail_losses)
