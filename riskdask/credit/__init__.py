"""CreditMetrics portfolio credit risk (seed 004, sections 3.2-3.3): pure kernels, and the
job's config, pipeline and outputs.

Modules
-------
ratings     rating scale, migration matrix, Table 3.1 thresholds
valuation   cash flows, forward discount factors (eq. 3.3), CFV matrix (eq. 3.4), FV/EFV/EL/UL_i
bvn         vectorised bivariate normal distribution function (eq. 3.9)
analytic    portfolio UL (eqs. 3.8-3.11): brute force, collapsed cells, pair tiles
simulation  Monte Carlo kernel (Steps 1-4), exact reduce (Step 5), statistics (Step 6)
summary     mergeable loss summaries, VaR/ES definitions, batch-means errors
data        loaders of user files and of the embedded default data
synthetic   deterministic central-bank-style portfolio and the embedded data generator
figures     loss distribution with VaR/ES markers, top ES contributors
model       the model assembled from its parts: analytics, simulation model, IS shift, levels
adaptive    adaptive stopping: chunks in waves until the ES error is small enough
tail        Step 7 tail fits (Vasicek, GPD) and their QQ check
uncertainty Monte Carlo errors of VaR / ES, variance reduction
migration   compiled Step 3 kernels
config      the job's pydantic config models (never imported by a kernel module)
pipeline    load_inputs and compute of the job: the stages on the engine, CreditResult
outputs     present (summary, tables, figures, report, headline) and the history metrics
concentration  name / sector HHI, ASRF quantile and the granularity adjustment
stress      factor stress from the run's own chunks (re-weighted)
whatif      what-if kernels: regenerate obligors' states exactly, new obligors by id
whatif_run  ``riskdask whatif``: the Python API ``whatif(run_dir, add=, remove=)``
"""
