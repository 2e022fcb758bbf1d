"""``<out>/index.html``: every job's runs on one page, the page an on-call analyst opens first.

One table per job, newest run first: when it finished, its status, its headline figures with
their errors or intervals (the job's own history metrics, :mod:`riskdask.history`), what
changed since the run before (config, inputs) and a link to its report. Above them, what is
not a finished run: a run in progress (its hidden ``.tmp-*`` folder, with its pid), and an
attempt that died or failed and left checkpoints (the next run of that config resumes).

Rewritten atomically (a new file renamed over the old) by every successful run, and by
``riskdask index``; built with :mod:`riskdask.htmlkit`, so every value is escaped. A job whose
history cannot be read is listed with the reason, never a reason for the page to fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from . import htmlkit as h
from .history import HistoryUnreadable, format_history, read
from .schedule import TMP_NAME, finished_runs

__all__ = ["INDEX_FILE", "write_index", "render_index"]

INDEX_FILE = "index.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;border-bottom:1px solid #d6dae3;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #d6dae3;padding:.2rem .5rem;text-align:right;white-space:nowrap}
th{background:#f1f3f7} td:first-child,th:first-child{text-align:left}
.meta{color:#5b6475;font-size:.9rem} .scroll{overflow-x:auto} .warn{color:#a33}
"""


def _jobs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _attempts(out: Path, job: str) -> list[str]:
    """Runs in progress and attempts that left checkpoints behind, in words."""
    lines = []
    for tmp in sorted((out / job).glob(".tmp-*")):
        m = TMP_NAME.match(tmp.name)
        if m:
            lines.append(f"in progress or killed: run started {m.group('stamp')} "
                         f"(pid {m.group('pid')}, config {m.group('hash')})")
    for meta in sorted((out / ".checkpoints" / job).glob("*/meta.json")):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        status = info.get("status") if isinstance(info, dict) else None
        if status in ("running", "failed"):
            lines.append(f"attempt {status}: started {info.get('started')} on "
                         f"{info.get('host')} (config {meta.parent.name[:10]}); its "
                         "checkpoints are kept and the next run of that config resumes")
    return lines


def _job_section(out: Path, job: str, limit: int) -> list:
    parts = [h.tag("h2", job, id=f"job-{job}")]
    runs = finished_runs(out / job)
    attempts = _attempts(out, job)
    if attempts:
        parts.append(h.ul(attempts, class_="warn"))
    try:
        history = read(out / job)
    except HistoryUnreadable as exc:
        history = None
        parts.append(h.p(str(exc), class_="warn"))
    rows = format_history(history, limit=limit) if history is not None and len(history) else []
    by_run = {r[0]: r for r in rows[1:]}
    head = rows[0][2:] if rows else []
    finished = {}
    if history is not None and len(history):
        finished = dict(zip(history["run"].astype(str), history["finished"].astype(str)))
    body = []
    for run in reversed(runs[-limit:]):
        cells = by_run.get(run.name)
        link = h.tag("a", "report", href=f"{job}/{run.name}/report.html")
        status = "ok" if (run / "report.html").is_file() else "incomplete"
        figures = cells[2:] if cells else ["" for _ in head]
        changed = (cells[1] if cells else "") or "-"
        body.append([run.name, finished.get(run.name, ""), status, changed, *figures, link])
    if not body:
        parts.append(h.p("no finished run yet", class_="meta"))
        return parts
    latest = h.tag("a", "latest", href=f"{job}/latest/report.html")
    parts.append(h.p(f"{len(runs)} finished run(s), newest first · ", latest,
                     class_="meta"))
    header = ["run", "finished", "status", "changed", *head, "report"]
    parts.append(h.tag("div", h.table(header, body, class_="runs"), class_="scroll"))
    return parts


def render_index(out: str | Path, limit: int = 50) -> str:
    """The page for the runs folder ``out`` (the newest ``limit`` runs of each job)."""
    out = Path(out)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts = [h.tag("h1", f"riskdask runs in {out.absolute()}"),
             h.p(f"updated {stamp}; each figure with its error or interval as the job "
                 "reports it, Δ since the run before", class_="meta")]
    jobs = _jobs(out) if out.is_dir() else []
    for job in jobs:
        parts += _job_section(out, job.name, limit)
    if not jobs:
        parts.append(h.p("no runs yet"))
    head = h.tag("head", h.Markup('<meta charset="utf-8">'), h.tag("title", "riskdask runs"),
                 h.tag("style", h.Markup(CSS)))
    return "<!doctype html>\n" + str(h.tag("html", head, h.tag("body", h.join(parts, "\n")),
                                           lang="en"))


def write_index(out: str | Path) -> Path:
    """Rewrite ``<out>/index.html`` atomically; returns its path."""
    from .run import exclusive_temp

    target = Path(out) / INDEX_FILE
    page = render_index(out)
    with exclusive_temp(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    return target
