"""A worker killed while holding the only copy of a job's scattered input (e.g. the sub-forests'
training data) must not fail the run.

Found by the coup worker-kill test: the scheduler's active memory manager trims the broadcast
replicas of scattered data once no queued task needs them; if the worker holding the last copy
dies during the reduce, every lost partial that needs recomputing has lost its input, and the
root is cancelled ("already forgotten"). ``map_reduce`` then scatters again and re-runs the
(deterministic) plan.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from riskdask.engine import map_reduce, plan_chunks


def _kernel(chunk, shared):
    time.sleep(0.2)
    return np.full(3, chunk.index + shared[0])


def _slow_combine(a, b):
    time.sleep(1.0)          # a long reduce: the kill lands while partials are in flight
    return a + b


def test_losing_the_last_copy_of_the_scattered_input_is_survived():
    seen = {}

    def kill_last_holder(client, pids):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            who = {str(k): v for k, v in client.who_has().items()}
            shared = {k: v for k, v in who.items() if k.startswith("ndarray-")}
            if shared and all(len(v) == 1 for v in shared.values()):
                [(key, [holder])] = shared.items()
                seen["replicas"] = 1
                os.kill(pids[holder], signal.SIGKILL)
                return
            time.sleep(0.1)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        killer = threading.Thread(target=kill_last_holder, args=(client, pids), daemon=True)
        killer.start()
        result = map_reduce(_kernel, plan_chunks(10, 1, 0), _slow_combine, client=client,
                            shared=np.ones(10), label="resilience")
        killer.join(timeout=30)
    assert seen.get("replicas") == 1          # the scenario happened: one copy left, killed
    np.testing.assert_array_equal(result, np.full(3, sum(range(10)) + 10.0))


def test_a_plan_on_a_cluster_without_workers_is_cluster_lost():
    """A plan that starts after every worker is gone: its scatter used to raise a bare
    ``TimeoutError: No valid workers found``; now ClusterLost after the grace time."""
    from riskdask.engine import ClusterLost, Engine

    with (LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cluster,
          Client(cluster) as client):
        t0 = time.monotonic()
        with pytest.raises(ClusterLost, match="before 'nobody' could start"):
            map_reduce(_kernel, plan_chunks(4, 1, 0), _slow_combine, shared=np.ones(3),
                       engine=Engine(client, worker_grace=2.0), label="nobody")
        assert time.monotonic() - t0 < 30
