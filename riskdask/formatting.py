"""Numbers for people: the one kit that formats a figure for the console, the report and the
run history.

The rules (the same everywhere):

- an **estimate with an error** shows two significant digits of the error and the estimate to
  the same decimal place, but never more than six significant digits of the estimate (an error
  far below that is shown on its own, compactly: ``8.88512 ± 9.4e-15``, not 30 digits);
- an **estimate with an interval** ``[lo, hi]`` is rounded to two significant digits of its
  half-width (``value ± half`` when centred, else ``value [lo, hi]``);
- a figure **without an error** shows a fixed number of significant digits with thousands
  separators; integers are plain integers with separators (``1,000,000``);
- magnitudes no separator can make readable (below 1e-4 or from 1e15 on) are written
  ``1.7e-225``; a figure that is **undefined** prints ``n/a`` and, given one, why
  (``n/a (fewer than two batches)``) -- never a silent ``nan``.

Pure Python: workers, the API and the report import it alike.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = ["is_finite", "decimals_for", "sig", "integer", "estimate", "format_value",
           "MAX_DIGITS"]

#: The most significant digits any estimate is shown with.
MAX_DIGITS = 6

_SMALL, _LARGE = 1e-4, 1e15


def is_finite(x: Any) -> bool:
    """A real, finite number (not bool, None, NaN or inf)."""
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def _na(reason: str | None) -> str:
    return f"n/a ({reason})" if reason else "n/a"


def decimals_for(value: float, digits: int) -> int:
    """Decimals that show ``digits`` significant digits of ``value`` (0 for large values)."""
    if not is_finite(value) or value == 0:
        return 0
    return max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _compact(value: float, digits: int) -> str:
    """``1.7e-225``: the mantissa to ``digits`` significant digits, no trailing zeros."""
    mantissa, exponent = f"{value:.{max(1, digits) - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def sig(value: Any, digits: int = 4, *, undefined: str | None = None) -> str:
    """``value`` with ``digits`` significant digits and thousands separators.

    ``n/a`` (with ``undefined`` as the reason) for None / NaN / inf; ``1.7e-225`` style for
    magnitudes below 1e-4 or from 1e15 on.
    """
    if not is_finite(value):
        return _na(undefined)
    value = float(value)
    if value == 0:
        return "0"
    if not _SMALL <= abs(value) < _LARGE:
        return _compact(value, digits)
    d = decimals_for(value, digits)
    if d == 0:
        step = 10.0 ** (int(math.floor(math.log10(abs(value)))) - digits + 1)
        if step > 1:
            value = round(value / step) * step
    return f"{value:,.{d}f}"


def integer(value: Any, *, undefined: str | None = None) -> str:
    """A count with thousands separators (``1,000,000``)."""
    if isinstance(value, bool) or value is None:
        return _na(undefined)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if is_finite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return sig(value, MAX_DIGITS, undefined=undefined)


def estimate(value: Any, error: Any = None, *, lo: Any = None, hi: Any = None,
             error_digits: int = 2, digits: int = 4, undefined: str | None = None,
             pm: str = " ± ") -> str:
    """One estimate with its error (``error``: one standard error) or interval ``[lo, hi]``.

    Parameters
    ----------
    value : float
    error : float, optional
        Its standard error. ``0`` prints ``± 0`` (an exact figure); a missing error prints
        ``± n/a`` (the caller has none to give).
    lo, hi : float, optional
        An interval instead of ``error`` (quartiles, a confidence interval).
    error_digits : int
        Significant digits of the error (or half-width).
    digits : int
        Significant digits of a value shown without an error or interval.
    undefined : str, optional
        Why the value is undefined, printed when it is not finite.

    Returns
    -------
    str
    """
    if not is_finite(value):
        return _na(undefined)
    value = float(value)
    if lo is not None or hi is not None:
        return _with_interval(value, lo, hi, error_digits, digits)
    if error is None or not is_finite(error):
        return f"{sig(value, digits)}{pm}n/a"
    error = abs(float(error))
    if error == 0:
        return f"{sig(value, MAX_DIGITS)}{pm}0"
    d = decimals_for(error, error_digits)
    cap = decimals_for(value, MAX_DIGITS)
    if value != 0 and d > cap:        # the error is below the sixth digit of the estimate
        return f"{sig(value, MAX_DIGITS)}{pm}{sig(error, error_digits)}"
    if not _SMALL <= error < _LARGE or (value != 0 and abs(value) >= _LARGE):
        return f"{sig(value, MAX_DIGITS)}{pm}{sig(error, error_digits)}"
    if d == 0:
        step = 10.0 ** (int(math.floor(math.log10(error))) - error_digits + 1)
        v, e = round(value / step) * step, round(error / step) * step
        return f"{v:,.0f}{pm}{e:,.0f}"
    return f"{value:,.{d}f}{pm}{error:,.{d}f}"


def _with_interval(value: float, lo: Any, hi: Any, error_digits: int, digits: int) -> str:
    """``value ± half`` when the interval is centred on it, else ``value [lo, hi]``, all to
    ``error_digits`` significant digits of the half-width (as :func:`estimate` rounds to
    its error)."""
    if not (is_finite(lo) and is_finite(hi)):
        return sig(value, digits)
    lo, hi = float(lo), float(hi)
    half = (hi - lo) / 2
    if half <= 0:
        return sig(value, MAX_DIGITS)
    if abs((hi + lo) / 2 - value) <= 1e-9 * max(1.0, abs(value)):
        return estimate(value, half, error_digits=error_digits)
    if not _SMALL <= half < _LARGE or (value != 0 and decimals_for(half, error_digits)
                                       > decimals_for(value, MAX_DIGITS)):
        return f"{sig(value, MAX_DIGITS)} [{sig(lo, MAX_DIGITS)}, {sig(hi, MAX_DIGITS)}]"
    d = decimals_for(half, error_digits)
    if d == 0:
        step = 10.0 ** (int(math.floor(math.log10(half))) - error_digits + 1)
        v, lo, hi = (round(x / step) * step for x in (value, lo, hi))
        return f"{v:,.0f} [{lo:,.0f}, {hi:,.0f}]"
    return f"{value:,.{d}f} [{lo:,.{d}f}, {hi:,.{d}f}]"


def format_value(value: Any) -> str:
    """A plain value of a summary or table cell: integers with separators, floats to six
    significant digits (compact beyond 1e-4 .. 1e15), booleans and text as they are."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        return sig(float(value), MAX_DIGITS)
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return f"[{len(value)} values]"
    return str(value)
