"""Experiment hooks of a run (``conf/experiment/*.yaml``; table in ``experiments/README.md``).

The optional top-level config groups ``diagnostics`` and ``delta`` switch them on:

- :mod:`.schema`: the keys, types and defaults of both groups, checked once before a run starts
  (:func:`~sara.hooks.schema.validate_hooks`);
- :mod:`.diagnostics`: share below θ, subspace similarity / amplification, pruning;
- :mod:`.migration`: the migration tracker driven by the trainer (Fig. 3);
- :mod:`.delta`: sampling with a scaled or merged delta of other runs (App. F / G).

What they measure goes under ``diagnostics`` / ``delta`` of ``result.json``.
"""
