"""The coup job's figures (matplotlib, headless)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskdask.plotting import log_scale, subplots

__all__ = ["prf_vs_threshold", "pr_curve", "importances_top", "league_top",
           "pooled_backtest_figure", "reliability_figure", "model_pr_figure",
           "convergence_figure", "permutation_figure"]


def prf_vs_threshold(table: pd.DataFrame, optimal):
    fig, ax = subplots(figsize=(6.4, 3.8))
    for metric, style in (("precision", "-"), ("recall", "--"), ("f1", "-.")):
        ax.plot(table["threshold"], table[metric], style, label=metric)
    t = optimal.f1.threshold
    ax.axvline(t, color="grey", lw=0.8)
    ax.annotate(f"F1 optimum t={t:.6f}", (t, ax.get_ylim()[1] * 0.9), fontsize=8)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("threshold t (positive when p > t)")
    ax.set_ylabel("value on the test set")
    ax.legend()
    return fig


def pr_curve(table: pd.DataFrame, base_rate: float):
    fig, ax = subplots(figsize=(4.8, 4.0))
    ok = ~table["precision_undefined"].to_numpy()
    ax.plot(table["recall"][ok], table["precision"][ok], ".-", ms=2)
    ax.axhline(base_rate, color="grey", lw=0.8, ls=":", label=f"base rate {base_rate:.4f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend()
    return fig


def importances_top(table: pd.DataFrame, n: int = 20):
    top = table.head(n).iloc[::-1]
    has_perm = "permutation_importance" in top
    fig, axes = subplots(1, 2 if has_perm else 1, figsize=(9 if has_perm else 5, 5.5),
                         sharey=True, squeeze=False)
    y = np.arange(len(top))
    axes[0, 0].barh(y, top["impurity_importance"])
    axes[0, 0].set_yticks(y, top["feature"], fontsize=7)
    axes[0, 0].set_xlabel("impurity importance (seed)")
    if has_perm:
        axes[0, 1].barh(y, top["permutation_importance"],
                        xerr=top["permutation_importance_std"], color="tab:orange")
        axes[0, 1].set_xlabel("permutation importance (R² drop; ± sd over repeats)")
    return fig


def league_top(table: pd.DataFrame, threshold: float, n: int = 20):
    top = table.head(n).iloc[::-1]
    fig, ax = subplots(figsize=(5.5, 5.5))
    colors = np.where(top["clears_f1_threshold"], "tab:red", "tab:blue")
    ax.barh(np.arange(len(top)), top["probability"], color=colors)
    labels = [f"{r}{'=' if t > 1 else ''} {c}" for r, t, c in
              zip(top["rank"], top.get("tied", np.ones(len(top), int)), top["country"])]
    ax.set_yticks(np.arange(len(top)), labels, fontsize=7)   # "3= X": tied at rank 3
    ax.axvline(threshold, color="grey", lw=0.8, ls="--", label=f"F1 threshold {threshold:.4f}")
    ax.set_xlabel("predicted probability of a coup attempt (honest score)")
    ax.legend(fontsize=8)
    return fig


def pooled_backtest_figure(per_year: pd.DataFrame):
    """Per test year: attempts (bars) and ROC-AUC / PR-AUC where the year has an attempt."""
    fig, ax = subplots(figsize=(7, 3.6))
    ax.bar(per_year["test_year"], per_year["attempts"], color="lightgrey", label="attempts")
    ax.set_ylabel("attempts in the test year")
    ax.set_xlabel("test year (model trained only on earlier years)")
    ax2 = ax.twinx()
    for col, style in (("roc_auc", "o-"), ("pr_auc", "s-")):
        ax2.plot(per_year["test_year"], per_year[col].astype(float), style, ms=3, label=col)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("ROC-AUC, PR-AUC of the year (years with enough attempts)")
    none = per_year[per_year["attempts"] == 0]
    if len(none):
        ax.plot(none["test_year"], np.zeros(len(none)), "x", color="k", label="no attempt")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    return fig


def reliability_figure(table: pd.DataFrame, decomposition: dict):
    """Reliability curve (mean forecast vs observed rate, 95 % Wilson bars, counts)."""
    fig, ax = subplots(figsize=(5, 4.4))
    x, r = table["mean_predicted"], table["observed_rate"]
    err = np.clip(np.vstack([r - table["observed_low95"], table["observed_high95"] - r]), 0, None)
    ax.errorbar(x, r, yerr=err, fmt="o", ms=4, capsize=2, label="bins (95% Wilson)")
    for xi, ri, n in zip(x, r, table["count"]):
        ax.annotate(f"{n:,}", (xi, ri), fontsize=6, xytext=(3, 3), textcoords="offset points")
    hi = float(max(x.max(), table["observed_high95"].max(), 1e-3)) * 1.05
    ax.plot([0, hi], [0, hi], ":", color="grey", label="perfect calibration")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("mean predicted probability in bin")
    ax.set_ylabel("observed attempt rate in bin")
    d = decomposition
    ax.set_title(f"Brier {d['brier']:.2e} = REL {d['reliability']:.1e} - RES "
                 f"{d['resolution']:.1e} + UNC {d['uncertainty']:.1e} (+ within-bin)",
                 fontsize=7)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def model_pr_figure(curves: dict[str, pd.DataFrame], base_rate: float):
    """One precision-recall curve per model (from each model's 1,000-threshold sweep)."""
    fig, ax = subplots(figsize=(5.2, 4.2))
    for name, table in curves.items():
        ok = ~table["precision_undefined"].to_numpy()
        ax.plot(table["recall"][ok], table["precision"][ok], "-", lw=1.2, label=name)
    ax.axhline(base_rate, color="grey", lw=0.8, ls=":", label=f"base rate {base_rate:.4f}")
    ax.set_xlabel("recall (pooled backtest)")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7)
    return fig


def convergence_figure(table: pd.DataFrame):
    """OOB and test ROC-AUC, PR-AUC and Brier against the number of trees, each on its own
    axis (a PR-AUC of 0.01 beside a ROC-AUC of 0.7 on one axis is a flat line)."""
    fig, axes = subplots(1, 3, figsize=(10.5, 3.4))
    for ax, cols, name in ((axes[0], ("oob_roc_auc", "test_roc_auc"), "ROC-AUC"),
                           (axes[1], ("oob_pr_auc", "test_pr_auc"), "PR-AUC"),
                           (axes[2], ("oob_brier", "test_brier"), "Brier")):
        for col, style in zip(cols, ("o--", "o-")):
            ax.plot(table["n_trees"], table[col].astype(float), style, ms=3, label=col)
        log_scale(ax, "x")
        ax.set_xlabel("trees")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def permutation_figure(table: pd.DataFrame, n: int = 20):
    """Permutation importance, mean with ± sd bars and the min-max range over repeats."""
    top = table.sort_values("permutation_importance", ascending=False).head(n).iloc[::-1]
    fig, ax = subplots(figsize=(5.5, 5.5))
    y = np.arange(len(top))
    ax.barh(y, top["permutation_importance"], xerr=top["permutation_importance_std"],
            color="tab:orange", capsize=2)
    ax.plot(top["permutation_importance_min"], y, "|", color="k", ms=6)
    ax.plot(top["permutation_importance_max"], y, "|", color="k", ms=6)
    ax.set_yticks(y, top["feature"], fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("drop in R² when shuffled (± sd; | min, max over repeats)")
    return fig
