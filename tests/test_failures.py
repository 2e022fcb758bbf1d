"""Failure paths are quick and clear: unreachable schedulers, no workers, signals during
cluster start, what killed runs leave behind, and a disk without room.

Each test asserts the exit code (or exception), the message and a time bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import BIN, REPO, free_port, leftovers, run_dirs
from riskdask.errors import ClusterUnavailable, OutputError
from riskdask.schedule import (MIN_FREE_BYTES, RunLock, check_free_space, clean_stale,
                               estimate_run_bytes)

SMALL = ["--set", "n_samples=200000", "--set", "chunk_size=100000"]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_refused_scheduler_exit_2_names_the_address_fast(run_cli, tmp_path):
    port = free_port()                      # nothing listens there
    t0 = time.monotonic()
    r = run_cli("run", "selfcheck", "--scheduler", f"tcp://127.0.0.1:{port}",
                "--out", tmp_path / "runs", *SMALL)
    took = time.monotonic() - t0
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert f"tcp://127.0.0.1:{port}" in line and "connection refused" in line
    assert "config" not in line and ".toml" not in line      # not blamed on the config
    assert took < 10, took
    assert leftovers(tmp_path / "runs") == []


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung or wrong service)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_unanswering_scheduler_times_out_within_the_default(cli, tmp_path, silent_server):
    # in-process: the bound is on the failure path (the default 5 s connect timeout), not on
    # the interpreter's start-up, which takes seconds by itself on a loaded 2-core machine
    t0 = time.monotonic()
    r = cli("run", "selfcheck", "--scheduler", silent_server, "--out", tmp_path / "runs",
            *SMALL)
    took = time.monotonic() - t0
    assert r.code == 2
    line = _one_error_line(r.err)
    assert silent_server in line and "within 5 s" in line and "--connect-timeout" in line
    assert took < 10, took
    assert leftovers(tmp_path / "runs") == []


def test_connect_timeout_is_honoured(silent_server):
    from riskdask.cluster import connect

    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="within 1 s"):
        with connect(scheduler=silent_server, connect_timeout=1, quiet=True):
            pass
    assert time.monotonic() - t0 < 4


@pytest.fixture
def bare_scheduler(tmp_path):
    """A ``dask scheduler`` with no worker at all."""
    port = free_port()
    log = open(tmp_path / "scheduler.log", "wb")
    proc = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                             str(port), "--dashboard-address", f"127.0.0.1:{free_port()}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
    yield f"tcp://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()


def test_scheduler_without_workers_waits_then_says_so(bare_scheduler):
    from riskdask.cluster import connect

    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        with connect(scheduler=bare_scheduler, wait_workers=1.5, quiet=True):
            pass
    took = time.monotonic() - t0
    assert bare_scheduler in str(info.value) and "no workers" in str(info.value)
    assert "1.5 s" in str(info.value) and "--wait-workers" in str(info.value)
    assert 1.5 <= took < 8, took


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("group", [False, True], ids=["sigterm-main", "sigterm-group"])
def test_sigterm_while_the_local_cluster_starts(tmp_path, group):
    """SIGTERM as soon as the first worker process exists (the cluster is half started):
    exit 130, one line, no traceback, nothing written, no process left behind. ``group``
    sends it to the whole process group, as ``systemctl stop`` does."""
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "riskdask", "run", "selfcheck", "--workers",
                             "2", "--out", str(out), *SMALL], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not _children(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    kids = _children(proc.pid)
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "AssertionError" not in stderr, stderr
    assert "interrupted: no run directory was written" in stderr
    assert time.monotonic() - t0 < 30
    assert leftovers(out) == []
    gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, alive


# -- what a killed run leaves behind --------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_clean_stale_removes_only_what_dead_runs_left(tmp_path):
    job = tmp_path / "runs" / "credit"
    job.mkdir(parents=True)
    dead = _dead_pid()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        stale_tmp = job / f".tmp-20260101T000000Z-aaaaaaaaaa-{dead}"
        live_tmp = job / f".tmp-20260101T000000Z-bbbbbbbbbb-{sleeper.pid}"
        for d in (stale_tmp, live_tmp):
            (d / "tables").mkdir(parents=True)
            (d / "tables" / "x.parquet").write_bytes(b"half")
        stale_lock = job / ".lock-aaaaaaaaaa"
        stale_lock.write_text(f"pid {dead} since 2026-01-01T00:00:00+00:00\n")
        finished = job / "20260101T000000Z-aaaaaaaaaa"
        finished.mkdir()
        with RunLock(job, "cccccccccc") as mine:
            # a dead pid whose config lock is held by a live run (another host on a shared
            # folder): not ours to remove
            held_tmp = job / f".tmp-20260101T000000Z-dddddddddd-{dead}"
            held_tmp.mkdir()
            other = subprocess.Popen([sys.executable, "-c", (
                "import sys, time; sys.path.insert(0, %r);"
                "from riskdask.schedule import RunLock;"
                "l = RunLock(%r, 'dddddddddd').acquire(); print('held', flush=True);"
                "time.sleep(30)") % (str(REPO), str(job))], stdout=subprocess.PIPE, text=True)
            try:
                assert other.stdout.readline().strip() == "held"
                result = clean_stale(job, own_lock=mine)
            finally:
                other.kill()
                other.wait()
            assert mine.path.exists()                  # our own lock is untouched
        assert not stale_tmp.exists() and not stale_lock.exists()
        assert live_tmp.exists() and finished.exists() and held_tmp.exists()
        assert result.died == {"aaaaaaaaaa"}
        assert len(result.notes) == 2
        assert any(f"pid {dead}" in n and stale_tmp.name in n for n in result.notes)
        assert any("stale lock .lock-aaaaaaaaaa" in n for n in result.notes)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_free_space_check_names_the_folder(tmp_path):
    out = tmp_path / "runs" / "credit"           # need not exist yet
    free = check_free_space(out, 1)
    assert free > 0
    with pytest.raises(OutputError) as info:
        check_free_space(out, free + (1 << 40))
    assert str(out) in str(info.value) and "free" in str(info.value)


def test_run_size_estimate_from_the_last_run(tmp_path):
    job = tmp_path / "credit"
    assert estimate_run_bytes(job) == MIN_FREE_BYTES       # no run yet: the floor
    run = job / "20260101T000000Z-aaaaaaaaaa"
    run.mkdir(parents=True)
    (run / "big.bin").write_bytes(b"\0" * (40 << 20))
    assert estimate_run_bytes(job) == int(1.5 * (40 << 20))
    assert estimate_run_bytes(job, extra=1000) == int(1.5 * (40 << 20)) + 1000


def test_wait_workers_on_the_command_line(run_cli, bare_scheduler, tmp_path):
    t0 = time.monotonic()
    r = run_cli("run", "selfcheck", "--scheduler", bare_scheduler, "--wait-workers", "1",
                "--out", tmp_path / "runs", "--quiet", *SMALL)
    took = time.monotonic() - t0
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert bare_scheduler in line and "no workers" in line and "within 1 s" in line
    assert took < 15, took
    assert leftovers(tmp_path / "runs") == []


def test_config_directory_is_one_line(cli, tmp_path):
    r = cli("run", "selfcheck", "--config", tmp_path, "--out", tmp_path / "runs")
    assert r.code == 2
    line = _one_error_line(r.err)
    assert "--config" in line and "is a directory" in line


def test_locked_single_job_is_one_line(cli, tmp_path):
    from riskdask.config import load_config
    from riskdask.registry import get_job

    sets = ["n_samples=200000", "chunk_size=100000"]
    h = load_config("selfcheck", get_job("selfcheck").config, None, sets).hash
    out = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r);"
        "from riskdask.schedule import RunLock;"
        "l = RunLock(%r, %r).acquire(); print('held', flush=True); time.sleep(30)")
        % (str(REPO), str(out / "selfcheck"), h)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli("run", "selfcheck", "--out", out, *[x for s in sets for x in ("--set", s)])
    finally:
        holder.kill()
        holder.wait()
    assert r.code == 75
    line = _one_error_line(r.err)
    assert f"pid {holder.pid}" in line


@contextlib.contextmanager
def _small_disk(tmp_path, size: str):
    """A real, small file system: a tmpfs of ``size`` (needs root; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                       str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_names_the_file(tmp_path, local_client):
    """A real full file system (a 64 KiB tmpfs; needs root): the run fails with exit code 1 and
    the message names the file being written; nothing is left half-written."""
    from riskdask import run_job

    with _small_disk(tmp_path, "64k") as mnt:
        # pass the up-front estimate (MIN_FREE_BYTES is 32 MiB) only to hit the real limit
        import riskdask.schedule as sched

        floor = sched.MIN_FREE_BYTES
        sched.MIN_FREE_BYTES = 1
        try:
            with pytest.raises(OutputError) as info:
                run_job("selfcheck", overrides=["n_samples=200000", "chunk_size=100000",
                                                ],
                        client=local_client(2), out=mnt / "runs", checkpoint=False)
        finally:
            sched.MIN_FREE_BYTES = floor
        assert str(mnt / "runs" / "selfcheck") in str(info.value)
        assert "No space left on device" in str(info.value)
        assert leftovers(mnt / "runs") == []
        # and the check before computing refuses a folder without room for the estimate
        with pytest.raises(OutputError, match="not enough free space"):
            run_job("selfcheck", overrides=["n_samples=200000", "chunk_size=100000"],
                    client=local_client(2), out=mnt / "runs", checkpoint=False)


def test_losing_every_worker_mid_run_exit_1_checkpoints_kept(cli_cluster, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "riskdask", "run", "selfcheck", "--scheduler",
                             cli_cluster.address, "--wait-workers", "2", "--out", str(out),
                             "--quiet", "--set", "n_samples=1600000", "--set",
                             "chunk_size=100000", "--set", "jitter_ms=400"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = out / ".checkpoints" / "selfcheck"
    deadline = time.monotonic() + 120
    while not list(store.rglob("*.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    cli_cluster.kill_worker("worker-1")
    cli_cluster.kill_worker("worker-2")
    t0 = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 1, stderr
    line = _one_error_line(stderr)
    assert "no workers left for 2 s" in line and "run again to resume" in line
    assert took < 15, took
    assert list(store.rglob("*.ckpt"))                 # kept for the next run
    assert run_dirs(out, "selfcheck") == []


def test_losing_every_worker_during_the_final_reduce_is_cluster_lost(cli_cluster):
    """Every leaf is done, the last combine steps run: the workers die with the partials.
    The scheduler would recompute them once a worker comes back, so a plain gather of the
    roots waited for ever; the plan must stop with ClusterLost after the grace time."""
    from riskdask.engine import ClusterLost, Engine, map_reduce, plan_chunks
    from riskdask.selfcheck import merge_summaries, normal_chunk

    def slow_merge(a, b):  # a closure: pickled by value for the workers
        import time as t

        t.sleep(60)
        return merge_summaries(a, b)

    outcome: dict = {}
    with cli_cluster.client() as client:
        def plan():
            try:
                map_reduce(normal_chunk, plan_chunks(4, 1, 0), slow_merge,
                           engine=Engine(client, worker_grace=1.5), label="lastreduce")
            except BaseException as exc:  # noqa: BLE001 - looked at below
                outcome["exc"] = exc

        runner = threading.Thread(target=plan, daemon=True)
        runner.start()
        cli_cluster.wait_until("lastreduce-", 4, timeout=60)  # the 4 leaves (not combines)
        time.sleep(0.5)   # the plan is past its leaves, in the gather of the root
        assert runner.is_alive()
        cli_cluster.kill_worker("worker-1")
        cli_cluster.kill_worker("worker-2")
        t0 = time.monotonic()
        runner.join(timeout=30)
        took = time.monotonic() - t0
        assert not runner.is_alive(), "the gather of the root hangs after losing every worker"
    exc = outcome.get("exc")
    assert isinstance(exc, ClusterLost), repr(exc)
    assert "no workers left for 1.5 s" in str(exc) and "results still to come" in str(exc)
    assert took < 10, took


def test_quiet_hides_the_dashboard_port_warning(tmp_path):
    """With the dashboard port taken (by us, or by another cluster), ``--quiet`` prints
    nothing on a successful run: no 'Port 8787 is already in use' from Dask."""
    holder = socket.socket()
    try:
        holder.bind(("", 8787))
        holder.listen(1)
    except OSError:
        holder.close()
        holder = None                                # already taken by someone: same case
    try:
        r = subprocess.run([sys.executable, "-m", "riskdask", "run", "selfcheck", "--workers",
                            "1", "--out", str(tmp_path / "runs"), "--quiet", *SMALL], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    finally:
        if holder is not None:
            holder.close()
    assert r.returncode == 0, r.stderr
    assert "already in use" not in r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_disk_full_with_checkpoints_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """A 34 MiB tmpfs (needs root) passes the up-front check (32 MiB), then fills with the
    checkpoints of 60 chunks of 800 kB each: exit 1, one line naming the checkpoint file,
    no ``*.tmp-*`` file in the store, no run directory."""
    with _small_disk(tmp_path, "34m") as mnt:
        r = subprocess.run([sys.executable, "-m", "riskdask", "run", "selfcheck", "--out",
                            str(mnt / "runs"), "--workers", "2", "--quiet",
                            "--set", "n_samples=12000000", "--set", "chunk_size=200000",
                            "--set", "top_k=100000"],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
        assert r.returncode == 1, r.stderr[-3000:]
        line = _one_error_line(r.stderr)
        assert "cannot write checkpoint" in line and "No space left on device" in line
        assert str(mnt / "runs" / ".checkpoints") in line
        assert [p for p in mnt.rglob("*") if ".tmp-" in p.name] == []
        assert run_dirs(mnt / "runs", "selfcheck") == []


def test_the_free_space_check_counts_the_checkpoints(tmp_path):
    """The last run's checkpoints (its manifest's bytes_written) are counted up front: 1.5x
    of them, with the outputs where the store shares their disk."""
    from riskdask.schedule import check_run_space, estimate_checkpoint_bytes

    job_dir = tmp_path / "runs" / "credit"
    run = job_dir / "20260101T000000Z-0123456789"
    run.mkdir(parents=True)
    free = shutil.disk_usage(tmp_path).free
    (run / "manifest.json").write_text(json.dumps({"checkpoints": {"bytes_written": free}}))
    assert estimate_checkpoint_bytes(job_dir) == int(1.5 * free)
    check_run_space(job_dir, None)                      # no checkpoints: fits
    with pytest.raises(OutputError, match="outputs and checkpoints"):
        check_run_space(job_dir, tmp_path / "runs" / ".checkpoints")


def test_a_relative_out_folder_with_a_colon(tmp_path, cli, monkeypatch):
    """``--out a:b/runs`` is a folder, not a URL: the run writes its tables and history."""
    monkeypatch.chdir(tmp_path)
    r = cli("run", "selfcheck", "--out", "a:b/runs", "--workers", "1", "--quiet",
            "--set", "n_samples=100000", "--set", "chunk_size=50000")
    assert r.code == 0, r.err
    assert len(run_dirs(tmp_path / "a:b" / "runs", "selfcheck")) == 1
    r = cli("history", "selfcheck", "--out", "a:b/runs")
    assert r.code == 0 and len(r.out.strip().splitlines()) == 2, r.err


def test_an_http_server_at_scheduler_is_named_as_such(tmp_path, cli):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        r = cli("run", "selfcheck", "--scheduler", f"tcp://127.0.0.1:{port}",
                "--connect-timeout", "1", "--out", tmp_path / "runs")
        assert r.code == 2
        assert "HTTP server, not as a Dask scheduler" in _one_error_line(r.err)
    finally:
        server.kill()
        server.wait()
