"""Financial vulnerability of nonprofits: generalized time-at-risk, smoothed baseline hazard,
two-sample Dev and the k1/k2 grid search (seed ``003_ae2b3031728223ec.txt``; spec HAZARD.md),
and beside them a direction the data can identify: the profile likelihood of a person-year
Poisson model (:mod:`.likelihood`), its temporal holdout (:mod:`.holdout`) and a simulator with
a known truth (:mod:`.synthetic`).

Pure numpy kernels; the job's config is :mod:`.config`, its Dask wiring :mod:`.pipeline`
(``load_inputs``, ``compute``) and what it shows :mod:`.outputs` (``present``, ``metrics``);
``jobs/hazard.py`` declares the job.
"""
