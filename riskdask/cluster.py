"""Getting workers: a local cluster by default, an existing scheduler, or a spec file.

``connect()`` is a context manager that yields a :class:`distributed.Client` and always closes
it -- and shuts a cluster it started down -- even when the job fails.

Spec files live in ``cluster/`` (see ``cluster/README.md``). Each is TOML with a ``kind`` key:

- ``local``: a :class:`distributed.LocalCluster` of processes (the default when no option is given);
- ``address``: connect to a running scheduler (same as ``--scheduler``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import read_toml, validate_config
from .errors import ConfigError

__all__ = ["LocalSpec", "AddressSpec", "SPEC_KINDS", "load_spec", "connect", "describe_cluster",
           "default_n_workers"]


def default_n_workers() -> int:
    """One single-threaded worker process per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LocalSpec(BaseModel):
    """A LocalCluster of worker processes on this machine."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local"] = "local"
    n_workers: int | None = Field(None, ge=1, le=512, description="default: one per core")
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = "auto"
    dashboard_address: str = ":8787"

    def build(self):
        from distributed import LocalCluster

        return LocalCluster(n_workers=self.n_workers or default_n_workers(),
                            threads_per_worker=self.threads_per_worker, processes=True,
                            memory_limit=self.memory_limit,
                            dashboard_address=self.dashboard_address)


class AddressSpec(BaseModel):
    """A scheduler that is already running (``dask scheduler`` + ``dask worker``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["address"] = "address"
    address: str = Field(..., pattern=r"^(tcp|tls|ws|wss|inproc|ucx)://.+")
    timeout: float = Field(30.0, gt=0, description="seconds to wait for the scheduler")


#: Spec kinds this module can build, by their ``kind`` key.
SPEC_KINDS: dict[str, type[BaseModel]] = {"local": LocalSpec, "address": AddressSpec}


def load_spec(path: str | Path) -> BaseModel:
    """Read and validate a cluster spec file; errors name the file and key."""
    data = read_toml(Path(path))
    kind = data.get("kind")
    if kind not in SPEC_KINDS:
        raise ConfigError(f"unknown cluster kind {kind!r} (known: {', '.join(SPEC_KINDS)})",
                          file=path, key="kind")
    return validate_config(SPEC_KINDS[kind], data, source=str(path))


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def connect(*, scheduler: str | None = None, cluster: str | Path | BaseModel | None = None,
            n_workers: int | None = None, quiet: bool = False) -> Iterator:
    """Yield a connected client; close it (and any cluster started here) on the way out.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
    cluster : path or spec model, optional
        A spec file from ``cluster/`` (or an already-loaded spec).
    n_workers : int, optional
        Worker count for the default local cluster (default: one per core).
    quiet : bool
        Do not print the dashboard link.
    """
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

    with contextlib.ExitStack() as stack:
        if isinstance(spec, AddressSpec):
            try:
                client = Client(spec.address, timeout=spec.timeout)
            except OSError as exc:
                raise ConfigError(f"cannot reach the scheduler at {spec.address}: {exc}",
                                  key="--scheduler") from None
            stack.callback(client.close)
            _say(f"connected to scheduler {spec.address}", quiet)
        else:
            cluster_obj = spec.build()
            stack.callback(cluster_obj.close)
            client = Client(cluster_obj)
            stack.callback(client.close)
        if client.dashboard_link:
            _say(f"Dask dashboard: {client.dashboard_link}", quiet)
        yield client


def describe_cluster(client) -> dict:
    """Workers, threads and memory of the cluster behind ``client`` (for the manifest)."""
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else \
        client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "memory_bytes": int(sum(w.get("memory_limit", 0) or 0 for w in workers.values())),
        "dashboard": client.dashboard_link,
    }


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters
