"""Figures of the hazard job (matplotlib, headless): seed Figures 1 and 2 and the surface."""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskdask.plotting import log_scale, subplots

from .analysis import ray_points

__all__ = ["hazard_curves_figure", "dev_vs_k1_figure", "surface_heatmap", "dev_vs_k0_figure",
           "theta_histogram_figure", "dev_theta_band_figure", "cv_bandwidth_figure"]


def hazard_curves_figure(curves: pd.DataFrame, title: str):
    """Seed Figure 1: smoothed hazard rate vs time-at-risk for sample 1 and sample 2
    (plus the full sample and its bootstrap band)."""
    fig, ax = subplots(figsize=(6.4, 4.0))
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
    s = surface[surface.k0 == k0]
    k2_all = np.unique(s.k2)
    picks = k2_all[np.unique(np.linspace(0, k2_all.size - 1, min(n_curves, k2_all.size))
                             .round().astype(int))]
    fig, ax = subplots(figsize=(6.4, 4.0))
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
    from matplotlib.colors import LogNorm

    s = surface[surface.k0 == k0]
    k1 = np.unique(s.k1)
    k2 = np.unique(s.k2)
    Z = (s.pivot_table(index="k2", columns="k1", values="dev_mean", dropna=False)
         .reindex(index=k2, columns=k1))
    fig, ax = subplots(figsize=(6.0, 5.0))
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


def dev_vs_k0_figure(surface: pd.DataFrame):
    """Smallest Dev over (k1, k2) for each k0 (Appendix-A T1 definition)."""
    best = surface.groupby("k0").dev_mean.min()
    fig, ax = subplots(figsize=(5.6, 3.6))
    ax.plot(best.index, best.values, marker="o")
    ax.set_xlabel("k0")
    ax.set_ylabel("min Dev over (k1, k2)")
    return fig


def theta_histogram_figure(per_split: pd.DataFrame, interval: dict, theta_opt: float):
    """Per-split optimum directions: histogram of theta over [0, 90] with the interval."""
    fig, ax = subplots(figsize=(6.4, 3.6))
    th = per_split["theta_deg"].to_numpy(float)
    ax.hist(th, bins=np.linspace(0, 90, 31), color="tab:blue", alpha=0.75,
            label=f"per-split interior optima ({th.size} splits)")
    if np.isfinite(interval.get("lo", np.nan)):
        ax.axvspan(interval["lo"], interval["hi"], color="0.85", zorder=0,
                   label=f"{100 * interval['level']:.0f}% range across splits")
    ax.axvline(theta_opt, color="red", ls="--", label=f"optimum of mean Dev, {theta_opt:.3g} deg")
    ax.set_xlim(0, 90)
    ax.set_xlabel("optimum direction theta = atan2(k2, k1) (degrees; 0: k2 = 0, 90: k1 = 0)")
    ax.set_ylabel("splits")
    ax.yaxis.get_major_locator().set_params(integer=True)  # counts of splits
    ax.legend(fontsize=8)
    return fig


def dev_theta_band_figure(curve: pd.DataFrame, level: float):
    """Dev(theta): mean over splits with the ``level`` range, axes marked separately."""
    fig, ax = subplots(figsize=(6.4, 4.0))
    for k0, part in curve.groupby("k0"):
        inner = part[~part.on_axis].sort_values("theta_deg")
        lab = f" (k0 = {k0:g})" if curve.k0.nunique() > 1 else ""
        line, = ax.plot(inner.theta_deg, inner.dev_mean, lw=1.5, label=f"mean Dev over splits{lab}")
        ax.fill_between(inner.theta_deg, inner.dev_lo, inner.dev_hi, color=line.get_color(),
                        alpha=0.2, label=f"{100 * level:.0f}% range over splits{lab}")
        axes = part[part.on_axis]
        ax.errorbar(axes.theta_deg, axes.dev_mean,
                    yerr=[axes.dev_mean - axes.dev_lo, axes.dev_hi - axes.dev_mean],
                    fmt="s", color=line.get_color(), ms=5, capsize=3,
                    label=f"axes (separate models){lab}")
    ax.set_xlim(-2, 92)
    ax.set_xlabel("direction theta = atan2(k2, k1) (degrees)")
    ax.set_ylabel("Dev")
    ax.legend(fontsize=7)
    return fig


def cv_bandwidth_figure(candidates: pd.DataFrame, chosen_fraction: float):
    """Least-squares cross-validation score vs the bandwidth fraction."""
    fig, ax = subplots(figsize=(5.6, 3.6))
    ax.plot(candidates.fraction, candidates.cv, marker=".")
    log_scale(ax, "x")
    ax.axvline(chosen_fraction, color="red", ls="--",
               label=f"chosen {chosen_fraction:.3g} x max(T)")
    ax.set_xlabel("bandwidth / max(T)")
    ax.set_ylabel("LSCV score")
    ax.legend(fontsize=8)
    return fig
