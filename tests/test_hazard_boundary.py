"""The boundary where the data start (issue 22, item 6): reflection at the definition's
smallest possible T, and a grid that starts there.

Seed: 003_ae2b3031728223ec.txt (Section 2.1, eq. 4); spec: HAZARD.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from riskdask.hazard.estimators import GridRule, kernel_matrix
from riskdask.hazard.gridsearch import compress, curves_for
from riskdask.hazard.panel import Period, build_panel
from riskdask.hazard.synthetic import generate_panel
from riskdask.hazard.timeatrisk import coefficients, support_start

PERIOD = Period()


@pytest.fixture(scope="module")
def constant_panel():
    return build_panel(generate_panel(20_000, PERIOD, 2, shape="constant", peak_hazard=0.07),
                       PERIOD)


def test_support_start_is_the_smallest_possible_time_at_risk(constant_panel):
    F = constant_panel.features.matrix()
    assert support_start(coefficients("T", 0.3, 0.8)) == pytest.approx(1.1)
    assert support_start(coefficients("T1", 0.3, 0.8, 2.0)) == pytest.approx(1.1)
    for d in ("T0", "T2", "T3"):
        assert support_start(coefficients(d, 1.0, 1.0, 0.5)) == 1.0
    for d, k in (("T", (0.3, 0.8, 0.0)), ("T0", (1, 1, 0)), ("T1", (1, 2, 1.0)),
                 ("T2", (1, 1, 1.0)), ("T3", (1, 1, 0))):
        c = coefficients(d, *k)
        assert (F @ c).min() == pytest.approx(support_start(c))  # reached, never undercut


def test_reflection_recovers_a_constant_hazard_at_the_supports_start(constant_panel):
    """Constant annual hazard 0.07, T0 = N0 (a year is a unit of T): the reflected smoother at
    the grid's first point, T = 1, is within 10 % of 0.07; the seed's plain kernel is more
    than 20 % low there (at T = 0 it gave 0.30 of the middle, the bias the issue measured)."""
    tab = compress(constant_panel.features.matrix(), constant_panel.event)
    w = tab.counts(np.ones((tab.inverse.size, 1)))
    c = coefficients("T0")
    fixed = curves_for(tab, w, c, GridRule(boundary="reflect", grid_start="support"))
    assert fixed.grid[0] == 1.0 == fixed.origin
    assert fixed.hazard[0, 0] == pytest.approx(0.07, rel=0.10)
    assert fixed.hazard[50, 0] == pytest.approx(0.07, rel=0.10)
    plain = curves_for(tab, w, c, GridRule(grid_start="support"))
    assert plain.hazard[0, 0] / plain.hazard[50, 0] < 0.8


def test_a_failure_at_the_origin_is_its_own_mirror():
    k = kernel_matrix([1.0, 2.0], [1.0, 3.0], 0.5, "reflect", origin=1.0)
    plain = kernel_matrix([1.0, 2.0], [1.0, 3.0], 0.5, "none")
    assert k[0, 0] == plain[0, 0]  # not doubled
    mirror = kernel_matrix([1.0], [-1.0], 0.5, "none")[0, 0]  # 3 mirrored about 1 is -1
    assert k[0, 1] == pytest.approx(plain[0, 1] + mirror)
