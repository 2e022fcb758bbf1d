"""Run directories: complete on success, absent after a failure or an interruption."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import REPO, leftovers, run_dirs
from riskdask import run_job
from riskdask.errors import InputError

MANIFEST_FIELDS = {"job", "config", "config_hash", "config_source", "seed", "inputs",
                   "exclusions", "packages", "cluster", "timings", "started", "finished"}


def test_run_directory_is_complete(local_client, tmp_path):
    res = run_job("selfcheck", overrides=["n_samples=400000", "chunk_size=100000"],
                  client=local_client(2), out=tmp_path)
    [run] = run_dirs(tmp_path, "selfcheck")
    assert run == res.run_dir
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{10}", run.name)
    manifest = json.loads((run / "manifest.json").read_text())
    assert MANIFEST_FIELDS <= set(manifest)
    assert manifest["cluster"]["n_workers"] == 2
    assert manifest["config"]["n_samples"] == 400000 and manifest["seed"] == 12345
    assert {"numpy", "dask", "distributed"} <= set(manifest["packages"])
    assert "simulate" in manifest["timings"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary == res.summary and summary["index_sum"] == summary["index_sum_exact"]
    for info in manifest["outputs"]["tables"].values():
        table = pq.read_table(run / info["path"])           # real Parquet, read by pyarrow
        assert table.num_rows == info["rows"]
    report = (run / "report.html").read_text()
    figures = manifest["outputs"]["figures"]
    assert figures
    for fig in figures:
        assert (run / fig).stat().st_size > 1000
        assert f'data-file="{fig}"' in report and "data:image/png;base64," in report
    assert not [p for p in (tmp_path / "selfcheck").iterdir() if p.name.startswith(".")]


def test_failed_run_leaves_nothing(tmp_path):
    def broken_cluster():
        raise InputError("cluster refused", key="--scheduler")

    with pytest.raises(InputError):
        run_job("selfcheck", client_provider=broken_cluster, out=tmp_path)
    assert leftovers(tmp_path) == []


def test_interrupted_run_leaves_nothing(tmp_path):
    """SIGTERM (what a scheduler sends) mid-run: exit 130, no run or temporary directory."""
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "riskdask", "run", "selfcheck", "--workers",
                             "1", "--out", str(out), "--set", "jitter_ms=3000", "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # The run holds its lock from the start (the run directory only appears at the end).
    while not list((out / "selfcheck").glob(".lock-*")) if (out / "selfcheck").exists() else True:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(3)  # the cluster is up and chunks are running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    # no run or temporary directory; only the checkpoints of the chunks already computed,
    # kept so that the next run of this config resumes (tests/test_resume.py)
    assert [p for p in leftovers(out) if ".checkpoints" not in p.parts] == []
