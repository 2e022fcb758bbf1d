"""Random streams of a run, one per declared purpose (no two purposes share a stream).

Pure numpy: workers and the client import it alike.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["stream_seed", "keyed_seed", "Streams"]


def _purpose_code(purpose: str) -> int:
    return zlib.crc32(purpose.encode()) or 1


def keyed_seed(root: np.random.SeedSequence, *keys) -> np.random.SeedSequence:
    """``root``'s child keyed by names and numbers: ``SeedSequence(root.entropy,
    spawn_key=root.spawn_key + (crc32(name) or int, ...))``.  A child depends on its own keys
    only (a backtest task's model, fold and sub-forest; a what-if obligor's id and chunk), so
    adding or removing another one changes none of the others' numbers."""
    key = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + key,
                                  pool_size=root.pool_size)


def stream_seed(seed: int, purpose: str, *, primary: str) -> np.random.SeedSequence:
    """The root random stream of one purpose of a run: no two purposes share a stream.

    ``SeedSequence(seed)`` itself belongs to the job's ``primary`` purpose (the stream every
    earlier release used for it, so its results are reproduced). Any other purpose gets
    ``SeedSequence([seed, code])`` with ``code = crc32(purpose)`` (never 0). Plans spawn their
    chunk streams from these roots (:func:`riskdask.engine.plan_chunks`): the children of
    ``SeedSequence(seed)`` carry spawn keys and so mix ``[seed, 0, 0, 0, i]``, while a purpose
    root mixes the two words ``[seed, code]`` and its children ``[seed, code, 0, 0, i]`` --
    distinct inputs, hence distinct streams (numpy's ``SeedSequence`` design).

    Parameters
    ----------
    seed : int
        The run's seed (``cfg.seed``).
    purpose : str
        What the stream is for (``"scenarios"``, ``"bootstrap"`` ...).
    primary : str
        The job's primary purpose.

    Returns
    -------
    numpy.random.SeedSequence
    """
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"a random-stream purpose is a non-empty name, got {purpose!r}")
    if purpose == primary:
        return np.random.SeedSequence(int(seed))
    return np.random.SeedSequence([int(seed), _purpose_code(purpose)])


class Streams:
    """Random streams of one run, keyed by the purposes its job declares.

    ``streams.seed("permutation")`` is the root :class:`numpy.random.SeedSequence` of that
    purpose (:func:`stream_seed`); hand it to :func:`riskdask.engine.plan_chunks` (or
    ``numpy.random.default_rng``). The first declared purpose is the job's primary one and
    keeps ``SeedSequence(seed)`` itself. A purpose the job did not declare is refused: two
    parts of a job cannot share a stream by accident.
    """

    def __init__(self, seed: int, purposes: tuple[str, ...]):
        if not purposes:
            raise ValueError("a job declares at least one random-stream purpose")
        if len(set(purposes)) != len(purposes):
            raise ValueError(f"a random-stream purpose is declared twice: {purposes}")
        self.root, self.purposes = int(seed), tuple(purposes)

    @property
    def primary(self) -> str:
        return self.purposes[0]

    def seed(self, purpose: str) -> np.random.SeedSequence:
        if purpose not in self.purposes:
            raise ValueError(f"random-stream purpose {purpose!r} is not declared by the job "
                             f"(declared: {', '.join(self.purposes)})")
        return stream_seed(self.root, purpose, primary=self.primary)
