"""Deterministic embedded data: a central-bank-style bond portfolio and rating curves.

Nothing here is market data.  The portfolio is a stand-in with the shape the
seed describes for public institutions (section 3.1 and chapter 4 of the source:
sovereigns, supranationals, agencies and banks, mostly AAA-A), generated from a
seed so that every run and every test sees the same positions.  The curves are
illustrative: a smooth risk-free zero curve plus a spread per rating.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["synthetic_portfolio", "illustrative_curves", "write_curves_csv", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "credit"

# Illustrative long-run sovereign ratings of the issuing countries.
_COUNTRIES = {
    "DE": "AAA", "NL": "AAA", "FI": "AA", "AT": "AA", "FR": "AA", "BE": "AA", "IE": "AA",
    "ES": "A", "IT": "BBB", "PT": "BBB", "US": "AA", "GB": "AA", "CA": "AAA", "AU": "AAA",
    "SE": "AAA", "DK": "AAA", "JP": "A", "CH": "AAA",
}
_SCALE = ("AAA", "AA", "A", "BBB", "BB", "B", "CCC-C")
_SECTORS = ("sovereign", "supranational", "agency", "bank")
_RECOVERY = {"sovereign": 0.45, "supranational": 0.60, "agency": 0.50, "bank": 0.40}
_USD = {"US", "CA", "AU", "GB", "JP"}


def _notch_down(rating: str, notches: int) -> str:
    return _SCALE[min(_SCALE.index(rating) + notches, len(_SCALE) - 1)]


def synthetic_portfolio(seed: int = 2009, n_obligors: int = 200) -> pd.DataFrame:
    """A deterministic central-bank-style portfolio of fixed-coupon bonds.

    Parameters
    ----------
    seed : int
        Generator seed: same seed, same portfolio.
    n_obligors : int
        Number of issuers (150-300 is the intended range).

    Returns
    -------
    pandas.DataFrame
        One row per position: ``position_id, obligor_id, name, sector, country,
        rating, nominal, recovery_rate, coupon, frequency, maturity``.  About a
        quarter sovereigns, 15% supranationals, a quarter agencies and a third
        banks; ratings mostly AAA-A with some BBB and a few below; 1-3 bonds of
        1-10 years per issuer; nominal 5-250 million EUR.
    """
    rng = np.random.default_rng(seed)
    countries = list(_COUNTRIES)
    sector = rng.choice(_SECTORS, size=n_obligors, p=[0.25, 0.15, 0.25, 0.35])
    rows = []
    position = 0
    for i in range(n_obligors):
        sec = str(sector[i])
        if sec == "supranational":
            country = "SUPRA"
            rating = str(rng.choice(["AAA", "AA"], p=[0.85, 0.15]))
        else:
            country = str(rng.choice(countries))
            sovereign = _COUNTRIES[country]
            if sec == "sovereign":
                rating = sovereign
            elif sec == "agency":
                rating = _notch_down(sovereign, int(rng.choice([0, 1], p=[0.7, 0.3])))
            else:
                rating = _notch_down("AA", int(rng.choice([0, 1, 2, 3, 4, 5],
                                                          p=[0.25, 0.4, 0.2, 0.08, 0.05, 0.02])))
        n_bonds = int(rng.integers(1, 4))
        size = float(np.clip(rng.lognormal(np.log(40e6), 0.8), 5e6, 250e6))
        for _ in range(n_bonds):
            maturity = float(np.round(rng.uniform(1.0, 10.0) * 4) / 4)
            coupon = float(np.round(0.01 + 0.003 * _SCALE.index(rating)
                                    + 0.002 * np.log1p(maturity) + rng.normal(0, 0.002), 4))
            rows.append({
                "position_id": f"P{position:05d}",
                "obligor_id": f"O{i:04d}",
                "name": f"{sec[:4].upper()}-{country}-{i:04d}",
                "sector": sec,
                "country": country,
                "rating": rating,
                "nominal": float(np.round(size / n_bonds / 1e5) * 1e5),
                "recovery_rate": _RECOVERY[sec],
                "coupon": max(coupon, 0.0),
                "frequency": 2 if country in _USD else 1,
                "maturity": maturity,
            })
            position += 1
    return pd.DataFrame(rows)


_TENORS = np.array([0.25, 0.5, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30], dtype=float)
# Illustrative spreads over the risk-free curve, basis points at 1 year.
_SPREAD_BP = {"AAA": 5, "AA": 20, "A": 45, "BBB": 110, "BB": 260, "B": 480, "CCC-C": 1100}


def illustrative_curves() -> pd.DataFrame:
    """Zero curves per rating: ``tenor`` plus one column of decimal continuously
    compounded zero rates per non-default rating.

    Risk-free: ``3% - 1% * (1 - exp(-t/2)) / (t/2)`` (Nelson-Siegel shape, 2% short,
    3% long); spreads widen by 3% per year of maturity for investment grade and
    tighten by 1% per year for CCC-C (the usual inverted distressed curve, still above B).
    """
    t = _TENORS
    base = 0.03 - 0.01 * (1 - np.exp(-t / 2)) / (t / 2)
    out = {"tenor": t}
    for rating, bp in _SPREAD_BP.items():
        if rating in ("AAA", "AA", "A", "BBB"):
            slope = 0.03
        else:
            slope = -0.01 if rating == "CCC-C" else 0.01
        out[rating] = np.round(base + bp * 1e-4 * (1 + slope * (t - 1)), 6)
    return pd.DataFrame(out)


def write_curves_csv(path: str | Path | None = None) -> Path:
    """(Re)write the embedded curves file ``riskdask/data/credit/curves.csv``."""
    path = Path(path) if path is not None else DATA_DIR / "curves.csv"
    df = illustrative_curves()
    with open(path, "w") as fh:
        fh.write("# Illustrative rating zero curves (NOT market data), continuously compounded,\n"
                 "# decimal rates; generated by riskdask.credit.synthetic.write_curves_csv().\n")
        df.to_csv(fh, index=False, float_format="%.6f")
    return path
