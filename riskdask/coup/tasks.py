"""Chunk kernels the engine runs on workers: thin adapters from a plan chunk to the pure
kernels of :mod:`riskdask.coup.forest` and :mod:`riskdask.coup.sweep` (no Dask in here).

The forest runs as ``engine.map_branches``: :func:`fit_task` fits one sub-forest per chunk
and the fitted trees stay on that worker; :func:`aggregate_task` and one
:func:`permutation_task` per block of permuted copies run on them as branches, and only their
sums travel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from ..engine import Chunk
from .forest import (SubForestAggregate, chunk_random_state, fit_subforest, permutation_sums,
                     subforest_aggregate)
from .sweep import BinCounts, bin_counts

__all__ = ["FittedChunk", "fit_task", "aggregate_task", "permutation_task", "sweep_task"]


@dataclass
class FittedChunk:
    """A fitted sub-forest and where its chunk ends in the tree plan (it stays on its worker)."""

    stop: int
    forest: RandomForestRegressor


def fit_task(chunk: Chunk, shared: Mapping[str, Any], params: Mapping[str, Any]
             ) -> FittedChunk:
    """Fit ``chunk.size`` trees seeded from the chunk's stream.

    ``shared`` (scattered once): ``X_train`` (float32), ``y_train``, ``X_test`` and, with
    permutation importance, ``X_perm_rows`` (the test rows whose columns get shuffled);
    optionally ``checkpoints`` (tree counts of the convergence table).
    """
    return FittedChunk(chunk.stop, fit_subforest(shared["X_train"], shared["y_train"],
                                                 chunk.size, chunk_random_state(chunk.seed),
                                                 params))


def aggregate_task(fitted: FittedChunk, shared: Mapping[str, Any]) -> SubForestAggregate:
    """Test-set, out-of-bag and impurity-importance sums of one fitted sub-forest (and its
    share of every convergence level it lies inside)."""
    return subforest_aggregate(fitted.forest, shared["X_train"], shared["X_test"],
                               stop=fitted.stop, checkpoints=shared.get("checkpoints", ()))


def permutation_task(fitted: FittedChunk, shared: Mapping[str, Any],
                     block: list[tuple[int, int, int]]) -> np.ndarray:
    """Prediction sums of one sub-forest on one block of permuted copies (features x repeats)."""
    return permutation_sums(fitted.forest, shared["X_perm_rows"], block)


def sweep_task(chunk: Chunk, rows: Mapping[str, Any]) -> BinCounts:
    """Bin counts of one partition of scored rows: ``rows["p"]``, ``rows["y"]``.

    ``rows`` holds only this chunk's rows (``map_reduce(..., rows=...)`` sends each partition
    to one worker).
    """
    return bin_counts(rows["p"], rows["y"])
