"""Calibration of pooled out-of-sample probabilities: reliability curve, Brier decomposition.

Forecasts are grouped into bins ``k``; in each, the mean forecast ``pbar_k`` is set against the
observed frequency ``obar_k`` (the reliability curve, with its counts ``n_k``). Murphy's (1973)
decomposition of the Brier score ``BS = (1/n) sum_i (p_i - o_i)^2`` on these bins is

    BS = REL - RES + UNC + WBV - WBC

with ``REL = (1/n) sum_k n_k (pbar_k - obar_k)^2`` (reliability: lower is better),
``RES = (1/n) sum_k n_k (obar_k - obar)^2`` (resolution: higher is better),
``UNC = obar (1 - obar)`` (uncertainty of the outcomes), and the two terms that Stephenson,
Coelho and Jolliffe (2008, "Two extra components in the Brier score decomposition", *Weather
and Forecasting* 23: 752-757) showed appear when forecasts inside a bin differ:
``WBV = (1/n) sum_k sum_{i in k} (p_i - pbar_k)^2`` (within-bin variance) and
``WBC = (2/n) sum_k sum_{i in k} (o_i - obar_k)(p_i - pbar_k)`` (within-bin covariance). With
them the identity is exact, not approximate, for any binning.

Coup attempts are rare (~0.35 % of rows), so equal-width bins on [0, 1] would put nearly every
forecast in the first bin; the default bins are quantiles of the forecasts (equal counts, ties
merged), ``"uniform"`` gives equal widths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["bin_edges", "assign_bins", "reliability_table", "brier_decomposition"]


def bin_edges(p: np.ndarray, n_bins: int = 10, strategy: str = "quantile") -> np.ndarray:
    """Bin edges on [0, 1]: quantiles of ``p`` (duplicates merged) or equal widths.

    With ``quantile`` and at least a ``1 / n_bins`` share of forecasts exactly 0, the first
    edge is ``-inf``: bin 0 holds the zeros, the other bins are quantiles of the positive
    forecasts.
    """
    p = np.asarray(p, dtype=np.float64)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy != "quantile":
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    zeros = p <= 0
    if len(p) and zeros.mean() >= 1 / n_bins and (~zeros).any():
        # A point mass at 0 (a small forest gives most rows exactly 0) would swallow the
        # quantile edges: the zeros get a bin of their own, (-inf, 0], and the positive
        # forecasts are split into quantile bins.
        inner = np.quantile(p[~zeros], np.linspace(0, 1, n_bins)[1:-1])
        return np.concatenate([[-np.inf], np.unique(np.concatenate([[0.0], inner, [1.0]]))])
    inner = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(p) else np.array([])
    return np.unique(np.concatenate([[0.0], inner, [1.0]]))


def assign_bins(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each forecast: bin ``k`` holds ``edges[k] < p <= edges[k + 1]`` (bin 0 from 0)."""
    k = np.searchsorted(edges, np.asarray(p, dtype=np.float64), side="left") - 1
    return np.clip(k, 0, len(edges) - 2)


def reliability_table(p: np.ndarray, y: np.ndarray, n_bins: int = 10,
                      strategy: str = "quantile") -> pd.DataFrame:
    """The reliability curve: per non-empty bin its edges, count, mean forecast, observed rate.

    Also the positives per bin and a Wilson 95 % interval for the observed rate (a bin of 1,000
    rows with 2 attempts says little; the interval shows how little).
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    edges = bin_edges(p, n_bins, strategy)
    k = assign_bins(p, edges)
    nb = len(edges) - 1
    n = np.bincount(k, minlength=nb)
    sp = np.bincount(k, weights=p, minlength=nb)
    so = np.bincount(k, weights=y, minlength=nb)
    has = n > 0
    rate = np.divide(so, n, out=np.zeros(nb), where=has)
    lo, hi = _wilson(so, n)
    table = pd.DataFrame({"bin": np.arange(nb), "lower": np.maximum(edges[:-1], 0.0),
                          "upper": edges[1:],
                          "count": n, "positives": so.astype(np.int64),
                          "mean_predicted": np.divide(sp, n, out=np.zeros(nb), where=has),
                          "observed_rate": rate, "observed_low95": lo, "observed_high95": hi})
    return table[has].reset_index(drop=True)


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.959963984540054
            ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (Wilson 1927); 0..1 where n = 0."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    safe = np.maximum(n, 1.0)
    ph = k / safe
    centre = (ph + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(ph * (1 - ph) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    # rounding can put a bound a hair past the estimate when k = 0 or k = n: clamp
    lo = np.clip(np.minimum(centre - half, ph), 0, 1)
    hi = np.clip(np.maximum(centre + half, ph), 0, 1)
    return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)


def brier_decomposition(p: np.ndarray, y: np.ndarray, n_bins: int = 10,
                        strategy: str = "quantile") -> dict[str, float]:
    """Murphy's decomposition with Stephenson et al.'s two within-bin terms (module docstring).

    Returns ``brier``, ``reliability``, ``resolution``, ``uncertainty``,
    ``within_bin_variance``, ``within_bin_covariance`` and ``n_bins`` (non-empty);
    ``reliability - resolution + uncertainty + within_bin_variance - within_bin_covariance``
    equals ``brier`` up to rounding.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(p)
    if n == 0:
        raise ValueError("no forecasts")
    edges = bin_edges(p, n_bins, strategy)
    k = assign_bins(p, edges)
    nb = len(edges) - 1
    cnt = np.bincount(k, minlength=nb).astype(np.float64)
    has = cnt > 0
    pbar = np.divide(np.bincount(k, weights=p, minlength=nb), cnt, out=np.zeros(nb), where=has)
    obar_k = np.divide(np.bincount(k, weights=y, minlength=nb), cnt, out=np.zeros(nb),
                       where=has)
    obar = y.mean()
    dp, do = p - pbar[k], y - obar_k[k]
    return {"brier": float(np.mean((p - y) ** 2)),
            "reliability": float(np.sum(cnt * (pbar - obar_k) ** 2) / n),
            "resolution": float(np.sum(cnt * (obar_k - obar) ** 2) / n),
            "uncertainty": float(obar * (1 - obar)),
            "within_bin_variance": float(np.sum(dp * dp) / n),
            "within_bin_covariance": float(2 * np.sum(do * dp) / n),
            "n_bins": int(has.sum())}
