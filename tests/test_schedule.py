"""Scheduled runs: the run lock, the `latest` pointer, `--keep N`, and the deploy/ files."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, read_summary, run_dirs
from riskdask import run_job
from riskdask.schedule import EXIT_LOCKED, RunLock, RunLocked

DEPLOY = REPO / "deploy"
SLOW = ["--set", "n_samples=1200000", "--set", "chunk_size=200000", "--set", "jitter_ms=1500"]


def _lock_files(out: Path, job: str) -> list[Path]:
    return sorted((out / job).glob(".lock-*")) if (out / job).exists() else []


def test_overlapping_runs_second_refused_first_completes_latest_points_to_it(
        run_cli, local_client, tmp_path):
    out = tmp_path / "runs"
    first = subprocess.Popen([sys.executable, "-m", "riskdask", "run", "selfcheck", "--workers",
                              "1", "--out", str(out), "--quiet", *SLOW], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _lock_files(out, "selfcheck"):          # the first run holds its lock
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)

    t0 = time.monotonic()
    second = run_cli("run", "selfcheck", "--workers", "1", "--out", out, "--quiet", *SLOW)
    refused_in = time.monotonic() - t0
    assert second.returncode == EXIT_LOCKED == 75
    assert "another run of this job and config is in progress" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.poll() is None, "the runs did not overlap; the test proves nothing"

    # another config of the same job is not blocked (the lock is per job *and* config)
    other = run_job("selfcheck", overrides=["n_samples=200000", "chunk_size=100000"],
                    client=local_client(1), out=out)
    assert run_dirs(out, "selfcheck") == [other.run_dir]   # the first is still at work

    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    runs = run_dirs(out, "selfcheck")
    assert len(runs) == 2 and other.run_dir in runs
    [mine] = [r for r in runs if r != other.run_dir]
    assert f"report: {mine / 'report.html'}" in stdout
    latest = out / "selfcheck" / "latest"
    assert latest.is_symlink() and latest.resolve() == mine.resolve()
    assert read_summary(latest)["n"] == 1_200_000
    assert _lock_files(out, "selfcheck") == []         # released and removed
    assert refused_in < 30                             # refused at once, no cluster started


def _cli_run(cli, address: str, out: Path, *extra: str):
    res = cli("run", "selfcheck", "--scheduler", address, "--out", out, "--quiet",
              "--set", "n_samples=200000", "--set", "chunk_size=100000", *extra)
    assert res.code == 0, res.err
    [report] = re.findall(r"report: (\S+)", res.out)
    return Path(report).parent


def test_keep_two_after_three_runs(cli, local_client, tmp_path):
    address = local_client(1).scheduler.address
    out = tmp_path / "runs"
    # a run still in progress elsewhere has a hidden temporary directory: never touched
    # (its process is alive: this one; a dead one's would be cleaned up, see test_failures)
    in_progress = out / "selfcheck" / f".tmp-20990101T000000Z-0123456789-{os.getpid()}"
    in_progress.mkdir(parents=True)
    (in_progress / "manifest.json").write_text("{}")

    made = [_cli_run(cli, address, out, "--keep", "2") for _ in range(3)]
    assert len(set(made)) == 3
    assert run_dirs(out, "selfcheck") == sorted(made[1:])      # the two newest remain
    assert not made[0].exists()
    assert (out / "selfcheck" / "latest").resolve() == made[2].resolve()
    assert (in_progress / "manifest.json").exists()

    # --keep 1 keeps exactly the run just written
    newest = _cli_run(cli, address, out, "--keep", "1")
    assert run_dirs(out, "selfcheck") == [newest]


def test_keep_must_be_positive(cli, tmp_path):
    res = cli("run", "selfcheck", "--keep", "0", "--out", tmp_path)
    assert res.code == 2 and "--keep" in res.err
    assert not any(tmp_path.iterdir())


def test_failed_run_releases_lock_and_moves_no_pointer(local_client, tmp_path):
    out = tmp_path / "runs"
    good = run_job("selfcheck", overrides=["n_samples=200000", "chunk_size=100000"],
                   client=local_client(1), out=out)

    def lost_cluster():
        raise OSError("the cluster went away")

    with pytest.raises(OSError, match="went away"):
        run_job("selfcheck", overrides=["n_samples=300000", "chunk_size=100000"],
                client_provider=lost_cluster, out=out)
    assert run_dirs(out, "selfcheck") == [good.run_dir]
    assert (out / "selfcheck" / "latest").resolve() == good.run_dir.resolve()
    assert _lock_files(out, "selfcheck") == []
    assert not [p for p in (out / "selfcheck").iterdir() if p.name.startswith(".tmp-")]


HOLDER = """
import sys, time
from riskdask.schedule import RunLock
RunLock(sys.argv[1], "abc123").acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_lock_of_a_killed_run_is_not_stale(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} since"):
            RunLock(tmp_path, "abc123").acquire()
        with RunLock(tmp_path, "other-config"):       # other configs go ahead
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)          # the run dies without cleaning up
        holder.wait(timeout=30)
    with RunLock(tmp_path, "abc123") as lock:          # the kernel released its lock
        assert lock.path.read_text().startswith(f"pid {os.getpid()} ")


# -- deploy/: cron, systemd, Kubernetes ------------------------------------------------------
def _parse_riskdask_run(argv: list[str]):
    """Parse ``riskdask run ...`` with the real CLI definition; return the run context."""
    from riskdask.cli import cli

    assert Path(argv[0]).name == "riskdask" and argv[1] == "run", argv
    group_ctx = cli.make_context("riskdask", list(argv[1:]), resilient_parsing=False)
    name, cmd, args = cli.resolve_command(group_ctx, list(argv[1:]))
    return cmd.make_context(name, args, parent=group_ctx)


def test_cron_line_is_a_valid_riskdask_run():
    lines = [ln for ln in (DEPLOY / "cron" / "riskdask.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    [line] = lines
    fields = line.split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in (minute, hour, dom, month, dow))
    assert user == "riskdask"
    run = command.split("&&", 1)[1].split(">>", 1)[0]
    ctx = _parse_riskdask_run(shlex.split(run))
    assert ctx.params["keep"] == 14 and ctx.params["quiet"] and ctx.params["job_names"] == ("all",)
    assert (REPO / ctx.params["cluster_spec"]).is_file()
    assert (DEPLOY / "README.md").read_text().count(line) == 1      # documented verbatim


def test_systemd_service_and_timer():
    service = (DEPLOY / "systemd" / "riskdask@.service").read_text()
    timer = (DEPLOY / "systemd" / "riskdask@.timer").read_text()
    assert re.search(r"^Type=oneshot$", service, re.M)
    [exec_start] = re.findall(r"^ExecStart=(.+)$", service, re.M)
    ctx = _parse_riskdask_run(shlex.split(exec_start.replace("%i", "credit")))
    assert ctx.params["job_names"] == ("credit",) and ctx.params["keep"] == 14
    assert re.search(r"^OnCalendar=\S", timer, re.M)
    assert re.search(r"^Persistent=true$", timer, re.M)
    assert re.search(r"^WantedBy=timers.target$", timer, re.M)


def test_kubernetes_cronjob_forbids_concurrency():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()))
    [cron] = [d for d in docs if d["kind"] == "CronJob"]
    [pvc] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    ctx = _parse_riskdask_run(container["command"] + container["args"])
    out = ctx.params["out"]
    assert any(m["mountPath"] == out for m in container["volumeMounts"])
    [vol] = pod["volumes"]
    assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # the manifest deserialises into the official Kubernetes client models
    from kubernetes.client import ApiClient

    # (the name-mangled method is the dict -> model step; its public wrapper wants an HTTP
    # response and changed signature between client versions)
    model = ApiClient()._ApiClient__deserialize(json.loads(json.dumps(cron)), "V1CronJob")
    assert model.spec.concurrency_policy == "Forbid"
    assert model.spec.job_template.spec.template.spec.containers[0].args == container["args"]


def test_exit_codes_are_documented():
    readme = (DEPLOY / "README.md").read_text()
    for code in (0, 1, 2, EXIT_LOCKED, 130):
        assert re.search(rf"^\| {code} \|", readme, re.M), code


def test_cli_skips_a_locked_job_with_exit_75(cli, local_client, tmp_path):
    from riskdask.api import validate_job

    sets = ["n_samples=200000", "chunk_size=100000"]
    config_hash = validate_job("selfcheck", overrides=sets)["config_hash"]
    with RunLock(tmp_path / "selfcheck", config_hash):          # a run of this config is going
        res = cli("run", "selfcheck", "--scheduler", local_client(1).scheduler.address,
                  "--out", tmp_path, *[x for s in sets for x in ("--set", s)])
    assert res.code == EXIT_LOCKED
    # one job: one line, naming the holder (`run all` says which jobs it skipped)
    [line] = [ln for ln in res.err.strip().splitlines() if ln.startswith("locked:")]
    assert f"pid {os.getpid()}" in line and "another run of this job and config" in line
    assert not [ln for ln in res.err.splitlines() if ln.startswith("skipped")]
    assert run_dirs(tmp_path, "selfcheck") == []
