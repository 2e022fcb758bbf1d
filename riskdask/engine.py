"""The chunked map/reduce engine every job runs on.

The pattern (ARCHITECTURE.md, "The one pattern every job follows"):

1. **Plan** -- :func:`plan_chunks` splits ``n_items`` into chunks whose boundaries depend only
   on ``(n_items, chunk_size)``, never on the cluster; chunk ``i`` gets the random stream
   ``SeedSequence(seed).spawn(n_chunks)[i]``.
2. **Map** -- a pure kernel ``kernel(chunk, shared, **kwargs)`` runs per chunk on a worker.
   ``shared`` (large read-only inputs) is sent to every worker once with
   ``client.scatter(..., broadcast=True)``.
3. **Reduce** -- partial results are combined by an associative ``combine(a, b)`` in a binary
   tree whose shape is fixed by chunk index. Which worker ran a chunk, the order chunks
   finished in, or a worker that died and had its chunks re-run cannot change the result:
   each chunk's partial is a deterministic function of its plan entry, and the tree adds them
   in the same order every time. That is what makes results bit-identical on 1 or N workers.

Two variations of the same pattern: :func:`map_reduce` with ``rows=`` sends each chunk only its
own rows (row-partitioned data such as scores to sweep), and :func:`map_branches` keeps each
chunk's output on its worker (a fitted sub-forest) and reduces several branch kernels run on it.

Checkpoints (:mod:`riskdask.checkpoint`): on an :class:`Engine` with :class:`Checkpoints`, every
plan's per-chunk partials -- the reduced kernel outputs, each branch's partials, or ``map_chunks``'
results -- are written to the store by the worker task that computed them, and with
``resume`` the chunks already there are loaded instead of computed. Loaded and computed
partials enter the same tree at the same positions, so a resumed run is bit-identical.

Kernels stay free of Dask; this module only plans, maps and reduces (dask-ml style).
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .streams import stream_seed

__all__ = ["Engine", "Checkpoints", "Chunk", "stream_seed", "spawn_streams", "plan_chunks",
           "plan_tiles", "scatter_once", "map_reduce", "map_chunks", "map_branches",
           "tree_reduce", "reduce_local", "aligned_inputs", "scatter_rows", "TASK_RETRIES",
           "ClusterLost"]

#: Times a plan is run when its scattered input was lost with a worker (see ``_run_plan``).
PLAN_ATTEMPTS = 3

#: Retries for a task that raised (a task lost with its worker is re-run by the scheduler
#: anyway, up to ``distributed.scheduler.allowed-failures`` times).
TASK_RETRIES = 2

#: Seconds a plan waits for a worker once the cluster has none (or the scheduler is
#: unreachable) before :class:`ClusterLost` (``--wait-workers`` sets it for a run).
WORKER_GRACE = 60.0


@dataclass
class Checkpoints:
    """The checkpointing of one run: every plan's per-chunk partials go to ``store``, and with
    ``resume`` the chunks already there are loaded instead of computed.

    ``log`` receives one entry per plan: ``{"label", "plan", "chunks", "reused",
    "computed"}`` (the manifest's ``checkpoints``); :meth:`finish` adds what writing cost the
    workers (``files_written``, ``write_seconds``, ``bytes_written``, as they reported it).
    ``meta`` is written to the store (``write_meta``) when the first plan starts, so a run
    that fails before computing anything leaves no store behind.
    """

    store: Any                    # riskdask.checkpoint.CheckpointStore
    resume: bool = False
    meta: dict | None = None
    log: list = dataclasses.field(default_factory=list)
    # where the workers report each write's cost (Worker.log_event), and who to ask
    topic: str = dataclasses.field(
        default_factory=lambda: f"riskdask-checkpoint-writes-{uuid.uuid4().hex}")
    client: Any = None

    def finish(self) -> list:
        """Add the workers' reported write costs to the log (after success only: after an
        error the scheduler may be gone); returns the log."""
        if self.client is not None:
            _add_write_costs(self)
        return self.log


@dataclass
class Engine:
    """Where and how a run's plans run: the client, checkpoints, progress bars, grace.

    One object per run (:attr:`riskdask.protocol.JobContext.engine`) instead of module
    state, so two runs in one process (or a test) never see each other's settings.

    Attributes
    ----------
    client : distributed.Client
    checkpoints : Checkpoints, optional
        None: nothing is checkpointed.
    progress : bool or None
        Progress bars on, off, or (None) only when stderr is a terminal.
    worker_grace : float
        Seconds a plan waits for a worker once the cluster has none before
        :class:`ClusterLost`.
    """

    client: Any
    checkpoints: Checkpoints | None = None
    progress: bool | None = None
    worker_grace: float = WORKER_GRACE

    def map_reduce(self, kernel, chunks, combine, **kwargs):
        """:func:`map_reduce` on this engine."""
        return map_reduce(kernel, chunks, combine, engine=self, **kwargs)

    def map_chunks(self, kernel, chunks, **kwargs):
        """:func:`map_chunks` on this engine."""
        return map_chunks(kernel, chunks, engine=self, **kwargs)

    def map_branches(self, kernel, chunks, branches, **kwargs):
        """:func:`map_branches` on this engine."""
        return map_branches(kernel, chunks, branches, engine=self, **kwargs)


def _engine(engine, client) -> Engine:
    """The plan's engine: ``engine``, or a bare ``client`` (no checkpoints, default grace)."""
    if (engine is None) == (client is None):
        raise TypeError("give engine= (a run's Engine) or client= (a distributed.Client)")
    target = engine if engine is not None else client
    return target if isinstance(target, Engine) else Engine(target)


@dataclass(frozen=True)
class Chunk:
    """One unit of work: items ``[start, stop)`` of a plan, with its own random stream.

    Attributes
    ----------
    index : int
        Position in the plan; fixes the chunk's place in the reduction tree.
    start, stop : int
        Half-open item range (scenarios, trees, grid points, rows ...).
    seed : numpy.random.SeedSequence
        ``SeedSequence(plan_seed).spawn(n_chunks)[index]``: independent of every other chunk
        and of how many workers there are.
    """

    index: int
    start: int
    stop: int
    seed: np.random.SeedSequence

    @property
    def size(self) -> int:
        return self.stop - self.start

    def rng(self) -> np.random.Generator:
        """A fresh generator on this chunk's stream (same draws every time it is called)."""
        return np.random.Generator(np.random.PCG64(self.seed))


def spawn_streams(seed: int | np.random.SeedSequence | None, n: int) -> list:
    """The first ``n`` children of ``seed`` (an int ``s`` means ``SeedSequence(s)``).

    Always the same children: ``SeedSequence.spawn`` counts the children it has handed out
    on the object, so this spawns from a fresh copy.
    """
    if isinstance(seed, np.random.SeedSequence):
        root = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key,
                                      pool_size=seed.pool_size)
    else:
        root = np.random.SeedSequence(0 if seed is None else seed)
    return root.spawn(n)


def plan_chunks(n_items: int, chunk_size: int,
                seed: int | np.random.SeedSequence | None = None) -> list[Chunk]:
    """Split ``n_items`` into consecutive chunks of ``chunk_size`` (the last may be shorter).

    Parameters
    ----------
    n_items : int
        Total work items (> 0).
    chunk_size : int
        Items per chunk (> 0). Pick it so one chunk is >= ~100 ms of work.
    seed : int or SeedSequence, optional
        Root of the per-chunk ``SeedSequence`` children (an int ``s`` means
        ``SeedSequence(s)``; a purpose root from :func:`stream_seed`); ``None`` gives seed 0.

    Returns
    -------
    list of Chunk
        Depends on the arguments only.
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n_chunks = math.ceil(n_items / chunk_size)
    seeds = spawn_streams(seed, n_chunks)
    return [Chunk(i, i * chunk_size, min((i + 1) * chunk_size, n_items), seeds[i])
            for i in range(n_chunks)]


def plan_tiles(n_items: int, n_tiles: int,
               seed: int | np.random.SeedSequence | None = None) -> list[Chunk]:
    """Split ``n_items`` into ``n_tiles`` near-equal chunks (sizes differ by at most one)."""
    n_tiles = max(1, min(n_tiles, n_items))
    bounds = np.linspace(0, n_items, n_tiles + 1).round().astype(int)
    seeds = spawn_streams(seed, n_tiles)
    return [Chunk(i, int(bounds[i]), int(bounds[i + 1]), seeds[i]) for i in range(n_tiles)]


def scatter_once(client, shared: Any, timeout: float | None = None):
    """Send ``shared`` to every worker once; returns a future that tasks receive as the object.

    Wrapped in a list so dicts and lists are scattered as one object, not element by element.
    """
    if shared is None:
        return None
    kw = {} if timeout is None else {"timeout": timeout}
    return client.scatter([shared], broadcast=True, hash=False, **kw)[0]


def _fold_tree(items: Sequence, merge: Callable[[Any, Any, int, int], Any]):
    """Pair neighbours level by level (``merge(a, b, depth, position)``); return the root.

    The tree's shape depends only on ``len(items)``: the one place that fixes the order in
    which partials are added, for the cluster and for the one-process reference alike.
    """
    level = list(items)
    depth = 0
    while len(level) > 1:
        nxt = [merge(level[i], level[i + 1], depth, i // 2) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def reduce_local(parts: Sequence, combine: Callable[[Any, Any], Any]):
    """Reduce partials in one process in exactly the tree :func:`tree_reduce` uses.

    A single-process run of the same chunks therefore gives bit-identical results.
    """
    return _fold_tree(parts, lambda a, b, depth, pos: combine(a, b))


def tree_reduce(client, futures: list, combine: Callable[[Any, Any], Any], *, label: str):
    """Combine ``futures`` pairwise in a binary tree fixed by their order; return the root."""
    token = uuid.uuid4().hex[:8]
    return _fold_tree(futures, lambda a, b, depth, pos: client.submit(
        combine, a, b, retries=TASK_RETRIES, key=f"{label}-combine-{token}-{depth}-{pos}",
        priority=1_000 + depth))


def aligned_inputs(shared: Any) -> Any:
    """``shared`` with every NumPy array aligned to its dtype, fixed in place where it can be.

    Arrays that arrive through ``distributed``'s serialization can be views into a received
    frame at any byte offset (seen here: float32 data at an address 3 mod 4, and the credit
    model's ``loss_by_state``). Kernels still work on them, but loads that straddle cache
    lines cost time: sklearn's tree splitter was ~6% slower on a misaligned ``X`` and the
    credit scenario kernel ~10% (``np.require(a, requirements="A")`` is the usual cure).
    Dicts, lists and dataclasses (frozen ones too) two levels deep are the worker's own
    deserialized copy, so their arrays are replaced in place: one copy per worker, not one
    per task.
    """
    if isinstance(shared, np.ndarray):
        return shared if shared.flags.aligned else np.require(shared, requirements="A")
    _align_members(shared, depth=2)
    return shared


def _align_members(obj: Any, depth: int) -> None:
    if isinstance(obj, (dict, list)):
        members = list(obj.items() if isinstance(obj, dict) else enumerate(obj))
        setter = obj.__setitem__
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        members = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        setter = partial(object.__setattr__, obj)   # also works on frozen dataclasses
    else:
        return
    for key, value in members:
        if isinstance(value, np.ndarray):
            if not value.flags.aligned:
                setter(key, np.require(value, requirements="A"))
        elif depth > 1:
            _align_members(value, depth - 1)


def _run_kernel(kernel: Callable, chunk: Chunk, shared: Any, *, _checkpoint=None, **kwargs):
    """The task body: the kernel on its chunk, with the worker's shared input aligned.

    With ``_checkpoint = (plan, part)`` the output is written to the checkpoint store before
    it is returned: the chunk is safe once this task has finished, whatever dies next.
    """
    out = kernel(chunk, aligned_inputs(shared), **kwargs)
    if _checkpoint is not None:
        _save(*_checkpoint, chunk.index, out)
    return out


def _save(plan, part: str, index: int, partial) -> None:
    """Write one partial and report what it cost: seconds and bytes go to the scheduler's
    event log under the plan's ``topic`` (``Worker.log_event``), summed into the manifest by
    :meth:`Checkpoints.finish` -- a direct measure of what checkpointing costs the workers."""
    import time

    t0 = time.perf_counter()
    nbytes = plan.save(part, index, partial)
    seconds = time.perf_counter() - t0
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):   # not inside a worker task
        return
    worker.log_event(plan.topic, {"plan": plan.plan_id, "seconds": seconds, "bytes": nbytes})


def _add_write_costs(state: Checkpoints) -> None:
    """Add each plan's reported write seconds, bytes and files to its log entry."""
    try:
        events = state.client.get_events(state.topic)
    except Exception:   # noqa: BLE001 -- a figure for the manifest, never a failure
        return
    costs: dict = {}
    for _, msg in events:
        c = costs.setdefault(msg["plan"], [0, 0.0, 0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + msg["seconds"], c[2] + msg["bytes"]
    for entry in state.log:
        if entry["plan"] is not None:
            files, seconds, nbytes = costs.get(entry["plan"], (0, 0.0, 0))
            entry.update(files_written=files, write_seconds=round(seconds, 6),
                         bytes_written=nbytes)


def _load_checkpoint(plan, part: str, index: int):
    """Task body of a checkpointed chunk: its partial, read back from the store."""
    return plan.load(part, index)


def _submit_chunks(client, kernel, chunks, inputs, kernel_kwargs, label, checkpoint=None):
    """One task per chunk; ``inputs[i]`` is chunk i's input future (shared or its own rows)."""
    token = uuid.uuid4().hex[:8]
    extra = {"_checkpoint": checkpoint} if checkpoint is not None else {}
    return [client.submit(_run_kernel, kernel, chunk, data, **(kernel_kwargs or {}), **extra,
                          retries=TASK_RETRIES, key=f"{label}-{token}-{chunk.index}",
                          priority=-chunk.index)
            for chunk, data in zip(chunks, inputs)]


def scatter_rows(client, rows: dict, chunks: Sequence[Chunk],
                 timeout: float | None = None) -> list:
    """Send each chunk only its own rows ``[start, stop)`` of every array in ``rows``.

    One scatter, not broadcast: the scheduler spreads the pieces over the workers and each
    chunk's task runs where its piece is. For row-partitioned data (scores to sweep) this
    sends every byte once, instead of the whole input to every worker.
    """
    arrays = {name: np.asarray(a) for name, a in rows.items()}
    pieces = [{name: a[c.start:c.stop] for name, a in arrays.items()} for c in chunks]
    kw = {} if timeout is None else {"timeout": timeout}
    return client.scatter(pieces, hash=False, **kw)


class ClusterLost(RuntimeError):
    """Every worker is gone (or the scheduler is) and none came back within the grace time.

    The chunks finished so far are checkpointed (when checkpoints are on): rerun to resume.
    """


def _cluster_gone(client) -> str | None:
    """Why the cluster cannot run anything now, or None."""
    if client.status not in ("running", "newly-created"):
        return f"the connection to the scheduler is lost (client {client.status})"
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - a dead scheduler
        return "the scheduler does not answer"
    return None if workers else "the cluster has no workers left"


def _watch(futures: list, label: str, engine: Engine, *, release: bool, results: bool = False,
           progress: bool = True):
    """Advance a progress bar as chunks finish; fail if the cluster is gone for good.

    With ``release`` the caller's list is emptied, so the only references left to a finished
    chunk are the scheduler's: its partial is freed as soon as the combine step that needs it
    has run, and memory stays flat in the number of chunks.

    With ``results`` the futures' results are fetched as they finish and returned in the
    order of ``futures`` (the plan's last step: what ``client.gather`` would return);
    ``progress`` False shows no progress bar (the roots of a reduce).

    Dask itself waits for ever for a worker to run the remaining tasks -- and so does a
    ``client.gather`` whose results were lost with their workers after they finished, since
    the scheduler then recomputes them. Here, once the cluster has had no worker (or no
    scheduler) for ``engine.worker_grace`` seconds, the plan stops with :class:`ClusterLost`
    (exit code 1), its finished chunks kept in the checkpoint store.
    """
    import time

    from distributed import as_completed

    total = len(futures)
    if not total:
        return [] if results else None
    client = futures[0].client
    order = [f.key for f in futures] if results else None
    got: dict = {}
    # on the futures' own client's loop, not the default client's (another client made in
    # this process, e.g. to look at the scheduler, would otherwise take the callbacks along)
    pending = as_completed(futures, loop=client.loop, with_results=results)
    if release:
        futures.clear()
    gone_since, next_check = None, time.monotonic() + 1.0
    disable = _bar_disabled(engine) if progress else True
    with tqdm(total=total, desc=label, unit="chunk", disable=disable, leave=False,
              dynamic_ncols=True) as bar:
        while not pending.is_empty():
            if pending.has_ready():
                # with results, next_batch raises a task's exception itself
                for item in pending.next_batch(block=False):
                    fut, value = item if results else (item, None)
                    if fut.status == "error" or (results and fut.status == "cancelled"):
                        fut.result()  # raises the task's exception here, with its traceback
                    if results:
                        got[fut.key] = value
                    bar.update(1)
                gone_since = None
                continue
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                why = _cluster_gone(client)
                if why is None:
                    gone_since = None
                elif gone_since is None:
                    gone_since = now
                elif now - gone_since > engine.worker_grace:
                    what = "results still to come" if results else "tasks still to run"
                    raise ClusterLost(f"{why} for {engine.worker_grace:g} s (--wait-workers) with "
                                      f"{pending.count()} of {total} '{label}' {what}; "
                                      "finished chunks are checkpointed: run again "
                                      "to resume")
            time.sleep(0.02)
    return [got[k] for k in order] if results else None


def _while_the_cluster_lives(engine: Engine, label: str, step: Callable[[float], Any]):
    """Run ``step(timeout)`` (a scatter that waits at most ``timeout`` s for a worker).

    When it fails because the cluster has no worker (or no scheduler), wait up to
    ``engine.worker_grace`` for one and try again, else :class:`ClusterLost` -- never the
    bare ``TimeoutError: No valid workers found`` or ``OSError`` of a scatter to a dead
    cluster.
    """
    import time

    deadline = time.monotonic() + engine.worker_grace
    while True:
        try:
            return step(max(1.0, min(10.0, deadline - time.monotonic())))
        except (TimeoutError, OSError) as exc:
            why = _cluster_gone(engine.client)
            if why is None and not isinstance(exc, TimeoutError):
                raise
            if time.monotonic() >= deadline:
                raise ClusterLost(f"{why or exc} for {engine.worker_grace:g} s "
                                  f"(--wait-workers) before '{label}' could start; finished "
                                  "chunks are checkpointed: run again to resume") from None
            time.sleep(1.0)


def _bar_disabled(engine: Engine) -> bool | None:
    """tqdm's ``disable``: None shows a bar only on a terminal."""
    return None if engine.progress is None else not engine.progress


def map_reduce(kernel: Callable, chunks: Sequence[Chunk], combine: Callable[[Any, Any], Any], *,
               engine: Engine | None = None, client=None, shared: Any = None,
               rows: dict | None = None,
               kernel_kwargs: dict | None = None, label: str = "chunks",
               finalize: Callable[[Any], Any] | None = None):
    """Run ``kernel`` on every chunk on the cluster and reduce the partials exactly.

    Parameters
    ----------
    kernel : callable
        ``kernel(chunk, shared, **kernel_kwargs) -> partial``. Pure: no Dask inside.
    chunks : sequence of Chunk
        From :func:`plan_chunks` or :func:`plan_tiles`.
    combine : callable
        ``combine(a, b) -> partial``, associative. Applied in a tree fixed by chunk index.
    engine : Engine
        The run's engine (client, checkpoints, progress, grace).
    client : distributed.Client
        Instead of ``engine``, outside a run: a plain engine on this client.
    shared : object, optional
        Large read-only input, scattered to all workers once.
    rows : dict of str to array, optional
        Row-partitioned input instead of ``shared``: chunk ``i``'s kernel receives, in place
        of ``shared``, a dict with rows ``[start, stop)`` of each array, sent to one worker
        only (:func:`scatter_rows`).
    kernel_kwargs : dict, optional
        Small keyword arguments passed to every kernel call.
    label : str
        Name of the task group (dashboard, progress bar).
    finalize : callable, optional
        Applied on the client to the reduced partial.

    Returns
    -------
    object
        ``finalize(root)`` or the reduced partial itself.
    """
    root = _run_plan(_engine(engine, client), kernel, chunks, shared, rows, kernel_kwargs, label,
                     [(None, combine)])[0]
    return finalize(root) if finalize else root


def map_branches(kernel: Callable, chunks: Sequence[Chunk],
                 branches: Sequence[tuple[Callable, Callable[[Any, Any], Any]]], *,
                 engine: Engine | None = None, client=None, shared: Any = None,
                 kernel_kwargs: dict | None = None, label: str = "chunks") -> list:
    """Map ``kernel`` over the chunks, feed each output to several branches, reduce each branch.

    The kernel's output (e.g. a fitted sub-forest) never leaves the workers: each branch
    kernel ``branch(output, shared) -> partial`` runs on it as a task of its own, and each
    branch's partials are reduced over the chunks exactly as :func:`map_reduce` does, in the
    tree fixed by chunk index. An output is released as soon as its branches have run
    (branch tasks outrank the next chunk), so worker memory stays flat in the number of
    chunks. This spreads work over chunks x branches -- e.g. sub-forests x blocks of
    permutation-importance copies -- without shipping the intermediate objects anywhere.

    Returns
    -------
    list
        The reduced partial of each branch, in branch order.
    """
    return _run_plan(_engine(engine, client), kernel, chunks, shared, None, kernel_kwargs,
                     label, branches)


def map_chunks(kernel: Callable, chunks: Sequence[Chunk], *, engine: Engine | None = None,
               client=None, shared: Any = None, kernel_kwargs: dict | None = None,
               label: str = "chunks") -> list:
    """Run ``kernel`` on every chunk; return the (small) results in chunk order."""
    return _run_plan(_engine(engine, client), kernel, chunks, shared, None, kernel_kwargs,
                     label, None)


def _run_branch(branch: Callable, output: Any, shared: Any, checkpoint=None, index: int = -1):
    """A branch task body: ``branch`` on one chunk's output, with the shared input aligned
    (and its partial checkpointed, ``checkpoint = (plan, part)``)."""
    out = branch(output, aligned_inputs(shared))
    if checkpoint is not None:
        _save(*checkpoint, index, out)
    return out


def _plan_checkpoint(engine, kernel, chunks, shared, rows, kernel_kwargs, label, branches):
    """The plan's checkpoints, the chunks already done and the parts of a chunk
    (``(None, set(), parts)`` without checkpoints)."""
    state = engine.checkpoints
    if state is None:
        return None, set(), []
    from .checkpoint import plan_token

    parts = ["out"] if branches is None else [f"b{b}" for b in range(len(branches))]
    try:
        token = plan_token(kernel, chunks, kernel_kwargs=kernel_kwargs,
                           data=rows if rows is not None else shared, branches=branches)
    except RuntimeError as exc:  # input dask cannot tokenize deterministically
        state.log.append({"label": label, "plan": None, "chunks": len(chunks), "reused": 0,
                          "computed": len(chunks), "note": f"not checkpointed: {exc}"})
        return None, set(), parts
    if state.meta is not None:
        state.store.write_meta(**state.meta)
        state.meta = None
    state.client = engine.client
    plan = state.store.plan(label, token, topic=state.topic)
    done = plan.done(parts) if state.resume else set()
    done &= {c.index for c in chunks}
    entry = {"label": label, "plan": plan.plan_id, "chunks": len(chunks)}
    # Read back (never unpickled) before any is used: a damaged or tampered file is set
    # aside and its chunk recomputed, so one bad file cannot fail every later run.
    damaged = plan.damaged(parts, sorted(done)) if done else {}
    for index in damaged:
        plan.set_aside(parts, index)
    done -= set(damaged)
    if damaged:
        first = next(iter(damaged.values()))
        entry["note"] = (f"{len(damaged)} checkpoint(s) of '{label}' could not be used and "
                         f"were set aside in {state.store.location()}/damaged and recomputed "
                         f"(first: {first})")
    entry.update(reused=len(done), computed=len(chunks) - len(done))
    state.log.append(entry)
    return plan, done, parts


def _run_plan(engine, kernel, chunks, shared, rows, kernel_kwargs, label, branches):
    """Scatter, map, and reduce each branch; re-run the plan if its input is lost.

    ``branches`` is a list of ``(branch, combine)``: ``branch`` is None to reduce the
    kernel's outputs themselves; ``branches`` None gathers the outputs in chunk order.

    A worker that dies is normally invisible here: the scheduler re-runs the chunks it held.
    The exception is the scattered input: scattered data cannot be recomputed, and the
    scheduler's active memory manager trims broadcast replicas once no queued task needs
    them, so a worker dying with the last copy cancels every partial that still needs it
    ("already forgotten"). The plan is deterministic, so scattering again and re-running it
    gives the identical result.

    With ``engine.checkpoints`` each computed partial is saved by its task, and chunks
    found in the store (``resume``) are loaded by a task of their own in place of the kernel
    (and its branches): the tree sees the same partials in the same places.
    """
    from concurrent.futures import CancelledError

    if rows is not None and shared is not None:
        raise ValueError("give either shared (broadcast) or rows (partitioned) input, not both")
    client = engine.client
    plan, done, parts = _plan_checkpoint(engine, kernel, chunks, shared, rows, kernel_kwargs,
                                         label, branches)
    todo = [c for c in chunks if c.index not in done]
    for attempt in range(PLAN_ATTEMPTS):
        if not todo:
            inputs = []
        elif rows is not None:
            inputs = _while_the_cluster_lives(
                engine, label, lambda t: scatter_rows(client, rows, todo, timeout=t))
        else:
            inputs = [_while_the_cluster_lives(
                engine, label, lambda t: scatter_once(client, shared, timeout=t))] * len(todo)
        own = None
        if plan is not None:
            if branches is None:
                own = (plan, "out")
            else:
                own = next(((plan, f"b{b}") for b, (branch, _) in enumerate(branches)
                            if branch is None), None)
        futures = _submit_chunks(client, kernel, todo, inputs, kernel_kwargs, label, own)
        by_index = {c.index: (fut, data) for c, fut, data in zip(todo, futures, inputs)}
        try:
            if branches is None:
                computed = dict(zip((c.index for c in todo),
                                    _watch(futures, label, engine, release=False, results=True)))
                return [computed[c.index] if c.index in computed else plan.load("out", c.index)
                        for c in chunks]
            leaves, roots = [], []
            token = uuid.uuid4().hex[:8]
            for b, (branch, combine) in enumerate(branches):
                parts_b = []
                for i, c in enumerate(chunks):
                    if c.index in done:
                        parts_b.append(client.submit(
                            _load_checkpoint, plan, f"b{b}", c.index, retries=TASK_RETRIES,
                            key=f"{label}-load-b{b}-{token}-{c.index}", priority=500 - i))
                        continue
                    fut, data = by_index[c.index]
                    if branch is None:
                        parts_b.append(fut)
                    else:
                        ck = (plan, f"b{b}") if plan is not None else None
                        parts_b.append(client.submit(
                            _run_branch, branch, fut, data, ck, c.index, retries=TASK_RETRIES,
                            key=f"{label}-b{b}-{token}-{i}", priority=500 - i))
                roots.append(tree_reduce(client, parts_b, combine,
                                         label=label if branch is None else f"{label}-b{b}"))
                leaves.extend(parts_b)
                del parts_b
            # Only the scheduler holds the outputs and partials now: each is freed once the
            # tasks that need it have run (memory flat in the number of chunks).
            futures.clear()
            by_index.clear()
            _watch(leaves, label, engine, release=True)
            # the roots under the same watch: workers lost during the last combine steps
            # would leave a plain gather waiting for ever
            return _watch(roots, label, engine, release=False, results=True, progress=False)
        except CancelledError:
            if attempt == PLAN_ATTEMPTS - 1:
                raise
            if plan is not None and engine.checkpoints is not None:  # keep what was saved
                done = plan.done(parts) & {c.index for c in chunks}
                todo = [c for c in chunks if c.index not in done]
