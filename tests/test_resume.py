"""Checkpoint and resume: a run that loses its client and its scheduler (SIGKILL) is finished
by a later run that computes only the missing chunks, and every table and summary number equals
an uninterrupted run.

Each killed attempt runs as a real ``riskdask run`` process against a real ``dask scheduler`` +
two ``dask worker`` processes; the client and the scheduler are SIGKILLed as soon as some
chunks have been checkpointed (the workers die with their cluster). The resumed run uses a
fresh cluster. Which chunks the resumed run computed is read off the store itself: each
computed partial is a new file (atomic rename = a new inode), each reused one is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_runs_identical, run_dirs, start_cli_cluster
from riskdask import run_job
from riskdask.checkpoint import CheckpointStore, full_config_hash
from riskdask.config import load_config
from riskdask.registry import get_job

JOBS = {
    "selfcheck": ["n_samples=1600000", "chunk_size=100000", "jitter_ms=300"],
    "credit": ["portfolio.synthetic_obligors=60", "simulation.n_scenarios=60000",
               "simulation.chunk_size=5000", "simulation.contribution_rows=2000"],
    # the axes given whole: on main, --set grid.k1.num alone resets start/stop to 0..1
    "hazard": ["grid.k1={start=0.05, stop=2.05, num=9}",
               "grid.k2={start=0.05, stop=2.05, num=9}", "grid.tile_size=10",
               "split.n_splits=3", "bootstrap.n_boot=24", "bootstrap.chunk_size=4"],
    "coup": ["data.synthetic_countries=40", "forest.n_trees=16", "forest.trees_per_task=2",
             "forest.max_depth=12", "importance.permutation_rows=300",
             "importance.permutation_repeats=2", "backtest.enabled=false"],
}


def _store(job: str, sets: list, url: str) -> CheckpointStore:
    cfg = load_config(job, get_job(job).config, None, sets).config
    return CheckpointStore(url, job=job, config_hash=full_config_hash(job, cfg))


def _files(store: CheckpointStore) -> dict[str, tuple[int, int]]:
    root = Path(store.root)
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in root.rglob("*.ckpt")} if root.exists() else {}


def _kill_attempt(job, sets, out, logdir, *, checkpoint=None, min_files=1):
    """Start ``riskdask run`` against a CLI cluster; SIGKILL client and scheduler once
    ``min_files`` partials are checkpointed. Returns the store's files at that moment."""
    store = _store(job, sets, checkpoint or str(out / ".checkpoints"))
    logdir.mkdir(parents=True)
    with start_cli_cluster(logdir) as cc:
        cmd = [sys.executable, "-m", "riskdask", "run", job, "--scheduler", cc.address,
               "--out", str(out), "--quiet"]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 240
        try:
            while len(_files(store)) < min_files:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            proc.kill()
            os.killpg(cc.procs["scheduler"].pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert run_dirs(out, job) == []               # the killed attempt wrote no run
    return store, _files(store)


def _computed_chunks(before: dict, after: dict) -> int:
    """Chunks (plan, index) with a partial written after ``before`` was taken."""
    written = {name for name, ident in after.items() if before.get(name) != ident}
    return len({(Path(n).parent.name, Path(n).stem.rsplit("-", 1)[1]) for n in written})


def _check_resumed(res, before, after, reference):
    ck = res.manifest["checkpoints"]
    assert ck["resumed"] is True
    assert ck["reused"] >= 1
    for plan in ck["plans"]:
        assert plan["plan"] is not None, plan          # every plan was checkpointed
        assert plan["reused"] + plan["computed"] == plan["chunks"]
    assert ck["computed"] == _computed_chunks(before, after)
    assert_runs_identical(res, reference, reference.tables())
    assert res.tables() == reference.tables()


@pytest.mark.parametrize("job", ["credit", "hazard", "coup"])
def test_killed_job_resumes_automatically_and_matches(job, local_client, tmp_path):
    sets = JOBS[job]
    out = tmp_path / "runs"
    # the uninterrupted reference first: how many partials a whole run writes, so that the
    # kill lands half-way (a sub-forest's chunk is done only once all its branches are in)
    reference = run_job(job, overrides=sets, client=local_client(2), out=tmp_path / "ref",
                        keep_checkpoint=True)
    total = len(_files(_store(job, sets, str(tmp_path / "ref" / ".checkpoints"))))
    store, before = _kill_attempt(job, sets, out, tmp_path / "c1", min_files=total // 2)
    assert (out / job).glob(".lock-*")             # the dead client's lock file is still there
    (tmp_path / "c2").mkdir()
    with start_cli_cluster(tmp_path / "c2") as cc:
        # resume=None: the previous attempt died, so the run resumes by itself (a scheduled
        # run), and cleans the stale lock with a note
        res = run_job(job, overrides=sets, scheduler=cc.address, out=out, keep_checkpoint=True)
    after = _files(store)
    _check_resumed(res, before, after, reference)
    assert any("did not finish" in n for n in res.manifest["notes"])
    assert any("stale lock" in n for n in res.manifest["notes"])


def test_resume_flag_computes_only_the_missing_chunks(run_cli, local_client, tmp_path):
    """selfcheck with slow chunks: part-way kill, ``--resume`` on the CLI, exact counts. The
    store is a ``file://`` fsspec URL here (the job tests above use the default local path)."""
    sets = JOBS["selfcheck"]
    out = tmp_path / "runs"
    url = (tmp_path / "ckpt").as_uri()
    store, before = _kill_attempt("selfcheck", sets, out, tmp_path / "c1", checkpoint=url,
                                  min_files=4)
    n_chunks = 16
    assert 4 <= len(before) < n_chunks              # killed part-way
    (tmp_path / "c2").mkdir()
    with start_cli_cluster(tmp_path / "c2") as cc:
        r = run_cli("run", "selfcheck", "--scheduler", cc.address, "--out", out, "--resume",
                    "--checkpoint", url, "--keep-checkpoint",
                    *[x for s in sets for x in ("--set", s)])
    assert r.returncode == 0, r.stderr
    [run] = run_dirs(out, "selfcheck")
    manifest = json.loads((run / "manifest.json").read_text())
    ck = manifest["checkpoints"]
    assert ck["reused"] == len(before)              # every checkpointed chunk was reused ...
    assert ck["computed"] == n_chunks - len(before) == _computed_chunks(before, _files(store))
    reference = run_job("selfcheck", overrides=sets, client=local_client(2),
                        out=tmp_path / "ref", checkpoint=False)
    assert_runs_identical(run, reference, ["top_draws"])


def test_changed_config_does_not_reuse(local_client, tmp_path):
    out = tmp_path / "runs"
    base = ["n_samples=400000", "chunk_size=100000"]
    first = run_job("selfcheck", overrides=base, client=local_client(2), out=out,
                    keep_checkpoint=True)
    assert first.manifest["checkpoints"]["computed"] == 4
    # the workers' own report of what they wrote is what is on disk
    kept = sorted((out / ".checkpoints").rglob("*.ckpt"))
    assert first.manifest["checkpoints"]["files_written"] == len(kept) == 4
    assert first.manifest["checkpoints"]["bytes_written"] == sum(f.stat().st_size for f in kept)
    assert 0 < first.manifest["checkpoints"]["write_seconds"] < first.manifest["timings"]["compute"]
    again = run_job("selfcheck", overrides=base, client=local_client(2), out=out, resume=True)
    assert again.manifest["checkpoints"]["reused"] == 4          # same config: all reused
    assert again.manifest["checkpoints"]["files_written"] == 0
    assert again.summary == first.summary
    # a different seed: same chunk layout, but its own config hash -> nothing reused
    other = run_job("selfcheck", overrides=base + ["seed=7"], client=local_client(2), out=out,
                    resume=True)
    assert other.manifest["checkpoints"] == {**other.manifest["checkpoints"],
                                             "reused": 0, "computed": 4}
    assert other.summary["mean"] != first.summary["mean"]
    # the finished runs removed their checkpoints (the first one was kept by request,
    # and removed by the second)
    assert not (out / ".checkpoints").exists()


def test_a_fresh_start_ignores_kept_checkpoints(local_client, tmp_path):
    out = tmp_path / "runs"
    base = ["n_samples=400000", "chunk_size=100000"]
    run_job("selfcheck", overrides=base, client=local_client(2), out=out, keep_checkpoint=True)
    fresh = run_job("selfcheck", overrides=base, client=local_client(2), out=out)
    # kept checkpoints of a *finished* run are reused only on request (--resume)
    assert fresh.manifest["checkpoints"]["reused"] == 0
