"""Step 3 of the seed's simulation (section 3.3) for the factor path, compiled.

Given the factors, obligor ``i`` of group ``g`` (one initial rating ``r``, one loading)
migrates to worst-first state ``w`` iff its 32-bit uniform ``U_i`` lies in
``[C_{w-1}, C_w)``, where ``C_k = floor(2^32 Phi((b_k - beta_g' eta) / s_g))`` are the
conditional cumulative probabilities of Table 3.1's boundaries ``b_k`` as integers
(``C_{-1} = 0``, ``C_{R-1} = 2^32``).  The new state is therefore the number of
boundaries ``U_i`` reaches, ``#{k : U_i >= C_k}``.

The kernel visits every (obligor, scenario) entry once: a test against the unchanged
band ``[C_{r-1}, C_r)`` written as one unsigned comparison, ``(U - C_{r-1}) mod 2^32 >=
C_r - C_{r-1}``, branch-free, and for the ~10 % of entries that left their rating a
walk from the neighbouring state outwards (the cumulative table is monotone, so the
walk stops at the first boundary not reached -- usually after one step).  Only the
four boundaries around the initial rating are computed for every group and scenario;
a farther one when a walk first reaches it.  The numpy formulation (a full
``(R - 1, G, sb)`` table of ``ndtr``, a boolean mask, its ``flatnonzero``, index
arithmetic and seven gathers per migrant) gives the same records in the same order
(obligor-major, scenarios ascending), bit for bit, in about twice the time
(tests/test_credit_migration.py checks the equality against the dense definition).

:func:`select_records` and :func:`scatter_states` are the two record passes of a chunk
(keeping the migrations of the rows that may need per-obligor states, and writing them
into the dense state block) as single loops instead of chains of boolean gathers.
"""

from __future__ import annotations

import functools

import ctypes
import threading

import numpy as np
from numba import njit
from numba.extending import get_cython_function_address

__all__ = ["uniform_migrations", "uniform_column_states"]


def _scipy_ndtr():
    """scipy's own ``ndtr`` (the double specialisation of ``scipy.special.cython_special``)
    as a C function pointer, so the compiled loop computes exactly the bits of
    ``scipy.special.ndtr``."""
    addr = get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1ndtr")
    return ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(addr)


_NDTR = _scipy_ndtr()
_TWO_32 = 4294967296.0


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _cut(ndtr, b, systematic, sd):
    """``C = min(floor(2^32 Phi((b - systematic) / sd)), 2^32 - 1)``: ``U < C`` has probability
    ``C / 2^32`` for a uniform 32-bit ``U`` (each migration probability moves by < 2.4e-10).
    The same IEEE operations as numpy's ``np.minimum(np.floor(ndtr(z) * 2.0**32), 2**32 - 1)``,
    hence the same bits."""
    return np.int64(min(np.floor(ndtr((b - systematic) / sd) * _TWO_32), _TWO_32 - 1.0))


@njit(cache=True, nogil=True, boundscheck=False)
def _cut_or_sentinel(ndtr, b, k, systematic, sd):
    """``C_k``, with ``C_k = 0`` below the first boundary and ``2^32`` above the last."""
    if k < 0:
        return np.int64(0)
    if k >= b.size:
        return np.int64(1) << 32
    return _cut(ndtr, b[k], systematic, sd)


@njit(cache=True, nogil=True, boundscheck=False)
def _migrations_kernel(ndtr, draw, thresholds, systematic, sd, group_start, group_state,
                       out_s, out_i, out_state):
    sb = draw.shape[1]
    top = thresholds.shape[1]               # R - 1 boundaries; states 0 .. top
    lo = np.empty(sb, np.int64)             # C_{r-1}: the band is [C_{r-1}, C_r)
    width = np.empty(sb, np.int64)          # C_r - C_{r-1}
    near = np.empty((2, sb), np.int64)      # C_{r-2}, C_{r+1}: one notch down / up
    moved_s = np.empty(sb, np.int64)
    memo = np.empty((top, sb), np.int64)    # farther C_k, computed when first needed
    m = 0
    for g in range(group_start.size - 1):
        r = group_state[g]
        b = thresholds[g]
        sys_g = systematic[g]
        sd_g = sd[g]
        memo[:] = -1
        for s in range(sb):
            a = _cut_or_sentinel(ndtr, b, r - 1, sys_g[s], sd_g)
            lo[s] = a
            width[s] = _cut_or_sentinel(ndtr, b, r, sys_g[s], sd_g) - a
            near[0, s] = _cut_or_sentinel(ndtr, b, r - 2, sys_g[s], sd_g)
            near[1, s] = _cut_or_sentinel(ndtr, b, r + 1, sys_g[s], sd_g)
        for i in range(group_start[g], group_start[g + 1]):
            row = draw[i]
            k_moved = 0
            for s in range(sb):                   # branch-free: store, advance if moved
                moved_s[k_moved] = s
                k_moved += np.int64(np.uint32(row[s] - np.uint32(lo[s]))) >= width[s]
            for j in range(k_moved):
                s = moved_s[j]
                u = np.int64(row[s])
                up = np.int64(u >= lo[s])         # 0: down (u < C_{r-1}), 1: up (u >= C_r)
                state = r - 1 + 2 * up
                c = near[up, s]
                if (u < c) != up:                 # beyond the neighbour (rare): walk on
                    step = 2 * up - 1
                    k = r - 3 if up == 0 else r + 2
                    state += step
                    while 0 <= k < top:
                        if memo[k, s] < 0:
                            memo[k, s] = _cut(ndtr, b[k], sys_g[s], sd_g)
                        if (u < memo[k, s]) != up:
                            state += step
                            k += step
                        else:
                            break
                out_s[m + j] = s
                out_i[m + j] = i
                out_state[m + j] = state
            m += k_moved
    return m


_scratch = threading.local()


def _buffer(name, shape, dtype):
    """A per-thread scratch array reused between blocks (fresh multi-megabyte arrays would
    page-fault on every block); only read after the kernel has written it.  Per thread, so
    kernels may run in threads (the what-if's replays) without sharing their outputs."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    size = int(np.prod(shape))
    buf = buffers.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = buffers[name] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _records(kernel, lead, draw, thresholds, systematic, sd, group_start, group_state):
    """Run a migration kernel into the reused output buffers; the records, copied."""
    n, sb = draw.shape
    out = (_buffer("out_s", (n * sb,), np.int64), _buffer("out_i", (n * sb,), np.int64),
           _buffer("out_state", (n * sb,), np.uint8))
    m = kernel(*lead, draw, np.ascontiguousarray(thresholds, dtype=np.float64),
               np.ascontiguousarray(systematic, dtype=np.float64),
               np.ascontiguousarray(sd, dtype=np.float64),
               np.asarray(group_start, np.int64), np.asarray(group_state, np.int64), *out)
    return tuple(a[:m].copy() for a in out)


def uniform_migrations(draw, thresholds, systematic, sd, group_start, group_state):
    """Migrations of one block of the factor path from 32-bit uniforms (Step 3).

    Parameters
    ----------
    draw : ndarray of uint32, shape (n, sb)
        Obligor-major uniforms ``U`` (obligors in simulation order, each group a
        contiguous range of rows).
    thresholds : ndarray, shape (G, R - 1)
        Table 3.1's ascending boundaries ``b_k`` of each group's initial rating.
    systematic : ndarray, shape (G, sb)
        ``beta_g' eta`` of each group and scenario.
    sd : ndarray, shape (G,)
        Idiosyncratic standard deviation ``s_g`` of each group.
    group_start : ndarray of int64, shape (G + 1,)
        First row of each group.
    group_state : ndarray of int64, shape (G,)
        Worst-first initial state ``r`` of each group (0 = default, R - 1 = best).

    Returns
    -------
    s, i : ndarray of int64
        Scenario (column of ``draw``) and obligor (row) of every entry whose state
        changed, obligor-major and scenarios ascending (``np.flatnonzero`` order).
    new_state : ndarray of uint8
        Its new worst-first state, ``#{k : U >= C_k}``.

    Notes
    -----
    ``C_k`` is computed only where it is needed: the band's two boundaries for every
    group and scenario, the others when an obligor's walk reaches them (about half of
    the ``(R - 1) G sb`` values a full table would take).
    """
    return _records(_migrations_kernel, (_NDTR,), draw, thresholds, systematic, sd,
                    group_start, group_state)


@njit(cache=True, nogil=True, boundscheck=False)
def _select_kernel(mark, s, i, new_state, offset, out_s, out_i, out_state):
    m = 0
    for j in range(s.size):
        if mark[s[j]]:
            out_s[m] = s[j] + offset
            out_i[m] = i[j]
            out_state[m] = new_state[j]
            m += 1
    return m


def select_records(mark, s, i, new_state, offset=0):
    """The migration records of the marked scenario rows, as compact int32 / uint8 arrays
    (scenario numbers shifted by ``offset``); one pass instead of three boolean gathers."""
    out_s = np.empty(s.size, np.int32)
    out_i = np.empty(s.size, np.int32)
    out_state = np.empty(s.size, np.uint8)
    m = _select_kernel(mark, s, i, new_state, offset, out_s, out_i, out_state)
    return out_s[:m], out_i[:m], out_state[:m]


@njit(cache=True, nogil=True, boundscheck=False)
def _scatter_kernel(states, pos, s, i, new_state):
    for j in range(s.size):
        p = pos[s[j]]
        if p >= 0:
            states[p, i[j]] = new_state[j]


def scatter_states(states, pos, s, i, new_state):
    """``states[pos[s], i] = new_state`` for the records whose row is kept (``pos >= 0``)."""
    _scatter_kernel(states, pos, s, i, new_state)
    return states


@njit(cache=True, nogil=True, boundscheck=False)
def _sums_kernel(index, values, scale_index, scale, size, out):
    for j in range(index.size):
        if scale_index is None:
            out[index[j]] += values[j]
        else:
            out[index[j]] += values[j] * scale[scale_index[j]]
    return out


def indexed_sums(index, values, size, scale=None, scale_index=None):
    """``np.bincount(index, weights=values [* scale[scale_index]], minlength=size)`` in one
    pass, adding in record order (the same bits as ``bincount``, which makes several)."""
    out = np.zeros(size)
    if scale is None:
        return _sums_kernel(index, values, None, np.empty(0), size, out)
    return _sums_kernel(index, values, scale_index, scale, size, out)


@njit(cache=True, nogil=True, boundscheck=False)
def _normal_kernel(draw, thresholds, systematic, sd, group_start, group_state,
                   out_s, out_i, out_state):
    sb = draw.shape[1]
    top = thresholds.shape[1]
    lo = np.empty(sb, np.float64)
    hi = np.empty(sb, np.float64)
    moved_s = np.empty(sb, np.int64)
    m = 0
    for g in range(group_start.size - 1):
        r = group_state[g]
        b = thresholds[g]
        sys_g = systematic[g]
        sd_g = sd[g]
        for s in range(sb):
            lo[s] = (b[r - 1] - sys_g[s]) / sd_g if r > 0 else -np.inf
            hi[s] = (b[r] - sys_g[s]) / sd_g if r < top else np.inf
        for i in range(group_start[g], group_start[g + 1]):
            row = draw[i]
            k_moved = 0
            for s in range(sb):                   # branch-free: store, advance if moved
                x = np.float64(row[s])
                moved_s[k_moved] = s
                k_moved += (x < lo[s]) | (x >= hi[s])
            for j in range(k_moved):
                s = moved_s[j]
                x = np.float64(row[s])
                if x < lo[s]:                     # down: r - 1, or further
                    k = r - 2
                    while k >= 0 and x < (b[k] - sys_g[s]) / sd_g:
                        k -= 1
                    state = k + 1
                else:                             # up: r + 1, or further
                    k = r + 1
                    while k < top and x >= (b[k] - sys_g[s]) / sd_g:
                        k += 1
                    state = k
                out_s[m + j] = s
                out_i[m + j] = i
                out_state[m + j] = state
            m += k_moved
    return m


def normal_migrations(draw, thresholds, systematic, sd, group_start, group_state):
    """Migrations of one block of the factor path from standard normal ``eps`` (Step 3).

    ``x_i < b_k`` iff ``eps_i < (b_k - beta_g' eta) / s_g``: the draws (float32, obligor-major
    (n, sb)) are compared, in double precision, with the standardised boundaries of their
    group, computed as ``(b_k - systematic) / sd`` -- the operations of the numpy
    formulation, so every entry is classified identically. Same arguments and returns as
    :func:`uniform_migrations` except ``draw``.
    """
    return _records(_normal_kernel, (), draw, thresholds, systematic, sd, group_start,
                    group_state)


#: Half-width of the band around ``Phi^-1((U + 1) / 2^32)`` inside which the one-obligor
#: kernel decides a boundary with the exact integer cut (module docstring of
#: :func:`uniform_column_states`): far above the ~1e-14 errors of ``ndtr`` and the ~1e-15
#: of the inverse (AS 241).
_EPS = 1e-7


@njit(cache=True, nogil=True, inline="always")
def _ppnd16(p):
    """``Phi^-1(p)`` for ``0 < p < 1``: Wichura's AS 241 PPND16 (Applied Statistics 37,
    1988, 477-484), relative error about 1e-16 -- seven orders of magnitude inside the
    kernel's 1e-7 band; compiled inline, it spares the one-obligor kernel a pass of scipy's
    ``ndtri`` over every draw."""
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
                         + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
                       + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
                     + 1.3314166789178437745e2) * r + 3.3871328727963666080e0) / (
            ((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
                 + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
               + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
             + 4.2313330701600911252e1) * r + 1.0)
    r = np.sqrt(-np.log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        r -= 1.6
        v = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                  + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
                + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
              + 4.63033784615654529590e0) * r + 1.42343711074968357734e0) / (
            ((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                 + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
               + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
             + 2.05319162663775882187e0) * r + 1.0)
    else:
        r -= 5.0
        v = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                  + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
                + 2.96560571828504891230e-1) * r + 1.78482653991729133580e0) * r
              + 5.46378491116411436990e0) * r + 6.65790464350110377720e0) / (
            ((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                 + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
               + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
             + 5.99832206555887937690e-1) * r + 1.0)
    return -v if q < 0.0 else v


@njit(cache=True)
def ppnd16(p):
    """:func:`_ppnd16` of an array (for tests and comparisons with scipy's ``ndtri``)."""
    out = np.empty(p.size)
    for i in range(p.size):
        out[i] = _ppnd16(p[i])
    return out


#: The one-obligor kernel's cells: ``U >> CELL_SHIFT`` (4,096 cells of 2^20 draws), and
#: the range of ``x = Phi^-1((U + 1) / 2^32)`` over each cell (widened by 1e-12, far
#: beyond the inverse's error): where a scenario's whole cell lies clear of every
#: boundary, its state needs no inverse normal at all.
CELL_SHIFT = 20


@functools.lru_cache(maxsize=1)
def _cell_ranges():
    from scipy.special import ndtri

    cells = np.arange(1 << (32 - CELL_SHIFT), dtype=np.float64)
    lo = ndtri((cells * 2.0 ** CELL_SHIFT + 1.0) * 2.0 ** -32) - 1e-12
    hi = ndtri(np.minimum((cells + 1.0) * 2.0 ** CELL_SHIFT * 2.0 ** -32,
                          1.0 - 2.0 ** -33)) + 1e-12
    hi[-1] = np.inf                         # the last cell reaches U = 2^32 - 1: exact path
    return lo, hi


@njit(cache=True, nogil=True, boundscheck=False)
def _column_kernel(ndtr, draw, b, systematic, sd, cell_lo, cell_hi, out):
    top = b.size
    band = _EPS * sd
    for s in range(draw.size):
        u = np.int64(draw[s])
        sys_s = systematic[s]
        # 1. the cell's range of x: decided if no boundary lies within it (and the band)
        c = u >> CELL_SHIFT
        lo = sys_s + sd * cell_lo[c] - band
        hi = sys_s + sd * cell_hi[c] + band
        count = 0
        for k in range(top):
            if b[k] < lo:
                count += 1
            else:
                break
        if count == top or b[count] > hi:
            out[s] = count
            continue
        # 2. this draw's x (AS 241); 3. the exact integer cuts near a boundary, x > 5 or U
        # at its cap
        count = 0
        exact = u == 4294967295
        if not exact:
            x = _ppnd16((u + 1.0) * 2.3283064365386963e-10)   # exact: (U + 1) / 2^32
            exact = x > 5.0
            if not exact:
                # z_k < x  <=>  b_k < sys + sd x (sd > 0): compared in boundary units
                t = sys_s + sd * x
                for k in range(top):
                    if b[k] < t - band:
                        count += 1
                    elif b[k] <= t + band:
                        exact = True
                        break
                    else:
                        break
        if exact:
            count = 0
            for k in range(top):
                count += u >= _cut(ndtr, b[k], sys_s, sd)
        out[s] = count


def uniform_column_states(draw, thresholds, systematic, sd) -> np.ndarray:
    """Worst-first forward states of **one** obligor in many scenarios from its 32-bit
    uniforms: the states :func:`uniform_migrations` gives, bit for bit, at a fraction of
    the cost when there is no group to share the boundaries with (the what-if).

    ``U >= C_k`` with ``C_k = floor(2^32 Phi(z_k))`` holds iff ``Phi(z_k) < (U + 1) / 2^32``
    (``2^32 Phi`` is exact in floating point, ``U`` an integer), i.e. iff
    ``z_k < x = Phi^-1((U + 1) / 2^32)``: one inverse normal per scenario (AS 241,
    :func:`_ppnd16`) instead of two to four ``ndtr`` -- and mostly none: the range of ``x``
    over the draw's cell of 2^20 values (:data:`CELL_SHIFT`, tabulated once) decides the
    state when no boundary lies within it.  Where ``z_k`` lies within 1e-7 of ``x`` (about
    one entry in a million), where
    ``x > 5`` (``Phi`` too close to 1 for the comparison to resolve) or ``U = 2^32 - 1``
    (the cap of ``C_k``), the state is counted with the exact integer cuts instead.

    Parameters
    ----------
    draw : ndarray of uint32 (size,)
    thresholds : ndarray (R - 1,)
        Ascending boundaries of the obligor's initial rating.
    systematic : ndarray (size,)
        ``beta' eta`` per scenario.
    sd : float
        Idiosyncratic standard deviation.
    """
    draw = np.ascontiguousarray(draw, dtype=np.uint32)
    out = np.empty(draw.size, dtype=np.uint8)
    _column_kernel(_NDTR, draw, np.ascontiguousarray(thresholds, dtype=np.float64),
                   np.ascontiguousarray(systematic, dtype=np.float64), float(sd),
                   *_cell_ranges(), out)
    return out
