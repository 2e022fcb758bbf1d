"""Run history: each job's headline figures over its runs, with what changed in between.

Scheduled runs each leave a folder; this keeps one row per successful run in
``<out>/<job>/history.parquet`` so a reader sees how VaR, the hazard optimum or the coup
scores moved from run to run -- the seed's Step 7 (credit) exists "to avoid extreme 'jumps' in
time series of VaR or ES", and a jump is only visible against earlier runs.

- :func:`history_row`: the run's headline metrics (:func:`headline_metrics`: value and, where
  the job reports one, an interval -- a Monte Carlo standard error, the spread over splits),
  plus the run's name, time, config hash and a fingerprint of its inputs.
- :func:`append`: the new row added to the table atomically (the whole table rewritten to a
  temporary file, then ``os.replace``), so a reader never sees a half-written table.
- :func:`history_table` / :func:`format_history`: the rows with the change since the previous
  run and a mark where the config or the inputs changed (``riskdask history JOB``).
- :func:`history_figure`: one small time-series panel per metric, error bars, dashed lines
  where the config or inputs changed (shown in every report).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HISTORY_FILE", "Metric", "headline_metrics", "history_row", "append", "read",
           "history_table", "format_history", "history_figure", "history_html", "fmt_pm"]

HISTORY_FILE = "history.parquet"
META_COLUMNS = ("run", "finished", "config_hash", "inputs_fingerprint")


@dataclass(frozen=True)
class Metric:
    """One headline figure: ``value`` with an interval ``[lo, hi]`` when the job gives one."""

    name: str
    value: float
    lo: float | None = None
    hi: float | None = None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pm(name: str, value: Any, se: Any) -> Metric | None:
    """``value ± se`` (one standard error) as a metric; no interval when the error is missing."""
    v, e = _num(value), _num(se)
    if v is None:
        return None
    return Metric(name, v, v - e, v + e) if e is not None else Metric(name, v)


def _credit(s: dict) -> list:
    out = [_pm("EL", s.get("el_simulated"), s.get("el_simulated_se")),
           _pm("UL", s.get("ul_simulated"), s.get("ul_simulated_se"))]
    for lv in s.get("levels", []):
        c = f"{100 * lv['confidence']:g}%"
        out += [_pm(f"VaR {c}", lv.get("var"), lv.get("var_se")),
                _pm(f"ES {c}", lv.get("es"), lv.get("es_se"))]
    return out


def _hazard(s: dict) -> list:
    o, sp = s.get("optimum", {}), s.get("optimum_spread", {})
    theta = _num(o.get("theta_deg"))
    lo, hi = _num(sp.get("theta_deg_q25")), _num(sp.get("theta_deg_q75"))
    out = [Metric("optimum theta (deg)", theta, lo, hi) if theta is not None else None,
           _pm("optimum k2/k1", o.get("ratio_k2_k1"), None),
           _pm("Dev at optimum", o.get("dev"), None)]
    return out


def _coup(s: dict) -> list:
    return [_pm(label, s.get(key), None) for key, label in (
        ("oob_roc_auc", "OOB ROC-AUC"), ("test_roc_auc", "test ROC-AUC"),
        ("oob_pr_auc", "OOB PR-AUC"), ("test_pr_auc", "test PR-AUC"),
        ("test_brier", "test Brier"))]


def _generic(s: dict) -> list:
    return [_pm(k, v, None) for k, v in s.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)][:8]


def _selfcheck(s: dict) -> list:
    n = _num(s.get("n")) or 0
    p = _num(s.get("exceedance_exact"))
    return [_pm("mean", s.get("mean"), math.sqrt(1 / n) if n else None),
            _pm("variance", s.get("variance"), math.sqrt(2 / n) if n else None),
            _pm("P(Z > level)", s.get("exceedance"),
                math.sqrt(p * (1 - p) / n) if n and p is not None else None)]


_EXTRACTORS = {"credit": _credit, "hazard": _hazard, "coup": _coup, "selfcheck": _selfcheck}


def headline_metrics(job: str, summary: dict) -> list[Metric]:
    """The figures the history follows for ``job`` (credit: EL, UL, VaR/ES per level with
    their standard errors; hazard: the optimum direction with its spread over splits
    (quartiles), k2/k1 and Dev; coup: OOB and test AUCs and the Brier score; any other job:
    its first numeric summary values)."""
    metrics = _EXTRACTORS.get(job, _generic)(summary)
    return [m for m in metrics if m is not None]


def _texts(job: str, summary: dict) -> dict:
    if job == "coup" and summary.get("league_top5"):
        top = summary["league_top5"][:3]
        return {"league top 3": ", ".join(f"{r['country']} {r['probability']:.2f}" for r in top)}
    return {}


def inputs_fingerprint(inputs: list) -> str:
    """One hash over the inputs' names, row counts and content hashes (manifest ``inputs``)."""
    canon = json.dumps(sorted((i.get("name"), i.get("rows"), i.get("sha256")) for i in inputs),
                       default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def history_row(job: str, *, run: str, finished: str, config_hash: str, inputs: list,
                summary: dict) -> dict:
    """The history row of one run: metadata, ``metric``, ``metric [lo]``, ``metric [hi]``."""
    row: dict[str, Any] = {"run": run, "finished": finished, "config_hash": config_hash,
                           "inputs_fingerprint": inputs_fingerprint(inputs)}
    for m in headline_metrics(job, summary):
        row[m.name] = m.value
        row[f"{m.name} [lo]"] = m.lo
        row[f"{m.name} [hi]"] = m.hi
    row.update(_texts(job, summary))
    return row


def read(job_dir: str | Path):
    """The job's history table (oldest first), or an empty frame."""
    import pandas as pd

    path = Path(job_dir) / HISTORY_FILE
    if not path.exists():
        return pd.DataFrame(columns=list(META_COLUMNS))
    return pd.read_parquet(path)


def with_row(job_dir: str | Path, row: dict):
    """The history table with ``row`` appended (not written)."""
    import pandas as pd

    old = read(job_dir)
    new = pd.DataFrame([row])
    if old.empty:
        return new
    return pd.concat([old, new], ignore_index=True)


def append(job_dir: str | Path, row: dict) -> Path:
    """Append ``row`` to ``<job_dir>/history.parquet`` atomically; returns the path."""
    from .errors import OutputError

    job_dir = Path(job_dir)
    path = job_dir / HISTORY_FILE
    table = with_row(job_dir, row)
    tmp = job_dir / f".{HISTORY_FILE}.tmp-{os.getpid()}"
    try:
        table.to_parquet(tmp, engine="pyarrow", index=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
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


def fmt_pm(value: float | None, lo: float | None = None, hi: float | None = None) -> str:
    """``value ± half-width`` with the half-width to 2 significant digits and the value to
    the same decimal place (no more digits than the interval supports)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.6g}"
    half = (hi - lo) / 2
    if half <= 0:
        return f"{value:.6g}"
    decimals = max(0, 1 - int(math.floor(math.log10(half))))
    centred = abs((hi + lo) / 2 - value) <= 1e-9 * max(1.0, abs(value))
    if centred:
        return f"{value:,.{decimals}f} ± {half:,.{decimals}f}"
    return f"{value:,.{decimals}f} [{lo:,.{decimals}f}, {hi:,.{decimals}f}]"


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
            line += [fmt_pm(v, lo, hi), _fmt_delta(None if d != d else d, lo, hi)]
        line += [str(r.get(c, "")) if r.get(c) == r.get(c) else "" for c in texts]
        rows.append(line)
    return rows


def history_html(table, limit: int = 20) -> str:
    rows = format_history(table, limit)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return (f"<p class='meta'>{len(table)} run(s) in <code>{HISTORY_FILE}</code>; Δ is the "
            "change since the previous run; 'changed' marks a new config or new inputs. "
            "Intervals: ± one standard error (Monte Carlo), or the quartiles over splits.</p>"
            f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>")


def history_figure(table, job: str):
    """Time series of every metric with its interval; dashed lines where config/inputs changed."""
    from .plotting import pyplot

    plt = pyplot()
    t = history_table(table)
    metrics = metric_names(table)[:12]
    n = max(1, len(metrics))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), squeeze=False)
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
