"""Every cluster spec in cluster/ renders to what its deployment tool really takes.

No Slurm, PBS, Kubernetes or cloud account is needed: dask-jobqueue writes the real batch
script, the dask-kubernetes operator's own ``make_cluster_spec`` builds the DaskCluster
resource (validated against the operator's CRD schema), and the cloud constructor arguments
are bound to the real dask-cloudprovider class signatures. The SSH spec starts a real
SSHCluster against an sshd on 127.0.0.1 (see ``test_ssh_cluster_runs_selfcheck``).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port, read_summary, run_dirs
from riskdask import run_job
from riskdask.cluster import (SPEC_KINDS, GCPSpec, KubernetesSpec, PBSSpec, SlurmSpec,
                              load_spec)
from riskdask.errors import ConfigError

CLUSTER_DIR = REPO / "cluster"


def test_one_spec_file_per_kind_and_each_is_documented():
    kinds = {load_spec(p).kind for p in CLUSTER_DIR.glob("*.toml")}
    assert kinds == set(SPEC_KINDS)
    readme = (CLUSTER_DIR / "README.md").read_text()
    for path in CLUSTER_DIR.glob("*.toml"):
        assert f"cluster/{path.name}" in readme, f"{path.name} is not documented"


def test_unknown_key_in_a_spec_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('kind = "slurm"\ncores = 4\nmemory = "8GiB"\nwalltim = "01:00:00"\n')
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.key == "walltim" and "did you mean 'walltime'" in str(info.value)
    assert str(path) in str(info.value)


def _job_script(spec):
    cluster = spec.make_cluster()
    try:
        return cluster.job_script()
    finally:
        cluster.close()


SLURM = dict(kind="slurm", cores=6, processes=3, memory="12GiB", walltime="03:15:00",
             queue="long", account="acct-42", job_extra_directives=["--exclusive"],
             job_script_prologue=["module load python/3.11"], dashboard_address=":0")


def test_slurm_job_script_has_cores_memory_walltime_and_worker_command():
    script = _job_script(SlurmSpec(**SLURM))
    lines = script.splitlines()
    assert "#SBATCH --cpus-per-task=6" in lines
    assert "#SBATCH --mem=12G" in lines
    assert "#SBATCH -t 03:15:00" in lines
    assert "#SBATCH -p long" in lines and "#SBATCH -A acct-42" in lines
    assert "#SBATCH --exclusive" in lines
    [worker] = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert worker.startswith(sys.executable)
    # 3 worker processes share the 6 cores and 12 GiB of one job
    assert "--nworkers 3" in worker and "--nthreads 2" in worker
    assert "--memory-limit 4.00GiB" in worker
    assert lines.index("module load python/3.11") < lines.index(worker)


def test_pbs_job_script_has_cores_memory_walltime_and_worker_command():
    spec = PBSSpec(kind="pbs", cores=4, processes=1, memory="8GiB", walltime="00:45:00",
                   queue="workq", account="acct-42", job_extra_directives=["-l place=excl"],
                   dashboard_address=":0")
    lines = _job_script(spec).splitlines()
    assert "#PBS -l select=1:ncpus=4:mem=8192MB" in lines     # 8 GiB, in PBS units
    assert "#PBS -l walltime=00:45:00" in lines
    assert "#PBS -q workq" in lines and "#PBS -A acct-42" in lines
    assert "#PBS -l place=excl" in lines
    [worker] = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert "--nthreads 4" in worker and "--memory-limit 8.00GiB" in worker


def test_jobqueue_spec_from_the_shipped_file_renders():
    spec = load_spec(CLUSTER_DIR / "slurm.toml").model_copy(update={"dashboard_address": ":0"})
    script = _job_script(spec)
    assert f"#SBATCH --cpus-per-task={spec.cores}" in script
    assert f"#SBATCH -t {spec.walltime}" in script


def _strict(schema):
    """The CRD schema with unknown keys forbidden wherever it lists the allowed ones.

    Kubernetes would silently prune a misspelt field; here it fails the test instead.
    """
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _daskcluster_schema():
    import dask_kubernetes

    crd_file = (Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
                / "dask-kubernetes-operator" / "crds" / "daskcluster.yaml")
    crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    # apiVersion/kind/metadata are implicit for every Kubernetes object; `spec` is strict
    schema = {**schema, "properties": {**schema["properties"],
                                       "spec": _strict(schema["properties"]["spec"])}}
    return crd["spec"]["group"], crd["spec"]["names"]["kind"], schema


def test_kubernetes_spec_renders_a_valid_daskcluster_manifest():
    import jsonschema

    spec = load_spec(CLUSTER_DIR / "kubernetes.toml")
    manifest = spec.manifest()
    group, kind, schema = _daskcluster_schema()
    assert manifest["apiVersion"] == f"{group}/v1" and manifest["kind"] == kind
    assert manifest["metadata"]["name"] == "riskdask"
    jsonschema.validate(manifest, schema)          # the operator's own CRD schema

    worker = manifest["spec"]["worker"]
    assert worker["replicas"] == spec.n_workers == 4
    [container] = worker["spec"]["containers"]
    assert container["image"] == spec.image
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"},
                                      "limits": {"cpu": "1", "memory": "4Gi"}}
    assert {"name": "MALLOC_TRIM_THRESHOLD_", "value": "65536"} in container["env"]
    assert container["args"][:2] == ["dask", "worker"]          # commands the image has
    [scheduler] = manifest["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"] and scheduler["image"] == spec.image
    # the image installs riskdask like this venv does: the command must exist here too
    assert (Path(sys.executable).parent / container["args"][0]).exists()
    assert manifest["spec"]["idleTimeout"] == 600
    # and a broken manifest is caught by the same schema (the check can fail)
    bad = {**manifest, "spec": {**manifest["spec"], "worker": {**worker, "replicas": "four"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_kubernetes_name_must_be_a_dns_label():
    with pytest.raises(Exception, match="name"):
        KubernetesSpec(kind="kubernetes", name="Risk_Dask", image="x")


def _accepted(cls) -> set[str]:
    """Named constructor parameters of ``cls`` and of the VMCluster base it forwards to."""
    from dask_cloudprovider.generic.vmcluster import VMCluster

    names = set()
    for c in (cls, VMCluster):
        names |= {p.name for p in inspect.signature(c.__init__).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    return names


def test_ec2_spec_maps_to_ec2cluster_arguments():
    spec = load_spec(CLUSTER_DIR / "ec2.toml")
    kwargs = spec.cluster_kwargs()
    assert kwargs == {
        "n_workers": 8, "docker_image": "registry.example.com/riskdask:0.1.0",
        "worker_options": {"nthreads": 1}, "auto_shutdown": True, "debug": False,
        "region": "eu-west-1", "instance_type": "c6i.xlarge",
        "scheduler_instance_type": "t3.large", "subnet_id": "subnet-0123456789abcdef0",
        "security_groups": ["sg-0123456789abcdef0"], "key_name": "riskdask",
        "filesystem_size": 40, "spot": False, "instance_tags": {"project": "riskdask"},
    }
    cls = spec.cluster_class()
    assert cls.__name__ == "EC2Cluster" and cls.__module__.startswith("dask_cloudprovider.aws")
    assert set(kwargs) <= _accepted(cls)            # every argument is a real parameter


def test_gcp_spec_maps_to_gcpcluster_arguments():
    spec = load_spec(CLUSTER_DIR / "gcp.toml")
    kwargs = spec.cluster_kwargs()
    assert kwargs == {
        "n_workers": 8, "docker_image": "registry.example.com/riskdask:0.1.0",
        "worker_options": {"nthreads": 1}, "auto_shutdown": True, "debug": False,
        "projectid": "riskdask-prod", "zone": "europe-west1-b", "machine_type": "n2-standard-4",
        "scheduler_machine_type": "e2-standard-2", "filesystem_size": 50,
        "preemptible": False, "instance_labels": {"project": "riskdask"},
    }
    cls = spec.cluster_class()
    assert cls.__name__ == "GCPCluster"
    assert set(kwargs) <= _accepted(cls)


def test_cloud_spec_passes_tls_files_as_a_security_object(tmp_path):
    from distributed import Security

    for name in ("ca.pem", "node.pem", "node.key"):
        (tmp_path / name).write_text("placeholder, only the paths are read here\n")
    spec = GCPSpec(kind="gcp", projectid="p", zone="z", n_workers=1, docker_image="img",
                   security={"ca_file": tmp_path / "ca.pem", "cert": tmp_path / "node.pem",
                             "key": tmp_path / "node.key"})
    sec = spec.cluster_kwargs()["security"]
    assert isinstance(sec, Security)
    assert sec.tls_ca_file == str(tmp_path / "ca.pem")
    assert sec.tls_worker_cert == sec.tls_scheduler_cert == str(tmp_path / "node.pem")


@pytest.mark.parametrize("spec_file, module, extra", [
    ("slurm.toml", "dask_jobqueue", "jobqueue"),
    ("kubernetes.toml", "dask_kubernetes.operator", "kubernetes"),
    ("ec2.toml", "dask_cloudprovider.aws", "cloud"),
    ("ssh.toml", "asyncssh", "ssh"),
])
def test_missing_optional_package_names_the_extra(spec_file, module, extra, monkeypatch):
    # sys.modules[name] = None is how Python itself marks a module as not importable
    monkeypatch.setitem(sys.modules, module, None)
    spec = load_spec(CLUSTER_DIR / spec_file)
    with pytest.raises(ConfigError) as info:
        spec.build()
    assert f"pip install 'riskdask[{extra}]'" in str(info.value)
    assert info.value.key == "kind" and spec_file in str(info.value)


def test_optional_packages_are_not_imported_for_local_runs():
    code = ("import sys, riskdask.cli, riskdask.api, riskdask.cluster; "
            "bad = [m for m in ('dask_jobqueue', 'dask_kubernetes', 'dask_cloudprovider', "
            "'asyncssh') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- SSH: a real SSHCluster through a real sshd on 127.0.0.1 ------------------------------
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path):
    """An sshd in the foreground on a free 127.0.0.1 port, with test-made host and user keys.

    It accepts only the test's key, for the current user, and is killed afterwards.
    """
    import asyncssh

    assert Path(SSHD).exists(), ("sshd is missing: `make test` installs Debian's "
                                 "openssh-server (apt-get install openssh-server)")
    d = tmp_path / "ssh"
    d.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(d / "host_key")
    os.chmod(d / "host_key", 0o600)
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key.write_private_key(d / "id_ed25519")
    os.chmod(d / "id_ed25519", 0o600)
    (d / "authorized_keys").write_bytes(user_key.export_public_key())
    port = free_port()
    (d / "known_hosts").write_bytes(b"[127.0.0.1]:%d " % port + host_key.export_public_key())
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)   # privilege-separation dir sshd wants as root
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not start listening"
                time.sleep(0.1)
        yield {"port": port, "dir": d}
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def test_ssh_cluster_runs_selfcheck(sshd, local_client, tmp_path):
    import getpass

    d = sshd["dir"]
    spec = tmp_path / "ssh.toml"
    spec.write_text(f"""\
kind = "ssh"
hosts = ["127.0.0.1", "127.0.0.1"]
workers_per_host = 2
remote_python = "{sys.executable}"
scheduler_port = 0
dashboard_address = ":0"
local_directory = "{tmp_path / 'dask-workers'}"

[connect]
username = "{getpass.getuser()}"
port = {sshd['port']}
client_keys = ["{d / 'id_ed25519'}"]
known_hosts = "{d / 'known_hosts'}"
""")
    args = ["n_samples=400000", "chunk_size=100000"]
    out = tmp_path / "runs"
    result = run_job("selfcheck", overrides=args, cluster=spec, out=out)
    assert result.manifest["cluster"]["n_workers"] == 2          # started over SSH
    accepted = (d / "sshd.log").read_text()
    assert re.search(r"Accepted publickey for \S+ from 127\.0\.0\.1", accepted), accepted
    reference = run_job("selfcheck", overrides=args, client=local_client(1),
                        out=tmp_path / "ref")
    [run] = run_dirs(out, "selfcheck")
    assert read_summary(run) == reference.summary


_BATCH_DEFAULTS_PROBE = """
import dask, json
from distributed import Client
from riskdask.cluster import LocalSpec
cluster = LocalSpec(n_workers=1, dashboard_address=":0").build()
with Client(cluster) as client:
    keys = ["distributed.worker.profile.enabled", "distributed.admin.tick.interval"]
    seen = client.run(lambda: [dask.config.get(k) for k in keys]
                      + [__import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")])
cluster.close()
print(json.dumps(list(seen.values())[0]))
"""


@pytest.mark.parametrize("env, expected", [
    ({}, [False, "1s", None]),                                  # riskdask's batch defaults
    ({"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "True"}, [True, "1s", None]),  # user's wins
    ({"MALLOC_TRIM_THRESHOLD_": "65536"}, [False, "1s", "65536"]),  # exported: inherited
])
def test_local_workers_get_batch_defaults_unless_the_user_set_them(env, expected):
    """Dask's 10 ms profiler and 20 ms ticks cost an idle 2-worker cluster ~7% of 2 cores, and
    its MALLOC_TRIM_THRESHOLD_ made the credit kernel 40% slower; riskdask's local workers run
    without them, but a value the user configured is kept."""
    import json

    # Clusters started earlier in this pytest process exported Dask's MALLOC_TRIM_THRESHOLD_
    # into os.environ (the nanny does that to its own process); a fresh shell has none.
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", _BATCH_DEFAULTS_PROBE], capture_output=True,
                         text=True, timeout=120, env={**clean, **env}, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
