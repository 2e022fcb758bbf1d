"""The one place riskdask makes a matplotlib figure.

A batch engine never opens a window, and a long session (a notebook, a scheduler running a
job every night, a loop over what-ifs) must not accumulate figures: :func:`subplots` makes a
:class:`matplotlib.figure.Figure` on the headless Agg canvas that pyplot's figure manager
never sees, so a figure is freed like any object once nothing refers to it, and no backend
is chosen or changed for the user's own pyplot.
"""

from __future__ import annotations

import re

__all__ = ["subplots", "DPI", "log_scale"]

#: Resolution of every saved figure. Figures are also *created* at it: a layout computed at
#: another resolution than the PNG's is thrown away at save time, and every text's size and
#: every mathtext tick label is measured twice (a third of a figure's cost).
DPI = 110


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``(figure, axes)`` as :func:`matplotlib.pyplot.subplots` gives them, on an Agg canvas
    at :data:`DPI`, outside pyplot's figure manager (nothing to close; nothing kept).

    ``kwargs`` go to :meth:`matplotlib.figure.Figure.subplots` (``sharey``, ``squeeze`` ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


_MATHTEXT_POWER = re.compile(r"\$\\mathdefault\{(-?)(?:([0-9.]+)\\times\s*)?10\^\{(-?[0-9]+)\}\}\$")
_SUPERSCRIPT = str.maketrans("0123456789-", "\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                                              "\u2076\u2077\u2078\u2079\u207b")


def _plain_power(label: str) -> str:
    """``$\\mathdefault{2\\times10^{-3}}$`` -> ``2×10⁻³``; any other label unchanged."""
    m = _MATHTEXT_POWER.fullmatch(label)
    if m is None:
        return label
    sign, mantissa, exponent = m.groups()
    return f"{sign}{mantissa + '×' if mantissa else ''}10{exponent.translate(_SUPERSCRIPT)}"


def log_scale(ax, which: str = "y") -> None:
    """Put ``ax``'s x or y axis on a log scale, labelled 10⁻³, 2×10⁻³ ... in plain text.

    matplotlib's own labels (``LogFormatterSciNotation``, which this keeps for the choice of
    ticks and labels) are the same powers written in mathtext, and parsing them with
    pyparsing is about a third of a log-scaled figure's cost; Unicode superscripts print
    them as ordinary text.
    """
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainPowers(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return _plain_power(super().__call__(x, pos))

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    # the formatters matplotlib's LogScale sets by default, with plain labels
    axis.set_major_formatter(PlainPowers())
    axis.set_minor_formatter(PlainPowers(labelOnlyBase=False))
