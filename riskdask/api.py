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
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .cluster import connect, describe_cluster
from .config import load_config
from .errors import ConfigError
from .io import Record, to_jsonable
from .protocol import JobContext, Outputs, Streams
from .registry import get_job
from .report import render_report
from .run import (RunDirectory, output_mode, package_versions, write_json, write_outputs,
                  writing)
from .schedule import (RunLock, check_run_space, clean_stale, prune_runs,
                       update_latest)

__all__ = ["JobResult", "RunOptions", "run_job", "validate_job", "ClientProvider"]


@dataclass
class JobResult:
    """What a finished run returns: headline summary, where the run directory is, its manifest."""

    job: str
    summary: dict
    run_dir: Path
    config: Any
    manifest: dict
    headline: list = dataclasses.field(default_factory=list)
    #: the job's typed result (``Job.result``), as ``compute`` returned it
    result: Any = None

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
                 n_workers: int | None = None, security=None, quiet: bool = False,
                 connect_timeout: float | None = None, wait_workers: float | None = None,
                 profile: bool = False):
        from .cluster import load_spec, with_security

        self._client = client
        if cluster is not None and not hasattr(cluster, "model_dump"):
            cluster = load_spec(cluster)  # a bad spec fails now, before anything is written
        if cluster is not None:
            with_security(cluster, security)  # a kind that takes no TLS fails now too
        self._kw = dict(scheduler=scheduler, cluster=cluster, n_workers=n_workers,
                        security=security, quiet=quiet, connect_timeout=connect_timeout,
                        wait_workers=wait_workers, profile=profile)
        self._stack = contextlib.ExitStack()

    def __call__(self):
        if self._client is None:
            self._client = self._stack.enter_context(connect(**self._kw))
        return self._client

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
        spec.load(loaded.config, record, Streams(loaded.config.seed, spec.purposes))
    return {"job": job, "config_source": loaded.source, "config_hash": loaded.hash,
            "config": loaded.config.model_dump(mode="json"), "inputs": record.inputs,
            "exclusions": record.exclusions}


@dataclass(frozen=True)
class RunOptions:
    """How a run is made (where it computes, what it writes); the config says what it computes.

    Attributes
    ----------
    client : distributed.Client, optional
        Use this client; otherwise a cluster is started (or connected to) on first use.
    scheduler, cluster, n_workers :
        As the CLI's ``--scheduler``, ``--cluster`` and ``--workers``.
    client_provider : callable, optional
        A shared :class:`ClientProvider` (``run all``: one cluster for every job).
    security : riskdask.cluster.SecuritySpec, optional
        TLS files, as the CLI's ``--tls-ca``/``--tls-cert``/``--tls-key``.
    out : path
        Runs folder; the run directory is ``<out>/<job>/<UTC stamp>-<config hash>/``.
    quiet : bool
        No progress bars, cluster messages or notes on stderr (default, for the API).
    progress : bool, optional
        Progress bars on or off; None (default): on a terminal unless ``quiet``.
    keep : int, optional
        Retention: after success keep only the ``keep`` newest run directories of the job.
    lock : bool
        Refuse to start (:class:`riskdask.schedule.RunLocked`) while another run of the same
        job and config holds ``<out>/<job>/.lock-<config hash>``; on success point
        ``<out>/<job>/latest`` at the new run directory.
    checkpoint : path, fsspec URL, or bool, optional
        Where chunk partials are checkpointed (:mod:`riskdask.checkpoint`); default
        ``<out>/.checkpoints``; ``False`` turns checkpointing off.
    resume : bool, optional
        ``True``: reuse every checkpointed chunk of this config; ``False``: start afresh;
        ``None`` (default): resume when the previous attempt of this config did not finish
        (it was killed or failed), so a scheduled run picks up where the last one died.
    keep_checkpoint : bool
        Keep the checkpoints after success (default: removed).
    profile : bool
        Save Dask's ``performance_report`` as ``dask-performance.html`` in the run directory.
        A local cluster started for the run gets its workers' statistical profiler on (the
        report's worker profiles); other workers (``client``, ``scheduler``, a cluster spec
        of another kind) keep their own Dask config, and a note says when it is off.
    connect_timeout, wait_workers : float, optional
        As the CLI's ``--connect-timeout`` / ``--wait-workers`` (an existing scheduler).
    history : bool
        Append the run's headline figures to ``<out>/<job>/history.parquet`` and show the
        history in the report.
    prune_checkpoint_days : float, optional
        With ``keep``: after success also remove the checkpoint stores (of any job) not
        written for this many days (default 30; None keeps them).
    """

    client: Any = None
    scheduler: str | None = None
    cluster: str | Path | None = None
    n_workers: int | None = None
    client_provider: Callable[[], Any] | None = None
    security: Any = None
    out: str | Path = "runs"
    quiet: bool = True
    progress: bool | None = None
    keep: int | None = None
    lock: bool = True
    checkpoint: str | Path | bool | None = None
    resume: bool | None = None
    keep_checkpoint: bool = False
    profile: bool = False
    connect_timeout: float | None = None
    wait_workers: float | None = None
    history: bool = True
    prune_checkpoint_days: float | None = 30.0

    def __post_init__(self):
        if self.keep is not None and self.keep < 1:
            raise ValueError("keep must be at least 1")

    @property
    def show_progress(self) -> bool | None:
        """tqdm's choice: forced by ``progress``, off when ``quiet``, else on a terminal."""
        if self.progress is not None:
            return self.progress
        return False if self.quiet else None


def run_job(job: str, config: str | Path | Mapping | Any | None = None, *,
            overrides: Sequence[str] = (), options: RunOptions | None = None,
            **option_values) -> JobResult:
    """Run one job end to end and write its run directory atomically.

    Parameters
    ----------
    job : str
        ``credit``, ``hazard``, ``coup`` (``riskdask jobs`` lists them).
    config : path, mapping, config model, or None
        ``None`` uses the job's embedded default ``configs/<job>.toml``.
    overrides : sequence of "key=value"
        Dotted config keys to override, as ``--set`` does.
    options : RunOptions, optional
        Where and how the run is made (cluster, output folder, checkpoints, ...).
    **option_values
        :class:`RunOptions` fields given directly (``run_job("credit", out="runs",
        client=client)``), applied over ``options``.

    Returns
    -------
    JobResult
    """
    options = dataclasses.replace(options or RunOptions(), **option_values)
    # absolute: a relative folder with a colon ("a:b/runs") would read as a URL scheme to
    # pyarrow and fsspec
    options = dataclasses.replace(options, out=Path(options.out).absolute())
    spec = get_job(job)
    loaded = load_config(job, spec.config, config, overrides)
    job_dir = Path(options.out) / job
    run_lock = RunLock(job_dir, loaded.hash).acquire() if options.lock else None
    try:
        notes = clean_stale(job_dir, own_lock=run_lock).notes if options.lock else []
        if run_lock is not None and run_lock.previous_holder:
            notes.insert(0, f"took over the stale lock {run_lock.path.name} "
                            f"({run_lock.previous_holder}; that process is gone)")
        store = _checkpoint_store(options.checkpoint, options.out, job, loaded)
        check_run_space(job_dir, store.local_folder() if store is not None else None)
        resume, note = _decide_resume(store, options.resume)
        notes += [note] if note else []
        for line in notes:
            _say(line, options.quiet)
        result = _run_locked(spec, loaded, options, store=store, resume=resume, notes=notes)
        # Still under the lock, so a later run of this config cannot be overtaken here.
        if options.lock:
            update_latest(result.run_dir.parent, result.run_dir)
        _write_index(options.out, options.quiet)
        if options.keep is not None:
            prune_runs(result.run_dir.parent, options.keep, protect=result.run_dir)
            if store is not None and options.prune_checkpoint_days is not None:
                _prune_checkpoints(store, options)
    finally:
        if run_lock is not None:
            run_lock.release()
            with contextlib.suppress(OSError):  # a failed first run leaves no empty folder
                run_lock.job_dir.rmdir()
    return result


def _write_index(out, quiet: bool) -> None:
    """``<out>/index.html`` with this run in it; a problem only warns (the run is done)."""
    from .runs_index import write_index

    try:
        write_index(out)
    except Exception as exc:  # noqa: BLE001 - the run's results are in place
        _say(f"warning: {Path(out) / 'index.html'} not updated: {type(exc).__name__}: {exc}",
             quiet)


def _prune_checkpoints(store, options: "RunOptions") -> None:
    """With ``keep``: stores of configs not run for ``prune_checkpoint_days`` days go (a
    scheduled job whose config changed leaves its old store behind otherwise)."""
    from .checkpoint import prune_stores

    try:
        removed = prune_stores(store.url, older_than_days=options.prune_checkpoint_days,
                               keep=[store.config_hash], storage_options=store.storage_options)
    except Exception as exc:  # noqa: BLE001 - housekeeping never fails a finished run
        _say(f"warning: checkpoint stores not pruned: {exc}", options.quiet)
        return
    if removed:
        _say(f"removed {len(removed)} checkpoint store(s) of configs not run for "
             f"{options.prune_checkpoint_days:g} days", options.quiet)


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _checkpoint_store(checkpoint, out, job: str, loaded):
    """The run's :class:`~riskdask.checkpoint.CheckpointStore`, or None when turned off."""
    if checkpoint is False:
        return None
    from .checkpoint import CheckpointStore, full_config_hash

    url = str(Path(out) / ".checkpoints") if checkpoint in (None, True) else str(checkpoint)
    return CheckpointStore(url, job=job, config_hash=full_config_hash(job, loaded.config))


def _decide_resume(store, resume: bool | None) -> tuple[bool, str | None]:
    """Whether to reuse checkpoints, and a note saying why (``resume`` None: automatic)."""
    if store is None:
        return False, None
    meta = _read_meta(store)
    unfinished = meta is not None and meta.get("status") in ("running", "failed")
    n = store.count() if (resume or (resume is None and unfinished)) else 0
    if resume is None and unfinished and n:
        return True, (f"resuming: the previous attempt of this config (pid {meta.get('pid')} "
                      f"on {meta.get('host')}, started {meta.get('started')}) did not finish; "
                      f"found {n} checkpointed partial(s) in {store.location()} to reuse")
    if resume and n:
        return True, f"resuming: found {n} checkpointed partial(s) in {store.location()}"
    if resume:
        return True, f"--resume: no checkpoints of this config in {store.location()}; computing all"
    if store.exists():
        store.clear()   # a fresh start never mixes in partials of an earlier attempt
    return False, None


def _read_meta(store) -> dict | None:
    try:
        with store.fs.open(f"{store.root}/meta.json", "rb") as fh:
            return json.loads(fh.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


def _run_locked(spec, loaded, options: RunOptions, *, store=None, resume=False,
                notes=()) -> JobResult:
    """The generic run path (body of :func:`run_job`, called with the run lock held):
    load, compute, present, write outputs, manifest and report, rename into place."""
    from .engine import Checkpoints

    cfg = loaded.config
    provider = options.client_provider or ClientProvider(
        client=options.client, scheduler=options.scheduler, cluster=options.cluster,
        n_workers=options.n_workers, security=options.security, quiet=options.quiet,
        profile=options.profile, connect_timeout=options.connect_timeout,
        wait_workers=options.wait_workers)
    own_provider = options.client_provider is None
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    record = Record()
    streams = Streams(cfg.seed, spec.purposes)
    meta = dict(status="running", pid=os.getpid(), host=platform.node(),
                started=started.isoformat(timespec="seconds"), config_source=loaded.source)
    checkpoints = Checkpoints(store, resume=resume, meta=meta) if store is not None else None
    engine_options = {"checkpoints": checkpoints, "progress": options.show_progress}
    if options.wait_workers is not None:
        engine_options["worker_grace"] = float(options.wait_workers)
    ctx = JobContext(job=spec.name, record=record, streams=streams, client_factory=provider,
                     engine_options=engine_options)
    run_dir = None
    profile_file = profile_start = off = None
    quiet = options.quiet
    try:
        with _config_errors_name(loaded.source):
            with ctx.stage("load"):
                inputs = spec.load(cfg, record, streams)
            with contextlib.ExitStack() as stack:
                if options.profile:
                    profile_file, profile_start = _start_profile(stack, ctx)
                    off = _workers_without_profiler(ctx.client)
                    if off:
                        notes = [*notes, off]
                        _say(off, quiet)
                with ctx.stage("compute"):
                    result = spec.compute(cfg, inputs, ctx)
            if profile_start is not None and not off:   # (off: that note says why already)
                empty = _empty_worker_profile(ctx.client, profile_start)
                if empty:
                    notes = [*notes, empty]
                    _say(empty, quiet)
            checkpoint_log = checkpoints.finish() if checkpoints is not None else []
        for entry in checkpoint_log:          # damaged checkpoints set aside, plans not kept
            if entry.get("note"):
                notes = [*notes, entry["note"]]
                _say(entry["note"], quiet)
        if resume and checkpoint_log and not any(e["reused"] for e in checkpoint_log):
            notes = [*notes, "resumed, but no checkpointed partial matched this run's plans "
                             "(edited code or inputs): every chunk was computed"]
        if not isinstance(result, spec.result):
            raise TypeError(f"{spec.name}: compute returned {type(result).__name__}, "
                            f"not {spec.result.__name__}")
        with ctx.stage("present"):
            outputs = spec.present(result, cfg)
        if not isinstance(outputs, Outputs):
            raise TypeError(f"{spec.name}: present returned {type(outputs).__name__}, "
                            "not riskdask.protocol.Outputs")
        summary = to_jsonable(outputs.summary)
        run_dir = RunDirectory(options.out, spec.name, loaded.hash, started)
        history_row = None
        if options.history:     # a history problem never fails a run that has its results
            history_row, history_notes = _add_history(outputs, spec, result, run_dir,
                                                      loaded.hash, record, summary)
            for line in history_notes:
                notes = [*notes, line]
                _say(line, quiet)
        with ctx.stage("write"):
            tables, figures = write_outputs(run_dir.tmp, outputs)
        if profile_file is not None:
            shutil.move(profile_file, run_dir.tmp / PROFILE_FILE)
        manifest = {
            "job": spec.name,
            "riskdask_version": package_versions().get("riskdask"),
            "config_source": loaded.source,
            "overrides": loaded.overrides,
            "config_hash": loaded.hash,
            "config": cfg.model_dump(mode="json"),
            "seed": cfg.seed,
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
            "checkpoints": None if store is None else {
                "store": store.location(), "resumed": bool(resume), "plans": checkpoint_log,
                "reused": int(sum(p["reused"] for p in checkpoint_log)),
                "computed": int(sum(p["computed"] for p in checkpoint_log)),
                # what writing cost the workers, as they reported it (engine._save)
                **{key: round(sum(p.get(key, 0) for p in checkpoint_log), 3)
                   for key in ("files_written", "write_seconds", "bytes_written")}},
            "profile": PROFILE_FILE if profile_file is not None else None,
            "options": _options_manifest(options),
            "notes": list(notes),
        }
        write_json(run_dir.tmp / "summary.json", summary)
        write_json(run_dir.tmp / "manifest.json", manifest)
        page = render_report(run_dir=run_dir.tmp, job=spec.name, title=spec.title,
                             summary=summary,
                             headline=outputs.headline or None,
                             figures=figures, tables=tables, sections=outputs.sections,
                             manifest=to_jsonable(manifest), run_name=run_dir.name)
        with writing(run_dir.tmp / "report.html"):
            (run_dir.tmp / "report.html").write_text(page, encoding="utf-8")
        final = run_dir.commit()
    except BaseException:
        if run_dir is not None:
            run_dir.abort()
        if store is not None:   # keep the partials for --resume (or the next scheduled run)
            with contextlib.suppress(Exception):
                if not store.exists():
                    raise FileNotFoundError  # nothing was checkpointed: leave nothing
                store.write_meta(status="failed", pid=os.getpid(), host=platform.node(),
                                 started=started.isoformat(timespec="seconds"),
                                 config_source=loaded.source)
        raise
    finally:
        if own_provider:
            provider.close()
        if profile_file is not None and Path(profile_file).exists():
            Path(profile_file).unlink()
    if history_row is not None:  # the run is in place: a history problem only warns
        from .history import append

        history_row["run"] = final.name
        try:
            append(final.parent, history_row)
        except Exception as exc:  # noqa: BLE001 - the run is in place already
            _say(f"warning: run history not updated: {type(exc).__name__}: {exc}", quiet)
    if store is not None:
        if options.keep_checkpoint:
            store.write_meta(status="complete", run=final.name)
        else:
            store.clear()
    return JobResult(job=spec.name, summary=json.loads((final / "summary.json").read_text()),
                     run_dir=final, config=cfg, manifest=manifest,
                     headline=list(outputs.headline), result=result)


def _options_manifest(options: RunOptions) -> dict:
    """The run options worth recording (not the client object or TLS files)."""
    keep = ("scheduler", "n_workers", "out", "keep", "lock", "checkpoint", "resume",
            "keep_checkpoint", "profile", "connect_timeout", "wait_workers", "history")
    out = {k: getattr(options, k) for k in keep}
    out["cluster"] = None if options.cluster is None else str(options.cluster)
    return to_jsonable({k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()})


#: Dask's performance report inside the run directory (``--profile``).
PROFILE_FILE = "dask-performance.html"


def _start_profile(stack: contextlib.ExitStack, ctx) -> tuple[str, float]:
    """Record Dask's ``performance_report`` (task stream, worker profiles, bandwidth) for the
    compute stage into a temporary file; returns its path and the report's start time."""
    import tempfile

    from distributed import performance_report

    ctx.client  # the report attaches to the running client
    fd, path = tempfile.mkstemp(prefix="riskdask-profile-", suffix=".html")
    os.close(fd)
    os.chmod(path, output_mode())       # like every other output, not mkstemp's 0600
    # BokehJS inlined: the page works on an air-gapped cluster (no CDN)
    report = performance_report(filename=path, mode="inline")
    stack.enter_context(report)         # its __enter__ returns None, not the report
    return path, report.start


def _empty_worker_profile(client, start: float) -> str | None:
    """A note when the workers hand no profile sample taken since ``start`` (the report's
    worker-profile panel is then empty), or None.

    A worker gives only the samples of profile cycles completed since ``start``
    (``distributed.worker.profile.cycle``, 1 s by default), so a compute stage shorter than a
    cycle can leave the panel empty even with the profiler on.
    """
    try:
        count = client.profile(start=start).get("count", 0)
    except Exception:  # noqa: BLE001 - a note is not worth failing the run for
        return None
    if count:
        return None
    return ("--profile: the workers handed the performance report no profile samples (a "
            "compute stage shorter than a profile cycle, distributed.worker.profile.cycle, "
            "or workers without the profiler), so its worker-profile panel is empty")


def _workers_without_profiler(client) -> str | None:
    """A note when some workers run without Dask's statistical profiler (their worker-profile
    panels in the performance report stay empty), or None."""
    try:
        on = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    except Exception:  # noqa: BLE001 - a note is not worth failing the run for
        return None
    off = sum(1 for v in on.values() if not v)
    if not off:
        return None
    return (f"--profile: {off} of {len(on)} worker(s) run without Dask's statistical profiler, "
            "so the performance report has no worker profiles from them; workers riskdask "
            "does not start read their own Dask config: start them with "
            "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True")


def _add_history(outputs, spec, result, run_dir, config_hash: str, record,
                 summary) -> tuple[dict | None, list[str]]:
    """This run's history row (the job's own ``metrics``) and notes; the history so far, with
    it, as a report section and figure. An unreadable ``history.parquet`` is set aside and a
    fresh one started; any other problem leaves the run without history, with a note."""
    from . import history as hist

    notes: list[str] = []
    try:
        metrics = (spec.metrics(result) if spec.metrics is not None
                   else hist.generic_metrics(summary))
        row = hist.history_row(metrics, run=run_dir.name,
                               finished=dt.datetime.now(dt.timezone.utc).isoformat(
                                   timespec="seconds"),
                               config_hash=config_hash, inputs=record.inputs)
        try:
            table = hist.with_row(run_dir.job_dir, row)
        except hist.HistoryUnreadable as exc:
            moved = hist.set_aside(run_dir.job_dir)
            notes.append(f"{exc}; moved it aside to {moved.name} and started a new history")
            table = hist.with_row(run_dir.job_dir, row)
        outputs.section("Run history", hist.history_html(table))
        outputs.figure("history", hist.history_figure(table),
                       caption=f"Headline figures of the last {len(table)} run(s) of "
                               f"{spec.name}, oldest first (error bars: the interval each job "
                               "gives -- one standard error, or the quartiles over splits; "
                               "dashed: config or inputs changed)")
    except Exception as exc:  # noqa: BLE001 - the results stand without their history
        notes.append(f"run history not updated: {type(exc).__name__}: {exc}")
        return None, notes
    return row, notes
