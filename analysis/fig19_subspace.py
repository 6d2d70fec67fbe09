"""Figs. 19, 20, 25–27 — subspace similarity φ(A, B, i, j) (SPEC Eq. 11) heatmaps.

Fig. 19: φ(W0, W, i, j) between the pre-trained matrix and the fine-tuned one for SaRA, LoRA and a
random reference, per layer. Figs. 20/25–27 (when the runs recorded the singular vectors of ΔW,
``delta_u``): φ(ΔW_a, ΔW_b, i, j) between SaRA deltas of two budgets (two thresholds).

Reads the `analysis` experiment rows (JSON cell ``subspace`` = ``sara.analysis_math.subspace_report``
records ``{"layer", "phi", "phi_random", "delta_u"?}``). Only numpy maths on recorded vectors, no
model. Writes ``fig19_subspace.{png,pdf}``, ``fig20_delta_subspace.{png,pdf}`` (when possible) and
``fig19_subspace.{md,tex}`` (mean φ per method/layer).

    python -m analysis.fig19_subspace --results results.csv --out outputs/analysis/analysis
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (arg_parser, budget_sort_key, decode_col, fmt, load, method_label, method_sort_key,
                     out_dir, pyplot, rows_of, save_fig, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, verdict

NAME = "fig19_subspace"


def short_layer(name: str) -> str:
    parts = name.replace(".weight", "").split(".")
    return ".".join(parts[:2] + parts[-2:]) if len(parts) > 4 else ".".join(parts)


def collect(df):
    """{(backbone, method, budget): {layer: record}} from the subspace cells."""
    out = {}
    for (_, r), recs in zip(df.iterrows(), decode_col(df, "subspace")):
        if not recs:
            continue
        key = (r["backbone"], r["method"], str(r["budget"]), int(r["seed"]) if r["seed"] == r["seed"] else 0)
        out[key] = {x["layer"]: x for x in recs}
    return out


def mean_phi(grid) -> float:
    a = np.asarray(grid, dtype=float)
    return float(np.nanmean(a)) if a.size else float("nan")


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/analysis")
    ap.add_argument("--budget", default=None, help="budget whose SaRA/LoRA runs Fig. 19 shows (default: the largest)")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "analysis")
    data = collect(df) if len(df) else {}
    if not data:
        return write_missing(out, NAME, "no `analysis` runs with a recorded `subspace` report")
    plt = pyplot()
    files = []
    keys = sorted(data, key=lambda k: (k[0], method_sort_key(k[1]), budget_sort_key(k[2]), k[3]))
    budgets = sorted({k[2] for k in keys}, key=budget_sort_key)
    budget = args.budget or budgets[-1]
    bb0 = keys[0][0]
    shown = [k for k in keys if k[0] == bb0 and k[2] == budget and k[3] == min(x[3] for x in keys)]
    layers = sorted({lay for k in shown for lay in data[k]})
    cols = [(method_label(k[1]) + f" ({k[2]})", data[k]) for k in shown]
    cols.append(("random", {lay: {"phi": rec.get("phi_random")} for lay, rec in data[shown[0]].items()}))
    first = data[shown[0]]
    if any(rec.get("phi_w0_random") is not None for rec in first.values()):  # recorded since C20's reference
        cols.append(("W0 + random update", {lay: {"phi": rec.get("phi_w0_random")} for lay, rec in first.items()}))
    fig, axes = plt.subplots(len(layers), len(cols), figsize=(2.7 * len(cols), 2.8 * len(layers)), squeeze=False)
    im = None
    for i, lay in enumerate(layers):
        for j, (title, recs) in enumerate(cols):
            ax = axes[i][j]
            g = recs.get(lay, {}).get("phi")
            if g is None:
                ax.axis("off")
                continue
            a = np.asarray(g, dtype=float)
            im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis", origin="lower",
                           extent=(0.5, a.shape[1] + 0.5, 0.5, a.shape[0] + 0.5))
            ax.grid(False)
            ax.set_title(f"{title}\n{short_layer(lay)}", fontsize=7)
            ax.set_xlabel("j (W)", fontsize=7)
            ax.set_ylabel("i (W0)", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="φ")
    fig.suptitle(f"Fig. 19 — φ(W0, W, i, j), backbone {bb0}, budget {budget}")
    files += save_fig(fig, out, NAME)

    # Fig. 20/25–27: ΔW of SaRA at two budgets (thresholds), from the recorded singular vectors
    from sara.analysis_math import subspace_similarity_grid

    sara_keys = [k for k in keys if k[0] == bb0 and k[1] == "sara" and k[3] == min(x[3] for x in keys)]
    sara_keys = sorted(sara_keys, key=lambda k: budget_sort_key(k[2]))
    pairs = [(sara_keys[a], sara_keys[b]) for a in range(len(sara_keys)) for b in range(a + 1, len(sara_keys))]
    delta_cells = []
    pairs = [(ka, kb) for ka, kb in pairs
             if any("delta_u" in data[ka].get(lay, {}) and "delta_u" in data[kb].get(lay, {}) for lay in layers)]
    if pairs:
        # one row per budget pair, one column per layer: a single pair reads as one strip
        fig2, axes2 = plt.subplots(len(pairs), len(layers), figsize=(2.7 * len(layers) + 1, 2.9 * len(pairs) + 0.4),
                                   squeeze=False)
        for j, (ka, kb) in enumerate(pairs):
            for i, lay in enumerate(layers):
                ax = axes2[j][i]
                ua, ub = data[ka].get(lay, {}).get("delta_u"), data[kb].get(lay, {}).get("delta_u")
                if ua is None or ub is None:
                    ax.axis("off")
                    continue
                a = subspace_similarity_grid(np.asarray(ua), np.asarray(ub), u_given=True)
                im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis", origin="lower",
                               extent=(0.5, a.shape[1] + 0.5, 0.5, a.shape[0] + 0.5))
                ax.grid(False)
                ax.set_title(f"ΔW {ka[2]} vs {kb[2]}\n{short_layer(lay)}", fontsize=7)
                ax.set_xlabel(f"j (ΔW {kb[2]})", fontsize=7)
                ax.set_ylabel(f"i (ΔW {ka[2]})", fontsize=7)
                delta_cells.append([f"ΔW({ka[2]}) vs ΔW({kb[2]})", short_layer(lay), fmt(float(a.mean()), 3)])
        fig2.colorbar(im, ax=axes2, shrink=0.6, label="φ")
        fig2.suptitle("Fig. 20 — φ between SaRA deltas of two budgets", fontsize=10)
        files += save_fig(fig2, out, "fig20_delta_subspace")

    cells = []
    for k in keys:
        for lay, rec in data[k].items():
            cells.append([str(k[0]), method_label(k[1]), k[2], str(k[3]), short_layer(lay), fmt(mean_phi(rec.get("phi")), 3),
                          fmt(mean_phi(rec.get("phi_random")), 3)])
    sections = [{"title": "mean φ(W0, W, i, j) over the grid", "header": ["backbone", "method", "budget", "seed", "layer",
                                                                         "mean φ(W0, W)", "mean φ(W0, random)"],
                 "cells": cells, "n_index": 5, "caption": "Mean subspace similarity with W0 (Fig. 19)"}]
    if delta_cells:
        sections.append({"title": "mean φ(ΔW_a, ΔW_b, i, j) over the grid", "header": ["pair", "layer", "mean φ"],
                         "cells": delta_cells, "n_index": 2, "caption": "Mean subspace similarity of SaRA deltas (Fig. 20)"})
    files += write_tables(out, NAME, sections, "Figs. 19/20 — subspace similarity (SPEC Eq. 11)")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _subspace_means(df):
    d = rows_of(df, "analysis")
    out = []
    for (_, r), recs in zip(d.iterrows(), decode_col(d, "subspace")):
        for x in recs or []:
            out.append({"backbone": r["backbone"], "method": r["method"], "budget": str(r["budget"]), "layer": x["layer"],
                        "phi": float(np.mean(x["phi"])),
                        **{k: float(np.mean(x[k])) if x.get(k) is not None else np.nan
                           for k in ("phi_random", "phi_w0_random")}})
    return pd.DataFrame(out)


def _sara_more_similar(df):
    s = _subspace_means(df)
    if s.empty or not {"sara", "lora"} <= set(s["method"]):
        return NOT_RUN, "needs `analysis` runs of SaRA and LoRA with a subspace report"
    rows, ok = [], True
    for (bb, bu), g in s.groupby(["backbone", "budget"]):
        a, b = g[g["method"] == "sara"]["phi"].mean(), g[g["method"] == "lora"]["phi"].mean()
        if np.isfinite(a) and np.isfinite(b):
            ok &= a > b
            rows.append(f"{bb} {bu}: mean φ(W0, W) SaRA {fmt(a, 3)} vs LoRA {fmt(b, 3)}")
    if not rows:
        return NOT_RUN, "no budget with both SaRA and LoRA"
    return verdict(ok), "; ".join(rows)


RANDOM_NEAR_ZERO = 0.5  # "approaches zero": at most half the similarity of an unchanged W0 (φ = 1)


def _random_low(df):
    """C20 with the paper's reference, W0 plus a random update as large as SaRA's learned one: its
    similarity to W0 must lie below SaRA's and LoRA's and near zero (< RANDOM_NEAR_ZERO)."""
    s = _subspace_means(df)
    if s.empty or "phi_w0_random" not in s or s.loc[s["method"] == "sara", "phi_w0_random"].isna().all():
        return NOT_RUN, ("needs `analysis` runs of SaRA whose subspace report has the same-norm random update "
                         "(phi_w0_random; runs made before it was recorded need overwrite=true)")
    rows, ok = [], True
    for (bb, bu), g in s.groupby(["backbone", "budget"]):
        r = float(g.loc[g["method"] == "sara", "phi_w0_random"].mean())
        if not np.isfinite(r):
            continue
        lo = float(g.groupby("method")["phi"].mean().min())
        ok &= r < lo and r < RANDOM_NEAR_ZERO
        rows.append(f"{bb} {bu}: mean φ(W0, W0 + R) {fmt(r, 3)} (R random, SaRA's update norm) vs lowest method "
                    f"{fmt(lo, 3)}; near zero means < {RANDOM_NEAR_ZERO}; a standalone random matrix: "
                    f"{fmt(float(g['phi_random'].mean()), 3)}")
    return verdict(ok), "; ".join(rows)


CLAIMS = [
    Claim("C19", "SaRA-updated W is more similar to W0 than LoRA-updated W", "Fig. 19", "analysis", _sara_more_similar),
    Claim("C20", "A random update as large as SaRA's leaves W with a similarity to W0 near zero, below SaRA's and LoRA's",
          "Fig. 19", "analysis", _random_low),
]


def claims(df) -> list[dict]:
    """The records of C19, C20 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
