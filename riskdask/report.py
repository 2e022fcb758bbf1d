"""``report.html``: one self-contained page per run (figures embedded as data URIs).

Order follows what a reader wants first: headline numbers, then figures, then tables, then
how the run was made (inputs, exclusions, cluster, timings).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterable

from . import htmlkit as h
from .formatting import format_value
from .htmlkit import Markup

__all__ = ["flatten", "render_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;
color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;border-bottom:1px solid #d6dae3;
padding-bottom:.2rem;margin-top:2rem} .meta{color:#5b6475;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #d6dae3;
padding:.2rem .5rem;text-align:right} th{background:#f1f3f7}
td:first-child,th:first-child{text-align:left}
.headline td:first-child{font-weight:600} figure{margin:1rem 0} figure img{max-width:100%;
border:1px solid #e3e6ec} figcaption{color:#5b6475;font-size:.9rem} .scroll{overflow-x:auto}
.scroll td,.scroll th{white-space:nowrap}
"""


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested dicts into ``(dotted.key, value)`` rows; short lists stay as values."""
    rows: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        rows.append((prefix, data))
    return rows


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str | None = None) -> Markup:
    return h.table(None, ((k, format_value(v)) for k, v in rows), class_=cls)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _run_inputs_line(manifest: dict) -> Markup:
    """The data files and every ``--set`` override, next to the job name at the top."""
    files = [i.get("path") or i.get("description") or i.get("name")
             for i in manifest.get("inputs", [])]
    overrides = manifest.get("overrides") or []
    return h.p("data: ", h.join((h.code(f) for f in files), ", ") if files else "none",
               " · overrides: ",
               h.join((h.code(o) for o in overrides), ", ") if overrides else "none",
               class_="meta", id="run-inputs")


def _table_html(df, rows: int) -> Markup:
    """The first ``rows`` rows of a table, every cell formatted by the kit and escaped."""
    head = df.head(rows)
    cells = [[format_value(v.item() if hasattr(v, "item") else v) for v in record]
             for record in head.itertuples(index=False, name=None)]
    return h.tag("div", h.table([str(c) for c in head.columns], cells), class_="scroll")


def render_report(*, run_dir: Path, job: str, title: str, summary: dict, headline: list | None,
                  figures: list, tables: dict, sections: list, manifest: dict,
                  table_rows: int = 15, run_name: str | None = None) -> str:
    """Build the report page. ``figures`` are written PNGs (embedded, and named by path).

    ``run_dir`` is where the files are read from now (the temporary directory while the run
    is being written); ``run_name`` is the name the run directory will have. Every value is
    escaped (:mod:`riskdask.htmlkit`); a section's html is the job's htmlkit markup.
    """
    import pandas as pd

    run_name = run_name or run_dir.name
    parts = [h.tag("h1", title),
             h.p("job ", h.b(job), f" · run {run_name} · {manifest.get('started', '')} · "
                 f"config {manifest.get('config_source', '')}", class_="meta"),
             _run_inputs_line(manifest),
             h.tag("h2", "Headline figures"),
             _kv_table(headline if headline else flatten(summary), "headline")]
    if figures:
        parts.append(h.tag("h2", "Figures"))
        for fig in figures:
            label = fig.caption or fig.name
            parts.append(h.tag("figure",
                               h.tag_void("img", src=_img(run_dir / fig.path), alt=label,
                                          data_file=fig.path),
                               h.tag("figcaption", label), id=f"fig-{fig.name}"))
    for heading, body in sections:
        parts += [h.tag("h2", heading), Markup(body)]
    if tables:
        parts.append(h.tag("h2", "Tables"))
        for name, info in tables.items():
            df = pd.read_parquet(run_dir / info["path"])
            parts += [h.tag("h3", name),
                      h.p(f"{info['rows']:,} rows · ",
                          h.tag("a", h.code(info["path"]), href=info["path"]),
                          f" (first {min(table_rows, info['rows'])} shown)", class_="meta"),
                      _table_html(df, table_rows)]
    parts += _how_it_was_made(manifest)
    head = h.tag("head", Markup('<meta charset="utf-8">'), h.tag("title", title),
                 h.tag("style", Markup(CSS)))
    return ("<!doctype html>\n"
            + str(h.tag("html", head, h.tag("body", h.join(parts, "\n")), lang="en")))


def _how_it_was_made(manifest: dict) -> list:
    parts = [h.tag("h2", "How this run was made"),
             h.p("Full details: ", h.tag("a", "manifest.json", href="manifest.json"),
                 " (config, inputs, package versions, timings) · ",
                 h.tag("a", "summary.json", href="summary.json"), ".")]
    inputs = manifest.get("inputs", [])
    if inputs:
        parts.append(_kv_table([(i["name"], f"{i.get('rows')} rows · "
                                            f"{i.get('path') or i.get('description')}")
                                for i in inputs]))
    excl = manifest.get("exclusions", [])
    parts.append(h.p("Excluded rows: ", ", ".join(
        f"{e['count']:,} from {e['source']} ({e['reason']})" for e in excl) if excl else "none",
        "."))
    if manifest.get("profile"):
        parts.append(h.p("Where the time went: ",
                         h.tag("a", "Dask performance report", id="profile-link",
                               href=manifest["profile"]),
                         " (task stream, worker profiles, bandwidth)."))
    ck = manifest.get("checkpoints")
    if ck:
        parts.append(h.p(f"Checkpoints: {ck['reused']:,} chunk partial(s) reused, "
                         f"{ck['computed']:,} computed"
                         f"{' (resumed run)' if ck.get('resumed') else ''}."))
    cluster = manifest.get("cluster") or {}
    parts.append(h.tag("h3", "Stages and workers"))
    parts.append(_kv_table([("workers", cluster.get("n_workers")),
                            ("threads", cluster.get("threads")),
                            ("scheduler", cluster.get("scheduler"))]
                           + [("worker", w) for w in cluster.get("worker_names", [])]
                           + [(f"time: {k}", f"{v:.2f} s")
                              for k, v in manifest.get("timings", {}).items()],
                           "timings"))
    return parts
