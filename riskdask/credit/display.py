"""Numbers for people: significant digits that the Monte Carlo error supports.

Console lines and report cells print an estimate rounded to its standard error (two
significant digits of the error), and amounts without an error to a fixed number of
significant digits -- so a face-100 bond shows ``EL 0.1234`` rather than ``EL 0``, and a
5 bn portfolio ``VaR 123,400,000 ± 1,200,000`` rather than nine meaningless digits.
"""

from __future__ import annotations

import math

__all__ = ["sig", "with_error", "decimals_for"]


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def decimals_for(value: float, digits: int) -> int:
    """Decimals that show ``digits`` significant digits of ``value`` (0 for large values)."""
    if not _finite(value) or value == 0:
        return 0
    return max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))


def sig(value, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and thousands separators; ``n/a`` for
    None / NaN."""
    if not _finite(value):
        return "n/a"
    if value == 0:
        return "0"
    d = decimals_for(value, digits)
    factor = 10.0 ** (d - digits + 1 + int(math.floor(math.log10(abs(value))))) if d == 0 else 1
    if d == 0 and factor > 1:
        value = round(value / factor) * factor
    return f"{value:,.{d}f}"


def with_error(value, se, se_digits: int = 2, *, pm: str = " ± ") -> str:
    """``value ± se`` with both rounded to ``se_digits`` significant digits of the error.

    An error of 0 prints the value to 6 significant digits and ``± 0``; a missing error the
    value to 4 significant digits and ``± n/a``.
    """
    if not _finite(value):
        return "n/a"
    if not _finite(se):
        return f"{sig(value)}{pm}n/a"
    if se == 0:
        return f"{sig(value, 6)}{pm}0"
    d = decimals_for(se, se_digits)
    if d == 0:
        step = 10.0 ** (int(math.floor(math.log10(se))) - se_digits + 1)
        v, e = round(value / step) * step, round(se / step) * step
        return f"{v:,.0f}{pm}{e:,.0f}"
    return f"{value:,.{d}f}{pm}{se:,.{d}f}"
