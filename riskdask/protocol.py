"""The job protocol: what a job declares, what it receives, what it returns.

A job is data, not a module convention. A job module defines one :class:`Job`::

    JOB = Job(name="credit", description=..., title=..., config=Config, result=CreditResult,
              load=load_inputs, compute=compute, present=present, metrics=metrics,
              purposes=("scenarios", "credit_ul_tiles"))

and registers it in its distribution's ``riskdask.jobs`` entry-point group
(:mod:`riskdask.registry`). The generic run path (:func:`riskdask.api.run_job`) does the rest,
the same for every job:

1. resolve the config (:mod:`riskdask.config`: the pydantic model is canonical);
2. ``inputs = job.load(cfg, record, streams)`` -- read and validate every input; files and row
   exclusions go into the :class:`~riskdask.io.Record` (the manifest's ``inputs`` and
   ``exclusions``); a job that generates its inputs draws from ``streams``; nothing has
   touched a cluster yet, so bad input fails fast (exit 2);
3. ``result = job.compute(cfg, inputs, ctx)`` -- plan, map and reduce on ``ctx.engine``, time
   stages with ``ctx.stage``, draw random streams from ``ctx.streams``; returns the job's
   typed, frozen result (every figure the job reports, with its error or interval);
4. ``outputs = job.present(result, cfg)`` -- summary, tables, figures, report sections and the
   headline, as data (:class:`Outputs`);
5. ``job.metrics(result)`` -- the run's row of the run history (:mod:`riskdask.history`);
6. the runner writes the outputs, the manifest and ``report.html`` and renames the run
   directory into place.

``riskdask validate`` runs step 2 only. Nothing in this module imports Dask or a job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .io import Record
from .streams import Streams, stream_seed

__all__ = ["Job", "Outputs", "Figure", "JobContext", "Streams", "Metric", "stream_seed"]


@dataclass
class Figure:
    """A matplotlib figure to be saved as ``figures/<name>.png``."""

    name: str
    figure: Any
    caption: str = ""


@dataclass
class Outputs:
    """Everything a job's ``present`` hands back for the runner to write.

    Attributes
    ----------
    summary : dict
        Headline figures (plain values, numpy scalars allowed): ``summary.json``.
    tables : dict of str to pandas.DataFrame or pyarrow.Table
        Written as ``tables/<name>.parquet`` (pyarrow), in insertion order; a
        ``pyarrow.Table`` plain and uncompressed (kept data read back whole and fast).
    figures : list of Figure
    sections : list of (title, html)
        Extra report sections, after the headline. The html is built with
        :mod:`riskdask.htmlkit` (every value escaped).
    headline : list of (label, str)
        The console lines and the report's headline table, already formatted
        (:mod:`riskdask.formatting`).
    """

    summary: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    sections: list = field(default_factory=list)
    headline: list = field(default_factory=list)

    def table(self, name: str, frame) -> None:
        if name in self.tables:
            raise ValueError(f"table {name!r} given twice")
        self.tables[name] = frame

    def figure(self, name: str, fig, caption: str = "") -> None:
        self.figures.append(Figure(name, fig, caption))

    def section(self, title: str, html: str) -> None:
        self.sections.append((title, str(html)))


@dataclass(frozen=True)
class Metric:
    """One figure of the run history: ``value`` with an interval ``[lo, hi]`` when the job
    gives one (``± one standard error``, or the quartiles over splits, ...)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def pm(cls, value, error) -> "Metric":
        """``value ± error`` (no interval when the error is missing or not finite)."""
        v, e = _finite_or_none(value), _finite_or_none(error)
        if v is None or e is None:
            return cls(v)
        return cls(v, v - e, v + e)


def _finite_or_none(x) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


@dataclass
class JobContext:
    """What ``compute`` receives besides config and inputs.

    The cluster is connected on first use of :attr:`engine` (or :attr:`client`), so jobs that
    compute nothing heavy never start one. ``engine_options`` are the run's
    :class:`riskdask.engine.Engine` settings (checkpoints, progress bars, worker grace).
    """

    job: str
    record: Record
    streams: Streams
    client_factory: Callable[[], Any] | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    _client: Any = None
    _engine: Any = None

    @property
    def client(self):
        if self._client is None:
            if self.client_factory is None:
                raise RuntimeError("this context has no cluster")
            with self.stage("cluster"):
                self._client = self.client_factory()
        return self._client

    @property
    def engine(self):
        """The run's :class:`riskdask.engine.Engine` on :attr:`client`."""
        if self._engine is None:
            from .engine import Engine

            self._engine = Engine(self.client, **dict(self.engine_options))
        return self._engine

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; the seconds go to ``manifest.json`` under ``timings``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 6)


@dataclass(frozen=True)
class Job:
    """A declared job.

    Attributes
    ----------
    name, description, title : str
        ``riskdask jobs`` lists name and description; the title heads ``report.html``.
    config : type
        The pydantic model; its defaults are the job's defaults (``configs/<name>.toml`` only
        overrides what a size needs). It has a ``seed`` field: the root of every stream.
    result : type
        The frozen dataclass ``compute`` returns.
    load : callable ``(cfg, record, streams) -> inputs``
        Reads and validates every input; raises :class:`~riskdask.errors.InputError`.
    compute : callable ``(cfg, inputs, ctx) -> result``
    present : callable ``(result, cfg) -> Outputs``
        Summary, tables, figures, report sections and headline; no computing on the cluster.
    metrics : callable ``(result) -> dict``, optional
        The run's history row: ``{name: Metric | float | str}`` (:mod:`riskdask.history`).
    purposes : tuple of str
        The random streams the job draws (:class:`Streams`); the first is the primary one,
        ``SeedSequence(cfg.seed)`` itself.
    main : bool
        Run by ``riskdask run all`` (diagnostic jobs are not).
    order : int
        Place in ``riskdask jobs`` and ``run all`` (lower first; then by name).
    """

    name: str
    description: str
    title: str
    config: type
    result: type
    load: Callable[[Any, Record, Streams], Any]
    compute: Callable[[Any, Any, JobContext], Any]
    present: Callable[[Any, Any], Outputs]
    metrics: Callable[[Any], Mapping[str, Any]] | None = None
    purposes: tuple[str, ...] = ("main",)
    main: bool = True
    order: int = 100

    def __post_init__(self):
        if not (dataclasses.is_dataclass(self.result) and isinstance(self.result, type)
                and self.result.__dataclass_params__.frozen):
            raise TypeError(f"job {self.name!r}: result must be a frozen dataclass type")
        fields = getattr(self.config, "model_fields", {})
        if "seed" not in fields:
            raise TypeError(f"job {self.name!r}: its config has no 'seed' field")
        Streams(0, self.purposes)  # validates the declared purposes
