"""Fig. 2 — zero every |w| < θ of the pre-trained denoiser, FID and CLIP score vs θ, per backbone.

Reads the `pruning` experiment rows of the results table (``prune_threshold``, ``prune_fraction``,
``fid``, ``clip_score``); θ = 0 is the untouched model (dashed line). Writes
``fig2_pruning.{png,pdf}`` and ``fig2_pruning.{md,tex}``.

    python -m analysis.fig2_pruning --results results.csv --out outputs/analysis/pruning
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, fmt, has_metric, load, mean_over_seeds, num, out_dir, pyplot,
                     rows_of, save_fig, sci, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, verdict

NAME = "fig2_pruning"


def pruning_table(df):
    d = df.copy()
    d["theta"] = num(d, "prune_threshold")
    if d["theta"].isna().all():
        d["theta"] = num(d, "threshold")
    d = d[d["theta"].notna()]
    return mean_over_seeds(d, ["backbone", "theta"], ["fid", "clip_score", "prune_fraction"]).sort_values(
        ["backbone", "theta"]).reset_index(drop=True)


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/pruning").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "pruning")
    if df.empty or not has_metric(df, "fid"):
        return write_missing(out, NAME, "no `pruning` runs with FID in the results table")
    m = pruning_table(df)
    if m.empty:
        return write_missing(out, NAME, "pruning runs lack `prune_threshold`")
    plt = pyplot()
    metrics = [("fid", "FID ↓"), ("clip_score", "CLIP score ↑")]
    metrics = [x for x in metrics if has_metric(m, x[0])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.3), squeeze=False)
    pos = m.loc[m["theta"] > 0, "theta"]
    lin = float(pos.min()) if len(pos) else 1e-4
    for ax, (col, label) in zip(axes[0], metrics):
        for i, (bb, g) in enumerate(m.groupby("backbone", sort=True)):
            c = f"C{i}"
            ax.plot(g["theta"], g[col], "o-", color=c, label=str(bb), ms=3.5)
            base = g.loc[g["theta"] == 0, col]
            if len(base):
                ax.axhline(float(base.iloc[0]), color=c, ls="--", lw=0.8, alpha=0.7)
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_xlim(left=0, right=float(m["theta"].max()) * 1.3 if m["theta"].max() > 0 else None)
        vals = m[col].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if col == "fid" and len(vals) and vals.max() / vals.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("threshold θ (entries with |w| < θ set to 0)")
        ax.set_ylabel(label)
    axes[0][0].legend(title="backbone", fontsize=8)
    fig.suptitle("Fig. 2 — pruning the smallest parameters (dashed: unpruned model)")
    files = save_fig(fig, out, NAME)

    sections = []
    for bb, g in m.groupby("backbone", sort=True):
        base = g.loc[g["theta"] == 0]
        f0 = float(base["fid"].iloc[0]) if len(base) else np.nan
        c0 = float(base["clip_score"].iloc[0]) if len(base) and "clip_score" in g else np.nan
        cells = []
        for _, r in g.iterrows():
            frac = r.get("prune_fraction", np.nan)
            cells.append([sci(r["theta"]), fmt(100 * frac, 2) if np.isfinite(frac) else "–", fmt(r["fid"]),
                          fmt(100 * (r["fid"] - f0) / f0, 1) if np.isfinite(f0) else "–",
                          fmt(r.get("clip_score", np.nan)),
                          fmt(r.get("clip_score", np.nan) - c0) if np.isfinite(c0) else "–"])
        sections.append({"title": f"backbone {bb}", "header": ["θ", "pruned %", "FID", "ΔFID %", "CLIP", "ΔCLIP"],
                         "cells": cells, "caption": f"Pruning |w| < θ, backbone {bb} (Fig. 2)",
                         "label": f"tab:pruning-{bb}"})
    files += write_tables(out, NAME, sections, "Fig. 2 — pruning the smallest parameters")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


# "Minimally affected" is a bound on the loss of generative ability: FID may rise by at most
# PRUNE_FID_TOL (relative) and CLIP fall by at most PRUNE_CLIP_TOL points; a gain is no loss (the
# paper's next sentence, C15, has pruned models even outperform the original).
PRUNE_FID_TOL = 0.05
PRUNE_CLIP_TOL = 0.5
PRUNE_MAX_FRACTION = 0.20


PRUNE_MAX_THETA = 2e-3  # used when the runs did not record the pruned fraction


def _pruned_means(df):
    """Means per (backbone, θ) of the runs that recorded ``prune_threshold``; None when none did."""
    d = rows_of(df, "pruning")
    if d.empty or not has_metric(d, "fid"):
        return None
    d = d.assign(theta=num(d, "prune_threshold"))
    d = d[d["theta"].notna()]
    return mean_over_seeds(d, ["backbone", "theta"], ["fid", "clip_score", "prune_fraction"]) if len(d) else None


def _pruning_barely(df):
    m = _pruned_means(df)
    if m is None:
        return NOT_RUN, "no `pruning` runs"
    rows, ok, any_ = [], True, False
    for bb, g in m.groupby("backbone"):
        base = g[g["theta"] == 0]
        if base.empty:
            continue
        f0 = float(base["fid"].iloc[0])
        c0 = float(base["clip_score"].iloc[0]) if "clip_score" in g else np.nan
        use_frac = g["prune_fraction"].notna().any() if "prune_fraction" in g else False
        sel = g[(g["theta"] > 0) & ((g["prune_fraction"] <= PRUNE_MAX_FRACTION) if use_frac else (g["theta"] <= PRUNE_MAX_THETA))]
        if sel.empty:
            continue
        any_ = True
        dfid = max(0.0, float(((sel["fid"] - f0) / f0).max()))
        dclip = max(0.0, float((c0 - sel["clip_score"]).max())) if np.isfinite(c0) else 0.0
        good = dfid <= PRUNE_FID_TOL and dclip <= PRUNE_CLIP_TOL
        ok &= good
        lim = f"pruned ≤ {PRUNE_MAX_FRACTION:.0%}" if use_frac else f"θ ≤ {sci(PRUNE_MAX_THETA)}"
        rows.append(f"{bb} ({lim}, up to θ = {sci(sel['theta'].max())}): largest FID rise {fmt(100 * dfid, 1)}%, "
                    f"largest CLIP fall {fmt(dclip)}")
    if not any_:
        return NOT_RUN, "no pruning run with θ > 0 in range and an unpruned (θ = 0) reference"
    return verdict(ok), (f"tolerance: FID rise ≤ {PRUNE_FID_TOL:.0%}, CLIP fall ≤ {PRUNE_CLIP_TOL} (a gain is no loss) — "
                         + "; ".join(rows))


def _pruning_improves(df):
    m = _pruned_means(df)
    if m is None:
        return NOT_RUN, "no `pruning` runs"
    rows, ok = [], False
    for bb, g in m.groupby("backbone"):
        base = g[g["theta"] == 0]
        if base.empty:
            continue
        f0 = float(base["fid"].iloc[0])
        better = g[(g["theta"] > 0) & (g["fid"] < f0)]
        ok |= len(better) > 0
        rows.append(f"{bb}: unpruned FID {fmt(f0)}, best pruned {fmt(g[g['theta'] > 0]['fid'].min())}"
                    + (f" at θ = {sci(better.loc[better['fid'].idxmin(), 'theta'])}" if len(better) else ""))
    if not rows:
        return NOT_RUN, "no unpruned reference (θ = 0)"
    return verdict(ok), "; ".join(rows)


CLAIMS = [
    Claim("C14", f"Zeroing the entries with |w| < θ (up to ~{PRUNE_MAX_FRACTION:.0%} of the parameters) barely worsens "
                 f"FID and CLIP", "Fig. 2, Sec. 3.1", "pruning", _pruning_barely),
    Claim("C15", "Some pruning thresholds even improve FID slightly", "Fig. 2", "pruning", _pruning_improves,
          trivial="any pruned FID below the unpruned one passes, which sampling noise alone produces; it needs the improvement to exceed the noise"),
]


def claims(df) -> list[dict]:
    """The records of C14, C15 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
