"""Benchmark of the coup job (issue 5): our time vs the straightforward time, in one run.

Sweep (1,000 thresholds ``linspace(0, 1, 1000)``, positive when p > t):
  * ours: the one-pass per-partition bin count + cumulative sums (``riskdask.coup.sweep``), in
    one process on 40,000 scores, and as Dask tasks (2 partitions, each sent to one worker) on
    riskdask's 2-worker LocalCluster on 4,000,000 scores (the time includes sending them);
  * straightforward: a Python loop over the thresholds with numpy masks, and a loop calling
    ``sklearn.metrics.confusion_matrix``. On 4,000,000 scores these loops are timed on an
    evenly spread subset of thresholds and extrapolated linearly (the output says so).
  Results are checked equal (all thresholds at 40,000; the timed subset at 4,000,000).

Forest (the full synthetic panel, random 70/30 split, 46 features, 200 trees, sklearn's
default parameters otherwise):
  * ours: the coup job's ``distributed_forest``: 40 sub-forests of 5 trees as tasks on
    riskdask's 2-worker LocalCluster (1 thread each, riskdask's batch Dask settings; cluster
    start-up excluded; training data scattered once; the trees stay on the workers, only
    aggregates come back).
    Small tasks (~3 s) keep the two workers' finishing times close: with 8 tasks of 25 trees
    one worker idled ~8% of the run while the other finished its last task;
  * straightforward: ``RandomForestRegressor(n_estimators=200, n_jobs=2, oob_score=True)``
    fit + predict on the test set in one process.
  Timed as three pairs in A B B A A B order, without tracemalloc; the ratio is the mean of
  each side's times (the per-pair ratios are printed too: this machine drifts by +-10%).
  Client memory: tracemalloc peak on the client in separate, untimed runs with 50 and 100
  trees (flat: the aggregates do not grow with trees), beside the pickled size of sklearn's
  forest. Then the estimated wall time of the 10,000-tree config per worker count.

Pooled backtest (issue 12; the full synthetic panel, test years 2010-2019 by default, 12 trees
per year, sklearn's default parameters otherwise):
  * ours: ``riskdask.coup.backtest.run_backtest``: one plan over (year, sub-forest) chunks of
    ``--bt-per-task`` trees on riskdask's 2-worker LocalCluster, the panel scattered once, the
    pooled prediction sums reduced on the cluster; years run concurrently;
  * straightforward: the same years fitted one after another, each
    ``RandomForestRegressor(n_estimators=12, n_jobs=2)`` fit on the years before + predict
    the year, in one process. Each year's fit ends with an idle tail (the last trees of a
    year run on one core while the other waits); the concurrent plan fills it.
  Timed as two pairs in A B B A order; the pooled ROC-AUC of both is printed (different random
  streams, so close, not equal).

Run: ``.venv/bin/python benchmarks/coup.py`` (about 13 minutes on 2 cores);
``--parts backtest`` runs one part only.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from riskdask.coup import backtest as bt  # noqa: E402
from riskdask.coup.distributed import distributed_forest  # noqa: E402
from riskdask.coup.forest import as_float32  # noqa: E402
from riskdask.coup.prepare import feature_matrix, month_index, random_split  # noqa: E402
from riskdask.coup.reign import validate_panel  # noqa: E402
from riskdask.coup.schema import DEFAULT_NUMERIC_FEATURES  # noqa: E402
from riskdask.coup.sweep import (bin_counts, combine_bin_counts,  # noqa: E402
                                 confusion_from_counts, threshold_grid)
from riskdask.coup.synthetic import synthetic_reign  # noqa: E402
from riskdask.coup.tasks import sweep_task  # noqa: E402
from riskdask.engine import Engine, map_reduce, plan_chunks, tree_reduce  # noqa: E402

ROWS: list[tuple[str, str, str, str, str]] = []

#: Trees per sub-forest task in the forest benchmark (configs/coup.toml uses the same).
PER_TASK = 5


def row(what, ours, straight, note=""):
    if ours and straight:
        r = straight / ours
        ratio = f"{r:.3f}x" if r < 10 else f"{r:,.1f}x"
    else:
        ratio = "-"
    ROWS.append((what, f"{ours:.4f}" if ours is not None else "-",
                 f"{straight:.4f}" if straight is not None else "-", ratio, note))


def best_of(fn, reps):
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def scores(n, seed):
    """Probabilities like a forest's: many ties, exact zeros, grid values; ~1% positives."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(0.3, 20.0, n), 4)
    p[rng.random(n) < 0.3] = 0.0
    grid = threshold_grid()
    on_grid = rng.random(n) < 0.01
    p[on_grid] = grid[rng.integers(0, 1000, on_grid.sum())]
    y = (rng.random(n) < np.clip(p * 3, 0.002, 1)).astype(np.int8)
    return p, y


def _partition_counts(part):
    return bin_counts(part["p"], part["y"])


def mask_loop(p, y, thresholds):
    yb = y == 1
    out = np.empty((len(thresholds), 4), dtype=np.int64)
    for i, t in enumerate(thresholds):
        pred = p > t
        out[i] = (np.sum(pred & yb), np.sum(pred & ~yb), np.sum(~pred & ~yb), np.sum(~pred & yb))
    return out


def cm_loop(p, y, thresholds):
    out = np.empty((len(thresholds), 4), dtype=np.int64)
    for i, t in enumerate(thresholds):
        tn, fp, fn, tp = confusion_matrix(y, (p > t).astype(np.int8), labels=[0, 1]).ravel()
        out[i] = (tp, fp, tn, fn)
    return out


def ours_table(c):
    return np.stack([c["TP"], c["FP"], c["TN"], c["FN"]], axis=1)


def bench_sweep(client):
    grid = threshold_grid()
    p, y = scores(40_000, 1)
    t_ours, counts = best_of(lambda: confusion_from_counts(bin_counts(p, y)), 20)
    t_mask, ref = best_of(lambda: mask_loop(p, y, grid), 3)
    t_cm, ref_cm = best_of(lambda: cm_loop(p, y, grid), 1)
    assert np.array_equal(ours_table(counts), ref) and np.array_equal(ref, ref_cm)
    row("sweep 40k: ours (1 process) vs numpy-mask loop", t_ours, t_mask, "all 1,000 equal")
    row("sweep 40k: ours (1 process) vs confusion_matrix loop", t_ours, t_cm, "all 1,000 equal")

    P, Y = scores(4_000_000, 2)
    chunks = plan_chunks(len(P), 2_000_000, 0)   # one partition per worker

    def distributed():
        return confusion_from_counts(map_reduce(sweep_task, chunks, combine_bin_counts,
                                                client=client, rows={"p": P, "y": Y},
                                                label="bench-sweep"))

    # Scores already on the workers, one partition each (as when the cluster scored them):
    # the sweep itself is then 2 count tasks and one addition.
    parts = client.scatter([{"p": P[c.start:c.stop], "y": Y[c.start:c.stop]} for c in chunks])
    client.rebalance(parts)

    def resident():
        leaves = [client.submit(_partition_counts, part, pure=False) for part in parts]
        return confusion_from_counts(tree_reduce(client, leaves, combine_bin_counts,
                                                 label="bench-sweep-resident").result())

    distributed()  # warm the workers' imports once
    resident()
    t_dist, big = best_of(distributed, 3)
    t_res, big_res = best_of(resident, 5)
    assert all(np.array_equal(big[k], big_res[k]) for k in big)
    t_one, _ = best_of(lambda: confusion_from_counts(bin_counts(P, Y)), 3)
    sub_mask = np.arange(0, 1000, 10)         # 100 thresholds
    sub_cm = np.arange(0, 1000, 200)          # 5 thresholds
    t_m, ref_m = best_of(lambda: mask_loop(P, Y, grid[sub_mask]), 1)
    t_c, ref_c = best_of(lambda: cm_loop(P, Y, grid[sub_cm]), 1)
    assert np.array_equal(ours_table(big)[sub_mask], ref_m)
    assert np.array_equal(ours_table(big)[sub_cm], ref_c)
    est_mask, est_cm = t_m * 1000 / len(sub_mask), t_c * 1000 / len(sub_cm)
    row("sweep 4M: ours distributed (2 workers, 2 parts, incl. sending scores) vs mask loop",
        t_dist, est_mask, "loop est. from 100 thresholds; those equal")
    row("sweep 4M: ours distributed, scores resident on workers vs mask loop", t_res, est_mask,
        "")
    row("sweep 4M: ours distributed vs confusion_matrix loop", t_dist, est_cm,
        "loop est. from 5 thresholds; those equal")
    row("sweep 4M: ours in 1 process vs mask loop", t_one, est_mask, "")
    row("sweep 4M ours distributed (incl. sending) vs mask loop on 40k", t_dist, t_mask,
        "target: ours(4M) faster than mask(40k)")
    row("sweep 4M ours distributed (resident) vs mask loop on 40k", t_res, t_mask,
        "target: ours(4M) faster than mask(40k)")
    return t_ours, t_mask, t_cm, t_dist


def panel_split():
    panel = validate_panel(synthetic_reign(), source="synthetic",
                           numeric_features=DEFAULT_NUMERIC_FEATURES).frame
    X, names = feature_matrix(panel, DEFAULT_NUMERIC_FEATURES)
    y = panel["pt_attempt"].to_numpy(np.float64)
    train, test = random_split(y, 0.3, seed=2019)
    return as_float32(X[train]), y[train], as_float32(X[test]), y[test]


def ours_forest(client, X_train, y_train, X_test, n_trees, per_task, seed=0, trace=False):
    """Our sub-forests on the cluster: wall seconds, client peak (tracemalloc, if ``trace``)."""
    if trace:  # tracemalloc slows every allocation in the client: never on a timed run
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    res, _ = distributed_forest(Engine(client), X_train, y_train, X_test, n_trees, per_task,
                                seed, {}, label=f"bench-forest-{n_trees}")
    wall = time.perf_counter() - t
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return wall, peak, res


def sklearn_forest(X_train, y_train, X_test, n_trees):
    t = time.perf_counter()
    rf = RandomForestRegressor(n_estimators=n_trees, n_jobs=2, oob_score=True, random_state=0)
    rf.fit(X_train, y_train)
    rf.predict(X_test)
    return time.perf_counter() - t, rf


def bench_forest(client, n_trees):
    X_train, y_train, X_test, _ = panel_split()
    print(f"forest data: train {X_train.shape}, test {X_test.shape}", flush=True)
    # warm-up: imports and a first scatter on the workers (not timed)
    ours_forest(client, X_train[:2000], y_train[:2000], X_test[:100], 2, 1)
    # Three pairs in A B B A A B order: the machine's drift and any first/second position
    # advantage cancel out (single pairs varied by +-10% here).
    t_sk, t_ours, res, forest_bytes = [], [], None, None
    for pair, sk_first in enumerate((True, False, True)):
        def one_sklearn():
            nonlocal forest_bytes
            t, rf = sklearn_forest(X_train, y_train, X_test, n_trees)
            if forest_bytes is None:
                forest_bytes = len(pickle.dumps(rf, protocol=pickle.HIGHEST_PROTOCOL))
            t_sk.append(t)

        def one_ours():
            nonlocal res
            t, _, res = ours_forest(client, X_train, y_train, X_test, n_trees, PER_TASK,
                                    seed=pair)
            t_ours.append(t)

        for step in ((one_sklearn, one_ours) if sk_first else (one_ours, one_sklearn)):
            step()
        print(f"pair {pair + 1}: sklearn {t_sk[-1]:.1f} s, ours {t_ours[-1]:.1f} s "
              f"(ours/sklearn {t_ours[-1] / t_sk[-1]:.3f})", flush=True)
    t_sk, t_ours = float(np.mean(t_sk)), float(np.mean(t_ours))
    # Client memory, flat in the number of trees (untimed runs, traced).
    small = n_trees // 4
    _, peak_small, _ = ours_forest(client, X_train, y_train, X_test, small, PER_TASK, seed=1,
                                   trace=True)
    _, peak_big, _ = ours_forest(client, X_train, y_train, X_test, n_trees // 2, PER_TASK,
                                 seed=3, trace=True)
    row(f"forest {n_trees} trees: ours (2 workers) vs RF(n_jobs=2, oob_score), mean of 3 pairs",
        t_ours, t_sk, "target: sklearn/ours >= 0.95x (ours <= 1.05x)")
    mb = 1024 ** 2
    returned = sum(a.nbytes for a in (res.test_prediction, res.oob_prediction, res.oob_count))
    print(f"\nclient memory (tracemalloc peak during our forest): {small} trees "
          f"{peak_small / mb:.1f} MB, {n_trees // 2} trees {peak_big / mb:.1f} MB "
          f"(aggregate returned: {returned / mb:.1f} MB)")
    print(f"sklearn forest pickled: {forest_bytes / mb:.1f} MB for {n_trees} trees -> "
          f"10,000 trees ~ {forest_bytes / n_trees * 10_000 / 1024 ** 3:.2f} GB "
          f"(what shipping sub-forests back would cost)")
    core_s_per_tree = t_ours * 2 / n_trees
    print(f"\nmeasured: {core_s_per_tree:.3f} core-seconds per tree "
          f"({X_train.shape[0]:,} x {X_train.shape[1]} training set), sklearn "
          f"{t_sk * 2 / n_trees:.3f}")
    full = tomllib.loads((ROOT / "configs" / "coup-full.toml").read_text())["forest"]
    n_full, per_full = full["n_trees"], full["trees_per_task"]
    n_tasks = -(-n_full // per_full)
    print(f"estimated wall time of configs/coup-full.toml ({n_full:,} trees in {n_tasks} tasks "
          f"of {per_full}; forest stage only):")
    for w in (1, 2, 4, 8, 16, 32, 64, 100):
        waves = -(-n_tasks // w)
        est = waves * per_full * core_s_per_tree
        print(f"  {w:>3} workers: {est / 60:7.1f} min")
    return t_ours, t_sk


def backtest_data():
    panel = validate_panel(synthetic_reign(), source="synthetic",
                           numeric_features=DEFAULT_NUMERIC_FEATURES).frame
    X, _ = feature_matrix(panel, DEFAULT_NUMERIC_FEATURES)
    return as_float32(X), panel["pt_attempt"].to_numpy(np.float64), month_index(panel)


def sequential_backtest(X, y, mi, years, n_trees):
    """The straightforward backtest: one sklearn forest per year, one year after another."""
    t = time.perf_counter()
    preds, ys = [], []
    for year in years:
        train, test = np.flatnonzero(mi < 12 * year), np.flatnonzero(mi // 12 == year)
        rf = RandomForestRegressor(n_estimators=n_trees, n_jobs=2, random_state=year)
        rf.fit(X[train], y[train])
        preds.append(rf.predict(X[test]))
        ys.append(y[test])
    return time.perf_counter() - t, np.concatenate(ys), np.concatenate(preds)


def ours_backtest(client, X, y, mi, years, n_trees, per_task, seed):
    t = time.perf_counter()
    folds = bt.year_folds(mi, years)
    models, sums = bt.run_backtest(Engine(client), X, y, mi, folds, lead_months=0,
                                   n_trees=n_trees, trees_per_task=per_task, seed=seed,
                                   label=f"bench-backtest-{seed}")
    wall = time.perf_counter() - t
    rows, _ = bt.pooled_layout(folds)
    return wall, y[rows], sums.sums[0] / n_trees


def bench_backtest(client, first, last, n_trees, per_task):
    from sklearn.metrics import roc_auc_score

    X, y, mi = backtest_data()
    years = list(range(first, last + 1))
    print(f"backtest data: {X.shape}, test years {first}-{last}, {n_trees} trees per year "
          f"({per_task} per task)", flush=True)
    ours_backtest(client, X[:3000], y[:3000], mi[:3000], [int(mi[2999] // 12)], 2, 1, 99)
    t_sk, t_ours, auc_sk, auc_ours = [], [], None, None
    for pair, sk_first in enumerate((True, False)):
        steps = []

        def one_sklearn():
            nonlocal auc_sk
            t, yy, p = sequential_backtest(X, y, mi, years, n_trees)
            t_sk.append(t)
            auc_sk = roc_auc_score(yy, p)

        def one_ours():
            nonlocal auc_ours
            t, yy, p = ours_backtest(client, X, y, mi, years, n_trees, per_task, seed=pair)
            t_ours.append(t)
            auc_ours = roc_auc_score(yy, p)

        steps = (one_sklearn, one_ours) if sk_first else (one_ours, one_sklearn)
        for step in steps:
            step()
        print(f"pair {pair + 1}: sequential sklearn {t_sk[-1]:.1f} s, ours {t_ours[-1]:.1f} s",
              flush=True)
    print(f"pooled ROC-AUC: ours {auc_ours:.3f}, sequential sklearn {auc_sk:.3f}")
    row(f"pooled backtest {first}-{last}, {n_trees} trees/year: ours (2 workers, one plan) vs "
        "years one after another (RF n_jobs=2), mean of 2 pairs",
        float(np.mean(t_ours)), float(np.mean(t_sk)), "target: sequential/ours >= 1.0x")


def bench_trees_needed(client, first, last, counts=(4, 25, 100)):
    """How many backtest trees make the forest's forecasts more than a handful of values
    (issue 21): per tree count, distinct forecasts, the share exactly 0, ROC-AUC and the
    Brier skill against climatology (each year's training attempt rate), computed directly.

    Measured 2026-12-06 (2 workers, 2010-2019): 4 trees 4 forecasts, 99 % at 0, ROC-AUC 0.493,
    skill -1.816 (10.8 s); 25 trees 12, 95 %, 0.575, -0.397 (67.1 s); 100 trees 36, 88 %,
    0.576, -0.392 (261.2 s): no gain past ~25 trees.
    """
    from sklearn.metrics import roc_auc_score

    X, y, mi = backtest_data()
    years = list(range(first, last + 1))
    rows = np.concatenate([np.flatnonzero(mi // 12 == yr) for yr in years])
    clim = np.concatenate([np.full(int(np.sum(mi // 12 == yr)), y[mi < 12 * yr].mean())
                           for yr in years])
    yy = y[rows]
    for n in counts:
        wall, _, p = ours_backtest(client, X, y, mi, years, n, min(n, 5), seed=n)
        bss = 1 - np.mean((p - yy) ** 2) / np.mean((clim - yy) ** 2)
        print(f"{n:>4} trees/year, {first}-{last}: {wall:6.1f} s, {len(np.unique(p)):>4} "
              f"distinct forecasts, {np.mean(p == 0):.0%} exactly 0, ROC-AUC "
              f"{roc_auc_score(yy, p):.3f}, Brier skill {bss:+.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--skip-forest", action="store_true")
    ap.add_argument("--parts", default="sweep,forest,backtest",
                    help="comma-separated: sweep, forest, backtest, trees (the backtest "
                         "forest's tree count: distinct forecasts and skill; not by default)")
    ap.add_argument("--bt-first", type=int, default=2010)
    ap.add_argument("--bt-last", type=int, default=2019)
    ap.add_argument("--bt-trees", type=int, default=12)
    # 6 trees per task: measured on a quiet 2-core machine, 3 per task gave 0.964x (two pairs
    # 40.0/41.3 s and 42.3/44.0 s) and 6 per task 1.034x (44.7/44.7 s, 43.6/40.7 s): per-task
    # overhead (slicing the fold's rows, sklearn's input checks) is paid per task.
    ap.add_argument("--bt-per-task", type=int, default=6)
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    from distributed import Client

    from riskdask.cluster import LocalSpec

    # riskdask's own local cluster (one single-threaded worker process per core, riskdask's
    # batch Dask settings), as `riskdask run` starts it.
    with (LocalSpec(n_workers=2, dashboard_address=":0").build() as cluster,
          Client(cluster) as client):
        client.wait_for_workers(2)
        if "sweep" in parts:
            bench_sweep(client)
        if "forest" in parts and not args.skip_forest:
            bench_forest(client, args.trees)
        if "backtest" in parts:
            bench_backtest(client, args.bt_first, args.bt_last, args.bt_trees, args.bt_per_task)
        if "trees" in parts:
            bench_trees_needed(client, args.bt_first, args.bt_last)
    if not ROWS:
        return
    width = max(len(r[0]) for r in ROWS)
    print(f"\n{'what':<{width}}  {'ours s':>9}  {'straight s':>11}  {'ratio':>9}  note")
    for what, ours, straight, ratio, note in ROWS:
        print(f"{what:<{width}}  {ours:>9}  {straight:>11}  {ratio:>9}  {note}")


if __name__ == "__main__":
    main()
