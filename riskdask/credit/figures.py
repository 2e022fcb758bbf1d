"""Figures of the credit job (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

from riskdask.formatting import sig
from riskdask.plotting import log_scale, subplots

__all__ = ["loss_distribution", "top_contributors", "tail_fits", "money_scale"]


def money_scale(amount: float):
    """Unit for an axis of EUR amounts of this size: (divisor, label) -- EUR million for a
    bank portfolio, plain EUR for a face-100 bond."""
    a = abs(float(amount)) if np.isfinite(amount) else 0.0
    for div, label in ((1e9, "EUR bn"), (1e6, "EUR million"), (1e3, "EUR thousand")):
        if a >= 10 * div:
            return div, label
    return 1.0, "EUR"


def loss_distribution(edges, summary, stats, fv_portfolio, fits=()):
    """Histogram of simulated losses (log scale) with VaR (dashed) and ES (solid) markers;
    the VaR of each Step 7 tail fit in ``fits`` (:class:`riskdask.credit.tail.TailFit`)
    as a dotted marker."""
    from matplotlib import colormaps

    fig, ax = subplots(figsize=(8, 4.5))
    prob = summary.histogram[1:-1] / summary.n        # (1/sim) sum of weights per bin
    scale, unit = money_scale(max(abs(edges[0]), abs(edges[-1])))
    # one filled step path, not a bar patch per bin (a third of the figure's cost at 200 bins)
    ax.stairs(np.where(prob > 0, prob, np.nan), np.asarray(edges) / scale, fill=True,
              color="#4a78a8", label="simulated loss")
    colors = colormaps["autumn"](np.linspace(0, 0.8, max(len(stats.levels), 1)))
    mean = stats.reference_mean_loss
    for color, lv in zip(colors, stats.levels):
        if lv.var is None or not np.isfinite(lv.var):
            continue
        tag = f"{100 * lv.confidence:g}%"
        ax.axvline((mean + lv.var) / scale, color=color, ls="--", lw=1.2,
                   label=f"VaR {tag}: {sig(lv.var / scale)}")
        ax.axvline((mean + lv.es) / scale, color=color, ls="-", lw=1.2,
                   label=f"ES {tag}: {sig(lv.es / scale)}")
    styles = {"vasicek": "#2a9d8f", "gpd": "#6a4c93"}
    for fit in fits:
        if not fit.ok:
            continue
        for lv in fit.levels:
            ax.axvline((mean + lv["var"]) / scale, color=styles.get(fit.name, "0.4"), ls=":",
                       lw=1.2, label=f"{fit.name} fit VaR {100 * lv['confidence']:g}%")
    ax.axvline(mean / scale, color="k", lw=0.8,
               label=f"EL ({stats.mean_reference}): {sig(mean / scale)}")
    log_scale(ax, "y")
    ax.set_xlabel(f"loss FV_P − SFV ({unit}); VaR/ES are measured from the mean")
    ax.set_ylabel("probability per bin")
    fscale, funit = money_scale(fv_portfolio)
    ax.set_title(f"One-year credit loss distribution (FV_P = {sig(fv_portfolio / fscale)} "
                 f"{funit})")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def top_contributors(obligors, contributions, level, top: int):
    """Horizontal bars: the obligors contributing most to ES."""
    order = np.argsort(-contributions, kind="stable")[:top]
    fig, ax = subplots(figsize=(8, 0.28 * len(order) + 1.5))
    labels = [f"{obligors['name'].iloc[i] or obligors['obligor_id'].iloc[i]} "
              f"({obligors['rating'].iloc[i]})" for i in order]
    scale, unit = money_scale(level.es)
    ax.barh(np.arange(len(order))[::-1], contributions[order] / scale, color="#b5473a")
    ax.set_yticks(np.arange(len(order))[::-1], labels, fontsize=7)
    ax.set_xlabel(f"contribution to ES ({unit}): tail expected loss − mean loss")
    ax.set_title(f"Top {len(order)} contributors to ES {100 * level.confidence:g}% "
                 f"(ES = {sig(level.es / scale)} {unit})")
    fig.tight_layout()
    return fig


def tail_fits(tail_loss, tail_weight, n, fits, qq):
    """Step 7 diagnostics: the simulated tail's survival function with each fit (left) and
    the QQ panel of fitted against empirical tail quantiles (right).

    ``qq`` maps a fit's name to :func:`riskdask.credit.tail.qq_points` output.
    """
    fig, (ax, bx) = subplots(1, 2, figsize=(10, 4.2))
    scale, unit = money_scale(np.max(np.abs(tail_loss)) if len(tail_loss) else 0.0)
    cw = np.cumsum(tail_weight)
    p = (cw - 0.5 * np.asarray(tail_weight)) / n
    ax.step(np.asarray(tail_loss) / scale, p, where="post", color="#4a78a8", lw=1.2,
            label="simulated")
    colors = {"vasicek": "#2a9d8f", "gpd": "#6a4c93"}
    lo = hi = None
    for fit in fits:
        if not fit.ok:
            continue
        pts = qq[fit.name]
        ok = np.isfinite(pts["fitted"])
        ax.plot(pts["fitted"][ok] / scale, pts["tail_probability"][ok],
                color=colors.get(fit.name, "0.3"), lw=1.2,
                label=f"{fit.name} (max rel. dev. {pts['max_rel_deviation']:.1%})")
        bx.plot(pts["empirical"][ok] / scale, pts["fitted"][ok] / scale, ".", ms=3,
                color=colors.get(fit.name, "0.3"), label=fit.name)
        vals = np.concatenate([pts["empirical"][ok], pts["fitted"][ok]]) / scale
        if vals.size:
            lo = vals.min() if lo is None else min(lo, vals.min())
            hi = vals.max() if hi is None else max(hi, vals.max())
    log_scale(ax, "y")
    ax.set_xlabel(f"loss ({unit})")
    ax.set_ylabel("P(loss > x)")
    ax.set_title("Tail of the loss distribution (seed Step 7)")
    ax.legend(fontsize=7)
    if lo is not None:
        bx.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    bx.set_xlabel(f"simulated tail quantile ({unit})")
    bx.set_ylabel(f"fitted quantile ({unit})")
    bx.set_title("QQ: fitted vs simulated tail")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig
