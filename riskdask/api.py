"""Python API: every job is a function call that returns a :class:`JobResult`.

The CLI is a thin layer over :func:`run_job` and :func:`validate_job`, so a notebook user gets
exactly the numbers the command line gets::

    from riskdask import run_job
    result = run_job("credit", overrides=["simulation.n_scenarios=100000"])
    level = result.summary["levels"][-1]
    level["confidence"], level["var"], level["es"], level["es_se"]
    result.table("es_contributions")

Both functions know a job only through the registry (:mod:`riskdask.registry`) and the
declared protocol (:mod:`riskdask.protocol`): one generic path for every job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .cluster import connect, describe_cluster
from .config import load_config
from .errors import ConfigError
from .io import Record
from .protocol import JobContext, Outputs, Streams
from .registry import get_job
from .report import render_report
from .run import RunDirectory, package_versions, to_jsonable, write_json, write_outputs
from .schedule import RunLock, prune_runs, update_latest

__all__ = ["JobResult", "run_job", "validate_job", "ClientProvider"]


@dataclass
class JobResult:
    """What a finished run returns: headline summary, where the run directory is, its manifest."""

    job: str
    summary: dict
    run_dir: Path
    config: Any
    manifest: dict

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    def table(self, name: str):
        """Read one of the run's Parquet tables back as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.run_dir / "tables" / f"{name}.parquet")

    def tables(self) -> list[str]:
        return sorted(p.stem for p in (self.run_dir / "tables").glob("*.parquet"))


class ClientProvider:
    """Connects to a cluster on first use and shares it across jobs; ``close()`` ends it."""

    def __init__(self, *, client=None, scheduler: str | None = None, cluster=None,
                 n_workers: int | None = None, security=None, quiet: bool = False):
        from .cluster import load_spec, with_security

        self._client = client
        if cluster is not None and not hasattr(cluster, "model_dump"):
            cluster = load_spec(cluster)  # a bad spec fails now, before anything is written
        if cluster is not None:
            with_security(cluster, security)  # a kind that takes no TLS fails now too
        self._kw = dict(scheduler=scheduler, cluster=cluster, n_workers=n_workers,
                        security=security, quiet=quiet)
        self._stack = contextlib.ExitStack()

    def __call__(self):
        if self._client is None:
            self._client = self._stack.enter_context(connect(**self._kw))
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def _config_errors_name(source: str):
    """A config problem found by a job (e.g. k values that make T negative) names the file."""
    try:
        yield
    except ConfigError as exc:
        if exc.file is None:
            exc.file = source
        raise


def validate_job(job: str, config: str | Path | Mapping | Any | None = None, *,
                 overrides: Sequence[str] = ()) -> dict:
    """Check a job's config and inputs without running it (the protocol's ``load`` only).

    Returns a dict with the resolved config, its hash, the inputs (rows, fingerprints) and
    the row exclusions. Raises :class:`~riskdask.errors.InputError` on bad input.
    """
    spec = get_job(job)
    loaded = load_config(job, spec.config, config, overrides)
    record = Record()
    with _config_errors_name(loaded.source):
        spec.load(loaded.config, record)
    return {"job": job, "config_source": loaded.source, "config_hash": loaded.hash,
            "config": loaded.config.model_dump(mode="json"), "inputs": record.inputs,
            "exclusions": record.exclusions}


def run_job(job: str, config: str | Path | Mapping | Any | None = None, *,
            overrides: Sequence[str] = (), client=None, scheduler: str | None = None,
            cluster: str | Path | None = None, n_workers: int | None = None,
            out: str | Path = "runs", quiet: bool = True,
            client_provider: Callable[[], Any] | None = None, security=None,
            keep: int | None = None, lock: bool = True) -> JobResult:
    """Run one job end to end and write its run directory atomically.

    Parameters
    ----------
    job : str
        ``credit``, ``hazard``, ``coup`` (``riskdask jobs`` lists them).
    config : path, mapping, config model, or None
        ``None`` uses the job's embedded default ``configs/<job>.toml``.
    overrides : sequence of "key=value"
        Dotted config keys to override, as ``--set`` does.
    client : distributed.Client, optional
        Use this client; otherwise a cluster is started (or connected to) on first use.
    scheduler, cluster, n_workers :
        As the CLI's ``--scheduler``, ``--cluster`` and ``--workers``.
    out : path
        Runs folder; the run directory is ``<out>/<job>/<UTC stamp>-<config hash>/``.
    security : riskdask.cluster.SecuritySpec, optional
        TLS files, as the CLI's ``--tls-ca``/``--tls-cert``/``--tls-key``.
    keep : int, optional
        Retention: after success keep only the ``keep`` newest run directories of the job.
    lock : bool
        Refuse to start (:class:`riskdask.schedule.RunLocked`) while another run of the same
        job and config holds ``<out>/<job>/.lock-<config hash>``; on success point
        ``<out>/<job>/latest`` at the new run directory.

    Returns
    -------
    JobResult
    """
    spec = get_job(job)
    loaded = load_config(job, spec.config, config, overrides)
    if keep is not None and keep < 1:
        raise ValueError("keep must be at least 1")
    run_lock = RunLock(Path(out) / job, loaded.hash).acquire() if lock else None
    try:
        result = _run_locked(spec, loaded, client=client, scheduler=scheduler,
                             cluster=cluster, n_workers=n_workers, out=out, quiet=quiet,
                             client_provider=client_provider, security=security)
        # Still under the lock, so a later run of this config cannot be overtaken here.
        if lock:
            update_latest(result.run_dir.parent, result.run_dir)
        if keep is not None:
            prune_runs(result.run_dir.parent, keep, protect=result.run_dir)
    finally:
        if run_lock is not None:
            run_lock.release()
            with contextlib.suppress(OSError):  # a failed first run leaves no empty folder
                run_lock.job_dir.rmdir()
    return result


def _run_locked(spec, loaded, *, client, scheduler, cluster, n_workers, out, quiet,
                client_provider, security) -> JobResult:
    """The generic run path (body of :func:`run_job`, called with the run lock held):
    load, compute, write outputs, manifest and report, rename into place."""
    cfg = loaded.config
    provider = client_provider or ClientProvider(client=client, scheduler=scheduler,
                                                 cluster=cluster, n_workers=n_workers,
                                                 security=security, quiet=quiet)
    own_provider = client_provider is None
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    record = Record()
    ctx = JobContext(job=spec.name, record=record,
                     streams=Streams(getattr(cfg, "seed", 0), spec.primary_stream),
                     client_factory=provider)
    run_dir = None
    try:
        with _config_errors_name(loaded.source):
            with ctx.stage("load"):
                inputs = spec.load(cfg, record)
            with ctx.stage("compute"):
                outputs = spec.compute(cfg, inputs, ctx)
        if not isinstance(outputs, Outputs):
            raise TypeError(f"{spec.name}: compute returned {type(outputs).__name__}, "
                            "not riskdask.protocol.Outputs")
        summary = to_jsonable(outputs.summary)
        run_dir = RunDirectory(out, spec.name, loaded.hash, started)
        with ctx.stage("write"):
            tables, figures = write_outputs(run_dir.tmp, outputs)
        manifest = {
            "job": spec.name,
            "riskdask_version": package_versions().get("riskdask"),
            "config_source": loaded.source,
            "overrides": loaded.overrides,
            "config_hash": loaded.hash,
            "config": cfg.model_dump(mode="json"),
            "seed": getattr(cfg, "seed", None),
            "inputs": record.inputs,
            "exclusions": record.exclusions,
            "excluded_rows_total": record.excluded_total,
            "packages": package_versions(),
            "cluster": describe_cluster(ctx._client) if ctx._client is not None else None,
            "timings": ctx.timings,
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - t0, 3),
            "host": platform.node(),
            "command": sys.argv,
            "outputs": {"tables": tables, "figures": [f.path for f in figures]},
        }
        write_json(run_dir.tmp / "summary.json", summary)
        write_json(run_dir.tmp / "manifest.json", manifest)
        page = render_report(run_dir=run_dir.tmp, job=spec.name, title=spec.title,
                             summary=summary,
                             headline=spec.headline(summary) if spec.headline else None,
                             figures=figures, tables=tables, sections=outputs.sections,
                             manifest=to_jsonable(manifest), run_name=run_dir.name)
        (run_dir.tmp / "report.html").write_text(page, encoding="utf-8")
        final = run_dir.commit()
    except BaseException:
        if run_dir is not None:
            run_dir.abort()
        raise
    finally:
        if own_provider:
            provider.close()
    return JobResult(job=spec.name, summary=json.loads((final / "summary.json").read_text()),
                     run_dir=final, config=cfg, manifest=manifest)
