"""Runs in folders other users can write to: a planted lock symlink is refused (its target
untouched), a damaged or old run history never fails a run, and every output file gets the
same umask-respecting mode."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from riskdask import run_job
from riskdask.config import load_config
from riskdask.history import HISTORY_FILE, HistoryUnreadable, read
from riskdask.registry import get_job

SELFCHECK = ["n_samples=200000", "chunk_size=100000"]


def _config_hash(job: str, overrides) -> str:
    return load_config(job, get_job(job).config, None, overrides).hash


def test_a_symlinked_lock_is_refused_and_its_target_unchanged(tmp_path, cli):
    out = tmp_path / "runs"
    (out / "selfcheck").mkdir(parents=True)
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n" * 20)
    before = victim.read_bytes()
    lock = out / "selfcheck" / f".lock-{_config_hash('selfcheck', SELFCHECK)}"
    lock.symlink_to(victim)
    args = ["run", "selfcheck", "--out", out, "--workers", "1", "--quiet"]
    for s in SELFCHECK:
        args += ["--set", s]
    r = cli(*args)
    assert r.code == 2, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "symbolic link" in lines[0] and str(lock) in lines[0]
    assert victim.read_bytes() == before and lock.is_symlink()
    assert not [p for p in (out / "selfcheck").iterdir() if p.name.startswith(".tmp-")]


def test_nothing_but_the_holder_line_is_read_from_a_lock(tmp_path):
    """A stale lock with other text (a planted file) never has its text copied into notes."""
    from riskdask.schedule import RunLock, clean_stale

    job_dir = tmp_path / "selfcheck"
    job_dir.mkdir()
    (job_dir / ".lock-0123456789").write_text("SECRET LINE FROM A PLANTED FILE\n")
    with RunLock(job_dir, "0123456789") as held:
        assert held.previous_holder is None
        notes = clean_stale(job_dir, own_lock=held).notes
    assert not any("SECRET" in n for n in notes)


def test_a_corrupt_history_is_set_aside_and_the_run_succeeds(local_client, tmp_path, cli):
    out = tmp_path / "runs"
    job_dir = out / "selfcheck"
    job_dir.mkdir(parents=True)
    (job_dir / HISTORY_FILE).write_bytes(b"PAR1 this is not a parquet file")
    r = cli("history", "selfcheck", "--out", out)
    assert r.code == 2 and str(job_dir / HISTORY_FILE) in r.err and len(r.err.splitlines()) == 1
    with pytest.raises(HistoryUnreadable, match="history.parquet"):
        read(job_dir)
    res = run_job("selfcheck", overrides=SELFCHECK, client=local_client(1), out=out)
    note = next(n for n in res.manifest["notes"] if "moved it aside" in n)
    assert "cannot read the run history" in note
    assert [p.name.startswith(f"{HISTORY_FILE}.damaged-") for p in job_dir.iterdir()
            if p.name.startswith(f"{HISTORY_FILE}.")] == [True]
    table = read(job_dir)
    assert len(table) == 1 and table["run"].iloc[0] == res.run_dir.name
    again = run_job("selfcheck", overrides=SELFCHECK, client=local_client(1), out=out)
    assert len(read(job_dir)) == 2 and not any("aside" in n for n in again.manifest["notes"])


def test_an_older_history_schema_is_migrated(local_client, tmp_path, cli):
    """A table without the metadata columns of today (an older release, or hand-edited):
    read, shown, and appended to."""
    out = tmp_path / "runs"
    job_dir = out / "selfcheck"
    job_dir.mkdir(parents=True)
    pd.DataFrame({"run": ["20240101T000000Z-0000000000"], "mean": [0.001]}).to_parquet(
        job_dir / HISTORY_FILE)
    res = run_job("selfcheck", overrides=SELFCHECK, client=local_client(1), out=out)
    assert not any("history" in n for n in res.manifest["notes"])
    table = read(job_dir)
    assert len(table) == 2 and list(table["run"])[1] == res.run_dir.name
    r = cli("history", "selfcheck", "--out", out)
    assert r.code == 0, r.err
    assert len(r.out.strip().splitlines()) == 3


def test_every_output_file_has_the_umask_mode(local_client, tmp_path):
    old = os.umask(0o027)
    try:
        res = run_job("selfcheck", overrides=SELFCHECK, client=local_client(1),
                      out=tmp_path / "runs")
    finally:
        os.umask(old)
    files = [p for p in res.run_dir.rglob("*") if p.is_file()]
    files.append(res.run_dir.parent / HISTORY_FILE)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o640}, modes
