"""Turning the grid-search output into answers: the optimum, its spread, bands, predictions.

All functions are pure (numpy / pandas in, numpy / pandas out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .gridsearch import GridPoints

__all__ = ["theta_deg", "ratio_k2_k1", "surface_frame", "optimum", "Optimum", "per_split_optima",
           "bootstrap_band", "between_fraction", "ray_points"]


def theta_deg(k1, k2) -> np.ndarray:
    """``atan2(k2, k1)`` in degrees (the one direction convention, grid and direction modes)."""
    return np.degrees(np.arctan2(np.asarray(k2, float), np.asarray(k1, float)))


def ratio_k2_k1(k1, k2) -> np.ndarray:
    """``k2 / k1`` (inf on the axis k1 = 0)."""
    k1 = np.asarray(k1, float)
    k2 = np.asarray(k2, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k1 != 0, k2 / np.where(k1 != 0, k1, 1.0), np.inf)


def surface_frame(points: GridPoints, dev: np.ndarray) -> pd.DataFrame:
    """The deviation surface as a table: one row per grid point.

    Columns ``k0, k1, k2, ratio_k2_k1, theta_deg, dev_mean, dev_sd, dev_min, dev_max`` over
    the R splits, ``n_splits_valid`` and ``dev_split_0`` (the first split alone, the seed's
    single-split Dev).
    """
    dev = np.atleast_2d(dev)
    valid = np.isfinite(dev)
    all_valid = valid.all(axis=1)
    safe = np.where(valid, dev, 0.0)
    mean = np.where(all_valid, safe.mean(axis=1), np.nan)  # nan where any split is undefined
    sd = safe.std(axis=1, ddof=1) if dev.shape[1] > 1 else np.zeros(dev.shape[0])
    sd = np.where(all_valid, sd, np.nan)
    lo = np.where(valid.any(axis=1), np.where(valid, dev, np.inf).min(axis=1), np.nan)
    hi = np.where(valid.any(axis=1), np.where(valid, dev, -np.inf).max(axis=1), np.nan)
    return pd.DataFrame({
        "k0": points.k0, "k1": points.k1, "k2": points.k2,
        "ratio_k2_k1": ratio_k2_k1(points.k1, points.k2),
        "theta_deg": theta_deg(points.k1, points.k2),
        "dev_mean": mean, "dev_sd": sd, "dev_min": lo, "dev_max": hi,
        "n_splits_valid": valid.sum(axis=1), "dev_split_0": dev[:, 0],
    })


@dataclass(frozen=True)
class Optimum:
    """The grid point with the smallest Dev (:func:`optimum`)."""

    index: int
    k0: float
    k1: float
    k2: float
    ratio_k2_k1: float
    theta_deg: float
    dev: float
    n_points_on_min_ray: int
    ratios_on_min_ray: list


def optimum(surface: pd.DataFrame, column: str = "dev_mean", rel_tol: float = 1e-9) -> Optimum:
    """The grid point with the smallest Dev (first in grid order on ties) and its ray.

    In relative mode all points with the same ``k2/k1`` share one Dev, so the minimum is a
    ray: ``n_points_on_min_ray`` counts grid points within ``rel_tol`` of the minimum. (Used
    where the search is over k0 only, T2; the k1/k2 searches use
    :func:`riskdask.hazard.uncertainty.optimum_report`.)
    """
    values = surface[column].to_numpy()
    if not np.isfinite(values).any():
        raise ValueError("Dev is undefined at every grid point (sample 1 has no closures on "
                         "the grid)")
    i = int(np.nanargmin(values))
    best = float(values[i])
    near = np.isfinite(values) & (np.abs(values - best) <= rel_tol * abs(best))
    row = surface.iloc[i]
    return Optimum(index=i, k0=float(row.k0), k1=float(row.k1), k2=float(row.k2),
                   ratio_k2_k1=float(row.ratio_k2_k1), theta_deg=float(row.theta_deg), dev=best,
                   n_points_on_min_ray=int(near.sum()),
                   ratios_on_min_ray=sorted({round(float(r), 9)
                                             for r in surface.ratio_k2_k1[near]}))


def per_split_optima(points: GridPoints, dev: np.ndarray) -> pd.DataFrame:
    """The optimum of every split on its own (the spread of the optimum across splits)."""
    rows = []
    for r in range(dev.shape[1]):
        col = dev[:, r]
        if not np.isfinite(col).any():
            continue
        i = int(np.nanargmin(col))
        rows.append({"split": r, "k0": points.k0[i], "k1": points.k1[i], "k2": points.k2[i],
                     "ratio_k2_k1": float(ratio_k2_k1(points.k1[i], points.k2[i])),
                     "theta_deg": float(theta_deg(points.k1[i], points.k2[i])), "dev": col[i]})
    return pd.DataFrame(rows)


def bootstrap_band(curves: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of bootstrap curves (rows = replicates)."""
    alpha = (1.0 - level) / 2.0
    return np.quantile(curves, alpha, axis=0), np.quantile(curves, 1.0 - alpha, axis=0)


def between_fraction(h_full, h1, h2, rel_tol: float = 1e-9) -> float:
    """Share of grid points where the full-sample curve lies between the two half-sample ones.

    The seed (Section 1) notes the whole-sample curve "always lies between the curves for
    subsamples"; this measures how often that holds here.
    """
    lo = np.minimum(h1, h2)
    hi = np.maximum(h1, h2)
    tol = rel_tol * np.maximum(np.abs(hi), 1e-300)
    return float(np.mean((h_full >= lo - tol) & (h_full <= hi + tol)))


def ray_points(ratio: float, k1_max: float, k2_max: float,
               n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Points of the ray ``k2 = ratio * k1`` inside the plotted box (for the heat map)."""
    if not np.isfinite(ratio):
        return np.zeros(n), np.linspace(0, k2_max, n)
    k1 = np.linspace(0, k1_max, n)
    k2 = ratio * k1
    keep = k2 <= k2_max
    return k1[keep], k2[keep]
