"""CreditMetrics portfolio credit risk (seed 004, sections 3.2-3.3): pure kernels.

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
"""
