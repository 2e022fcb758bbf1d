"""selfcheck: a quick, exact end-to-end check of a cluster (``riskdask run selfcheck``).

The smallest complete job of the protocol (:mod:`riskdask.protocol`): a config, ``load``,
``compute`` returning a frozen result, ``present`` turning it into outputs, ``metrics`` for
the run history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from riskdask.formatting import estimate, integer, sig
from riskdask.protocol import Job, Metric, Outputs
from riskdask.selfcheck import NormalSummary, merge_summaries, normal_chunk


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(12345, ge=0)
    n_samples: int = Field(2_000_000, gt=0, le=10**10)
    chunk_size: int = Field(250_000, gt=0)
    level: float = Field(2.326347874, description="exceedance level; P(Z > level) is known")
    top_k: int = Field(10, ge=1, le=100_000)
    jitter_ms: float = Field(0.0, ge=0, le=5_000, description="random per-chunk delay (testing)")


@dataclass(frozen=True)
class SelfcheckResult:
    """The reduced draws and the closed-form answers they must match."""

    draws: NormalSummary
    n_chunks: int
    exceedance_exact: float

    @property
    def exceedance(self) -> float:
        return self.draws.exceed / self.draws.n

    @property
    def exceedance_se(self) -> float:
        """Binomial standard error of the exceedance share under the exact probability."""
        p = self.exceedance_exact
        return math.sqrt(p * (1 - p) / self.draws.n)


def load_inputs(cfg: Config, record, streams) -> None:
    record.add_input("standard normal draws", rows=cfg.n_samples, fingerprint=f"seed={cfg.seed}",
                     description="generated per chunk from SeedSequence(seed).spawn(n_chunks)")


def compute(cfg: Config, inputs, ctx) -> SelfcheckResult:
    from riskdask.engine import plan_chunks

    chunks = plan_chunks(cfg.n_samples, cfg.chunk_size, ctx.streams.seed("main"))
    with ctx.stage("simulate"):
        s = ctx.engine.map_reduce(normal_chunk, chunks, merge_summaries,
                                  kernel_kwargs={"level": cfg.level, "k": cfg.top_k,
                                                 "jitter_ms": cfg.jitter_ms},
                                  label="selfcheck")
    return SelfcheckResult(draws=s, n_chunks=len(chunks),
                           exceedance_exact=float(stats.norm.sf(cfg.level)))


def present(result: SelfcheckResult, cfg: Config) -> Outputs:
    s = result.draws
    out = Outputs()
    ranks = np.arange(1, len(s.top) + 1)
    out.table("top_draws", pd.DataFrame({"rank": ranks, "value": s.top}))
    out.figure("top_draws", _top_draws_figure(s.top, s.n),
               caption="Largest draws against the normal quantiles they should sit near")
    out.summary = {
        "n": s.n, "n_chunks": result.n_chunks,
        "index_sum": s.index_sum, "index_sum_exact": s.n * (s.n - 1) // 2,
        "mean": s.mean, "variance": s.variance,
        "exceedance": result.exceedance, "exceedance_exact": result.exceedance_exact,
        "exceedance_z": (result.exceedance - result.exceedance_exact) / result.exceedance_se,
        "max": float(s.top[0]),
    }
    n = s.n
    out.headline = [
        ("draws / chunks", f"{integer(n)} / {integer(result.n_chunks)}"),
        ("index sum exact", str(s.index_sum == n * (n - 1) // 2)),
        ("mean (0)", estimate(s.mean, math.sqrt(1 / n))),
        ("variance (1)", estimate(s.variance, math.sqrt(2 / n))),
        ("P(Z > level) simulated", estimate(result.exceedance, result.exceedance_se)),
        ("P(Z > level) exact", sig(result.exceedance_exact, 6)),
    ]
    return out


def metrics(result: SelfcheckResult) -> dict:
    """Mean, variance and exceedance share, each ± its standard error under N(0, 1)."""
    n = result.draws.n
    return {"mean": Metric.pm(result.draws.mean, math.sqrt(1 / n)),
            "variance": Metric.pm(result.draws.variance, math.sqrt(2 / n)),
            "P(Z > level)": Metric.pm(result.exceedance, result.exceedance_se)}


def _top_draws_figure(top: np.ndarray, n: int):
    from riskdask.plotting import subplots

    ranks = np.arange(1, len(top) + 1)
    expected = stats.norm.isf((ranks - 0.5) / n)  # approximate quantile of the r-th largest
    fig, ax = subplots(figsize=(5, 3.2))
    ax.plot(ranks, top, "o", label="simulated")
    ax.plot(ranks, expected, "-", label="normal quantile")
    ax.set_xlabel("rank (1 = largest)")
    ax.set_ylabel("value")
    ax.legend()
    return fig


JOB = Job(name="selfcheck",
          description="cluster and engine check: chunked normal draws with exact, "
                      "closed-form answers",
          title="riskdask · selfcheck", config=Config, result=SelfcheckResult,
          load=load_inputs, compute=compute, present=present, metrics=metrics,
          purposes=("main",), main=False)
