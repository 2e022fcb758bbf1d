"""Run directories, and writing a job's outputs into one.

A run leaves ``runs/<job>/<UTC timestamp>-<config hash>/`` with ``manifest.json``,
``summary.json``, ``tables/*.parquet``, ``figures/*.png`` and ``report.html``. Everything is
written into a hidden temporary directory beside it and renamed into place only when the job
has succeeded, so a failed or interrupted run leaves no run directory behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator


from .io import fingerprint_file, to_jsonable

__all__ = ["RunDirectory", "write_outputs", "fingerprint_file", "package_versions", "to_jsonable",
           "write_json", "output_mode", "exclusive_temp"]

PACKAGES = ("riskdask", "dask", "distributed", "numpy", "pandas", "scipy", "scikit-learn",
            "lifelines", "pyarrow", "matplotlib", "pydantic", "click")
TMP_PREFIX = ".tmp-"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def output_mode() -> int:
    """The mode every output file gets: ``0o666`` less the process umask (as ``open`` gives
    a new file), also for files made by ``mkstemp`` (0600) and then renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def exclusive_temp(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """A new temporary file beside ``target`` (``O_CREAT | O_EXCL``: never an existing file
    or a planted symlink), with the output mode; removed again if the block fails or does
    not rename it into place."""
    import tempfile

    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix,
                                dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, output_mode())
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an I/O error while writing ``path`` (disk full, permissions) into an
    :class:`~riskdask.errors.OutputError` that names the file."""
    from .errors import OutputError

    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_json(path: Path, data: Any) -> None:
    with writing(path):
        path.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


class RunDirectory:
    """A run directory that only appears once it is complete.

    Parameters
    ----------
    root : path
        The runs folder (``runs`` by default); the job's folder is created below it.
    job : str
    config_hash : str
    started : datetime, optional
        UTC start time; names the directory.
    """

    def __init__(self, root: str | Path, job: str, config_hash: str,
                 started: dt.datetime | None = None):
        self.started = started or dt.datetime.now(dt.timezone.utc)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.job_dir = Path(root) / job
        self.name = f"{stamp}-{config_hash}"
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.job_dir / f"{TMP_PREFIX}{self.name}-{os.getpid()}"
        self.tmp.mkdir()
        self.final: Path | None = None

    def commit(self) -> Path:
        """Rename the finished temporary directory into place; return the final path."""
        target = self.job_dir / self.name
        n = 1
        while target.exists():  # two runs of one config in the same second
            n += 1
            target = self.job_dir / f"{self.name}-{n}"
        os.rename(self.tmp, target)
        self.final = target
        return target

    def abort(self) -> None:
        """Remove the temporary directory, and the job folder if this run was its only entry."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.job_dir.rmdir()
        except OSError:  # other runs live there
            pass


def write_outputs(directory: Path, outputs) -> tuple[dict, list]:
    """Write a job's :class:`~riskdask.protocol.Outputs` below ``directory``.

    Tables go to ``tables/<name>.parquet`` (pyarrow), figures to ``figures/<name>.png``
    (matplotlib, closed once saved); a ``pyarrow.Table`` (kept data a later command reads
    back whole) is written plain and uncompressed. Returns the manifest's table index
    (``{name: {path, rows, columns}}``) and the written figures (for the report).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = {}
    if outputs.tables:
        (directory / "tables").mkdir(exist_ok=True)
    for name, frame in outputs.tables.items():
        path = directory / "tables" / f"{name}.parquet"
        with writing(path):
            if isinstance(frame, pa.Table):   # kept data read back whole: plain, uncompressed
                pq.write_table(frame, path, compression="none", use_dictionary=False)
            else:
                frame.to_parquet(path, engine="pyarrow", index=False)
        columns = frame.column_names if isinstance(frame, pa.Table) else frame.columns
        tables[name] = {"path": f"tables/{name}.parquet", "rows": int(len(frame)),
                        "columns": [str(c) for c in columns]}
    figures = []
    if outputs.figures:
        from .plotting import DPI

        (directory / "figures").mkdir(exist_ok=True)
        for fig in outputs.figures:
            with writing(directory / "figures" / f"{fig.name}.png"):
                fig.figure.savefig(directory / "figures" / f"{fig.name}.png", dpi=DPI,
                                   bbox_inches="tight")
            figures.append(_WrittenFigure(fig.name, f"figures/{fig.name}.png", fig.caption))
    return tables, figures


@dataclass
class _WrittenFigure:
    name: str
    path: str
    caption: str
