"""Job registry: one thin module per job wires config -> data -> map/reduce -> outputs.

A job module defines ``NAME``, ``DESCRIPTION``, ``Config`` (pydantic model), ``load_inputs(cfg,
ctx)``, ``run(cfg, ctx) -> summary`` and optionally ``TITLE`` and ``headline(summary)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from riskdask.errors import ConfigError

#: The analyses, in the order ``make run`` runs them.
MAIN_JOBS = ("credit", "hazard", "coup")
#: Diagnostic jobs (listed by ``riskdask jobs``, not run by ``make run``).
EXTRA_JOBS = ("selfcheck",)


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"jobs.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"jobs.{name}":
            return None
        raise


def available_jobs(include_extra: bool = True) -> dict[str, ModuleType]:
    """Job modules present in this checkout, by name."""
    names = MAIN_JOBS + (EXTRA_JOBS if include_extra else ())
    found = {name: _import(name) for name in names}
    return {name: mod for name, mod in found.items() if mod is not None}


def get_job(name: str) -> ModuleType:
    """The job module called ``name``; a clear error listing the known jobs otherwise."""
    mod = _import(name) if name in MAIN_JOBS + EXTRA_JOBS else None
    if mod is None:
        raise ConfigError(f"unknown job {name!r} (available: {', '.join(available_jobs())})",
                          key="job")
    return mod
