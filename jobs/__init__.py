"""One thin module per job: config -> domain calls -> engine -> outputs.

Each module declares ``JOB``, a :class:`riskdask.protocol.Job` (name, config model, ``load``,
``compute``, ``headline``); :mod:`riskdask.registry` finds them and :func:`riskdask.api.run_job`
runs every job the same way. The maths lives in ``riskdask/<domain>/``, never here.
"""
