"""Table 9 — SaRA with and without the nuclear-norm rank loss (paper: Cyberpunk, ElementFire).

Reads the `ablation` experiment rows of methods ``sara`` and ``sara_no_rank`` on every dataset
where both ran. Writes ``table9_rank.{md,tex}``.

    python -m analysis.table9_rank --results results.csv --out outputs/analysis/ablation
"""
from __future__ import annotations

from .common import (DATASETS, arg_parser, best_mask, fmt, has_metric, load, mean_over_seeds, out_dir, paper_other,
                     rows_of, to_float, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, borrowed_spread, combine, compare, evaluate, paper_verdict, verdict_better

NAME = "table9_rank"
VARIANTS = [("sara", "SaRA"), ("sara_no_rank", "SaRA w/o rank loss")]


def rank_table(df):
    d = df[df["method"].isin([v[0] for v in VARIANTS])]
    m = mean_over_seeds(d, ["backbone", "dataset", "method"], ["fid", "clip_score"])
    both = m.groupby(["backbone", "dataset"])["method"].transform("nunique") == len(VARIANTS)
    return m[both].reset_index(drop=True)


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/ablation")
    ap.add_argument("--datasets", default=None, help="comma-separated (default: every dataset with both runs)")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "ablation")
    if df.empty or not has_metric(df, "fid", "clip_score"):
        return write_missing(out, NAME, "no `ablation` runs with FID and CLIP in the results table")
    m = rank_table(df)
    if args.datasets:
        m = m[m["dataset"].isin(args.datasets.split(","))]
    if m.empty:
        return write_missing(out, NAME, "no dataset with both `sara` and `sara_no_rank` runs")
    sections = []
    for bb, g in m.groupby("backbone", sort=True):
        ds = [d for d in DATASETS if d in set(g["dataset"])] + sorted(set(g["dataset"]) - set(DATASETS))
        vals = {(r["method"], r["dataset"]): r for _, r in g.iterrows()}
        cells, bold = [], []
        for me, lab in VARIANTS:
            row, b = [lab], [False]
            for d in ds:
                r = vals[(me, d)]
                row += [fmt(r["fid"]), fmt(r["clip_score"])]
            cells.append(row)
        for i, (me, _) in enumerate(VARIANTS):
            b = [False]
            for d in ds:
                f = [vals[(x, d)]["fid"] for x, _ in VARIANTS]
                c = [vals[(x, d)]["clip_score"] for x, _ in VARIANTS]
                b += [best_mask(f, True)[i], best_mask(c, False)[i]]
            bold.append(b)
        header = ["variant"] + [f"{d} {k}" for d in ds for k in ("FID", "CLIP")]
        sections.append({"title": f"backbone {bb}", "header": header, "cells": cells, "bold": bold,
                         "caption": f"Rank loss ablation, backbone {bb} (Table 9)", "label": f"tab:rank-{bb}",
                         "header_groups": [("", 1)] + [(d, 2) for d in ds]})
    return write_tables(out, NAME, sections, "Table 9 — rank loss", "Better value per column in bold.")


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


T9_DATASETS = ("Cyberpunk", "ElementFire")


def _rank_loss_clip_t9(df):
    """C12 on Table 9's two sets: SaRA's CLIP above SaRA w/o rank loss on each, by the noise rule
    (one seed borrows SaRA's CLIP seed spread, :func:`analysis.verdicts.borrowed_spread`)."""
    d = rows_of(df, "ablation")
    d = d[d["method"].isin(["sara", "sara_no_rank"]) & d["dataset"].isin(T9_DATASETS)]
    have = {ds for ds, g in d.groupby("dataset") if g["method"].nunique() == 2} if has_metric(d, "clip_score") else set()
    if have != set(T9_DATASETS):
        return NOT_RUN, ("needs ablation runs of SaRA and SaRA w/o rank loss on Cyberpunk and ElementFire "
                         "(bash experiments/ablation.sh, its second sweep)")
    sd, spread = borrowed_spread(df, "clip_score")
    parts, ev = [], []
    for ds in T9_DATASETS:
        g = d[d["dataset"] == ds]
        c = compare(g.loc[g["method"] == "sara", "clip_score"].astype(float),
                    g.loc[g["method"] == "sara_no_rank", "clip_score"].astype(float), lower_is_better=False,
                    borrowed_sd=sd)
        parts.append(verdict_better(c, "a"))
        ev.append(f"{ds}: " + c.describe("CLIP", ("with rank loss", "without")))
    return combine(parts), "; ".join(ev) + f" ({spread})"


def _paper_t9():
    t = paper_other().get("table9")
    if t is None:
        return NOT_RUN, "paper Table 9 not found"
    s, n = t.iloc[0], t.iloc[1]
    rows, ok = [], True
    for ds in ("Cyberpunk", "ElementFire"):
        a, b = to_float(s[f"{ds} CLIP"]), to_float(n[f"{ds} CLIP"])
        ok &= a > b
        rows.append(f"{ds}: {a} vs {b}")
    return paper_verdict(ok), "Table 9: " + "; ".join(rows)


CLAIMS = [
    Claim("C12", "The rank loss improves the CLIP score on Cyberpunk and ElementFire", "Table 9", "ablation",
          _rank_loss_clip_t9, _paper_t9),
]


def claims(df) -> list[dict]:
    """The records of C12 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
