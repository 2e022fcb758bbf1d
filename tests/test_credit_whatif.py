"""What-if from a run's own scenarios (riskdask.credit.whatif, ``riskdask whatif``).

- the regenerated states of an obligor are the run's own, bit for bit (both draw paths);
- remove one position: equal (to rounding) to a full rerun with its nominal 0 (the same
  draw layout), and within 2 SE of a full rerun without it;
- add one position to an existing obligor: equal (to rounding) to a full rerun with it
  (the same layout); add a new obligor, and add + remove: within 2 SE of a full rerun;
- the CLI: exit 0 with the figures, exit 2 with one message for a bad id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskdask import run_job
from riskdask.credit.synthetic import synthetic_portfolio
from riskdask.credit.whatif import column_states, replay_chunk, tail_states_chunk
from riskdask.credit.whatif_run import whatif
from riskdask.engine import Engine, plan_chunks
from riskdask.errors import InputError
from test_credit_lattice import LocalContext, local_compute

SIM = ["simulation.n_scenarios=40000", "simulation.chunk_size=10000",
       "simulation.confidence=[0.99, 0.999]", "simulation.tail_fits=false"]


@pytest.mark.parametrize("kind,n", [("factor", 60), ("uniform", 300)])
def test_regenerated_states_are_the_runs_own(kind, n):
    """Normal draws (factor: many groups) and 32-bit uniforms (uniform: few groups)."""
    cfg, r = local_compute({"seed": 3, "portfolio": {"synthetic_obligors": n},
                            "correlation": {"kind": kind},
                            "simulation": {"n_scenarios": 10_000, "chunk_size": 5_000,
                                           "confidence": [0.99, 0.999],
                                           "tail_fits": False}})
    m, s = r.model, r.run.summary
    chunks = plan_chunks(10_000, 5_000, LocalContext(3).streams.seed("scenarios"))
    cols = [0, m.n_obligors // 2, m.n_obligors - 1]

    def states_of(c, columns):
        eta, draws, *_ = replay_chunk(c, m, columns)
        return column_states(m, columns, draws, eta)

    states = np.concatenate([states_of(c, cols) for c in chunks], axis=1)
    rows = s.tail_scenario[:s.tail_states.shape[0]]
    np.testing.assert_array_equal(states[:, rows].T, s.tail_states[:, cols])
    every = np.concatenate([states_of(c, list(range(m.n_obligors))) for c in chunks], axis=1)
    total = m.loss_by_state[np.arange(m.n_obligors)[:, None], every].sum(axis=0)
    np.testing.assert_allclose(total, s.scenario_loss, rtol=1e-12, atol=1e-6)
    # every obligor's state in chosen scenarios (the tail rows the what-if regenerates), with
    # and without the block marks of a first walk: the run's kept tail states
    for picked in (rows[::7], rows[:2]):    # many rows a block, a few
        _check_tail_rows(m, s, chunks, rows, picked)


def _check_tail_rows(m, s, chunks, rows, picked):
    for c in chunks:
        mine = picked[(picked >= c.start) & (picked < c.stop)]
        _, _, _, _, marks = replay_chunk(c, m, [0])
        for with_marks in (None, marks):
            got = tail_states_chunk(c, m, rows=mine - c.start, marks=with_marks)
            where = [int(np.flatnonzero(rows == x)[0]) for x in mine]
            np.testing.assert_array_equal(got, s.tail_states[where])


def test_kept_tables_read_back_as_the_run_had_them(tmp_path):
    """The kept tail table (fixed-width states, null past the rows that carry them) reads
    back to the run's tail buffer and states; the buffer's order is the top rows of the kept
    losses (what the what-if takes for the run's book); a run that kept states as
    variable-length bytes (before the buffer's order was kept) still reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from riskdask.credit.simulation import top_rows
    from riskdask.credit.whatif_run import STATES_TABLE, _kept_states, kept_tables

    _, r = local_compute({"seed": 5, "portfolio": {"synthetic_obligors": 50},
                          "simulation": {"n_scenarios": 20_000, "chunk_size": 5_000,
                                         "confidence": [0.99, 0.999], "tail_fits": False}})
    s, m = r.run.summary, r.model
    tables = kept_tables(s, m)
    path = tmp_path / "tail_states.parquet"
    pq.write_table(tables[STATES_TABLE], path, compression="none", use_dictionary=False)
    scen, states, order = _kept_states(pq.read_table(path), m.n_obligors, path)
    rows = s.tail_states.shape[0]
    assert 0 < rows < s.tail_scenario.size
    np.testing.assert_array_equal(order, s.tail_scenario)
    np.testing.assert_array_equal(scen, s.tail_scenario[:rows])
    np.testing.assert_array_equal(states, s.tail_states[:, m.input_columns()])
    loss = tables["scenario_losses"].column("loss").to_numpy()
    np.testing.assert_array_equal(order, top_rows(loss, np.ones(loss.size), m.weight_needed))
    old = pa.table({"scenario": scen, "states": [bytes(x) for x in states]})
    scen2, states2, order2 = _kept_states(old, m.n_obligors, path)
    assert order2 is None
    np.testing.assert_array_equal(states2, states)
    with pytest.raises(InputError, match="obligors"):
        _kept_states(pq.read_table(path), m.n_obligors + 1, path)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    d = tmp_path_factory.mktemp("whatif")
    pf = synthetic_portfolio(2009, 40)
    pf.to_csv(d / "pf.csv", index=False)
    return d, pf


def _run(client, d, frame, name):
    path = d / f"{name}.csv"
    frame.to_csv(path, index=False)
    return run_job("credit", overrides=[*SIM, f"portfolio.path={path}"], client=client,
                   out=d / f"runs-{name}", quiet=True)


def _close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _within(res, run, k=2.0):
    for lv, ref in zip(res["levels"], run.summary["levels"]):
        for key in ("var", "es"):
            err = np.hypot(lv[f"{key}_se"], ref[f"{key}_se"])
            assert abs(lv[key] - ref[key]) < k * err, (key, lv, ref)


def test_whatif_against_full_reruns(local_client, book):
    d, pf = book
    client = local_client(1)
    base = _run(client, d, pf, "base")
    assert (base.run_dir / "tables" / "scenario_losses.parquet").is_file()
    # -- remove one position
    victim = pf["position_id"].iloc[5]
    res = whatif(base.run_dir, remove=[victim])
    zero = pf.copy()
    zero.loc[zero["position_id"] == victim, "nominal"] = 0.0
    same_layout = _run(client, d, zero, "zero")
    for lv, ref in zip(res["levels"], same_layout.summary["levels"]):
        assert _close(lv["var"], ref["var"]) and _close(lv["es"], ref["es"]), (lv, ref)
    # the marginal ES of every obligor of the modified book = the rerun's ES contributions
    # (the same scenarios and tail; the removed obligor is out of the book, 0 in the rerun),
    # and they add up to its ES
    contrib = pd.read_parquet(same_layout.run_dir / "tables" / "obligors.parquet")
    mine = res["obligors"].set_index("obligor_id")
    for j, lv in enumerate(res["levels"]):
        key = ["99", "99_9"][j]
        ref = contrib.set_index("obligor_id")[f"es_contribution_{key}"]
        got = mine[f"marginal_es_{key}"].reindex(ref.index).fillna(0.0)   # removed: not in
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-6 * abs(lv["es"]))
        assert _close(lv["marginal_es_sum"], lv["es"]), lv
    _within(res, _run(client, d, pf[pf["position_id"] != victim], "removed"))
    # -- add one position to an existing obligor (same rating): the same draws
    extra = pf.iloc[[7]].copy()
    extra["position_id"] = "ADD1"
    extra["nominal"] = 2.5e7
    extra.to_csv(d / "add_existing.csv", index=False)
    res = whatif(base.run_dir, add=d / "add_existing.csv")
    full = _run(client, d, pd.concat([pf, extra]), "added_existing")
    for lv, ref in zip(res["levels"], full.summary["levels"]):
        assert _close(lv["var"], ref["var"]) and _close(lv["es"], ref["es"]), (lv, ref)
        assert lv["es_change_se"] > 0
    # -- add a new obligor, and add + remove: within 2 SE of the full reruns
    new = pf.iloc[[3]].copy()
    new["position_id"], new["obligor_id"], new["nominal"] = "NEW1", "ONEW", 6e7
    new.to_csv(d / "add_new.csv", index=False)
    res = whatif(base.run_dir, add=d / "add_new.csv")
    _within(res, _run(client, d, pd.concat([pf, new]), "added_new"))
    both = whatif(base.run_dir, add=d / "add_new.csv", remove=[victim])
    _within(both, _run(client, d, pd.concat([pf[pf["position_id"] != victim], new]), "both"))
    added = [p for p in both["positions"] if p["id"] == "ONEW"][0]
    assert added["marginal_es"][0] > 0
    # losses (8 B a scenario) and the kept tail states: a - 1 = 399 rows of 40 obligors (+ the
    # scenario number)
    assert both["kept_bytes"] == 8 * 40_000 + 399 * (40 + 8)


def test_whatif_cli(cli, local_client, book):
    d, pf = book
    base = _run(local_client(1), d, pf, "cli")
    table = d / "marginal.csv"
    r = cli("whatif", str(base.run_dir), "--remove", pf["position_id"].iloc[2],
            "--table", str(table))
    assert r.code == 0, r.err
    assert "ES 99%" in r.out and "change" in r.out and "largest marginal ES" in r.out
    written = pd.read_csv(table)
    assert {"obligor_id", "status", "marginal_es_99", "marginal_es_99_9"} <= set(written)
    r = cli("whatif", str(base.run_dir), "--remove", pf["position_id"].iloc[2],
            "--table", str(d / "marginal.xlsx"))
    assert r.code == 2 and "marginal.xlsx" in r.err
    r = cli("whatif", str(base.run_dir), "--remove", "NO_SUCH_ID")
    assert r.code == 2 and "NO_SUCH_ID" in r.err and r.err.count("\n") <= 1
    # a damaged kept table (read on a thread): exit 2, one line naming the file
    import shutil

    for name in ("scenario_losses", "tail_states"):
        copy = d / f"damaged-{name}"
        shutil.copytree(base.run_dir, copy)
        path = copy / "tables" / f"{name}.parquet"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        r = cli("whatif", str(copy), "--remove", pf["position_id"].iloc[2])
        assert r.code == 2 and f"{name}.parquet" in r.err and r.err.count("\n") <= 1, r.err


@pytest.mark.parametrize("importance", [False, True])
def test_marginal_es_sums_to_es(local_client, book, importance):
    """Euler allocation of the modified book: the marginal ES of its obligors (unchanged,
    changed, new) add up to its ES, under plain sampling (simulated means) and importance
    sampling (analytic means), and a new obligor appears with its own row."""
    d, pf = book
    extra = ["importance_sampling.enabled=true",
             "importance_sampling.compare_plain=false"] if importance else []
    path = d / "pf_sum.csv"
    pf.to_csv(path, index=False)
    base = run_job("credit", overrides=[*SIM, *extra, f"portfolio.path={path}"],
                   client=local_client(1), out=d / f"runs-sum-{importance}", quiet=True)
    new = pf.iloc[[3]].copy()
    new["position_id"], new["obligor_id"], new["nominal"] = "NEW9", "ONEW9", 8e7
    new.to_csv(d / "add_new9.csv", index=False)
    res = whatif(base.run_dir, add=d / "add_new9.csv", remove=[pf["position_id"].iloc[1]])
    if not importance:    # on a 2-worker cluster: the same bits as in this process
        on_cluster = whatif(base.run_dir, add=d / "add_new9.csv",
                            remove=[pf["position_id"].iloc[1]], engine=Engine(local_client(2)))
        pd.testing.assert_frame_equal(on_cluster["obligors"], res["obligors"], check_exact=True)
        assert on_cluster["levels"] == res["levels"]
    table = res["obligors"]
    assert "ONEW9" in set(table["obligor_id"])
    assert table.loc[table["obligor_id"] == "ONEW9", "status"].item() == "added"
    for lv in res["levels"]:
        key = "marginal_es_" + ("99" if lv["confidence"] == 0.99 else "99_9")
        assert table[key].sum() == pytest.approx(lv["es"], rel=1e-9)
        assert lv["es_change_se"] > 0


def test_one_obligor_kernel_equals_the_group_kernel():
    """The what-if's one-obligor classification (a cell's x-range, else one inverse normal
    a scenario) gives the group kernel's states bit for bit, edge draws included (0,
    2^32 - 1, draws at a cut, at cell edges, boundaries at a cell edge)."""
    from scipy.special import ndtr, ndtri

    from riskdask.credit.migration import uniform_column_states, uniform_migrations

    rng = np.random.default_rng(11)
    size = 400_000
    b = np.sort(rng.normal(0.0, 1.5, 7))
    b[0] = -3.9
    systematic = rng.normal(0.0, 0.6, size)
    sd = 0.83
    draw = rng.integers(0, 2 ** 32, size, dtype=np.uint64).astype(np.uint32)
    # draws exactly at, and one below, each boundary's integer cut
    cuts = np.minimum(np.floor(ndtr((b[None, :] - systematic[:50, None]) / sd) * 2.0 ** 32),
                      2.0 ** 32 - 1).astype(np.uint64)
    draw[:350] = np.concatenate([cuts.ravel(), np.maximum(cuts.ravel(), 1) - 1])[:350]
    draw[350:354] = [0, 1, 2 ** 32 - 1, 2 ** 32 - 2]
    # the cells of 2^20 draws whose x-range decides most states: draws on both sides of
    # cell edges, and boundaries placed exactly at a cell edge's x
    edges = rng.integers(1, 4096, 200).astype(np.uint64) << np.uint64(20)
    draw[400:1000] = np.concatenate([edges - 1, edges, edges + 1])
    k = rng.integers(0, b.size, 200)
    x_edge = ndtri(edges.astype(float) * 2.0 ** -32)
    systematic[400:600] = b[k] - sd * x_edge
    systematic[600:800] = b[k] - sd * x_edge
    systematic[800:1000] = b[k] - sd * x_edge
    for r in range(8):
        s, _, new = uniform_migrations(draw[None, :], b[None, :], systematic[None, :],
                                       np.array([sd]), np.array([0, 1]), np.array([r]))
        ref = np.full(size, r, np.uint8)
        ref[s] = new
        np.testing.assert_array_equal(uniform_column_states(draw, b, systematic, sd), ref)


@pytest.mark.parametrize("setting", ["matrix", "factor_correlation"])
def test_whatif_refuses_what_it_cannot_replay(cli, local_client, tmp_path, setting):
    """A full correlation matrix (no factors) and correlated factors: exit 2, one message
    naming the config key."""
    frame = synthetic_portfolio(5, 12)
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    ids = list(dict.fromkeys(frame["obligor_id"]))
    over = [*SIM, "simulation.n_scenarios=4000", "simulation.chunk_size=2000",
            f"portfolio.path={path}"]
    if setting == "matrix":
        corr = np.full((len(ids), len(ids)), 0.2)
        np.fill_diagonal(corr, 1.0)
        cpath = tmp_path / "c.csv"
        pd.DataFrame(corr, columns=ids).assign(obligor_id=ids)[["obligor_id", *ids]].to_csv(
            cpath, index=False)
        over += ["correlation.kind=matrix", f"correlation.matrix={cpath}"]
    else:
        lpath, fpath = tmp_path / "l.csv", tmp_path / "fc.csv"
        pd.DataFrame({"obligor_id": ids, "a": 0.4, "b": 0.3}).to_csv(lpath, index=False)
        pd.DataFrame({"factor": ["a", "b"], "a": [1.0, 0.5], "b": [0.5, 1.0]}).to_csv(
            fpath, index=False)
        over += ["correlation.kind=factor", f"correlation.loadings={lpath}",
                 f"correlation.factor_correlation={fpath}"]
    run = run_job("credit", overrides=over, client=local_client(1), out=tmp_path / "runs",
                  quiet=True)
    r = cli("whatif", str(run.run_dir), "--remove", frame["position_id"].iloc[0])
    key = "correlation.kind" if setting == "matrix" else "correlation.factor_correlation"
    assert r.code == 2 and key in r.err and r.err.count("\n") <= 1, r.err


@pytest.mark.parametrize("importance", [False, True])
def test_whole_array_summary_is_the_merged_one(importance):
    """The what-if's Step 6 input from whole arrays (scenario_summary) holds the tail rows,
    batches and batch sums of the run's chunk-merged summary bit for bit, and its moments
    to rounding -- so the new book's figures are the run's definitions."""
    from riskdask.credit.simulation import scenario_summary, simulation_statistics

    cfg, r = local_compute({"seed": 5, "portfolio": {"synthetic_obligors": 80},
                            "correlation": {"kind": "uniform"},
                            "importance_sampling": {"enabled": importance,
                                                    "compare_plain": False},
                            "simulation": {"n_scenarios": 20_000, "chunk_size": 5_000,
                                           "confidence": [0.99, 0.999],
                                           "tail_fits": False}})
    m, s = r.model, r.run.summary
    chunks = plan_chunks(20_000, 5_000, LocalContext(5).streams.seed("scenarios"))
    whole = scenario_summary(chunks, m, s.scenario_loss, s.scenario_weight)
    np.testing.assert_array_equal(whole.batches, s.batches)
    np.testing.assert_array_equal(whole.tail_scenario, s.tail_scenario)
    np.testing.assert_array_equal(whole.tail_batch, s.tail_batch)
    np.testing.assert_allclose(whole.histogram, s.histogram, rtol=1e-9, atol=1e-9)
    assert whole.mean == pytest.approx(s.mean, rel=1e-13)
    a = simulation_statistics(whole, m, 1.0).levels
    b = simulation_statistics(s, m, 1.0).levels
    for x, y in zip(a, b):
        assert x.var == y.var and x.es == pytest.approx(y.es, rel=1e-12)
        assert x.es_se == pytest.approx(y.es_se, rel=1e-9)
    # a floor from rows carrying the buffer's weight (the what-if's: another book's buffer
    # on the same scenarios) spares the partition and keeps the same rows
    other = s.scenario_loss * (1.0 + 0.3 * np.sin(np.arange(s.scenario_loss.size)))
    w = np.ones(other.size) if s.scenario_weight.size == 0 else s.scenario_weight
    rows = scenario_summary(chunks, m, other, s.scenario_weight).tail_scenario
    floor = float(other[s.tail_scenario].min())
    assert w[s.tail_scenario].sum() >= m.weight_needed
    assert (other < floor).any() and (other[rows] >= floor).all()
    np.testing.assert_array_equal(
        scenario_summary(chunks, m, other, s.scenario_weight, floor=floor).tail_scenario,
        rows)
