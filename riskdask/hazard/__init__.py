"""Financial vulnerability of nonprofits: generalized time-at-risk, smoothed baseline hazard,
two-sample Dev and the k1/k2 grid search (seed ``003_ae2b3031728223ec.txt``; spec HAZARD.md).

Pure numpy kernels; the Dask wiring lives in ``jobs/hazard.py``.
"""
