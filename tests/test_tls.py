"""TLS: a `dask scheduler` and two `dask worker` processes with test-made certificates.

A self-signed CA and a node certificate are generated here with ``cryptography``; the cluster
is started exactly as cluster/README.md documents. A job run through it gives the same result
as on a plain local cluster, and clients without the right certificate are refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from pathlib import Path

import pytest

from conftest import read_summary, run_dirs, start_cli_cluster
from riskdask import run_job
from riskdask.cluster import SecuritySpec, SlurmSpec, load_spec

ARGS = ["n_samples=600000", "chunk_size=100000"]


def _make_ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_node(ca_key, ca_cert, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(folder: Path, stem: str, key, cert) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """Our CA + node certificate, and a stranger's CA + certificate (not trusted by us)."""
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _make_ca("riskdask test CA")
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    node_cert, node_key = _write(d, "node", *_make_node(ca_key, ca_cert, "riskdask node"))
    other_ca_key, other_ca_cert = _make_ca("some other CA")
    (d / "other-ca.pem").write_bytes(other_ca_cert.public_bytes(serialization.Encoding.PEM))
    other_cert, other_key = _write(d, "other", *_make_node(other_ca_key, other_ca_cert, "intruder"))
    return {"dir": d, "ca": d / "ca.pem", "cert": node_cert, "key": node_key,
            "other_ca": d / "other-ca.pem", "other_cert": other_cert, "other_key": other_key}


def _tls_flags(tls) -> list[str]:
    return ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
            "--tls-key", str(tls["key"])]


@pytest.fixture(scope="module")
def tls_cluster(tls, tmp_path_factory):
    """`dask scheduler --protocol tls` + two `dask worker` with the documented TLS flags."""
    security = SecuritySpec(ca_file=tls["ca"], cert=tls["cert"], key=tls["key"]).to_security()
    with start_cli_cluster(tmp_path_factory.mktemp("tls-cluster"), protocol="tls",
                           flags=tuple(_tls_flags(tls)), security=security) as cc:
        yield cc


@pytest.fixture(scope="module")
def reference(local_client, tmp_path_factory):
    """The same job on a plain (tcp://) local cluster."""
    return run_job("selfcheck", overrides=ARGS, client=local_client(1),
                   out=tmp_path_factory.mktemp("ref")).summary


def _selfcheck_over_tls(run_cli, tls, out, reference, *where) -> dict:
    """Run selfcheck with the TLS files on the CLI; same summary as the plain run; the
    manifest's cluster description."""
    cmd = ["run", "selfcheck", *where, "--tls-ca", tls["ca"], "--tls-cert", tls["cert"],
           "--tls-key", tls["key"], "--out", out, "--quiet"]
    for a in ARGS:
        cmd += ["--set", a]
    proc = run_cli(*cmd)
    assert proc.returncode == 0, proc.stderr
    [run] = run_dirs(out, "selfcheck")
    assert read_summary(run) == reference
    return json.loads((run / "manifest.json").read_text())["cluster"]


def test_job_through_tls_cluster_matches_plain_run(tls, tls_cluster, reference, run_cli,
                                                   tmp_path):
    cluster = _selfcheck_over_tls(run_cli, tls, tmp_path / "runs", reference,
                                  "--scheduler", tls_cluster.address)
    assert cluster["scheduler"] == tls_cluster.address and cluster["n_workers"] == 2


def test_spec_file_security_section_with_relative_paths(tls, tls_cluster, reference, tmp_path):
    spec = tls["dir"] / "address-tls.toml"    # beside the certificates: relative paths
    spec.write_text(f'kind = "address"\naddress = "{tls_cluster.address}"\n\n[security]\n'
                    'ca_file = "ca.pem"\ncert = "node.pem"\nkey = "node.key"\n')
    result = run_job("selfcheck", overrides=ARGS, cluster=spec, out=tmp_path / "runs")
    assert result.summary == reference
    assert load_spec(spec).security.ca_file == tls["ca"]


def _refused(address: str, security) -> BaseException:
    from distributed import Client

    t0 = time.monotonic()
    with pytest.raises((OSError, TimeoutError)) as info:
        Client(address, timeout=3, security=security)
    assert time.monotonic() - t0 < 30
    return info.value


def _no_client_certificate_refused(address: str, ca_file: Path) -> None:
    import socket
    import ssl

    host, port = address.removeprefix("tls://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="(?i)certificate required"):
            with ctx.wrap_socket(raw, server_hostname=host) as conn:
                conn.sendall(b"\0" * 8)     # TLS 1.3 reports the missing certificate on use
                conn.recv(1)


def test_clients_without_the_certificate_are_refused(tls, tls_cluster, run_cli, tmp_path):
    from distributed import Security

    # 1. trusts the scheduler's CA but presents no certificate of its own: the scheduler
    #    ends the TLS session (Dask's client would not even try without a certificate)
    _no_client_certificate_refused(tls_cluster.address, tls["ca"])
    # 2. a certificate signed by another CA
    _refused(tls_cluster.address, Security(tls_ca_file=str(tls["ca"]),
                                           tls_client_cert=str(tls["other_cert"]),
                                           tls_client_key=str(tls["other_key"]),
                                           require_encryption=True))
    # 3. plain TCP to the TLS port
    _refused(tls_cluster.address.replace("tls://", "tcp://"), None)
    # 4. the CLI with no TLS options: a clear message, exit 2, nothing written
    out = tmp_path / "runs"
    proc = run_cli("run", "selfcheck", "--scheduler", tls_cluster.address, "--out", out,
                   "--set", ARGS[0], "--quiet")
    assert proc.returncode == 2
    assert "--tls-ca" in proc.stderr and tls_cluster.address in proc.stderr
    assert not out.exists() or not any(out.rglob("*"))
    # ... while the cluster itself is fine and still serves a client with the certificate
    good = SecuritySpec(ca_file=tls["ca"], cert=tls["cert"], key=tls["key"]).to_security()
    from distributed import Client

    with Client(tls_cluster.address, timeout=10, security=good) as c:
        assert len(c.scheduler_info()["workers"]) == 2


def test_cli_local_cluster_speaks_tls(tls, reference, run_cli, tmp_path):
    cluster = _selfcheck_over_tls(run_cli, tls, tmp_path / "runs", reference, "--workers", "2")
    assert cluster["scheduler"].startswith("tls://127.0.0.1:")


def test_batch_job_script_carries_the_tls_files(tls):
    spec = SlurmSpec(kind="slurm", cores=2, memory="4GiB", dashboard_address=":0",
                     security={"ca_file": tls["ca"], "cert": tls["cert"], "key": tls["key"]})
    cluster = spec.make_cluster()
    try:
        assert cluster.scheduler_address.startswith("tls://")
        script = cluster.job_script()
    finally:
        cluster.close()
    [worker] = [ln for ln in script.splitlines() if "dask_worker" in ln]
    assert " tls://" in worker
    for flag, path in (("--tls-ca-file", tls["ca"]), ("--tls-cert", tls["cert"]),
                       ("--tls-key", tls["key"])):
        assert f"{flag} {path}" in worker


def test_missing_tls_file_names_the_key(tmp_path):
    from riskdask.errors import ConfigError

    spec = tmp_path / "local.toml"
    spec.write_text('kind = "local"\n[security]\nca_file = "nope.pem"\ncert = "node.pem"\n')
    with pytest.raises(ConfigError) as info:
        load_spec(spec).build()
    assert info.value.key == "security.ca_file" and "nope.pem" in str(info.value)
