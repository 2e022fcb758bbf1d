"""coup: coup-attempt risk (seed ``000_68eb94656699ea41.txt``, spec ``COUP.md``).

Pure pieces, no Dask inside:

- :mod:`.schema` -- the seed's 38 REIGN columns, the 16 regime types, the default features;
- :mod:`.reign` -- loading and validating a REIGN-format leader-month CSV (row key ccode,
  year, month, leader; located :class:`InputError` s, counted exclusions, extra columns
  accepted, missing seed features resolved);
- :mod:`.synthetic` -- the embedded synthetic REIGN-like panel;
- :mod:`.prepare` -- the seed's preparation, the lead target, random/temporal splits;
- :mod:`.forest` -- sub-forests and their exact reduce to one forest's results;
- :mod:`.sweep` -- the exact one-pass sweep over 1,000 thresholds;
- :mod:`.evaluate` -- the binary scores, forest scores, stratified permutation importance,
  country-bootstrap intervals, league table (one row per country, the leader in office);
- :mod:`.backtest` -- the rolling-origin pooled backtest: folds, one plan of (fold, model,
  sub-forest) tasks, pooled tables, model comparison;
- :mod:`.calibration` -- reliability curve and the Brier decomposition;
- :mod:`.distributed` -- the forest on the run's engine;
- :mod:`.tasks` -- the chunk kernels the engine runs; :mod:`.figures` -- the job's figures.

The job (``jobs/coup.py`` declares it): :mod:`.config` -- the pydantic config;
:mod:`.pipeline` -- ``load_inputs`` and ``compute`` (the :class:`~.pipeline.CoupResult`);
:mod:`.outputs` -- ``present`` and ``metrics``. Worker tasks never import these three.
"""
