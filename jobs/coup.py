"""coup: coup-attempt risk from a REIGN-format panel (seed ``000_68eb94656699ea41.txt``).

A random-forest regressor gives every leader-month a probability of a coup attempt; the
exact one-pass sweep over the seed's 1,000 thresholds gives precision, recall and F1 at each,
the optimal and default thresholds and their confusion tables; impurity and permutation
importances; tree-count convergence. The honest forecast evaluation is a rolling-origin
backtest pooled over its test years (ROC-AUC, PR-AUC, Brier, sweep, calibration), with the
seed's forest beside gradient boosting, a logistic regression and climatology (the no-skill
reference: every score beside it, paired country-bootstrap differences between models),
out-of-sample decisions (F1 threshold from earlier years, top-k alerts, isotonic recalibration
on earlier years); the league table of the file's latest month is ranked by a model trained
on every month whose target was known before it. Within-month leader returns are spells.

The declaration only (:mod:`riskdask.protocol`): the config is
:mod:`riskdask.coup.config`, load and compute :mod:`riskdask.coup.pipeline`, present and
metrics :mod:`riskdask.coup.outputs`; the maths is in ``riskdask/coup/``.

Random streams (``purposes``): ``forest`` (the primary one, ``SeedSequence(seed)`` itself:
the sub-forests' tree plan), ``split`` (the random train/test split; ``split.seed``
overrides its seed), ``subsample`` (the permutation rows), ``permutation`` (the shuffles),
``bootstrap`` (the country bootstrap; the backtest's paired bootstrap is its child keyed
"backtest"), ``backtest`` (the backtest plan: each task's stream keyed by its model, fold and
sub-forest, so adding a model changes no other model's numbers).
"""

from __future__ import annotations

from riskdask.coup.config import Config
from riskdask.coup.outputs import metrics, present
from riskdask.coup.pipeline import PURPOSES, CoupResult, compute, load_inputs
from riskdask.protocol import Job

JOB = Job(name="coup",
          description="coup-attempt risk: distributed random-forest regressor on REIGN-format "
                      "data, exact 1,000-threshold sweep, pooled rolling-origin backtest, "
                      "calibration, model comparison, league table",
          title="riskdask · coup — coup-attempt risk (random-forest regressor, "
                "1,000-threshold sweep)",
          config=Config, result=CoupResult, load=load_inputs, compute=compute,
          present=present, metrics=metrics, purposes=PURPOSES, order=3)
