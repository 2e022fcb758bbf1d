"""The job protocol: what a job declares, what it receives, what it returns.

A job is data, not a module convention. ``jobs/<name>.py`` defines one :class:`Job`::

    JOB = Job(name="credit", description=..., title=..., config=Config,
              load=load_inputs, compute=compute, headline=headline)

and the generic run path (:func:`riskdask.api.run_job`) does the rest, the same for every job:

1. resolve the config (:mod:`riskdask.config`: the pydantic model is canonical);
2. ``inputs = job.load(cfg, record)`` -- read and validate every input; files and row
   exclusions go into the :class:`~riskdask.io.Record` (the manifest's ``inputs`` and
   ``exclusions``); nothing has touched a cluster yet, so bad input fails fast (exit 2);
3. ``outputs = job.compute(cfg, inputs, ctx)`` -- plan, map and reduce on the engine through
   ``ctx.client``, time stages with ``ctx.stage``, draw random streams from ``ctx.streams``;
4. the runner writes :class:`Outputs` (summary, Parquet tables, PNG figures, report sections)
   into the run directory and renames it into place.

``riskdask validate`` runs step 2 only. Nothing in this module imports Dask or a job.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .io import Record

__all__ = ["Job", "Outputs", "Figure", "JobContext", "Streams"]


@dataclass
class Figure:
    """A matplotlib figure to be saved as ``figures/<name>.png``."""

    name: str
    figure: Any
    caption: str = ""


@dataclass
class Outputs:
    """Everything a job's ``compute`` hands back for the runner to write.

    Attributes
    ----------
    summary : dict
        Headline figures (plain values, numpy scalars allowed): ``summary.json``.
    tables : dict of str to pandas.DataFrame
        Written as ``tables/<name>.parquet`` (pyarrow), in insertion order.
    figures : list of Figure
    sections : list of (title, html)
        Extra report sections, after the headline.
    """

    summary: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    sections: list = field(default_factory=list)

    def table(self, name: str, frame) -> None:
        if name in self.tables:
            raise ValueError(f"table {name!r} given twice")
        self.tables[name] = frame

    def figure(self, name: str, fig, caption: str = "") -> None:
        self.figures.append(Figure(name, fig, caption))

    def section(self, title: str, html: str) -> None:
        self.sections.append((title, html))


class Streams:
    """Random streams of one run, keyed by purpose (see :func:`riskdask.engine.stream_seed`).

    ``streams.seed("permutation")`` is the root :class:`numpy.random.SeedSequence` of that
    purpose; hand it to :func:`riskdask.engine.plan_chunks` (or ``numpy.random.default_rng``).
    The job's ``primary`` purpose keeps ``SeedSequence(seed)`` itself.
    """

    def __init__(self, seed: int, primary: str):
        self.root, self.primary = int(seed), primary

    def seed(self, purpose: str):
        from .engine import stream_seed

        return stream_seed(self.root, purpose, primary=self.primary)


@dataclass
class JobContext:
    """What ``compute`` receives besides config and inputs.

    The cluster is connected on first use of :attr:`client`, so jobs that compute nothing
    heavy never start one.
    """

    job: str
    record: Record
    streams: Streams
    client_factory: Callable[[], Any] | None = None
    timings: dict = field(default_factory=dict)
    _client: Any = None

    @property
    def client(self):
        if self._client is None:
            if self.client_factory is None:
                raise RuntimeError("this context has no cluster")
            with self.stage("cluster"):
                self._client = self.client_factory()
        return self._client

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
        overrides what a size needs).
    load : callable ``(cfg, record) -> inputs``
        Reads and validates every input; raises :class:`~riskdask.errors.InputError`.
    compute : callable ``(cfg, inputs, ctx) -> Outputs``
    headline : callable ``(summary) -> list of (label, value)``, optional
        The console lines and the report's headline table.
    primary_stream : str
        The purpose whose stream is ``SeedSequence(cfg.seed)`` itself.
    main : bool
        Run by ``riskdask run all`` (diagnostic jobs are not).
    """

    name: str
    description: str
    title: str
    config: type
    load: Callable[[Any, Record], Any]
    compute: Callable[[Any, Any, JobContext], Outputs]
    headline: Callable[[dict], list] | None = None
    primary_stream: str = "main"
    main: bool = True
