"""Benchmark of the hazard grid search (issue 4): our time vs the straightforward time.

Straightforward path (one process): for each (k1, k2) grid point, compute T = k1*N0 + k2*N1,
fit lifelines ``NelsonAalenFitter(nelson_aalen_smoothing=False)`` on each half-sample
(~1,330 NPOs each), take the Breslow increments, smooth them with numpy on the 101-point grid
and compute Dev. It is timed on an evenly spread subset of the grid points and extrapolated
linearly to the full grid (the output says so); on that subset its Dev is also checked against
ours.

Ours: the grid tiles as Dask tasks on a 2-worker LocalCluster (cluster start-up excluded; the
NPO pattern table is scattered once), and the whole ``hazard-full`` job (101 x 101 grid,
R = 20 splits, bootstrap band, figures, Parquet) on the same cluster.

The whole job includes the uncertainty report (per-split optima, Dev(theta) over splits,
paired held-out comparisons, bandwidth sensitivity). The least-squares cross-validated
bandwidth (``riskdask.hazard.bandwidth.cv_bandwidth``, 25 candidates, full sample) is timed on
its own, against the kernel smoothing it precedes.

Run: ``.venv/bin/python benchmarks/hazard.py`` (about a minute on 2 cores).

Power study (issue 22): ``.venv/bin/python benchmarks/hazard.py --power`` simulates panels with
a known direction (``riskdask.hazard.synthetic``, inverted-U hazard) for theta* in {0, 26.6,
63.4} deg x n in {5,000, 20,000, 100,000} NPOs x ``--seeds`` seeds (default 5) and reports,
per cell: the coverage and mean width of the 95 % profile-likelihood interval
(``riskdask.hazard.likelihood``, its 181-direction profile as tasks on the 2 workers) and of
the seed's Dev range (the 90 % range of the per-split optima over ``--splits`` balanced splits,
direction search over 91 interior directions, ties broken by the direction limit), how often
each rejects theta = 0, and the wall time of the profile (person-years, aggregation and the
181 fits on the cluster; target: the 100,000-NPO profile in <= 60 s). Straightforward
reference for the profile: scikit-learn's ``PoissonRegressor`` on the raw person-year rows,
timed on a few directions and extrapolated to 181 (the ratio is printed).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifelines import NelsonAalenFitter  # noqa: E402

from riskdask.engine import map_chunks, plan_chunks  # noqa: E402
from riskdask.hazard.estimators import GridRule, deviation, smooth_hazard  # noqa: E402
from riskdask.hazard.gridsearch import (TileInput, coefficient_matrix, compress,  # noqa: E402
                                        evaluate_points, evaluate_tile, make_grid_points,
                                        sample_weights)
from riskdask.hazard.panel import Period, build_panel  # noqa: E402
from riskdask.hazard.split import age_band, balanced_splits, stratum_codes  # noqa: E402
from riskdask.hazard.synthetic import generate_panel  # noqa: E402


def straightforward_dev(N0, N1, event, sample, k1, k2, rule: GridRule) -> float:
    """One grid point the plain way: lifelines per half-sample + numpy smoothing."""
    t = np.round(k1 * N0 + k2 * N1, 9)
    grid, bw = rule.grid_and_bandwidth(float(t.max()))
    curves = []
    for s in (1, 2):
        m = sample == s
        naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(t[m], event[m])
        H = naf.cumulative_hazard_.iloc[:, 0].to_numpy()
        dH = np.diff(np.concatenate(([0.0], H)))
        keep = dH > 0
        curves.append(smooth_hazard(grid, naf.cumulative_hazard_.index.to_numpy()[keep], dH[keep],
                                    bw))
    return deviation(curves[0], curves[1])


def worker_peak_rss_mb(client) -> float:
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    return max(client.run(peak).values())


POWER_TRUTHS = {"0": (1.0, 0.0), "26.6": (2.0, 1.0), "63.4": (1.0, 2.0)}


def _dev_range(panel, n_splits: int, seed: int):
    """The seed's Dev direction search on one panel: the 90 % range of the per-split optima
    and the optimum of the mean Dev (the job's rule, on 91 interior directions)."""
    from riskdask.hazard.gridsearch import direction_points, tiebreak_matrix
    from riskdask.hazard.uncertainty import optimum_report, reference_points

    npos = panel.npos
    band = age_band((npos.first_break_year - npos.founded_year).to_numpy(), [0, 5, 15, 30])
    strata = stratum_codes(npos.field, npos.function, band)
    splits = balanced_splits(strata, seed, n_splits)
    table = compress(panel.features.matrix(), panel.event)
    W, D = sample_weights(table, splits)
    pts = direction_points(np.radians(np.linspace(0.5, 89.5, 91)))
    rule = GridRule(ties="direction_limit", grid_start="support")
    tb = tiebreak_matrix("T", pts, np.ones(pts.size, bool))
    dev = evaluate_points(table.features, W, D, coefficient_matrix("T", pts), rule, tb)
    ref = reference_points([0.0])
    ref_dev = evaluate_points(table.features, W, D, coefficient_matrix("T", ref), rule)
    rep = optimum_report(pts, dev, ref, ref_dev, 0.9)
    iv = rep.theta_interval
    return rep.interior.theta_deg, iv.lo, iv.hi


def power_study(args, client) -> int:
    """The power study of the module docstring; prints one row per (theta*, n)."""
    from riskdask.engine import Engine
    from riskdask.hazard import likelihood as L
    from riskdask.hazard.analysis import theta_deg
    from riskdask.hazard.config import Config as HazardConfig
    from riskdask.hazard.pipeline import likelihood_profile

    engine = Engine(client)
    sizes = [int(v) for v in args.sizes.split(",")]
    rows = []
    timings = {}
    ref_ratio = None
    for name, (k1, k2) in POWER_TRUTHS.items():
        truth = float(theta_deg(k1, k2))
        for n in sizes:
            cell = []
            for seed in range(args.seeds):
                per = Period()
                panel = build_panel(generate_panel(n, per, 1000 * seed + n % 997,
                                                   true_k1=k1, true_k2=k2), per)
                f = panel.features
                t0 = time.perf_counter()
                py = L.person_years(panel.grants, f.break_index, f.end_index, panel.event, 1)
                agg = L.aggregate(py.features, py.event)
                rep = likelihood_profile(HazardConfig(definition="T"), agg, 0.0, engine)
                t_prof = time.perf_counter() - t0
                timings.setdefault(n, []).append(t_prof)
                if ref_ratio is None and n == max(sizes):
                    ref_ratio = _straightforward_profile(py, t_prof)
                d_opt, d_lo, d_hi = _dev_range(panel, args.splits, seed)
                lo, hi = rep.ci95_deg
                cell.append({"lik_cover": lo <= truth <= hi, "lik_width": hi - lo,
                             "lik_rej0": rep.lr_tests["theta = 0 (T0 = N0)"]["rejected_at_5pct"],
                             "lik_err": abs(rep.theta_deg - truth),
                             "dev_cover": d_lo <= truth <= d_hi, "dev_width": d_hi - d_lo,
                             "dev_rej0": d_lo > 0.5, "dev_err": abs(d_opt - truth)})
            m = {k: float(np.mean([c[k] for c in cell])) for k in cell[0]}
            rows.append((name, n, m))
    print(f"\nhazard power study: {args.seeds} seeds per cell, inverted-U hazard, "
          f"Dev over {args.splits} splits")
    print("-" * 118)
    print(f"{'theta*':>7} {'n':>8} | {'lik cover':>9} {'width':>7} {'|err|':>6} {'rej 0':>6} | "
          f"{'Dev cover':>9} {'width':>7} {'|err|':>6} {'excl 0':>6}")
    for name, n, m in rows:
        print(f"{name:>7} {n:>8} | {m['lik_cover']:9.2f} {m['lik_width']:7.1f} "
              f"{m['lik_err']:6.1f} {m['lik_rej0']:6.2f} | {m['dev_cover']:9.2f} "
              f"{m['dev_width']:7.1f} {m['dev_err']:6.1f} {m['dev_rej0']:6.2f}")
    print("-" * 118)
    for n, ts in sorted(timings.items()):
        print(f"profile wall time, {n:>7} NPOs, 181 directions on {args.workers} workers: "
              f"median {np.median(ts):.2f} s, max {max(ts):.2f} s (target <= 60 s at 100,000)")
    if ref_ratio is not None:
        print(ref_ratio)
    return 0


def _straightforward_profile(py, t_ours: float, n_theta: int = 4) -> str:
    """scikit-learn's PoissonRegressor on the raw person-years at a few directions,
    extrapolated to the 181-direction profile: the ratio to ours."""
    import warnings

    from sklearn.linear_model import PoissonRegressor

    from riskdask.hazard import likelihood as L

    t0 = time.perf_counter()
    for theta in np.linspace(10, 80, n_theta):
        T = py.features @ L.direction_coef("T", theta)
        B = L.spline_basis(T, T.min(), T.max(), L.DEFAULT_DF)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PoissonRegressor(alpha=0.0, fit_intercept=False, solver="newton-cholesky",
                             tol=1e-10, max_iter=1000).fit(B, py.event)
    t_plain = (time.perf_counter() - t0) / n_theta * 181
    return (f"straightforward profile (sklearn PoissonRegressor on {py.size:,} person-year rows, "
            f"181 directions, extrapolated from {n_theta}): {t_plain:.1f} s vs ours "
            f"{t_ours:.2f} s, ratio {t_plain / t_ours:.0f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=120,
                    help="grid points timed on the straightforward path")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--power", action="store_true", help="run the power study instead")
    ap.add_argument("--seeds", type=int, default=5, help="power study: seeds per cell")
    ap.add_argument("--sizes", default="5000,20000,100000", help="power study: NPO counts")
    ap.add_argument("--splits", type=int, default=10, help="power study: Dev splits")
    args = ap.parse_args(argv)
    if args.power:
        from distributed import Client

        from riskdask.cluster import LocalSpec

        cluster = LocalSpec(n_workers=args.workers, dashboard_address=":0").build()
        client = Client(cluster)
        try:
            return power_study(args, client)
        finally:
            client.close()
            cluster.close()

    from distributed import Client

    from riskdask.cluster import LocalSpec

    panel = build_panel(generate_panel(2660, Period(), seed=2018), Period())
    npos = panel.npos
    band = age_band((npos.first_break_year - npos.founded_year).to_numpy(), [0, 5, 15, 30])
    strata = stratum_codes(npos.field, npos.function, band)
    split = balanced_splits(strata, 2018, 1)
    F = panel.features.matrix()
    event = panel.event
    N0, N1 = F[:, 0], F[:, 1]
    rule = GridRule()
    axis = np.linspace(0.05, 2.05, 41)
    points = make_grid_points(axis, axis)
    coefs = coefficient_matrix("T", points)

    # -- straightforward, on a subset of the 41 x 41 grid, extrapolated -------------------------
    subset = np.unique(np.linspace(0, points.size - 1, args.subset).round().astype(int))
    t0 = time.perf_counter()
    ref = np.array([straightforward_dev(N0, N1, event, split[0], points.k1[i], points.k2[i], rule)
                    for i in subset])
    t_plain_subset = time.perf_counter() - t0
    t_plain = t_plain_subset / subset.size * points.size

    # -- ours in one process (kernel only), same 41 x 41 grid -----------------------------------
    table = compress(F, event)
    W, D = sample_weights(table, split)
    t0 = time.perf_counter()
    ours_inproc = evaluate_points(table.features, W, D, coefs, rule)[:, 0]
    t_inproc = time.perf_counter() - t0
    max_diff = float(np.max(np.abs(ours_inproc[subset] - ref)))

    # -- the cross-validated bandwidth (full sample, at k1 = k2), 25 candidate bandwidths ------
    from riskdask.hazard.bandwidth import cv_bandwidth
    from riskdask.hazard.estimators import breslow_increments

    t_seed = np.round(N0 + N1, 9)
    times, inc = breslow_increments(t_seed, event)
    t0 = time.perf_counter()
    for _ in range(5):
        cv = cv_bandwidth(times, inc, float(t_seed.max()))
    t_cv = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    for _ in range(5):
        cvr = cv_bandwidth(times, inc, float(t_seed.max()), boundary="reflect")
    t_cvr = (time.perf_counter() - t0) / 5

    cluster = LocalSpec(n_workers=args.workers, dashboard_address=":0").build()  # as `riskdask run`
    client = Client(cluster)
    try:
        client.run(lambda: None)
        # -- ours on the cluster: 41 x 41 grid, R = 1 (the same work as the straightforward path)
        shared = TileInput(features=table.features, at_risk=W, deaths=D, coefs=coefs, rule=rule)
        tiles = plan_chunks(points.size, 420, 2018)
        t0 = time.perf_counter()
        dist = np.concatenate(map_chunks(evaluate_tile, tiles, client=client, shared=shared,
                                         label="bench-grid"))[:, 0]
        t_ours = time.perf_counter() - t0
        assert np.array_equal(np.isnan(dist), np.isnan(ours_inproc))
        same = bool(np.allclose(dist, ours_inproc, rtol=0, atol=1e-12, equal_nan=True))

        # -- the whole hazard-full job (101 x 101, R = 20) on the same 2 workers ---------------
        from riskdask import run_job

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            full = Path(__file__).resolve().parent.parent / "configs" / "hazard-full.toml"
            res = run_job("hazard", full, client=client, out=tmp)
            t_full = time.perf_counter() - t0
            timings = res.manifest["timings"]
            full_summary = res.summary
        w_peak = worker_peak_rss_mb(client)
    finally:
        client.close()
        cluster.close()
    c_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    rows = [
        ("41x41 grid, R=1: straightforward (lifelines NA x2 + numpy smoothing, 1 process)",
         f"{t_plain:9.2f} s", f"extrapolated from {subset.size} points ({t_plain_subset:.2f} s, "
                              f"{t_plain_subset / subset.size * 1e3:.2f} ms/point)"),
        ("41x41 grid, R=1: ours, kernel in 1 process (no Dask)", f"{t_inproc:9.3f} s",
         f"ratio {t_plain / t_inproc:7.1f}x"),
        (f"41x41 grid, R=1: ours on {args.workers} local workers ({len(tiles)} tiles)",
         f"{t_ours:9.3f} s", f"ratio {t_plain / t_ours:7.1f}x (target >= 50x)"),
        ("101x101 grid, R=20: whole hazard-full job (uncertainty report included)",
         f"{t_full:9.2f} s",
         f"grid search {timings.get('grid_search', float('nan')):.2f} s (target <= 60 s)"),
        (f"LSCV bandwidth, 25 candidates, {times.size} failure times (plain / reflected)",
         f"{t_cv * 1e3:8.1f} ms", f"{t_cvr * 1e3:.1f} ms reflected; chose {cv['fraction']:.3g} / "
                                  f"{cvr['fraction']:.3g} x max(T)"),
    ]
    print("\nhazard benchmark (2,660 synthetic NPOs, half-samples of 1,330; T = k1*N0 + k2*N1)")
    print("-" * 118)
    for name, t, note in rows:
        print(f"{name:<82} {t:>12}  {note}")
    print("-" * 118)
    print(f"max |Dev ours - Dev straightforward| on the {subset.size} subset points: "
          f"{max_diff:.2e}; cluster == in-process: {same}")
    print(f"hazard-full: {full_summary['n_grid_points']} points x {full_summary['n_splits']} "
          f"splits in {full_summary['n_tiles']} tiles; stages {timings}")
    print(f"peak memory: client process {c_peak:.0f} MB, largest worker {w_peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
