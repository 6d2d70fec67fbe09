"""Fig. 17 — merging the SaRA deltas of two datasets, W = W0 + β1·ΔP1 + β2·ΔP2 (App. G).

Each `merging` run samples with ``W0 + β1·ΔP_D + β2·ΔP_E`` (D = ``data.name``, E =
``delta.merge_with``) and is evaluated against D. Running each pair in both orders gives the
merged model's FID against both datasets. For every pair the figure shows FID against each of the
two datasets for: the base model (β = 0, 0), D only, E only, and D + E. Writes
``fig17_merging.{png,pdf}`` and ``fig17_merging.{md,tex}``.

    python -m analysis.fig17_merging --results results.csv --out outputs/analysis/merging
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (arg_parser, fmt, has_metric, load, mean_over_seeds, num, out_dir, pyplot, rows_of,
                     save_fig, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, borrowed_spread, combine, compare, evaluate, verdict_better

NAME = "fig17_merging"


def merging_long(df):
    """Rows (backbone, pair, model, target, fid, clip_score); ``model`` is ``base`` (β1 = β2 = 0), a
    dataset name, or ``A+B`` (pair order), a β other than 1 written in front of its dataset
    (``0.5·A+0.5·B``); ``target`` is the dataset the metrics are against."""
    d = df.copy()
    d["b1"], d["b2"] = num(d, "beta1"), num(d, "beta2")
    d = d[d["b1"].notna() & d["b2"].notna() & d["merge_with"].notna()]
    if d.empty:
        return d
    m = mean_over_seeds(d, ["backbone", "dataset", "merge_with", "b1", "b2"], ["fid", "clip_score"])
    rows = []
    for _, r in m.iterrows():
        a, b = sorted([str(r["dataset"]), str(r["merge_with"])])
        beta = {str(r["merge_with"]): r["b2"], str(r["dataset"]): r["b1"]}
        on = [x for x in (a, b) if beta[x] > 0]
        model = "+".join(x if beta[x] == 1 else f"{beta[x]:g}·{x}" for x in on) or "base"
        rows.append({"backbone": r["backbone"], "pair": f"{a}+{b}", "model": model, "target": r["dataset"],
                     "fid": r["fid"], "clip_score": r.get("clip_score", np.nan)})
    return pd.DataFrame(rows)


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/merging").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "merging")
    if df.empty or not has_metric(df, "fid"):
        return write_missing(out, NAME, "no `merging` runs with FID in the results table")
    m = merging_long(df)
    if m.empty:
        return write_missing(out, NAME, "merging runs lack delta.merge_with / beta1 / beta2")
    plt = pyplot()
    keys = list(dict.fromkeys(zip(m["backbone"], m["pair"])))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 4.0), squeeze=False)
    sections = []
    for ax, (bb, pair) in zip(axes[0], keys):
        g = m[(m["backbone"] == bb) & (m["pair"] == pair)]
        a, b = pair.split("+")
        models = [x for x in ("base", a, b, pair) if x in set(g["model"])]
        models += sorted(set(g["model"]) - set(models))  # other β (e.g. 0.5·A+0.5·B)
        targets = [t for t in (a, b) if t in set(g["target"])]
        w = 0.8 / max(1, len(targets))
        cells = []
        for k, t in enumerate(targets):
            ys = [g[(g["model"] == mo) & (g["target"] == t)]["fid"] for mo in models]
            ys = [float(y.iloc[0]) if len(y) else np.nan for y in ys]
            ax.bar(np.arange(len(models)) + (k - (len(targets) - 1) / 2) * w, ys, w, label=f"FID vs {t}")
        ax.set_xticks(range(len(models)), [x.replace("+", "+\n") for x in models], fontsize=7, rotation=35,
                      ha="right", rotation_mode="anchor")
        ax.set_ylabel("FID ↓")
        ax.set_title(f"{bb}: {a} + {b}", fontsize=9)
        ax.legend(fontsize=7)
        for mo in models:
            row = [mo]
            for t in (a, b):
                h = g[(g["model"] == mo) & (g["target"] == t)]
                row += [fmt(h["fid"].iloc[0]) if len(h) else "–", fmt(h["clip_score"].iloc[0]) if len(h) else "–"]
            cells.append(row)
        sections.append({"title": f"{bb}: {a} + {b}", "header": ["model", f"FID vs {a}", f"CLIP ({a} runs)",
                                                                  f"FID vs {b}", f"CLIP ({b} runs)"],
                         "cells": cells, "caption": f"Merging SaRA deltas {a} + {b}, {bb} (Fig. 17)"})
    fig.suptitle("Fig. 17 — merging two datasets' deltas (β = 1 unless written before a dataset)")
    files = save_fig(fig, out, NAME)
    files += write_tables(out, NAME, sections, "Fig. 17 — merging SaRA deltas",
                          "A merged model has both styles when its FID against each dataset is close to that "
                          "dataset's own model and below the base model's.")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _merging(df):
    """C24: the merged model's FID against each of the two sets below the base model's, each by the
    noise rule (one run each: SaRA's FID seed spread borrowed, :func:`analysis.verdicts.borrowed_spread`)."""
    d = rows_of(df, "merging")
    m = merging_long(d) if len(d) and has_metric(d, "fid") else pd.DataFrame()
    if m.empty:
        return NOT_RUN, "no `merging` runs"
    sd, spread = borrowed_spread(df, "fid")
    rows, parts = [], []
    for (bb, pair), g in m.groupby(["backbone", "pair"]):
        for t in pair.split("+"):
            mg = g[(g["model"] == pair) & (g["target"] == t)]["fid"].astype(float)
            base = g[(g["model"] == "base") & (g["target"] == t)]["fid"].astype(float)
            if len(mg) and len(base):
                c = compare(mg, base, lower_is_better=True, borrowed_sd=sd)
                parts.append(verdict_better(c, "a"))
                rows.append(f"{pair} vs {t}: " + c.describe("FID", ("merged", "base")))
                # other merge weights (e.g. β = 0.5, 0.5) are shown, not judged: the claim is about β = 1
                other = g[(g["model"] != pair) & g["model"].str.contains("+", regex=False) & (g["target"] == t)]
                rows += [f"{r.model} vs {t}: {fmt(r.fid)}" for r in other.itertuples()]
    if not parts:
        return NOT_RUN, "needs merged (β = 1, 1) and base (β = 0, 0) runs"
    return combine(parts), "; ".join(rows) + f" ({spread})"


CLAIMS = [
    Claim("C24", "A merged delta of two datasets carries both styles (FID against each below the base model's)",
          "Fig. 17, App. G", "merging", _merging),
]


def claims(df) -> list[dict]:
    """The records of C24 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
