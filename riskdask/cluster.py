"""Getting workers: a local cluster by default, an existing scheduler, or a spec file.

``connect()`` is a context manager that yields a :class:`distributed.Client` and always closes
it -- and shuts a cluster it started down -- even when the job fails.

Spec files live in ``cluster/`` (see ``cluster/README.md``, which says how to start each). Each
is TOML with a ``kind`` key:

- ``local``: a :class:`distributed.LocalCluster` of processes (the default when no option is given);
- ``address``: connect to a running scheduler (same as ``--scheduler``);
- ``ssh``: :func:`distributed.deploy.ssh.SSHCluster` -- a scheduler and workers started over SSH;
- ``slurm``, ``pbs``: batch jobs through ``dask-jobqueue`` (``SLURMCluster``, ``PBSCluster``);
- ``kubernetes``: a ``DaskCluster`` resource for the dask-kubernetes operator (``KubeCluster``);
- ``ec2``, ``gcp``: cloud VMs through ``dask-cloudprovider`` (``EC2Cluster``, ``GCPCluster``).

Optional packages (``dask-jobqueue``, ``dask-kubernetes``, ``dask-cloudprovider``, ``asyncssh``)
are imported only when their spec is built; when one is missing the error names the pip extra
to install. A ``[security]`` section (CA, certificate, key) turns on TLS for the kinds that
take it: the client, the local cluster and the cluster it builds then all use ``tls://``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .config import read_toml, validate_config
from .errors import ClusterUnavailable, ConfigError

__all__ = ["SecuritySpec", "LocalSpec", "AddressSpec", "SSHSpec", "SlurmSpec", "PBSSpec",
           "KubernetesSpec", "EC2Spec", "GCPSpec", "SPEC_KINDS", "load_spec", "connect",
           "describe_cluster", "default_n_workers", "BATCH_DASK_DEFAULTS",
           "use_batch_dask_defaults", "deferred_interrupts", "CONNECT_TIMEOUT", "WAIT_WORKERS"]

#: Seconds to wait for a scheduler to accept the connection (``--connect-timeout``). A refused
#: or unreachable address fails after this long instead of Dask's 30 s; raise it for a slow
#: network or a scheduler that is still starting.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for a connected scheduler to have at least one worker (``--wait-workers``)
#: before giving up with exit code 2 -- time for workers that are still starting to join.
WAIT_WORKERS = 60.0

#: Dask settings for batch jobs whose tasks run for seconds. Measured on an idle 2-worker
#: LocalCluster (2 cores): Dask's defaults burn 2.7 CPU-seconds every 20 s -- the worker
#: profiler sampling stacks every 10 ms, an event-loop tick every 20 ms in every process, the
#: system monitor every 500 ms -- i.e. ~7% of the machine taken from CPU-bound kernels; with
#: these, 0.46 s (~1%). What is given up: the dashboard's Profile tab (re-enable with
#: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True), finer system/memory plots, and workers
#: handing freed heap memory back to the OS at once (RSS can stay at its peak; peaks are
#: what the memory limits and our flat-memory checks look at).
BATCH_DASK_DEFAULTS = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    # None unsets it: Dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers, which
    # also switches off glibc's adaptive mmap threshold, so every numpy temporary over
    # 128 KiB becomes a fresh mmap and page faults. The credit scenario kernel ran 40% slower
    # under it (0.70-0.76 s against 0.52 s a chunk), the threshold sweep 2.3x.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


#: What ``--profile`` sets for the workers of a local cluster it starts: Dask's statistical
#: profiler (a stack sample every 10 ms per worker thread), which feeds the performance
#: report's worker-profile panels.
WORKER_PROFILER = {"distributed.worker.profile.enabled": True}


@functools.cache
def use_batch_dask_defaults() -> None:
    """Make :data:`BATCH_DASK_DEFAULTS` Dask's defaults in this process.

    A key the user set in a Dask YAML file or a ``DASK_*`` variable is left alone, even when
    it equals Dask's default. Workers of a local cluster receive this process's config from
    their nanny; workers started elsewhere read their own (``cluster/README.md`` has the
    variables). Runs once per process (every later local cluster gets the same config).
    """
    import dask.config
    import distributed  # noqa: F401  (registers distributed's defaults first)

    user = dask.config.collect()             # YAML files and DASK_* variables only
    missing = object()
    new: dict = {}
    for key, value in BATCH_DASK_DEFAULTS.items():
        if dask.config.get(key, default=missing, config=user) is missing:
            *parents, leaf = key.split(".")
            node = new
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    dask.config.update_defaults(new)


def default_n_workers() -> int:
    """One single-threaded worker process per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _optional(module: str, *, kind: str, extra: str, package: str, source: str | None = None):
    """Import an optional dependency, or say which pip extra brings it in."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"the '{kind}' cluster needs the {package} package, which is not installed "
            f"({exc}); install it with: pip install 'riskdask[{extra}]'",
            file=source, key="kind") from None


# -- TLS ------------------------------------------------------------------------------------
class SecuritySpec(BaseModel):
    """TLS material: a CA that signed every node's certificate, and this node's cert and key.

    The same files serve the client, the scheduler and the workers (one certificate for the
    whole cluster is the usual setup; give each machine its own if you prefer -- all that
    matters is that the CA signed them). Relative paths in a spec file are read relative to
    that file.
    """

    model_config = ConfigDict(extra="forbid")
    ca_file: Path = Field(..., description="PEM file of the certificate authority")
    cert: Path = Field(..., description="PEM certificate (may also hold the key)")
    key: Path | None = Field(None, description="PEM private key, if not inside `cert`")
    require_encryption: bool = Field(True, description="refuse any plain tcp:// connection")

    def resolved(self, base: Path) -> "SecuritySpec":
        """The same section with relative paths taken relative to ``base``."""
        fix = {name: (base / p if p is not None and not p.is_absolute() else p)
               for name, p in (("ca_file", self.ca_file), ("cert", self.cert), ("key", self.key))}
        return self.model_copy(update=fix)

    def to_security(self, source: str | None = None):
        """A :class:`distributed.Security` for every role (client, scheduler, worker)."""
        from distributed import Security

        for name in ("ca_file", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}", file=source,
                                  key=f"security.{name}")
        cert, key = str(self.cert), str(self.key) if self.key else None
        return Security(tls_ca_file=str(self.ca_file), require_encryption=self.require_encryption,
                        tls_client_cert=cert, tls_client_key=key,
                        tls_scheduler_cert=cert, tls_scheduler_key=key,
                        tls_worker_cert=cert, tls_worker_key=key)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _source: str | None = PrivateAttr(None)

    def dask_security(self):
        """The ``distributed.Security`` of this spec's ``[security]`` section, or None."""
        section = getattr(self, "security", None)
        return section.to_security(self._source) if section is not None else None

    def _adapt_or_scale(self, cluster, n_workers: int, adapt: "Adapt | None"):
        if adapt is not None:
            cluster.adapt(minimum=adapt.minimum, maximum=adapt.maximum)
        elif n_workers:
            cluster.scale(n_workers)
        return cluster


class Adapt(BaseModel):
    """Adaptive scaling bounds, in workers (replaces a fixed ``n_workers``)."""

    model_config = ConfigDict(extra="forbid")
    minimum: int = Field(0, ge=0)
    maximum: int = Field(..., ge=1)


# -- local and address ---------------------------------------------------------------------
class LocalSpec(_Spec):
    """A LocalCluster of worker processes on this machine."""

    kind: Literal["local"] = "local"
    n_workers: int | None = Field(None, ge=1, le=512, description="default: one per core")
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = "auto"
    dashboard_address: str = Field("127.0.0.1:8787", description="where the dashboard "
                                   "listens: loopback only by default; ':8787' exposes it "
                                   "on every interface (it has no authentication)")
    closed: bool = Field(True, description="TLS with a temporary CA and certificates held in "
                         "this process's memory (distributed's Security.temporary): other "
                         "users of this machine cannot connect to the scheduler or the "
                         "workers, so they cannot run code in them; false: plain TCP on "
                         "127.0.0.1")
    security: SecuritySpec | None = None

    def build(self, *, profile: bool = False):
        """Start the cluster; ``profile`` turns the workers' statistical profiler on.

        The profiler (:data:`BATCH_DASK_DEFAULTS` turns it off) is a worker setting read when
        the worker starts: each nanny keeps the config it was created with and hands it to its
        worker process (a restarted worker too), so it is set around the cluster's start.
        """
        import dask.config
        from distributed import LocalCluster

        use_batch_dask_defaults()   # first: it replaces values equal to Dask's own defaults
        kwargs: dict[str, Any] = {"host": "127.0.0.1"}
        security = self.dask_security()
        if security is None and self.closed:
            from distributed.security import Security

            security = Security.temporary()
        if security is not None:
            kwargs.update(security=security, protocol="tls://")
        with dask.config.set(WORKER_PROFILER if profile else {}), _main_without_a_file():
            # A task that fails is reported once, by the run (one line naming the file or the
            # cause); the workers' own "Compute Failed" dumps, one per retry, are not repeated
            # on the console. Set DASK_LOGGING__DISTRIBUTED=info to see them.
            return LocalCluster(n_workers=self.n_workers or default_n_workers(),
                                threads_per_worker=self.threads_per_worker, processes=True,
                                memory_limit=self.memory_limit,
                                dashboard_address=self.dashboard_address,
                                silence_logs=_worker_log_level(), **kwargs)


def _worker_log_level() -> int:
    """Level of the local workers' ``distributed`` loggers: CRITICAL unless the user set a
    ``distributed`` level in Dask's logging config."""
    import logging

    import dask.config

    user = dask.config.get("logging.distributed", None)
    if isinstance(user, str) and user.upper() in logging.getLevelNamesMapping():
        return logging.getLevelNamesMapping()[user.upper()]
    return logging.CRITICAL


@contextlib.contextmanager
def _main_without_a_file():
    """Worker processes start by ``spawn``, which re-runs ``__main__.__file__``: a script
    fed on standard input has the ``__file__`` ``<stdin>``, which does not exist, and every
    worker failed ("Nanny failed to start"). Such a name is hidden while the cluster starts
    (and for its restarts: it is never put back, there is no file to point at)."""
    main = sys.modules.get("__main__")
    name = getattr(main, "__file__", None)
    if name is not None and not os.path.exists(name):
        with contextlib.suppress(AttributeError):
            del main.__file__
    yield


class AddressSpec(_Spec):
    """A scheduler that is already running (``dask scheduler`` + ``dask worker``)."""

    kind: Literal["address"] = "address"
    address: str = Field(..., pattern=r"^(tcp|tls|ws|wss|inproc|ucx)://.+")
    timeout: float = Field(CONNECT_TIMEOUT, gt=0,
                           description="seconds to wait for the scheduler to answer")
    wait_workers: float = Field(WAIT_WORKERS, ge=0,
                                description="seconds to wait for the first worker")
    security: SecuritySpec | None = None


# -- SSH ------------------------------------------------------------------------------------
class SSHConnect(BaseModel):
    """Options for ``asyncssh.connect`` (the same for every host)."""

    model_config = ConfigDict(extra="forbid")
    username: str | None = None
    port: int = Field(22, ge=1, le=65535)
    client_keys: list[str] = Field(default_factory=list, description="private key files")
    known_hosts: str | None = Field(None, description="known_hosts file "
                                                      "(default: ~/.ssh/known_hosts)")
    check_host_keys: bool = Field(True, description="false only on a trusted private network")

    def asyncssh_options(self) -> dict:
        opts: dict[str, Any] = {"port": self.port}
        if self.username:
            opts["username"] = self.username
        if self.client_keys:
            opts["client_keys"] = [os.path.expanduser(k) for k in self.client_keys]
        if not self.check_host_keys:
            opts["known_hosts"] = None
        elif self.known_hosts:
            opts["known_hosts"] = os.path.expanduser(self.known_hosts)
        return opts


class SSHSpec(_Spec):
    """Scheduler on the first host, workers on the others, all started over SSH.

    Every host needs the same Python environment with riskdask installed at
    ``remote_python`` (default: this interpreter's path).
    """

    kind: Literal["ssh"]
    hosts: list[str] = Field(..., min_length=2,
                             description="first host runs the scheduler, the rest run workers")
    workers_per_host: int = Field(1, ge=1, le=512)
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = "auto"
    remote_python: str | None = None
    scheduler_port: int = Field(8786, ge=0, le=65535, description="0: any free port")
    dashboard_address: str = ":8787"
    local_directory: str | None = None
    connect: SSHConnect = Field(default_factory=SSHConnect)

    def cluster_kwargs(self) -> dict:
        """Arguments for :func:`distributed.deploy.ssh.SSHCluster`."""
        worker_options: dict[str, Any] = {"n_workers": self.workers_per_host,
                                          "nthreads": self.threads_per_worker,
                                          "memory_limit": self.memory_limit}
        if self.local_directory:
            worker_options["local_directory"] = self.local_directory
        return {"hosts": list(self.hosts),
                "connect_options": self.connect.asyncssh_options(),
                "worker_options": worker_options,
                "scheduler_options": {"port": self.scheduler_port,
                                      "dashboard_address": self.dashboard_address},
                "remote_python": self.remote_python or sys.executable}

    def build(self):
        _optional("asyncssh", kind="ssh", extra="ssh", package="asyncssh", source=self._source)
        from distributed.deploy.ssh import SSHCluster

        return SSHCluster(**self.cluster_kwargs())


# -- batch schedulers (dask-jobqueue) -------------------------------------------------------
class _JobQueueSpec(_Spec):
    """One batch job = ``processes`` Dask workers sharing ``cores`` and ``memory``."""

    _CLASS: ClassVar[str] = ""
    cores: int = Field(..., ge=1, le=1024, description="cores per batch job")
    processes: int = Field(1, ge=1, le=1024, description="worker processes per batch job")
    memory: str = Field(..., pattern=r"^\d+(\.\d+)?\s*[KMGTP]i?B$",
                        description="memory per batch job, e.g. 16GiB")
    walltime: str = Field("01:00:00", pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
    queue: str | None = None
    account: str | None = None
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list,
                                           description="shell lines run before the worker")
    interface: str | None = Field(None, description="network interface, e.g. ib0")
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = Field(None, description="python on the compute nodes")
    job_name: str = "riskdask"
    n_workers: int = Field(0, ge=0, le=100_000, description="workers to start (scale)")
    adapt: Adapt | None = None
    dashboard_address: str = ":8787"
    security: SecuritySpec | None = None

    def cluster_kwargs(self) -> dict:
        """Arguments for the dask-jobqueue cluster class (None values left to its defaults)."""
        kwargs: dict[str, Any] = {
            "cores": self.cores, "processes": self.processes, "memory": self.memory,
            "walltime": self.walltime, "queue": self.queue, "account": self.account,
            "job_extra_directives": list(self.job_extra_directives),
            "job_script_prologue": list(self.job_script_prologue),
            "interface": self.interface, "local_directory": self.local_directory,
            "log_directory": self.log_directory, "python": self.python, "job_name": self.job_name,
            "scheduler_options": {"dashboard_address": self.dashboard_address},
        }
        security = self.dask_security()
        if security is not None:
            kwargs.update(security=security, protocol="tls://")
        return {k: v for k, v in kwargs.items() if v is not None}

    def make_cluster(self):
        """The dask-jobqueue cluster, with no job submitted yet."""
        mod = _optional("dask_jobqueue", kind=self.kind, extra="jobqueue",
                        package="dask-jobqueue", source=self._source)
        return getattr(mod, self._CLASS)(**self.cluster_kwargs())

    def build(self):
        return self._adapt_or_scale(self.make_cluster(), self.n_workers, self.adapt)


class SlurmSpec(_JobQueueSpec):
    """Workers as Slurm jobs (``sbatch``) through ``dask_jobqueue.SLURMCluster``."""

    _CLASS: ClassVar[str] = "SLURMCluster"
    kind: Literal["slurm"]


class PBSSpec(_JobQueueSpec):
    """Workers as PBS/Torque jobs (``qsub``) through ``dask_jobqueue.PBSCluster``."""

    _CLASS: ClassVar[str] = "PBSCluster"
    kind: Literal["pbs"]


# -- Kubernetes (dask-kubernetes operator) --------------------------------------------------
class KubeResources(BaseModel):
    """Container resources of the scheduler and worker pods (Kubernetes quantities)."""

    model_config = ConfigDict(extra="forbid")
    requests: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], str] = Field(default_factory=dict)


class KubernetesSpec(_Spec):
    """A ``DaskCluster`` resource that the dask-kubernetes operator turns into pods.

    The operator must be installed in the cluster (``helm install dask-kubernetes-operator``),
    and ``image`` must contain riskdask (see ``deploy/Dockerfile``).
    """

    kind: Literal["kubernetes"]
    name: str = Field("riskdask", pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
    namespace: str | None = None
    image: str = Field(..., min_length=1)
    n_workers: int = Field(2, ge=0, le=10_000)
    adapt: Adapt | None = None
    resources: KubeResources = Field(default_factory=KubeResources)
    env: dict[str, str] = Field(default_factory=dict)
    # Recent distributed ships only the `dask` command (no `dask-worker`/`dask-scheduler`
    # scripts), while the operator's template still defaults to the old names.
    worker_command: str = "dask worker"
    scheduler_command: str = "dask scheduler"
    scheduler_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    idle_timeout: int = Field(0, ge=0, description="seconds; 0 keeps an idle cluster")

    def manifest(self) -> dict:
        """The ``DaskCluster`` resource as a dict (what ``kubectl apply`` would take)."""
        mod = _optional("dask_kubernetes.operator", kind="kubernetes", extra="kubernetes",
                        package="dask-kubernetes", source=self._source)
        resources = {k: dict(v) for k, v in self.resources.model_dump().items() if v} or None
        manifest = mod.make_cluster_spec(
            name=self.name, image=self.image, n_workers=self.n_workers, resources=resources,
            env=dict(self.env) or None, worker_command=self.worker_command,
            scheduler_service_type=self.scheduler_service_type, idle_timeout=self.idle_timeout)
        for container in manifest["spec"]["scheduler"]["spec"]["containers"]:
            if container.get("args", [None])[0] == "dask-scheduler":
                container["args"] = self.scheduler_command.split() + container["args"][1:]
        return manifest

    def build(self):
        mod = _optional("dask_kubernetes.operator", kind="kubernetes", extra="kubernetes",
                        package="dask-kubernetes", source=self._source)
        kwargs: dict[str, Any] = {"custom_cluster_spec": self.manifest()}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        cluster = mod.KubeCluster(**kwargs)
        if self.adapt is not None:
            cluster.adapt(minimum=self.adapt.minimum, maximum=self.adapt.maximum)
        return cluster


# -- cloud VMs (dask-cloudprovider) ---------------------------------------------------------
class _CloudSpec(_Spec):
    """Fields every dask-cloudprovider VM cluster takes.

    Without a ``[security]`` section dask-cloudprovider makes temporary TLS certificates for
    the cluster itself (its ``security=True`` default), so traffic is encrypted either way.
    """

    _MODULE: ClassVar[str] = ""
    _CLASS: ClassVar[str] = ""
    n_workers: int = Field(..., ge=0, le=10_000)
    docker_image: str = Field(..., min_length=1, description="must contain riskdask")
    threads_per_worker: int = Field(1, ge=1, le=256)
    env_vars: dict[str, str] = Field(default_factory=dict)
    auto_shutdown: bool = True
    debug: bool = False
    adapt: Adapt | None = None
    security: SecuritySpec | None = None

    def _common_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {"n_workers": self.n_workers, "docker_image": self.docker_image,
                                  "worker_options": {"nthreads": self.threads_per_worker},
                                  "auto_shutdown": self.auto_shutdown, "debug": self.debug}
        if self.env_vars:
            kwargs["env_vars"] = dict(self.env_vars)
        security = self.dask_security()
        if security is not None:
            kwargs["security"] = security
        return kwargs

    def _specific_kwargs(self) -> dict:
        return {}

    def cluster_kwargs(self) -> dict:
        """Constructor arguments of the cloud cluster class; unset fields use its defaults."""
        specific = {k: v for k, v in self._specific_kwargs().items() if v not in (None, [], {})}
        return {**self._common_kwargs(), **specific}

    def cluster_class(self):
        """The dask-cloudprovider class (imported now, so a missing package is named)."""
        mod = _optional(self._MODULE, kind=self.kind, extra="cloud",
                        package=f"dask-cloudprovider[{self._MODULE.rsplit('.', 1)[-1]}]",
                        source=self._source)
        return getattr(mod, self._CLASS)

    def build(self):
        cluster = self.cluster_class()(**self.cluster_kwargs())
        if self.adapt is not None:
            cluster.adapt(minimum=self.adapt.minimum, maximum=self.adapt.maximum)
        return cluster


class EC2Spec(_CloudSpec):
    """Scheduler and workers on AWS EC2 instances (``dask_cloudprovider.aws.EC2Cluster``)."""

    _MODULE: ClassVar[str] = "dask_cloudprovider.aws"
    _CLASS: ClassVar[str] = "EC2Cluster"
    kind: Literal["ec2"]
    region: str = Field(..., min_length=1)
    availability_zone: str | None = None
    ami: str | None = None
    instance_type: str | None = Field(None, description="both scheduler and workers")
    scheduler_instance_type: str | None = None
    worker_instance_type: str | None = None
    vpc: str | None = None
    subnet_id: str | None = None
    security_groups: list[str] = Field(default_factory=list)
    key_name: str | None = None
    iam_instance_profile: dict[str, str] = Field(default_factory=dict)
    filesystem_size: int | None = Field(None, ge=8, description="GB")
    spot: bool = False
    instance_tags: dict[str, str] = Field(default_factory=dict)
    use_private_ip: bool | None = None

    def _specific_kwargs(self) -> dict:
        return {"region": self.region, "availability_zone": self.availability_zone,
                "ami": self.ami, "instance_type": self.instance_type,
                "scheduler_instance_type": self.scheduler_instance_type,
                "worker_instance_type": self.worker_instance_type, "vpc": self.vpc,
                "subnet_id": self.subnet_id, "security_groups": list(self.security_groups),
                "key_name": self.key_name, "iam_instance_profile": dict(self.iam_instance_profile),
                "filesystem_size": self.filesystem_size, "spot": self.spot,
                "instance_tags": dict(self.instance_tags), "use_private_ip": self.use_private_ip}


class GCPSpec(_CloudSpec):
    """Scheduler and workers on Google Compute Engine (``dask_cloudprovider.gcp.GCPCluster``)."""

    _MODULE: ClassVar[str] = "dask_cloudprovider.gcp"
    _CLASS: ClassVar[str] = "GCPCluster"
    kind: Literal["gcp"]
    projectid: str = Field(..., min_length=1)
    zone: str = Field(..., min_length=1)
    machine_type: str | None = Field(None, description="both scheduler and workers")
    scheduler_machine_type: str | None = None
    worker_machine_type: str | None = None
    source_image: str | None = None
    network: str | None = None
    filesystem_size: int | None = Field(None, ge=10, description="GB")
    preemptible: bool | None = None
    instance_labels: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = None

    def _specific_kwargs(self) -> dict:
        return {"projectid": self.projectid, "zone": self.zone, "machine_type": self.machine_type,
                "scheduler_machine_type": self.scheduler_machine_type,
                "worker_machine_type": self.worker_machine_type,
                "source_image": self.source_image, "network": self.network,
                "filesystem_size": self.filesystem_size, "preemptible": self.preemptible,
                "instance_labels": dict(self.instance_labels),
                "service_account": self.service_account}


#: Spec kinds this module can build, by their ``kind`` key.
SPEC_KINDS: dict[str, type[BaseModel]] = {
    "local": LocalSpec, "address": AddressSpec, "ssh": SSHSpec, "slurm": SlurmSpec,
    "pbs": PBSSpec, "kubernetes": KubernetesSpec, "ec2": EC2Spec, "gcp": GCPSpec,
}


def load_spec(path: str | Path) -> BaseModel:
    """Read and validate a cluster spec file; errors name the file and key."""
    path = Path(path)
    data = read_toml(path)
    kind = data.get("kind")
    if kind not in SPEC_KINDS:
        raise ConfigError(f"unknown cluster kind {kind!r} (known: {', '.join(SPEC_KINDS)})",
                          file=path, key="kind")
    spec = validate_config(SPEC_KINDS[kind], data, source=str(path))
    if getattr(spec, "security", None) is not None:
        spec = spec.model_copy(update={"security": spec.security.resolved(path.parent)})
    spec._source = str(path)
    return spec


def with_security(spec: BaseModel, security: SecuritySpec | None) -> BaseModel:
    """``spec`` with its ``[security]`` section replaced (the CLI's ``--tls-*`` options)."""
    if security is None:
        return spec
    if "security" not in type(spec).model_fields:
        raise ConfigError(f"the '{spec.kind}' cluster kind takes no TLS options "
                          "(see cluster/README.md)", file=spec._source, key="security")
    new = spec.model_copy(update={"security": security})
    new._source = spec._source
    return new


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def connect(*, scheduler: str | None = None, cluster: str | Path | BaseModel | None = None,
            n_workers: int | None = None, security: SecuritySpec | None = None,
            quiet: bool = False, connect_timeout: float | None = None,
            wait_workers: float | None = None, profile: bool = False) -> Iterator:
    """Yield a connected client; close it (and any cluster started here) on the way out.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786`` (``tls://`` with TLS).
    cluster : path or spec model, optional
        A spec file from ``cluster/`` (or an already-loaded spec).
    n_workers : int, optional
        Worker count for the default local cluster (default: one per core).
    security : SecuritySpec, optional
        TLS files (the CLI's ``--tls-ca``/``--tls-cert``/``--tls-key``); replaces the spec's
        ``[security]`` section.
    quiet : bool
        Do not print the dashboard link, nor Dask's warning that the dashboard port is taken.
    connect_timeout : float, optional
        Seconds to wait for a scheduler at an address to answer (default: the spec's
        ``timeout``, :data:`CONNECT_TIMEOUT` = 5 s).
    wait_workers : float, optional
        Seconds to wait for a scheduler at an address to have a worker (default: the spec's
        ``wait_workers``, :data:`WAIT_WORKERS` = 60 s).
    profile : bool
        Start the workers of a local cluster with Dask's statistical profiler on
        (:data:`WORKER_PROFILER`; ``--profile``). Workers of a scheduler at an address or of
        another spec kind read their own Dask config (``cluster/README.md``).

    Raises
    ------
    ClusterUnavailable
        The scheduler refused or did not answer in time, or had no worker after the wait;
        the message names the address (exit code 2).
    KeyboardInterrupt
        On SIGINT/SIGTERM while a local cluster starts: the signal is held until the
        cluster is up, which is then shut down cleanly (no half-started cluster, no
        traceback).
    """
    import warnings

    from distributed import Client

    if scheduler and cluster:
        raise ConfigError("give either --scheduler or --cluster, not both")
    spec: BaseModel
    if scheduler:
        spec = AddressSpec(address=scheduler)
    elif cluster is not None:
        spec = cluster if isinstance(cluster, BaseModel) else load_spec(cluster)
    else:
        spec = LocalSpec(n_workers=n_workers)
    spec = with_security(spec, security)

    with contextlib.ExitStack() as stack:
        if quiet:  # a second local cluster's dashboard moves to another port: not news
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        if isinstance(spec, AddressSpec):
            sec = spec.dask_security()
            if spec.address.startswith("tls://") and sec is None and not _tls_in_dask_config():
                raise ConfigError(f"{spec.address} is a TLS scheduler: give --tls-ca, --tls-cert "
                                  "and --tls-key (or a [security] section)", key="--scheduler")
            client = _connect_address(spec, sec, connect_timeout or spec.timeout)
            stack.callback(client.close)
            _say(f"connected to scheduler {spec.address}", quiet)
            _wait_for_a_worker(client, spec.address,
                               spec.wait_workers if wait_workers is None else wait_workers, quiet)
        else:
            # A signal during the start of a local cluster would leave a half-started one
            # that Dask's exit hook then fails to close (``AssertionError: Status.init``):
            # hold it until the cluster is up and registered for shutdown.
            with deferred_interrupts(isinstance(spec, LocalSpec)):
                cluster_obj = spec.build(profile=True) if profile and isinstance(
                    spec, LocalSpec) else spec.build()
                stack.callback(cluster_obj.close)
                client = Client(cluster_obj)
                stack.callback(client.close)
        if client.dashboard_link:
            _say(f"Dask dashboard: {client.dashboard_link}", quiet)
        yield client


def _connect_address(spec: AddressSpec, security, timeout: float):
    """A client for ``spec.address``, or :class:`ClusterUnavailable` within ~``timeout`` s.

    A refused TCP connection is reported at once (Dask itself would retry it for the whole
    timeout); an address that does not answer takes the timeout.
    """
    from distributed import Client

    def unavailable(reason: str) -> ClusterUnavailable:
        return ClusterUnavailable(
            f"cannot reach the scheduler at {spec.address} ({reason}); check the address and "
            "that the scheduler is running, or allow longer with --connect-timeout")

    import time

    deadline = time.monotonic() + timeout       # one budget for the whole check
    _probe_tcp(spec.address, timeout, unavailable)
    _probe_scheduler(spec.address, security, max(0.5, deadline - time.monotonic()), unavailable,
                     budget=timeout)
    try:
        return Client(spec.address, timeout=timeout, security=security)
    except (OSError, TimeoutError) as exc:
        raise unavailable(f"no answer within {timeout:g} s: {str(exc).splitlines()[0]}") from None


def _probe_scheduler(address: str, security, timeout: float, unavailable, *,
                     budget: float | None = None) -> None:
    """Ask ``address`` who it is, with a hard ``timeout``.

    ``distributed.Client(timeout=...)`` bounds the TCP connect only: a port that accepts and
    then stays silent (a hung scheduler, another service) blocks it for ever. This asks the
    ``identity`` of the server on its own event loop (in a helper thread, so it also works
    under a running loop, e.g. Jupyter), and gives up after ``timeout``.
    """
    import asyncio
    import concurrent.futures

    from distributed import Security
    from distributed.comm import connect as comm_connect

    async def identity():
        args = (security or Security()).get_connection_args("client")
        comm = await comm_connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def run():
        return asyncio.run(asyncio.wait_for(identity(), timeout))

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe") as pool:
        try:
            info = pool.submit(run).result(timeout=timeout + 5)
        except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError,
                OSError) as exc:
            if _speaks_http(address, min(timeout, 3.0)):
                raise unavailable("the address answers as an HTTP server, not as a Dask "
                                  "scheduler (a dashboard or web port? the scheduler's own "
                                  "port is 8786 by default)") from None
            if not isinstance(exc, OSError) or isinstance(exc, TimeoutError):
                raise unavailable(f"no answer within {budget or timeout:g} s") from None
            raise unavailable(f"no answer within {budget or timeout:g} s: "
                              f"{str(exc).splitlines()[0]}") from None
        except Exception as exc:  # noqa: BLE001 - something answered, but not a Dask scheduler
            raise unavailable(f"the address answers but not as a Dask scheduler "
                              f"({type(exc).__name__}); is it the right port and protocol?"
                              ) from None
    if not (isinstance(info, dict) and info.get("type") == "Scheduler"):
        kind = info.get("type") if isinstance(info, dict) else type(info).__name__
        raise unavailable(f"the address answers but is not a Dask scheduler ({kind})")


def _speaks_http(address: str, timeout: float) -> bool:
    """Whether a plain ``tcp://`` address answers an HTTP request (a web server, not Dask)."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme != "tcp":
        return False
    try:
        host, port = parse_host_port(location)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except (OSError, ValueError):
        return False


def _probe_tcp(address: str, timeout: float, unavailable) -> None:
    """Fail fast on a refused or unresolvable ``tcp://``/``tls://`` address."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parse_host_port(location)
    except ValueError:
        raise unavailable("not a host:port address") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise unavailable("connection refused: nothing listens on that port") from None
    except socket.gaierror as exc:
        raise unavailable(f"unknown host {host!r}: {exc.strerror}") from None
    except (TimeoutError, socket.timeout):
        raise unavailable(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise unavailable(exc.strerror or str(exc)) from None


def _wait_for_a_worker(client, address: str, timeout: float, quiet: bool) -> None:
    """Return once the scheduler has a worker; :class:`ClusterUnavailable` after ``timeout``."""
    if client.scheduler_info().get("workers"):
        return
    _say(f"waiting up to {timeout:g} s for a worker to join {address} (--wait-workers)", quiet)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        raise ClusterUnavailable(
            f"the scheduler at {address} has no workers: none joined within {timeout:g} s "
            "(--wait-workers); start some with `dask worker " + address + "`") from None


@contextlib.contextmanager
def deferred_interrupts(enabled: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block; raise ``KeyboardInterrupt`` after it if one came.

    For short critical sections (starting a local cluster) that must not be torn in half.
    Only in the main thread, where Python runs signal handlers.
    """
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in signals}
    try:
        yield
    except Exception as exc:
        if received:  # e.g. workers killed by the same signal (a process-group SIGTERM)
            raise KeyboardInterrupt from exc
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


def _tls_in_dask_config() -> bool:
    """Whether Dask's own config (``distributed.comm.tls.*``) already names a CA."""
    from distributed import Security

    return Security().tls_ca_file is not None


def describe_cluster(client) -> dict:
    """Workers, threads and memory of the cluster behind ``client`` (for the manifest)."""
    info = (client.scheduler_info(n_workers=-1) if _accepts_n_workers(client)
            else client.scheduler_info())
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "memory_bytes": int(sum(w.get("memory_limit", 0) or 0 for w in workers.values())),
        "dashboard": client.dashboard_link,
        "worker_names": sorted(f"{w.get('name', addr)} ({addr}, {w.get('nthreads', 0)} thread(s))"
                               for addr, w in workers.items())[:64],
    }


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters
