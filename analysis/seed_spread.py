"""Seed-to-seed spread (not a paper table): FID and CLIP score of the same run trained with
several seeds, per method, with the gap between the methods' means next to the spread.

Reads the `seeds` experiment rows (any method, dataset, budget, seed). Writes
``seed_spread.{md,tex}`` and ``seed_spread.{png,pdf}`` (one point per seed, mean as a bar).

    python -m analysis.seed_spread --results results.csv --out outputs/analysis/seeds
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, fmt, has_metric, load, mean_over_seeds, method_label, method_sort_key,
                     out_dir, pyplot, rows_of, save_fig, write_missing, write_tables)

NAME = "seed_spread"
METRICS = (("fid", "FID ↓"), ("clip_score", "CLIP ↑"))
KEYS = ["backbone", "dataset", "budget"]


def spread_table(df):
    """Mean, std (ddof 1), min, max and n over seeds per (backbone, dataset, budget, method)."""
    keys, cols = KEYS + ["method"], [c for c, _ in METRICS]
    m = mean_over_seeds(df, keys, cols)
    ext = df.assign(**{c: df[c].astype(float) for c in cols}).groupby(keys, dropna=False)[cols].agg(["min", "max"])
    ext.columns = [f"{c}_{s}" for c, s in ext.columns]
    m = m.merge(ext.reset_index(), on=keys, how="left")
    m["order"] = [method_sort_key(x) for x in m["method"]]
    return m.sort_values(KEYS + ["order"]).reset_index(drop=True)


def gaps(g):
    """Per metric: (largest gap between two methods' means, largest std of one method)."""
    out = {}
    for c, _ in METRICS:
        v = g[c].astype(float)
        sd = g[f"{c}_std"].astype(float)
        out[c] = (float(v.max() - v.min()) if len(v) > 1 else np.nan,
                  float(sd.max()) if sd.notna().any() else np.nan)
    return out


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/seeds").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "seeds")
    if df.empty or not has_metric(df, "fid", "clip_score"):
        return write_missing(out, NAME, "no `seeds` runs with FID and CLIP in the results table")
    m = spread_table(df)
    groups = list(m.groupby(KEYS, sort=False))
    plt = pyplot()
    fig, axes = plt.subplots(len(groups), len(METRICS), figsize=(3.6 * len(METRICS), 2.8 * len(groups)),
                             squeeze=False)
    sections = []
    for row, ((bb, ds, bu), g) in zip(axes, groups):
        cells = []
        for _, r in g.iterrows():
            cell = [method_label(r["method"]), str(int(r["n_seeds"]))]
            for c, _ in METRICS:
                cell += [fmt(r[c]), fmt(r[f"{c}_std"]), f"{fmt(r[f'{c}_min'])} – {fmt(r[f'{c}_max'])}"]
            cells.append(cell)
        gp = gaps(g)
        footer = "; ".join(f"{lbl.split()[0]}: gap between the method means {fmt(gp[c][0])}, "
                           f"largest seed std {fmt(gp[c][1])}" for c, lbl in METRICS)
        header = ["method", "seeds"] + [f"{lbl.split()[0]} {s}" for _, lbl in METRICS for s in ("mean", "std", "range")]
        sections.append({"title": f"backbone {bb}, dataset {ds}, budget {bu}", "header": header, "cells": cells,
                         "footer": footer, "caption": f"Seed-to-seed spread, {bb}, {ds}, {bu}",
                         "label": f"tab:seeds-{bb}-{ds}-{bu}"})
        methods = list(g["method"])
        for ax, (c, lbl) in zip(row, METRICS):
            for i, me in enumerate(methods):
                pts = df[(df["backbone"] == bb) & (df["dataset"] == ds) & (df["budget"].astype(str) == str(bu))
                         & (df["method"] == me)][c].astype(float)
                color = "C3" if me == "sara" else f"C{i}"
                ax.bar(i, pts.mean(), color=color, alpha=0.35, width=0.6)
                ax.scatter(np.full(len(pts), i), pts, color=color, s=18, zorder=3)
            ax.set_xticks(range(len(methods)), [method_label(x) for x in methods])
            lo, hi = float(g[f"{c}_min"].min()), float(g[f"{c}_max"].max())
            pad = 0.5 * (hi - lo) + 0.02 * abs(hi) + 1e-9
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_ylabel(lbl)
            ax.set_title(f"{bb} / {ds} / {bu}", fontsize=9)
    fig.suptitle("Seed-to-seed spread (points: seeds, bars: mean)")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Seed-to-seed spread",
                          "Mean, standard deviation (ddof 1) and range over seeds; the gap between the "
                          "methods' means next to the largest per-method std.")
    return files


if __name__ == "__main__":
    for f in main():
        print(f)
