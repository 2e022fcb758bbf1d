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

- :func:`clean_stale`: what a run killed with SIGKILL (or by the OOM killer) leaves behind --
  its hidden ``.tmp-*`` directory and its lock file -- is removed by the next run, with a note,
  once the process that made it is gone; it also says whether an earlier attempt of the same
  config died (a scheduled run then resumes from its checkpoints).
- :func:`check_free_space`: before computing, the output folder must have room for about
  what the job's last run wrote (:func:`estimate_run_bytes`), so a full disk fails at once
  with the folder named instead of after the whole computation.

Exit codes a scheduler can alert on are listed in ``deploy/README.md``.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EXIT_LOCKED", "RunLocked", "RunLock", "update_latest", "finished_runs",
           "prune_runs", "LATEST", "clean_stale", "Cleanup", "check_free_space",
           "estimate_run_bytes", "MIN_FREE_BYTES"]

#: Exit code of a run refused because the same job and config is already running.
EXIT_LOCKED = 75
#: Name of the pointer to the newest successful run, inside ``<out>/<job>/``.
LATEST = "latest"
#: Finished run directories: ``<UTC stamp>-<config hash>`` plus ``-N`` for same-second twins.
RUN_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]+(-\d+)?$")
#: A run in progress: ``.tmp-<UTC stamp>-<config hash>-<pid>`` (``riskdask.run.RunDirectory``).
TMP_NAME = re.compile(r"^\.tmp-(?P<stamp>\d{8}T\d{6}Z)-(?P<hash>[0-9a-f]+)-(?P<pid>\d+)$")
#: Free space a run needs at least, whatever its last run wrote (report, figures, manifest).
MIN_FREE_BYTES = 32 << 20


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
        self.previous_holder: str | None = None

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
        # Text left by a holder that died without releasing (SIGKILL, OOM): the kernel
        # dropped its flock, the file stayed. Kept for the run's notes.
        self.previous_holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or None
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


# -- what killed runs leave behind ----------------------------------------------------------
@dataclass
class Cleanup:
    """What :func:`clean_stale` removed, in words, and which config hashes had a dead attempt."""

    notes: list[str] = field(default_factory=list)
    died: set[str] = field(default_factory=set)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _lock_is_free(path: Path) -> bool:
    """Whether nobody holds the flock on ``path`` (a missing file counts as free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _holder_pid(text: str) -> int | None:
    m = re.match(r"pid (\d+)", text)
    return int(m.group(1)) if m else None


def clean_stale(job_dir: str | Path, *, own_lock: "RunLock | None" = None) -> Cleanup:
    """Remove the ``.tmp-*`` directories and lock files of runs whose process is gone.

    A directory or lock is stale when the process named in it no longer exists *and* no
    process holds the flock of its config (so a run of the same folder on another machine,
    whose pid means nothing here, is left alone as long as it holds its lock on a shared
    file system). Call it with this run's own lock held (``own_lock``): that lock counts as
    ours, not as another holder.

    Returns
    -------
    Cleanup
        A note per removed item, and the config hashes that had a dead attempt.
    """
    job_dir = Path(job_dir)
    out = Cleanup()
    if not job_dir.is_dir():
        return out
    own = own_lock.path if own_lock is not None else None
    for path in sorted(job_dir.iterdir()):
        m = TMP_NAME.match(path.name)
        if m and path.is_dir():
            pid, chash = int(m.group("pid")), m.group("hash")
            lock = job_dir / f".lock-{chash}"
            if _pid_alive(pid) or (lock != own and not _lock_is_free(lock)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            out.died.add(chash)
            out.notes.append(f"removed {path.name}: left by run pid {pid} (started "
                             f"{m.group('stamp')}), which is gone")
        elif path.name.startswith(".lock-") and path != own and path.is_file():
            try:
                holder = path.read_text(errors="replace").strip()
            except OSError:
                continue
            pid = _holder_pid(holder)
            if pid is None or _pid_alive(pid) or not _lock_is_free(path):
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            out.died.add(path.name[len(".lock-"):])
            out.notes.append(f"removed stale lock {path.name} ({holder}; that process is gone)")
    return out


# -- free space -------------------------------------------------------------------------------
def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def estimate_run_bytes(job_dir: str | Path, extra: int = 0) -> int:
    """What the next run of a job will about write: 1.5 x its newest finished run, plus ``extra``
    (e.g. checkpoints on the same disk), and at least :data:`MIN_FREE_BYTES`."""
    runs = finished_runs(job_dir)
    last = _tree_bytes(runs[-1]) if runs else 0
    return max(MIN_FREE_BYTES, int(1.5 * last) + int(extra))


def check_free_space(folder: str | Path, needed: int) -> int:
    """Raise :class:`riskdask.errors.OutputError` unless ``folder`` has ``needed`` bytes free.

    ``folder`` may not exist yet; its nearest existing parent is asked. Returns the free bytes.
    """
    from .errors import OutputError

    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise OutputError(f"not enough free space for the run's outputs in {folder}: "
                          f"{_size(free)} free, about {_size(needed)} needed (estimated from "
                          "the job's last run); free some space or give another --out")
    return free


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
