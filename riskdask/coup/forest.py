"""Sub-forests of the seed's random-forest regressor, reduced exactly to one forest.

The seed fits ``RandomForestRegressor(n_estimators=10000)`` on the REIGN training split,
reads the out-of-bag estimate, the test-set probabilities and the impurity importances. Here
the trees are split into sub-forests (one task each, seeded from the chunk plan). A task never
returns its trees -- 10,000 pickled trees are close to a gigabyte -- only aggregates:

* the sum over its trees of the test-set predictions,
* per training row, the sum of out-of-bag predictions and the number of trees for which the
  row is out of bag (sklearn's own bootstrap indices, ``estimators_samples_``),
* the sum of per-tree normalised impurity importances over trees with more than one node,
  and how many such trees there were;

and, for permutation importance, per permuted copy of a test subsample, the sum of the trees'
predictions (:func:`permutation_sums`; the copies are planned over features x repeats by
:func:`permutation_plan` and handled in blocks, one task per sub-forest and block).

Adding aggregates and dividing by tree counts at the end gives exactly what a single forest
holding all the trees gives: ``RandomForestRegressor.predict`` is the mean of the trees'
predictions; ``oob_prediction_`` is the mean over trees where the row is out of bag; and
``feature_importances_`` is the mean of per-tree normalised importances over trees with more
than one node, renormalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from ..engine import spawn_streams

if TYPE_CHECKING:  # pandas only for the annotation: worker tasks import this module
    import pandas as pd

__all__ = ["SubForestAggregate", "ForestResult", "tree_checkpoints", "convergence_table",
           "chunk_random_state", "fit_subforest", "subforest_aggregate", "combine_aggregates",
           "finalize_aggregate",
           "permutation_plan", "permutation_blocks", "permuted_matrix", "permutation_sums",
           "as_float32"]


def as_float32(X) -> np.ndarray:
    """The C-contiguous float32 matrix sklearn's trees work on (converted once, not per tree)."""
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32))


def chunk_random_state(seed: np.random.SeedSequence) -> int:
    """The ``random_state`` of a sub-forest: a 32-bit integer drawn from its chunk's stream."""
    return int(seed.generate_state(1, dtype=np.uint32)[0])


def fit_subforest(X_train: np.ndarray, y_train: np.ndarray, n_trees: int, random_state: int,
                  params: Mapping[str, Any] | None = None) -> RandomForestRegressor:
    """Fit one sub-forest of ``n_trees`` trees (single-threaded: one task, one core).

    Parameters
    ----------
    X_train : ndarray (n, d), float32
    y_train : ndarray (n,)
    n_trees : int
        Trees in this chunk of the tree plan.
    random_state : int
        From :func:`chunk_random_state` of the chunk's seed.
    params : mapping, optional
        Other ``RandomForestRegressor`` parameters (seed: the defaults). ``bootstrap`` must be
        true: out-of-bag estimates need bootstrap samples.
    """
    params = dict(params or {})
    for key in ("n_estimators", "random_state", "n_jobs", "oob_score", "warm_start"):
        params.pop(key, None)
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=random_state, n_jobs=1,
                                   **params)
    return forest.fit(X_train, y_train)


@dataclass
class SubForestAggregate:
    """What a sub-forest task returns: sums and counts only, no trees.

    The ``level_*`` arrays (one row per checkpoint of :func:`tree_checkpoints`) hold the same
    sums restricted to the sub-forests that lie wholly inside the first ``checkpoint`` trees of
    the plan: reduced, level ``l`` is the forest of the plan's first ``level_trees[l]`` trees
    (tree-count convergence without refitting anything).
    """

    n_trees: int
    test_sum: np.ndarray          # (n_test,) float64, sum of tree predictions
    oob_sum: np.ndarray           # (n_train,) float64, sum of OOB tree predictions
    oob_count: np.ndarray         # (n_train,) int64, trees for which the row is OOB
    importance_sum: np.ndarray    # (n_features,) float64, sum of per-tree normalised importances
    n_importance_trees: int       # trees with more than one node
    level_trees: np.ndarray | None = None       # (n_levels,) int64
    level_test_sum: np.ndarray | None = None    # (n_levels, n_test)
    level_oob_sum: np.ndarray | None = None     # (n_levels, n_train)
    level_oob_count: np.ndarray | None = None   # (n_levels, n_train) int32


def tree_checkpoints(n_trees: int, trees_per_task: int,
                     wanted: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000, 5000, 10_000,
                                                20_000, 50_000, 100_000)) -> list[int]:
    """Tree counts at which the convergence table looks at the forest.

    The ``wanted`` counts below ``n_trees``, rounded down to whole sub-forests (a level holds
    whole tasks only), and ``n_trees`` itself; duplicates and zeros removed.
    """
    levels = {min(n_trees, (w // trees_per_task) * trees_per_task) for w in wanted
              if w < n_trees}
    return sorted(c for c in levels | {n_trees} if c > 0)


def subforest_aggregate(forest: RandomForestRegressor, X_train: np.ndarray,
                        X_test: np.ndarray, *, stop: int | None = None,
                        checkpoints: tuple[int, ...] | list[int] = ()) -> SubForestAggregate:
    """Aggregates of a fitted sub-forest (see module docstring).

    ``X_train`` and ``X_test`` must be float32 C-contiguous (:func:`as_float32`), as sklearn's
    forest passes them to its trees. With ``checkpoints``, ``stop`` is the end of the
    sub-forest's chunk in the tree plan: the sums also go to every level ``c >= stop``.
    """
    n_train, n_features = X_train.shape
    test_sum = np.zeros(X_test.shape[0], dtype=np.float64)
    oob_sum = np.zeros(n_train, dtype=np.float64)
    oob_count = np.zeros(n_train, dtype=np.int64)
    importance_sum = np.zeros(n_features, dtype=np.float64)
    n_imp = 0
    # estimators_samples_ regenerates each tree's bootstrap draw from its random_state exactly
    # as fit() drew it, so "out of bag" means here what it means in sklearn's oob_prediction_.
    for tree, in_bag in zip(forest.estimators_, forest.estimators_samples_):
        test_sum += tree.predict(X_test, check_input=False)
        unsampled = np.flatnonzero(np.bincount(in_bag, minlength=n_train) == 0)
        if unsampled.size:
            oob_sum[unsampled] += tree.predict(X_train[unsampled], check_input=False)
            oob_count[unsampled] += 1
        if tree.tree_.node_count > 1:
            importance_sum += tree.feature_importances_
            n_imp += 1
    out = SubForestAggregate(n_trees=len(forest.estimators_), test_sum=test_sum,
                             oob_sum=oob_sum, oob_count=oob_count,
                             importance_sum=importance_sum, n_importance_trees=n_imp)
    if checkpoints:
        inside = (np.asarray(checkpoints) >= stop)[:, None]
        out.level_trees = np.where(inside[:, 0], out.n_trees, 0).astype(np.int64)
        out.level_test_sum = np.where(inside, test_sum, 0.0)
        out.level_oob_sum = np.where(inside, oob_sum, 0.0)
        out.level_oob_count = np.where(inside, oob_count, 0).astype(np.int32)
    return out


def combine_aggregates(a: SubForestAggregate, b: SubForestAggregate) -> SubForestAggregate:
    """Add two sub-forests' aggregates (the engine applies this in a tree fixed by chunk index)."""
    return SubForestAggregate(
        n_trees=a.n_trees + b.n_trees,
        test_sum=a.test_sum + b.test_sum,
        oob_sum=a.oob_sum + b.oob_sum,
        oob_count=a.oob_count + b.oob_count,
        importance_sum=a.importance_sum + b.importance_sum,
        n_importance_trees=a.n_importance_trees + b.n_importance_trees,
        **({} if a.level_trees is None else {
            "level_trees": a.level_trees + b.level_trees,
            "level_test_sum": a.level_test_sum + b.level_test_sum,
            "level_oob_sum": a.level_oob_sum + b.level_oob_sum,
            "level_oob_count": a.level_oob_count + b.level_oob_count}),
    )


@dataclass
class ForestResult:
    """The reduced forest: what one ``RandomForestRegressor`` of all the trees would give."""

    n_trees: int
    test_prediction: np.ndarray     # == forest.predict(X_test)
    oob_prediction: np.ndarray      # == forest.oob_prediction_ where oob_count > 0, else NaN
    oob_count: np.ndarray
    feature_importances: np.ndarray  # == forest.feature_importances_
    aggregate: SubForestAggregate | None = None  # the reduced sums (convergence levels)


def finalize_aggregate(agg: SubForestAggregate) -> ForestResult:
    """Divide the sums by their tree counts.

    Rows that no tree left out of bag get NaN (sklearn warns and reports 0 for them; the job
    counts them and leaves them out of the OOB score rather than scoring a made-up 0).
    """
    oob = np.full(agg.oob_sum.shape, np.nan)
    has = agg.oob_count > 0
    oob[has] = agg.oob_sum[has] / agg.oob_count[has]
    if agg.n_importance_trees:
        mean_imp = agg.importance_sum / agg.n_importance_trees
        importances = mean_imp / mean_imp.sum()
    else:
        importances = np.zeros_like(agg.importance_sum)
    return ForestResult(n_trees=agg.n_trees, test_prediction=agg.test_sum / agg.n_trees,
                        oob_prediction=oob, oob_count=agg.oob_count,
                        feature_importances=importances)


def convergence_table(agg: SubForestAggregate, y_train: np.ndarray, y_test: np.ndarray
                      ) -> "pd.DataFrame":
    """Scores of the forest of the plan's first ``level_trees[l]`` trees, per level.

    OOB R² (sklearn's ``oob_score_``), OOB and test ROC-AUC, PR-AUC and Brier, each on the
    level's own out-of-bag or test predictions (sums divided by that level's tree counts); the
    last level is the whole forest, equal to the job's headline scores.
    """
    # pandas (through .evaluate) only here: worker tasks import this module
    import pandas as pd
    from sklearn.metrics import r2_score

    from .evaluate import binary_scores

    rows = []
    for lvl, n in enumerate(agg.level_trees):
        test_p = agg.level_test_sum[lvl] / n
        cnt = agg.level_oob_count[lvl]
        has = cnt > 0
        oob_p = agg.level_oob_sum[lvl][has] / cnt[has]
        oob = binary_scores(y_train[has], oob_p)
        test = binary_scores(y_test, test_p)
        rows.append({"n_trees": int(n),
                     "oob_r2": float(r2_score(y_train[has], oob_p)) if has.sum() > 1 else None,
                     "oob_rows_without_trees": int((~has).sum()),
                     **{f"oob_{k}": v for k, v in oob.items()},
                     **{f"test_{k}": v for k, v in test.items()}})
    return pd.DataFrame(rows)


def permutation_plan(n_features: int, n_repeats: int, seed
                     ) -> list[tuple[int, int, int]]:
    """The permuted copies for permutation importance: ``(feature, repeat, random seed)``.

    Planned over features x repeats; each pair gets its own stream, a child of ``seed``
    (the run's ``permutation`` stream, ``ctx.streams.seed("permutation")``), so the
    permutations depend on the config only and share no stream with the forest.
    """
    seeds = spawn_streams(seed, n_features * n_repeats)
    return [(f, r, chunk_random_state(seeds[f * n_repeats + r]))
            for f in range(n_features) for r in range(n_repeats)]


def permutation_blocks(plan: list[tuple[int, int, int]], copies_per_block: int
                       ) -> list[list[tuple[int, int, int]]]:
    """Consecutive blocks of the permutation plan: one task per sub-forest and block."""
    return [plan[i:i + copies_per_block] for i in range(0, len(plan), copies_per_block)]


def permuted_matrix(X_rows: np.ndarray, plan: list[tuple[int, int, int]]) -> np.ndarray:
    """One copy of ``X_rows`` per plan entry with that entry's feature column shuffled.

    Returns float32 of shape ``(len(plan), n_rows, d)``.
    """
    n = X_rows.shape[0]
    out = np.empty((len(plan), n, X_rows.shape[1]), dtype=np.float32)
    for i, (feature, _repeat, rs) in enumerate(plan):
        block = out[i]
        block[:] = X_rows
        block[:, feature] = X_rows[np.random.default_rng(rs).permutation(n), feature]
    return out


def permutation_sums(forest: RandomForestRegressor, X_rows: np.ndarray,
                     block: list[tuple[int, int, int]]) -> np.ndarray:
    """Sum over the sub-forest's trees of the predictions on each permuted copy in ``block``.

    Returns float64 of shape ``(len(block), n_rows)``. Summed over sub-forests and divided by
    the number of trees, row ``i`` is what the whole forest predicts on copy ``block[i]`` --
    the permuted-data prediction of permutation importance (Breiman 2001; as in
    ``sklearn.inspection.permutation_importance``).
    """
    n_rows, n_features = X_rows.shape
    X_perm = permuted_matrix(X_rows, block).reshape(-1, n_features)
    out = np.zeros(X_perm.shape[0], dtype=np.float64)
    for tree in forest.estimators_:
        out += tree.predict(X_perm, check_input=False)
    return out.reshape(len(block), n_rows)
