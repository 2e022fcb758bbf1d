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
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["EXIT_LOCKED", "RunLocked", "RunLock", "LockRefused", "update_latest", "finished_runs",
           "prune_runs", "LATEST", "clean_stale", "Cleanup", "check_free_space",
           "estimate_run_bytes", "estimate_checkpoint_bytes", "check_run_space",
           "MIN_FREE_BYTES"]

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


class LockRefused(InputError):
    """The lock path is a symlink or not a regular file (exit 2, nothing touched)."""


def _holder_text(raw: bytes) -> str:
    """What a lock's holder wrote (``pid N since STAMP``), or '' for anything else: nothing
    else read from a lock file ever reaches a message or an output."""
    m = re.match(rb"pid (\d{1,10}) since ([0-9T:+\-]{10,40})\n?", raw)
    return f"pid {m.group(1).decode()} since {m.group(2).decode()}" if m else ""


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
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _holder_text(os.pread(fd, 200, 0))
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
        self.previous_holder = _holder_text(os.pread(fd, 200, 0)) or None
        os.ftruncate(fd, 0)
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> int:
        """The lock file, opened without following a symlink and refused unless it is a
        regular file (a planted link could otherwise make the run truncate its target)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LockRefused(f"{self.path} is a symbolic link; a lock file must be a "
                                  "regular file (remove it to run)") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockRefused(f"{self.path} is not a regular file; remove it to run")
        return fd

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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:          # a symlink (ELOOP): never ours to judge or to remove
        return False
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
        elif (path.name.startswith(".lock-") and path != own and not path.is_symlink()
              and path.is_file()):
            try:
                holder = _holder_text(path.read_bytes()[:200])
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


def estimate_checkpoint_bytes(job_dir: str | Path) -> int:
    """What the next run's checkpoints will about take: 1.5 x what the workers reported
    writing in the job's newest finished run (its manifest's ``checkpoints.bytes_written``);
    0 when no run has recorded it."""
    import json

    for run in reversed(finished_runs(job_dir)):
        try:
            manifest = json.loads((run / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        written = (manifest.get("checkpoints") or {}).get("bytes_written")
        if isinstance(written, (int, float)) and written > 0:
            return int(1.5 * written)
        return 0
    return 0


def _device(path: Path) -> int:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.stat(probe).st_dev


def check_run_space(job_dir: str | Path, store_folder: str | Path | None) -> None:
    """The up-front free-space check of a run: outputs in ``job_dir`` and, for a local
    checkpoint store, its checkpoints in ``store_folder`` (one sum where they share a disk)."""
    outputs = estimate_run_bytes(job_dir)
    checkpoints = estimate_checkpoint_bytes(job_dir) if store_folder is not None else 0
    if checkpoints and _device(Path(store_folder)) != _device(Path(job_dir)):
        check_free_space(job_dir, outputs)
        check_free_space(store_folder, checkpoints, what="the run's checkpoints")
    else:
        check_free_space(job_dir, outputs + checkpoints,
                         what="the run's outputs and checkpoints" if checkpoints else None)


def check_free_space(folder: str | Path, needed: int, what: str | None = None) -> int:
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
        what = what or "the run's outputs"
        raise OutputError(f"not enough free space for {what} in {folder}: "
                          f"{_size(free)} free, about {_size(needed)} needed (estimated from "
                          "the job's last run); free some space or give another --out")
    return free


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
