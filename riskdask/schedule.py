"""Making ``riskdask run`` safe to start from cron, a systemd timer or a Kubernetes CronJob.

- :class:`RunLock`: one run per job *and* config at a time. A second run of the same job and
  config exits at once with :data:`EXIT_LOCKED` (75, ``EX_TEMPFAIL`` from ``sysexits.h``)
  instead of racing the first one. The lock is an ``fcntl.flock`` on
  ``<out>/<job>/.lock-<config hash>``: the kernel releases it when the process dies, so a
  crashed or killed run never leaves a stale lock behind.
- :func:`update_latest`: ``<out>/<job>/latest`` is a symlink to the newest successful run
  directory, replaced atomically (``rename`` of a new symlink over the old one), so a reader
  never sees it missing or half-written.
- :func:`prune_runs`: ``--keep N`` retention -- delete the oldest finished run directories of
  the job beyond the ``N`` newest, never the one just written and never the hidden
  ``.tmp-*`` directories of runs still in progress.

Exit codes a scheduler can alert on are listed in ``deploy/README.md``.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path

__all__ = ["EXIT_LOCKED", "RunLocked", "RunLock", "update_latest", "finished_runs",
           "prune_runs", "LATEST"]

#: Exit code of a run refused because the same job and config is already running.
EXIT_LOCKED = 75
#: Name of the pointer to the newest successful run, inside ``<out>/<job>/``.
LATEST = "latest"
#: Finished run directories: ``<UTC stamp>-<config hash>`` plus ``-N`` for same-second twins.
RUN_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]+(-\d+)?$")


class RunLocked(Exception):
    """Another run of the same job and config holds the lock."""

    exit_code = EXIT_LOCKED


class RunLock:
    """An exclusive, non-blocking lock for one job and config hash.

    Parameters
    ----------
    job_dir : path
        ``<out>/<job>``; created if missing.
    config_hash : str
        The run's config hash; runs of other configs of the same job are not blocked.

    Raises
    ------
    RunLocked
        On ``acquire()`` when another process holds the lock; the message says which
        process and since when.
    """

    def __init__(self, job_dir: str | Path, config_hash: str):
        self.job_dir = Path(job_dir)
        self.path = self.job_dir / f".lock-{config_hash}"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.job_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunLocked(f"another run of this job and config is in progress "
                                f"({holder or 'holder unknown'}; lock {self.path}); "
                                f"not starting a second one") from None
            # The holder before us may have unlinked the file between our open and our
            # flock; then we locked an orphan inode, and must retry on the current file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and its file (unlinked while still held, so no one races us)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def update_latest(job_dir: str | Path, run_dir: str | Path) -> Path:
    """Point ``<job_dir>/latest`` at ``run_dir`` (a relative symlink), atomically."""
    job_dir = Path(job_dir)
    link = job_dir / LATEST
    tmp = job_dir / f".{LATEST}-{os.getpid()}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(Path(run_dir).name, tmp)
    os.replace(tmp, link)
    return link


def finished_runs(job_dir: str | Path) -> list[Path]:
    """Finished run directories of a job, oldest first (by UTC stamp, then finish time)."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        return []
    runs = [p for p in job_dir.iterdir()
            if RUN_NAME.match(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(runs, key=lambda p: (p.name[:16], p.stat().st_mtime_ns, p.name))


def prune_runs(job_dir: str | Path, keep: int, protect: str | Path) -> list[Path]:
    """Delete all but the ``keep`` newest finished runs; never ``protect``. Returns the deleted.

    Only directories named like finished runs are considered, so the ``.tmp-*`` directories
    of runs in progress, lock files and the ``latest`` link are never touched.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    protect = Path(protect).resolve()
    runs = finished_runs(job_dir)
    survivors = set(runs[-keep:]) | {p for p in runs if p.resolve() == protect}
    deleted = []
    for path in runs:
        if path not in survivors:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted
