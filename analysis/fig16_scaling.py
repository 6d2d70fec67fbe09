"""Fig. 16 — scaling the learned SaRA delta, W = W0 + α·ΔP (App. F): FID and CLIP vs α per dataset.

Reads the `scaling` experiment rows (``alpha`` from ``delta.alpha``). Writes
``fig16_scaling.{png,pdf}`` and ``fig16_scaling.{md,tex}``.

    python -m analysis.fig16_scaling --results results.csv --out outputs/analysis/scaling
"""
from __future__ import annotations

import numpy as np

from .common import (DATASETS, arg_parser, fmt, has_metric, load, mean_over_seeds, num, out_dir, pyplot,
                     rows_of, save_fig, sci, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, spearman, verdict

NAME = "fig16_scaling"


def scaling_table(df):
    d = df.copy()
    d["alpha"] = num(d, "alpha")
    d = d[d["alpha"].notna()]
    return mean_over_seeds(d, ["backbone", "dataset", "alpha"], ["fid", "clip_score"]).sort_values(
        ["backbone", "dataset", "alpha"]).reset_index(drop=True)


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/scaling").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "scaling")
    if df.empty or not has_metric(df, "fid"):
        return write_missing(out, NAME, "no `scaling` runs with FID in the results table")
    m = scaling_table(df)
    if m.empty:
        return write_missing(out, NAME, "scaling runs lack `alpha` (delta.alpha)")
    plt = pyplot()
    bbs = list(dict.fromkeys(m["backbone"]))
    fig, axes = plt.subplots(len(bbs), 2, figsize=(8.8, 3.2 * len(bbs)), squeeze=False)
    sections = []
    for row, bb in zip(axes, bbs):
        g = m[m["backbone"] == bb]
        dss = [d for d in DATASETS if d in set(g["dataset"])] + sorted(set(g["dataset"]) - set(DATASETS))
        for k, ds in enumerate(dss):
            h = g[g["dataset"] == ds]
            row[0].plot(h["alpha"], h["fid"], "o-", ms=3, color=f"C{k}", label=ds)
            if "clip_score" in h:
                row[1].plot(h["alpha"], h["clip_score"], "o-", ms=3, color=f"C{k}", label=ds)
        for ax, lab in zip(row, ("FID ↓", "CLIP ↑")):
            ax.set_xlabel("scale α of the learned ΔP")
            ax.set_ylabel(lab)
            ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
            ax.set_title(f"backbone {bb}", fontsize=9)
        row[0].legend(fontsize=7)
        alphas = sorted(set(g["alpha"]))
        cells = []
        for ds in dss:
            h = g[g["dataset"] == ds].set_index("alpha")
            cells.append([ds, "FID"] + [fmt(h["fid"].get(a)) for a in alphas])
            cells.append([ds, "CLIP"] + [fmt(h["clip_score"].get(a)) if "clip_score" in h else "–" for a in alphas])
        sections.append({"title": f"backbone {bb}", "header": ["dataset", "metric"] + [f"α={sci(a)}" for a in alphas],
                         "cells": cells, "n_index": 2, "caption": f"Scaling the SaRA delta, {bb} (Fig. 16)"})
    fig.suptitle("Fig. 16 — W = W0 + α·ΔP")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Fig. 16 — scaling the SaRA delta")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _scaling(df):
    d = rows_of(df, "scaling")
    if d.empty or not has_metric(d, "fid", "clip_score") or num(d, "alpha").isna().all():
        return NOT_RUN, "no `scaling` runs"
    d = d.assign(alpha=num(d, "alpha"))
    m = mean_over_seeds(d, ["backbone", "dataset", "alpha"], ["fid", "clip_score"])
    rows, nf, nc, n = [], 0, 0, 0
    for (bb, ds), g in m.groupby(["backbone", "dataset"]):
        rf, rc = spearman(g["alpha"], g["fid"]), spearman(g["alpha"], g["clip_score"])
        if np.isfinite(rf) and np.isfinite(rc):
            n += 1
            nf += rf < 0
            nc += rc < 0
            rows.append(f"{ds}: ρ(α, FID) {fmt(rf)}, ρ(α, CLIP) {fmt(rc)}")
    if not n:
        return NOT_RUN, "too few α values"
    ok = nf > n / 2 and nc > n / 2
    return verdict(ok), f"FID falls with α on {nf}/{n} datasets, CLIP falls on {nc}/{n} — " + "; ".join(rows)


CLAIMS = [
    Claim("C23", "Scaling the delta up (α) adds target-style features (FID falls) and loses text alignment (CLIP falls)",
          "Fig. 16, App. F", "scaling", _scaling),
]


def claims(df) -> list[dict]:
    """The records of C23 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
