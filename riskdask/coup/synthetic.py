"""A synthetic REIGN-like country-month panel: the coup job's embedded default data.

It is a stand-in with REIGN's columns and types, never a claim about the world. What it is
built to look like (COUP.md, "Embedded default"; the seed's "Data Description" and "Trend
Analysis"):

* about 200 countries, each entering at its (synthetic) independence -- most by 1950, a wave in
  1956-1966, more to 1980, another wave in 1991-1993 -- a few leaving in 1990-1993; months from
  January 1950 to March 2019 (the seed's latest month): about 125k-135k rows;
* regime spells of the 16 REIGN types that persist (democracies and monarchies for decades,
  provisional governments for a year or so) and change, drifting towards democracy after 1975;
* leader spells inside regimes with tenure, age (birth year fixed per leader), military career,
  sex, and "elected" once a leader wins an election or leads a democracy;
* elections (executive, legislative, general, referendums; direct or indirect; won or lost by
  the incumbent; some delayed; transitional "irregular" leader elections ending provisional
  regimes) and every REIGN flag derived from them (``anticipation`` ... ``delayed``,
  ``lastelection`` and ``loss`` as log-months, as in REIGN 2021 releases);
* precipitation SPI (AR(1) with a country-specific seasonal cycle) and armed-conflict spells
  (``prev_conflict``: conflict in the previous month);
* coup attempts, about 0.35% of rows and about half successful, whose monthly probability
  rises with military and provisional regimes, the first months of a tenure and very long
  tenures, old leaders, military careers, recent or delayed elections, precipitation extremes
  and conflict, falls with democracy and over time, and varies by country. A successful coup
  ends the leader's spell that month and usually installs a military or provisional regime.

Deterministic from its seed: country ``i`` draws from ``SeedSequence(seed).spawn(n)[i]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import GOVERNMENT_TYPES, SEED_COLUMNS

__all__ = ["synthetic_reign", "SYNTHETIC_PROPERTIES"]

#: Documented properties, checked by the tests (for the default arguments).
SYNTHETIC_PROPERTIES = {
    "n_countries": 200,
    "rows": (125_000, 135_000),
    "attempt_rate": (0.0025, 0.0045),
    "success_share": (0.40, 0.60),
    "first_month": (1950, 1),
    "last_month": (2019, 3),
}

G = {name: i for i, name in enumerate(GOVERNMENT_TYPES)}
DEMOCRACIES = (G["Presidential Democracy"], G["Parliamentary Democracy"])
MILITARY = (G["Military"], G["Indirect Military"], G["Military-Personal"], G["Party-Military"],
            G["Party-Personal-Military Hybrid"], G["Provisional - Military"])
PROVISIONAL = (G["Provisional - Civilian"], G["Provisional - Military"])

# Mean spell lengths in months: (regime, leader).
_SPELL = {
    "Dominant Party": (260, 110), "Foreign/Occupied": (40, 30), "Indirect Military": (70, 40),
    "Military": (70, 45), "Military-Personal": (140, 90), "Monarchy": (420, 260),
    "Oligarchy": (220, 90), "Parliamentary Democracy": (420, 60), "Party-Military": (150, 80),
    "Party-Personal": (220, 150), "Party-Personal-Military Hybrid": (220, 160),
    "Personal Dictatorship": (170, 150), "Presidential Democracy": (320, 66),
    "Provisional - Civilian": (16, 14), "Provisional - Military": (16, 14),
    "Warlordism": (30, 24),
}
REGIME_MEAN = np.array([_SPELL[g][0] for g in GOVERNMENT_TYPES], dtype=float)
LEADER_MEAN = 1.7 * np.array([_SPELL[g][1] for g in GOVERNMENT_TYPES], dtype=float)

# Log-odds of a coup attempt by regime (democracies and monarchies low, juntas and interim
# governments high).
_REGIME_LOGIT = {
    "Dominant Party": -0.2, "Foreign/Occupied": -0.6, "Indirect Military": 1.0,
    "Military": 1.2, "Military-Personal": 0.8, "Monarchy": -0.4, "Oligarchy": 0.0,
    "Parliamentary Democracy": -1.9, "Party-Military": 0.5, "Party-Personal": 0.3,
    "Party-Personal-Military Hybrid": 0.4, "Personal Dictatorship": 0.7,
    "Presidential Democracy": -0.7, "Provisional - Civilian": 1.1,
    "Provisional - Military": 1.4, "Warlordism": 0.9,
}
REGIME_LOGIT = np.array([_REGIME_LOGIT[g] for g in GOVERNMENT_TYPES])
#: Intercept of the attempt log-odds, set once so that the default panel has ~0.35% attempts.
BASE_LOGIT = -6.55

# Regimes that follow a successful coup.
_AFTER_COUP = {"Military": 0.33, "Provisional - Military": 0.22, "Military-Personal": 0.14,
               "Personal Dictatorship": 0.10, "Provisional - Civilian": 0.08,
               "Indirect Military": 0.06, "Party-Military": 0.04, "Warlordism": 0.03}
AFTER_COUP = np.array([_AFTER_COUP.get(g, 0.0) for g in GOVERNMENT_TYPES])
AFTER_COUP /= AFTER_COUP.sum()


def _regime_weights(year: int, democratic_lean: float, previous: int | None) -> np.ndarray:
    """Weights of the next regime type: democracy more likely later and in 'developed' lands."""
    lean = -1.0 + 0.06 * (year - 1975) + democratic_lean
    p_dem = 1 / (1 + np.exp(-lean))
    w = np.zeros(len(GOVERNMENT_TYPES))
    w[G["Presidential Democracy"]] = 0.45 * p_dem
    w[G["Parliamentary Democracy"]] = 0.55 * p_dem
    autoc = {"Personal Dictatorship": 0.22, "Dominant Party": 0.18, "Military": 0.10,
             "Monarchy": 0.05, "Party-Personal": 0.08, "Military-Personal": 0.07,
             "Oligarchy": 0.02, "Indirect Military": 0.04, "Party-Military": 0.04,
             "Party-Personal-Military Hybrid": 0.05, "Provisional - Civilian": 0.07,
             "Provisional - Military": 0.03, "Warlordism": 0.02, "Foreign/Occupied": 0.03}
    for name, v in autoc.items():
        w[G[name]] = v * (1 - p_dem)
    if previous is not None:
        w[previous] = 0.0  # a new spell is a change of regime
    return w / w.sum()


def _country_entries(rng: np.random.Generator, n: int, first: int, last: int) -> np.ndarray:
    """Entry month index per country: most at the start, then independence waves."""
    wave = rng.choice(5, size=n, p=[0.40, 0.25, 0.09, 0.12, 0.14])
    lo = np.array([first, 1956 * 12, 1967 * 12, 1991 * 12, first])
    hi = np.array([first, 1966 * 12 + 11, 1980 * 12 + 11, 1993 * 12 + 11, 2012 * 12])
    entry = lo[wave] + np.floor(rng.random(n) * (hi[wave] - lo[wave] + 1)).astype(int)
    return np.minimum(entry, last)


def _window_flag(T: int, months: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """1 at month t when some event month e has ``lo <= t - e <= hi`` (negative: ahead)."""
    marks = np.zeros(T + 1, dtype=np.int64)
    for e in months:
        a, b = e + lo, e + hi
        a, b = max(a, 0), min(b, T - 1)
        if a <= b:
            marks[a] += 1
            marks[b + 1] -= 1
    return (np.cumsum(marks)[:T] > 0).astype(np.int64)


def _months_since(T: int, starts: np.ndarray) -> np.ndarray:
    """Months since the latest event in ``starts`` at or before t (event month counts 1)."""
    last = np.full(T, -1)
    mark = np.zeros(T, dtype=bool)
    mark[starts[(starts >= 0) & (starts < T)]] = True
    idx = np.where(mark, np.arange(T), -1)
    last = np.maximum.accumulate(idx)
    return np.where(last >= 0, np.arange(T) - last + 1, np.arange(T) + 1)


def _simulate_country(rng: np.random.Generator, entry: int, stop: int) -> dict:
    """One country's months ``entry .. stop`` (month indices year*12 + month - 1)."""
    T = stop - entry + 1
    t_month = np.arange(entry, stop + 1)
    years = t_month // 12
    frailty = rng.normal(0.0, 0.55)
    lean = rng.normal(0.0, 1.3)
    # exogenous: precipitation SPI with a seasonal cycle, and conflict spells
    amp, phase = rng.uniform(0.0, 0.9), rng.uniform(0, 12)
    eps = rng.normal(0.0, np.sqrt(1 - 0.5 ** 2), T)
    ar = np.empty(T)
    ar[0] = rng.normal()
    for t in range(1, T):
        ar[t] = 0.5 * ar[t - 1] + eps[t]
    season = amp * np.sin(2 * np.pi * ((t_month % 12) - phase) / 12)
    precip = np.clip(0.8 * ar + season, -3.5, 6.0)
    onset = np.exp(rng.normal(-5.6, 1.0))
    conflict = np.zeros(T, dtype=np.int64)
    u = rng.random(T)
    for t in range(1, T):
        conflict[t] = (u[t] < 1 - 1 / 30) if conflict[t - 1] else (u[t] < onset)
    prev_conflict = np.concatenate([[0], conflict[:-1]])

    gov = np.empty(T, dtype=np.int64)
    leader_id = np.empty(T, dtype=np.int64)
    tenure = np.empty(T, dtype=np.int64)
    birth = np.empty(T, dtype=np.int64)
    mil = np.empty(T, dtype=np.int64)
    male = np.empty(T, dtype=np.int64)
    elected = np.zeros(T, dtype=np.int64)
    attempt = np.zeros(T, dtype=np.int64)
    success = np.zeros(T, dtype=np.int64)
    hazard = np.zeros(T)
    regime_starts, events = [], []   # events: (month, kind, direct, victory, delayed, irregular)

    t, n_leader, previous, after_coup = 0, 0, None, False
    while t < T:
        w = AFTER_COUP if after_coup else _regime_weights(int(years[t]), lean, previous)
        g = int(rng.choice(len(GOVERNMENT_TYPES), p=w))
        r_end = min(T, t + 1 + int(rng.geometric(1 / REGIME_MEAN[g])))
        regime_starts.append(t)
        coup_mil = after_coup        # the first leader after a coup is usually an officer
        previous, after_coup = g, False
        while t < r_end:
            # a leader spell
            l_end = min(r_end, t + 1 + int(rng.geometric(1 / LEADER_MEAN[g])))
            n = l_end - t
            is_dem = g in DEMOCRACIES
            age0 = int(np.clip(rng.normal(50 if g in MILITARY else 54, 9), 28, 85))
            b = int(years[t]) - age0
            p_mil = 0.85 if g in MILITARY else (0.08 if is_dem else 0.2)
            m = int(rng.random() < (0.8 if coup_mil else p_mil))
            p_female = (0.07 if is_dem else 0.01) if years[t] >= 1990 else 0.01
            s = int(rng.random() >= p_female)
            # elections inside the spell, at months relative to its start
            ev = []
            if is_dem:
                k = int(rng.integers(10, 60))
                while k < n:
                    ev.append((k, "X" if g == DEMOCRACIES[0] else "G", 1))
                    if g == DEMOCRACIES[0] and k + 24 < n:
                        ev.append((k + 24, "L", 1))
                    k += int(rng.integers(48, 61))
            elif g in PROVISIONAL and rng.random() < 0.6:
                ev.append((n - 1, "I", 1))                   # transitional leader election
            elif g in (G["Dominant Party"], G["Party-Personal"], G["Oligarchy"],
                       G["Personal Dictatorship"], G["Party-Personal-Military Hybrid"]):
                k = int(rng.integers(12, 72))
                while k < n:
                    ev.append((k, "X" if rng.random() < 0.6 else "L", int(rng.random() < 0.7)))
                    k += int(rng.integers(48, 84))
            elif g == G["Monarchy"]:
                k = int(rng.integers(24, 96))
                while k < n:
                    ev.append((k, "L", 1))
                    k += int(rng.integers(48, 72))
            if rng.random() < n / 400:
                ev.append((int(rng.integers(0, n)), "R", 1))  # a referendum
            ev.sort()
            # the incumbent loses a leader election: the spell ends that month
            p_lose = 0.30 if is_dem else 0.05
            outcome = []
            cut = n
            for k, kind, direct in ev:
                delayed = int(rng.random() < (0.03 if is_dem else 0.10))
                victory = int(not (kind in "XG" and rng.random() < p_lose))
                outcome.append((k, kind, direct, victory, delayed))
                if not victory and k < cut:
                    cut = k + 1
                    break
            ev = [e for e in outcome if e[0] < cut]
            n = cut
            l_end = t + n
            # hazard of a coup attempt, month by month in this spell
            ten = np.arange(1, n + 1)
            age = years[t:l_end] - b
            recent = np.zeros(n)
            delay = np.zeros(n)
            for k, _kind, _d, _v, dl in ev:
                recent[k + 1:k + 7] = 1
                if dl:
                    delay[k + 1:k + 7] = 1
            yr = years[t:l_end]
            logit = (BASE_LOGIT + REGIME_LOGIT[g] + frailty
                     + 0.9 * np.exp(-ten / 10.0) + 0.22 * np.log1p(ten / 120.0)
                     + 0.025 * (age - 55) + 0.35 * m
                     + 0.45 * recent + 0.9 * delay
                     + 0.30 * np.abs(precip[t:l_end]) + 0.6 * (np.abs(precip[t:l_end]) > 1.6)
                     + 0.55 * prev_conflict[t:l_end]
                     - 0.035 * np.maximum(yr - 1975, 0))
            h = 1 / (1 + np.exp(-logit))
            att = rng.random(n) < h
            p_suc = 1 / (1 + np.exp(-(-0.35 + 0.5 * (g in MILITARY) + 0.3 * m
                                      - 0.04 * np.maximum(yr - 1985, 0))))
            suc = att & (rng.random(n) < p_suc)
            ended_by_coup = bool(suc.any())
            if ended_by_coup:
                n = int(np.flatnonzero(suc)[0]) + 1
                l_end = t + n
                ev = [e for e in ev if e[0] < n]
            sl = slice(t, l_end)
            gov[sl], leader_id[sl], tenure[sl] = g, n_leader, np.arange(1, n + 1)
            birth[sl], mil[sl], male[sl] = b, m, s
            attempt[sl], success[sl] = att[:n], suc[:n]
            hazard[sl] = h[:n]
            won = [k for k, kind, _d, v, _dl in ev if kind in "XGI" and v]
            if is_dem:
                elected[sl] = 1
            elif won:
                elected[t + won[0]:l_end] = 1
            for k, kind, direct, victory, delayed in ev:
                events.append((t + k, kind, direct, victory, delayed, int(kind == "I")))
            n_leader += 1
            t = l_end
            if ended_by_coup:
                if rng.random() < 0.8:      # the coup also ends the regime
                    r_end = t
                    after_coup = True
                coup_mil = True
            else:
                coup_mil = False
    return dict(t_month=t_month, gov=gov, leader_id=leader_id, tenure=tenure, birth=birth,
                mil=mil, male=male, elected=elected, attempt=attempt, success=success,
                hazard=hazard, precip=precip, prev_conflict=prev_conflict,
                regime_starts=np.array(regime_starts), events=events, T=T)


def _election_columns(sim: dict) -> dict[str, np.ndarray]:
    """REIGN's election flags from one country's event list (windows of six months)."""
    T = sim["T"]
    ev = sim["events"]

    def months(pred):
        return np.array([e[0] for e in ev if pred(e)], dtype=np.int64)

    lead = months(lambda e: e[1] in "XGI")
    leg = months(lambda e: e[1] in "LG")
    exe = months(lambda e: e[1] in "XI")
    ref = months(lambda e: e[1] == "R")
    allm = months(lambda e: True)
    cols = {
        "anticipation": _window_flag(T, allm, -6, -1),
        "ref_ant": _window_flag(T, ref, -6, -1),
        "leg_ant": _window_flag(T, leg, -6, -1),
        "exec_ant": _window_flag(T, exe, -6, -1),
        "irreg_lead_ant": _window_flag(T, months(lambda e: e[5] == 1), -6, -1),
        "election_now": _window_flag(T, allm, 0, 0),
        "election_recent": _window_flag(T, allm, 1, 6),
        "leg_recent": _window_flag(T, leg, 1, 6),
        "exec_recent": _window_flag(T, exe, 1, 6),
        "lead_recent": _window_flag(T, lead, 1, 6),
        "ref_recent": _window_flag(T, ref, 1, 6),
        "direct_recent": _window_flag(T, months(lambda e: e[2] == 1), 1, 6),
        "indirect_recent": _window_flag(T, months(lambda e: e[2] == 0), 1, 6),
        "victory_recent": _window_flag(T, months(lambda e: e[3] == 1 and e[1] != "R"), 1, 6),
        "defeat_recent": _window_flag(T, months(lambda e: e[3] == 0), 1, 6),
        "change_recent": _window_flag(T, months(lambda e: e[3] == 0 or e[5] == 1), 1, 6),
        "nochange_recent": _window_flag(T, months(lambda e: e[3] == 1 and e[1] in "XG"), 1, 6),
        "delayed": _window_flag(T, months(lambda e: e[4] == 1), 1, 6),
    }
    # lastelection / loss: months since the last election (the last defeat of the incumbent),
    # or since the political system last changed; logged as in REIGN 2021.
    regime = sim["regime_starts"]
    since_el = _months_since(T, np.concatenate([allm, regime]))
    since_loss = _months_since(T, np.concatenate([months(lambda e: e[3] == 0), regime]))
    cols["lastelection"] = np.log(since_el.astype(float))
    cols["loss"] = np.log(since_loss.astype(float))
    return cols


def _country_code(i: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "Q" + letters[(i // 26) % 26] + letters[i % 26]


def synthetic_reign(seed: int = 2019, n_countries: int = 200,
                    first: tuple[int, int] = (1950, 1), last: tuple[int, int] = (2019, 3)
                    ) -> pd.DataFrame:
    """Generate the synthetic REIGN-like panel (columns and types of REIGN, the seed's 38).

    Parameters
    ----------
    seed : int
        Root seed; country ``i`` uses ``SeedSequence(seed).spawn(n_countries)[i]``.
    n_countries : int
        Countries (REIGN: 200; fewer for quick tests).
    first, last : (year, month)
        First and last month of the panel (default: January 1950 to March 2019, the seed's
        latest month).

    Returns
    -------
    DataFrame
        One row per country-month, sorted by ``ccode``, ``year``, ``month``; see the module
        docstring and :data:`SYNTHETIC_PROPERTIES`.
    """
    root = np.random.SeedSequence(seed)
    f = first[0] * 12 + first[1] - 1
    l_ = last[0] * 12 + last[1] - 1
    plan_rng = np.random.Generator(np.random.PCG64(root.spawn(1)[0]))
    entries = _country_entries(plan_rng, n_countries, f, l_)
    exits = np.full(n_countries, l_)
    leaving = plan_rng.random(n_countries) < 0.04   # dissolved states (1990-1993)
    exits[leaving] = np.maximum(entries[leaving] + 24,
                                plan_rng.integers(1990 * 12, 1993 * 12 + 12, leaving.sum()))
    exits = np.minimum(exits, l_)
    frames = []
    for i, child in enumerate(root.spawn(n_countries + 1)[1:]):
        rng = np.random.Generator(np.random.PCG64(child))
        sim = _simulate_country(rng, int(entries[i]), int(exits[i]))
        el = _election_columns(sim)
        year = sim["t_month"] // 12
        month = sim["t_month"] % 12 + 1
        code = _country_code(i)
        # months since the last coup attempt (or entry), logged: REIGN's undefined 'irregular'
        irregular = np.log(_months_since(sim["T"], np.flatnonzero(sim["attempt"])).astype(float))
        frame = {
            "ccode": np.full(sim["T"], 10 + 4 * i, dtype=np.int64),
            "country": np.full(sim["T"], code, dtype=object),
            "leader": np.array([f"{code} leader {k}" for k in sim["leader_id"]], dtype=object),
            "year": year.astype(np.int64), "month": month.astype(np.int64),
            "elected": sim["elected"], "age": (year - sim["birth"]).astype(np.int64),
            "male": sim["male"], "militarycareer": sim["mil"], "tenure_months": sim["tenure"],
            "government": np.array(GOVERNMENT_TYPES, dtype=object)[sim["gov"]],
            **el,
            "irregular": irregular,
            "prev_conflict": sim["prev_conflict"],
            "pt_suc": sim["success"], "pt_attempt": sim["attempt"],
            "precip": sim["precip"],
            # REIGN's own risk forecast (undefined in the seed, dropped): published for recent
            # years only; here a noisy copy of the generating hazard from 2011 on.
            "couprisk": np.where(year >= 2011,
                                 sim["hazard"] * np.exp(rng.normal(0, 0.5, sim["T"])), np.nan),
        }
        frames.append(pd.DataFrame(frame))
    panel = pd.concat(frames, ignore_index=True)
    panel["pctile_risk"] = panel.groupby(["year", "month"])["couprisk"].rank(pct=True) * 100
    return panel[list(SEED_COLUMNS)]
