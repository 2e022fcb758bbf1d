"""Within-month leader returns are spells, not refusals (issue: the real REIGN file runs as
published); identical rows are an error naming both rows, or dropped and counted.

The fixture is built from REIGN's own public leader list (``leaderlist_3_21.csv``, MARCH 2021
update, OEFDataScience/REIGN.github.io) and the Powell & Thyne coup list (V2020.10.13): São
Tomé and Príncipe's leader spells, in which Menezes is deposed on 2003-07-16 (the successful
attempt) and returns on 2003-07-23, so REIGN has two Menezes rows in 2003-07 (one per spell,
differing in ``tenure_months`` and ``pt_attempt``) and Pereira's between them. The STP rows are
spliced into the real-format excerpt of ten countries (tests/data/coup_reign_leader_months.csv).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskdask import run_job
from riskdask.coup import evaluate
from riskdask.coup.prepare import lead_target
from riskdask.coup.reign import resolve_features, validate_panel
from riskdask.errors import InputError

LEADER_MONTHS = Path(__file__).parent / "data" / "coup_reign_leader_months.csv"

# leaderlist_3_21.csv, the STP rows verbatim (lines 1421-1428 of the file)
HEADER = ("stateabb,ccode,leadid,leader,sdate,smonth,syear,emonth,eyear,birthyear,gender,"
          "militarycareer,l_month,l_year,,,codedby,notes\n")
LEADER_LIST = HEADER + """STP,403,cb-403-1,da Costa,15,6,1975,3,1991,1937,1,0,,,,,cb,
STP,403,cb-403-2,d'Alva,4,3,1991,4,1991,1935,1,0,,,,,cb,
STP,403,cb-403-3,Trovoada,3,4,1991,9,2001,1936,1,0,3,1991,,,cb,
STP,403,cb-403-4,Menezes,3,9,2001,7,2003,1942,1,0,7,2001,,,cb,
STP,403,cb-403-5,Pereira,16,7,2003,7,2003,1963,1,1,,,,,cb,
STP,403,cb-403-6,Menezes,23,7,2003,9,2011,1942,1,0,7,2001,,,jb,
STP,403,cb-403-7,da Costa,3,9,2011,9,2016,1937,1,0,7,2011,,,,
STP,403,jb-403-1,Carvalho,3,9,2016,,,1942,1,0,8,2016,,,,
"""
# powell_thyne_coups_final.txt, the STP events: (year, month, day, coup: 2 success, 1 failed)
COUPS = [(1995, 8, 15, 1), (2003, 7, 16, 2)]
# regime_list.csv, STP: personal 1975-1987, provisional 1987-1991, parliamentary 1991-
REGIMES = [(1975 * 12 + 5, "Personal Dictatorship"), (1987 * 12 + 9, "Provisional - Civilian"),
           (1991 * 12 + 2, "Parliamentary Democracy")]
LAST = 2019 * 12 + 2          # the excerpt's last month, 2019-03


def stp_rows(columns) -> pd.DataFrame:
    """STP leader-months in REIGN's layout: one row per leader spell per month in office.

    ``tenure_months`` counts months of the spell (1 in its first month), ``age`` is the year
    less the birth year; the attempt is on the row of the leader it was aimed at (the spell
    in office the day before the attempt), ``pt_suc`` for the successful one. Election columns
    are 0 and ``lastelection``/``loss`` the log of the spell's months: stand-ins (REIGN derives
    them from its election list), not needed for what the tests check.
    """
    spells = pd.read_csv(io.StringIO(LEADER_LIST)).iloc[:, :14]
    # each attempt is aimed at the spell in office the day before it (started earlier, ends
    # in its month or later), the latest such spell
    aimed = {}
    for cy, cm, cd, kind in COUPS:
        day, month_ = (cy, cm, cd), cy * 12 + cm - 1
        cands = [i for i, s in enumerate(spells.itertuples())
                 if (s.syear, s.smonth, s.sdate) < day
                 and (pd.isna(s.eyear) or int(s.eyear) * 12 + int(s.emonth) - 1 >= month_)]
        aimed[(max(cands, key=lambda i: tuple(spells.iloc[i][["syear", "smonth", "sdate"]])),
               month_)] = kind
    out = []
    for i, s in enumerate(spells.itertuples()):
        start = s.syear * 12 + s.smonth - 1
        stop = LAST if pd.isna(s.eyear) else int(s.eyear) * 12 + int(s.emonth) - 1
        for m in range(start, min(stop, LAST) + 1):
            year, month = divmod(m, 12)
            month += 1
            gov = [g for first, g in REGIMES if first <= m][-1]
            kind = aimed.get((i, m), 0)
            attempt, suc = int(kind > 0), int(kind == 2)
            tenure = m - start + 1
            row = {c: 0 for c in columns}
            row.update(ccode=403, country="STP", leader=s.leader, year=year, month=month,
                       elected=int(not pd.isna(s.l_year)), age=year - s.birthyear,
                       male=int(s.gender), militarycareer=int(s.militarycareer),
                       tenure_months=tenure, government=gov,
                       lastelection=float(np.log(tenure)), loss=float(np.log(tenure)),
                       pt_attempt=attempt, pt_suc=suc)
            out.append(row)
    return pd.DataFrame(out, columns=list(columns))


@pytest.fixture(scope="module")
def with_stp(tmp_path_factory) -> Path:
    """The excerpt with STP's rows inserted in ccode order (a file in REIGN's layout)."""
    raw = pd.read_csv(LEADER_MONTHS)
    stp = stp_rows(raw.columns)
    before = raw[raw["ccode"] < 403]
    frame = pd.concat([before, stp, raw[raw["ccode"] > 403]], ignore_index=True)
    path = tmp_path_factory.mktemp("stp") / "reign_with_stp.csv"
    frame.to_csv(path, index=False)
    return path


def _load(frame, **kw):
    choice = resolve_features(frame.columns, source="f.csv")
    return validate_panel(frame, source="f.csv", numeric_features=choice.features, **kw)


def test_the_fixture_has_sao_tomes_within_month_return():
    stp = stp_rows(pd.read_csv(LEADER_MONTHS, nrows=1).columns)
    july = stp[(stp["year"] == 2003) & (stp["month"] == 7)]
    assert july["leader"].tolist() == ["Menezes", "Pereira", "Menezes"]
    assert july["tenure_months"].tolist() == [23, 1, 1]
    assert july["pt_attempt"].tolist() == [1, 0, 0] and july["pt_suc"].tolist() == [1, 0, 0]
    aug95 = stp[(stp["year"] == 1995) & (stp["month"] == 8)]
    assert aug95["leader"].tolist() == ["Trovoada"] and aug95["pt_attempt"].tolist() == [1]
    assert stp["pt_attempt"].sum() == 2


def test_within_month_return_is_kept_and_counted(with_stp):
    frame = pd.read_csv(with_stp)
    loaded = _load(frame)
    panel = loaded.frame
    assert len(panel) == len(frame)                                   # nothing refused
    [r] = loaded.spells.itertuples()
    assert (r.ccode, r.year, r.month, r.leader, r.spells) == (403, 2003, 7, "Menezes", 2)
    rows = frame.index[(frame["ccode"] == 403) & (frame["year"] == 2003)
                       & (frame["month"] == 7)] + 1
    assert r.source_rows == [int(rows[0]), int(rows[2])]
    assert loaded.spell_rows == 2
    # file order kept inside the month: Menezes, Pereira, Menezes
    july = panel[(panel["ccode"] == 403) & (panel["year"] == 2003) & (panel["month"] == 7)]
    assert july["leader"].tolist() == ["Menezes", "Pereira", "Menezes"]


def test_lead_target_is_the_max_over_the_months_rows(with_stp):
    panel = _load(pd.read_csv(with_stp)).frame
    y, complete = lead_target(panel, 1)
    stp = (panel["ccode"] == 403).to_numpy()
    ym = panel["year"].to_numpy() * 12 + panel["month"].to_numpy() - 1
    june = stp & (ym == 2003 * 12 + 5)
    july = stp & (ym == 2003 * 12 + 6)
    assert y[june].tolist() == [1.0]          # the attempt is on one of July's three rows
    assert y[july].tolist() == [0.0, 0.0, 0.0]   # the same target for every spell row
    # against a direct loop over country-months
    attempts = panel.groupby(["ccode", "year", "month"])["pt_attempt"].max()
    for i in np.flatnonzero(stp & complete)[:400]:
        nxt = ym[i] + 1
        assert y[i] == attempts.get((403, nxt // 12, nxt % 12 + 1), np.nan)


def test_league_table_has_one_row_per_country_in_a_return_month(with_stp):
    panel = _load(pd.read_csv(with_stp)).frame
    ym = panel["year"].to_numpy() * 12 + panel["month"].to_numpy() - 1
    cut = panel[ym <= 2003 * 12 + 6].reset_index(drop=True)
    score = np.linspace(0, 1, len(cut))
    table, (y, m) = evaluate.league_table(cut, score, np.full(len(cut), "x"), 0.5)
    assert (y, m) == (2003, 7)
    assert table["ccode"].is_unique and len(table) == cut.loc[
        cut["year"].eq(2003) & cut["month"].eq(7), "ccode"].nunique()
    [stp] = table[table["ccode"] == 403].itertuples()
    assert stp.leader == "Menezes" and stp.leader_rows == 3     # the leader in office at the end
    last = np.flatnonzero((cut["ccode"] == 403).to_numpy())[-1]
    assert stp.probability == score[last]


def test_identical_rows_name_both_rows_or_are_dropped_and_counted(with_stp):
    frame = pd.read_csv(with_stp)
    copy = pd.concat([frame, frame.iloc[[17]]], ignore_index=True)     # data row 18 again
    with pytest.raises(InputError) as e:
        _load(copy)
    msg = str(e.value)
    assert "rows 18 and" in msg and f"{len(copy)}" in msg and "identical in every column" in msg
    assert 'data.duplicates = "drop"' in msg
    loaded = _load(copy, duplicates="drop")
    assert len(loaded.frame) == len(frame)
    [(reason, n)] = loaded.exclusions.items()
    assert n == 1 and "identical" in reason and loaded.excluded_rows[reason] == [len(copy)]
    # two rows of one key that differ in one cell only are spells, not copies
    spell = frame.iloc[[17]].copy()
    spell["tenure_months"] += 1
    assert len(_load(pd.concat([frame, spell], ignore_index=True)).frame) == len(frame) + 1


def test_identical_rows_exit_2_through_the_cli_and_drop_runs(cli, tmp_path, with_stp):
    lines = with_stp.read_text().splitlines()
    path = tmp_path / "dup.csv"
    path.write_text("\n".join(lines + [lines[18]]) + "\n")
    r = cli("validate", "coup", "--set", f"data.path={path}")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert f"rows 18 and {len(lines)}" in r.err and "identical in every column" in r.err
    r = cli("validate", "coup", "--set", f"data.path={path}", "--set", "data.duplicates=drop")
    assert r.code == 0, r.err


SMALL = ["forest.n_trees=4", "forest.trees_per_task=2", "forest.convergence=false",
         "importance.permutation_repeats=0", "backtest.first_test_year=2015",
         "backtest.n_trees=2", "backtest.trees_per_task=2", "backtest.bootstrap_replicates=0",
         "league.n_trees=2", 'backtest.models=["forest"]']


def test_the_job_runs_on_a_file_with_a_return_and_reports_it(local_client, tmp_path, with_stp):
    run = run_job("coup", overrides=[f"data.path={with_stp}", *SMALL],
                  client=local_client(1), out=tmp_path / "runs")
    s = run.summary
    assert s["within_month_returns"]["leader_months"] == 1
    assert s["within_month_returns"]["rows"] == 2
    [r] = s["within_month_returns"]["list"]
    assert (r["country"], r["year"], r["month"], r["leader"]) == ("STP", 2003, 7, "Menezes")
    [inp] = run.manifest["inputs"]
    assert inp["within_month_returns"][0]["source_rows"] == r["source_rows"]
    assert "within-month" in inp["description"]
    page = (run.run_dir / "report.html").read_text()
    assert "within-month" in page and "Menezes" in page
    league = run.table("league_table")
    assert league["ccode"].is_unique and 403 in set(league["ccode"])
    json.dumps(s)
