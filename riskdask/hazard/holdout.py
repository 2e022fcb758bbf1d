"""Which criterion predicts: a temporal holdout of the directions (issue 22, item 3).

For every origin year ``t`` of the period (from ``first_closure_year`` to the year before the
last), the person-year model (:mod:`riskdask.hazard.likelihood`) is fitted on the person-years
of calendar years ``<= t`` only, and predicts the closure of every NPO at risk in ``t + 1``
from its time-at-risk in ``t + 1`` (its grant status that year is part of ``T``; its outcome
never enters a fit). The directions compared:

* ``likelihood`` -- the profile-likelihood maximum **re-estimated on years <= t** in each fold
  (a 1-degree grid refined between neighbours);
* ``dev`` -- the run's Dev optimum (chosen on all years, so if anything favoured);
* ``T0`` -- ``theta = 0`` (``T = N0``);
* ``k1 = k2`` -- ``theta = 45``, the seed's direction.

Scores, pooled over the folds' person-years: the **log score** ``mean(y log p + (1 - y)
log(1 - p))`` (higher is better; ``p`` clipped to ``[1e-12, 1 - 1e-12]``) and the **Brier
score** ``mean((p - y)^2)`` (lower is better); a reliability table per criterion (deciles of its
pooled predictions: mean predicted vs observed rate). Paired comparisons: the mean per-row
difference of log scores between the best criterion and each other one, with a 95 % interval
from the NPO-clustered standard error (an NPO's rows in different folds are not independent).
Pure numpy/scipy: :func:`holdout_tile` is the engine kernel (one task per origin year).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .likelihood import (DEFAULT_DF, PersonYears, aggregate, direction_coef, fit_at,
                         predict_probability, refine_maximum)

__all__ = ["CRITERIA", "HoldoutInput", "holdout_fold", "holdout_tile", "likelihood_theta",
           "HoldoutReport", "holdout_report", "log_score"]

#: The criteria compared, in the report's order.
CRITERIA = ("likelihood", "dev", "T0", "k1 = k2")
_EPS = 1e-12


def likelihood_theta(agg, definition: str, k0: float = 0.0, df: int = DEFAULT_DF,
                     step_deg: float = 1.0) -> float:
    """The profile-likelihood maximum over ``[0, 90]`` (grid of ``step_deg``, refined)."""
    grid = np.linspace(0.0, 90.0, int(round(90 / step_deg)) + 1)

    def ll(t):
        return fit_at(agg, direction_coef(definition, t, k0), df).loglik

    return refine_maximum(grid, np.array([ll(t) for t in grid]), ll)[0]


def log_score(p, y) -> np.ndarray:
    """Per-row Bernoulli log score ``y log p + (1 - y) log(1 - p)``."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, np.float64)
    return y * np.log(p) + (1 - y) * np.log1p(-p)


@dataclass(frozen=True)
class HoldoutInput:
    """What every worker needs for the holdout; sent to the cluster once."""

    py: PersonYears
    origins: np.ndarray      # year columns t
    definition: str
    k0: float
    dev_theta_deg: float
    df: int


def holdout_fold(py: PersonYears, t: int, definition: str, k0: float, dev_theta_deg: float,
                 df: int = DEFAULT_DF) -> dict:
    """Fit on person-years of years ``<= t``, predict year ``t + 1``, for every criterion.

    Returns
    -------
    dict
        ``rows`` (indices of the predicted person-years), ``theta`` (criterion -> direction
        used) and ``p`` (criterion -> predicted probabilities, aligned with ``rows``).
    """
    train = py.year_index <= t
    rows = np.flatnonzero(py.year_index == t + 1)
    agg = aggregate(py.features[train], py.event[train])
    theta = {"likelihood": likelihood_theta(agg, definition, k0, df),
             "dev": float(dev_theta_deg), "T0": 0.0, "k1 = k2": 45.0}
    p = {}
    for name in CRITERIA:
        coef = direction_coef(definition, theta[name], k0)
        fit = fit_at(agg, coef, df)
        p[name] = predict_probability(fit, py.features[rows] @ coef)
    return {"origin": int(t), "rows": rows, "theta": theta, "p": p}


def holdout_tile(chunk, shared: HoldoutInput) -> list:
    """Engine kernel: the folds of origins ``[chunk.start, chunk.stop)``."""
    return [holdout_fold(shared.py, int(t), shared.definition, shared.k0,
                         shared.dev_theta_deg, shared.df)
            for t in shared.origins[chunk.start:chunk.stop]]


@dataclass(frozen=True)
class HoldoutReport:
    """Scores, paired comparisons, reliability and the per-fold directions."""

    scores: pd.DataFrame
    paired: pd.DataFrame
    reliability: pd.DataFrame
    folds: pd.DataFrame
    best: str
    statement: str

    def summary(self) -> dict:
        return {"best": self.best, "statement": self.statement,
                "scores": self.scores.set_index("criterion").to_dict("index"),
                "paired_log_score": self.paired.set_index("versus").to_dict("index"),
                "n_folds": int(len(self.folds))}


def _clustered_mean_ci(diff: np.ndarray, cluster: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``diff`` and its 95 % interval from the cluster-robust standard error."""
    n = diff.size
    mean = float(diff.mean())
    _, inv = np.unique(cluster, return_inverse=True)
    s = np.bincount(inv, weights=diff - mean)
    g = s.size
    if g < 2:
        return mean, float("nan"), float("nan")
    se = float(np.sqrt(g / (g - 1) * np.sum(s * s)) / n)
    return mean, mean - 1.959964 * se, mean + 1.959964 * se


def holdout_report(py: PersonYears, folds: list, n_bins: int = 10) -> HoldoutReport:
    """Pool the folds (:func:`holdout_fold`) into scores, paired intervals and reliability."""
    folds = sorted(folds, key=lambda f: f["origin"])
    rows = np.concatenate([f["rows"] for f in folds])
    y = py.event[rows]
    npo = py.npo[rows]
    p = {c: np.concatenate([f["p"][c] for f in folds]) for c in CRITERIA}
    ls = {c: log_score(p[c], y) for c in CRITERIA}
    scores = pd.DataFrame([{"criterion": c, "log_score": float(ls[c].mean()),
                            "brier": float(np.mean((p[c] - y) ** 2)),
                            "mean_predicted": float(p[c].mean()), "observed_rate": float(y.mean()),
                            "n_person_years": int(y.size)} for c in CRITERIA])
    best = str(scores.criterion[int(np.argmax(scores.log_score.to_numpy()))])
    paired = []
    for c in CRITERIA:
        if c == best:
            continue
        m, lo, hi = _clustered_mean_ci(ls[best] - ls[c], npo)
        paired.append({"best": best, "versus": c, "mean_log_score_difference": m,
                       "ci95_lo": lo, "ci95_hi": hi, "distinguishable": bool(lo > 0)})
    paired = pd.DataFrame(paired)
    rel = []
    for c in CRITERIA:
        edges = np.unique(np.quantile(p[c], np.linspace(0, 1, n_bins + 1)))
        b = np.clip(np.searchsorted(edges, p[c], side="right") - 1, 0, max(edges.size - 2, 0))
        for k in np.unique(b):
            m = b == k
            rel.append({"criterion": c, "bin": int(k), "n": int(m.sum()),
                        "mean_predicted": float(p[c][m].mean()),
                        "observed_rate": float(y[m].mean())})
    fold_rows = [{"origin_index": f["origin"], "n_predicted": int(f["rows"].size),
                  **{f"theta_{c}": f["theta"][c] for c in CRITERIA}} for f in folds]
    worse = paired[paired.distinguishable].versus.tolist() if len(paired) else []
    same = paired[~paired.distinguishable].versus.tolist() if len(paired) else []
    statement = (f"{best} predicts best by the pooled log score"
                 + (f"; better than {', '.join(worse)} (paired 95% interval above 0)"
                    if worse else "")
                 + (f"; not distinguishable from {', '.join(same)}" if same else ""))
    return HoldoutReport(scores=scores, paired=paired, reliability=pd.DataFrame(rel),
                         folds=pd.DataFrame(fold_rows), best=best, statement=statement)
