"""Random access into numpy's PCG64 stream (riskdask.credit.pcg64_jump) against numpy itself.

Every expected value comes from a numpy ``PCG64`` in the same state: ``random_raw(m)[offsets]``
of a copy for the draws, ``advance(d)`` for the jumps.  States are fresh, after raw draws and
advances, after ``Generator`` draws that leave the stream mid-way (including a buffered 32-bit
half), and hand-set extremes that exercise every carry of the 128-bit arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from riskdask.credit.pcg64_jump import jumped, raws_at, state_words

SEEDS = [0, 1, 20240607, 2**63 + 12345]
MASK128 = (1 << 128) - 1


def _copy(bitgen: np.random.PCG64) -> np.random.PCG64:
    other = np.random.PCG64()
    other.state = bitgen.state
    return other


def _from_state(state: int, inc: int) -> np.random.PCG64:
    bitgen = np.random.PCG64()
    bitgen.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                    "has_uint32": 0, "uinteger": 0}
    return bitgen


def _fresh(seed):
    return np.random.PCG64(np.random.SeedSequence(seed))


def _after_raw_and_advance(seed):
    bitgen = _fresh(seed)
    bitgen.random_raw(1_000 + seed % 997)
    bitgen.advance(123_456_789 + seed % 1_000)
    bitgen.random_raw(3)
    return bitgen


def _after_normals(seed):
    gen = np.random.Generator(_fresh(seed))
    gen.standard_normal(1_001)              # ziggurat: a data-dependent number of draws
    gen.integers(0, 2**32, size=3, dtype=np.uint32)     # leaves a buffered 32-bit half
    gen.standard_normal(17)
    return gen.bit_generator


def _after_jumped(seed):
    return _fresh(seed).jumped(3)


STATES = {"fresh": _fresh, "raw+advance": _after_raw_and_advance,
          "normals": _after_normals, "jumped": _after_jumped}


def _offsets(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed % 2**32)
    parts = [
        [0, 0, 1, 2, 255, 256, 257, 65_535, 65_536, 65_537, 5_000_000, 4_999_999],
        rng.integers(0, 300, 50),                   # small, many duplicates
        rng.integers(0, 5_000_001, 400),            # spread over the whole range
        [5_000_000, 0, 17, 5_000_000],             # duplicates of the extremes
    ]
    offsets = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    rng.shuffle(offsets)
    return offsets


@pytest.mark.parametrize("make", STATES.values(), ids=STATES.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_raws_at_equal_numpy_random_raw(seed, make):
    bitgen = make(seed)
    words = state_words(bitgen.state)
    offsets = _offsets(seed)
    assert np.any(np.diff(offsets) < 0) and offsets.size > np.unique(offsets).size
    expected = _copy(bitgen).random_raw(int(offsets.max()) + 1)[offsets]
    got = raws_at(words, offsets)
    assert got.dtype == np.uint64 and got.shape == offsets.shape
    np.testing.assert_array_equal(got, expected)
    # the state is untouched, and the stream is the bit generator's own from here on
    assert state_words(bitgen.state).tolist() == words.tolist()
    np.testing.assert_array_equal(raws_at(words, np.arange(5)), bitgen.random_raw(5))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_contiguous_range_is_the_stream(seed):
    """Every position of a range crossing the first three byte windows, in order."""
    bitgen = _after_normals(seed)
    words = state_words(bitgen.state)
    expected = _copy(bitgen).random_raw(70_000)
    np.testing.assert_array_equal(raws_at(words, np.arange(70_000)), expected)
    np.testing.assert_array_equal(raws_at(words, np.arange(70_000)[::-1]), expected[::-1])


def test_raws_at_keeps_the_shape_of_offsets_and_accepts_other_integer_types():
    bitgen = _fresh(7)
    words = state_words(bitgen.state)
    stream = _copy(bitgen).random_raw(1_000)
    offsets = np.array([[3, 999, 0], [3, 500, 1]])
    np.testing.assert_array_equal(raws_at(words, offsets), stream[offsets])
    for dtype in (np.int32, np.uint16, np.uint64):
        np.testing.assert_array_equal(raws_at(words, offsets.astype(dtype)), stream[offsets])
    np.testing.assert_array_equal(raws_at(words, [5, 6]), stream[[5, 6]])
    assert raws_at(words, np.empty(0, np.int64)).shape == (0,)
    assert raws_at(words, np.empty((2, 0), np.int64)).shape == (2, 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_far_offsets_equal_numpy_advance(seed):
    """Offsets in every byte window up to 2^63 - 1: the draw after ``advance(t)``."""
    bitgen = _after_raw_and_advance(seed)
    words = state_words(bitgen.state)
    offsets = np.array([2**24 + 3, 2**32 - 1, 2**40 + 2**8, 10**15 + 7, 2**56,
                        2**62 + 12345, 2**63 - 1, 2**63 - 2], dtype=np.int64)
    expected = []
    for t in offsets.tolist():
        other = _copy(bitgen)
        other.advance(t)
        expected.append(other.random_raw())
    np.testing.assert_array_equal(raws_at(words, offsets), np.array(expected, np.uint64))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [0, 1, 2, 255, 256, 1_000_003, 5 * 10**6, 2**63 + 1, 2**64 - 1,
                               2**64, 2**64 + 5, 2**100 + 3, 2**128 - 1, -1, -123_456])
def test_jumped_equals_numpy_advance(seed, d):
    bitgen = _after_normals(seed)
    words = state_words(bitgen.state)
    other = _copy(bitgen)
    other.advance(d)
    new = jumped(words, d)
    assert new.dtype == np.uint64 and new.shape == (4,)
    assert new.tolist() == state_words(other.state).tolist()
    assert state_words(bitgen.state).tolist() == words.tolist()       # input untouched
    np.testing.assert_array_equal(raws_at(new, [0, 1, 2]), other.random_raw(3))


@pytest.mark.parametrize("seed", SEEDS)
def test_raws_at_after_jumped_is_the_same_stream(seed):
    words = state_words(_fresh(seed).state)
    offsets = _offsets(seed)
    k = 1_234_567
    far = offsets[offsets >= k]
    np.testing.assert_array_equal(raws_at(jumped(words, k), far - k), raws_at(words, far))


EXTREMES = [
    (MASK128, MASK128),                                  # all ones: every carry
    (0, 1),
    ((1 << 64) - 1, (1 << 64) + 1),                     # low word all ones
    (1 << 127, MASK128 - 2),
    (0xFFFFFFFF_00000000_FFFFFFFF_00000000, 0x00000000_FFFFFFFF_00000000_FFFFFFFF),
]


@pytest.mark.parametrize("state, inc", EXTREMES)
def test_extreme_states_equal_numpy(state, inc):
    bitgen = _from_state(state, inc)
    words = state_words(bitgen.state)
    assert ((int(words[0]) << 64) | int(words[1]), (int(words[2]) << 64) | int(words[3])) == (
        state, inc)
    offsets = np.array([0, 1, 2, 3, 300, 65_536, 99_999, 7, 0])
    expected = _copy(bitgen).random_raw(100_000)[offsets]
    np.testing.assert_array_equal(raws_at(words, offsets), expected)
    for d in (1, 3, 2**64 + 1, -5):
        other = _copy(bitgen)
        other.advance(d)
        assert jumped(words, d).tolist() == state_words(other.state).tolist()


def test_state_words_splits_the_state_dict():
    bitgen = _after_normals(3)
    st = bitgen.state
    words = state_words(st)
    assert words.dtype == np.uint64 and words.shape == (4,)
    s, inc = st["state"]["state"], st["state"]["inc"]
    assert words.tolist() == [s >> 64, s & (2**64 - 1), inc >> 64, inc & (2**64 - 1)]


def test_invalid_input_is_rejected():
    words = state_words(_fresh(0).state)
    with pytest.raises(ValueError, match="PCG64"):
        state_words(np.random.PCG64DXSM(0).state)
    with pytest.raises(ValueError, match=">= 0"):
        raws_at(words, np.array([3, -1]))
    with pytest.raises(ValueError, match="int64"):
        raws_at(words, np.array([2**63], dtype=np.uint64))
    with pytest.raises(TypeError, match="integers"):
        raws_at(words, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        raws_at(words[:3], [0])
