"""credit: CreditMetrics portfolio credit risk (seed ``004_8c70402d356208da.txt``, 3.2-3.3).

Analytic FV, EFV, EL (split into migration and default) and UL (eqs. 3.1-3.11); distributed
Monte Carlo VaR and ES (Steps 0-6) with an exact tree reduce, Monte Carlo standard errors,
optional importance sampling, and each obligor's contribution to ES; Step 7 tail fits
(continuity-corrected on loss lattices, a held-out verdict); name / sector HHI and the
granularity adjustment; factor stresses re-weighting the run's own chunks; the kept scenario
losses for ``riskdask whatif`` (:mod:`riskdask.credit.whatif_run`).

The declaration only: config (:mod:`riskdask.credit.config`) -> inputs and compute
(:mod:`riskdask.credit.pipeline`: Step 0 and analytics, simulation chunks and, for a full
correlation matrix, analytic pair tiles on the engine) -> outputs and history metrics
(:mod:`riskdask.credit.outputs`). The maths is in ``riskdask/credit/``.

Random streams: ``"scenarios"`` (the primary, ``SeedSequence(seed)``: the Monte Carlo
chunks, and the plain-sampling twin of an importance-sampling run on the same chunks) and
``"ul_tiles"`` (the plan of the full-matrix UL pair tiles; the tile kernel draws nothing) and
``"whatif"`` (``riskdask whatif``: the idiosyncratic draws of an added new obligor, keyed by
its id; a run itself never draws it).
"""

from __future__ import annotations

from riskdask.credit.config import Config
from riskdask.credit.outputs import metrics, present
from riskdask.credit.pipeline import PURPOSES, CreditResult, compute, load_inputs
from riskdask.protocol import Job

__all__ = ["JOB", "Config", "CreditResult"]

JOB = Job(name="credit",
          description="CreditMetrics portfolio credit risk: analytic EL/UL, distributed Monte "
                      "Carlo VaR/ES with exact reduce, importance sampling, ES contributions",
          title="riskdask · credit — CreditMetrics portfolio VaR / ES (ECB approach, seed "
                "§3.2–3.3)",
          config=Config, result=CreditResult, load=load_inputs, compute=compute,
          present=present, metrics=metrics, purposes=PURPOSES, order=1)
