"""Reproduced vs reported, side by side, per table of the paper.

The embedded world is not Stable Diffusion: absolute FID and CLIP values live on other scales, so
each section puts the reported and the reproduced numbers next to each other and compares what
can be compared across worlds — VLHI (a within-table normalisation), the ranking of methods
(Spearman ρ of Mean VLHI per budget) and the sign of each difference the paper reports.
The paper backbone each suite backbone is compared with: ``--backbone-map tiny=SD1.5`` (default;
the suite's budgets are the same fractions of the denoiser as on SD 1.5).

Reads the results table and the repo's ``paper/`` (``reported_style_finetuning.csv``,
``reported_other.md``). Writes ``compare_paper.{md,tex}`` and ``compare_paper_style.csv``.

    python -m analysis.compare_paper --results results.csv --out outputs/analysis/compare
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (split_base, DATASETS, MEAN, budget_sort_key, PAPER_TO_SUITE, QUALITY_LABEL, arg_parser, fmt, has_metric, load,
                     mean_over_seeds, method_label, num, out_dir, paper_other, paper_wide, rows_of, sci,
                     sort_rows, style_long, to_float, vlhi_groups, write_tables)
from .table10_amplification import amplification_long, summary

NAME = "compare_paper"
SUITE_TO_PAPER = {v: k for k, v in PAPER_TO_SUITE.items()}
PAPER_BUDGET = {"5M": "5M", "10M": "10M", "20M": "20M", "50M": "50M"}
FULL_PARAMS = {"SD1.5": "860M", "SD2.0": "866M", "SD3.0": "2085M", "SDXL": "2085M"}


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    r = spearmanr(a[ok], b[ok]).statistic
    return float(r)


def _paper_budget(budget: str, method: str, pbb: str) -> str:
    if method == "full":
        return FULL_PARAMS.get(pbb, "")
    return PAPER_BUDGET.get(str(budget), str(budget))


def style_section(df, table: str, quality: str, bmap: dict, methods=None):
    """Sections comparing the style experiment with one reported table (table1/table4/table6)."""
    sections, records = [], []
    try:
        pw = paper_wide(table)
    except FileNotFoundError:
        return [], []
    q_paper = "CLIP" if quality == "clip_score" else "B-VQA"
    ours = split_base(rows_of(df, "style"))[1]
    if ours.empty or not has_metric(ours, "fid", quality):
        return [{"title": f"{table}: not yet run", "header": ["note"], "cells": [["no `style` runs with FID and "
                                                                                   f"{quality} in the results table"]]}], []
    if methods is not None:
        ours = ours[ours["method"].isin(methods)]
    long = style_long(ours, quality)
    for bb, g in long.groupby("backbone", sort=True):
        pbb = bmap.get(str(bb))
        if pbb is None:
            continue
        p = pw[pw["backbone"] == pbb]
        if p.empty:
            continue
        cells = []
        rank_cells = []
        for bu in dict.fromkeys(sort_rows(g, ["budget"])["budget"]):
            gb = g[(g["budget"] == bu) & (g["dataset"] == MEAN)]
            pv, ov = [], []
            for me in dict.fromkeys(sort_rows(g[g["budget"] == bu], ["method"])["method"]):
                pname = SUITE_TO_PAPER.get(me)
                pb = _paper_budget(bu, me, pbb)
                for ds in [d for d in DATASETS if d in set(g["dataset"])] + [MEAN]:
                    o = g[(g["budget"] == bu) & (g["method"] == me) & (g["dataset"] == ds)]
                    r = p[(p["params"] == pb) & (p["method"] == pname) & (p["dataset"] == ds)]
                    of = o.iloc[0] if len(o) else None
                    rf = r.iloc[0] if len(r) else None
                    rec = {"table": table, "backbone": bb, "paper_backbone": pbb, "budget": bu, "method": me,
                           "dataset": ds,
                           "paper_FID": rf["FID"] if rf is not None else np.nan,
                           f"paper_{q_paper}": rf[q_paper] if rf is not None and q_paper in rf else np.nan,
                           "paper_VLHI": rf["VLHI"] if rf is not None else np.nan,
                           "ours_FID": of["fid"] if of is not None else np.nan,
                           f"ours_{q_paper}": of[quality] if of is not None else np.nan,
                           "ours_VLHI": of["vlhi"] if of is not None else np.nan}
                    records.append(rec)
                    if ds == MEAN:
                        cells.append([str(bu), method_label(me), fmt(rec["paper_FID"]), fmt(rec["ours_FID"]),
                                       fmt(rec[f"paper_{q_paper}"], 3 if quality == "bvqa" else 2),
                                       fmt(rec[f"ours_{q_paper}"], 3 if quality == "bvqa" else 2),
                                       fmt(rec["paper_VLHI"]), fmt(rec["ours_VLHI"])])
                        pv.append(rec["paper_VLHI"])
                        ov.append(rec["ours_VLHI"])
            if len(gb):
                pbest = [m for m, v in zip(dict.fromkeys(sort_rows(g[g["budget"] == bu], ["method"])["method"]), pv)
                         if np.isfinite(v) and v == np.nanmax(pv)] if np.isfinite(pv).any() else []
                obest = [m for m, v in zip(dict.fromkeys(sort_rows(g[g["budget"] == bu], ["method"])["method"]), ov)
                         if np.isfinite(v) and v == np.nanmax(ov)] if np.isfinite(ov).any() else []
                rank_cells.append([str(bu), fmt(_spearman(pv, ov)), ", ".join(method_label(m) for m in pbest) or "–",
                                   ", ".join(method_label(m) for m in obest) or "–", str(sum(np.isfinite(pv)))])
        ql = QUALITY_LABEL[quality]
        sections.append({"title": f"{table} (Mean column): suite {bb} vs paper {pbb}",
                         "header": ["budget", "method", "FID paper", "FID ours", f"{ql} paper", f"{ql} ours",
                                    "VLHI paper", "VLHI ours"], "cells": cells, "n_index": 2,
                         "caption": f"{table}, Mean over datasets: paper {pbb} vs suite {bb}"})
        sections.append({"title": f"{table}: ranking of methods by Mean VLHI, suite {bb} vs paper {pbb}",
                         "header": ["budget", "Spearman ρ (paper vs ours)", "best in paper", "best in ours",
                                    "methods in both"], "cells": rank_cells,
                         "caption": f"{table}: agreement of method rankings"})
    return sections, records


def ablation_section(df, other, bmap):
    rep = other.get("table2")
    if rep is None:
        return []
    order = ["sara_plain", "sara_no_rank", "sara_no_ppa", "sara", "largest", "random"]
    ours = rows_of(df, "ablation")
    ours = ours[(ours["dataset"] == "Expedition") & ours["method"].isin(order)]
    m = mean_over_seeds(ours, ["backbone", "method"], ["fid", "clip_score"]) if len(ours) else pd.DataFrame()
    if len(m):
        m = vlhi_groups(m, ["backbone"], "fid", "clip_score", "vlhi")
    cells = []
    bb = next(iter(m["backbone"])) if len(m) else None
    for i, r in rep.iterrows():
        me = order[i] if i < len(order) else None
        o = m[(m["method"] == me) & (m["backbone"] == bb)] if len(m) else m
        of = o.iloc[0] if len(o) else {}
        cells.append([r["variant"], r["FID"], fmt(of.get("fid", np.nan)), r["CLIP"], fmt(of.get("clip_score", np.nan)),
                      r["VLHI"], fmt(of.get("vlhi", np.nan))])
    return [{"title": f"Table 2 (ablation, Expedition): paper SD1.5 vs suite {bb or '(not yet run)'}",
             "header": ["variant", "FID paper", "FID ours", "CLIP paper", "CLIP ours", "VLHI paper", "VLHI ours"],
             "cells": cells, "caption": "Table 2: ablation"}]


def threshold_section(df, other):
    rep = other.get("table8")
    if rep is None:
        return []
    ours = rows_of(df, "threshold")
    if len(ours):
        ours = ours.assign(theta=num(ours, "threshold"))
        m = mean_over_seeds(ours[ours["theta"].notna()], ["theta"], ["fid", "clip_score"])
    else:
        m = pd.DataFrame(columns=["theta", "fid", "clip_score"])
    ths = [c for c in rep.columns if c != "θ"]
    rf = rep.set_index("θ")
    cells = []
    for t in ths:
        tv = to_float(t)
        o = m[np.isclose(num(m, "theta"), tv, rtol=1e-6, atol=0)] if len(m) else m
        cells.append([sci(tv), rf.loc["FID", t], fmt(o["fid"].iloc[0]) if len(o) else "–",
                      rf.loc["CLIP", t], fmt(o["clip_score"].iloc[0]) if len(o) else "–"])
    return [{"title": "Table 8 (threshold, Expedition): paper SD1.5 vs suite",
             "header": ["θ", "FID paper", "FID ours", "CLIP paper", "CLIP ours"], "cells": cells,
             "caption": "Table 8: threshold"}]


def rank_section(df, other):
    rep = other.get("table9")
    if rep is None:
        return []
    ours = rows_of(df, "ablation")
    ours = ours[ours["method"].isin(["sara", "sara_no_rank"])]
    m = mean_over_seeds(ours, ["method", "dataset"], ["fid", "clip_score"]) if len(ours) else pd.DataFrame()
    cells = []
    for _, r in rep.iterrows():
        me = "sara" if r["variant"] == "SaRA" else "sara_no_rank"
        row = [r["variant"]]
        for ds in ("Cyberpunk", "ElementFire"):
            o = m[(m["method"] == me) & (m["dataset"] == ds)] if len(m) else m
            row += [r[f"{ds} FID"], fmt(o["fid"].iloc[0]) if len(o) else "–",
                    r[f"{ds} CLIP"], fmt(o["clip_score"].iloc[0]) if len(o) else "–"]
        cells.append(row)
    return [{"title": "Table 9 (rank loss): paper SD1.5 vs suite",
             "header": ["variant", "Cyberpunk FID paper", "ours", "Cyberpunk CLIP paper", "ours",
                        "ElementFire FID paper", "ours", "ElementFire CLIP paper", "ours"],
             "cells": cells, "caption": "Table 9: rank loss"}]


def amplification_section(df, other):
    rep = other.get("table10")
    if rep is None:
        return []
    ours = rows_of(df, "analysis")
    long = amplification_long(ours) if len(ours) else pd.DataFrame()
    s = summary(long) if len(long) else pd.DataFrame(columns=["method", "r", "proj_norm", "amplification", "budget"])
    if len(s):  # the largest budget with both SaRA and LoRA (as table10_amplification shows)
        both = [b for b in set(s["budget"]) if {"sara", "lora"} <= set(s[s["budget"] == b]["method"])]
        s = s[s["budget"] == sorted(both or set(s["budget"]), key=budget_sort_key)[-1]]
    cells = []
    rs = sorted(set(int(to_float(x)) for x in rep["r"]) | set(int(x) for x in s["r"]))
    rp = {int(to_float(r["r"])): r for _, r in rep.iterrows()}
    for r in rs:
        p = rp.get(r)
        o = s[s["r"] == r] if len(s) else s

        def ov(me, col):
            h = o[o["method"] == me] if len(o) else o
            return fmt(h[col].iloc[0]) if len(h) else "–"

        cells.append([str(r), p["SaRA amplification"] if p is not None else "–", ov("sara", "amplification"),
                      p["LoRA amplification"] if p is not None else "–", ov("lora", "amplification")])
    return [{"title": "Table 10 (amplification): paper SD1.5 vs suite (r beyond the suite's matrices is absent)",
             "header": ["r", "SaRA amp. paper", "SaRA amp. ours", "LoRA amp. paper", "LoRA amp. ours"],
             "cells": cells, "caption": "Table 10: amplification factor"}]


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/compare")
    ap.add_argument("--backbone-map", default="tiny=SD1.5,sd15=SD1.5,sd2=SD2.0,sd3=SD3.0,sdxl=SDXL",
                    help="suite backbone = paper backbone, comma-separated")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    bmap = dict(x.split("=", 1) for x in args.backbone_map.split(",") if "=" in x)
    df = load(args.results)
    other = paper_other()
    sections, records = [], []
    for table, quality, methods in (("table1", "clip_score", ["full", "lora", "adaptformer", "lt_sft", "sara"]),
                                    ("table4", "clip_score", ["full", "lora", "dora", "adaptformer", "lt_sft",
                                                              "diffpruning", "sara"]),
                                    ("table6", "bvqa", ["full", "dora", "lora", "adaptformer", "lt_sft", "sara"])):
        s, r = style_section(df, table, quality, bmap, methods)
        sections += s
        records += r
    sections += ablation_section(df, other, bmap)
    sections += threshold_section(df, other)
    sections += rank_section(df, other)
    sections += amplification_section(df, other)
    files = []
    if records:
        pd.DataFrame(records).to_csv(out / f"{NAME}_style.csv", index=False)
        files.append(out / f"{NAME}_style.csv")
    files += write_tables(out, NAME, sections, "Reproduced vs reported",
                          "Absolute FID/CLIP are on the embedded world's scale, not Stable Diffusion's; compare VLHI, "
                          "rankings and directions. '–' = not run (yet) or not reported.")
    return files


if __name__ == "__main__":
    for f in main():
        print(f)
