"""Stratified balanced split of the NPOs into two near-equivalent samples (seed Sections 2.3-2.4).

The seed divides the 2,660 NPOs into "two approximately equivalent samples in terms of size;
field of activity; function; and age distributions". Here the strata are the combinations of
field, function and age band. Inside every stratum the members are shuffled and dealt out
half and half; when a stratum has an odd size its extra member goes to sample 1 or sample 2
alternately over the odd strata (in a shuffled order), so

* per stratum, the two sample counts differ by at most one, and
* overall, the two sample sizes differ by at most one.

Split ``r`` of a run uses child ``r`` of the run's ``split`` stream
(:func:`riskdask.engine.stream_seed`): it depends on the seed and ``r`` only, not on how many
splits the run makes or how many workers it has. A redraw ``a`` of split ``r`` (an unusable
split, :func:`usable_splits`) uses child ``a - 1`` of that stream's child ``r``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["age_band", "stratum_codes", "balanced_split", "balanced_splits",
           "balance_table", "split_counts", "usable_splits", "UsableSplits", "max_stratum_gap"]


def age_band(age: np.ndarray, edges) -> np.ndarray:
    """Label ages with the bands ``[e_0, e_1), [e_1, e_2), ..., [e_last, inf)``.

    Ages below the first edge fall in the first band.
    """
    edges = list(edges)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    idx = np.clip(np.searchsorted(np.asarray(edges), np.asarray(age), side="right") - 1, 0,
                  len(edges) - 1)
    return np.asarray(labels, dtype=object)[idx]


def stratum_codes(*columns) -> np.ndarray:
    """Integer stratum code per row for the combinations of the given columns (sorted labels)."""
    frame = pd.DataFrame({f"c{i}": np.asarray(c).astype(str) for i, c in enumerate(columns)})
    return frame.groupby(list(frame.columns), sort=True).ngroup().to_numpy()


def balanced_split(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign every row to sample 1 or 2, balanced within strata.

    Parameters
    ----------
    strata : ndarray of int, shape (n,)
        Stratum code of every NPO (see :func:`stratum_codes`).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int8, shape (n,)
        ``1`` or ``2``.
    """
    strata = np.asarray(strata)
    n = strata.shape[0]
    sample = np.zeros(n, dtype=np.int8)
    codes = np.unique(strata)
    odd_codes = [c for c in codes if np.count_nonzero(strata == c) % 2 == 1]
    extra_to = {}
    for pos, c in enumerate(rng.permutation(np.asarray(odd_codes, dtype=np.int64))):
        extra_to[int(c)] = 1 if pos % 2 == 0 else 2
    for c in codes:
        members = np.flatnonzero(strata == c)
        members = members[rng.permutation(members.size)]
        half = members.size // 2
        sample[members[:half]] = 1
        sample[members[half:2 * half]] = 2
        if members.size % 2:
            sample[members[-1]] = extra_to[int(c)]
    return sample


def _split_stream(seed, r: int, attempt: int = 0) -> np.random.SeedSequence:
    """Stream of draw ``attempt`` of split ``r``: child ``r`` of ``seed``; redraws its children."""
    from ..engine import spawn_streams

    child = spawn_streams(seed, r + 1)[r]
    return child if attempt == 0 else spawn_streams(child, attempt)[attempt - 1]


def balanced_splits(strata: np.ndarray, seed, n_splits: int) -> np.ndarray:
    """``n_splits`` independent balanced splits, shape ``(n_splits, n)``.

    Split ``r`` draws from child ``r`` of ``seed`` (the run's ``split`` stream,
    :func:`riskdask.engine.stream_seed`; an int ``s`` means ``SeedSequence(s)``).
    """
    from ..engine import spawn_streams

    out = np.empty((n_splits, np.asarray(strata).shape[0]), dtype=np.int8)
    for r, ss in enumerate(spawn_streams(seed, n_splits)):
        out[r] = balanced_split(strata, np.random.Generator(np.random.PCG64(ss)))
    return out


def split_counts(splits: np.ndarray, event: np.ndarray) -> pd.DataFrame:
    """NPOs at risk and closures in each half of every split.

    Returns
    -------
    pandas.DataFrame
        One row per split: ``n_sample1, n_sample2, closures_sample1, closures_sample2``
        (halves as labelled 1 and 2 in ``splits``, before ``sample_one`` is applied).
    """
    splits = np.atleast_2d(splits)
    event = np.asarray(event, dtype=bool)
    return pd.DataFrame({
        "n_sample1": (splits == 1).sum(axis=1).astype(int),
        "n_sample2": (splits == 2).sum(axis=1).astype(int),
        "closures_sample1": ((splits == 1) & event).sum(axis=1).astype(int),
        "closures_sample2": ((splits == 2) & event).sum(axis=1).astype(int),
    })


def _unusable_reason(row) -> str | None:
    """Why a split cannot give a meaningful Dev, or None.

    Dev (seed eqs. 6-8) divides by the mean hazard of sample 1 (no closure there: 0/0) and
    compares it with sample 2's curve (no closure there: a flat 0, so Dev only measures the
    size of sample 1's curve; no NPO: no curve at all). Both halves need an NPO at risk and a
    closure.
    """
    for s in (1, 2):
        if row[f"n_sample{s}"] == 0:
            return f"sample {s} has no NPO at risk"
    for s in (1, 2):
        if row[f"closures_sample{s}"] == 0:
            return f"sample {s} has no closure"
    return None


@dataclass(frozen=True)
class UsableSplits:
    """The splits a run uses, and what happened to the unusable ones.

    Attributes
    ----------
    splits : ndarray of int8, shape (n_usable, n)
        Usable splits, in split order (redrawn ones in their slot).
    index : ndarray of int
        The requested split number ``r`` of every usable split.
    attempts : ndarray of int
        Redraw attempt that gave each usable split (0 = the first draw).
    counts : pandas.DataFrame
        :func:`split_counts` of every draw made, with ``split, attempt, usable, reason``.
    n_requested, n_redrawn, n_excluded : int
    reasons : dict
        ``reason -> number of unusable draws``.
    """

    splits: np.ndarray
    index: np.ndarray
    attempts: np.ndarray
    counts: pd.DataFrame
    n_requested: int
    n_redrawn: int
    n_excluded: int
    reasons: dict = field(default_factory=dict)

    @property
    def n_usable(self) -> int:
        return int(self.splits.shape[0])

    def describe(self) -> str:
        """One plain sentence for the report and the manifest."""
        bad = ", ".join(f"{v} x {k}" for k, v in self.reasons.items()) or "none"
        return (f"{self.n_usable} of {self.n_requested} requested splits usable; unusable draws: "
                f"{bad}; {self.n_redrawn} split(s) redrawn, {self.n_excluded} excluded")


def usable_splits(strata: np.ndarray, event: np.ndarray, seed, n_splits: int, *,
                  policy: str = "redraw", max_redraws: int = 20, min_usable: int = 1,
                  source: str = "<panel>") -> UsableSplits:
    """Draw ``n_splits`` balanced splits, redrawing or excluding those Dev cannot use.

    A split is *unusable* when one of its halves has no NPO at risk or no closure
    (:func:`_unusable_reason`). With ``policy = "redraw"``, split ``r`` is redrawn from the
    streams ``(seed, r, 1), (seed, r, 2), ...`` (so it depends on the config only) up to
    ``max_redraws`` times, then excluded; with ``"exclude"`` it is excluded at once. Every
    unusable draw is counted. ``seed`` is the run's ``split`` stream (or an int).

    Raises
    ------
    InputError
        When fewer than ``min_usable`` splits remain (the message gives the counts), or when no
        split can ever be usable (fewer than two at-risk NPOs, or fewer than two closures).
    """
    if policy not in ("redraw", "exclude"):
        raise ValueError(f"policy must be 'redraw' or 'exclude', got {policy!r}")
    event = np.asarray(event, dtype=bool)
    n, n_closed = int(event.size), int(event.sum())
    if n < 2 or n_closed < 2:
        raise InputError(
            f"no split into two samples can be evaluated: {n} NPO(s) at risk with {n_closed} "
            f"closure(s), and each sample needs at least one NPO at risk and one closure "
            f"(Dev, seed eqs. 6-8, compares the two samples' hazard curves)", file=source)
    keep, index, attempts, rows = [], [], [], []
    reasons: dict = {}
    n_redrawn = n_excluded = 0
    for r in range(n_splits):
        tries = max_redraws + 1 if policy == "redraw" else 1
        for attempt in range(tries):
            s = balanced_split(strata, np.random.Generator(
                np.random.PCG64(_split_stream(seed, r, attempt))))
            row = split_counts(s[None, :], event).iloc[0].to_dict()
            why = _unusable_reason(row)
            rows.append({"split": r, "attempt": attempt, **row, "usable": why is None,
                         "reason": why or ""})
            if why is None:
                keep.append(s)
                index.append(r)
                attempts.append(attempt)
                n_redrawn += attempt > 0
                break
            reasons[why] = reasons.get(why, 0) + 1
        else:
            n_excluded += 1
    counts = pd.DataFrame(rows)
    result = UsableSplits(
        splits=np.array(keep, dtype=np.int8).reshape(len(keep), event.size),
        index=np.asarray(index, dtype=np.int64), attempts=np.asarray(attempts, dtype=np.int64),
        counts=counts, n_requested=int(n_splits), n_redrawn=int(n_redrawn),
        n_excluded=int(n_excluded), reasons=reasons)
    need = max(int(min_usable), 1)
    if result.n_usable < need:
        raise InputError(
            f"only {result.n_usable} of {n_splits} split(s) can be evaluated (at least {need} "
            f"needed, key split.min_usable): {result.describe()}; {n} NPOs at risk, "
            f"{n_closed} closures", file=source)
    return result


def balance_table(sample: np.ndarray, columns: dict[str, np.ndarray],
                  event: np.ndarray) -> pd.DataFrame:
    """Counts and shares of each level of each balancing variable in samples 1 and 2.

    Also a row per sample for the number of closures, so a reader sees the two samples face
    the same hazard, and ``max_stratum_diff`` checked by the tests (|n1 - n2| per level).
    """
    rows = []
    n1 = int(np.count_nonzero(sample == 1))
    n2 = int(np.count_nonzero(sample == 2))
    for var, values in list(columns.items()) + [("closed", np.where(event, "yes", "no"))]:
        values = np.asarray(values).astype(str)
        for level in sorted(set(values.tolist())):
            m = values == level
            c1 = int(np.count_nonzero(m & (sample == 1)))
            c2 = int(np.count_nonzero(m & (sample == 2)))
            rows.append({"variable": var, "level": level, "n_sample1": c1, "n_sample2": c2,
                         "share_sample1": c1 / n1 if n1 else np.nan,
                         "share_sample2": c2 / n2 if n2 else np.nan,
                         "abs_diff": abs(c1 - c2)})
    rows.append({"variable": "total", "level": "all", "n_sample1": n1, "n_sample2": n2,
                 "share_sample1": 1.0, "share_sample2": 1.0, "abs_diff": abs(n1 - n2)})
    return pd.DataFrame(rows)


def max_stratum_gap(strata: np.ndarray, sample: np.ndarray) -> int:
    """The largest difference, over strata, between the counts of samples 1 and 2 (at most
    one for a balanced split)."""
    n1 = np.bincount(strata, weights=(sample == 1).astype(float))
    n2 = np.bincount(strata, weights=(sample == 2).astype(float))
    return int(np.max(np.abs(n1 - n2)))
