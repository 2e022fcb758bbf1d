"""A real `dask scheduler` / `dask worker` cluster: a worker killed mid-job changes nothing."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, read_summary, run_dirs
from riskdask import run_job

ARGS = ["n_samples=3000000", "chunk_size=200000", "jitter_ms=600"]


def test_worker_killed_mid_job_gives_identical_result(cli_cluster, local_client, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "riskdask", "run", "selfcheck", "--scheduler",
           cli_cluster.address, "--out", str(out), "--quiet"]
    for a in ARGS:
        cmd += ["--set", a]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cli_cluster.wait_until("selfcheck-", at_least=2)   # some chunks done, most still to run
    cli_cluster.kill_worker("worker-2")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert cli_cluster.n_workers() == 1                 # the worker really is gone

    [run] = run_dirs(out, "selfcheck")
    reference = run_job("selfcheck", overrides=ARGS[:2], client=local_client(1),
                        out=tmp_path / "ref")
    assert read_summary(run) == reference.summary       # bit for bit, via JSON round trip
