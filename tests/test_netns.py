"""A multi-host cluster on one machine: scheduler, two workers and the client each in a Linux
network namespace of its own, with its own non-loopback address on a private veth bridge, TLS
on; a job's result equals the local one.

The bridge lives in a namespace of its own too, so nothing is added to the machine's own
network: every address used (10.213.N.0/24) exists only inside these namespaces, and the
namespaces -- with their veth pairs and the bridge -- are deleted afterwards, also when the
test fails. Needs root and ``ip netns`` (iproute2); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, read_summary, run_dirs
from riskdask import run_job
from test_tls import _make_ca, _write

IP = shutil.which("ip")
ARGS = ["n_samples=600000", "chunk_size=100000"]
NODES = ("sched", "w1", "w2", "client")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if IP is None:
        return "needs the `ip` command (apt-get install iproute2)"
    probe = f"rdprobe{os.getpid() % 100000}"
    r = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"`ip netns add` is not allowed here: {r.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = [IP, *(("-n", ns) if ns else ()), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@contextlib.contextmanager
def private_network(tag: str, subnet: str):
    """Namespaces ``<tag>-<node>`` and ``<tag>-br`` (the bridge); yields {node: (ns, addr)}."""
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    names = {node: f"{tag}-{node}" for node in NODES}
    bridge_ns = f"{tag}-br"
    created: list[str] = []
    try:
        for ns in (bridge_ns, *names.values()):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", "br0", "type", "bridge", ns=bridge_ns)
        _ip("link", "set", "br0", "up", ns=bridge_ns)
        nodes = {}
        for i, (node, ns) in enumerate(names.items()):
            # both ends are made inside the bridge namespace, then one end moves to the node:
            # no interface ever appears in the machine's own namespace
            _ip("link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", ns=bridge_ns)
            _ip("link", "set", "eth0", "netns", ns, ns=bridge_ns)
            _ip("link", "set", f"v{i}", "master", "br0", ns=bridge_ns)
            _ip("link", "set", f"v{i}", "up", ns=bridge_ns)
            addr = str(hosts[i])
            _ip("addr", "add", f"{addr}/{net.prefixlen}", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            nodes[node] = (ns, addr)
        yield nodes
    finally:
        for ns in reversed(created):
            subprocess.run([IP, "netns", "del", ns], capture_output=True)


def _node_cert(ca_key, ca_cert, addrs: list[str]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riskdask node")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addrs]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _in_ns(ns: str, args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([IP, "netns", "exec", ns, *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})


def test_scheduler_and_workers_in_separate_namespaces_over_tls(local_client, tmp_path):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tag = f"rd{os.getpid() % 100000}"
    subnet = f"10.213.{os.getpid() % 250}.0/24"
    procs: list[subprocess.Popen] = []
    with private_network(tag, subnet) as nodes:
        ca_key, ca_cert = _make_ca("riskdask netns test CA")
        ca_path, _ = _write(tmp_path, "ca", ca_key, ca_cert)
        key, cert = _node_cert(ca_key, ca_cert, [a for _, a in nodes.values()])
        cert_path, key_path = _write(tmp_path, "node", key, cert)
        tls = ["--tls-ca-file", str(ca_path), "--tls-cert", str(cert_path),
               "--tls-key", str(key_path)]
        sched_ns, sched_addr = nodes["sched"]
        address = f"tls://{sched_addr}:8786"
        try:
            procs.append(_in_ns(sched_ns, [str(BIN / "dask"), "scheduler", "--protocol", "tls",
                                           "--host", sched_addr, "--port", "8786",
                                           "--no-dashboard", *tls], tmp_path / "sched.log"))
            for w in ("w1", "w2"):
                ns, addr = nodes[w]
                procs.append(_in_ns(ns, [str(BIN / "dask"), "worker", address, "--host", addr,
                                         "--nthreads", "1", "--nworkers", "1", "--name", w,
                                         "--no-dashboard", "--memory-limit", "2GiB",
                                         "--local-directory", str(tmp_path / w), *tls],
                                    tmp_path / f"{w}.log"))
            client_ns, client_addr = nodes["client"]
            out = tmp_path / "runs"
            cmd = [sys.executable, "-m", "riskdask", "run", "selfcheck", "--scheduler", address,
                   "--connect-timeout", "30", "--tls-ca", str(ca_path), "--tls-cert",
                   str(cert_path), "--tls-key", str(key_path), "--out", str(out), "--quiet",
                   *[x for a in ARGS for x in ("--set", a)]]
            # the scheduler may still be starting: the client retries until it answers
            deadline = time.monotonic() + 120
            while True:
                r = subprocess.run([IP, "netns", "exec", client_ns, *cmd], capture_output=True,
                                   text=True, cwd=REPO, timeout=300,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
                if (r.returncode == 0 or time.monotonic() > deadline
                        or "cannot reach the scheduler" not in r.stderr
                        or procs[0].poll() is not None):
                    break
                time.sleep(1)
            logs = {p.name: p.read_text(errors="replace")[-1500:]
                    for p in tmp_path.glob("*.log")}
            assert r.returncode == 0, (r.stderr, logs)
            [run] = run_dirs(out, "selfcheck")
            manifest = json.loads((run / "manifest.json").read_text())
            assert manifest["cluster"]["scheduler"] == address
            assert manifest["cluster"]["n_workers"] == 2
            workers = " ".join(manifest["cluster"]["worker_names"])
            assert nodes["w1"][1] in workers and nodes["w2"][1] in workers
            assert "127.0.0.1" not in workers
            # nothing of the private network was added to the machine's own namespace
            # (checked by listing its addresses; no traffic is sent from it)
            own = subprocess.run([IP, "-o", "addr"], capture_output=True, text=True).stdout
            assert subnet.rsplit(".", 1)[0] + "." not in own
            reference = run_job("selfcheck", overrides=ARGS, client=local_client(2),
                                out=tmp_path / "ref", checkpoint=False)
            assert read_summary(run) == reference.summary
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
    left = subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in left
