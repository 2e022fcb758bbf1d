"""The job registry: jobs register themselves, the library discovers them.

A job is a :class:`riskdask.protocol.Job` object named in the ``riskdask.jobs`` entry-point
group of an installed distribution (the way xarray finds its backends)::

    [project.entry-points."riskdask.jobs"]
    credit = "jobs.credit:JOB"

This project's own jobs are declared so in ``pyproject.toml``; a fourth job in another
distribution needs no change here. The library never imports a job module by name: the
entry point says where it is. Entry points are read on first use and cached; a job module is
imported only when its job is asked for (listing them imports each once).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from .errors import ConfigError

__all__ = ["GROUP", "get_job", "available_jobs", "main_jobs", "job_names", "refresh"]

#: The entry-point group jobs register in.
GROUP = "riskdask.jobs"


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            raise RuntimeError(f"two distributions register a job {ep.name!r}: "
                               f"{found[ep.name].value} and {ep.value}")
        found[ep.name] = ep
    return found


@functools.lru_cache(maxsize=None)
def _load(name: str):
    job = _entry_points()[name].load()
    if getattr(job, "name", None) != name:
        raise RuntimeError(f"entry point {name!r} ({_entry_points()[name].value}) is a job "
                           f"named {getattr(job, 'name', None)!r}, not {name!r}")
    return job


def refresh() -> None:
    """Forget what was discovered (after installing a job distribution in this process)."""
    _entry_points.cache_clear()
    _load.cache_clear()


def get_job(name: str):
    """The registered :class:`~riskdask.protocol.Job` called ``name``."""
    if name not in _entry_points():
        raise ConfigError(f"unknown job {name!r} (available: {', '.join(job_names())})",
                          key="job")
    return _load(name)


def available_jobs(include_extra: bool = True) -> dict:
    """``{name: Job}`` of the main jobs (and the diagnostic ones), in run order
    (``Job.order``, then name)."""
    jobs = [_load(n) for n in _entry_points()]
    jobs.sort(key=lambda j: (not j.main, j.order, j.name))
    return {j.name: j for j in jobs if include_extra or j.main}


def main_jobs() -> tuple[str, ...]:
    """The analyses ``riskdask run all`` (and ``make run``) runs, in order."""
    return tuple(available_jobs(include_extra=False))


def job_names() -> tuple[str, ...]:
    return tuple(available_jobs())
