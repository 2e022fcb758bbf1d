"""``riskdask`` command line: a thin layer over :mod:`riskdask.api`.

Exit codes: 0 success, 2 bad input or config (one message naming file/row/column/key),
1 anything else, 75 skipped because the same job and config is already running (a scheduled
run overlapping the previous one), 130 interrupted. ``deploy/README.md`` has the table.
"""

from __future__ import annotations

import signal
import sys
import traceback

import click

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, InputError, OutputError
from .formatting import format_value
from .report import flatten
from .schedule import EXIT_LOCKED, RunLocked

EXIT_INTERRUPTED = 130

_common_config = [
    click.option("--config", "-c", "config", type=click.Path(dir_okay=False),
                 help="TOML config file (default: the job's embedded configs/<job>.toml)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a config key, e.g. --set simulation.n_scenarios=500000 "
                      "(repeatable)."),
]


def _apply(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="riskdask")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Batch risk analytics on Dask: credit VaR/ES, nonprofit hazard, coup-attempt risk.

    \b
    riskdask jobs                          list the jobs
    riskdask run credit                    run on a local Dask cluster (embedded default config)
    riskdask run all                       every main job, one shared cluster
    riskdask run credit --scheduler tcp://host:8786 --set simulation.n_scenarios=1000000
    riskdask validate hazard --config my.toml
    """
    ctx.obj = {"debug": debug}


@cli.command("jobs")
def jobs_cmd():
    """List the jobs this installation can run."""
    from .registry import available_jobs

    for name, spec in available_jobs().items():
        tag = "" if spec.main else "  (diagnostic)"
        click.echo(f"{name:<10} {spec.description}{tag}")


@cli.command("validate")
@click.argument("job")
@_apply(_common_config)
def validate_cmd(job, config, overrides):
    """Check a job's config and its input files without running anything."""
    from .api import validate_job

    info = validate_job(job, config, overrides=overrides)
    click.echo(f"ok: {job} config {info['config_source']} (hash {info['config_hash']})")
    for item in info["inputs"]:
        where = item["path"] or item["description"]
        click.echo(f"  input {item['name']}: {item['rows']} rows · {where}")
    for ex in info["exclusions"]:
        click.echo(f"  would exclude {ex['count']} {ex.get('unit', 'rows')} from {ex['source']}: "
                   f"{ex['reason']}")


@cli.command("run")
@click.argument("job_names", metavar="JOB...", nargs=-1, required=True)
@_apply(_common_config)
@click.option("--scheduler", metavar="ADDRESS",
              help="Use a running scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--cluster", "cluster_spec", type=click.Path(dir_okay=False),
              help="Build the cluster from a spec file in cluster/ (local, address, ssh, slurm, "
                   "pbs, kubernetes, ec2, gcp; see cluster/README.md).")
@click.option("--workers", "n_workers", type=click.IntRange(1, 512),
              help="Workers of the default local cluster (default: one per core).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder; each run writes <out>/<job>/<UTC stamp>-<config hash>/.")
@click.option("--keep", type=click.IntRange(min=1), metavar="N",
              help="Retention: after success keep only the N newest run directories of each job.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="TLS: CA certificate (PEM); with --tls-cert/--tls-key the client, a local "
                   "cluster and --cluster specs use tls://.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="TLS: this node's certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="TLS: this node's private key (PEM), if not inside --tls-cert.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or cluster messages.")
@click.option("--resume/--no-resume", default=None,
              help="Reuse the chunks checkpointed by an earlier attempt of the same job and "
                   "config (default: only when that attempt did not finish); --no-resume "
                   "starts afresh.")
@click.option("--checkpoint", "checkpoint", metavar="URL",
              help="Checkpoint store: a local folder or any fsspec URL (s3://bucket/prefix, "
                   "file:///..., ...) the workers and this process can both reach "
                   "(default: <out>/.checkpoints).")
@click.option("--no-checkpoint", is_flag=True, help="Do not checkpoint chunk partials.")
@click.option("--keep-checkpoint", is_flag=True,
              help="Keep the checkpoints after success (default: removed).")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Seconds an existing scheduler may take to answer (default 5).")
@click.option("--wait-workers", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Seconds to wait for an existing scheduler's first worker, and for a worker "
                   "to come back when a run has lost them all (default 60).")
@click.option("--profile", is_flag=True,
              help="Save Dask's performance report (task stream, worker profiles, bandwidth) "
                   "as dask-performance.html in the run directory, linked from report.html. "
                   "A local cluster's workers get Dask's profiler on for it; workers of "
                   "--scheduler or a --cluster spec use their own Dask config "
                   "(DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True; a note says when off).")
def run_cmd(job_names, config, overrides, scheduler, cluster_spec, n_workers, out, keep,
            tls_ca, tls_cert, tls_key, quiet, resume, checkpoint, no_checkpoint,
            keep_checkpoint, connect_timeout, wait_workers, profile):
    """Run one or more jobs (or `all`) and write their run directories.

    A run holds a lock per job and config: while it runs, a second run of the same job and
    config exits at once with code 75. On success <out>/<job>/latest points to the new run.
    """
    from .api import ClientProvider, RunOptions, run_job
    from .registry import main_jobs
    from .cluster import SecuritySpec

    names = list(job_names)
    if names == ["all"]:
        names = list(main_jobs())
    if config and len(names) > 1:
        raise click.UsageError("--config applies to one job; run the jobs one at a time")
    security = None
    if tls_ca or tls_cert or tls_key:
        if not (tls_ca and tls_cert):
            raise click.UsageError("TLS needs at least --tls-ca and --tls-cert")
        security = SecuritySpec(ca_file=tls_ca, cert=tls_cert, key=tls_key)
    if no_checkpoint and checkpoint:
        raise click.UsageError("give either --checkpoint or --no-checkpoint")
    locked = []
    with ClientProvider(scheduler=scheduler, cluster=cluster_spec, n_workers=n_workers,
                        security=security, quiet=quiet, connect_timeout=connect_timeout,
                        wait_workers=wait_workers, profile=profile) as provider:
        if scheduler:  # a wrong address fails now, before any job is loaded
            provider()
        for name in names:
            try:
                options = RunOptions(out=out, client_provider=provider, keep=keep,
                                     quiet=quiet, progress=False if quiet else None,
                                     checkpoint=False if no_checkpoint else checkpoint,
                                     resume=resume, keep_checkpoint=keep_checkpoint,
                                     profile=profile, wait_workers=wait_workers)
                result = run_job(name, config, overrides=overrides, options=options)
            except RunLocked as exc:  # the other jobs of `run all` still run
                if len(names) == 1:
                    raise
                click.echo(f"skipped {name}: {exc}", err=True)
                locked.append(name)
                continue
            _print_headline(result)
    if locked:
        raise RunLocked(f"{len(locked)} job(s) skipped because a run was in progress: "
                        f"{', '.join(locked)}")


@cli.command("history")
@click.argument("job")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder the job's runs were written to.")
@click.option("--last", default=20, show_default=True, type=click.IntRange(min=1),
              help="Show the last N runs.")
def history_cmd(job, out, last):
    """Headline figures of the job's earlier runs, with the change since the previous run and
    a mark where the config or the inputs changed."""
    from pathlib import Path

    from .history import HISTORY_FILE, HistoryUnreadable, format_history, read
    from .registry import get_job

    get_job(job)
    try:
        table = read(Path(out) / job)
    except HistoryUnreadable as exc:          # names the file; exit 2
        raise InputError(str(exc)) from None
    if table.empty:
        raise InputError(f"no run history yet for {job} in {Path(out) / job / HISTORY_FILE}")
    rows = format_history(table, limit=last)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())


@cli.command("index")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder.")
def index_cmd(out):
    """Rewrite <out>/index.html: every job's runs, status, headline figures and reports
    (every successful run does this itself)."""
    from .runs_index import write_index

    click.echo(str(write_index(out)))


@cli.group("checkpoints")
def checkpoints_cmd():
    """Checkpoint stores (<out>/.checkpoints or --checkpoint URL)."""


@checkpoints_cmd.command("prune")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder whose <out>/.checkpoints store is pruned.")
@click.option("--checkpoint", "checkpoint", metavar="URL",
              help="Prune this store instead (a folder or an fsspec URL).")
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True,
              metavar="DAYS", help="Remove the checkpoints of configs not written for DAYS.")
def checkpoints_prune_cmd(out, checkpoint, days):
    """Remove the checkpoints of configs that have not run for DAYS days (a config that
    changed leaves its store behind: a scheduled run never reuses it)."""
    from pathlib import Path

    from .checkpoint import prune_stores

    url = checkpoint or str(Path(out) / ".checkpoints")
    removed = prune_stores(url, older_than_days=days)
    for item in removed:
        click.echo(f"removed {url.rstrip('/')}/{item}")
    click.echo(f"{len(removed)} store(s) older than {days:g} day(s) removed from {url}")


@cli.command("whatif")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--add", "add", type=click.Path(exists=True, dir_okay=False),
              help="Positions to add (the portfolio file's columns).")
@click.option("--remove", "remove", default="", metavar="ID,...",
              help="Position (or obligor) ids to remove, comma-separated.")
@click.option("--table", "table", type=click.Path(dir_okay=False), default=None,
              help="Write the marginal ES of every obligor of the modified book here "
                   "(.csv or .parquet).")
def whatif_cmd(run_dir, add, remove, table):
    """Credit: VaR / ES of a run's book with positions added / removed, from the run's own
    scenarios (no re-simulation of the rest; riskdask.credit.whatif_run.whatif)."""
    from .credit.whatif_run import whatif, whatif_lines

    import os
    from pathlib import Path

    target = None if table is None else Path(table)
    if target is not None and target.suffix.lower() not in (".csv", ".parquet"):
        raise InputError("--table: give a .csv or .parquet file", file=target)
    res = whatif(run_dir, add=add, remove=[r for r in remove.split(",") if r.strip()])
    for line in whatif_lines(res):
        click.echo(line)
    if target is not None:         # whole or not at all: a temporary file moved into place
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            if target.suffix.lower() == ".csv":
                res["obligors"].to_csv(tmp, index=False)
            else:
                res["obligors"].to_parquet(tmp, index=False)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{target}: cannot write the marginal ES table "
                              f"({exc.strerror})") from None
        click.echo(f"marginal ES of {len(res['obligors'])} obligors: {target}")


def _print_headline(result) -> None:
    rows = result.headline or flatten(result.summary)
    click.echo(f"\n== {result.job} ==")
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {format_value(value)}")
    click.echo(f"  report: {result.report}")


def _on_sigterm(signum, frame):  # a scheduler's stop: clean up like Ctrl-C does
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """Console-script entry point; returns the process exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="riskdask", standalone_mode=False)
        return EXIT_OK
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except RunLocked as exc:
        click.echo(f"locked: {exc}", err=True)
        return EXIT_LOCKED
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # one line, as for every other bad input
        click.echo(f"error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except OutputError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_FAILURE
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted: no run directory was written (chunks already computed are "
                   "checkpointed: the next run of this config resumes from them)", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last-resort reporting for the CLI
        if debug:
            traceback.print_exc()
        else:
            click.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
                       err=True)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
