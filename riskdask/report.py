"""``report.html``: one self-contained page per run (figures embedded as data URIs).

Order follows what a reader wants first: headline numbers, then figures, then tables, then
how the run was made (inputs, exclusions, cluster, timings).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable

__all__ = ["flatten", "format_value", "render_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;border-bottom:1px solid #d6dae3;
padding-bottom:.2rem;margin-top:2rem} .meta{color:#5b6475;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #d6dae3;
padding:.2rem .5rem;text-align:right} th{background:#f1f3f7} td:first-child,th:first-child{text-align:left}
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


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e7:
            return f"{value:,.6g}"
        return f"{value:.4e}"
    if isinstance(value, list) and len(value) > 12:
        return f"[{len(value)} values]"
    return str(value)


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "") -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(format_value(v))}</td></tr>"
                   for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _run_inputs_line(manifest: dict) -> str:
    """The data files and every ``--set`` override, next to the job name at the top."""
    files = [i.get("path") or i.get("description") or i.get("name")
             for i in manifest.get("inputs", [])]
    overrides = manifest.get("overrides") or []
    return ("<p class='meta' id='run-inputs'>data: "
            + (", ".join(f"<code>{html.escape(str(f))}</code>" for f in files) or "none")
            + " · overrides: "
            + (", ".join(f"<code>{html.escape(str(o))}</code>" for o in overrides) or "none")
            + "</p>")


def render_report(*, run_dir: Path, job: str, title: str, summary: dict, headline: list | None,
                  figures: list, tables: dict, sections: list, manifest: dict,
                  table_rows: int = 15, run_name: str | None = None) -> str:
    """Build the report page. ``figures`` are written PNGs (embedded, and named by path).

    ``run_dir`` is where the files are read from now (the temporary directory while the run
    is being written); ``run_name`` is the name the run directory will have.
    """
    import pandas as pd

    run_name = run_name or run_dir.name

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>job <b>{html.escape(job)}</b> · run {html.escape(run_name)} · "
             f"{html.escape(manifest.get('started', ''))} · config {html.escape(manifest.get('config_source', ''))}</p>",
             _run_inputs_line(manifest),
             "<h2>Headline figures</h2>",
             _kv_table(headline if headline else flatten(summary), "headline")]
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            src = _img(run_dir / fig.path)
            parts.append(f"<figure id='fig-{html.escape(fig.name)}'><img src='{src}' "
                         f"alt='{html.escape(fig.caption or fig.name)}' data-file='{html.escape(fig.path)}'>"
                         f"<figcaption>{html.escape(fig.caption or fig.name)}</figcaption></figure>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if tables:
        parts.append("<h2>Tables</h2>")
        for name, info in tables.items():
            df = pd.read_parquet(run_dir / info["path"])
            parts.append(f"<h3>{html.escape(name)}</h3><p class='meta'>{info['rows']:,} rows · "
                         f"<a href='{html.escape(info['path'])}'><code>{html.escape(info['path'])}</code></a> "
                         f"(first {min(table_rows, info['rows'])} shown)</p>"
                         f"<div class='scroll'>{df.head(table_rows).to_html(index=False, border=0, float_format=lambda x: f'{x:.6g}')}</div>")
    parts.append("<h2>How this run was made</h2>")
    parts.append("<p>Full details: <a href='manifest.json'>manifest.json</a> (config, inputs, "
                 "package versions, timings) · <a href='summary.json'>summary.json</a>.</p>")
    inputs = manifest.get("inputs", [])
    if inputs:
        parts.append(_kv_table([(i["name"], f"{i.get('rows')} rows · {i.get('path') or i.get('description')}")
                                for i in inputs]))
    excl = manifest.get("exclusions", [])
    parts.append("<p>Excluded rows: " + (", ".join(
        f"{e['count']:,} from {html.escape(e['source'])} ({html.escape(e['reason'])})" for e in excl)
        if excl else "none") + ".</p>")
    cluster = manifest.get("cluster") or {}
    if manifest.get("profile"):
        parts.append(f"<p>Where the time went: <a id='profile-link' href='{html.escape(manifest['profile'])}'>"
                     "Dask performance report</a> (task stream, worker profiles, bandwidth).</p>")
    ck = manifest.get("checkpoints")
    if ck:
        parts.append(f"<p>Checkpoints: {ck['reused']:,} chunk partial(s) reused, {ck['computed']:,} "
                     f"computed{' (resumed run)' if ck.get('resumed') else ''}.</p>")
    parts.append("<h3>Stages and workers</h3>")
    parts.append(_kv_table([("workers", cluster.get("n_workers")), ("threads", cluster.get("threads")),
                            ("scheduler", cluster.get("scheduler"))]
                           + [("worker", w) for w in cluster.get("worker_names", [])]
                           + [(f"time: {k}", f"{v:.2f} s") for k, v in manifest.get("timings", {}).items()],
                           "timings"))
    parts.append("</body></html>")
    return "\n".join(parts)
