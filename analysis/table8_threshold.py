"""Table 8 — SaRA with different thresholds θ on one dataset (paper: Expedition): FID, CLIP
(and VLHI within the sweep), with the trainable share each θ selects.

Reads the `threshold` experiment rows (``threshold`` = θ of the run, from the method record or
``method.threshold``). Writes ``table8_threshold.{md,tex}`` and ``table8_threshold.{png,pdf}``.

    python -m analysis.table8_threshold --results results.csv --out outputs/analysis/threshold
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, best_mask, fmt, has_metric, load, mean_over_seeds, num, out_dir, paper_other, pyplot,
                     rows_of, save_fig, sci, to_float, vlhi_groups, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, paper_verdict, verdict

NAME = "table8_threshold"


def threshold_table(df):
    d = df.copy()
    d["theta"] = num(d, "threshold")
    d = d[d["theta"].notna()]
    if d.empty:
        return d
    keys = ["backbone", "dataset", "theta"]
    m = mean_over_seeds(d, keys, ["fid", "clip_score", "trainable_params", "denoiser_params"])
    m = vlhi_groups(m, ["backbone", "dataset"], "fid", "clip_score", "vlhi")
    return m.sort_values(keys).reset_index(drop=True)


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/threshold").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "threshold")
    if df.empty or not has_metric(df, "fid", "clip_score"):
        return write_missing(out, NAME, "no `threshold` runs with FID and CLIP in the results table")
    m = threshold_table(df)
    if m.empty:
        return write_missing(out, NAME, "threshold runs lack the threshold value")
    plt = pyplot()
    groups = list(m.groupby(["backbone", "dataset"], sort=True))
    fig, axes = plt.subplots(1, 2, figsize=(8.8, 3.2))
    sections = []
    for k, ((bb, ds), g) in enumerate(groups):
        g = g.reset_index(drop=True)
        th = [sci(t) for t in g["theta"]]
        share = (100 * g["trainable_params"] / g["denoiser_params"]) if has_metric(g, "denoiser_params") else None
        rows = [("FID", g["fid"], True), ("CLIP", g["clip_score"], False), ("VLHI", g["vlhi"], False)]
        cells, bold = [], []
        for name, vals, lower in rows:
            cells.append([name] + [fmt(v) for v in vals])
            bold.append([False] + best_mask(list(vals), lower))
        if share is not None:
            cells.append(["trainable %"] + [fmt(v, 2) for v in share])
            bold.append([False] * (len(th) + 1))
        sections.append({"title": f"backbone {bb}, dataset {ds}", "header": ["θ"] + th, "cells": cells, "bold": bold,
                         "caption": f"Threshold sweep, {bb} / {ds} (Table 8)", "label": f"tab:threshold-{bb}-{ds}"})
        axes[0].plot(g["theta"], g["fid"], "o-", color=f"C{k}", label=f"{bb}/{ds}")
        axes[1].plot(g["theta"], g["clip_score"], "o-", color=f"C{k}", label=f"{bb}/{ds}")
    for ax, lab in zip(axes, ("FID ↓", "CLIP ↑")):
        ax.set_xscale("log")
        ax.set_xlabel("threshold θ")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    fig.suptitle("Table 8 — threshold sweep")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Table 8 — threshold", "Best per row in bold; VLHI within the sweep.")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _threshold_clip(df):
    d = rows_of(df, "threshold")
    if d.empty or not has_metric(d, "clip_score"):
        return NOT_RUN, "no `threshold` runs"
    d = d.assign(theta=num(d, "threshold"))
    m = mean_over_seeds(d[d["theta"].notna()], ["theta"], ["clip_score"])
    if not np.isclose(m["theta"], 2e-3).any():
        return NOT_RUN, "θ = 2e-3 not in the sweep"
    best = float(m.loc[m["clip_score"].idxmax(), "theta"])
    return verdict(np.isclose(best, 2e-3)), "CLIP per θ: " + ", ".join(f"{sci(t)}: {fmt(c)}" for t, c in zip(m["theta"], m["clip_score"]))


def _paper_t8():
    t = paper_other().get("table8")
    if t is None:
        return NOT_RUN, "paper Table 8 not found"
    r = t.set_index("θ").loc["CLIP"]
    best = max(r.index, key=lambda k: to_float(r[k]))
    return paper_verdict(to_float(best) == 2e-3), f"Table 8: best CLIP at θ = {best} ({r[best]})"


CLAIMS = [
    Claim("C27", "θ = 2e-3 gives the best CLIP score of the threshold sweep", "Table 8", "threshold", _threshold_clip,
          _paper_t8),
]


def claims(df) -> list[dict]:
    """The records of C27 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
