"""Run history: each job's headline figures over its runs, with what changed in between.

Scheduled runs each leave a folder; this keeps one row per successful run in
``<out>/<job>/history.parquet`` so a reader sees how VaR, the hazard optimum or the coup
scores moved from run to run -- the seed's Step 7 (credit) exists "to avoid extreme 'jumps' in
time series of VaR or ES", and a jump is only visible against earlier runs.

- :func:`history_row`: the run's metrics as its job declares them (``Job.metrics``: value and,
  where the job gives one, an interval -- a Monte Carlo standard error, the spread over
  splits), plus the run's name, time, config hash and a fingerprint of its inputs. This
  module knows no job by name.
- :func:`append`: the new row added to the table atomically (the whole table rewritten to a
  temporary file, then ``os.replace``), so a reader never sees a half-written table.
- :func:`history_table` / :func:`format_history`: the rows with the change since the previous
  run and a mark where the config or the inputs changed (``riskdask history JOB``).
- :func:`history_figure`: one small time-series panel per metric, error bars, dashed lines
  where the config or inputs changed (shown in every report).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from . import htmlkit as h
from .formatting import estimate, sig
from .protocol import Metric

__all__ = ["HISTORY_FILE", "Metric", "HistoryUnreadable", "generic_metrics", "history_row",
           "append", "read", "set_aside",
           "history_table", "format_history", "history_figure", "history_html"]

HISTORY_FILE = "history.parquet"
META_COLUMNS = ("run", "finished", "config_hash", "inputs_fingerprint")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def generic_metrics(summary: dict) -> dict:
    """The history of a job that declares no ``metrics``: its first numeric summary values."""
    return {k: v for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _columns(name: str, value: Any) -> dict:
    """One metric's columns: ``name``, ``name [lo]``, ``name [hi]`` (or a text column)."""
    if isinstance(value, str):
        return {name: value}
    if isinstance(value, Metric):
        v, lo, hi = _num(value.value), _num(value.lo), _num(value.hi)
    else:
        v, lo, hi = _num(value), None, None
    return {name: v, f"{name} [lo]": lo, f"{name} [hi]": hi}


def inputs_fingerprint(inputs: list) -> str:
    """One hash over the inputs' names, row counts and content hashes (manifest ``inputs``)."""
    canon = json.dumps(sorted((i.get("name"), i.get("rows"), i.get("sha256")) for i in inputs),
                       default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def history_row(metrics: dict, *, run: str, finished: str, config_hash: str,
                inputs: list) -> dict:
    """The history row of one run: metadata, then per metric ``metric``, ``metric [lo]``,
    ``metric [hi]`` (a text metric is one column).

    ``metrics`` is the job's own ``metrics(result)`` (:class:`riskdask.protocol.Job`):
    ``{name: Metric | float | str}``; this module knows no job's figures.
    """
    row: dict[str, Any] = {"run": run, "finished": finished, "config_hash": config_hash,
                           "inputs_fingerprint": inputs_fingerprint(inputs)}
    for name, value in metrics.items():
        if name in META_COLUMNS:
            raise ValueError(f"metric name {name!r} is reserved for the history's metadata")
        row.update(_columns(name, value))
    return row


class HistoryUnreadable(ValueError):
    """``history.parquet`` exists but cannot be read as a history (the message names it)."""


def read(job_dir: str | Path):
    """The job's history table (oldest first), or an empty frame.

    A table of an older schema is migrated on the way in (missing metadata columns added
    empty). Raises :class:`HistoryUnreadable`, naming the file, when it is not a readable
    Parquet table.
    """
    import pandas as pd

    path = Path(job_dir).absolute() / HISTORY_FILE   # a relative "a:b" is no URL
    if not path.exists():
        return pd.DataFrame(columns=list(META_COLUMNS))
    try:
        table = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise HistoryUnreadable(f"cannot read the run history {path}: "
                                f"{type(exc).__name__}: {exc}") from None
    for column in META_COLUMNS:            # an older or hand-edited table
        if column not in table.columns:
            table[column] = "" if column != "run" else [f"run {i + 1}" for i in
                                                        range(len(table))]
    return table[[*META_COLUMNS, *[c for c in table.columns if c not in META_COLUMNS]]]


def set_aside(job_dir: str | Path) -> Path:
    """Move an unreadable ``history.parquet`` aside (``history.parquet.damaged-<stamp>``) so
    the next append starts a fresh table; returns where it went."""
    import datetime as dt

    path = Path(job_dir) / HISTORY_FILE
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{HISTORY_FILE}.damaged-{stamp}-{os.getpid()}")
    os.replace(path, target)
    return target


def with_row(job_dir: str | Path, row: dict):
    """The history table with ``row`` appended (not written)."""
    import pandas as pd

    old = read(job_dir)
    new = pd.DataFrame([row])
    if old.empty:
        return new
    return pd.concat([old, new], ignore_index=True)


def append(job_dir: str | Path, row: dict) -> Path:
    """Append ``row`` to ``<job_dir>/history.parquet`` atomically; returns the path.

    The table is written to a fresh temporary file (``O_EXCL``: never through a planted
    link) with the mode every output gets, then renamed over the old one.
    """
    from .errors import OutputError
    from .run import exclusive_temp

    job_dir = Path(job_dir)
    path = job_dir / HISTORY_FILE
    table = with_row(job_dir, row)
    try:
        with exclusive_temp(path) as tmp:
            table.to_parquet(tmp, engine="pyarrow", index=False)
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def metric_names(table) -> list[str]:
    return [c for c in table.columns if c not in META_COLUMNS and not c.endswith(("[lo]", "[hi]"))
            and table[c].dtype.kind in "fiu"]


def history_table(table):
    """Rows with ``changed`` (what differs from the previous run: config, inputs) and, per
    metric, ``Δ metric`` (change since the previous run)."""
    import pandas as pd

    t = table.reset_index(drop=True).copy()
    changes = []
    for i in range(len(t)):
        what = []
        if i and t.loc[i, "config_hash"] != t.loc[i - 1, "config_hash"]:
            what.append("config")
        if i and t.loc[i, "inputs_fingerprint"] != t.loc[i - 1, "inputs_fingerprint"]:
            what.append("inputs")
        changes.append("+".join(what))
    t["changed"] = changes
    for m in metric_names(t):
        t[f"Δ {m}"] = pd.to_numeric(t[m]).diff()
    return t


def _fmt_delta(d: float | None, lo: float | None, hi: float | None) -> str:
    if d is None or not math.isfinite(d):
        return ""
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        decimals = max(0, 1 - int(math.floor(math.log10((hi - lo) / 2))))
        return f"{d:+,.{decimals}f}"
    return f"{d:+.3g}"


def _cell(row, m):
    v = row.get(m)
    lo, hi = row.get(f"{m} [lo]"), row.get(f"{m} [hi]")
    v = None if v is None or v != v else float(v)
    lo = None if lo is None or lo != lo else float(lo)
    hi = None if hi is None or hi != hi else float(hi)
    return v, lo, hi


def format_history(table, limit: int = 20) -> list[list[str]]:
    """Rows of strings (a header first) for the console and the report."""
    t = history_table(table).tail(limit)
    metrics = metric_names(table)
    texts = [c for c in table.columns if c not in META_COLUMNS and c not in metrics
             and not c.endswith(("[lo]", "[hi]"))]
    rows = [["run", "changed", *[x for m in metrics for x in (m, "Δ")], *texts]]
    for _, r in t.iterrows():
        line = [str(r["run"]), r["changed"] or "-"]
        for m in metrics:
            v, lo, hi = _cell(r, m)
            d = r.get(f"Δ {m}")
            shown = estimate(v, lo=lo, hi=hi) if lo is not None and hi is not None else sig(v, 4)
            line += [shown, _fmt_delta(None if d != d else d, lo, hi)]
        line += [str(r.get(c, "")) if r.get(c) == r.get(c) else "" for c in texts]
        rows.append(line)
    return rows


def history_html(table, limit: int = 20) -> str:
    """The history as a report section (htmlkit: every cell escaped)."""
    rows = format_history(table, limit)
    return str(h.join([
        h.p(f"{len(table)} run(s) in ", h.code(HISTORY_FILE), "; Δ is the change since the "
            "previous run; 'changed' marks a new config or new inputs. Intervals: as each job "
            "gives them (± one standard error, or the quartiles over splits).", class_="meta"),
        h.tag("div", h.table(rows[0], rows[1:]), class_="scroll")]))


def history_figure(table):
    """Time series of every metric with its interval; dashed lines where config/inputs changed."""
    from .plotting import subplots

    t = history_table(table)
    metrics = metric_names(table)
    n = max(1, len(metrics))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), squeeze=False)
    x = list(range(1, len(t) + 1))
    marks = [i + 1 for i, c in enumerate(t["changed"]) if c]
    for ax, m in zip(axes.flat, metrics):
        vals, err_lo, err_hi = [], [], []
        for _, r in t.iterrows():
            v, lo, hi = _cell(r, m)
            vals.append(math.nan if v is None else v)
            err_lo.append(0.0 if lo is None or v is None else max(0.0, v - lo))
            err_hi.append(0.0 if hi is None or v is None else max(0.0, hi - v))
        ax.errorbar(x, vals, yerr=[err_lo, err_hi], fmt="o-", ms=4, capsize=3, lw=1)
        for xm in marks:
            ax.axvline(xm - 0.5, color="#c0392b", ls="--", lw=0.8)
        ax.set_title(m, fontsize=9)
        ax.set_xticks(x)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 5), useOffset=False)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.supxlabel("run (oldest first); dashed: config or inputs changed", fontsize=8)
    fig.tight_layout()
    return fig
