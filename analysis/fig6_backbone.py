"""Fig. 6 — continued training of each backbone on its own pre-training data with each method: FID.

Reads the `backbone` experiment rows (``fid`` per method); the untouched model is the run of
variant ``pretrained`` (``experiment_name=backbone--pretrained train.steps=0``). Writes
``fig6_backbone.{png,pdf}`` and ``fig6_backbone.{md,tex}``.

    python -m analysis.fig6_backbone --results results.csv --out outputs/analysis/backbone
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, best_mask, fmt, has_metric, load, mean_over_seeds, method_label,
                     method_sort_key, out_dir, pyplot, rows_of, save_fig, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, combine, compare, evaluate, verdict_better

NAME = "fig6_backbone"


def backbone_table(df):
    d = df.copy()
    d["label"] = [("Pre-trained" if str(v) == "pretrained" else method_label(m) + (f" ({v})" if v else ""))
                  for m, v in zip(d["method"], d["variant"])]
    d["order"] = [(-1, "") if str(v) == "pretrained" else method_sort_key(m) for m, v in zip(d["method"], d["variant"])]
    m = mean_over_seeds(d, ["backbone", "label", "method", "variant", "budget"], ["fid", "clip_score", "trainable_params"])
    m["order"] = [(-1, "") if str(v) == "pretrained" else method_sort_key(me) for me, v in zip(m["method"], m["variant"])]
    return m.sort_values(["backbone", "order"]).reset_index(drop=True)


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/backbone").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "backbone")
    if df.empty or not has_metric(df, "fid"):
        return write_missing(out, NAME, "no `backbone` runs with FID in the results table")
    m = backbone_table(df)
    plt = pyplot()
    bbs = list(dict.fromkeys(m["backbone"]))
    fig, axes = plt.subplots(1, len(bbs), figsize=(max(4.0, 0.8 * m["label"].nunique() + 1.5) * len(bbs), 3.4),
                             squeeze=False)
    sections = []
    for ax, bb in zip(axes[0], bbs):
        g = m[m["backbone"] == bb].reset_index(drop=True)
        colors = ["0.6" if lbl == "Pre-trained" else ("C3" if me == "sara" else "C0")
                  for lbl, me in zip(g["label"], g["method"])]
        # error bars only where a spread over seeds exists (one seed: no bar, not a zero-length one)
        err = g["fid_std"].to_numpy() if "fid_std" in g and g["fid_std"].notna().any() else None
        ax.bar(range(len(g)), g["fid"], color=colors, yerr=err, capsize=2)
        ax.set_xticks(range(len(g)), g["label"], rotation=30, ha="right")
        lo, hi = float(np.nanmin(g["fid"])), float(np.nanmax(g["fid"]))
        ax.set_ylim(max(0.0, lo - 0.3 * (hi - lo + 1e-9) - 0.05 * lo), hi + 0.2 * (hi - lo + 1e-9) + 0.02 * hi)
        ax.set_ylabel("FID ↓")
        ax.set_title(f"backbone {bb}")
        best = best_mask(list(g["fid"]), True)
        cells = [[r["label"], str(r["budget"]), fmt(r["fid"]),
                  fmt(r.get("fid_std", np.nan)), fmt(r.get("clip_score", np.nan)),
                  fmt(r.get("trainable_params", np.nan), 0), str(int(r["n_seeds"]))] for _, r in g.iterrows()]
        bold = [[False, False, b, False, False, False, False] for b in best]
        sections.append({"title": f"backbone {bb}", "header": ["method", "budget", "FID", "FID std", "CLIP",
                                                               "trainable", "seeds"],
                         "cells": cells, "bold": bold, "caption": f"Continued training on the pre-training data, {bb} (Fig. 6)"})
    fig.suptitle("Fig. 6 — FID after continued training on the pre-training data (lower is better)")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Fig. 6 — backbone enhancement", "Best FID in bold.")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _backbone_best(df):
    """C18: SaRA's FID below every other method's, each pair by the noise rule over seeds. No spread
    is borrowed: the pre-training domain's FID lives on another scale than the style sets', so a
    single seed leaves the comparison inconclusive."""
    d = rows_of(df, "backbone")
    if d.empty or not has_metric(d, "fid"):
        return NOT_RUN, "no `backbone` runs"
    d = d.assign(label=[("pretrained" if v == "pretrained" else m) for m, v in zip(d["method"], d["variant"])])
    m = mean_over_seeds(d, ["backbone", "label"], ["fid"])
    rows, parts = [], []
    for bb, g in m.groupby("backbone"):
        t = g[g["label"] != "pretrained"]
        if "sara" not in set(t["label"]) or len(t) < 2:
            return NOT_RUN, "needs SaRA and another method"
        best = t.loc[t["fid"].idxmin(), "label"]
        pre = g[g["label"] == "pretrained"]["fid"]
        runs = d[(d["backbone"] == bb) & (d["label"] != "pretrained")]
        pairs = []
        for other in sorted(set(t["label"]) - {"sara"}):
            c = compare(runs.loc[runs["label"] == "sara", "fid"].astype(float),
                        runs.loc[runs["label"] == other, "fid"].astype(float), lower_is_better=True)
            parts.append(verdict_better(c, "a"))
            pairs.append(c.describe("fid", ("SaRA", method_label(other))))
        rows.append(f"{bb}: best {method_label(best)} {fmt(t['fid'].min())}, SaRA "
                    f"{fmt(float(t[t['label'] == 'sara']['fid'].iloc[0]))}"
                    + (f", pre-trained {fmt(float(pre.iloc[0]))}" if len(pre) else "")
                    + f" (seeds per method: {int(runs.groupby('label').size().min())}); " + "; ".join(pairs))
    return combine(parts), "; ".join(rows)


CLAIMS = [
    Claim("C18", "SaRA gives the best FID when continuing training on the pre-training data", "Fig. 6", "backbone",
          _backbone_best),
]


def claims(df) -> list[dict]:
    """The records of C18 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
