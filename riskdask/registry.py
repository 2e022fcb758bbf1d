"""The job registry: the only place that knows which jobs exist and where they live.

The API, the CLI and the tests ask here; each name maps to a module of the top-level
``jobs/`` package that defines ``JOB`` (a :class:`riskdask.protocol.Job`). Modules are
imported on first use only, so listing the jobs loads none of their dependencies twice.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError

__all__ = ["MAIN_JOBS", "EXTRA_JOBS", "get_job", "available_jobs"]

#: The analyses, in the order ``riskdask run all`` (and ``make run``) runs them.
MAIN_JOBS = ("credit", "hazard", "coup")
#: Diagnostic jobs: listed by ``riskdask jobs``, not run by ``run all``.
EXTRA_JOBS = ("selfcheck",)

_MODULES = {name: f"jobs.{name}" for name in MAIN_JOBS + EXTRA_JOBS}


def get_job(name: str):
    """The declared :class:`~riskdask.protocol.Job` called ``name``."""
    if name not in _MODULES:
        raise ConfigError(f"unknown job {name!r} (available: {', '.join(_MODULES)})", key="job")
    job = importlib.import_module(_MODULES[name]).JOB
    if job.name != name:
        raise RuntimeError(f"{_MODULES[name]}.JOB is named {job.name!r}, not {name!r}")
    return job


def available_jobs(include_extra: bool = True) -> dict:
    """``{name: Job}`` of the main jobs (and the diagnostic ones), in run order."""
    names = MAIN_JOBS + (EXTRA_JOBS if include_extra else ())
    return {name: get_job(name) for name in names}
