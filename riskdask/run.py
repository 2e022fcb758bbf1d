"""Run directories and the context a job runs in.

A run leaves ``runs/<job>/<UTC timestamp>-<config hash>/`` with ``manifest.json``,
``summary.json``, ``tables/*.parquet``, ``figures/*.png`` and ``report.html``. Everything is
written into a hidden temporary directory beside it and renamed into place only when the job
has succeeded, so a failed or interrupted run leaves no run directory behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["RunDirectory", "RunContext", "fingerprint_file", "package_versions", "to_jsonable"]

PACKAGES = ("riskdask", "dask", "distributed", "numpy", "pandas", "scipy", "scikit-learn",
            "lifelines", "pyarrow", "matplotlib", "pydantic", "click")
TMP_PREFIX = ".tmp-"


def fingerprint_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and pydantic models into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    return obj


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


class RunDirectory:
    """A run directory that only appears once it is complete.

    Parameters
    ----------
    root : path
        The runs folder (``runs`` by default); the job's folder is created below it.
    job : str
    config_hash : str
    started : datetime, optional
        UTC start time; names the directory.
    """

    def __init__(self, root: str | Path, job: str, config_hash: str,
                 started: dt.datetime | None = None):
        self.started = started or dt.datetime.now(dt.timezone.utc)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.job_dir = Path(root) / job
        self.name = f"{stamp}-{config_hash}"
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.job_dir / f"{TMP_PREFIX}{self.name}-{os.getpid()}"
        self.tmp.mkdir()
        self.final: Path | None = None

    def commit(self) -> Path:
        """Rename the finished temporary directory into place; return the final path."""
        target = self.job_dir / self.name
        n = 1
        while target.exists():  # two runs of one config in the same second
            n += 1
            target = self.job_dir / f"{self.name}-{n}"
        os.rename(self.tmp, target)
        self.final = target
        return target

    def abort(self) -> None:
        """Remove the temporary directory, and the job folder if this run was its only entry."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.job_dir.rmdir()
        except OSError:  # other runs live there
            pass


@dataclass
class _Figure:
    name: str
    path: str
    caption: str


@dataclass
class RunContext:
    """What a job's ``run(cfg, ctx)`` receives.

    The cluster is connected lazily, on first use of :attr:`client`, so that a job can load and
    validate its inputs (and fail with a clear message) before any worker is started.
    """

    job: str
    config: Any
    run_dir: RunDirectory | None
    client_factory: Callable[[], Any] | None = None
    manifest: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    exclusions: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    report_sections: list = field(default_factory=list)
    _client: Any = None

    # -- cluster ---------------------------------------------------------------------------
    @property
    def client(self):
        """The Dask client; the cluster is started (or connected) on first access."""
        if self._client is None:
            if self.client_factory is None:
                raise RuntimeError("this context has no cluster (validation only)")
            with self.stage("cluster"):
                self._client = self.client_factory()
        return self._client

    # -- bookkeeping -----------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; the seconds go to ``manifest.json`` under ``timings``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 6)

    def add_input(self, name: str, path: str | Path | None = None, *, rows: int | None = None,
                  fingerprint: str | None = None, description: str = "") -> None:
        """Record an input: a file (hashed) or embedded/synthetic data (give a fingerprint)."""
        entry = {"name": name, "path": str(path) if path else None, "rows": rows,
                 "sha256": fingerprint or (fingerprint_file(path) if path else None),
                 "description": description}
        self.inputs.append(entry)

    def exclude(self, source: str, reason: str, count: int, rows: list | None = None) -> None:
        """Record rows left out of the analysis: nothing is dropped silently."""
        if count:
            self.exclusions.append({"source": source, "reason": reason, "count": int(count),
                                    "rows": to_jsonable(list(rows)[:20]) if rows else None})

    # -- outputs ---------------------------------------------------------------------------
    def _out(self, sub: str) -> Path:
        if self.run_dir is None:
            raise RuntimeError("this context writes no outputs (validation only)")
        path = self.run_dir.tmp / sub
        path.mkdir(exist_ok=True)
        return path

    def write_table(self, name: str, df) -> Path:
        """Write a pandas DataFrame as ``tables/<name>.parquet`` (pyarrow)."""
        path = self._out("tables") / f"{name}.parquet"
        df.to_parquet(path, engine="pyarrow", index=False)
        self.tables[name] = {"path": f"tables/{name}.parquet", "rows": int(len(df)),
                             "columns": [str(c) for c in df.columns]}
        self._table_frames[name] = df
        return path

    def write_figure(self, name: str, fig, caption: str = "") -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self._out("figures") / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(_Figure(name, f"figures/{name}.png", caption))
        return path

    def set_summary(self, summary: dict) -> None:
        self.summary = to_jsonable(summary)

    def add_report_section(self, title: str, html: str) -> None:
        self.report_sections.append((title, html))

    def __post_init__(self):
        self._table_frames: dict = {}
