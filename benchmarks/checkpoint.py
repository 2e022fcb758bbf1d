"""Benchmark of checkpoints (issue 15): what writing them costs, what resuming saves.

1. Overhead: the seed-scale credit run (``configs/credit-full.toml``, 1,000,000 scenarios in
   chunks of 50,000) and the 200-tree coup run (``configs/coup.toml``), each through
   ``riskdask.run_job`` on riskdask's 2-worker LocalCluster (started once, excluded), with
   checkpoints (every chunk partial written by its worker task to ``<out>/.checkpoints``) and
   without (``checkpoint=False``), in A B B A order. The time compared is the manifest's
   ``compute`` stage (load and writing the run directory are the same either way).
   Target: <= 3 % extra.
2. Resume: the same run started as ``riskdask run`` in a process of its own (with its own
   local cluster) is SIGKILLed -- process group, cluster included -- half-way through its
   checkpointed work: when as many checkpoint files exist as the last checkpointed run of
   part 1 (kept for this) had written at the middle of its span from first file to last, over
   every plan of the run (:func:`kill_point`); ``run_job(..., resume=True)`` then finishes it
   on the shared cluster. Its compute time is compared with an uninterrupted run's, and its numbers with
   the uninterrupted run's (bit-identical). Target: <= 60 % of the uninterrupted run.

Run: ``.venv/bin/python benchmarks/checkpoint.py`` (about 10 minutes on 2 cores; the load
average is printed, timings on a shared machine are noisy). A short sanity run:
``--jobs coup --pairs 1 --set coup:forest.n_trees=40 --set coup:backtest.first_test_year=2012``.

Measured 2026-12-02 on the 2-core machine, nothing else running (load average 0.8-2.2; on this
VM differences under ~5 % are within the noise), A B B A:
credit overhead 4.56 vs 5.34 s (0.854: no overhead measurable); credit resume 3.43 vs 4.27 s
(0.804; 10 of 20 chunks reused) -- the simulation is now ~3.3 s of the 4.3 s compute stage, and
the stages a checkpoint cannot save (Step 7 fits ~0.3 s, figures ~0.6-0.9 s) bound the ratio at
~0.68 for a half-way kill; coup overhead 98.46 vs 93.88 s (1.049); coup resume 47.52 vs 99.91 s
(0.476; killed at 139 of 224 checkpoint files, 34 chunks reused, 70 computed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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

CASES = {"credit": ROOT / "configs" / "credit-full.toml", "coup": ROOT / "configs" / "coup.toml"}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _compute(res) -> float:
    return float(res.manifest["timings"]["compute"])


def overhead(job: str, client, work: Path, pairs: int = 2,
             sets: tuple = ()) -> tuple[float, float, object, list]:
    """Mean compute times with and without checkpoints; the last checkpointed run's result
    and the write times of its checkpoint files (kept for :func:`kill_point`)."""
    times = {True: [], False: []}
    last, written = None, []
    order = (False, True, True, False) if pairs == 2 else (False, True)
    for i, ck in enumerate(order):
        out = work / f"o-{job}-{i}"
        res = run_job(job, CASES[job], overrides=sets, client=client, out=out,
                      checkpoint=None if ck else False, keep_checkpoint=ck, history=False)
        times[ck].append(_compute(res))
        if ck:
            assert res.manifest["checkpoints"]["computed"] > 0
            last = res
            written = sorted(f.stat().st_mtime for f in (out / ".checkpoints").rglob("*.ckpt"))
            shutil.rmtree(out / ".checkpoints")
    return (sum(times[True]) / len(times[True]), sum(times[False]) / len(times[False]), last,
            written)


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
           sets: tuple = ()) -> tuple[float, float, int, int, int, int]:
    out = work / f"r-{job}"
    cfg = load_config(job, get_job(job).config, CASES[job], sets).config
    store = CheckpointStore(str(out / ".checkpoints"), job=job,
                            config_hash=full_config_hash(job, cfg))
    target = kill_point(written)
    cmd = [sys.executable, "-m", "riskdask", "run", job, "--config", str(CASES[job]),
           "--out", str(out), "--workers", "2", "--quiet"]
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
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sum(1 for _ in root.rglob("*.ckpt"))   # files whose tasks finished meanwhile
    res = run_job(job, CASES[job], overrides=sets, client=client, out=out, resume=True,
                  history=False)
    assert res.summary == reference.summary, "resumed run differs from the uninterrupted one"
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
    ap.add_argument("--pairs", type=int, default=2, choices=(1, 2),
                    help="2: A B B A order (default); 1: one A B pair (a quick look)")
    ap.add_argument("--no-resume", action="store_true", help="only the overhead")
    ap.add_argument("--set", action="append", default=[], metavar="JOB:KEY=VALUE",
                    help="config override for one job's runs, e.g. coup:forest.n_trees=40 "
                         "(a short sanity run; the figures above are without)")
    args = ap.parse_args()
    sets = _sets(args.set)
    work = Path(tempfile.mkdtemp(prefix="riskdask-bench-ckpt-"))
    rows = []
    try:
        with connect(n_workers=2, quiet=True) as client:
            for job in args.jobs:
                load0 = _load()
                with_ck, without, last, written = overhead(job, client, work, args.pairs,
                                                           sets[job])
                rows.append((f"{job}: compute, checkpoints vs none", f"{with_ck:.2f} s",
                             f"{without:.2f} s", f"{with_ck / without:.3f}", load0))
                print(*rows[-1], sep="  |  ", flush=True)
                if args.no_resume:
                    continue
                load1 = _load()
                resumed, full, reused, computed, files, total = resume(
                    job, client, work, last, written, sets[job])
                rows.append((f"{job}: resumed after a half-way kill vs uninterrupted "
                             f"(killed at {files} of {total} checkpoint files; "
                             f"{reused} chunks reused, {computed} computed)",
                             f"{resumed:.2f} s", f"{full:.2f} s", f"{resumed / full:.3f}", load1))
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
