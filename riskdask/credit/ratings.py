"""Rating scale, one-year migration matrix and migration thresholds.

Conventions used throughout :mod:`riskdask.credit`
--------------------------------------------------
* The *rating scale* is ordered best first and ends with the absorbing default
  state, e.g. ``AAA, AA, A, BBB, BB, B, CCC-C, D`` (seed section 3.1).
* Inside the kernels forward states are indexed **worst first** (state 0 is
  default, state ``R - 1`` the best rating), because the migration boundaries of
  seed Table 3.1 are ordered from default upwards: an asset return below
  ``b[0]`` is a default, one in ``[b[w - 1], b[w])`` is state ``w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

__all__ = ["MigrationMatrix", "migration_thresholds", "interval_bounds", "DEFAULT_SCALE"]

DEFAULT_SCALE = ("AAA", "AA", "A", "BBB", "BB", "B", "CCC-C", "D")


@dataclass(frozen=True)
class MigrationMatrix:
    """One-year migration probabilities p(fcr | icr).

    Parameters
    ----------
    scale : tuple of str
        Rating scale, best first; the last entry is the default state.
    probabilities : ndarray, shape (R - 1, R)
        Row ``i`` is initial rating ``scale[i]``; column ``j`` is forward rating
        ``scale[j]``.  Rows sum to one.
    source : str
        Citation of the published table.
    """

    scale: tuple[str, ...]
    probabilities: np.ndarray
    source: str = ""

    @property
    def n_states(self) -> int:
        return len(self.scale)

    @property
    def initial_ratings(self) -> tuple[str, ...]:
        return self.scale[:-1]

    @property
    def default_rating(self) -> str:
        return self.scale[-1]

    def index(self, rating: str) -> int:
        """Best-first position of ``rating`` in the scale."""
        return self.scale.index(rating)

    def worst_first(self) -> np.ndarray:
        """Probabilities with forward states reordered worst first, shape (R - 1, R)."""
        return np.ascontiguousarray(self.probabilities[:, ::-1])

    def thresholds(self) -> np.ndarray:
        """Migration boundaries per initial rating, shape (R - 1, R - 1); see
        :func:`migration_thresholds`."""
        return migration_thresholds(self.worst_first())


def migration_thresholds(probs_worst_first) -> np.ndarray:
    """Standard normal migration boundaries (seed Table 3.1, Step 3).

    Parameters
    ----------
    probs_worst_first : array_like, shape (..., R)
        Migration probabilities of one or more initial ratings, forward states
        ordered from default (first) to the best rating (last).

    Returns
    -------
    ndarray, shape (..., R - 1)
        Ascending upper boundaries ``b[w] = Phi^-1(sum_{v <= w} p_v)`` of states
        ``w = 0 .. R - 2``: a return below ``b[0]`` defaults, one at or above
        ``b[R - 2]`` ends in the best rating.  Zero probabilities give repeated
        boundaries (possibly ``-inf`` / ``+inf``).

    Notes
    -----
    For initial rating A with the seed's S&P probabilities this reproduces the
    boundaries -3.24, -3.12, -2.79, -2.47, -1.53, 2.01, 3.35 of Table 3.1.
    """
    p = np.asarray(probs_worst_first, dtype=float)
    cumulative = np.clip(np.cumsum(p, axis=-1)[..., :-1], 0.0, 1.0)
    return ndtri(cumulative)


def interval_bounds(thresholds) -> np.ndarray:
    """Thresholds padded with ``-inf`` / ``+inf``: shape (..., R + 1) interval edges."""
    t = np.asarray(thresholds, dtype=float)
    pad_shape = t.shape[:-1] + (1,)
    return np.concatenate([np.full(pad_shape, -np.inf), t, np.full(pad_shape, np.inf)], axis=-1)
