"""Benchmark of the credit job's Monte Carlo against straightforward numpy (not a test).

    .venv/bin/python benchmarks/credit.py [--scenarios 1000000] [--obligors 500]
                                          [--chunk-size 100000]

Straightforward = plain single-process numpy, all scenarios in memory: draw the normals,
correlate them (full Cholesky product, or one factor with no matrix product), count the
boolean threshold crossings, pick the CFV entries, sum, ``np.sort``; VaR/ES as in Step 6.
Each straightforward variant runs in its own process so its peak memory (ru_maxrss) is its
own. Ours = the job's kernel on the engine (riskdask's 2-worker LocalCluster of processes),
timed from submission to the Step 6 statistics (median of 3 runs on the warm cluster, each
printed; the straightforward runs once); peak memory per worker is the workers' ru_maxrss, on a
fresh cluster per run, at 1x and 4x the scenario count (flat memory). Last row: analytic UL
of a 5,000-obligor sector/country factor portfolio (collapsed rating-group path). Then
adaptive stopping (``simulation.target_relative_se``) on the embedded 200-name portfolio:
scenarios needed for SE(ES 99.99%) / ES <= 2% and 1% (plain) and <= 1% (importance
sampling), capped at 6,000,000 (``--only adaptive`` runs just these). What-if: one position
added, one removed, and both, from the run's kept scenario data against the full rerun
(target: a one-position change in <= 5 % of the full run), and the kept data's size
(``--only whatif``).
Everything is measured in this one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RHO = 0.3
#: Scenarios per chunk of the kernel timings. Each chunk summary carries a fixed-size tail
#: buffer (the 10,000 contribution rows x obligors of states), so fewer, larger chunks cost
#: less per scenario: measured on this machine at 1M x 500, 1.95 s at 100,000 against
#: 2.3-2.65 s at 50,000 (20 chunks). Tasks stay ~0.35 s.
CHUNK_SIZE = 100_000
CONF = (0.99, 0.999, 0.9999)


def _portfolio(n_obligors: int, kind: str, scenarios: int, extra=(), chunk_size=None):
    from riskdask.config import load_config
    from riskdask.credit.config import Config
    from riskdask.credit.pipeline import analytics, load_inputs

    overrides = [f"portfolio.synthetic_obligors={n_obligors}", "correlation.kind=uniform",
                 f"correlation.rho={RHO}", f"simulation.n_scenarios={scenarios}",
                 f"simulation.chunk_size={chunk_size or CHUNK_SIZE}", *extra]
    cfg = load_config("credit", Config, None, overrides).config
    inputs = load_inputs(cfg)
    an = analytics(cfg, inputs)
    if kind == "matrix":
        n = inputs.portfolio.n_obligors
        corr = np.full((n, n), RHO)
        np.fill_diagonal(corr, 1.0)
        inputs.correlation, inputs.correlation_kind = corr, "matrix"
    return cfg, inputs, an


# ------------------------------------------------------------------ straightforward
def _straightforward(n_obligors: int, scenarios: int, full: bool, queue) -> None:
    """All scenarios in memory; returns (seconds, peak RSS bytes, VaR/ES) via ``queue``."""
    cfg, inputs, an = _portfolio(n_obligors, "uniform", scenarios)
    cfv = an.cfv[:, ::-1]                                  # states worst first
    thr = an.bounds[:, 1:-1]
    n = cfv.shape[0]
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    if full:
        corr = np.full((n, n), RHO)
        np.fill_diagonal(corr, 1.0)
        chol = np.linalg.cholesky(corr)
        x = rng.standard_normal((scenarios, n))
        xc = x @ chol.T                                    # Step 2: x_c = L x
        del x
    else:
        z = rng.standard_normal(scenarios)
        e = rng.standard_normal((scenarios, n))
        xc = np.sqrt(RHO) * z[:, None] + np.sqrt(1 - RHO) * e
        del e, z
    state = np.zeros((scenarios, n), dtype=np.int8)
    for k in range(thr.shape[1]):                          # Step 3: boolean counting
        state += xc >= thr[:, k]
    del xc
    sfv = cfv[np.arange(n)[None, :], state].sum(axis=1)    # Step 4
    del state
    sfv.sort()                                             # Step 6
    mean = sfv.mean()
    out = []
    for c in CONF:
        a = int(np.floor(scenarios * (1 - c) + 0.5))
        out.append((mean - sfv[a - 1], mean - sfv[: a - 1].mean()))
    seconds = time.perf_counter() - t0
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, out))


def straightforward(n_obligors, scenarios, full):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_straightforward, args=(n_obligors, scenarios, full, q))
    p.start()
    result = q.get()
    p.join()
    return result


# ------------------------------------------------------------------ ours
def _peak_rss():
    import resource as r
    return r.getrusage(r.RUSAGE_SELF).ru_maxrss * 1024


def _warm_worker(model):
    from riskdask.credit.simulation import simulate_chunk
    from riskdask.engine import plan_chunks

    simulate_chunk(plan_chunks(1000, 1000, 0)[0], model)


def ours(n_obligors, scenarios, kind, repeats=1):
    """The job's Monte Carlo on a fresh 2-worker cluster: seconds (the median of ``repeats``
    timed runs on the warm cluster, each from submission to the Step 6 statistics), max worker
    peak RSS, VaR/ES."""
    from distributed import Client

    from riskdask.cluster import LocalSpec
    from riskdask.credit.pipeline import scenario_model

    cfg, inputs, an = _portfolio(n_obligors, kind, scenarios)
    model = scenario_model(cfg, inputs, an)
    # riskdask's own local cluster, as `riskdask run` starts it (batch Dask settings)
    spec = LocalSpec(n_workers=2, dashboard_address=":0", memory_limit="6GiB")
    with spec.build() as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        from riskdask.credit.simulation import (combine_summaries, simulate_chunk,
                                                simulation_statistics)
        from riskdask.engine import map_reduce, plan_chunks

        # Warm-up (imports and the compiled kernel loaded on every worker): a long-running
        # cluster has done this already.
        client.run(_warm_worker, model)
        map_reduce(simulate_chunk, plan_chunks(2000, 1000, 0), combine_summaries, client=client,
                   shared=model, label="warmup")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            chunks = plan_chunks(scenarios, cfg.simulation.chunk_size, cfg.seed)
            summary = map_reduce(simulate_chunk, chunks, combine_summaries, client=client,
                                 shared=model, label="bench")
            stats = simulation_statistics(summary, model, an.fv_portfolio)
            times.append(time.perf_counter() - t0)
            del summary
        peak = max(client.run(_peak_rss).values())
    if repeats > 1:
        print(f"    ours {kind}, {scenarios:,} scenarios, {repeats} runs: "
              + ", ".join(f"{t:.2f}" for t in times) + " s", flush=True)
    return float(np.median(times)), peak, [(lv.var, lv.es) for lv in stats.levels]


def analytic_ul_seconds(n_obligors=5000):
    from riskdask.config import load_config
    from riskdask.credit.config import Config
    from riskdask.credit.pipeline import analytics, load_inputs

    cfg = load_config("credit", Config, None,
                      [f"portfolio.synthetic_obligors={n_obligors}"]).config
    inputs = load_inputs(cfg)
    t0 = time.perf_counter()
    an = analytics(cfg, inputs)
    return time.perf_counter() - t0, an.ul


def adaptive_runs(targets=((0.02, False, 4), (0.01, False, 8), (0.01, True, 1)),
                  cap=6_000_000):
    """Adaptive stopping on the embedded 200-name default portfolio (factor correlation): the
    scenarios needed for SE(ES 99.99%) / ES <= target, plain and with importance sampling
    (no plain twin), on riskdask's 2-worker local cluster; capped at ``cap``."""
    from riskdask import run_job

    rows = []
    for target, importance, wave in targets:
        sets = [f"simulation.target_relative_se={target}", f"simulation.n_scenarios={cap}",
                "simulation.chunk_size=50000", f"simulation.wave_chunks={wave}",
                "simulation.tail_fits=false"]
        if importance:
            sets += ["importance_sampling.enabled=true", "importance_sampling.compare_plain=false"]
        t0 = time.perf_counter()
        res = run_job("credit", overrides=sets, n_workers=2, out="/tmp/riskdask-bench-credit",
                      lock=False)
        seconds = time.perf_counter() - t0
        a = res.summary["adaptive"]
        rows.append((target, importance, wave, a["scenarios_used"], a["relative_se"],
                     a["reached"], seconds))
    return rows


def print_adaptive(rows):
    print("adaptive stopping, embedded 200-name portfolio, ES at 99.99%:")
    for target, importance, wave, used, rel, reached, seconds in rows:
        print(f"  {'IS   ' if importance else 'plain'} target {target:g} "
              f"(waves of {wave} x 50,000): {used:>9,} scenarios, "
              f"relative SE {rel:.4f} ({'reached' if reached else 'NOT reached: cap'}), "
              f"{seconds:.1f} s wall (whole run)")


def whatif_bench(n_obligors, scenarios, repeats=3, importance=False):
    """What-if vs the full rerun it replaces, whole calls on this machine: the full run is
    ``run_job`` on a warm 2-worker cluster (load, simulation, tail fits, report, tables);
    the what-if is :func:`riskdask.credit.whatif_run.whatif` in this process on that run's
    directory (load the kept data, replay the changed obligors, Step 6 of the new book,
    marginal ES of every obligor).  Medians of ``repeats`` after one warm-up call each (the
    first call's compile and import time printed apart).  ``importance``: the run with
    importance sampling (its 99 % tail holds most scenarios)."""
    import tempfile

    from distributed import Client

    from riskdask import run_job
    from riskdask.cluster import LocalSpec
    from riskdask.credit.synthetic import synthetic_portfolio
    from riskdask.credit.whatif_run import whatif

    overrides = [f"portfolio.synthetic_obligors={n_obligors}", "correlation.kind=uniform",
                 f"correlation.rho={RHO}", f"simulation.n_scenarios={scenarios}",
                 f"simulation.chunk_size={CHUNK_SIZE}"]
    if importance:
        overrides += ["importance_sampling.enabled=true",
                      "importance_sampling.compare_plain=false"]
    out = Path(tempfile.mkdtemp(prefix="bench-whatif-"))
    pf = synthetic_portfolio(2009, n_obligors)
    extra = pf.iloc[[3]].copy()
    extra["position_id"], extra["nominal"] = "BENCH-ADD", 6e7
    add = out / "add.csv"
    extra.to_csv(add, index=False)
    victim = str(pf["position_id"].iloc[10])
    spec = LocalSpec(n_workers=2, dashboard_address=":0", memory_limit="6GiB")
    with spec.build() as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        full, sim = [], []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            run = run_job("credit", overrides=overrides, client=client, out=out, quiet=True)
            full.append(time.perf_counter() - t0)
            sim.append(json.loads((run.run_dir / "manifest.json").read_text())["timings"]
                       ["simulation"])
    cases = {"1 position added": {"add": add},
             "1 position removed": {"remove": [victim]},
             "1 removed + 1 added": {"add": add, "remove": [victim]}}
    small, first, info = {}, {}, {}
    for name, kwargs in cases.items():
        times = []
        for _ in range(repeats + 1):
            res = whatif(run.run_dir, **kwargs)
            times.append(res["seconds"])
        first[name], small[name] = times[0], float(np.median(times[1:]))
        info[name] = (res["regenerated_scenarios"], res["timings"])
    kept = sum(f.stat().st_size for f in (run.run_dir / "tables").glob("*.parquet")
               if f.stem in ("scenario_losses", "tail_states"))
    # from the shell, both commands pay their start-up (interpreter, imports, the cluster)
    import subprocess

    cli = [sys.executable, "-m", "riskdask"]
    sets = [x for o in overrides for x in ("--set", o)]
    shell = {"run": [], "whatif": []}
    for _ in range(2):
        for name, cmd in (("run", [*cli, "run", "credit", *sets, "--out", str(out)]),
                          ("whatif", [*cli, "whatif", str(run.run_dir), "--add", str(add)])):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            shell[name].append(time.perf_counter() - t0)
    shell_line = (f"    from the shell (new processes, 2 each): riskdask run credit "
                  f"{', '.join(f'{t:.2f}' for t in shell['run'])} s, riskdask whatif --add "
                  f"{', '.join(f'{t:.2f}' for t in shell['whatif'])} s = "
                  f"{100 * min(shell['whatif']) / min(shell['run']):.0f}% (start-up: the "
                  f"interpreter and imports ~0.85 s, numba's ~0.3 s)")
    print(f"    full runs: {', '.join(f'{t:.2f}' for t in full[1:])} s (first "
          f"{full[0]:.2f}); their simulation stage {float(np.median(sim[1:])):.2f} s",
          flush=True)
    for name in cases:
        reg, t = info[name]
        print(f"    what-if {name}: {small[name]:.3f} s (first call in the process "
              f"{first[name]:.2f} s); setup {t['setup']:.3f}, replay {t['replay']:.3f}, "
              f"tail states {t['tail_states']:.3f} ({reg} scenarios regenerated), "
              f"statistics {t['statistics']:.3f} s", flush=True)
    print(shell_line, flush=True)
    return float(np.median(full[1:])), float(np.median(sim[1:])), small, kept


def print_whatif(sim, n, full, sim_stage, small, kept):
    for name, t in small.items():
        print(f"what-if ({name}) vs full rerun, {sim:,} x {n}: {t:.3f} s vs {full:.2f} s = "
              f"{100 * t / full:.1f}% of the full run (target <= 5%), "
              f"{100 * t / sim_stage:.1f}% of its simulation stage alone")
    print(f"kept scenario data on disk: {kept / 2 ** 20:.1f} MiB (losses 8 B a scenario, 16 "
          f"with IS weights; tail states n x min(a - 1, contribution_rows) bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1_000_000)
    parser.add_argument("--obligors", type=int, default=500)
    parser.add_argument("--chunk-size", type=int, default=100_000,
                        help="scenarios per chunk of the kernel timings")
    parser.add_argument("--only", choices=("kernel", "adaptive", "whatif"), default=None,
                        help="run only the kernel timings, the adaptive-stopping runs or the "
                             "what-if rows")
    parser.add_argument("--importance", action="store_true",
                        help="what-if rows on an importance-sampling run (1 repeat)")
    args = parser.parse_args()
    global CHUNK_SIZE
    CHUNK_SIZE = args.chunk_size
    sim, n = args.scenarios, args.obligors
    if args.only == "adaptive":
        print_adaptive(adaptive_runs())
        return
    if args.only == "whatif":
        print_whatif(sim, n, *(whatif_bench(n, sim, repeats=1, importance=True)
                               if args.importance else whatif_bench(n, sim)))
        return
    gb = 1024 ** 3
    rows = []

    print(f"credit benchmark: {sim:,} scenarios x {n} obligors, uniform rho = {RHO}, "
          f"2 worker processes (this machine: {mp.cpu_count()} cores), chunks of "
          f"{CHUNK_SIZE:,}", flush=True)
    s_one, m_one, r_one = straightforward(n, sim, full=False)
    print(f"  straightforward one-factor done: {s_one:.1f} s", flush=True)
    o_one, w_one, q_one = ours(n, sim, "uniform", repeats=3)
    print(f"  ours uniform/factor done: {o_one:.1f} s", flush=True)
    o_one4, w_one4, _ = ours(n, 4 * sim, "uniform")
    print(f"  ours uniform/factor at 4x scenarios done: {o_one4:.1f} s", flush=True)
    # The first cluster a process starts has a lower worker baseline than later ones (the same
    # 1M run measured 0.206 GiB first, 0.324 GiB after another cluster), so the flat-memory
    # pair is compared on equal footing: 1x again, after the 4x run.
    _, w_one, _ = ours(n, sim, "uniform")
    print("  ours uniform/factor at 1x again (memory baseline) done", flush=True)
    s_full, m_full, r_full = straightforward(n, sim, full=True)
    print(f"  straightforward full Cholesky done: {s_full:.1f} s", flush=True)
    o_full, w_full, q_full = ours(n, sim, "matrix", repeats=3)
    print(f"  ours full matrix done: {o_full:.1f} s", flush=True)
    t_ul, ul = analytic_ul_seconds(5000)

    rows.append(("uniform/factor path vs one-factor draw", o_one, s_one, s_one / o_one, ">= 4x",
                 w_one / gb, m_one / gb))
    rows.append(("full-matrix path vs full Cholesky", o_full, s_full, s_full / o_full, ">= 2.5x",
                 w_full / gb, m_full / gb))
    rows.append((f"uniform/factor path at {4 * sim:,} scenarios", o_one4, float("nan"),
                 float("nan"), "memory flat (<10%)", w_one4 / gb, float("nan")))
    print()
    head = (f"{'case':44s} {'ours s':>8s} {'straight s':>10s} {'ratio':>7s} {'target':>18s} "
            f"{'ours GB/worker':>14s} {'straight GB':>11s}")
    print(head)
    print("-" * len(head))
    for name, o, s, ratio, target, wg, sg in rows:
        print(f"{name:44s} {o:8.2f} {s:10.2f} {ratio:7.2f} {target:>18s} {wg:14.2f} {sg:11.2f}")
    print(f"{'analytic UL, 5,000 obligors, factor model':44s} {t_ul:8.2f} {'':>10s} {'':>7s} "
          f"{'<= 2 s':>18s}")
    print()
    print(f"peak memory per worker, {sim:,} vs {4 * sim:,} scenarios: {w_one / gb:.3f} vs "
          f"{w_one4 / gb:.3f} GB ({100 * (w_one4 / w_one - 1):+.1f}%)")
    print("VaR / ES (EUR million), ours vs straightforward (different random streams; agree "
          "within Monte Carlo error):")
    for c, (ov, oe), (sv, se), (fv, fe), (gv, ge) in zip(CONF, q_one, r_one, q_full, r_full):
        print(f"  {100 * c:g}%: one-factor {ov / 1e6:8.2f} / {oe / 1e6:8.2f} vs "
              f"{sv / 1e6:8.2f} / {se / 1e6:8.2f};  full matrix {fv / 1e6:8.2f} / {fe / 1e6:8.2f}"
              f" vs {gv / 1e6:8.2f} / {ge / 1e6:8.2f}")
    print(f"analytic UL of the 5,000-obligor portfolio: {ul:,.0f} EUR")
    if args.only is None:
        print()
        print_whatif(sim, n, *whatif_bench(n, sim))
        print()
        print_adaptive(adaptive_runs())


if __name__ == "__main__":
    main()
