"""Table 10 — projection of W0 onto the top-r subspace of the learned ΔW and the amplification
factor ‖ΔW‖_F / ‖Uᵀ W V‖_F (LoRA paper §7.3), SaRA vs LoRA.

Reads the `analysis` experiment rows (JSON cell ``amplification`` =
``sara.analysis_math.amplification_report`` records ``{"layer", "r", "delta_norm", "proj_norm",
"own_proj_norm", "amplification"}``), averaged over the recorded layers (and seeds). Writes
``table10_amplification.{md,tex}`` and ``table10_amplification.{png,pdf}``.

    python -m analysis.table10_amplification --results results.csv --out outputs/analysis/analysis
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (arg_parser, budget_sort_key, decode_col, fmt, load, method_label, out_dir, pyplot,
                     rows_of, save_fig, write_missing, write_tables)

NAME = "table10_amplification"


def amplification_long(df):
    rows = []
    for (_, r), recs in zip(df.iterrows(), decode_col(df, "amplification")):
        for x in recs or []:
            rows.append({"backbone": r["backbone"], "method": r["method"], "budget": str(r["budget"]),
                         "seed": r["seed"], **{k: x.get(k) for k in ("layer", "r", "delta_norm", "proj_norm",
                                                                        "own_proj_norm", "amplification")}})
    return pd.DataFrame(rows)


def summary(long):
    return long.groupby(["backbone", "method", "budget", "r"], as_index=False)[
        ["delta_norm", "proj_norm", "own_proj_norm", "amplification"]].mean()


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/analysis")
    ap.add_argument("--budget", default=None, help="budget shown (default: the largest with SaRA and LoRA)")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "analysis")
    long = amplification_long(df) if len(df) else pd.DataFrame()
    if long.empty:
        return write_missing(out, NAME, "no `analysis` runs with a recorded `amplification` report")
    s = summary(long)
    sections = []
    plt = pyplot()
    bbs = list(dict.fromkeys(s["backbone"]))
    fig, axes = plt.subplots(1, len(bbs), figsize=(4.4 * len(bbs), 3.2), squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = s[s["backbone"] == bb]
        budgets = sorted(set(g["budget"]), key=budget_sort_key)
        both = [b for b in budgets if {"sara", "lora"} <= set(g[g["budget"] == b]["method"])]
        budget = args.budget or (both[-1] if both else budgets[-1])
        g = g[g["budget"] == budget]
        methods = [m for m in ("sara", "lora") if m in set(g["method"])] + \
            sorted(set(g["method"]) - {"sara", "lora"})
        rs = sorted(set(g["r"]))
        cells = []
        for r in rs:
            h = g[g["r"] == r].set_index("method")
            own = h["own_proj_norm"].mean()
            row = [str(int(r))] + [fmt(h["proj_norm"].get(m, np.nan)) for m in methods] + [fmt(own)] + \
                  [fmt(h["amplification"].get(m, np.nan)) for m in methods]
            cells.append(row)
        header = ["r"] + [f"{method_label(m)} ‖UᵀWV‖_F" for m in methods] + ["W onto its own top-r"] + \
                 [f"{method_label(m)} amplification" for m in methods]
        sections.append({"title": f"backbone {bb}, budget {budget}", "header": header, "cells": cells,
                         "caption": f"Projection of W onto the top-r subspace of ΔW, {bb}, {budget} (Table 10)",
                         "label": f"tab:amplification-{bb}"})
        for k, m in enumerate(methods):
            h = g[g["method"] == m].sort_values("r")
            ax.plot(h["r"], h["amplification"], "o-", color="C3" if m == "sara" else f"C{k}", label=method_label(m))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("r")
        ax.set_ylabel("amplification ‖ΔW‖_F / ‖UᵀWV‖_F")
        ax.set_title(f"{bb}, budget {budget}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Table 10 — amplification factor")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Table 10 — amplification",
                          "Averaged over the recorded layers (and seeds).")
    return files


if __name__ == "__main__":
    for f in main():
        print(f)
