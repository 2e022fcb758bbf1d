"""Shared fixtures: real Dask clusters and the CLI.

- ``local_client(n)``: a real ``LocalCluster`` of ``n`` single-threaded worker *processes*
  (one per ``n`` for the whole session, so tests do not pay the start-up each time).
- ``cli_cluster``: a ``dask scheduler`` and two ``dask worker`` processes started from the
  command line on 127.0.0.1 (free ports); ``kill_worker()`` SIGKILLs one worker's whole process
  group; everything is torn down afterwards.
- ``cli``: the ``riskdask`` CLI in-process (fast; returns exit code, stdout, stderr).
- ``run_cli``: the ``riskdask`` CLI as a real subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

os.environ.setdefault("MPLBACKEND", "Agg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- local clusters ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def local_client():
    """Factory: ``local_client(n_workers)`` -> Client on a LocalCluster of processes."""
    from distributed import Client, LocalCluster

    made: dict[int, tuple] = {}

    def get(n_workers: int = 2):
        if n_workers not in made:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", memory_limit="4GiB")
            made[n_workers] = (cluster, Client(cluster))
        return made[n_workers][1]

    yield get
    for cluster, client in made.values():
        client.close()
        cluster.close()


@pytest.fixture(scope="session", autouse=True)
def _checkpoint_key_of_the_session(tmp_path_factory):
    """The checkpoint key (riskdask.checkpoint.checkpoint_key) in a folder of the test
    session, not the developer's ~/.config; CLI subprocesses inherit it."""
    path = tmp_path_factory.mktemp("riskdask-config") / "checkpoint.key"
    old = os.environ.get("RISKDASK_CHECKPOINT_KEY_FILE")
    os.environ["RISKDASK_CHECKPOINT_KEY_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RISKDASK_CHECKPOINT_KEY_FILE", None)
    else:
        os.environ["RISKDASK_CHECKPOINT_KEY_FILE"] = old


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """Factory: ``default_run(job)`` -> the JobResult of the job's embedded default config,
    run once per session through ``run_job`` on a 2-worker LocalCluster of processes (the
    pinned-numbers and the history tests share it)."""
    from distributed import Client, LocalCluster

    from riskdask import run_job

    runs: dict = {}
    state: dict = {}

    def get(job: str):
        if job not in runs:
            if "client" not in state:
                state["cluster"] = LocalCluster(n_workers=2, threads_per_worker=1,
                                                processes=True, dashboard_address=":0",
                                                memory_limit="4GiB")
                state["client"] = Client(state["cluster"])
            runs[job] = run_job(job, client=state["client"],
                                out=tmp_path_factory.mktemp(f"default-{job}"))
        return runs[job]

    yield get
    if "client" in state:
        state["client"].close()
        state["cluster"].close()


# -- a cluster started with the `dask` command line ----------------------------------------
@dataclass
class CliCluster:
    address: str
    procs: dict = field(default_factory=dict)  # name -> Popen
    logdir: Path | None = None

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def tasks_in_memory(self, prefix: str) -> int:
        """How many tasks whose key starts with ``prefix`` have finished (scheduler's view)."""
        from distributed import Client

        def count(dask_scheduler, prefix=prefix):
            return sum(1 for ts in dask_scheduler.tasks.values()
                       if str(ts.key).startswith(prefix) and ts.state == "memory")

        with Client(self.address, timeout=30) as c:
            return c.run_on_scheduler(count)

    def n_workers(self) -> int:
        with self.client() as c:
            return len(c.scheduler_info()["workers"])

    def kill_worker(self, name: str = "worker-2") -> None:
        """SIGKILL a worker and its nanny (its whole process group): a machine that died."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def wait_until(self, prefix: str, at_least: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tasks_in_memory(prefix) >= at_least:
                return
            time.sleep(0.1)
        raise TimeoutError(f"fewer than {at_least} '{prefix}*' tasks finished in {timeout}s")


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@contextlib.contextmanager
def start_cli_cluster(logdir: Path, *, protocol: str = "tcp", flags: tuple = (),
                      security=None):
    """Start ``dask scheduler`` + two ``dask worker`` on 127.0.0.1 (free ports) from the
    command line, wait for both workers, and SIGKILL every process group afterwards.

    ``flags`` go to the scheduler and the workers alike (e.g. the TLS files); ``security``
    is what the test's own client needs to connect.
    """
    from distributed import Client

    port = free_port()
    address = f"{protocol}://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    cc = CliCluster(address=address, logdir=logdir)
    try:
        cc.procs["scheduler"] = _spawn([dask, "scheduler", "--protocol", protocol, "--host",
                                        "127.0.0.1", "--port", str(port), "--dashboard-address",
                                        f"127.0.0.1:{free_port()}", *flags],
                                       logdir / "scheduler.log")
        for i in (1, 2):
            cc.procs[f"worker-{i}"] = _spawn([dask, "worker", address, "--nthreads", "1",
                                              "--nworkers", "1", "--name", f"worker-{i}",
                                              "--no-dashboard", "--memory-limit", "4GiB",
                                              "--local-directory", str(logdir / f"w{i}"),
                                              *flags],
                                             logdir / f"worker-{i}.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5, security=security) as c:
                    c.wait_for_workers(2, timeout=60)
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield cc
    finally:
        for proc in cc.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


@pytest.fixture
def cli_cluster(tmp_path):
    """``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1, killed afterwards."""
    with start_cli_cluster(tmp_path) as cc:
        yield cc


# -- the CLI -------------------------------------------------------------------------------
@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``riskdask ARGS`` in-process; returns CliResult(code, out, err)."""
    from riskdask.cli import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def run_cli():
    """Run ``python -m riskdask ARGS`` as a subprocess; returns CompletedProcess (text)."""

    def invoke(*args: str, cwd: str | Path | None = None, timeout: float = 600):
        return subprocess.run([sys.executable, "-m", "riskdask", *map(str, args)],
                              capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout)

    return invoke


def run_dirs(out: Path, job: str) -> list[Path]:
    """Finished run directories of ``job`` under ``out`` (temporary ones and the ``latest``
    symlink excluded)."""
    base = Path(out) / job
    return sorted(p for p in base.glob("*") if p.is_dir() and not p.is_symlink()
                  and not p.name.startswith(".")) if base.exists() else []


def leftovers(out: Path) -> list[Path]:
    """Anything under ``out`` that is a run or a temporary directory."""
    return sorted(p for p in Path(out).rglob("*") if p.is_dir()) if Path(out).exists() else []


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def assert_runs_identical(a, b, tables) -> None:
    """Two runs (JobResults or run directories) gave the same numbers, bit for bit:
    ``summary.json`` and each named Parquet table."""
    import pandas as pd

    da, db = (Path(getattr(r, "run_dir", r)) for r in (a, b))
    assert read_summary(da) == read_summary(db)
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(da / "tables" / f"{name}.parquet"),
                                      pd.read_parquet(db / "tables" / f"{name}.parquet"),
                                      check_exact=True, obj=name)
