"""Figures, tables and the claims report of the SaRA reproduction, made from the results table.

Each module draws one paper item from the table that ``python -m sara.results`` writes, and
never touches model code::

    python -m analysis.<module> --results results.csv --out DIR

Shared helpers live in :mod:`analysis.common`, the claim record in :mod:`analysis.verdicts`; each
figure/table module states its own claims (``claims(df)``) and :mod:`analysis.claims` collects them
into one report. :mod:`analysis.synthetic` writes a synthetic runs tree for tests and previews.
"""
