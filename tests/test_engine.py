"""The engine: chunk plans, exact tree reduction, bit-identical results on 1 or N workers."""

from __future__ import annotations

import dataclasses
import sys
import time

import cloudpickle
import numpy as np
import pytest
from scipy import stats

from riskdask.engine import (map_branches, map_chunks, map_reduce, plan_chunks, plan_tiles,
                             tree_reduce)
from riskdask.selfcheck import merge_summaries, normal_chunk, tail_merge

# Functions of this test module travel to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_identity(x, delay):
    time.sleep(delay)
    return x


def sequential_tree(parts, combine):
    """Reference: the same pairwise tree as the engine, in one process."""
    level = list(parts)
    while len(level) > 1:
        nxt = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def same(a, b) -> bool:
    return ((a.n, a.index_sum, a.exceed) == (b.n, b.index_sum, b.exceed)
            and a.total == b.total and a.total_sq == b.total_sq
            and np.array_equal(a.top, b.top))


def test_plan_depends_only_on_its_arguments():
    a = plan_chunks(1_000, 300, seed=7)
    b = plan_chunks(1_000, 300, seed=7)
    assert [(c.start, c.stop) for c in a] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert [c.rng().random() for c in a] == [c.rng().random() for c in b]
    # children are distinct streams, and a different root seed changes them
    draws = [c.rng().random() for c in a]
    assert len(set(draws)) == len(draws)
    assert draws != [c.rng().random() for c in plan_chunks(1_000, 300, seed=8)]
    # the stream of chunk i is SeedSequence(seed).spawn(n)[i]
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence(7).spawn(4)[2])).random()
    assert a[2].rng().random() == ref


def test_plan_tiles_are_near_equal():
    tiles = plan_tiles(1681, 16)
    sizes = [t.size for t in tiles]
    assert sum(sizes) == 1681 and max(sizes) - min(sizes) <= 1
    assert tiles[0].start == 0 and tiles[-1].stop == 1681


@pytest.mark.parametrize("bad", [(0, 10), (10, 0), (-1, 5)])
def test_plan_rejects_empty_work(bad):
    with pytest.raises(ValueError):
        plan_chunks(*bad)


def test_tail_merge_keeps_the_k_largest_exactly():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000)
    parts = np.array_split(x, 7)
    tops = [-np.sort(-p)[:25] for p in parts]
    merged = sequential_tree(tops, lambda a, b: tail_merge(a, b, 25))
    assert np.array_equal(merged, -np.sort(-x)[:25])


def test_estimator_exact_and_statistically_right(local_client):
    n, size = 3_000_000, 250_000
    s = map_reduce(normal_chunk, plan_chunks(n, size, seed=3), merge_summaries,
                   client=local_client(2), label="t-exact")
    assert s.n == n
    assert s.index_sum == n * (n - 1) // 2          # exact integer closed form
    p = stats.norm.sf(2.326347874)
    assert abs(s.exceed / n - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(s.mean) < 4 / np.sqrt(n)
    assert abs(s.variance - 1) < 4 * np.sqrt(2 / n)


def test_bit_identical_on_1_and_2_workers_and_any_completion_order(local_client):
    chunks = plan_chunks(1_200_000, 100_000, seed=11)
    reference = sequential_tree([normal_chunk(c) for c in chunks], merge_summaries)
    one = map_reduce(normal_chunk, chunks, merge_summaries, client=local_client(1), label="t1")
    two = map_reduce(normal_chunk, chunks, merge_summaries, client=local_client(2), label="t2")
    jittered = map_reduce(normal_chunk, chunks, merge_summaries, client=local_client(2),
                          kernel_kwargs={"jitter_ms": 150}, label="t2j")
    assert same(one, reference) and same(two, reference) and same(jittered, reference)


def test_tree_is_fixed_by_index_not_completion_order(local_client):
    from distributed import as_completed

    client = local_client(2)
    chunks = plan_chunks(600_000, 50_000, seed=5)
    parts = [normal_chunk(c) for c in chunks]
    n = len(parts)
    # chunk 0 is slowest, the last chunk fastest: they finish roughly in reverse
    leaves = [client.submit(slow_identity, p, 0.04 * (n - i), pure=False)
              for i, p in enumerate(parts)]
    root = tree_reduce(client, leaves, merge_summaries, label="t-order")
    finished = [leaves.index(f) for f in as_completed(leaves)]
    assert finished != sorted(finished)  # the order really was scrambled
    assert same(root.result(), sequential_tree(parts, merge_summaries))


def test_map_chunks_returns_results_in_chunk_order(local_client):
    chunks = plan_chunks(10, 1, seed=0)
    out = map_chunks(slow_identity, chunks, client=local_client(2), shared=0.0,
                     label="t-map")
    assert [c.index for c in out] == list(range(10))


def shape_of(chunk, shared):
    return chunk.index, type(shared).__name__, len(shared)


def test_shared_input_is_scattered_once_to_every_worker(local_client):
    from riskdask.engine import scatter_once

    client = local_client(2)
    shared = {"a": np.arange(1_000_000, dtype=np.float64), "b": np.ones(3)}
    fut = scatter_once(client, shared)
    holders = client.who_has([fut])[fut.key]
    assert len(holders) == 2                      # broadcast: one copy per worker
    out = map_chunks(shape_of, plan_chunks(4, 1), client=client, shared=shared, label="t-sh")
    assert out == [(i, "dict", 2) for i in range(4)]  # tasks get the object, as one dict


@dataclasses.dataclass(frozen=True)
class FrozenInputs:
    table: np.ndarray
    n: int


def alignment_seen(chunk, shared):
    return {name: bool(a.flags.aligned) for name, a in shared.items()}


def test_kernels_get_aligned_arrays_though_the_wire_delivers_them_misaligned(local_client):
    """distributed can deliver an array as a view at any byte offset of a received frame
    (seen: float32 at an address 3 mod 4); misaligned loads cost sklearn's tree splitter ~6%.
    The engine hands kernels aligned arrays, copied once per worker."""
    from riskdask.engine import aligned_inputs, scatter_once

    buf = np.zeros(4 * 1000 + 3, dtype=np.uint8)
    odd = buf[3:].view(np.float32)
    assert not odd.flags.aligned
    shared = {"x": odd, "ok": np.arange(5.0)}
    fixed = aligned_inputs(shared)
    assert fixed is shared and shared["x"].flags.aligned and np.array_equal(shared["x"], odd)
    assert aligned_inputs(odd).flags.aligned and aligned_inputs(shared["ok"]) is shared["ok"]
    # frozen dataclasses (the credit model) and one level below a dict (hazard's inputs)
    model = FrozenInputs(table=odd.view(), n=3)
    assert not model.table.flags.aligned
    assert aligned_inputs(model) is model and model.table.flags.aligned
    nested = {"inner": FrozenInputs(table=odd.view(), n=1)}
    assert aligned_inputs(nested)["inner"].table.flags.aligned

    client = local_client(2)
    data = {"a": np.arange(1000, dtype=np.float32), "b": np.arange(7, dtype=np.int8),
            "c": np.linspace(0, 1, 333, dtype=np.float32)}
    fut = scatter_once(client, data)

    def raw_alignment(key, dask_worker=None):
        stored = dask_worker.data[key]
        return {name: bool(a.flags.aligned) for name, a in stored.items()}

    print("as delivered:", client.run(raw_alignment, fut.key))   # may be misaligned
    seen = map_chunks(alignment_seen, plan_chunks(4, 1), client=client, shared=data,
                      label="t-align")
    assert seen == [{"a": True, "b": True, "c": True}] * 4


def rows_seen(chunk, rows):
    assert len(rows["p"]) == chunk.size          # only its own rows reached the task
    return np.array([rows["p"].sum(), rows["y"].sum()])


def test_row_partitioned_input_sends_each_chunk_only_its_rows(local_client):
    client = local_client(2)
    p, y = np.arange(10_000, dtype=np.float64), np.arange(10_000) % 3
    chunks = plan_chunks(len(p), 1_500, 0)
    out = map_reduce(rows_seen, chunks, np.add, client=client, rows={"p": p, "y": y},
                     label="t-rows")
    parts = [np.array([p[c.start:c.stop].sum(), y[c.start:c.stop].sum()]) for c in chunks]
    np.testing.assert_array_equal(out, sequential_tree(parts, np.add))
    with pytest.raises(ValueError, match="not both"):
        map_reduce(rows_seen, chunks, np.add, client=client, rows={"p": p}, shared=1,
                   label="t-rows")


def square_chunk(chunk, shared):
    return np.arange(chunk.start, chunk.stop, dtype=np.float64) ** 2 + shared


def branch_sum(out, shared):
    return out.sum()


def branch_scaled(out, shared, factor):
    return out * factor


def test_map_branches_reduces_every_branch_like_map_reduce(local_client):
    """Each chunk's output stays on its worker and feeds several branches; each branch is
    reduced in the same index-fixed tree as map_reduce, so results equal a local fold."""
    from functools import partial

    chunks = plan_chunks(49, 7, 0)                      # 7 chunks of 7: partials add up
    outs = [square_chunk(c, 0.5) for c in chunks]
    for n_workers in (1, 2):
        total, doubled, tripled = map_branches(
            square_chunk, chunks,
            [(branch_sum, np.add), (partial(branch_scaled, factor=2.0), np.add),
             (partial(branch_scaled, factor=3.0), np.add)],
            client=local_client(n_workers), shared=0.5, label="t-branches")
        assert total == sequential_tree([o.sum() for o in outs], np.add)
        np.testing.assert_array_equal(doubled, sequential_tree([o * 2.0 for o in outs], np.add))
        np.testing.assert_array_equal(tripled, sequential_tree([o * 3.0 for o in outs], np.add))


def test_random_streams_are_keyed_by_purpose():
    """No two purposes of one run share a stream (a root or any of its first children), the
    primary purpose keeps SeedSequence(seed), a plan's streams never depend on how often
    the root was used before, and a job draws only the purposes it declared."""
    from riskdask.engine import spawn_streams, stream_seed
    from riskdask.streams import Streams

    seed = 2019
    purposes = ("forest", "permutation", "split", "bootstrap", "backtest", "synthetic",
                "subsample", "tail_fit", "model_comparison", "scenarios", "main")
    states = {}
    for purpose in purposes:
        root = stream_seed(seed, purpose, primary="forest")
        states[(purpose, "root")] = tuple(root.generate_state(4))
        for i, child in enumerate(spawn_streams(root, 64)):
            states[(purpose, i)] = tuple(child.generate_state(4))
    assert len(set(states.values())) == len(states)
    primary = stream_seed(seed, "forest", primary="forest")
    assert primary.entropy == seed and primary.spawn_key == ()
    again = stream_seed(seed, "permutation", primary="forest")
    again.spawn(5)  # a used root ...
    fresh = stream_seed(seed, "permutation", primary="forest")
    assert ([c.seed.generate_state(1)[0] for c in plan_chunks(10, 2, again)]
            == [c.seed.generate_state(1)[0] for c in plan_chunks(10, 2, fresh)])
    streams = Streams(seed, ("forest", "permutation"))
    assert streams.seed("forest").entropy == seed
    assert streams.seed("permutation").entropy == fresh.entropy
    with pytest.raises(ValueError, match="not declared by the job"):
        streams.seed("bootstrap")
    with pytest.raises(ValueError, match="declared twice"):
        Streams(seed, ("a", "a"))
