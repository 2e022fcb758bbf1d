"""The forest on the cluster: sub-forests as tasks, reduced exactly to one forest.

The distribution layer over the single-machine kernels of :mod:`.forest` and :mod:`.tasks`
(dask-ml style): it only plans, maps and reduces, on the run's :class:`riskdask.engine.Engine`.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..engine import map_branches, plan_chunks
from .forest import ForestResult, as_float32, combine_aggregates, finalize_aggregate
from .tasks import aggregate_task, fit_task, permutation_task

__all__ = ["distributed_forest"]


def distributed_forest(engine, X_train, y_train, X_test, n_trees: int, trees_per_task: int,
                       seed, params: dict, *, X_perm_rows=None, perm_blocks=(),
                       checkpoints=(), label: str = "subforests"
                       ) -> tuple[ForestResult, np.ndarray | None]:
    """Sub-forests as tasks, reduced exactly to one forest (COUP.md "Model").

    ``engine`` is the run's :class:`riskdask.engine.Engine` (``ctx.engine``; outside a run,
    ``Engine(client)``). ``seed`` (an int or the run's ``forest`` stream,
    ``ctx.streams.seed("forest")``) roots the tree plan. Each chunk of it fits a sub-forest
    on its worker (seed from the chunk plan; training data scattered once). Branch tasks on
    each fitted sub-forest return sums only: the test/OOB/importance aggregates and, per
    block of permuted copies (features x repeats), the predictions on those copies. Returns
    the reduced forest and the forest's predictions on every permuted copy,
    ``(n_copies, n_rows)`` (None without permutation).
    With ``checkpoints`` (:func:`~riskdask.coup.forest.tree_checkpoints`) the aggregates also
    carry the sums of the plan's first ``c`` trees per checkpoint, kept in
    ``result.aggregate`` for :func:`~riskdask.coup.forest.convergence_table`.
    """
    shared = {"X_train": as_float32(X_train), "y_train": np.asarray(y_train, dtype=np.float64),
              "X_test": as_float32(X_test)}
    if checkpoints:
        shared["checkpoints"] = [int(c) for c in checkpoints]
    branches = [(aggregate_task, combine_aggregates)]
    if perm_blocks:
        shared["X_perm_rows"] = as_float32(X_perm_rows)
        branches += [(partial(permutation_task, block=block), np.add) for block in perm_blocks]
    chunks = plan_chunks(n_trees, trees_per_task, seed)
    agg, *perm_sums = map_branches(fit_task, chunks, branches, engine=engine, shared=shared,
                                   kernel_kwargs={"params": params}, label=label)
    result = finalize_aggregate(agg)
    if checkpoints:
        result.aggregate = agg
    perm = np.concatenate(perm_sums) / result.n_trees if perm_sums else None
    return result, perm
