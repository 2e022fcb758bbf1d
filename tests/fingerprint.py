"""Fingerprints of a run directory's numbers: ``summary.json`` and every Parquet table.

``tests/data/default_fingerprints.json`` holds the fingerprints of each job's embedded default
config; ``test_fingerprints.py`` reruns every job through the generic path and compares. After a
change that is meant to move numbers, regenerate with::

    python tests/fingerprint.py --update [JOB ...]   # runs the jobs' default configs

and say in the commit which numbers moved and why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

FINGERPRINTS = Path(__file__).parent / "data" / "default_fingerprints.json"
#: Summary keys that describe the run, not its results.
VOLATILE_KEYS = frozenset()


def _canonical(obj):
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in sorted(obj.items()) if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)  # every bit of the float
    return obj


def table_fingerprint(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(run_dir: str | Path) -> dict:
    """``{"summary": sha, "tables": {name: sha}}`` of one run directory."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    text = json.dumps(_canonical(summary), sort_keys=True)
    tables = {p.stem: table_fingerprint(pd.read_parquet(p))
              for p in sorted((run_dir / "tables").glob("*.parquet"))}
    return {"summary": hashlib.sha256(text.encode()).hexdigest()[:16], "tables": tables}


def diff(expected: dict, got: dict) -> list[str]:
    """What differs, as readable lines (empty when equal)."""
    out = []
    if expected["summary"] != got["summary"]:
        out.append("summary.json differs")
    for name in sorted(set(expected["tables"]) | set(got["tables"])):
        a, b = expected["tables"].get(name), got["tables"].get(name)
        if a != b:
            what = "missing" if b is None else "new" if a is None else "differs"
            out.append(f"table {name}: {what}")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--from"]:  # fingerprint existing run directories: --from DIR...
        dirs = [Path(d) for d in argv[1:]]
    elif argv[:1] == ["--update"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from riskdask import run_job
        from riskdask.registry import main_jobs

        import tempfile
        out = Path(tempfile.mkdtemp())
        dirs = [run_job(job, out=out, n_workers=2).run_dir for job in argv[1:] or main_jobs()]
    else:
        print(__doc__)
        return 2
    data = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}
    data.update({json.loads((d / "manifest.json").read_text())["job"]: run_fingerprint(d)
                 for d in dirs})
    FINGERPRINTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {FINGERPRINTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
