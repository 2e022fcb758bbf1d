"""A fourth job from another distribution: registered through the ``riskdask.jobs`` entry-point
group only, it runs through ``jobs``, ``validate``, ``run``, ``history`` and the report
without a change to any file of riskdask.

The distribution is a throw-away folder on ``PYTHONPATH`` with a module and its
``*.dist-info`` (METADATA and entry_points.txt): what ``pip install`` leaves behind, which is
all ``importlib.metadata`` (and so the registry) reads. The CLI runs as a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

#: The whole fourth job: config, load, compute on the engine, present, metrics, declaration.
JOB_MODULE = '''
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from riskdask.engine import plan_chunks
from riskdask.formatting import estimate
from riskdask.protocol import Job, Metric, Outputs
from riskdask.selfcheck import NormalSummary, merge_summaries, normal_chunk


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(7, ge=0)
    n: int = Field(40_000, gt=0)


@dataclass(frozen=True)
class Result:
    draws: NormalSummary


def load(cfg, record, streams):
    record.add_input("draws", rows=cfg.n, fingerprint=f"seed={cfg.seed}")


def compute(cfg, inputs, ctx):
    chunks = plan_chunks(cfg.n, 10_000, ctx.streams.seed("draws"))
    return Result(ctx.engine.map_reduce(normal_chunk, chunks, merge_summaries, label="fourth"))


def present(result, cfg):
    se = (1 / result.draws.n) ** 0.5
    return Outputs(summary={"n": result.draws.n, "mean": result.draws.mean},
                   headline=[("mean <of draws>", estimate(result.draws.mean, se))])


def metrics(result):
    return {"mean": Metric.pm(result.draws.mean, (1 / result.draws.n) ** 0.5)}


JOB = Job(name="fourth", description="a plug-in job", title="fourth <plug-in>", config=Config,
          result=Result, load=load, compute=compute, present=present, metrics=metrics,
          purposes=("draws",))
'''


def _distribution(root: Path) -> Path:
    site = root / "site"
    site.mkdir()
    (site / "fourth_job.py").write_text(JOB_MODULE)
    info = site / "riskdask_fourth-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: riskdask-fourth\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[riskdask.jobs]\nfourth = fourth_job:JOB\n")
    return site


def _riskdask(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "riskdask", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_a_fourth_job_registers_through_an_entry_point(tmp_path):
    site = _distribution(tmp_path)
    listed = _riskdask(site, tmp_path, "jobs")
    assert listed.returncode == 0, listed.stderr
    assert "fourth" in listed.stdout and "a plug-in job" in listed.stdout

    checked = _riskdask(site, tmp_path, "validate", "fourth", "--set", "n=20000")
    assert checked.returncode == 0, checked.stderr
    bad = _riskdask(site, tmp_path, "validate", "fourth", "--set", "n=-1")
    assert bad.returncode == 2 and "'n'" in bad.stderr

    out = tmp_path / "runs"
    for seed in ("7", "8"):
        run = _riskdask(site, tmp_path, "run", "fourth", "--workers", "1", "--quiet",
                        "--out", str(out), "--set", f"seed={seed}")
        assert run.returncode == 0, run.stderr
        assert "mean <of draws>" in run.stdout
    [latest] = [p for p in (out / "fourth").iterdir() if p.name == "latest"]
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["n"] == 40_000
    page = (latest / "report.html").read_text()
    assert "fourth &lt;plug-in&gt;" in page and "<plug-in>" not in page   # escaped title
    assert "mean &lt;of draws&gt;" in page and "<h2>Run history</h2>" in page
    assert 'id="fig-history"' in page

    history = pd.read_parquet(out / "fourth" / "history.parquet")
    assert len(history) == 2 and history["mean"].notna().all()
    assert (history["mean [hi]"] - history["mean [lo]"]).round(12).eq(2 * 0.005).all()
    shown = _riskdask(site, tmp_path, "history", "fourth", "--out", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 3 and " config+inputs " in lines[2]      # a new seed: both

    # without the distribution on the path the job does not exist (nothing was edited)
    gone = subprocess.run([sys.executable, "-m", "riskdask", "validate", "fourth"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert gone.returncode == 2 and "unknown job 'fourth'" in gone.stderr


def test_the_fourth_job_is_small():
    """What a trivial job needs besides riskdask: its module (config, load, compute, present,
    metrics and the declaration) and two metadata lines."""
    lines = [ln for ln in textwrap.dedent(JOB_MODULE).splitlines() if ln.strip()]
    assert len(lines) < 50
