"""A small estimator with exact answers, to check a cluster and the engine end to end.

Each chunk draws standard normals from its own stream and returns a mergeable summary:
the count, the exact integer sum of the item indices it covered (closed form over the whole
plan: ``n (n - 1) / 2``), the sum and sum of squares of the draws, the exceedance count over a
level, and the ``k`` largest draws. Merging is associative; the engine's fixed tree makes the
floating-point sums bit-identical on any number of workers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["NormalSummary", "normal_chunk", "merge_summaries", "tail_merge"]


@dataclass(frozen=True)
class NormalSummary:
    n: int
    index_sum: int
    total: float
    total_sq: float
    exceed: int
    top: np.ndarray  # the k largest draws, descending

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def variance(self) -> float:
        return self.total_sq / self.n - self.mean ** 2


def tail_merge(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of two descending buffers, descending (ties kept, order exact)."""
    both = np.concatenate([a, b])
    return -np.sort(-both, kind="stable")[:k]


def normal_chunk(chunk, shared=None, *, level: float = 2.326347874, k: int = 10,
                 jitter_ms: float = 0.0) -> NormalSummary:
    """Summary of ``chunk.size`` standard normal draws from the chunk's own stream.

    ``jitter_ms`` sleeps a truly random time (from ``os.urandom``) so tests can scramble the
    order in which chunks finish without touching the numbers.
    """
    if jitter_ms:
        time.sleep(int.from_bytes(os.urandom(2), "little") / 65535 * jitter_ms / 1000)
    x = chunk.rng().standard_normal(chunk.size)
    idx = np.arange(chunk.start, chunk.stop, dtype=np.int64)
    return NormalSummary(n=chunk.size, index_sum=int(idx.sum()), total=float(x.sum()),
                         total_sq=float(np.dot(x, x)), exceed=int((x > level).sum()),
                         top=-np.sort(-x)[:k])


def merge_summaries(a: NormalSummary, b: NormalSummary) -> NormalSummary:
    """Associative merge of two summaries."""
    return NormalSummary(n=a.n + b.n, index_sum=a.index_sum + b.index_sum,
                         total=a.total + b.total, total_sq=a.total_sq + b.total_sq,
                         exceed=a.exceed + b.exceed,
                         top=tail_merge(a.top, b.top, max(len(a.top), len(b.top))))
