"""selfcheck: a quick, exact end-to-end check of a cluster (``riskdask run selfcheck``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from riskdask.engine import map_reduce, plan_chunks
from riskdask.protocol import Job, Outputs
from riskdask.selfcheck import merge_summaries, normal_chunk

NAME = "selfcheck"
DESCRIPTION = "cluster and engine check: chunked normal draws with exact, closed-form answers"
TITLE = "riskdask · selfcheck"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(12345, ge=0)
    n_samples: int = Field(2_000_000, gt=0, le=10**10)
    chunk_size: int = Field(250_000, gt=0)
    level: float = Field(2.326347874, description="exceedance level; P(Z > level) is known")
    top_k: int = Field(10, ge=1, le=100_000)
    jitter_ms: float = Field(0.0, ge=0, le=5_000, description="random per-chunk delay (testing)")


def load_inputs(cfg: Config, record) -> None:
    record.add_input("standard normal draws", rows=cfg.n_samples, fingerprint=f"seed={cfg.seed}",
                     description="generated per chunk from SeedSequence(seed).spawn(n_chunks)")


def compute(cfg: Config, inputs, ctx) -> Outputs:
    out = Outputs()
    chunks = plan_chunks(cfg.n_samples, cfg.chunk_size, ctx.streams.seed("main"))
    with ctx.stage("simulate"):
        s = map_reduce(normal_chunk, chunks, merge_summaries, client=ctx.client,
                       kernel_kwargs={"level": cfg.level, "k": cfg.top_k,
                                      "jitter_ms": cfg.jitter_ms}, label="selfcheck")
    p_exact = float(stats.norm.sf(cfg.level))
    p_hat = s.exceed / s.n
    se = float(np.sqrt(p_exact * (1 - p_exact) / s.n))
    ranks = np.arange(1, len(s.top) + 1)
    out.table("top_draws", pd.DataFrame({"rank": ranks, "value": s.top}))
    out.figure("top_draws", _top_draws_figure(s.top, s.n),
               caption="Largest draws against the normal quantiles they should sit near")
    out.summary = {
        "n": s.n, "n_chunks": len(chunks),
        "index_sum": s.index_sum, "index_sum_exact": s.n * (s.n - 1) // 2,
        "mean": s.mean, "variance": s.variance,
        "exceedance": p_hat, "exceedance_exact": p_exact, "exceedance_z": (p_hat - p_exact) / se,
        "max": float(s.top[0]),
    }
    return out


def headline(summary: dict) -> list[tuple[str, object]]:
    return [("draws", summary["n"]), ("chunks", summary["n_chunks"]),
            ("index sum exact", summary["index_sum"] == summary["index_sum_exact"]),
            ("mean (0)", summary["mean"]), ("variance (1)", summary["variance"]),
            ("P(Z > level) simulated", summary["exceedance"]),
            ("P(Z > level) exact", summary["exceedance_exact"])]


def _top_draws_figure(top: np.ndarray, n: int):
    from riskdask.plotting import pyplot

    plt = pyplot()

    ranks = np.arange(1, len(top) + 1)
    expected = stats.norm.isf((ranks - 0.5) / n)  # approximate quantile of the r-th largest
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ranks, top, "o", label="simulated")
    ax.plot(ranks, expected, "-", label="normal quantile")
    ax.set_xlabel("rank (1 = largest)")
    ax.set_ylabel("value")
    ax.legend()
    return fig


JOB = Job(name=NAME, description=DESCRIPTION, title=TITLE, config=Config, load=load_inputs,
          compute=compute, headline=headline, main=False)
