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
import pandas as pd

from .common import (arg_parser, best_mask, fmt, fmt_mean_std, has_metric, load, mean_over_seeds, method_label, out_dir,
                     paper_other, pyplot, rows_of, save_fig, to_float, vlhi_groups, write_missing, write_tables)
from .verdicts import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, borrowed_spread, combine, compare,
                       evaluate, method_names, paper_verdict, value_of, verdict, verdict_better)

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
            row = [lab[1], lab[2], lab[3], fmt_mean_std(r, "fid"), fmt_mean_std(r, "clip_score"), fmt(r["vlhi"])]
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
                          "FID and CLIP: mean ± std over seeds where there are several; VLHI within the rows of each "
                          "table, from the seed means. Best per column in bold.")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _ablation(df, dataset="Expedition"):
    d = rows_of(df, "ablation")
    d = d[d["dataset"] == dataset]
    if d.empty or not has_metric(d, "fid", "clip_score"):
        return None
    m = mean_over_seeds(d, ["backbone", "method"], ["fid", "clip_score", "share_below"])
    return vlhi_groups(m, ["backbone"], "fid", "clip_score", "vlhi")


def _paper_t2():
    t = paper_other().get("table2")
    if t is None:
        return None
    keys = ["sara_plain", "sara_no_rank", "sara_no_ppa", "sara", "largest", "random"]
    return pd.DataFrame({"method": keys[:len(t)], "fid": t["FID"].map(to_float), "clip_score": t["CLIP"].map(to_float),
                         "vlhi": t["VLHI"].map(to_float)})


def _largest_worst_clip(m):
    worst = m.loc[m["clip_score"].idxmin(), "method"]
    return worst == "largest", f"worst CLIP {method_label(worst)} {fmt(m['clip_score'].min())}; largest " \
                               f"{fmt(value_of(m, 'largest', 'clip_score'))}"


def _largest_good_fid(m):
    f = value_of(m, "largest", "fid")
    med = float(m["fid"].median())
    return f <= med, f"largest FID {fmt(f)} vs median of the ablation rows {fmt(med)}"


def _random_poor(m):
    fr, cr = value_of(m, "random", "fid"), value_of(m, "random", "clip_score")
    fs, cs = value_of(m, "sara", "fid"), value_of(m, "sara", "clip_score")
    return fr > fs and cr < cs, f"random FID {fmt(fr)} / CLIP {fmt(cr)} vs SaRA {fmt(fs)} / {fmt(cs)}"


def _sara_best_vlhi(m):
    best = m.loc[m["vlhi"].idxmax(), "method"]
    return best == "sara", f"best VLHI {method_label(best)} {fmt(m['vlhi'].max())}; SaRA {fmt(value_of(m, 'sara', 'vlhi'))}"


def _ppa_fid(m):
    a, b = value_of(m, "sara_no_rank", "fid"), value_of(m, "sara_plain", "fid")
    return a < b, f"with PPA w/o rank loss FID {fmt(a)} vs w/o both {fmt(b)}"


def _rank_clip(m):
    a, b = value_of(m, "sara_no_ppa", "clip_score"), value_of(m, "sara_plain", "clip_score")
    return a > b, f"with rank loss w/o PPA CLIP {fmt(a)} vs w/o both {fmt(b)}"


class _Noise:
    """Per-seed ablation values and the noise rule: a side with one seed borrows SaRA's spread
    (:func:`analysis.verdicts.borrowed_spread`), named in the evidence."""

    def __init__(self, df, d):
        self.df, self.d, self.spread, self.notes, self.borrowed = df, d, {}, {}, set()

    def values(self, method, col):
        return self.d.loc[self.d["method"] == method, col].astype(float).dropna().tolist()

    def cmp(self, a, b, col, lower):
        if col not in self.spread:  # one look-up per metric, however many pairs a claim compares
            self.spread[col], self.notes[col] = borrowed_spread(self.df, col)
        va, vb = self.values(a, col), self.values(b, col)
        if min(len(va), len(vb)) < 2:  # only then is the borrowed spread used, and named
            self.borrowed.add(col)
        return compare(va, vb, lower_is_better=lower, borrowed_sd=self.spread[col])

    def text(self, c, col, a, b):
        return c.describe(col, (method_label(a), method_label(b)))

    def spreads(self):
        return "; ".join(self.notes[k] for k in sorted(self.borrowed))


def _noisy_largest_clip(m, nz):
    """C6: the largest entries' CLIP below every other variant's, each by the noise rule."""
    parts, ev = [], []
    for o in m["method"]:
        if o != "largest":
            c = nz.cmp("largest", o, "clip_score", False)
            parts.append(verdict_better(c, "b"))
            ev.append(nz.text(c, "clip", "largest", o))
    return combine(parts), "; ".join(ev)


def _noisy_largest_fid(m, nz):
    """C7: the largest entries' FID not worse than the middle of the other variants' FIDs."""
    others = m[m["method"] != "largest"].sort_values("fid")
    mid = others["method"].iloc[len(others) // 2]
    c = nz.cmp("largest", mid, "fid", True)
    v = {"a": REPRODUCED, "b": NOT_REPRODUCED, None: INCONCLUSIVE}[c.better]
    return v, f"against the middle of the other variants' FIDs: {nz.text(c, 'fid', 'largest', mid)}"


def _noisy_random(m, nz):
    """C8: random entries worse than SaRA on FID and on CLIP."""
    cf, cc = nz.cmp("random", "sara", "fid", True), nz.cmp("random", "sara", "clip_score", False)
    return combine([verdict_better(cf, "b"), verdict_better(cc, "b")]), \
        f"{nz.text(cf, 'fid', 'random', 'sara')}; {nz.text(cc, 'clip', 'random', 'sara')}"


def _noisy_sara_vlhi(m, nz):
    """C9: SaRA best VLHI, decided as dominance over the runner-up (or the winner): FID and CLIP
    each by the noise rule; a split or undecided pair is inconclusive."""
    order = m.sort_values("vlhi", ascending=False)["method"].tolist()
    rival = order[1] if order[0] == "sara" else order[0]
    cf, cc = nz.cmp("sara", rival, "fid", True), nz.cmp("sara", rival, "clip_score", False)
    wins, losses = [c.better == "a" for c in (cf, cc)], [c.better == "b" for c in (cf, cc)]
    if order[0] == "sara":
        v = REPRODUCED if any(wins) and not any(losses) else INCONCLUSIVE
    else:
        v = NOT_REPRODUCED if any(losses) and not any(wins) else INCONCLUSIVE
    return v, (f"best VLHI {method_label(order[0])} {fmt(m['vlhi'].max())}, SaRA {fmt(value_of(m, 'sara', 'vlhi'))}; "
               f"{nz.text(cf, 'fid', 'sara', rival)}; {nz.text(cc, 'clip', 'sara', rival)}")


def _noisy_pair(a, b, col, lower):
    def check(m, nz):
        c = nz.cmp(a, b, col, lower)
        return verdict_better(c, "a"), nz.text(c, col, a, b)
    return check


def _abl_claim(fn, noisy, needs):
    """``(check, paper)``: ``noisy(m, noise)`` judges the runs by the noise rule; ``fn(m)`` states the
    claim on plain numbers, for the paper's own Table 2."""
    def check(df):
        d = rows_of(df, "ablation")
        d = d[d["dataset"] == "Expedition"]
        m = _ablation(df)
        if m is None or not set(needs) <= set(m["method"]):
            return NOT_RUN, f"needs ablation runs of {method_names(needs)} on Expedition"
        nz = _Noise(df, d)
        v, ev = noisy(m.reset_index(drop=True), nz)
        return v, ev + (f" ({nz.spreads()})" if nz.spreads() else "")

    def paper():
        m = _paper_t2()
        if m is None:
            return NOT_RUN, "paper Table 2 not found"
        ok, ev = fn(m)
        return paper_verdict(ok), "Table 2: " + ev

    return check, paper


def _ppa_share(df):
    for exp in ("ablation", "style"):
        d = rows_of(df, exp)
        if has_metric(d, "share_below"):
            break
    else:
        return NOT_RUN, "no run recorded `share_below` (diagnostics.share_below)"
    m = mean_over_seeds(d, ["backbone", "dataset", "budget", "method"], ["share_below"])
    pairs, ok = [], True
    for with_, without in (("sara", "sara_no_ppa"), ("sara_no_rank", "sara_plain")):
        for (bb, ds, bu), g in m.groupby(["backbone", "dataset", "budget"]):
            a, b = value_of(g, with_, "share_below"), value_of(g, without, "share_below")
            if np.isfinite(a) and np.isfinite(b):
                ok &= a < b
                pairs.append(f"{ds} {bu}: {method_label(with_)} {fmt(100 * a, 1)}% vs {method_label(without)} {fmt(100 * b, 1)}%")
    if not pairs:
        return NOT_RUN, "needs `share_below` for a method with PPA and its counterpart without"
    return verdict(ok), "initial selection still below θ at the end — " + "; ".join(pairs)


_t2 = {name: _abl_claim(fn, noisy, needs) for name, fn, noisy, needs in (
    ("largest_clip", _largest_worst_clip, _noisy_largest_clip, ["largest"]),
    ("largest_fid", _largest_good_fid, _noisy_largest_fid, ["largest"]),
    ("random", _random_poor, _noisy_random, ["random", "sara"]),
    ("sara_vlhi", _sara_best_vlhi, _noisy_sara_vlhi,
     ["sara", "sara_plain", "sara_no_ppa", "sara_no_rank", "largest", "random"]),
    ("ppa_fid", _ppa_fid, _noisy_pair("sara_no_rank", "sara_plain", "fid", True), ["sara_no_rank", "sara_plain"]),
    ("rank_clip", _rank_clip, _noisy_pair("sara_no_ppa", "sara_plain", "clip_score", False),
     ["sara_no_ppa", "sara_plain"]),
)}


CLAIMS = [
    Claim("C6", "Fine-tuning the largest entries gives the worst CLIP score", "Table 2", "ablation", *_t2["largest_clip"]),
    Claim("C7", "Fine-tuning the largest entries gives a relatively good FID", "Table 2", "ablation", *_t2["largest_fid"]),
    Claim("C8", "Fine-tuning random entries gives both a poor FID and a poor CLIP score (worse than SaRA)", "Table 2",
          "ablation", *_t2["random"]),
    Claim("C9", "SaRA (PPA + rank loss) has the best VLHI among the ablation variants", "Table 2", "ablation",
          *_t2["sara_vlhi"]),
    Claim("C10", "Progressive parameter adjustment improves FID", "Table 2", "ablation", *_t2["ppa_fid"]),
    Claim("C11", "The rank loss improves the CLIP score", "Table 2", "ablation", *_t2["rank_clip"]),
    Claim("C13", "With PPA fewer initially-selected entries remain below θ at the end of training", "Sec. 4.3",
          "ablation", _ppa_share),
]


def claims(df) -> list[dict]:
    """The records of C6, C7, C8, C9, C10, C11, C13 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
