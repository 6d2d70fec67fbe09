"""Table 8 — SaRA with different thresholds θ on one dataset (paper: Expedition): FID, CLIP
(and VLHI within the sweep), with the trainable share each θ selects.

Reads the `threshold` experiment rows (``threshold`` = θ of the run, from the method record or
``method.threshold``). Writes ``table8_threshold.{md,tex}`` and ``table8_threshold.{png,pdf}``.

    python -m analysis.table8_threshold --results results.csv --out outputs/analysis/threshold
"""
from __future__ import annotations


from .common import (arg_parser, best_mask, fmt, has_metric, load, mean_over_seeds, num, out_dir, paper_other, pyplot,
                     rows_of, save_fig, sci, to_float, vlhi_groups, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, borrowed_spread, combine, compare, evaluate, paper_verdict, verdict_better

NAME = "table8_threshold"


def threshold_table(df):
    d = df.copy()
    d["theta"] = num(d, "threshold")
    d = d[d["theta"].notna()]
    if d.empty:
        return d
    keys = ["backbone", "dataset", "theta"]
    # lr: the rate each θ trained at (Eq. 12 unless overridden)
    m = mean_over_seeds(d, keys, ["fid", "clip_score", "trainable_params", "denoiser_params", "lr"])
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
        if has_metric(g, "lr"):
            cells.append(["learning rate"] + [sci(v) if v == v else "–" for v in g["lr"]])
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


def _threshold_fid(df):
    """C27 as the paper states it: the sweep's smallest θ (a θ below 2e-3) gives a higher FID than
    every θ ≥ 2e-3, each decided by the noise rule (this experiment runs one seed per θ, so it
    borrows SaRA's FID spread, :func:`analysis.verdicts.borrowed_spread`; without one the verdict is
    inconclusive)."""
    d = rows_of(df, "threshold")
    if d.empty or not has_metric(d, "fid"):
        return NOT_RUN, "no `threshold` runs"
    d = d.assign(theta=num(d, "threshold"))
    d = d[d["theta"].notna()]
    small = float(d["theta"].min())
    large = sorted(t for t in d["theta"].unique() if t >= 2e-3 - 1e-12)
    if small >= 2e-3 or not large:
        return NOT_RUN, "the sweep needs a θ below 2e-3 and at least one θ ≥ 2e-3"
    sd, spread = borrowed_spread(df, "fid")
    parts, ev = [], []
    for t in large:
        c = compare(d.loc[d["theta"] == t, "fid"].astype(float), d.loc[d["theta"] == small, "fid"].astype(float),
                    lower_is_better=True, borrowed_sd=sd)
        parts.append(verdict_better(c, "a"))
        ev.append(f"θ {sci(t)} FID {fmt(c.mean_a)} vs θ {sci(small)} {fmt(c.mean_b)} → {parts[-1]}")
    return combine(parts), "; ".join(ev) + f" ({spread})"


def _paper_t8():
    t = paper_other().get("table8")
    if t is None:
        return NOT_RUN, "paper Table 8 not found"
    r = t.set_index("θ").loc["FID"]
    small = min(r.index, key=to_float)
    large = [k for k in r.index if to_float(k) >= 2e-3]
    ok = all(to_float(r[small]) > to_float(r[k]) for k in large)
    return paper_verdict(ok), (f"Table 8: FID at θ = {small} {r[small]} vs θ ≥ 2e-3: "
                               + ", ".join(f"{k}: {r[k]}" for k in large))


CLAIMS = [
    Claim("C27", "A too-small threshold (e.g. 2e-4) gives a much higher FID than thresholds ≥ 2e-3", "Table 8",
          "threshold", _threshold_fid, _paper_t8),
]


def claims(df) -> list[dict]:
    """The records of C27 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
