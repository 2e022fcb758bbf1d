"""Concentration beside the Monte Carlo (riskdask.credit.concentration): HHI by name and by
sector, and the granularity adjustment against the exact finite-N law of a homogeneous pool
(the binomial mixed over the factor, computed here; continuity-corrected quantile of the
lattice), where the asymptotic quantile alone is off by one to two defaults."""

from __future__ import annotations

import numpy as np
import pytest

from riskdask.credit.concentration import (asrf_quantile, concentration,
                                           granularity_adjustment, hhi)

from credit_pools import exact_pool


def _exact_pool(n, pd_, rho):
    return exact_pool(n, pd_, rho, nodes=2001)


def _continuity_corrected_quantile(pmf, alpha):
    """The alpha-quantile of the number of defaults with the lattice smoothed: the CDF
    P(N <= k) sits at k + 1/2, linear in between."""
    return float(np.interp(alpha, np.cumsum(pmf), np.arange(pmf.size) + 0.5))


@pytest.mark.parametrize("n", [250, 1000, 4000])
@pytest.mark.parametrize("alpha", [0.99, 0.999])
def test_granularity_adjustment_matches_the_exact_finite_pool(n, alpha):
    pd_, rho = 0.01, 0.2
    exact = _continuity_corrected_quantile(_exact_pool(n, pd_, rho), alpha)
    e, p, r = np.ones(n), np.full(n, pd_), np.full(n, rho)
    q_inf = asrf_quantile(e, p, r, alpha)
    ga = granularity_adjustment(e, p, r, alpha)
    assert abs(exact - q_inf) > 1.0                 # the asymptotic law misses ~1-2 defaults
    assert abs(exact - (q_inf + ga)) < 0.02         # GA closes the gap to 1/100 of a default
    # O(1/n): GA in units of the loss fraction halves when n doubles; in defaults it is flat
    assert ga == pytest.approx(granularity_adjustment(np.ones(2 * n), np.full(2 * n, pd_),
                                                      np.full(2 * n, rho), alpha), rel=1e-9)


def test_granularity_adjustment_scales_with_the_exposure_hhi():
    # one name 10x larger: the GA grows like sum e_i^2 (first order) at fixed mu
    n = 400
    e = np.ones(n)
    e2 = e.copy()
    e2[0] = 10.0
    p, r = np.full(n, 0.01), np.full(n, 0.2)
    ratio = granularity_adjustment(e2, p, r, 0.999) / granularity_adjustment(e, p, r, 0.999)
    assert ratio == pytest.approx((e2 ** 2).sum() / e2.sum() / ((e ** 2).sum() / e.sum()),
                                  rel=0.05)


def test_hhi_by_name_and_by_sector():
    assert hhi(np.ones(50)) == pytest.approx(1 / 50)
    assert hhi([3.0, 1.0]) == pytest.approx(0.75 ** 2 + 0.25 ** 2)
    assert hhi([1.0, 1.0, 2.0], groups=["a", "a", "b"]) == pytest.approx(0.5)
    c = concentration([1.0, 1.0, 2.0, 0.0], [0.01, 0.02, 0.0, 0.01], [0.2] * 4, [0.999],
                      sectors=["a", "a", "b", "b"])
    assert c.name_hhi == pytest.approx(6 / 16) and c.effective_names == pytest.approx(16 / 6)
    assert c.sector_hhi == pytest.approx(0.5) and c.largest_share == pytest.approx(0.5)
    lv = c.levels[0]      # PD 0 names add no risk; the ASRF VaR is measured from sum e PD
    assert lv["asrf_var"] == pytest.approx(lv["asrf_loss"] - 0.03)
    assert lv["adjusted_var"] == pytest.approx(lv["asrf_var"] + lv["granularity_adjustment"])


def test_concentration_is_in_the_summary_report_and_console():
    from test_credit_lattice import local_compute

    from riskdask.credit.outputs import present

    cfg, result = local_compute({"seed": 3, "portfolio": {"synthetic_obligors": 40},
                                 "simulation": {"n_scenarios": 20_000, "chunk_size": 5_000,
                                                "confidence": [0.99, 0.999],
                                                "tail_fits": False}})
    out = present(result, cfg)
    c = out.summary["concentration"]
    an = result.analytics
    e = an.per_obligor.fv - an.cfv[:, -1]
    assert c["name_hhi"] == pytest.approx((e ** 2).sum() / e.sum() ** 2, rel=1e-12)
    assert 0 < c["sector_hhi"] <= 1 and c["effective_names"] < 40
    assert [lv["confidence"] for lv in c["levels"]] == [0.99, 0.999]
    assert any(k == "name / sector HHI" for k, _ in out.headline)
    assert any(t == "Concentration and granularity adjustment" for t, _ in out.sections)
