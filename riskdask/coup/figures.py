"""The coup job's figures (matplotlib, headless)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["prf_vs_threshold", "pr_curve", "importances_top", "league_top", "backtest_figure"]


def _plt():
    from riskdask.plotting import pyplot

    return pyplot()


def prf_vs_threshold(table: pd.DataFrame, optimal: dict):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for metric, style in (("precision", "-"), ("recall", "--"), ("f1", "-.")):
        ax.plot(table["threshold"], table[metric], style, label=metric)
    t = optimal["f1"]["threshold"]
    ax.axvline(t, color="grey", lw=0.8)
    ax.annotate(f"F1 optimum t={t:.6f}", (t, ax.get_ylim()[1] * 0.9), fontsize=8)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("threshold t (positive when p > t)")
    ax.set_ylabel("value on the test set")
    ax.legend()
    return fig


def pr_curve(table: pd.DataFrame, base_rate: float):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    ok = ~table["precision_undefined"].to_numpy()
    ax.plot(table["recall"][ok], table["precision"][ok], ".-", ms=2)
    ax.axhline(base_rate, color="grey", lw=0.8, ls=":", label=f"base rate {base_rate:.4f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend()
    return fig


def importances_top(table: pd.DataFrame, n: int = 20):
    plt = _plt()
    top = table.head(n).iloc[::-1]
    has_perm = "permutation_importance" in top
    fig, axes = plt.subplots(1, 2 if has_perm else 1, figsize=(9 if has_perm else 5, 5.5),
                             sharey=True, squeeze=False)
    y = np.arange(len(top))
    axes[0, 0].barh(y, top["impurity_importance"])
    axes[0, 0].set_yticks(y, top["feature"], fontsize=7)
    axes[0, 0].set_xlabel("impurity importance (seed)")
    if has_perm:
        axes[0, 1].barh(y, top["permutation_importance"],
                        xerr=top["permutation_importance_std"], color="tab:orange")
        axes[0, 1].set_xlabel("permutation importance (R² drop, test rows)")
    return fig


def league_top(table: pd.DataFrame, threshold: float, n: int = 20):
    plt = _plt()
    top = table.head(n).iloc[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    colors = np.where(top["clears_f1_threshold"], "tab:red", "tab:blue")
    ax.barh(np.arange(len(top)), top["probability"], color=colors)
    ax.set_yticks(np.arange(len(top)), top["country"], fontsize=7)
    ax.axvline(threshold, color="grey", lw=0.8, ls="--", label=f"F1 threshold {threshold:.4f}")
    ax.set_xlabel("predicted probability of a coup attempt (honest score)")
    ax.legend(fontsize=8)
    return fig


def backtest_figure(table: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for col, style in (("roc_auc", "o-"), ("pr_auc", "s-"), ("f1_at_train_f1_threshold", "^-")):
        if col in table:
            ax.plot(table["test_year"], table[col], style, label=col)
    ax.set_xlabel("test year (model trained on all earlier years)")
    ax.legend(fontsize=8)
    return fig
