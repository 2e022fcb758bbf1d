"""hazard: financial vulnerability of nonprofits (seed 003_ae2b3031728223ec.txt, spec HAZARD.md).

config -> NPO panel (synthetic or file; panel rules counted) -> usable balanced splits (redrawn
or excluded, counted) -> grid tiles of (k1, k2, k0) plus the fixed choices (T0 = N0, k1 = k2,
k1 = 0) on the cluster (Dev per split) -> the interior optimum with its uncertainty and the
axes apart (or the fixed definition), bandwidth sensitivity -> curves, bootstrap band ->
the profile likelihood of the direction (person-year Poisson model, directions as tasks),
the temporal holdout of the directions (origin years as tasks) -> calibrated next-year
closure probabilities at ``prediction.direction`` (flagged past the data).

The declaration only: the config is :mod:`riskdask.hazard.config`, ``load``/``compute``
:mod:`riskdask.hazard.pipeline`, ``present``/``metrics`` :mod:`riskdask.hazard.outputs`; the
maths is in the other modules of :mod:`riskdask.hazard`.
"""

from __future__ import annotations

from riskdask.hazard.config import Config
from riskdask.hazard.outputs import metrics, present
from riskdask.hazard.pipeline import PURPOSES, HazardResult, compute, load_inputs
from riskdask.protocol import Job

__all__ = ["JOB", "Config", "HazardResult", "load_inputs", "compute", "present", "metrics"]

JOB = Job(name="hazard",
          description="nonprofit hazard analysis: generalized time-at-risk, two-sample Dev, "
                      "k1/k2 grid search, the likelihood direction",
          title="riskdask · hazard — financial vulnerability of nonprofits",
          config=Config, result=HazardResult, load=load_inputs, compute=compute,
          present=present, metrics=metrics,
          # "synthetic" first: SeedSequence(seed) itself draws the synthetic panel, as in
          # every earlier release; splits and bootstrap resamples have streams of their own
          purposes=PURPOSES, order=2)
