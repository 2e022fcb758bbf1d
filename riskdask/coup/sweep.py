"""The exact one-pass sweep over the seed's 1,000 probability thresholds.

The seed ("Building the Model") loops over 1,000 thresholds ``numpy.linspace(0, 1, 1000)`` and,
at each, counts false negatives, true positives, true negatives and false positives, then
precision, recall and F1. Its printed optimal F1 threshold 0.127127 is ``127/999`` and its
default threshold 0.500501 is ``500/999``; its table at ``t = 0`` has recall 0.81, not 1, so a
row is predicted positive when ``p > t`` (strict).

Here the loop becomes one pass. A score ``p`` is positive at threshold ``t_j`` exactly when
``t_j < p``; because the grid is increasing, that holds for ``j < k(p)`` with
``k(p) = #{j : t_j < p}`` -- what ``numpy.searchsorted(grid, p, side="left")`` returns, using
the very same float64 ``<`` comparison as the rule ``p > t``. Each data partition therefore
only counts positives and negatives per bin ``k`` (:func:`bin_counts`, a ``bincount``); bin
counts of partitions add up exactly (integers); and reversed cumulative sums give TP and FP at
every threshold at once (:func:`confusion_from_counts`). The result is identical, not close, to
the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["N_THRESHOLDS", "threshold_grid", "threshold_bins", "BinCounts", "bin_counts",
           "combine_bin_counts", "confusion_from_counts", "sweep_table", "optimal_thresholds",
           "ChosenThreshold", "OptimalThresholds",
           "confusion_tables", "CONFUSION_ORDER"]

#: The seed's number of thresholds.
N_THRESHOLDS = 1000

_BLOCK = 1 << 15

#: The seed's order when it prints a confusion table.
CONFUSION_ORDER = ("FN", "TP", "TN", "FP")


def threshold_grid(n: int = N_THRESHOLDS) -> np.ndarray:
    """The seed's thresholds: ``numpy.linspace(0, 1, n)`` (float64, ``t_j = j / (n - 1)``)."""
    return np.linspace(0.0, 1.0, n)


def _as_scores(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if np.isnan(p).any():
        raise ValueError("scores must not be NaN")
    return p


def _as_labels(y) -> np.ndarray:
    """0/1 labels as bool or small integers (no copy when they already are)."""
    y = np.asarray(y).ravel()
    if y.dtype == bool:
        return y
    if y.size and np.issubdtype(y.dtype, np.integer):
        if y.min() < 0 or y.max() > 1:
            raise ValueError("labels must be 0 or 1")
        return y
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return y.astype(np.int8)


def _is_even(grid: np.ndarray) -> bool:
    """Whether ``grid[j]`` is ``j / (n - 1)`` up to rounding (as ``linspace(0, 1, n)`` is)."""
    n = grid.size
    ideal = np.arange(n) / max(n - 1, 1)
    return bool(n >= 2 and np.all(np.abs(grid - ideal) <= 4 * np.finfo(float).eps))


def threshold_bins(p, grid: np.ndarray | None = None) -> np.ndarray:
    """Bin of each score: ``k(p) = #{j : grid[j] < p}``, in ``0 .. len(grid)``.

    ``p`` is positive at threshold ``j`` iff ``j < k(p)``. The bin is *defined* by the float64
    comparisons of the rule ``p > t`` -- ``grid[k-1] < p <= grid[k]`` -- so scores equal to a
    grid value fall on the same side as in the plain loop.

    It is found fast: the linear guess ``ceil(p * (n - 1))`` can be off by one bin only where
    ``p`` lies within rounding of a threshold (the grid is ``j / (n - 1)`` up to a few ulps),
    and one step down where ``grid[k-1] >= p`` and one step up where ``grid[k] < p`` -- the
    rule's own comparisons -- put it right. On any other grid the result is verified with
    those comparisons and misses get ``numpy.searchsorted(side="left")``, which evaluates the
    same comparisons. Gathers from a 1,000-entry table beat a binary search over it by ~4x on
    millions of scores.
    """
    grid = threshold_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    return _bins(_as_scores(p), grid, _padded(grid), _is_even(grid))


def _padded(grid: np.ndarray) -> np.ndarray:
    return np.concatenate([[-np.inf], grid, [np.inf]])   # padded[k] = grid[k-1]


def _bins(p: np.ndarray, grid: np.ndarray, padded: np.ndarray, even: bool,
          out: np.ndarray | None = None, work: np.ndarray | None = None,
          flag: np.ndarray | None = None) -> np.ndarray:
    """Bins of ``p`` (see :func:`threshold_bins`), written into ``out`` when given.

    ``out`` (intp), ``work`` (float64) and ``flag`` (bool) are buffers at least ``p.size``
    long. With them the pass allocates nothing: :func:`bin_counts` reuses one set for every
    block. That matters on Dask workers, whose nanny sets ``MALLOC_TRIM_THRESHOLD_``: glibc
    then serves every temporary over 128 KiB with a fresh ``mmap`` (page faults each time),
    which made the allocating version 2.3x slower there.
    """
    m, n = p.size, grid.size
    k = np.empty(m, dtype=np.intp) if out is None else out[:m]
    guess = np.empty(m) if work is None else work[:m]
    wrong = np.empty(m, dtype=bool) if flag is None else flag[:m]
    np.multiply(p, n - 1, out=guess)
    np.ceil(guess, out=guess)
    np.clip(guess, 0, n, out=guess)
    np.copyto(k, guess, casting="unsafe")
    # k is always in 0..n, so mode="clip" changes nothing but skips the buffered copy of
    # ``out`` that mode="raise" makes.
    np.take(padded, k, out=guess, mode="clip")    # grid[k-1]
    np.greater_equal(guess, p, out=wrong)         # one too high: grid[k-1] is not below p
    np.subtract(k, wrong, out=k)
    np.take(padded[1:], k, out=guess, mode="clip")  # grid[k]
    np.less(guess, p, out=wrong)                  # one too low: grid[k] is still below p
    np.add(k, wrong, out=k)
    if not even:
        bad = ~((padded.take(k) < p) & (p <= padded.take(k + 1)))
        if bad.any():
            k[bad] = np.searchsorted(grid, p[bad], side="left")
    return k


@dataclass(frozen=True)
class BinCounts:
    """Positives and negatives per threshold bin (``len(grid) + 1`` bins), int64.

    The partial result of one data partition; partitions combine by addition, exactly.
    """

    pos: np.ndarray
    neg: np.ndarray

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())


def bin_counts(p, y, grid: np.ndarray | None = None) -> BinCounts:
    """Count positives and negatives of one partition per threshold bin (one pass).

    Parameters
    ----------
    p : array-like of float
        Predicted probabilities (any real values; the grid spans [0, 1]).
    y : array-like of {0, 1}
        Observed outcome (``pt_attempt``).
    grid : ndarray, optional
        Increasing thresholds; the seed's 1,000 by default.
    """
    grid = threshold_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    p, y = _as_scores(p), _as_labels(y)
    if p.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    padded, even = _padded(grid), _is_even(grid)
    n_bins = grid.size + 1
    both = np.zeros(2 * n_bins, dtype=np.int64)
    # Blocks of 32k scores keep the temporaries in cache: about twice as fast on millions of
    # rows as whole-array passes; one set of buffers serves every block (see _bins). One
    # bincount over (bin, label) pairs per block.
    size = min(_BLOCK, p.size)
    k, work, flag = np.empty(size, np.intp), np.empty(size), np.empty(size, bool)
    for start in range(0, p.size, _BLOCK):
        sl = slice(start, start + _BLOCK)
        kb = _bins(p[sl], grid, padded, even, k, work, flag)
        np.multiply(kb, 2, out=kb)
        np.add(kb, y[sl], out=kb, casting="unsafe")
        both += np.bincount(kb, minlength=2 * n_bins)
    both = both.reshape(n_bins, 2)       # column 0 negatives, column 1 positives
    return BinCounts(pos=np.ascontiguousarray(both[:, 1]), neg=np.ascontiguousarray(both[:, 0]))


def combine_bin_counts(a: BinCounts, b: BinCounts) -> BinCounts:
    """Add two partitions' bin counts (integer addition: exact and associative)."""
    return BinCounts(pos=a.pos + b.pos, neg=a.neg + b.neg)


def confusion_from_counts(counts: BinCounts) -> dict[str, np.ndarray]:
    """TP, FP, TN, FN at every threshold from summed bin counts.

    ``TP[j] = sum_{k > j} pos[k]`` (positives whose bin lies above threshold ``j``): a reversed
    cumulative sum, dropping bin 0 (scores at or below every threshold).
    """
    tp = np.cumsum(counts.pos[::-1])[::-1][1:]
    fp = np.cumsum(counts.neg[::-1])[::-1][1:]
    fn = counts.n_pos - tp
    tn = counts.n_neg - fp
    return {"TP": tp, "FP": fp, "TN": tn, "FN": fn}


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``num / den`` with 0 where ``den == 0``; also returns the 'undefined' flag."""
    undefined = den == 0
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=~undefined)
    return out, undefined


def sweep_table(counts: BinCounts, grid: np.ndarray | None = None) -> pd.DataFrame:
    """The full sweep: one row per threshold with counts, precision, recall and F1.

    Precision ``TP / (TP + FP)``, recall ``TP / (TP + FN)``, F1 ``2 TP / (2 TP + FP + FN)``
    (the harmonic mean of precision and recall, written on the integer counts so that equal
    F1 values are equal floats: a quotient of integers is correctly rounded). Each is 0 where
    its denominator is 0, and flagged in ``precision_undefined`` etc.
    """
    grid = threshold_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    c = confusion_from_counts(counts)
    tp, fp, tn, fn = (c[k].astype(np.float64) for k in ("TP", "FP", "TN", "FN"))
    precision, p_undef = _ratio(tp, tp + fp)
    recall, r_undef = _ratio(tp, tp + fn)
    f1, f_undef = _ratio(2 * tp, 2 * tp + fp + fn)
    return pd.DataFrame({
        "threshold": grid,
        "FN": c["FN"], "TP": c["TP"], "TN": c["TN"], "FP": c["FP"],
        "precision": precision, "recall": recall, "f1": f1,
        "precision_undefined": p_undef, "recall_undefined": r_undef, "f1_undefined": f_undef,
    })


@dataclass(frozen=True)
class ChosenThreshold:
    """One reference threshold of the sweep with its metrics and confusion table."""

    index: int
    threshold: float
    precision: float
    recall: float
    f1: float
    confusion: dict  # FN, TP, TN, FP (the seed's order)

    def as_dict(self) -> dict:
        return {"index": self.index, "threshold": self.threshold, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "confusion": dict(self.confusion)}


@dataclass(frozen=True)
class OptimalThresholds:
    """The seed's four reference thresholds (see :func:`optimal_thresholds`)."""

    precision: ChosenThreshold
    recall: ChosenThreshold
    f1: ChosenThreshold
    default: ChosenThreshold

    KINDS = ("precision", "recall", "f1", "default")

    def items(self):
        return [(k, getattr(self, k)) for k in self.KINDS]

    def as_dict(self) -> dict:
        """Plain values for ``summary.json``."""
        return {k: v.as_dict() for k, v in self.items()}


def optimal_thresholds(table: pd.DataFrame, default: float = 0.5) -> OptimalThresholds:
    """The seed's four reference thresholds, each with its metrics and confusion table.

    ``precision``, ``recall`` and ``f1``: the first threshold (smallest) reaching the maximum
    of that metric; ``default``: the first threshold ``>= default`` (seed: 0.500501).
    """
    rows = {}
    for metric in ("precision", "recall", "f1"):
        rows[metric] = int(np.argmax(table[metric].to_numpy()))
    at_or_above = np.flatnonzero(table["threshold"].to_numpy() >= default)
    rows["default"] = int(at_or_above[0]) if at_or_above.size else len(table) - 1
    out = {}
    for name, j in rows.items():
        r = table.iloc[j]
        out[name] = ChosenThreshold(index=j, threshold=float(r["threshold"]),
                                    precision=float(r["precision"]), recall=float(r["recall"]),
                                    f1=float(r["f1"]),
                                    confusion={k: int(r[k]) for k in CONFUSION_ORDER})
    return OptimalThresholds(**out)


def confusion_tables(optimal: OptimalThresholds) -> pd.DataFrame:
    """The four confusion tables side by side, rows in the seed's order FN, TP, TN, FP."""
    return pd.DataFrame({name: [v.confusion[k] for k in CONFUSION_ORDER]
                         for name, v in optimal.items()}, index=list(CONFUSION_ORDER))
