"""Chunk kernels the engine runs on workers: thin adapters from a plan chunk to the pure
kernels of :mod:`riskdask.coup.forest` and :mod:`riskdask.coup.sweep` (no Dask in here)."""

from __future__ import annotations

from typing import Any, Mapping

from ..engine import Chunk
from .forest import SubForestAggregate, chunk_random_state, fit_subforest, subforest_aggregate
from .sweep import BinCounts, bin_counts

__all__ = ["subforest_task", "sweep_task"]


def subforest_task(chunk: Chunk, shared: Mapping[str, Any], params: Mapping[str, Any]
                   ) -> SubForestAggregate:
    """Fit ``chunk.size`` trees seeded from the chunk's stream; return aggregates only.

    ``shared`` (scattered once): ``X_train``, ``y_train``, ``X_test`` (float32), optional
    ``X_perm`` (permuted copies of the permutation-importance rows). The fitted trees are
    dropped here, on the worker: only sums and counts travel.
    """
    forest = fit_subforest(shared["X_train"], shared["y_train"], chunk.size,
                           chunk_random_state(chunk.seed), params)
    return subforest_aggregate(forest, shared["X_train"], shared["X_test"], shared.get("X_perm"))


def sweep_task(chunk: Chunk, shared: Mapping[str, Any]) -> BinCounts:
    """Bin counts of one partition of scored rows: ``shared["p"]``, ``shared["y"]``."""
    sl = slice(chunk.start, chunk.stop)
    return bin_counts(shared["p"][sl], shared["y"][sl], shared.get("grid"))
