"""Checkpoints: every chunk's partial written as it completes, so a lost run resumes.

A run that loses its client, its scheduler or every worker (a preemptible VM, an OOM kill)
would otherwise start again from zero. With a checkpoint store the *worker task* that
computes a chunk's partial also writes it, before the partial is handed to the reduce; a
later ``riskdask run JOB --resume`` of the same config lists what is there, loads those
partials instead of computing them, computes only the rest and reduces all of them in the
same tree fixed by chunk index -- so the result is bit-identical to an uninterrupted run.

Layout (any `fsspec <https://filesystem-spec.readthedocs.io>`_ URL or a local path)::

    <root>/<job>/<config hash>/meta.json
    <root>/<job>/<config hash>/<plan id>/<part>-<chunk index>.ckpt

- The **config hash** (:func:`full_config_hash`: the full SHA-256 of the resolved config, of
  which run directories and locks use the first 10 digits) is a path component *and* is
  written in every file's header and checked on load: a checkpoint of another config is
  never used.
- The **plan id** is the engine's label plus a token of everything that determines the
  chunks' partials besides the config: the kernel and branch functions (by name and the
  bytes of their source modules, so edited code never reuses stale partials), every
  chunk's bounds and seed, the kernel's keyword arguments and the shared input's data
  (``dask.base.tokenize``). Two plans of one run with the same kernel on different data (the
  coup backtest's forests) therefore never share checkpoints.
- The **part** is ``b<k>`` for the k-th reduced branch of :func:`riskdask.engine.map_branches`
  (``b0`` is the kernel's own partial in ``map_reduce``) and ``out`` for the per-chunk results of
  ``map_chunks``. A sub-forest itself never leaves its worker; what is checkpointed are its
  branch aggregates (out-of-bag/test sums, each block of permutation copies), which is all
  the reduce needs. A chunk counts as done when every part of it is there.

Writes are atomic: a local file system gets a temporary file renamed into place
(``os.replace``); other file systems a temporary object moved into place (on object stores a
single PUT is atomic anyway). A file is ``RDCKPT3``, a JSON header line (config hash, plan,
part, index, the sizes of the pieces that follow and their HMAC), the pickle stream and the
raw bytes of each of its arrays (pickle protocol 5, out of band), each piece starting at a
multiple of 64 bytes.

**Nothing in a store runs code.** The pickle stream is only unpickled after the file's
HMAC-SHA256 (over the header's fields and every piece) has been verified with the run's
*checkpoint key* (:func:`checkpoint_key`), which never lies in the store: it comes from the
environment variable ``RISKDASK_CHECKPOINT_KEY`` or from the key file
``~/.config/riskdask/checkpoint.key`` (``RISKDASK_CHECKPOINT_KEY_FILE`` to move it; created
with mode 0600 on first use). Worker tasks receive the key with the task from the client (over
the cluster's own comm, TLS where it is set up), so workers need nothing; a client on another
machine that should resume the same store must be given the same key (copy the key file or
set the variable), otherwise the checkpoints fail authentication and are recomputed. A file
that fails its HMAC -- tampered with, truncated, corrupt, of an older format, or written with
another key -- is set aside under ``<store>/<job>/<config hash>/damaged/`` with a note and its
chunk recomputed; it is never unpickled and never fails a run.

The store must be visible to the workers *and* the client: a local path for a local cluster
or a shared file system, an object-store URL (``s3://bucket/ckpt``, ``gs://...``, with the
matching fsspec package installed) for workers on other machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import json
import os
import pickle
import posixpath
import secrets
import sys
import uuid
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .errors import OutputError

__all__ = ["CheckpointStore", "PlanCheckpoint", "plan_token", "callable_id", "CheckpointError",
           "full_config_hash", "checkpoint_key", "prune_stores", "KEY_ENV", "KEY_FILE_ENV"]

MAGIC = b"RDCKPT3\n"   # 3: authenticated (HMAC-SHA256); 2: arrays out of band
KEY_ENV = "RISKDASK_CHECKPOINT_KEY"
KEY_FILE_ENV = "RISKDASK_CHECKPOINT_KEY_FILE"
DAMAGED = "damaged"
ALIGN = 64              # every piece of a file starts at a multiple of this
SUFFIX = ".ckpt"


class CheckpointError(OutputError):
    """A checkpoint could not be written (the message names the file; exit code 1)."""


def default_key_file() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV)
                or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
                / "riskdask" / "checkpoint.key")


def checkpoint_key() -> bytes:
    """The key checkpoints are authenticated with: ``$RISKDASK_CHECKPOINT_KEY`` if set, else
    the key file (``$RISKDASK_CHECKPOINT_KEY_FILE`` or ``~/.config/riskdask/checkpoint.key``),
    created with 32 random bytes and mode 0600 on first use."""
    value = os.environ.get(KEY_ENV)
    if value:
        return value.encode()
    path = default_key_file()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:          # another run created it meanwhile
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def full_config_hash(job: str, cfg) -> str:
    """SHA-256 of the resolved config, in the canonical form of ``riskdask.config.config_hash``."""
    canonical = json.dumps({"job": job, **cfg.model_dump(mode="json")}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _fs(url: str, storage_options: dict | None):
    from fsspec.core import url_to_fs

    return url_to_fs(url, **(storage_options or {}))


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


@dataclass(frozen=True)
class CheckpointStore:
    """The checkpoints of one job and config, under ``url``.

    Parameters
    ----------
    url : str
        A local path or any fsspec URL (``file:///...``, ``s3://bucket/prefix`` ...).
    job : str
        Job name.
    config_hash : str
        Hash of the resolved config; only checkpoints written under the same hash are read.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint ...).

    The object is small and picklable: worker tasks receive it and write through it.
    """

    url: str
    job: str
    config_hash: str
    storage_options: dict | None = field(default=None, compare=False)
    #: the HMAC key (:func:`checkpoint_key`); never written to the store
    key: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self):
        if not self.config_hash or "/" in self.config_hash or "/" in self.job:
            raise ValueError("job and config_hash must be non-empty path components")
        if not self.key:
            object.__setattr__(self, "key", checkpoint_key())

    # -- file system -----------------------------------------------------------------------
    @property
    def fs(self):
        return _fs(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        """``<url>/<job>/<config hash>`` in the file system's own path form."""
        base = _fs(self.url, self.storage_options)[1].rstrip("/")
        return posixpath.join(base, self.job, self.config_hash)

    def location(self, path: str | None = None) -> str:
        """``path`` (default: this store's folder) as the user gave the store, for messages."""
        rel = path[len(self.root):] if path and path.startswith(self.root) else ""
        return f"{self.url.rstrip('/')}/{self.job}/{self.config_hash}{rel}"

    def plan(self, label: str, token: str, topic: str = "") -> "PlanCheckpoint":
        """The checkpoints of one plan (``label`` for people, ``token`` for identity;
        ``topic``: where workers report what their writes cost, see ``engine._save``)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)[:60]
        return PlanCheckpoint(self, f"{safe}-{token[:20]}", topic)

    def local_folder(self) -> str | None:
        """The store's root folder when it is on a local file system (for the free-space
        check), else None."""
        fs, base = _fs(self.url, self.storage_options)
        return base if _is_local(fs) else None

    # -- whole-store operations (client side) ----------------------------------------------
    def exists(self) -> bool:
        return self.fs.exists(self.root)

    def count(self) -> int:
        """Number of checkpointed partials of this job and config (all plans)."""
        if not self.exists():
            return 0
        return sum(1 for p in self.fs.find(self.root)
                   if p.endswith(SUFFIX) and f"/{DAMAGED}/" not in p)

    def write_meta(self, **info: Any) -> None:
        """Record what these checkpoints belong to (read by people, not by the engine)."""
        fs = self.fs
        fs.makedirs(self.root, exist_ok=True)
        data = json.dumps({"job": self.job, "config_hash": self.config_hash, **info},
                          indent=2, default=str).encode()
        _atomic_write(fs, posixpath.join(self.root, "meta.json"), [data])

    def clear(self) -> bool:
        """Remove every checkpoint of this job and config; True if there were any."""
        fs = self.fs
        if not fs.exists(self.root):
            return False
        fs.rm(self.root, recursive=True)
        # drop the <job> folder too once the last config's checkpoints are gone
        parent = posixpath.dirname(self.root)
        for folder in (parent, posixpath.dirname(parent)):   # <job>, then the store root
            try:
                if _is_local(fs) and not fs.ls(folder):
                    fs.rmdir(folder)
            except (OSError, FileNotFoundError):
                break
        return True


def prune_stores(url: str, *, older_than_days: float, keep: Iterable[str] = (),
                 storage_options: dict | None = None, now: float | None = None) -> list[str]:
    """Remove the checkpoints of every job and config under ``url`` whose last write is more
    than ``older_than_days`` days old (configs that are not run any more), except the config
    hashes in ``keep``. Returns what was removed, as ``<job>/<config hash>``.

    Age is the newest modification time of the config's files (``meta.json`` included), so
    a store still being written is never old.
    """
    import time

    fs, base = _fs(url, storage_options)
    base = base.rstrip("/")
    limit = (now if now is not None else time.time()) - older_than_days * 86400.0
    keep = set(keep)
    removed = []
    try:
        jobs = [p for p in fs.ls(base, detail=False) if fs.isdir(p)]
    except FileNotFoundError:
        return []
    for job in jobs:
        for config in [p for p in fs.ls(job, detail=False) if fs.isdir(p)]:
            if posixpath.basename(config) in keep:
                continue
            newest = 0.0
            for info in fs.find(config, detail=True).values():
                newest = max(newest, _mtime(info))
            if newest and newest < limit:
                fs.rm(config, recursive=True)
                removed.append(f"{posixpath.basename(job)}/{posixpath.basename(config)}")
        try:
            if _is_local(fs) and not fs.ls(job):
                fs.rmdir(job)
        except (OSError, FileNotFoundError):
            pass
    return removed


def _mtime(info: dict) -> float:
    value = info.get("mtime", info.get("LastModified", info.get("created", 0)))
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True)
class PlanCheckpoint:
    """Checkpoints of one plan: ``save`` on workers, ``done``/``load`` anywhere."""

    store: CheckpointStore
    plan_id: str
    topic: str = field(default="", compare=False)

    @property
    def path(self) -> str:
        return posixpath.join(self.store.root, self.plan_id)

    def file(self, part: str, index: int) -> str:
        return posixpath.join(self.path, f"{part}-{index:06d}{SUFFIX}")

    def done(self, parts: Sequence[str]) -> set[int]:
        """Chunk indices for which every one of ``parts`` has a checkpoint (one listing)."""
        fs = self.store.fs
        try:
            names = [posixpath.basename(p) for p in fs.ls(self.path, detail=False)]
        except FileNotFoundError:
            return set()
        have: dict[str, set[int]] = {part: set() for part in parts}
        for name in names:
            if not name.endswith(SUFFIX):
                continue
            part, _, idx = name[:-len(SUFFIX)].rpartition("-")
            if part in have and idx.isdigit():
                have[part].add(int(idx))
        sets = list(have.values())
        return set.intersection(*sets) if sets else set()

    def save(self, part: str, index: int, obj: Any) -> int:
        """Write one partial atomically (called inside the worker task that computed it);
        return the bytes written.

        The file is ``MAGIC``, a JSON header line, the pickle stream and then the raw bytes
        of every contiguous array (pickle protocol 5, out of band): arrays are written from
        their own memory, never copied into the stream first (``pickle.dumps`` in band took
        ~1.6 ms for a credit chunk's 2 MB state block, the copy as long as the write).
        """
        buffers: list = []
        stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        pieces = [memoryview(stream)] + [b.raw() for b in buffers]
        fields = {"config_hash": self.store.config_hash, "plan": self.plan_id,
                  "part": part, "index": index, "sizes": [piece.nbytes for piece in pieces]}
        header = json.dumps({**fields, "hmac": _mac(self.store.key, fields, pieces)}).encode()
        pieces = _aligned([memoryview(MAGIC + header + b"\n")] + pieces)
        fs = self.store.fs
        target = self.file(part, index)
        try:
            fs.makedirs(self.path, exist_ok=True)
            _atomic_write(fs, target, pieces)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self.store.location(target)}: "
                                  f"{exc.strerror or exc}") from exc
        return sum(memoryview(piece).nbytes for piece in pieces)

    def _authentic_pieces(self, part: str, index: int) -> list:
        """The file's pieces once its header and HMAC check out; ``ValueError`` saying why
        otherwise. Nothing is unpickled here."""
        path = self.file(part, index)
        with self.store.fs.open(path, "rb") as fh:
            blob = bytearray(fh.read())
        where = self.store.location(path)
        if not blob.startswith(MAGIC):
            kind = ("an older riskdask checkpoint" if blob.startswith(b"RDCKPT")
                    else "not a riskdask checkpoint")
            raise ValueError(f"{where}: {kind}")
        end = blob.find(b"\n", len(MAGIC))
        try:
            header = json.loads(blob[len(MAGIC):end]) if end > 0 else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            raise ValueError(f"{where}: checkpoint is corrupt (no header)")
        expected = {"config_hash": self.store.config_hash, "plan": self.plan_id,
                    "part": part, "index": index}
        for key, value in expected.items():
            if header.get(key) != value:
                raise ValueError(f"{where}: checkpoint of another {key} ({header.get(key)!r})")
        sizes = header.get("sizes")
        if not (isinstance(sizes, list) and sizes
                and all(isinstance(n, int) and n >= 0 for n in sizes)):
            raise ValueError(f"{where}: checkpoint is corrupt (no sizes)")
        view, offset, pieces = memoryview(blob), end + 1, []
        for size in sizes:
            offset += -offset % ALIGN
            pieces.append(view[offset:offset + size])
            offset += size
        if offset != len(blob):
            raise ValueError(f"{where}: checkpoint is corrupt (truncated or too long)")
        fields = {**expected, "sizes": sizes}
        mac = header.get("hmac")
        if not isinstance(mac, str) or not hmac.compare_digest(
                mac, _mac(self.store.key, fields, pieces)):
            raise ValueError(f"{where}: checkpoint fails authentication (tampered with, "
                             "corrupt, or written with another checkpoint key)")
        return pieces

    def load(self, part: str, index: int) -> Any:
        """Read one partial back; raises ``ValueError`` if it is not this plan's, corrupt or
        not authentic (checked before anything is unpickled).

        Its arrays are views into one writable buffer holding the file (no copy each).
        """
        pieces = self._authentic_pieces(part, index)
        return pickle.loads(pieces[0], buffers=pieces[1:])

    def damaged(self, parts: Sequence[str], indices: Iterable[int]) -> dict[int, str]:
        """``{index: why}`` for the chunks among ``indices`` one of whose files does not
        authenticate (read, never unpickled)."""
        bad: dict[int, str] = {}
        for i in indices:
            for part in parts:
                try:
                    self._authentic_pieces(part, i)
                except (ValueError, OSError) as exc:
                    bad[i] = str(exc)
                    break
        return bad

    def set_aside(self, parts: Sequence[str], index: int) -> None:
        """Move chunk ``index``'s files under ``damaged/`` (kept for a person to look at;
        never read again), so the chunk is recomputed."""
        fs = self.store.fs
        target_dir = posixpath.join(self.store.root, DAMAGED, self.plan_id)
        fs.makedirs(target_dir, exist_ok=True)
        for part in parts:
            src = self.file(part, index)
            try:
                if fs.exists(src):
                    fs.mv(src, posixpath.join(target_dir,
                                              f"{posixpath.basename(src)}-{uuid.uuid4().hex[:8]}"))
            except (OSError, FileNotFoundError):
                try:
                    fs.rm(src)
                except (OSError, FileNotFoundError):
                    pass


def _mac(key: bytes, fields: dict, pieces) -> str:
    """HMAC-SHA256 of a checkpoint's header fields (canonical JSON) and its pieces."""
    digest = hmac.new(key, json.dumps(fields, sort_keys=True, separators=(",", ":")).encode(),
                      hashlib.sha256)
    for piece in pieces:
        digest.update(memoryview(piece).nbytes.to_bytes(8, "little"))
        digest.update(piece)
    return digest.hexdigest()


def _aligned(pieces: list) -> list:
    """``pieces`` with zero padding so that each after the first starts at a multiple of
    :data:`ALIGN` bytes: arrays loaded as views of the file's buffer are aligned (a
    misaligned float64 array is slow in every kernel that reads it)."""
    out, offset = [], 0
    for i, piece in enumerate(pieces):
        if i and offset % ALIGN:
            pad = -offset % ALIGN
            out.append(bytes(pad))
            offset += pad
        out.append(piece)
        offset += piece.nbytes
    return out


def _atomic_write(fs, path: str, pieces) -> None:
    """Write ``pieces`` (bytes-like, in order) so that ``path`` is either absent or complete,
    never half-written."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    if _is_local(fs):
        # No fsync: a killed process cannot tear a renamed file (the page cache outlives it);
        # only a machine crash could leave it short, and then its checksum fails on load.
        try:
            with open(tmp, "xb") as fh:       # O_EXCL: never through a planted file
                fh.writelines(pieces)
            os.replace(tmp, path)
        except BaseException:      # a full disk, an interrupt: no partial file left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    try:
        fs.pipe_file(tmp, b"".join(pieces))
        fs.mv(tmp, path)
    finally:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except (OSError, FileNotFoundError):
            pass


# -- plan identity -------------------------------------------------------------------------
def callable_id(fn: Callable) -> tuple:
    """A stable identity of a kernel: module, qualified name and its module's source bytes.

    ``functools.partial`` objects contribute their function and tokenized arguments.
    """
    import functools

    from dask.base import tokenize

    if isinstance(fn, functools.partial):
        return ("partial", callable_id(fn.func), tokenize(fn.args, fn.keywords,
                                                          ensure_deterministic=True))
    module = getattr(fn, "__module__", None) or ""
    source = ""
    mod = sys.modules.get(module)
    if mod is not None:
        try:
            source = hashlib.sha256(inspect.getsource(mod).encode()).hexdigest()
        except (OSError, TypeError):
            source = ""
    return (module, getattr(fn, "__qualname__", repr(fn)), source)


def plan_token(kernel: Callable, chunks: Sequence, *, kernel_kwargs: dict | None = None,
               data: Any = None, branches: Sequence | None = None) -> str:
    """Token of a plan: what fixes its partials apart from the config.

    Parameters
    ----------
    kernel : callable
    chunks : sequence of riskdask.engine.Chunk
        Their bounds and seeds (entropy and spawn key) enter the token.
    kernel_kwargs : dict, optional
    data : object, optional
        The shared (or row-partitioned) input; its bytes enter the token.
    branches : sequence of (branch, combine), optional

    Raises
    ------
    RuntimeError
        When part of the input cannot be tokenized deterministically (dask's
        ``ensure_deterministic``): such a plan is not checkpointed rather than risk a
        wrong reuse.
    """
    from dask.base import tokenize

    chunk_ids = [(c.index, c.start, c.stop, c.seed.entropy, tuple(c.seed.spawn_key))
                 for c in chunks]
    branch_ids = [(callable_id(b) if b is not None else None, callable_id(c))
                  for b, c in (branches or [])]
    return tokenize(callable_id(kernel), chunk_ids, kernel_kwargs or {}, data, branch_ids,
                    ensure_deterministic=True)
