"""Figures of the hazard job (matplotlib, headless): seed Figures 1 and 2 and the surface."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import ray_points

__all__ = ["hazard_curves_figure", "dev_vs_k1_figure", "surface_heatmap", "dev_vs_theta_figure",
           "dev_vs_k0_figure"]


def _plt():
    from riskdask.plotting import pyplot

    return pyplot()


def hazard_curves_figure(curves: pd.DataFrame, title: str):
    """Seed Figure 1: smoothed hazard rate vs time-at-risk for sample 1 and sample 2
    (plus the full sample and its bootstrap band)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    t = curves["time_at_risk"]
    if "full_lower" in curves:
        ax.fill_between(t, curves["full_lower"], curves["full_upper"], color="0.85",
                        label="full sample, bootstrap band")
    ax.plot(t, curves["hazard_full"], color="0.35", lw=1.2, ls="--", label="full sample")
    ax.plot(t, curves["hazard_sample1"], color="tab:blue", lw=2, label="sample 1 (standard)")
    ax.plot(t, curves["hazard_sample2"], color="tab:red", lw=2, label="sample 2")
    ax.set_xlabel("time-at-risk T (conditional years)")
    ax.set_ylabel("hazard rate h(T)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def dev_vs_k1_figure(surface: pd.DataFrame, k0: float, n_curves: int = 6):
    """Seed Figure 2: Dev vs k1 at several constant k2 (at the given k0)."""
    plt = _plt()
    s = surface[surface.k0 == k0]
    k2_all = np.unique(s.k2)
    picks = k2_all[np.unique(np.linspace(0, k2_all.size - 1, min(n_curves, k2_all.size)).round().astype(int))]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k2 in picks:
        part = s[s.k2 == k2].sort_values("k1")
        ax.plot(part.k1, part.dev_mean, marker=".", ms=3, label=f"k2 = {k2:g}")
    ax.set_xlabel("k1")
    ax.set_ylabel("Dev (mean over splits)")
    ax.set_title(f"Deviation for constant k2 (k0 = {k0:g})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def surface_heatmap(surface: pd.DataFrame, k0: float, best_ratio: float, split_ratios=()):
    """Heat map of Dev over (k1, k2) with the optimum ray and the per-split optimum rays."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    s = surface[surface.k0 == k0]
    k1 = np.unique(s.k1)
    k2 = np.unique(s.k2)
    Z = s.pivot_table(index="k2", columns="k1", values="dev_mean", dropna=False).reindex(index=k2, columns=k1)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    vals = Z.to_numpy()
    finite = vals[np.isfinite(vals) & (vals > 0)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    mesh = ax.pcolormesh(k1, k2, vals, shading="nearest", cmap="viridis_r", norm=norm)
    fig.colorbar(mesh, ax=ax, label="Dev (mean over splits, log scale)")
    for r in sorted(set(np.round(split_ratios, 9))):
        x, y = ray_points(r, k1.max(), k2.max())
        ax.plot(x, y, color="white", lw=0.6, alpha=0.6)
    x, y = ray_points(best_ratio, k1.max(), k2.max())
    ax.plot(x, y, color="red", lw=1.5, ls="--", label=f"optimum ray k2/k1 = {best_ratio:.3g}")
    ax.set_xlim(k1.min(), k1.max())
    ax.set_ylim(k2.min(), k2.max())
    ax.set_xlabel("k1")
    ax.set_ylabel("k2")
    ax.set_title(f"Deviation surface (k0 = {k0:g}); thin lines: optimum of each split", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def dev_vs_theta_figure(surface: pd.DataFrame):
    """The 1-D direction search: Dev vs the angle of (k1, k2), one line per k0."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k0, part in surface.groupby("k0"):
        part = part.sort_values("theta_deg")
        ax.plot(part.theta_deg, part.dev_mean, label=f"k0 = {k0:g}")
    ax.set_xlabel("direction theta = atan2(k2, k1) (degrees)")
    ax.set_ylabel("Dev (mean over splits)")
    ax.legend(fontsize=8)
    return fig


def dev_vs_k0_figure(surface: pd.DataFrame):
    """Smallest Dev over (k1, k2) for each k0 (Appendix-A T1 definition)."""
    plt = _plt()
    best = surface.groupby("k0").dev_mean.min()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot(best.index, best.values, marker="o")
    ax.set_xlabel("k0")
    ax.set_ylabel("min Dev over (k1, k2)")
    return fig
