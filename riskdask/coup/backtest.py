"""Rolling-origin pooled backtest: expanding window, one out-of-sample prediction per row.

For each test year ``Y`` of a range (e.g. 1980-2019) a model is trained on every row whose
target was known before ``Y`` began and predicts the rows of ``Y`` (Tashman 2000,
"Out-of-sample tests of forecasting accuracy", *Int. J. Forecasting* 16: rolling origin,
expanding window). The years' predictions are pooled into one table, so ROC-AUC, PR-AUC,
Brier and the 1,000-threshold sweep are computed on all the attempts of the range instead of
the 0-5 a single year holds; per-year scores stay as a table with their attempt counts.

"Known before ``Y``": a row of month ``m`` with lead ``k`` (target: an attempt in months
``m+1 .. m+k``) has its target settled at month ``m + k``, so it may train a model for ``Y``
only when ``m + k < 12 Y`` (month indices ``year * 12 + month - 1``). With ``k = 0`` that is
"years < Y". The same rule with the latest month as the cut-off gives the temporal model that
ranks the league table (a :func:`month_fold`).

All folds and models form **one plan** of tasks: a random-forest fold is split into
sub-forests (each task fits ``trees_per_task`` trees with its own stream of the chunk plan and
returns the sum of its trees' predictions), the gradient-boosting and logistic models are one
task per fold. Every task returns a :class:`PooledSums` over its fold's pooled rows, and the
engine adds them in its fixed tree, so the pooled predictions are the same on any number of
workers; tasks of different years run concurrently, so no year waits for the previous one's
tail. Each task also records the last month it trained on for every row it predicted
(``train_last_month``, reduced by maximum): the evidence that no model saw its test year.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..engine import Chunk, map_reduce
from ..streams import keyed_seed
from .evaluate import binary_scores
from .forest import as_float32, chunk_random_state, fit_subforest

__all__ = ["MODELS", "MODEL_LABELS", "Fold", "BacktestTask", "PooledSums", "training_rows",
           "year_folds", "month_fold", "pooled_layout", "backtest_tasks", "task_seed",
           "task_chunks",
           "combine_pooled", "empty_pooled", "backtest_kernel", "fit_predict", "pooled_table",
           "per_year_table", "run_backtest", "comparison_table"]

#: Models the backtest can train per fold (the seed's is ``forest``); ``climatology`` is the
#: no-skill reference every fold carries: the attempt rate of the fold's training rows.
MODELS = ("forest", "hgb", "logistic", "climatology")
MODEL_LABELS = {"forest": "RandomForestRegressor (seed)",
                "hgb": "HistGradientBoostingClassifier",
                "logistic": "LogisticRegression (standardised features)",
                "climatology": "climatology (training rows' attempt rate; no skill)"}


@dataclass(frozen=True)
class Fold:
    """One origin of the backtest: train on rows known before ``cutoff``, predict ``test``.

    Attributes
    ----------
    label : str
        ``"1995"`` for a test year, ``"2019-03"`` for a month.
    kind : str
        ``"year"`` (pooled into the backtest) or ``"league"`` (the league table's month).
    year : int
        Test year (the month's year for a league fold).
    cutoff : int
        First month index not available for training (``12 * year`` for a year fold).
    test : ndarray of int64
        Positions of the rows the fold predicts.
    models : tuple of str
        Models trained on this fold.
    n_trees : int or None
        Forest trees of this fold (None: the plan's ``n_trees``).
    """

    label: str
    kind: str
    year: int
    cutoff: int
    test: np.ndarray
    models: tuple[str, ...] = ("forest",)
    n_trees: int | None = None


def training_rows(month_idx: np.ndarray, cutoff: int, lead_months: int) -> np.ndarray:
    """Rows whose target is settled before month ``cutoff``: ``m + lead_months < cutoff``."""
    return np.flatnonzero(np.asarray(month_idx) + lead_months < cutoff)


def year_folds(month_idx: np.ndarray, test_years: Sequence[int],
               models: Sequence[str] = ("forest",)) -> list[Fold]:
    """One fold per test year: cut-off January of ``Y``, test rows all months of ``Y``."""
    years = np.asarray(month_idx) // 12
    return [Fold(label=str(y), kind="year", year=int(y), cutoff=12 * int(y),
                 test=np.flatnonzero(years == y), models=tuple(models)) for y in test_years]


def month_fold(month_idx: np.ndarray, month: int, rows: np.ndarray | None = None,
               models: Sequence[str] = ("forest",), n_trees: int | None = None) -> Fold:
    """The league table's fold: train before ``month``, predict ``rows`` (default: its rows)."""
    test = np.flatnonzero(np.asarray(month_idx) == month) if rows is None else np.asarray(rows)
    return Fold(label=f"{month // 12}-{month % 12 + 1:02d}", kind="league", year=month // 12,
                cutoff=int(month), test=np.asarray(test, dtype=np.int64), models=tuple(models),
                n_trees=n_trees)


def pooled_layout(folds: Sequence[Fold]) -> tuple[np.ndarray, np.ndarray]:
    """All folds' test rows concatenated, and each fold's offset into them (``n_folds + 1``)."""
    sizes = [len(f.test) for f in folds]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.concatenate([f.test for f in folds]).astype(np.int64) if folds else np.array([])
    return rows, offsets


@dataclass(frozen=True)
class BacktestTask:
    """One task of the plan: ``n_trees`` trees of the forest, or one fit of another model."""

    model: str
    fold: int
    n_trees: int = 1
    part: int = 0         # sub-forest number inside the fold (0 for other models)


def backtest_tasks(folds: Sequence[Fold], n_trees: int, trees_per_task: int
                   ) -> list[BacktestTask]:
    """The plan's tasks, latest (largest) training sets first so the big fits start early.

    The list depends on the folds and tree counts only; each task's stream is keyed by its
    model, fold and sub-forest (:func:`task_seed`), not by its place in the list.
    """
    tasks = []
    for f in sorted(range(len(folds)), key=lambda i: -folds[i].cutoff):
        for model in folds[f].models:
            if model == "forest":
                trees = folds[f].n_trees or n_trees
                full, rest = divmod(trees, trees_per_task)
                tasks += [BacktestTask("forest", f, trees_per_task, j) for j in range(full)]
                if rest:
                    tasks.append(BacktestTask("forest", f, rest, full))
            else:
                tasks.append(BacktestTask(model, f, 1))
    return tasks


def task_chunks(tasks: Sequence[BacktestTask], folds: Sequence[Fold], seed
                ) -> list[Chunk]:
    """One chunk per task, its stream keyed by the task (:func:`task_seed`); ``seed`` an int
    or the ``backtest`` purpose's SeedSequence."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [Chunk(i, i, i + 1, task_seed(root, t.model, folds[t.fold].label, t.part))
            for i, t in enumerate(tasks)]


def task_seed(root: np.random.SeedSequence, model: str, fold_label: str, part: int
              ) -> np.random.SeedSequence:
    """The stream of one task: ``root``'s child keyed by (model, fold, sub-forest)
    (:func:`riskdask.streams.keyed_seed`): a model's numbers depend on its own name, folds
    and trees only, so adding or removing another model (or reordering
    ``backtest.models``) changes none of them.
    """
    return keyed_seed(root, model, fold_label, int(part))


@dataclass
class PooledSums:
    """What a backtest task returns, over a span of the pooled rows (added by the engine).

    ``sums[m, j]``: sum of model ``m``'s predictions on pooled row ``start + j`` (per tree for
    the forest); ``fits[m, f]``: trees (forest) or fits of model ``m`` on fold ``f``;
    ``train_last_month[m, j]``: the latest month index of a training row of the model that
    predicted row ``start + j`` (-1: none yet); ``n_train[m, f]``: training rows of fold ``f``.
    A task covers one fold, so its partial spans that fold's rows only (a partial over all
    pooled rows would be mostly zeros, shipped and checkpointed by every task); rows outside
    the span are 0 / -1. :meth:`dense` gives the arrays over all ``n_pooled`` rows.
    """

    sums: np.ndarray
    fits: np.ndarray
    train_last_month: np.ndarray
    n_train: np.ndarray
    start: int = 0
    n_pooled: int | None = None

    @property
    def stop(self) -> int:
        return self.start + self.sums.shape[1]

    def dense(self) -> "PooledSums":
        """The same sums over all pooled rows (``start = 0``)."""
        n_pooled = self.stop if self.n_pooled is None else self.n_pooled
        if self.start == 0 and self.sums.shape[1] == n_pooled:
            return self
        out = empty_pooled(self.sums.shape[0], n_pooled, self.fits.shape[1])
        out.sums[:, self.start:self.stop] = self.sums
        out.train_last_month[:, self.start:self.stop] = self.train_last_month
        out.fits[...] = self.fits
        out.n_train[...] = self.n_train
        return out


def empty_pooled(n_models: int, n_pooled: int, n_folds: int, start: int = 0,
                 stop: int | None = None) -> PooledSums:
    """Zero sums (and -1 training months) over pooled rows ``[start, stop)``."""
    width = n_pooled - start if stop is None else stop - start
    return PooledSums(np.zeros((n_models, width)), np.zeros((n_models, n_folds), np.int64),
                      np.full((n_models, width), -1, np.int64),
                      np.zeros((n_models, n_folds), np.int64), start=start, n_pooled=n_pooled)


def combine_pooled(a: PooledSums, b: PooledSums) -> PooledSums:
    """Add sums and fit counts; the last training month and training size by maximum.

    Over the union of the two spans; a row outside a span adds 0 (``x + 0.0`` is ``x``) and
    takes the maximum with -1, so the result has the bits of the same sums over all rows.
    """
    spans = [p for p in (a, b) if p.sums.shape[1]]
    start = min((p.start for p in spans), default=a.start)
    stop = max((p.stop for p in spans), default=a.start)
    out = empty_pooled(a.sums.shape[0], a.n_pooled if a.n_pooled is not None else stop,
                       a.fits.shape[1], start, stop)
    for p in spans:
        cols = slice(p.start - start, p.stop - start)
        out.sums[:, cols] += p.sums
        np.maximum(out.train_last_month[:, cols], p.train_last_month,
                   out=out.train_last_month[:, cols])
    out.fits[...] = a.fits + b.fits
    out.n_train[...] = np.maximum(a.n_train, b.n_train)
    return out


def fit_predict(model: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                n_trees: int, random_state: int, params: Mapping[str, Any] | None = None
                ) -> np.ndarray:
    """Fit one model on the fold's training rows; the sum of its predictions on ``X_test``.

    ``forest``: ``n_trees`` trees of the seed's ``RandomForestRegressor`` (``params``), the
    sum over trees of their predictions (the forest's mean times ``n_trees``). ``hgb``:
    ``HistGradientBoostingClassifier(random_state=...)`` with sklearn's defaults, P(attempt).
    ``logistic``: ``LogisticRegression`` (L2, C = 1, lbfgs) on standardised features,
    P(attempt). ``climatology``: the training rows' attempt rate for every row (the no-skill
    reference). Single-threaded (the task is the unit of parallelism; thread counts also
    change floating-point sums).
    """
    if model == "climatology":
        return np.full(X_test.shape[0], float(np.mean(y_train)))
    if model == "forest":
        # n_jobs=1 trees use neither BLAS nor OpenMP: no thread limit needed (threadpoolctl
        # scans the loaded libraries on every call, ~5% of a 3-tree task)
        forest = fit_subforest(X_train, y_train, n_trees, random_state, params)
        out = np.zeros(X_test.shape[0])
        for tree in forest.estimators_:
            out += tree.predict(X_test, check_input=False)
        return out
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if model == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            clf = HistGradientBoostingClassifier(random_state=random_state)
        elif model == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        else:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
        clf.fit(X_train, y_train.astype(np.int64))
        return clf.predict_proba(X_test)[:, 1].astype(np.float64)


def backtest_kernel(chunk, shared: Mapping[str, Any], tasks: Sequence[BacktestTask],
                    models: Sequence[str], params: Mapping[str, Any] | None = None
                    ) -> PooledSums:
    """Run task ``tasks[chunk.index]``: train on its fold's past, predict the fold's rows.

    ``shared`` (scattered once): ``X`` (float32, all rows), ``y``, ``month_idx``,
    ``lead_months``, ``pooled_rows``, ``offsets``, ``cutoffs`` (per fold).
    """
    task = tasks[chunk.index]
    m = list(models).index(task.model)
    offsets = shared["offsets"]
    n_folds = len(offsets) - 1
    lo, hi = int(offsets[task.fold]), int(offsets[task.fold + 1])
    out = empty_pooled(len(models), int(offsets[-1]), n_folds, lo, hi)
    train = training_rows(shared["month_idx"], int(shared["cutoffs"][task.fold]),
                          int(shared["lead_months"]))
    test = shared["pooled_rows"][lo:hi]
    X = shared["X"]
    out.sums[m, :] = fit_predict(task.model, X[train], shared["y"][train], X[test],
                                     task.n_trees, chunk_random_state(chunk.seed), params)
    out.fits[m, task.fold] = task.n_trees
    out.train_last_month[m, :] = int(shared["month_idx"][train].max()) if len(train) else -1
    out.n_train[m, task.fold] = len(train)
    return out


def pooled_table(panel: pd.DataFrame, y: np.ndarray, folds: Sequence[Fold],
                 models: Sequence[str], sums: PooledSums) -> pd.DataFrame:
    """The pooled out-of-sample predictions, one row per (model, fold, predicted row).

    ``probability`` is the sum divided by the fold's tree (or fit) count: for the forest
    exactly ``RandomForestRegressor.predict`` of one forest made of the fold's trees.
    """
    rows, offsets = pooled_layout(folds)
    sums = sums.dense()
    fold_of = np.repeat(np.arange(len(folds)), np.diff(offsets))
    frames = []
    for m, model in enumerate(models):
        fits = sums.fits[m, fold_of]
        has = fits > 0
        if not has.any():
            continue
        last = sums.train_last_month[m]
        frames.append(pd.DataFrame({
            "model": model,
            "fold": np.array([folds[f].label for f in fold_of])[has],
            "fold_kind": np.array([folds[f].kind for f in fold_of])[has],
            "test_year": np.array([folds[f].year for f in fold_of], dtype=np.int64)[has],
            "row": rows[has],
            "ccode": panel["ccode"].to_numpy()[rows][has],
            "country": panel["country"].to_numpy()[rows][has],
            "year": panel["year"].to_numpy()[rows][has],
            "month": panel["month"].to_numpy()[rows][has],
            "target": np.asarray(y)[rows][has],
            "probability": sums.sums[m, has] / fits[has],
            "fits": fits[has],
            "n_train": sums.n_train[m, fold_of][has],
            "train_last_year": (last // 12)[has],
            "train_last_month": (last % 12 + 1)[has],
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def per_year_table(pooled: pd.DataFrame, threshold: float, min_attempts: int = 1
                   ) -> pd.DataFrame:
    """Per test year (and model): rows, attempts, scores, and the counts at ``threshold``.

    ROC-AUC and PR-AUC only for a year with at least ``min_attempts`` attempts (one or two
    attempts make an AUC of 0, 1 or a coin flip): below, they are left empty and ``note``
    says why -- never a made-up 0.5.
    """
    out = []
    for (model, year), g in pooled.groupby(["model", "test_year"], sort=True):
        y, p = g["target"].to_numpy(), g["probability"].to_numpy()
        pos = p > threshold
        attempts = int(np.sum(y == 1))
        s = binary_scores(y, p)
        note = ""
        if attempts < min_attempts:
            s["roc_auc"] = s["pr_auc"] = None
            note = ("no attempt" if attempts == 0 else
                    f"{attempts} attempt(s) < {min_attempts}: no AUC")
        out.append({"model": model, "test_year": int(year), "n_test": len(g),
                    "attempts": attempts, "n_train": int(g["n_train"].iloc[0]),
                    "train_last_year": int(g["train_last_year"].max()),
                    **s, "threshold": threshold,
                    "TP": int(np.sum(pos & (y == 1))), "FP": int(np.sum(pos & (y != 1))),
                    "FN": int(np.sum(~pos & (y == 1))), "note": note})
    return pd.DataFrame(out)


def run_backtest(engine, X: np.ndarray, y: np.ndarray, month_idx: np.ndarray,
                 folds: Sequence[Fold], *, lead_months: int, n_trees: int,
                 trees_per_task: int, seed: int, params: Mapping[str, Any] | None = None,
                 label: str = "backtest") -> tuple[list[str], PooledSums]:
    """All folds and models as one plan on ``engine`` (:func:`riskdask.engine.map_reduce`).

    ``engine``: the run's :class:`riskdask.engine.Engine` (outside a run, ``Engine(client)``).
    The inputs are scattered once; task ``i`` is :func:`backtest_tasks` entry ``i`` on the
    stream :func:`task_seed` keys by its model, fold and sub-forest (``seed``: the root);
    the partials are added in the engine's fixed tree, so the result is bit-identical on
    any number of workers. Returns the models in the order of ``PooledSums``' rows and the
    reduced sums.
    """
    models = [m for m in MODELS if any(m in f.models for f in folds)]
    tasks = backtest_tasks(folds, n_trees, trees_per_task)

    rows, offsets = pooled_layout(folds)
    shared = {"X": as_float32(X), "y": np.asarray(y, dtype=np.float64),
              "month_idx": np.asarray(month_idx, dtype=np.int64), "lead_months": lead_months,
              "pooled_rows": rows, "offsets": offsets,
              "cutoffs": np.array([f.cutoff for f in folds], dtype=np.int64)}
    chunks = task_chunks(tasks, folds, seed)
    sums = map_reduce(backtest_kernel, chunks, combine_pooled, engine=engine, shared=shared,
                      kernel_kwargs={"tasks": tasks, "models": models,
                                     "params": dict(params or {})}, label=label,
                      finalize=PooledSums.dense)
    return models, sums


def comparison_table(pooled: pd.DataFrame, sweeps: Mapping[str, pd.DataFrame],
                     intervals: Mapping[str, Mapping[str, Any]] | None = None,
                     predictions: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per model on the same pooled backtest, beside the no-skill reference.

    ROC-AUC, PR-AUC (beside ``pr_auc_base``, the pooled attempt share: a forecast without
    skill), Brier and log loss, with their skill against ``climatology`` (each fold's
    training attempt rate): ``brier_skill = 1 - BS / BS_clim``, ``log_loss_skill``, and
    ``beats_base_rate`` (Brier skill > 0). ``predictions`` may add rows (the isotonic
    recalibrations, ``"forest (isotonic)"``). ``sweeps[model]``: the best F1 is its maximum
    on the pooled predictions themselves -- optimistic for every model alike (the
    out-of-sample F1 is :func:`riskdask.coup.decisions.rolling_threshold`).
    ``intervals[model]``: 95% paired country-bootstrap intervals.
    """
    from .evaluate import skill

    preds = dict(predictions or {})
    for model, g in pooled.groupby("model", sort=False):
        preds.setdefault(model, g["probability"].to_numpy())
    first = pooled[pooled["model"] == pooled["model"].iloc[0]]
    y = first["target"].to_numpy()
    ref = binary_scores(y, preds["climatology"]) if "climatology" in preds else None
    rows = []
    for model, p in preds.items():
        s = binary_scores(y, p)
        iv = (intervals or {}).get(model, {})
        bss = skill(s["brier"], ref["brier"]) if ref else None
        lls = skill(s["log_loss"], ref["log_loss"]) if ref else None
        sw = sweeps.get(model)
        best = int(np.argmax(sw["f1"].to_numpy())) if sw is not None else None
        base = model.split(" (")[0]
        rows.append({"model": model,
                     "label": MODEL_LABELS.get(base, base) + (
                         " + isotonic recalibration on earlier years" if base != model
                         else ""),
                     "n_rows": len(y), "attempts": int(np.sum(y == 1)), **s,
                     "pr_auc_base": float(np.mean(y)), "brier_skill": bss,
                     "log_loss_skill": lls,
                     "beats_base_rate": None if bss is None else bool(bss > 0),
                     **{f"{k}_low95": (iv.get(k) or (None, None))[0]
                        for k in (*s, "brier_skill", "log_loss_skill")},
                     **{f"{k}_high95": (iv.get(k) or (None, None))[1]
                        for k in (*s, "brier_skill", "log_loss_skill")},
                     "best_f1": None if best is None else float(sw["f1"].iloc[best]),
                     "best_f1_threshold": (None if best is None
                                           else float(sw["threshold"].iloc[best]))})
    return pd.DataFrame(rows)
