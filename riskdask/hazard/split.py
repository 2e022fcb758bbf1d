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
splits the run makes or how many workers it has.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["age_band", "stratum_codes", "balanced_split", "balanced_splits",
           "balance_table"]


def age_band(age: np.ndarray, edges) -> np.ndarray:
    """Label ages with the bands ``[e_0, e_1), [e_1, e_2), ..., [e_last, inf)``.

    Ages below the first edge fall in the first band.
    """
    edges = list(edges)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    idx = np.clip(np.searchsorted(np.asarray(edges), np.asarray(age), side="right") - 1, 0, len(edges) - 1)
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


def balance_table(sample: np.ndarray, columns: dict[str, np.ndarray], event: np.ndarray) -> pd.DataFrame:
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
