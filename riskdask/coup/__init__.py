"""coup: coup-attempt risk (seed ``000_68eb94656699ea41.txt``, spec ``COUP.md``).

Pure pieces, no Dask inside:

- :mod:`.schema` -- the seed's 38 REIGN columns, the 16 regime types, the default features;
- :mod:`.reign` -- loading and validating a REIGN-format CSV (located :class:`InputError` s,
  counted exclusions, extra columns accepted);
- :mod:`.synthetic` -- the embedded synthetic REIGN-like panel;
- :mod:`.prepare` -- the seed's preparation, the lead target, random/temporal splits;
- :mod:`.forest` -- sub-forests and their exact reduce to one forest's results;
- :mod:`.sweep` -- the exact one-pass sweep over 1,000 thresholds;
- :mod:`.evaluate` -- scores, permutation importance, league table;
- :mod:`.tasks` -- the chunk kernels the engine runs; :mod:`.figures` -- the job's figures.
"""
