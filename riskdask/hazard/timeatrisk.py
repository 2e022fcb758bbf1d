"""Generalized time-at-risk from grant histories (seed Appendix A, eqs. 9-14; eq. 5).

Conventions (stated once, used everywhere in ``riskdask.hazard``)
-----------------------------------------------------------------
A grant history is one row of an integer matrix over the calendar years of the study period:
``1`` a ministerial support grant was received that year, ``0`` none, ``-1`` the NPO was not
alive that year (before it was founded, after it closed).

* **First break** ``y_b``: the first no-grant year that follows a grant year. No-grant years
  *before* an NPO's first grant are not a break in obtaining grants (there was nothing to lose)
  and are ignored.
* **End of the window** ``y_e``: the closure year if the NPO closed, else the last year of the
  period.
* **N0 is inclusive**: ``N0 = y_e - y_b + 1``, the number of calendar years from the first break
  year *to and including* the end year. An NPO that closes in its first break year has
  ``N0 = 1``; one whose first break is the last year of the period has ``N0 = 1``. (An inclusive
  count keeps every at-risk time strictly positive, so no failure sits at ``t = 0``.)
* A **no-grant spell** is a maximal run of consecutive no-grant years inside ``[y_b, y_e]``; a
  spell that is still running at ``y_e`` is counted with the years it has had so far.
  ``N_j`` is the number of spells of at least ``j`` years (``N1`` = the number of spells),
  ``X`` the total number of no-grant years in the window (``X = sum_j N_j``).
* ``Z = sum_j (j - 1) N_j = sum over spells of L(L-1)/2`` is the extra weight of consecutive
  years, so that the k0-parameterised ``Y`` (eq. 12) is ``Y(k0) = X + k0 * Z``.

Time-at-risk definitions (all linear in the features ``N0, N1, X, Z``):

========  ===========================================  ==============================
name      formula                                      seed
========  ===========================================  ==============================
``T0``    ``N0``                                       Appendix A, eq. 9
``T1``    ``k1*N0 + k2*Y(k0)``                         Appendix A, eqs. 10 and 12
``T2``    ``Y(k0)``                                    Appendix A, eq. 13
``T3``    ``X``                                        Appendix A, eq. 14
``T``     ``k1*N0 + k2*N1``                            Section 2.4, eq. 5 (the worked
                                                       optimisation)
========  ===========================================  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFINITIONS", "SCALABLE_DEFINITIONS", "USES", "FEATURES", "SpellFeatures",
           "spell_features", "y_weighted", "time_at_risk", "coefficients", "extend_one_year",
           "support_start"]

#: The feature columns every time-at-risk definition is a linear combination of.
FEATURES = ("N0", "N1", "X", "Z")
#: All supported definitions.
DEFINITIONS = ("T", "T0", "T1", "T2", "T3")
#: Definitions in which (k1, k2) scale T, so Dev(c*k1, c*k2) = Dev(k1, k2) in relative mode.
SCALABLE_DEFINITIONS = ("T", "T1")
#: Which coefficients each definition uses (seed eqs. 5, 9-14).
USES = {"T": ("k1", "k2"), "T0": (), "T1": ("k1", "k2", "k0"), "T2": ("k0",), "T3": ()}

NOT_ALIVE = -1


@dataclass(frozen=True)
class SpellFeatures:
    """Per-NPO features of the at-risk window (seed Appendix A).

    Attributes
    ----------
    at_risk : ndarray of bool
        Had a grant and then a break inside the period (a first break year exists).
    break_index, end_index : ndarray of int
        Column of ``y_b`` and ``y_e`` (``-1`` where not at risk).
    N0, X, Z : ndarray of int
        See the module docstring (0 where not at risk).
    N : ndarray of int, shape (n_npos, n_years)
        ``N[:, j-1] = N_j``, the number of no-grant spells of at least ``j`` years.
    """

    at_risk: np.ndarray
    break_index: np.ndarray
    end_index: np.ndarray
    N0: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    N: np.ndarray

    @property
    def N1(self) -> np.ndarray:
        return self.N[:, 0]

    def matrix(self) -> np.ndarray:
        """Feature matrix with columns :data:`FEATURES` (float64)."""
        return np.column_stack([self.N0, self.N1, self.X, self.Z]).astype(np.float64)


def spell_features(grants: np.ndarray, end_index: np.ndarray | None = None) -> SpellFeatures:
    """N0, N1, N2, ..., X and Z for every NPO, vectorised over NPOs (seed Appendix A).

    Parameters
    ----------
    grants : array_like of int, shape (n_npos, n_years)
        ``1`` grant, ``0`` no grant, ``-1`` not alive, one column per year of the period.
    end_index : array_like of int, shape (n_npos,), optional
        Column of the end of the window ``y_e``: the closure year for closed NPOs, the last
        column for active ones. Default: the last alive year of each row.

    Returns
    -------
    SpellFeatures
    """
    g = np.asarray(grants, dtype=np.int8)
    if g.ndim != 2:
        raise ValueError("grants must be a 2-D (npo x year) matrix")
    n, n_years = g.shape
    cols = np.arange(n_years)
    alive = g != NOT_ALIVE
    if end_index is None:
        end_index = np.where(alive.any(axis=1), n_years - 1 - np.argmax(alive[:, ::-1], axis=1), -1)
    end_index = np.asarray(end_index, dtype=np.int64)

    had_grant_before = np.cumsum(g == 1, axis=1) > 0
    # shift right by one: "some earlier year had a grant"
    earlier_grant = np.zeros_like(had_grant_before)
    earlier_grant[:, 1:] = had_grant_before[:, :-1]
    is_break = (g == 0) & earlier_grant & (cols[None, :] <= end_index[:, None])
    at_risk = is_break.any(axis=1)
    break_index = np.where(at_risk, np.argmax(is_break, axis=1), -1)

    window = (at_risk[:, None] & (cols[None, :] >= break_index[:, None])
              & (cols[None, :] <= end_index[:, None]))
    no_grant = window & (g == 0)

    # run position of every no-grant year inside its spell (1 = first year of the spell)
    run = np.zeros((n, n_years), dtype=np.int64)
    prev = np.zeros(n, dtype=np.int64)
    for j in range(n_years):
        prev = np.where(no_grant[:, j], prev + 1, 0)
        run[:, j] = prev
    # a spell of length L has exactly one year at each run position 1..L, so N_j = #(run == j)
    N = np.stack([(run == j).sum(axis=1) for j in range(1, n_years + 1)], axis=1)
    X = no_grant.sum(axis=1)
    Z = np.where(no_grant, run - 1, 0).sum(axis=1)
    N0 = np.where(at_risk, end_index - break_index + 1, 0)
    return SpellFeatures(at_risk=at_risk, break_index=break_index,
                         end_index=np.where(at_risk, end_index, -1),
                         N0=N0.astype(np.int64), X=X.astype(np.int64), Z=Z.astype(np.int64),
                         N=N.astype(np.int64))


def y_weighted(N: np.ndarray, k0: float) -> np.ndarray:
    """``Y = N1 + (1+k0) N2 + (1+2 k0) N3 + ...`` (seed Appendix A, eq. 12), from the N_j matrix."""
    N = np.atleast_2d(np.asarray(N, dtype=np.float64))
    weights = 1.0 + k0 * np.arange(N.shape[1])
    return N @ weights


def coefficients(definition: str, k1: float = 1.0, k2: float = 1.0, k0: float = 0.0) -> np.ndarray:
    """Weights on the features ``(N0, N1, X, Z)`` for one definition (seed eqs. 5, 9-14).

    ``Y(k0) = X + k0 Z`` makes every definition a dot product with the feature matrix.
    """
    if definition == "T0":
        c = (1.0, 0.0, 0.0, 0.0)
    elif definition == "T1":
        c = (k1, 0.0, k2, k2 * k0)
    elif definition == "T2":
        c = (0.0, 0.0, 1.0, k0)
    elif definition == "T3":
        c = (0.0, 0.0, 1.0, 0.0)
    elif definition == "T":
        c = (k1, k2, 0.0, 0.0)
    else:
        raise ValueError(f"unknown time-at-risk definition {definition!r}; use one of "
                         f"{DEFINITIONS}")
    return np.asarray(c, dtype=np.float64)


def time_at_risk(features: np.ndarray, definition: str, k1: float = 1.0, k2: float = 1.0,
                 k0: float = 0.0) -> np.ndarray:
    """Time-at-risk of every NPO (seed Appendix A eqs. 9-14, Section 2.4 eq. 5).

    Parameters
    ----------
    features : ndarray, shape (n, 4)
        Columns ``(N0, N1, X, Z)`` from :meth:`SpellFeatures.matrix`.
    definition : {"T", "T0", "T1", "T2", "T3"}
    k1, k2, k0 : float
        Coefficients (ignored where the definition does not use them).
    """
    return np.asarray(features, dtype=np.float64) @ coefficients(definition, k1, k2, k0)


def extend_one_year(grants: np.ndarray, end_index: np.ndarray, grant_next: int) -> SpellFeatures:
    """Features one year later, had the window run one more year with ``grant_next`` (0 or 1).

    Used for the probability of closure within the next year: the time-at-risk an active NPO
    will have reached at the end of next year.
    """
    g = np.asarray(grants, dtype=np.int8)
    ext = np.concatenate([g, np.full((g.shape[0], 1), NOT_ALIVE, dtype=np.int8)], axis=1)
    end = np.asarray(end_index, dtype=np.int64) + 1
    ext[np.arange(g.shape[0]), end] = grant_next
    return spell_features(ext, end)


def support_start(coef) -> float:
    """The smallest time-at-risk an at-risk NPO can have under feature weights ``coef``.

    Every at-risk NPO has ``N0 >= 1``, ``N1 >= 1`` and ``X >= 1`` (its first break year is a
    no-grant year of the window) and ``Z >= 0``, and every weight is >= 0, so the minimum is
    ``coef . (1, 1, 1, 0)``: ``k1 + k2`` for T (``T = k1 N0 + k2 N1``) and T1, and 1 for T0
    (``N0``), T2 (``Y >= X >= 1``) and T3 (``X``). Kernel reflection and a ``"support"`` grid
    start there.
    """
    return float(np.asarray(coef, dtype=np.float64) @ np.array([1.0, 1.0, 1.0, 0.0]))
