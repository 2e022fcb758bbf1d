"""Benchmark of checkpoints (issue 15): what writing them costs, what resuming saves.

1. Overhead: the seed-scale credit run (``configs/credit-full.toml``, 1,000,000 scenarios in
   chunks of 50,000) and the 200-tree coup run (``configs/coup.toml``), each through
   ``riskdask.run_job`` on riskdask's 2-worker LocalCluster (started once and warmed by one
   untimed run), with checkpoints (every chunk partial written by its worker task to
   ``<out>/.checkpoints``) and without (``checkpoint=False``), in pairs A B, B A, A B ...
   The time compared is the manifest's ``compute`` stage (load and writing the run directory
   are the same either way); each pair's ratio and each stage's means are printed, and the
   write time the workers themselves reported (the manifest's ``checkpoints.write_seconds``)
   as a share of their time: a direct measure that the run-to-run noise does not hide.
   Target: <= 3 % extra.
2. Resume: the same run started as ``riskdask run`` in a process of its own (with its own
   local cluster) is SIGKILLed -- process group, cluster included -- half-way through its
   checkpointed work: when as many checkpoint files exist as the last checkpointed run of
   part 1 (kept for this) had written at the middle of its span from first file to last, over
   every plan of the run (:func:`kill_point`); ``run_job(..., resume=True)`` then finishes it
   on the shared cluster (``--resumes N`` times; the median is reported). Its compute time is
   compared with the mean of part 1's checkpointed runs, and its numbers with the last one's
   (bit-identical). Target: <= 60 % of the uninterrupted run.

Run: ``.venv/bin/python benchmarks/checkpoint.py`` (about 15 minutes on 2 cores; the load
average is printed, timings on a shared machine are noisy). A short sanity run:
``--jobs coup --pairs 1 --set coup:forest.n_trees=40 --set coup:backtest.first_test_year=2012``.

Measured 2026-12-02 on the 2-core machine, nothing else running (load average 1.4-2.2; on this
VM one pair's ratio swings 0.89-1.25, so read the means, medians and the reported writes):

- ``--jobs credit --pairs 4 --resumes 3``, twice: overhead 3.80 vs 4.01 s (0.949; median
  paired ratio 0.926) and 3.93 vs 3.76 s (1.046; 1.050); the workers reported 0.06-0.09 s of
  writing for 20 files, 53 MB: 0.8-1.3 % of their time. Resume: medians 2.10 s (0.551; killed
  at 11-12 of 20 files, 11/11/12 chunks reused) and 2.35 s (0.598; 11 of 20).
- ``--jobs coup --pairs 4``: overhead 95.29 vs 93.66 s (1.017; median paired ratio 1.009);
  reported writes 0.47-0.53 s for 224 files, 333 MB: 0.26 % of the workers' time. Resume
  43.75 vs 95.29 s (0.459; killed at 141 of 224 files, 35 chunks reused, 69 computed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from riskdask import run_job  # noqa: E402
from riskdask.checkpoint import CheckpointStore, full_config_hash  # noqa: E402
from riskdask.cluster import connect  # noqa: E402
from riskdask.config import load_config  # noqa: E402
from riskdask.registry import get_job  # noqa: E402

N_WORKERS = 2
CASES = {"credit": ROOT / "configs" / "credit-full.toml", "coup": ROOT / "configs" / "coup.toml"}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _compute(res) -> float:
    return float(res.manifest["timings"]["compute"])


def overhead(job: str, client, work: Path, pairs: int = 2,
             sets: tuple = ()) -> tuple[float, float, list, object, list]:
    """Mean compute times with and without checkpoints, the ratio of each adjacent pair, the
    last checkpointed run's result and the write times of its checkpoint files (kept for
    :func:`kill_point`).

    Pairs alternate A B, B A, A B ... (A: no checkpoints): a drift of the machine's speed
    over the benchmark then falls on both sides alike.
    """
    times = {True: [], False: []}
    stages = {True: [], False: []}
    ratios = []
    last, written = None, []
    # one untimed run first: a fresh cluster's first run loads the kernels on every worker
    run_job(job, CASES[job], overrides=sets, client=client, out=work / f"o-{job}-warm",
            checkpoint=False, history=False)
    for k in range(pairs):
        pair = {}
        for ck in ((False, True) if k % 2 == 0 else (True, False)):
            out = work / f"o-{job}-{k}-{int(ck)}"
            res = run_job(job, CASES[job], overrides=sets, client=client, out=out,
                          checkpoint=None if ck else False, keep_checkpoint=ck, history=False)
            pair[ck] = _compute(res)
            times[ck].append(pair[ck])
            stages[ck].append(res.manifest["timings"])
            if ck:
                c = res.manifest["checkpoints"]
                assert c["computed"] > 0
                share = c["write_seconds"] / (pair[ck] * N_WORKERS)
                print(f"  {job} writes as the workers reported them: {c['write_seconds']:.2f} s "
                      f"for {c['files_written']} files, {c['bytes_written'] / 1e6:.0f} MB: "
                      f"{share:.2%} of {N_WORKERS} workers' time in the compute stage",
                      flush=True)
                last = res
                written = sorted(f.stat().st_mtime
                                 for f in (out / ".checkpoints").rglob("*.ckpt"))
                shutil.rmtree(out / ".checkpoints")
        ratios.append(pair[True] / pair[False])
        print(f"  {job} pair {k + 1}: {pair[True]:.2f} vs {pair[False]:.2f} s "
              f"({ratios[-1]:.3f})", flush=True)
    for name in stages[True][0]:   # where any extra time went, stage by stage
        a = sum(t.get(name, 0.0) for t in stages[True]) / len(stages[True])
        b = sum(t.get(name, 0.0) for t in stages[False]) / len(stages[False])
        print(f"  {job} stage {name}: {a:.2f} vs {b:.2f} s", flush=True)
    return (sum(times[True]) / len(times[True]), sum(times[False]) / len(times[False]), ratios,
            last, written)


def kill_point(written: list[float]) -> int:
    """How many checkpoint files exist half-way through an uninterrupted run's work.

    ``written``: the write times of every checkpoint file (every part of every plan: the
    forest's sub-forest branches, the sweeps, the backtest's forests ...) of an uninterrupted
    run. Half-way is the middle of the span from the first file to the last, in time. A count
    of chunks or files is no measure of work: coup's main forest writes 4 files per
    sub-forest (its aggregates and 3 permutation blocks), a backtest task 1, and tasks differ
    in cost (with the earlier 2016-2019 backtest of 12-tree tasks, half of the run's 57
    chunks fell at 28 of the main forest's 40, before any backtest forest).
    """
    mid = (written[0] + written[-1]) / 2
    return sum(1 for t in written if t <= mid)


def resume(job: str, client, work: Path, reference, written: list[float],
           sets: tuple = (), attempt: int = 0) -> tuple[float, float, int, int, int, int]:
    out = work / f"r-{job}-{attempt}"
    cfg = load_config(job, get_job(job).config, CASES[job], sets).config
    store = CheckpointStore(str(out / ".checkpoints"), job=job,
                            config_hash=full_config_hash(job, cfg))
    target = kill_point(written)
    cmd = [sys.executable, "-m", "riskdask", "run", job, "--config", str(CASES[job]),
           "--out", str(out), "--workers", str(N_WORKERS), "--quiet"]
    for kv in sets:
        cmd += ["--set", kv]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    root = Path(store.root)
    while True:
        done = sum(1 for _ in root.rglob("*.ckpt"))
        if done >= target:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"the run to kill ended early: {proc.stderr.read()}")
        time.sleep(0.01)   # kill close to the point: tasks keep finishing meanwhile
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sum(1 for _ in root.rglob("*.ckpt"))   # files whose tasks finished meanwhile
    res = run_job(job, CASES[job], overrides=sets, client=client, out=out, resume=True,
                  history=False)
    assert res.summary == reference.summary, "resumed run differs from the uninterrupted one"
    for name, t in res.manifest["timings"].items():
        before = reference.manifest['timings'].get(name, 0.0)
        print(f"  {job} resumed stage {name}: {t:.2f} vs {before:.2f} s",
              flush=True)
    ck = res.manifest["checkpoints"]
    return _compute(res), _compute(reference), ck["reused"], ck["computed"], done, len(written)


def _sets(items: list[str]) -> dict[str, tuple]:
    out: dict[str, list] = {job: [] for job in CASES}
    for item in items:
        job, sep, kv = item.partition(":")
        if not sep or job not in CASES or "=" not in kv:
            raise SystemExit(f"--set {item!r}: expected JOB:KEY=VALUE with JOB in {list(CASES)}")
        out[job].append(kv)
    return {job: tuple(v) for job, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--pairs", type=int, default=2,
                    help="pairs of runs with and without checkpoints, in A B B A ... order "
                         "(default 2; 1 is a quick look)")
    ap.add_argument("--no-resume", action="store_true", help="only the overhead")
    ap.add_argument("--resumes", type=int, default=1,
                    help="kill-and-resume attempts per job (their median is reported)")
    ap.add_argument("--set", action="append", default=[], metavar="JOB:KEY=VALUE",
                    help="config override for one job's runs, e.g. coup:forest.n_trees=40 "
                         "(a short sanity run; the figures above are without)")
    args = ap.parse_args()
    sets = _sets(args.set)
    work = Path(tempfile.mkdtemp(prefix="riskdask-bench-ckpt-"))
    rows = []
    try:
        with connect(n_workers=N_WORKERS, quiet=True) as client:
            for job in args.jobs:
                load0 = _load()
                with_ck, without, ratios, last, written = overhead(job, client, work,
                                                                   args.pairs, sets[job])
                rows.append((f"{job}: compute, checkpoints vs none (mean of {len(ratios)} "
                             f"pairs; median paired ratio {statistics.median(ratios):.3f})",
                             f"{with_ck:.2f} s", f"{without:.2f} s",
                             f"{with_ck / without:.3f}", load0))
                print(*rows[-1], sep="  |  ", flush=True)
                if args.no_resume:
                    continue
                load1 = _load()
                attempts = []
                for i in range(args.resumes):
                    attempts.append(resume(job, client, work, last, written, sets[job], i))
                    t, _, reused, computed, files, total = attempts[-1]
                    print(f"  {job} resume {i + 1}: {t:.2f} s (killed at {files} of {total} "
                          f"checkpoint files; {reused} chunks reused, {computed} computed)",
                          flush=True)
                resumed = statistics.median(a[0] for a in attempts)
                reused = "/".join(str(a[2]) for a in attempts)
                computed = "/".join(str(a[3]) for a in attempts)
                rows.append((f"{job}: resumed after a half-way kill (median of {len(attempts)}; "
                             f"{reused} chunks reused, {computed} computed) vs uninterrupted "
                             f"with checkpoints (mean of {len(ratios)})",
                             f"{resumed:.2f} s", f"{with_ck:.2f} s", f"{resumed / with_ck:.3f}",
                             load1))
                print(*rows[-1], sep="  |  ", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = ("case", "ours", "baseline", "ratio", "load avg (1/5/15 min)")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(json.dumps({"load_end": _load()}))


if __name__ == "__main__":
    main()
