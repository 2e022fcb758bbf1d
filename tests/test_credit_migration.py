"""The compiled Step 3 kernel against the definition, computed densely in numpy.

For 32-bit uniforms ``U`` the new worst-first state is ``#{k : U >= C_k}`` with
``C_k = min(floor(2^32 Phi((b_k - beta'eta) / s)), 2^32 - 1)`` (riskdask.credit.migration);
the kernel must return exactly the entries whose state changed, in ``np.flatnonzero``
order of the obligor-major (n, sb) layout, with exactly those states.
"""

import numpy as np
import pytest
from scipy.special import ndtr

from riskdask.credit.migration import (indexed_sums, scatter_states, select_records,
                                       uniform_migrations)


def _dense_reference(draw, thresholds, systematic, sd, group_start, group_state):
    n, sb = draw.shape
    group = np.repeat(np.arange(group_state.size), np.diff(group_start))
    z = (thresholds[group][:, :, None] - systematic[group][:, None, :]) / sd[group][:, None, None]
    cut = np.minimum(np.floor(ndtr(z) * 2.0 ** 32), 2.0 ** 32 - 1).astype(np.uint32)
    state = (draw[:, None, :] >= cut).sum(axis=1)                       # (n, sb)
    idx = np.flatnonzero(state != group_state[group][:, None])
    return idx % sb, idx // sb, state.ravel()[idx]


def _case(seed, scale, sb=613):
    rng = np.random.default_rng(seed)
    top = 7                                          # 8 states, 7 boundaries
    group_state = np.array([0, 1, 3, 5, 6, top])     # default, worst, middle ..., best
    sizes = np.array([3, 17, 40, 1, 25, 9])
    group_start = np.concatenate([[0], np.cumsum(sizes)])
    thresholds = np.sort(rng.normal(0.0, 1.5, (group_state.size, top)), axis=1)
    # An unchanged band of width zero in one group, a probability that rounds to 0 in another.
    thresholds[2, 2] = thresholds[2, 3]
    thresholds[4, :3] = -40.0
    sd = rng.uniform(0.4, 0.95, group_state.size)
    systematic = scale * rng.standard_normal((group_state.size, sb))
    draw = rng.integers(0, 2 ** 32, (group_start[-1], sb), dtype=np.uint32)
    draw[0, :5] = [0, 1, 2 ** 32 - 1, 2 ** 31, 2 ** 32 - 2]              # the grid's edges
    return draw, thresholds, systematic, sd, group_start, group_state


@pytest.mark.parametrize("seed,scale", [(0, 0.5), (1, 1.0), (2, 3.0), (3, 8.0)])
def test_kernel_equals_the_dense_definition(seed, scale):
    args = _case(seed, scale)
    s, i, state = uniform_migrations(*args)
    rs, ri, rstate = _dense_reference(*args)
    assert s.size > 100                              # the case really migrates
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(state, rstate)
    # Every state is reached somewhere at the larger scales (the walk's far steps too).
    if scale >= 3.0:
        assert set(np.unique(state)) == set(range(8))


def test_select_and_scatter_records():
    rng = np.random.default_rng(5)
    flat = np.sort(rng.choice(50 * 30, 400, replace=False))   # distinct (scenario, obligor)
    s, i = flat // 30, flat % 30
    new_state = rng.integers(0, 8, 400).astype(np.uint8)
    mark = rng.random(50) < 0.3
    rs, ri, rst = select_records(mark, s, i, new_state, 100)
    keep = mark[s]
    np.testing.assert_array_equal(rs, s[keep] + 100)
    np.testing.assert_array_equal(ri, i[keep])
    np.testing.assert_array_equal(rst, new_state[keep])
    rows = np.flatnonzero(mark)
    pos = np.full(50, -1)
    pos[rows] = np.arange(rows.size)
    states = scatter_states(np.full((rows.size, 30), 9, np.uint8), pos, s, i, new_state)
    expected = np.full((rows.size, 30), 9, np.uint8)
    expected[pos[s[keep]], i[keep]] = new_state[keep]
    np.testing.assert_array_equal(states, expected)


def test_indexed_sums_equal_bincount_bit_for_bit():
    rng = np.random.default_rng(7)
    index = rng.integers(0, 40, 5000)
    values = rng.standard_normal(5000) * 10.0 ** rng.integers(-8, 8, 5000)
    scale = rng.exponential(size=300)
    scale_index = rng.integers(0, 300, 5000)
    assert np.array_equal(indexed_sums(index, values, 50),
                          np.bincount(index, weights=values, minlength=50))
    assert np.array_equal(indexed_sums(index, values, 50, scale, scale_index),
                          np.bincount(index, weights=values * scale[scale_index], minlength=50))


@pytest.mark.parametrize("seed,scale", [(0, 0.5), (2, 3.0)])
def test_normal_kernel_equals_the_dense_definition(seed, scale):
    """The normal-draw variant: ``eps >= (b_k - beta'eta) / s`` counted over all boundaries,
    in double precision, for float32 draws."""
    from riskdask.credit.migration import normal_migrations

    _, thresholds, systematic, sd, group_start, group_state = _case(seed, scale)
    rng = np.random.default_rng(seed + 10)
    draw = rng.standard_normal((group_start[-1], systematic.shape[1])).astype(np.float32)
    s, i, state = normal_migrations(draw, thresholds, systematic, sd, group_start, group_state)
    group = np.repeat(np.arange(group_state.size), np.diff(group_start))
    z = (thresholds[group][:, :, None] - systematic[group][:, None, :]) / sd[group][:, None, None]
    dense = (draw.astype(np.float64)[:, None, :] >= z).sum(axis=1)
    idx = np.flatnonzero(dense != group_state[group][:, None])
    sb = draw.shape[1]
    assert idx.size > 100
    np.testing.assert_array_equal(s, idx % sb)
    np.testing.assert_array_equal(i, idx // sb)
    np.testing.assert_array_equal(state, dense.ravel()[idx])
