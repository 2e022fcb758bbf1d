"""Figures of the credit job (matplotlib, Agg)."""

from __future__ import annotations

from riskdask.plotting import pyplot

plt = pyplot()
import numpy as np  # noqa: E402

__all__ = ["loss_distribution", "top_contributors"]


def loss_distribution(edges, summary, stats, fv_portfolio):
    """Histogram of simulated losses (log scale) with VaR (dashed) and ES (solid) markers."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    prob = summary.histogram[1:-1] / summary.n        # (1/sim) sum of weights per bin
    width = np.diff(edges)
    scale = 1e6
    ax.bar(edges[:-1] / scale, np.where(prob > 0, prob, np.nan), width=width / scale,
           align="edge", color="#4a78a8", edgecolor="none", label="simulated loss")
    colors = plt.cm.autumn(np.linspace(0, 0.8, max(len(stats["levels"]), 1)))
    mean = stats["reference_mean_loss"]
    for color, lv in zip(colors, stats["levels"]):
        if lv["var"] is None or not np.isfinite(lv["var"]):
            continue
        tag = f"{100 * lv['confidence']:g}%"
        ax.axvline((mean + lv["var"]) / scale, color=color, ls="--", lw=1.2,
                   label=f"VaR {tag}: {lv['var'] / scale:,.1f}M")
        ax.axvline((mean + lv["es"]) / scale, color=color, ls="-", lw=1.2,
                   label=f"ES {tag}: {lv['es'] / scale:,.1f}M")
    ax.axvline(mean / scale, color="k", lw=0.8,
               label=f"EL ({stats['mean_reference']}): {mean / scale:,.2f}M")
    ax.set_yscale("log")
    ax.set_xlabel("loss FV_P − SFV (EUR million); VaR/ES are measured from the mean")
    ax.set_ylabel("probability per bin")
    ax.set_title(f"One-year credit loss distribution (FV_P = {fv_portfolio / 1e9:,.2f} bn EUR)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def top_contributors(obligors, contributions, level, top: int):
    """Horizontal bars: the obligors contributing most to ES."""
    order = np.argsort(-contributions, kind="stable")[:top]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(order) + 1.5))
    labels = [f"{obligors['name'].iloc[i] or obligors['obligor_id'].iloc[i]} "
              f"({obligors['rating'].iloc[i]})" for i in order]
    ax.barh(np.arange(len(order))[::-1], contributions[order] / 1e6, color="#b5473a")
    ax.set_yticks(np.arange(len(order))[::-1], labels, fontsize=7)
    ax.set_xlabel("contribution to ES (EUR million): tail expected loss − mean loss")
    ax.set_title(f"Top {len(order)} contributors to ES {100 * level['confidence']:g}% "
                 f"(ES = {level['es'] / 1e6:,.1f}M)")
    fig.tight_layout()
    return fig
