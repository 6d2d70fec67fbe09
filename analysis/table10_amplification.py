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

from .common import (arg_parser, budget_sort_key, decode_col, fmt, load, method_label, out_dir, paper_other, pyplot,
                     rows_of, save_fig, to_float, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, paper_verdict, value_of, verdict

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


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _amp(df):
    d = rows_of(df, "analysis")
    long = amplification_long(d) if len(d) else pd.DataFrame()
    return summary(long) if len(long) else None


def _amp_sara_higher(df):
    s = _amp(df)
    if s is None or not {"sara", "lora"} <= set(s["method"]):
        return NOT_RUN, "needs `analysis` runs of SaRA and LoRA with an amplification report"
    rows, ok = [], True
    for (bb, bu, r), g in s.groupby(["backbone", "budget", "r"]):
        a, b = value_of(g, "sara", "amplification"), value_of(g, "lora", "amplification")
        if np.isfinite(a) and np.isfinite(b):
            ok &= a > b
            rows.append(f"{bu} r={int(r)}: SaRA {fmt(a)} vs LoRA {fmt(b)}")
    return verdict(ok), "; ".join(rows)


def _amp_decreases(df):
    s = _amp(df)
    if s is None or "sara" not in set(s["method"]):
        return NOT_RUN, "needs `analysis` runs of SaRA with an amplification report"
    rows, ok = [], True
    for (bb, bu), g in s[s["method"] == "sara"].groupby(["backbone", "budget"]):
        g = g.sort_values("r")
        dec = bool(np.all(np.diff(g["amplification"].to_numpy(float)) < 0))
        ok &= dec
        rows.append(f"{bu}: " + " → ".join(fmt(v) for v in g["amplification"]))
    return verdict(ok), "SaRA amplification over r — " + "; ".join(rows)


def _paper_t10(which):
    def paper():
        t = paper_other().get("table10")
        if t is None:
            return NOT_RUN, "paper Table 10 not found"
        sa = t["SaRA amplification"].map(to_float).to_numpy()
        lo = t["LoRA amplification"].map(to_float).to_numpy()
        if which == "higher":
            return paper_verdict(np.all(sa > lo)), "Table 10: SaRA " + \
                ", ".join(map(str, sa)) + " vs LoRA " + ", ".join(map(str, lo))
        return paper_verdict(np.all(np.diff(sa) < 0)), "Table 10: " + " → ".join(map(str, sa))
    return paper


CLAIMS = [
    Claim("C21", "SaRA's amplification factor exceeds LoRA's at every r", "Table 10", "analysis", _amp_sara_higher,
          _paper_t10("higher")),
    Claim("C22", "The amplification factor decreases as r grows", "Table 10", "analysis", _amp_decreases,
          _paper_t10("decreases")),
]


def claims(df) -> list[dict]:
    """The records of C21, C22 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
