"""Fig. 3 — continued training of a backbone on its own data: share of the entries initially below
θ that are still below θ, and share of the entries now below θ that started above, vs iteration.

Reads the `migration` experiment rows (JSON cell ``migration`` = ``MigrationTracker.as_dict()``:
``{"threshold", "history": [{"step", "still_below", "new_below", ...}]}``). Writes
``fig3_migration.{png,pdf}`` and ``fig3_migration.{md,tex}``.

    python -m analysis.fig3_migration --results results.csv --out outputs/analysis/migration
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, decode_col, fmt, load, migration_frame, out_dir, pyplot, rows_of,
                     save_fig, sci, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, verdict

NAME = "fig3_migration"
SERIES = [("still_below", "initially below θ, still below", "C0"),
          ("new_below", "below θ now, started above", "C1")]


def curves(df):
    """[(label, threshold, frame)] for every run that recorded a migration history."""
    out = []
    for (_, r), obj in zip(df.iterrows(), decode_col(df, "migration")):
        fr = migration_frame(obj)
        if fr.empty:
            continue
        th = obj.get("threshold") if isinstance(obj, dict) else None
        label = f"{r['backbone']} / {r['method']}" + (f" ({r['variant']})" if r.get("variant") else "") + \
            (f" seed {r['seed']}" if df["seed"].nunique() > 1 else "")
        out.append((label, th, fr))
    return out


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/migration").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "migration")
    cs = curves(df) if len(df) else []
    if not cs:
        return write_missing(out, NAME, "no `migration` runs with a recorded migration history")
    plt = pyplot()
    # at least 6.4 in wide: the title must fit over a single panel
    fig, axes = plt.subplots(1, len(cs), figsize=(max(6.4, 4.6 * len(cs)), 3.3), squeeze=False)
    sections = []
    for ax, (label, th, fr) in zip(axes[0], cs):
        for col, name, c in SERIES:
            if col in fr:
                ax.plot(fr["step"], 100 * fr[col], "o-", ms=3, color=c, label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("share (%)")
        ax.set_ylim(0, 100)
        ax.set_title(label + (f", θ={sci(th)}" if th is not None else ""), fontsize=9)
        ax.legend(fontsize=7)
        step = max(1, len(fr) // 12)
        sub = fr.iloc[::step]
        if sub.index[-1] != fr.index[-1]:
            sub = fr.iloc[list(range(0, len(fr), step)) + [len(fr) - 1]]
        cells = [[str(int(r["step"]))] + [fmt(100 * r[c]) if c in fr else "–" for c, _, _ in SERIES]
                 for _, r in sub.iterrows()]
        sections.append({"title": label + (f" (θ = {sci(th)})" if th is not None else ""),
                         "header": ["iteration"] + [n + " (%)" for _, n, _ in SERIES], "cells": cells,
                         "caption": f"Parameter migration across θ, {label} (Fig. 3)"})
    fig.suptitle("Fig. 3 — entries crossing the threshold during continued training")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Fig. 3 — parameter migration")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _migration(df):
    d = rows_of(df, "migration")
    frames = [migration_frame(o) for o in decode_col(d, "migration")] if len(d) else []
    return [f for f in frames if not f.empty and "still_below" in f]


def _migration_falls(df):
    fr = _migration(df)
    if not fr:
        return NOT_RUN, "no `migration` runs with a history"
    rows, ok = [], True
    for f in fr:
        s = f["still_below"].to_numpy(float)
        mono = bool(np.all(np.diff(s) <= 0.01))
        most_left = s[-1] < 0.5  # "mostly become effective over time"
        ok &= mono and s[-1] < s[0] and most_left
        rows.append(f"{fmt(100 * s[0], 1)}% → {fmt(100 * s[-1], 1)}% over {int(f['step'].iloc[-1])} iterations"
                    + ("" if mono else " (not monotone)")
                    + ("" if most_left else "; most initially-below entries are still below (≥ 50%)"))
    return verdict(ok), "falls steadily and ends below one half: " + "; ".join(rows)


def _migration_new(df):
    fr = [f for f in _migration(df) if "new_below" in f]
    if not fr:
        return NOT_RUN, "no `migration` runs with a history"
    ok = all(float(f["new_below"].iloc[-1]) > 0 for f in fr)
    return verdict(ok), "; ".join(f"share of below-θ entries that started above: {fmt(100 * float(f['new_below'].iloc[-1]), 1)}%"
                                   for f in fr)


CLAIMS = [
    Claim("C16", "During continued training the share of initially-below-θ entries still below θ falls steadily, "
                 "and most of them leave (the share ends below one half)",
          "Fig. 3", "migration", _migration_falls),
    Claim("C17", "During continued training some initially-above-θ entries fall below θ", "Fig. 3", "migration",
          _migration_new,
          trivial="a final share above zero passes by construction once any entry crosses θ; the paper describes a rising curve"),
]


def claims(df) -> list[dict]:
    """The records of C16, C17 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
