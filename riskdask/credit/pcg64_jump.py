"""Random access into numpy's ``PCG64`` stream: the raw 64-bit draws at arbitrary positions
from a given state, bit for bit what ``bitgen.random_raw`` returns, without walking the
stream (compiled kernels, pure functions of the state words and the positions).

numpy's ``PCG64`` (not ``PCG64DXSM``) is PCG XSL-RR 128/64 (O'Neill 2014, "PCG: A Family of
Simple Fast Space-Efficient Statistically Good Algorithms for Random Number Generation",
HMC-CS-2014-0905; numpy ``numpy/random/src/pcg64/pcg64.h``): a 128-bit LCG

    state <- state * MULT + inc   (mod 2^128),  MULT = 0x2360ED051FC65DA44385DF649FCCF645

(numpy's ``PCG_DEFAULT_MULTIPLIER_128``, ``inc`` odd), and each ``random_raw()`` first steps
the state and then outputs ``rotr64(hi ^ lo, hi >> 58)`` of the new state
(``pcg64_next64`` -> ``pcg64_random_r``: ``pcg_setseq_128_step_r``, then
``pcg_output_xsl_rr_128_64``).  ``d`` steps at once are the affine map ``x -> A x + C``
with ``A = MULT^d``, ``C = inc (MULT^(d-1) + ... + 1)``, by square-and-multiply on
``(A, C)`` pairs (Brown, "Random Number Generation with Arbitrary Stride", Trans. Am. Nucl.
Soc., Nov. 1994; ``pcg_advance_lcg_128`` of numpy's pcg64.c, what ``PCG64.advance`` runs):
O(log d) 128-bit multiplications -- :func:`jumped`.  :func:`raws_at` composes the same
maps into a table of ``v 2^(8k)`` steps (``v < 256``) once per call, so that each position
is at most 8 table maps (3 below 2^24 draws) from the given state.

numba has no 128-bit integers: a 128-bit value is two ``uint64`` words ``(hi, lo)``; the
64 x 64 -> 128 product is formed from 32-bit halves, and a product mod 2^128 needs only the
low 128 bits (``lo(a) lo(b)`` in full plus the low words of the two cross products).

``random_raw`` (and every 64-bit or double draw of ``Generator``) ignores the buffered
32-bit half of the state dict (``has_uint32``, ``uinteger``), so the state words are the
LCG ``state`` and ``inc`` only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MULT_HI", "MULT_LO", "state_words", "raws_at", "jumped"]

#: numpy's ``PCG_DEFAULT_MULTIPLIER_128`` (high / low 64-bit words).
MULT_HI = np.uint64(0x2360ED051FC65DA4)
MULT_LO = np.uint64(0x4385DF649FCCF645)

_MASK64 = (1 << 64) - 1
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S58 = np.uint64(58)
_S63 = np.uint64(63)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_WINDOW_BITS = 8                     # raws_at: one table map per byte of the step count
_WINDOW_VALUES = 1 << _WINDOW_BITS
_WINDOW_MASK = np.uint64(_WINDOW_VALUES - 1)
_WINDOW_SHIFT = np.uint64(_WINDOW_BITS)


@njit(cache=True, nogil=True, inline="always")
def _mul64(a, b):
    """Full 128-bit product of two uint64, as ``(hi, lo)``, from 32-bit halves."""
    a_lo = a & _M32
    a_hi = a >> _S32
    b_lo = b & _M32
    b_hi = b >> _S32
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> _S32) + (p1 & _M32) + (p2 & _M32)        # < 3 * 2^32: no overflow
    lo = (mid << _S32) | (p0 & _M32)
    hi = p3 + (p1 >> _S32) + (p2 >> _S32) + (mid >> _S32)
    return hi, lo


@njit(cache=True, nogil=True, inline="always")
def _mul128(a_hi, a_lo, b_hi, b_lo):
    """``a * b mod 2^128`` of 128-bit values given as ``(hi, lo)`` words."""
    hi, lo = _mul64(a_lo, b_lo)
    hi = hi + a_lo * b_hi + a_hi * b_lo                    # wraps mod 2^64
    return hi, lo


@njit(cache=True, nogil=True, inline="always")
def _add128(a_hi, a_lo, b_hi, b_lo):
    """``a + b mod 2^128``."""
    lo = a_lo + b_lo
    carry = _ONE if lo < a_lo else _ZERO
    return a_hi + b_hi + carry, lo


@njit(cache=True, nogil=True, inline="always")
def _output(s_hi, s_lo):
    """XSL-RR output of a 128-bit state: ``rotr64(hi ^ lo, hi >> 58)``."""
    x = s_hi ^ s_lo
    rot = s_hi >> _S58
    return (x >> rot) | (x << ((_ZERO - rot) & _S63))


@njit(cache=True, nogil=True)
def _window_table(inc_hi, inc_lo, nwin):
    """``T[k, v] = (A, C)`` of the affine map of ``v 2^(8k)`` LCG steps, ``k < nwin``,
    ``v < 256``, as ``(A_hi, A_lo, C_hi, C_lo)``.  Row ``k`` repeats the map ``B_k`` of
    ``2^(8k)`` steps (``B_0 = (MULT, inc)``, ``B_{k+1} = B_k^256``), composing
    ``B o (A, C) = (A_B A, A_B C + C_B)``: at most 2 x 2,048 128-bit products."""
    table = np.empty((nwin, _WINDOW_VALUES, 4), dtype=np.uint64)
    b_ahi, b_alo, b_chi, b_clo = MULT_HI, MULT_LO, inc_hi, inc_lo
    for k in range(nwin):
        a_hi, a_lo, c_hi, c_lo = _ZERO, _ONE, _ZERO, _ZERO          # the identity
        for v in range(_WINDOW_VALUES):
            table[k, v, 0] = a_hi
            table[k, v, 1] = a_lo
            table[k, v, 2] = c_hi
            table[k, v, 3] = c_lo
            m_hi, m_lo = _mul128(b_ahi, b_alo, c_hi, c_lo)
            c_hi, c_lo = _add128(m_hi, m_lo, b_chi, b_clo)
            a_hi, a_lo = _mul128(b_ahi, b_alo, a_hi, a_lo)
        b_ahi, b_alo, b_chi, b_clo = a_hi, a_lo, c_hi, c_lo          # B_k^256
    return table


@njit(cache=True, nogil=True)
def _raws_at_kernel(words, offsets):
    """Raw draws at ``offsets`` (int64 >= 0, 1-D, any order).  Draw ``t`` is the output of
    the state ``t + 1`` steps on (numpy steps, then outputs), reached from ``words`` by one
    map of the window table per non-zero byte of ``t + 1`` (at most 3 below 2^24 draws):
    the positions are independent, so no sort, and a duplicate is one more jump."""
    n = offsets.size
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    top = np.int64(0)
    for j in range(n):
        top = max(top, offsets[j])
    steps_max = np.uint64(top) + _ONE
    nwin = 1
    while nwin < 8 and (steps_max >> np.uint64(_WINDOW_BITS * nwin)) != _ZERO:
        nwin += 1
    table = _window_table(words[2], words[3], nwin)
    for j in range(n):
        steps = np.uint64(offsets[j]) + _ONE
        s_hi, s_lo = words[0], words[1]
        k = 0
        while steps != _ZERO:
            v = steps & _WINDOW_MASK
            if v != _ZERO:
                m_hi, m_lo = _mul128(table[k, v, 0], table[k, v, 1], s_hi, s_lo)
                s_hi, s_lo = _add128(m_hi, m_lo, table[k, v, 2], table[k, v, 3])
            steps >>= _WINDOW_SHIFT
            k += 1
        out[j] = _output(s_hi, s_lo)
    return out


@njit(cache=True, nogil=True)
def _jump_kernel(words, d_hi, d_lo):
    """State words after ``d = (d_hi, d_lo)`` (mod 2^128) steps of the LCG of ``words``:
    numpy's ``pcg_advance_lcg_128`` (square-and-multiply on ``(A, C)``) on word pairs."""
    acc_mhi, acc_mlo, acc_phi, acc_plo = _ZERO, _ONE, _ZERO, _ZERO
    cur_mhi, cur_mlo, cur_phi, cur_plo = MULT_HI, MULT_LO, words[2], words[3]
    for i in range(128):
        bit = (d_lo >> np.uint64(i)) if i < 64 else (d_hi >> np.uint64(i - 64))
        if (bit & _ONE) != _ZERO:
            acc_mhi, acc_mlo = _mul128(acc_mhi, acc_mlo, cur_mhi, cur_mlo)
            m_hi, m_lo = _mul128(acc_phi, acc_plo, cur_mhi, cur_mlo)
            acc_phi, acc_plo = _add128(m_hi, m_lo, cur_phi, cur_plo)
        p_hi, p_lo = _add128(cur_mhi, cur_mlo, _ZERO, _ONE)
        cur_phi, cur_plo = _mul128(p_hi, p_lo, cur_phi, cur_plo)
        cur_mhi, cur_mlo = _mul128(cur_mhi, cur_mlo, cur_mhi, cur_mlo)
    m_hi, m_lo = _mul128(acc_mhi, acc_mlo, words[0], words[1])
    s_hi, s_lo = _add128(m_hi, m_lo, acc_phi, acc_plo)
    out = words.copy()
    out[0] = s_hi
    out[1] = s_lo
    return out


def state_words(bitgen_state: dict) -> np.ndarray:
    """The LCG words of numpy's ``PCG64`` state dict.

    Parameters
    ----------
    bitgen_state : dict
        ``PCG64().state``: ``{'bit_generator': 'PCG64', 'state': {'state': int,
        'inc': int}, 'has_uint32': ..., 'uinteger': ...}`` (the buffered 32-bit half is
        not used by ``random_raw`` and is ignored).

    Returns
    -------
    numpy.ndarray
        ``(state_hi, state_lo, inc_hi, inc_lo)``, uint64, shape (4,).
    """
    if bitgen_state.get("bit_generator") != "PCG64":
        raise ValueError(f"not a PCG64 state: {bitgen_state.get('bit_generator')!r} "
                         "(PCG64DXSM has another output function)")
    state = int(bitgen_state["state"]["state"])
    inc = int(bitgen_state["state"]["inc"])
    return np.array([state >> 64, state & _MASK64, inc >> 64, inc & _MASK64],
                    dtype=np.uint64)


def _check_words(words) -> np.ndarray:
    words = np.ascontiguousarray(words, dtype=np.uint64)
    if words.shape != (4,):
        raise ValueError(f"words must have shape (4,), got {words.shape}")
    return words


def raws_at(words: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Raw 64-bit draws of the ``PCG64`` stream at arbitrary positions.

    ``out[j]`` is what ``random_raw()`` returns after advancing ``offsets[j]`` draws from
    the state ``words``, i.e. ``out[j] == bitgen.random_raw(big)[offsets[j]]`` for a bit
    generator in that state.  Each position is reached directly from ``words``: the draw at
    offset ``t`` is the XSL-RR output of the state ``t + 1`` LCG steps on, and ``t + 1`` is
    jumped one byte at a time through a table of the affine maps of ``v 2^(8k)`` steps
    (``v < 256``; O'Neill 2014 / numpy pcg64.h, see the module docstring) built once per
    call for the largest offset: no walk over the stream, no sort, O(1) per offset
    (about 0.25 ms for 25,000 offsets below 10^7).

    Parameters
    ----------
    words : numpy.ndarray
        ``(state_hi, state_lo, inc_hi, inc_lo)`` uint64 (:func:`state_words`).
    offsets : array_like of int
        Positions in the stream, ``>= 0`` (int64), any shape and order, duplicates allowed.

    Returns
    -------
    numpy.ndarray
        uint64 of the shape of ``offsets``.  The state ``words`` is not modified.
    """
    words = _check_words(words)
    offsets = np.asarray(offsets)
    if offsets.size == 0:
        return np.empty(offsets.shape, dtype=np.uint64)
    if not np.issubdtype(offsets.dtype, np.integer):
        raise TypeError(f"offsets must be integers, got {offsets.dtype}")
    if offsets.dtype.kind == "u" and offsets.max() > np.iinfo(np.int64).max:
        raise ValueError("offsets must fit int64")
    flat = np.ascontiguousarray(offsets, dtype=np.int64).ravel()
    if flat.min() < 0:
        raise ValueError("offsets must be >= 0")
    return _raws_at_kernel(words, flat).reshape(offsets.shape)


def jumped(words: np.ndarray, d: int) -> np.ndarray:
    """The state words after ``d`` draws, as ``PCG64.advance(d)`` leaves them.

    Parameters
    ----------
    words : numpy.ndarray
        ``(state_hi, state_lo, inc_hi, inc_lo)`` uint64 (:func:`state_words`).
    d : int
        Number of draws; taken mod 2^128 like numpy's ``advance`` (the period), so a
        negative ``d`` steps back.

    Returns
    -------
    numpy.ndarray
        New uint64 words of shape (4,) (``inc`` unchanged); ``words`` is not modified.
    """
    words = _check_words(words)
    d = int(d) % (1 << 128)
    return _jump_kernel(words, np.uint64(d >> 64), np.uint64(d & _MASK64))
