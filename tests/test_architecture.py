"""The structure the jobs share: the declared protocol, config defaults in one place, light
workers, and every job's numbers pinned through the one generic run path."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from riskdask.config import CONFIG_DIR, load_config
from riskdask.protocol import Job
from riskdask.registry import available_jobs, get_job, main_jobs

import fingerprint

MAIN_JOBS = main_jobs()
REPO = Path(__file__).resolve().parent.parent

SHIPPED = sorted(CONFIG_DIR.glob("*.toml"))


def test_every_job_is_declared_through_the_protocol():
    jobs = available_jobs()
    assert tuple(jobs)[:3] == ("credit", "hazard", "coup") and "selfcheck" in jobs
    for name, job in jobs.items():
        assert isinstance(job, Job) and job.name == name
        assert issubclass(job.config, BaseModel) and callable(job.load) and callable(job.compute)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*(REPO / "riskdask").rglob("*.py"), *(REPO / "jobs").rglob("*.py")]
    return {_module_name(p): p for p in files}


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over riskdask/ and jobs/, from every import statement
    of the module's source (inside functions, ``if TYPE_CHECKING`` and ``try`` blocks too), with
    relative imports resolved and ``from pkg import submodule`` counted as the submodule."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:      # ``import riskdask.credit.model as m``
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_from_real_imports():
    """The graph sees what a text search misses: function-level and relative imports."""
    graph = import_graph()
    assert "riskdask.engine" in graph["riskdask.api"] or any(
        "riskdask.engine" in graph[m] for m in graph["riskdask.api"])
    assert "riskdask.streams" in graph["riskdask.engine"]          # ``from .streams import``
    assert "riskdask.plotting" in graph["riskdask.history"]        # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_a_job_module():
    """riskdask finds jobs through the ``riskdask.jobs`` entry points only: no module of the
    library imports the application's ``jobs`` package, at any level, by any spelling, and
    no source names it in a string for ``importlib`` either."""
    graph = import_graph()
    offenders = {m: sorted(e for e in edges if e == "jobs" or e.startswith("jobs."))
                 for m, edges in graph.items() if m.startswith("riskdask")}
    assert {m: e for m, e in offenders.items() if e} == {}
    strings = [p.relative_to(REPO) for p in (REPO / "riskdask").rglob("*.py")
               if any(isinstance(n, ast.Constant) and isinstance(n.value, str)
                      and n.value.startswith("jobs.")
                      for n in ast.walk(ast.parse(p.read_text())))]
    assert strings == []


def test_there_are_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_every_job_is_registered_through_the_entry_point_group():
    from importlib.metadata import entry_points

    from riskdask.registry import GROUP

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(declared[GROUP]) == set(available_jobs())
    assert {ep.name for ep in entry_points(group=GROUP)} >= set(declared[GROUP])


@pytest.mark.parametrize("job", ["credit", "hazard", "coup", "selfcheck"])
def test_job_modules_are_thin_declarations(job):
    """``jobs/<name>.py`` is the Job record and its wiring; the maths, the config schema, the
    pipeline and the outputs live in ``riskdask/<domain>/``."""
    lines = (REPO / "jobs" / f"{job}.py").read_text().splitlines()
    assert len(lines) <= 250, f"jobs/{job}.py has {len(lines)} lines"


def test_tests_and_benchmarks_use_no_private_job_function():
    """Tests and benchmarks call public functions, not a job module's ``_private`` ones."""
    offenders = []
    for path in [*(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names
                            if a.name == "jobs" or a.name.startswith("jobs.")}
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jobs"):
                offenders += [f"{path.name}: {a.name}" for a in node.names
                              if a.name.startswith("_")]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and ast.unparse(node.value) in aliases):
                offenders.append(f"{path.name}: {ast.unparse(node)}")
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
    for module in ("riskdask.credit.bvn", "riskdask.credit.simulation",
                   "riskdask.hazard.gridsearch", "riskdask.coup.tasks", "riskdask.coup.backtest",
                   "riskdask.engine", "riskdask.formatting"):
        code = (f"import sys, {module}\n"
                f"print([m for m in {heavy!r} if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "[]", f"import {module} loads {out}"


@pytest.mark.parametrize("job", MAIN_JOBS)
def test_every_job_reproduces_its_pinned_numbers(job, default_run):
    """Each job's embedded default through the generic path (``run_job``): summary.json and
    every table equal the committed fingerprints bit for bit (``tests/fingerprint.py``)."""
    expected = json.loads(fingerprint.FINGERPRINTS.read_text())[job]
    res = default_run(job)
    diff = fingerprint.diff(expected, fingerprint.run_fingerprint(res.run_dir))
    assert diff == [], f"{job}: numbers moved: {diff} (see tests/fingerprint.py)"
