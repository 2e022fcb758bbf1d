"""Optional covariates (field, function, age) through lifelines' Cox model (seed eq. 2).

The seed estimates only the baseline hazard (Section 2.1: "we estimated solely the baseline
HR"); with covariates the baseline of ``h_i(t) = h_0(t) exp(x_i beta)`` is taken from lifelines'
``CoxPHFitter`` (Breslow's estimator, at the covariate means, as lifelines reports it) and
smoothed with the same Gaussian kernel and grid rule as the covariate-free curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .estimators import round_times

__all__ = ["COVARIATES", "design_matrix", "cox_baseline"]

COVARIATES = ("field", "function", "age")


def design_matrix(npos: pd.DataFrame, covariates) -> pd.DataFrame:
    """Dummy-coded field/function (first level, sorted, is the reference) and numeric age.

    ``age`` is the age at the first break in grants (years).
    """
    parts = []
    for name in covariates:
        if name == "age":
            parts.append(pd.DataFrame(
                {"age": (npos.first_break_year - npos.founded_year).to_numpy(float)}))
        else:
            cat = pd.Categorical(npos[name].astype(str),
                                 categories=sorted(npos[name].astype(str).unique()))
            parts.append(pd.get_dummies(cat, prefix=name, drop_first=True, dtype=float))
    return pd.concat(parts, axis=1).reset_index(drop=True)


def cox_baseline(durations, events, X: pd.DataFrame):
    """Fit lifelines' CoxPHFitter; return the Breslow baseline increments and the coefficients.

    Returns
    -------
    times : ndarray
        Distinct failure times.
    increments : ndarray
        Baseline hazard increments at those times (lifelines' baseline, at the covariate means).
    params : pandas.DataFrame
        ``covariate, coef, exp_coef, se, p`` from lifelines' summary.
    concordance : float
    """
    from lifelines import CoxPHFitter

    df = X.copy()
    df["T"] = round_times(durations)
    df["E"] = np.asarray(events, dtype=bool)
    cph = CoxPHFitter().fit(df, "T", "E")
    H = cph.baseline_cumulative_hazard_.iloc[:, 0]
    dH = np.diff(np.concatenate(([0.0], H.to_numpy())))
    keep = dH > 0
    s = cph.summary
    params = pd.DataFrame({"covariate": s.index.astype(str), "coef": s["coef"].to_numpy(),
                           "exp_coef": s["exp(coef)"].to_numpy(), "se": s["se(coef)"].to_numpy(),
                           "p": s["p"].to_numpy()})
    return H.index.to_numpy()[keep], dH[keep], params, float(cph.concordance_index_)
