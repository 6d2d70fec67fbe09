"""Table 2 — ablation on one dataset (paper: Expedition): w/o PPA and rank loss, with PPA only,
with rank loss only, SaRA (both), tuning the largest entries, tuning random entries.

Reads the `ablation` experiment rows of methods ``sara_plain, sara_no_rank, sara_no_ppa, sara,
largest, random`` on ``--dataset``; VLHI (Eq. 8) within these rows. If the runs recorded
``share_below`` (share of the initial selection still below θ at the end) it is shown too.
Writes ``table2_ablation.{md,tex}`` and ``table2_ablation.{png,pdf}``.

    python -m analysis.table2_ablation --results results.csv --out outputs/analysis/ablation
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, best_mask, fmt, has_metric, load, mean_over_seeds, out_dir, pyplot,
                     rows_of, save_fig, vlhi_groups, write_missing, write_tables)

NAME = "table2_ablation"
# method id → (row label, PPA, rank loss, point label of the plot) in the paper's order
VARIANTS = [
    ("sara_plain", "w/o PPA, w/o rank loss", "✗", "✗", "neither"),
    ("sara_no_rank", "with PPA, w/o rank loss", "✓", "✗", "PPA only"),
    ("sara_no_ppa", "with rank loss, w/o PPA", "✗", "✓", "rank loss only"),
    ("sara", "with PPA and rank loss (SaRA)", "✓", "✓", "SaRA"),
    ("largest", "tuning largest parameters", "✓", "✓", "largest"),
    ("random", "tuning random parameters", "✓", "✓", "random"),
]


def ablation_table(df, dataset="Expedition", quality="clip_score"):
    ids = [v[0] for v in VARIANTS]
    d = df[df["method"].isin(ids) & (df["dataset"] == dataset)]
    if d.empty:
        return d
    m = mean_over_seeds(d, ["backbone", "method"], ["fid", quality, "share_below", "trainable_params"])
    m = vlhi_groups(m, ["backbone"], "fid", quality, "vlhi")
    m["order"] = [ids.index(x) for x in m["method"]]
    return m.sort_values(["backbone", "order"]).reset_index(drop=True)


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/ablation")
    ap.add_argument("--dataset", default="Expedition")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "ablation")
    if df.empty or not has_metric(df, "fid", "clip_score"):
        return write_missing(out, NAME, "no `ablation` runs with FID and CLIP in the results table")
    m = ablation_table(df, args.dataset)
    if m.empty:
        return write_missing(out, NAME, f"no ablation runs on {args.dataset}")
    labels = {v[0]: v for v in VARIANTS}
    show_share = has_metric(m, "share_below")
    sections = []
    plt = pyplot()
    bbs = list(dict.fromkeys(m["backbone"]))
    fig, axes = plt.subplots(1, len(bbs), figsize=(4.8 * len(bbs), 3.4), squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = m[m["backbone"] == bb].reset_index(drop=True)
        bf, bc, bv = best_mask(list(g["fid"]), True), best_mask(list(g["clip_score"]), False), best_mask(list(g["vlhi"]), False)
        cells, bold = [], []
        for i, r in g.iterrows():
            lab = labels[r["method"]]
            row = [lab[1], lab[2], lab[3], fmt(r["fid"]), fmt(r["clip_score"]), fmt(r["vlhi"])]
            b = [False, False, False, bf[i], bc[i], bv[i]]
            if show_share:
                row.append(fmt(100 * r["share_below"], 1) if np.isfinite(r.get("share_below", np.nan)) else "–")
                b.append(False)
            row.append(str(int(r["n_seeds"])))
            b.append(False)
            cells.append(row)
            bold.append(b)
        header = ["variant", "PPA", "rank loss", "FID", "CLIP", "VLHI"] + \
            (["initial selection still below θ (%)"] if show_share else []) + ["seeds"]
        sections.append({"title": f"backbone {bb}, dataset {args.dataset}", "header": header, "cells": cells,
                         "bold": bold, "caption": f"Ablation on {args.dataset}, backbone {bb} (Table 2)",
                         "label": f"tab:ablation-{bb}"})
        # short point labels; of two close points the higher one is labelled above, the lower below
        xy = g[["fid", "clip_score"]].to_numpy(float)
        span = np.ptp(xy, axis=0) + 1e-9
        for i, r in g.iterrows():
            c = "C3" if r["method"] == "sara" else "C0"
            ax.scatter(r["fid"], r["clip_score"], color=c, s=25)
            dist = np.hypot(*((xy - xy[i]) / span).T)
            dist[i] = np.inf
            above = len(g) < 2 or xy[i, 1] >= xy[int(np.argmin(dist)), 1]
            ax.annotate(labels[r["method"]][4], (r["fid"], r["clip_score"]), fontsize=7,
                        xytext=(4, 4 if above else -10), textcoords="offset points")
        ax.set_xlabel("FID ↓")
        ax.set_ylabel("CLIP ↑")
        ax.set_title(f"{bb} / {args.dataset}")
    fig.suptitle("Table 2 — ablation (FID vs CLIP)")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Table 2 — ablation",
                          "VLHI within the rows of each table. Best per column in bold.")
    return files


if __name__ == "__main__":
    for f in main():
        print(f)
