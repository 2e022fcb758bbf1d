"""riskdask.plotting: plain-text log-axis labels are matplotlib's own labels, without mathtext."""

from __future__ import annotations

import numpy as np
import pytest

from riskdask.plotting import _plain_power, log_scale, subplots


@pytest.mark.parametrize("mathtext, plain", [
    (r"$\mathdefault{10^{-3}}$", "10⁻³"),
    (r"$\mathdefault{10^{0}}$", "10⁰"),
    (r"$\mathdefault{10^{15}}$", "10¹⁵"),
    (r"$\mathdefault{2\times10^{-3}}$", "2×10⁻³"),
    (r"$\mathdefault{-10^{-7}}$", "-10⁻⁷"),
    ("", ""),
    ("0.5", "0.5"),
    # not a power: kept
    (r"$\mathdefault{1.5\times10^{2.5}}$", r"$\mathdefault{1.5\times10^{2.5}}$"),
])
def test_plain_power(mathtext, plain):
    assert _plain_power(mathtext) == plain


@pytest.mark.parametrize("lo, hi", [(1e-7, 3e-3), (1.2e-3, 2.9e-3), (0.5, 4e4)])
def test_log_scale_keeps_matplotlibs_ticks_and_labels_them_without_mathtext(lo, hi):
    fig, (ours, theirs) = subplots(1, 2)
    for ax in (ours, theirs):
        ax.plot([1, 2], [lo, hi])
    log_scale(ours, "y")
    theirs.set_yscale("log")
    fig.canvas.draw()
    for minor in (False, True):
        a = ours.get_yticklabels(minor=minor)
        b = theirs.get_yticklabels(minor=minor)
        np.testing.assert_array_equal(ours.get_yticks(minor=minor), theirs.get_yticks(minor=minor))
        assert [bool(t.get_text()) for t in a] == [bool(t.get_text()) for t in b]
        assert not any("$" in t.get_text() for t in a)
        for x, t in zip(ours.get_yticks(minor=minor), a):
            if t.get_text() and not minor:
                assert t.get_text() == f"10{_superscript(round(np.log10(x)))}"


def _superscript(n: int) -> str:
    digits = dict(zip("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))
    return "".join(digits[ch] for ch in str(n))
