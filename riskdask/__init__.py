"""riskdask: batch risk analytics on Dask.

Jobs (see ``riskdask jobs``): ``credit`` (CreditMetrics portfolio VaR/ES), ``hazard`` (hazard of
nonprofit closure with a generalized time-at-risk), ``coup`` (random-forest coup-attempt risk).
"""

import os as _os

_os.environ.setdefault("MPLBACKEND", "Agg")  # batch engine: never open a window

__version__ = "0.1.0"

from .api import JobResult, run_job, validate_job  # noqa: E402
from .errors import ConfigError, InputError  # noqa: E402

__all__ = ["__version__", "run_job", "validate_job", "JobResult", "InputError", "ConfigError"]
