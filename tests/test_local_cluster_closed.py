"""The local cluster riskdask starts is closed to other processes of the machine: its scheduler
and workers speak TLS with certificates only this process holds, its dashboard listens on
loopback only, and a script fed on standard input can start it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from riskdask.cluster import LocalSpec, connect

#: What another local user's process tries: connect and run code on the workers.
INTRUDER = textwrap.dedent("""
    import sys
    from distributed import Client
    from distributed.security import Security
    # over TLS, with a CA and a certificate of its own: what an attacker can make
    security = Security.temporary() if sys.argv[1].startswith("tls://") else None
    try:
        with Client(sys.argv[1], timeout=4, security=security) as c:
            print("RAN", c.run(lambda: "owned"))
    except Exception as exc:
        print("REFUSED", type(exc).__name__, str(exc)[:200].replace(chr(10), " "))
""")


def _try(address: str) -> str:
    proc = subprocess.run([sys.executable, "-c", INTRUDER, address], capture_output=True,
                          text=True, timeout=120)
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]


def test_a_second_process_without_the_credentials_cannot_submit():
    with connect(n_workers=1, quiet=True) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.run(lambda: "mine")            # the owner's client works
        worker = next(iter(client.scheduler_info()["workers"]))
        for target in (address, address.replace("tls://", "tcp://"), worker):
            outcome = _try(target)
            assert outcome.startswith("REFUSED"), (target, outcome)


def test_the_dashboard_listens_on_loopback_only():
    assert LocalSpec().dashboard_address.startswith("127.0.0.1:")
    with connect(n_workers=1, quiet=True) as client:
        link = client.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        server = client.cluster.scheduler.http_server
        hosts = {sock.getsockname()[0] for sock in server._sockets.values()}
        assert hosts == {"127.0.0.1"}, hosts


def test_run_job_from_a_script_on_standard_input(tmp_path):
    """``python - < script`` (``__main__.__file__`` is ``<stdin>``): spawned workers used to
    fail with "Nanny failed to start"."""
    script = ("from riskdask import run_job\n"
              f"r = run_job('selfcheck', overrides=['n_samples=100000', 'chunk_size=50000'],"
              f" n_workers=1, out={str(tmp_path / 'runs')!r})\n"
              "print('OK', r.summary['n'])\n")
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "OK 100000" in proc.stdout, proc.stderr[-2000:]
