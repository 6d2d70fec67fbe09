"""Tuned learning rates — each method's rate from the `lr_search` grid (validation prompts).

For every backbone in the results, :func:`sara.lr_search.select_learning_rates` picks per
(method, budget) the rate with the highest VLHI over its grid (seeds averaged) and writes
``<tables>/<backbone>.yaml``, which ``train.lr=tuned`` reads. Writes ``lr_table.{md,tex}`` with
every rate's FID, CLIP and VLHI (chosen rate in bold) and, for SaRA, Eq. 12's rate beside its
tuned one.

    python -m analysis.lr_table --results outputs/results/lr_search.csv --out outputs/analysis/lr_search
"""
from __future__ import annotations

import math

from sara.lr_search import LR_TABLE_DIR, select_learning_rates, write_lr_table

from .common import arg_parser, budget_sort_key, fmt, has_metric, load, out_dir, rows_of, sci, write_missing, write_tables

NAME = "lr_table"
EQ12_A, EQ12_B = 1e-3, -350.0


def _eq12_rate(df, backbone, method, budget) -> float | None:
    """Eq. 12's rate at the median threshold of a threshold-selecting method's runs (else None)."""
    if "threshold" not in df.columns:
        return None
    g = df[(df["backbone"] == backbone) & (df["method"] == method) & (df["budget"].astype(str) == budget)]
    th = g["threshold"].astype(float).dropna() if len(g) else None
    if th is None or th.empty or method != "sara":
        return None
    return EQ12_A * math.exp(EQ12_B * float(th.median()))


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/lr_search")
    ap.add_argument("--tables", default=str(LR_TABLE_DIR), help=f"where the per-backbone tables go (default {LR_TABLE_DIR})")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "lr_search")
    if df.empty or not has_metric(df, "fid", "clip_score", "lr"):
        return write_missing(out, NAME, "no `lr_search` runs with FID, CLIP and a learning rate in the results table")
    rates, scores = select_learning_rates(df.to_dict("records"))
    files, sections = [], []
    for backbone in sorted(rates):
        meta = {"experiment": args.experiment or "lr_search", "results": str(args.results),
                "n_runs": int((df["backbone"] == backbone).sum()),
                "seeds": sorted(int(s) for s in df.loc[df["backbone"] == backbone, "seed"].dropna().unique()),
                "datasets": sorted(str(d) for d in df.loc[df["backbone"] == backbone, "dataset"].dropna().unique()),
                "rule": "highest VLHI over each (method, budget) grid, seeds averaged, ties to the smaller rate"}
        files.append(write_lr_table(f"{args.tables}/{backbone}.yaml", rates[backbone], scores[backbone], meta))
        cells, bold = [], []
        for method in sorted(scores[backbone]):
            for budget in sorted(scores[backbone][method], key=budget_sort_key):
                s = scores[backbone][method][budget]
                eq12 = _eq12_rate(df, backbone, method, budget)
                for g in s["grid"]:
                    chosen = g["lr"] == s["chosen"]
                    note = "chosen" + (" (grid edge)" if s["at_edge"] else "") if chosen else ""
                    if chosen and eq12 is not None:
                        note += f"; Eq. 12: {sci(eq12)} ({s['chosen'] / eq12:.3g}× tuned/Eq. 12)"
                    cells.append([method, budget, sci(g["lr"]), fmt(g["fid"]), fmt(g["clip_score"]), fmt(g["vlhi"]),
                                  str(g["n_seeds"]), note])
                    bold.append([False, False] + [chosen] * 4 + [False, False])
        sections.append({"title": f"backbone {backbone}", "cells": cells, "bold": bold,
                         "header": ["method", "budget", "lr", "FID", "CLIP", "VLHI", "seeds", ""],
                         "caption": f"Learning-rate search, {backbone}", "label": f"tab:lr-{backbone}"})
    note = ("Eq. 12: lr = 1e-3·exp(−350 θ) at the threshold the SaRA runs selected with; "
            "the paper does not state its baselines' rates.")
    files += write_tables(out, NAME, sections, title="Tuned learning rates", note=note)
    return files


if __name__ == "__main__":
    from .common import run_main

    run_main(main)
