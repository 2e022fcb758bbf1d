"""riskdask: batch risk analytics on Dask.

Jobs (see ``riskdask jobs``): ``credit`` (CreditMetrics portfolio VaR/ES), ``hazard`` (hazard of
nonprofit closure with a generalized time-at-risk), ``coup`` (random-forest coup-attempt risk).

Importing the package is light: the API (and with it the cluster, config and report code,
pydantic and matplotlib) loads on first use of ``riskdask.run_job`` and friends, so a Dask
worker that unpickles a kernel from ``riskdask.credit`` loads only what that kernel needs.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "run_job", "validate_job", "JobResult", "InputError", "ConfigError"]

_LAZY = {"run_job": "api", "validate_job": "api", "JobResult": "api",
         "InputError": "errors", "ConfigError": "errors"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'riskdask' has no attribute {name!r}")
