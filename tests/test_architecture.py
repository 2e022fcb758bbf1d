"""The structure the jobs share: the declared protocol, config defaults in one place, light
workers, and every job's numbers pinned through the one generic run path."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from riskdask.config import CONFIG_DIR, load_config
from riskdask.protocol import Job
from riskdask.registry import EXTRA_JOBS, MAIN_JOBS, available_jobs, get_job

import fingerprint

SHIPPED = sorted(CONFIG_DIR.glob("*.toml"))


def test_every_job_is_declared_through_the_protocol():
    jobs = available_jobs()
    assert tuple(jobs) == MAIN_JOBS + EXTRA_JOBS
    for name, job in jobs.items():
        assert isinstance(job, Job) and job.name == name
        assert issubclass(job.config, BaseModel) and callable(job.load) and callable(job.compute)


def test_the_api_knows_jobs_only_through_the_registry():
    """No module of the library imports the jobs package (the registry does, by name)."""
    root = Path(__file__).resolve().parent.parent / "riskdask"
    offenders = [p.relative_to(root) for p in root.rglob("*.py")
                 if any(line.strip().startswith(("import jobs", "from jobs"))
                        for line in p.read_text().splitlines())]
    assert offenders == []


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_only_override_model_defaults(path):
    """The pydantic models are canonical: a shipped TOML never repeats a key at its default
    (such a copy drifts; ``run_job(job, config={...})`` must give what the TOML gives)."""
    data = tomllib.loads(path.read_text())
    job = data.pop("job")
    model = get_job(job).config
    defaults = _flatten(model().model_dump(mode="json"))
    given = _flatten(load_config(job, model, path).config.model_dump(mode="json"))
    repeated = sorted(k for k in _flatten(data) if k in defaults and given[k] == defaults[k])
    assert repeated == [], f"{path.name} repeats model defaults: {repeated}"


@pytest.mark.parametrize("job", MAIN_JOBS)
def test_the_default_config_equals_the_model_defaults_plus_its_overrides(job):
    """configs/<job>.toml, loaded as a file, is the same config as the model's defaults
    updated with the TOML's keys given as a mapping (nothing hides in the file)."""
    path = CONFIG_DIR / f"{job}.toml"
    data = tomllib.loads(path.read_text())
    from_file = load_config(job, get_job(job).config, path).config
    from_mapping = load_config(job, get_job(job).config, data).config
    assert from_file == from_mapping


def test_a_worker_importing_a_kernel_stays_light():
    """``import riskdask.credit.bvn`` (what a worker does to unpickle a kernel) must not load
    pydantic, click, matplotlib or the API."""
    heavy = ["pydantic", "click", "matplotlib", "riskdask.api", "riskdask.cluster",
             "riskdask.config", "riskdask.report", "distributed"]
    for module in ("riskdask.credit.bvn", "riskdask.credit.simulation", "riskdask.hazard.gridsearch",
                   "riskdask.coup.tasks", "riskdask.coup.backtest"):
        code = (f"import sys, {module}\n"
                f"print([m for m in {heavy!r} if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "[]", f"import {module} loads {out}"


@pytest.mark.parametrize("job", MAIN_JOBS)
def test_every_job_reproduces_its_pinned_numbers(job, tmp_path, local_client):
    """Each job's embedded default through the generic path (``run_job``): summary.json and
    every table equal the committed fingerprints bit for bit (``tests/fingerprint.py``)."""
    from riskdask import run_job

    expected = json.loads(fingerprint.FINGERPRINTS.read_text())[job]
    res = run_job(job, client=local_client(2), out=tmp_path)
    diff = fingerprint.diff(expected, fingerprint.run_fingerprint(res.run_dir))
    assert diff == [], f"{job}: numbers moved: {diff} (see tests/fingerprint.py)"
