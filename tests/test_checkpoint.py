"""The checkpoint store on its own: keys, atomic writes, listing, config isolation, removal.

The engine's use of it (resume after a kill, bit-identical results) is in test_resume.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from riskdask.checkpoint import CheckpointStore, full_config_hash, plan_token
from riskdask.engine import plan_chunks


def _kernel(chunk, shared):
    return shared * chunk.index


@pytest.fixture(params=["path", "file-url", "memory"])
def store_url(request, tmp_path):
    if request.param == "path":
        return str(tmp_path / "ckpt")
    if request.param == "file-url":
        return (tmp_path / "ckpt").as_uri()          # file:///...
    return f"memory://riskdask-test-{tmp_path.name}"  # a non-local fsspec file system


def test_save_list_load_clear(store_url):
    store = CheckpointStore(store_url, job="credit", config_hash="a" * 64)
    plan = store.plan("credit-sim", "0123456789abcdef" * 4)
    assert plan.done(["b0"]) == set() and store.count() == 0
    parts = {i: {"sum": np.arange(5.0) * i, "n": i} for i in (0, 2, 3)}
    for i, obj in parts.items():
        plan.save("b0", i, obj)
    plan.save("b1", 2, "only chunk 2 has branch 1")
    assert plan.done(["b0"]) == {0, 2, 3}
    assert plan.done(["b0", "b1"]) == {2}           # a chunk is done when all its parts are
    for i, obj in parts.items():
        got = plan.load("b0", i)
        np.testing.assert_array_equal(got["sum"], obj["sum"])
        assert got["n"] == i
    # nothing but finished files: the temporary names of the atomic writes are gone
    names = sorted(Path(p).name for p in store.fs.find(store.root))
    assert names == ["b0-000000.ckpt", "b0-000002.ckpt", "b0-000003.ckpt", "b1-000002.ckpt"]
    assert store.count() == 4
    assert store.clear() and not store.exists() and store.count() == 0
    assert not store.clear()


def test_other_config_never_used(tmp_path):
    url = str(tmp_path / "ckpt")
    mine = CheckpointStore(url, job="coup", config_hash="1" * 64)
    other = CheckpointStore(url, job="coup", config_hash="2" * 64)
    mine.plan("forest", "t" * 32).save("b0", 0, 41)
    assert other.plan("forest", "t" * 32).done(["b0"]) == set()   # another folder
    # even a file copied into the other config's folder is refused by its header
    src = mine.plan("forest", "t" * 32).file("b0", 0)
    dst = other.plan("forest", "t" * 32).file("b0", 0)
    Path(dst).parent.mkdir(parents=True)
    Path(dst).write_bytes(Path(src).read_bytes())
    with pytest.raises(ValueError, match="another config_hash"):
        other.plan("forest", "t" * 32).load("b0", 0)
    assert set(other.plan("forest", "t" * 32).damaged(["b0"], {0})) == {0}


def test_corrupt_or_truncated_file_is_not_used(tmp_path):
    plan = CheckpointStore(str(tmp_path), job="x", config_hash="c" * 64).plan("p", "t" * 32)
    plan.save("b0", 0, np.ones(1000))
    plan.save("b0", 1, np.ones(1000))
    path = Path(plan.file("b0", 1))
    path.write_bytes(path.read_bytes()[:-10])
    assert plan.done(["b0"]) == {0, 1}                 # listed ...
    assert set(plan.damaged(["b0"], {0, 1})) == {1}    # ... but only the intact one loads
    with pytest.raises(ValueError, match="corrupt"):
        plan.load("b0", 1)


def test_arrays_come_back_exact_aligned_and_writable(tmp_path):
    plan = CheckpointStore(str(tmp_path), job="x", config_hash="e" * 64).plan("p", "t" * 32)
    rng = np.random.default_rng(3)
    obj = {"f8": rng.normal(size=1001), "u1": rng.integers(0, 9, (37, 11), dtype=np.uint8),
           "fortran": np.asfortranarray(rng.normal(size=(5, 7))), "strided": np.arange(20.0)[::3],
           "empty": np.zeros(0), "i8": np.arange(3), "text": "a partial", "n": 7}
    plan.save("b0", 0, obj)
    got = plan.load("b0", 0)
    assert got.keys() == obj.keys() and got["text"] == obj["text"] and got["n"] == 7
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value)
            assert got[key].dtype == value.dtype and got[key].flags.aligned, key
            got[key][...] = 0                       # merges may update a loaded partial in place
    assert got["fortran"].flags.f_contiguous
    # a file of the previous format (everything in band) is not loaded, but recomputed
    path = Path(plan.file("b0", 0))
    path.write_bytes(b"RDCKPT1\n" + path.read_bytes()[len(b"RDCKPT2\n"):])
    with pytest.raises(ValueError, match="older riskdask checkpoint"):
        plan.load("b0", 0)
    assert set(plan.damaged(["b0"], {0})) == {0}


def test_unwritable_store_names_the_file(tmp_path):
    from riskdask.checkpoint import CheckpointError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    plan = CheckpointStore(str(blocker), job="x", config_hash="d" * 64).plan("p", "t" * 32)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {blocker}/x/"):
        plan.save("b0", 0, 1)


def test_plan_token_depends_on_what_fixes_the_partials():
    chunks = plan_chunks(100, 10, seed=1)
    data = np.arange(50.0)
    base = plan_token(_kernel, chunks, data=data, kernel_kwargs={"k": 1})
    assert base == plan_token(_kernel, plan_chunks(100, 10, seed=1), data=data.copy(),
                              kernel_kwargs={"k": 1})                     # same inputs
    assert base != plan_token(_kernel, plan_chunks(100, 10, seed=2), data=data,
                              kernel_kwargs={"k": 1})                     # other seeds
    assert base != plan_token(_kernel, plan_chunks(100, 20, seed=1), data=data,
                              kernel_kwargs={"k": 1})                     # other bounds
    assert base != plan_token(_kernel, chunks, data=data + 1, kernel_kwargs={"k": 1})
    assert base != plan_token(_kernel, chunks, data=data, kernel_kwargs={"k": 2})
    assert base != plan_token(pickle.dumps, chunks, data=data, kernel_kwargs={"k": 1})


def test_full_config_hash_extends_the_run_hash():
    from riskdask.config import config_hash
    from jobs.selfcheck import Config

    cfg = Config(n_samples=1000)
    assert full_config_hash("selfcheck", cfg).startswith(config_hash("selfcheck", cfg))
    other = Config(n_samples=999)
    assert full_config_hash("selfcheck", cfg) != full_config_hash("selfcheck", other)


def test_stores_of_configs_not_run_for_n_days_are_pruned(tmp_path, cli):
    import os
    import time

    from riskdask.checkpoint import prune_stores

    url = str(tmp_path / "ckpt")
    old = CheckpointStore(url, job="credit", config_hash="1" * 64)
    new = CheckpointStore(url, job="credit", config_hash="2" * 64)
    kept = CheckpointStore(url, job="coup", config_hash="3" * 64)
    for store in (old, new, kept):
        store.write_meta(status="failed")
        store.plan("p", "0" * 32).save("b0", 0, 1)
    week_ago = time.time() - 8 * 86400
    for store in (old, kept):
        for path in Path(store.root).rglob("*"):
            os.utime(path, (week_ago, week_ago))
    assert prune_stores(url, older_than_days=7, keep=[kept.config_hash]) == [
        f"credit/{'1' * 64}"]
    assert not old.exists() and new.exists() and kept.exists()
    r = cli("checkpoints", "prune", "--checkpoint", url, "--older-than", "7")
    assert r.code == 0 and f"coup/{'3' * 64}" in r.out and "1 store(s)" in r.out
    assert not kept.exists() and new.exists()
