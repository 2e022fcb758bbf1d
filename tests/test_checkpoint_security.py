"""Nothing in a checkpoint store runs code, and no damaged file wedges a scheduled run.

The attack of the issue, for real: a ``.ckpt`` rewritten with a pickle whose ``__reduce__``
creates a file, its header copied from the genuine one (everything an attacker can read in
the store). The HMAC over header and pieces, keyed by a key that is not in the store, refuses
it before anything is unpickled; the run sets it aside, recomputes the chunk and gives the
bit-identical result.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from riskdask import run_job
from riskdask.checkpoint import ALIGN, MAGIC, CheckpointStore, checkpoint_key

SELFCHECK = ["n_samples=400000", "chunk_size=50000"]


class _Payload:
    """Unpickling this creates ``path``: what an attacker would make run ``id`` instead."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _forge(ckpt: Path, payload_target: Path) -> None:
    """Rewrite ``ckpt`` with the payload, keeping its header's fields (and recomputing the
    sizes, as an attacker who knows the format would)."""
    blob = ckpt.read_bytes()
    end = blob.index(b"\n", len(MAGIC))
    header = json.loads(blob[len(MAGIC):end])
    stream = pickle.dumps(_Payload(str(payload_target)), protocol=5)
    header["sizes"] = [len(stream)]
    head = MAGIC + json.dumps(header).encode() + b"\n"
    ckpt.write_bytes(head + bytes(-len(head) % ALIGN) + stream)   # laid out as the format is


def test_a_forged_checkpoint_is_refused_before_unpickling(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"), job="selfcheck", config_hash="c" * 64)
    plan = store.plan("t", "0" * 32)
    plan.save("b0", 0, {"x": 1})
    assert plan.load("b0", 0) == {"x": 1}
    target = tmp_path / "pwned"
    _forge(Path(plan.file("b0", 0)), target)
    with pytest.raises(ValueError, match="fails authentication"):
        plan.load("b0", 0)
    assert not target.exists()
    assert set(plan.damaged(["b0"], [0])) == {0}
    # the right fields under another key are refused the same way
    other = CheckpointStore(str(tmp_path / "ckpt"), job="selfcheck", config_hash="c" * 64,
                            key=b"another key")
    plan.save("b0", 1, {"x": 2})
    with pytest.raises(ValueError, match="fails authentication"):
        other.plan("t", "0" * 32).load("b0", 1)


def test_the_key_lives_outside_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("RISKDASK_CHECKPOINT_KEY", raising=False)
    key_file = tmp_path / "home" / "riskdask" / "checkpoint.key"
    monkeypatch.setenv("RISKDASK_CHECKPOINT_KEY_FILE", str(key_file))
    key = checkpoint_key()
    assert len(key) == 64 and key_file.stat().st_mode & 0o777 == 0o600
    assert checkpoint_key() == key                     # read back, not made anew
    store = CheckpointStore(str(tmp_path / "ckpt"), job="j", config_hash="d" * 64)
    store.plan("t", "1" * 32).save("b0", 0, list(range(100)))
    for path in store.fs.find(store.root):
        assert key not in Path(path).read_bytes()
    monkeypatch.setenv("RISKDASK_CHECKPOINT_KEY", "from the environment")
    assert checkpoint_key() == b"from the environment"


def _resume_with(tmp_path, local_client, damage, label):
    """Run selfcheck with kept checkpoints, damage one file with ``damage(path)``, mark the
    store unfinished, and run again twice (two scheduled runs). Returns (first, second,
    third) results and the files set aside after the second run."""
    out = tmp_path / label
    sets = [*SELFCHECK, "jitter_ms=0"]
    first = run_job("selfcheck", overrides=sets, client=local_client(2), out=out,
                    keep_checkpoint=True)
    files = sorted((out / ".checkpoints").rglob("*.ckpt"))
    assert len(files) == 8
    damage(files[3])
    meta = next((out / ".checkpoints").rglob("meta.json"))
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "status": "failed"}))
    second = run_job("selfcheck", overrides=sets, client=local_client(2), out=out,
                     keep_checkpoint=True)
    set_aside = [p for p in (out / ".checkpoints").rglob("damaged/*/*") if p.is_file()]
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "status": "failed"}))
    third = run_job("selfcheck", overrides=sets, client=local_client(2), out=out)
    return first, second, third, set_aside


def test_a_run_sets_a_forged_checkpoint_aside_and_is_bit_identical(local_client, tmp_path):
    target = tmp_path / "pwned"
    first, second, _, set_aside = _resume_with(tmp_path, local_client,
                                               lambda p: _forge(p, target), "forged")
    assert not target.exists(), "the payload ran"
    assert second.summary == first.summary
    ck = second.manifest["checkpoints"]
    assert ck["resumed"] and ck["reused"] == 7 and ck["computed"] == 1
    note = next(n for n in second.manifest["notes"] if "set aside" in n)
    assert "fails authentication" in note
    assert len(set_aside) == 1 and ".ckpt-" in set_aside[0].name


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_checkpoint_is_recomputed_twice_in_a_row(local_client, tmp_path, damage):
    """A truncated or bit-flipped file: the next scheduled run recomputes its chunk, and the
    one after it is not wedged either (the file was set aside, not left to fail again)."""
    def harm(path: Path):
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            path.write_bytes(bytes(data[:len(data) // 2]))
        else:
            data[-10] ^= 0xFF
            path.write_bytes(bytes(data))

    first, second, third, set_aside = _resume_with(tmp_path, local_client, harm, damage)
    assert len(set_aside) == 1
    assert second.summary == first.summary == third.summary
    assert second.manifest["checkpoints"]["computed"] == 1
    assert third.manifest["checkpoints"]["computed"] == 0       # nothing left to set aside
    assert not any("set aside" in n for n in third.manifest["notes"])


def test_key_file_is_not_created_world_readable(tmp_path, monkeypatch):
    monkeypatch.delenv("RISKDASK_CHECKPOINT_KEY", raising=False)
    monkeypatch.setenv("RISKDASK_CHECKPOINT_KEY_FILE", str(tmp_path / "k" / "key"))
    old = os.umask(0)
    try:
        checkpoint_key()
    finally:
        os.umask(old)
    assert (tmp_path / "k" / "key").stat().st_mode & 0o077 == 0


def test_the_resume_note_says_found_and_when_none_matched(local_client, tmp_path):
    """Checkpoints of a plan this run does not have (edited code gives another plan token):
    the note says how many were *found*, and the manifest that none was reused."""
    out = tmp_path / "runs"
    run_job("selfcheck", overrides=SELFCHECK, client=local_client(2), out=out,
            keep_checkpoint=True)
    [plan_dir] = [p for p in (out / ".checkpoints").rglob("selfcheck-*") if p.is_dir()]
    plan_dir.rename(plan_dir.with_name("selfcheck-0000000000edited0000"))
    meta = next((out / ".checkpoints").rglob("meta.json"))
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "status": "failed"}))
    res = run_job("selfcheck", overrides=SELFCHECK, client=local_client(2), out=out)
    notes = res.manifest["notes"]
    assert any("found 8 checkpointed partial(s)" in n for n in notes), notes
    assert any("no checkpointed partial matched" in n for n in notes), notes
    assert res.manifest["checkpoints"]["reused"] == 0
