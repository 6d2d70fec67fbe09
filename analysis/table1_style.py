"""Table 1 (and Tables 4, 5, 6) — style fine-tuning: FID, CLIP score (or B-VQA) and VLHI per
method × budget × dataset, with the Mean column, one table per backbone; best per column within
each budget block in bold.

VLHI (SPEC Eq. 8, ``sara.metrics.vlhi``) is computed within each (backbone, dataset) group over
every method and budget of the table; the Mean column is each row's mean FID / mean quality over
the datasets, with VLHI computed within the Mean group (the paper's convention). Seeds are
averaged first. Reads the `style` experiment rows. Writes ``<name>.{md,tex,csv}``,
``<name>_mean_vlhi.{png,pdf}`` and ``<name>_vs_sara.{md,csv}`` (SaRA against each other method per
budget on the Mean columns, by the noise rule over seeds).

    python -m analysis.table1_style --results results.csv --out outputs/analysis/style
    python -m analysis.table1_style --results results.csv --name table6_bvqa     # Table 6 (a preset: TABLES)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sara.results import failed_table_path
from sara.stats import compare

from .common import (DATASETS, MEAN, QUALITY_LABEL, arg_parser, best_mask, budget_sort_key, fmt, fmt_mean_std,
                     has_metric, load, markdown_table, mean_over_seeds, method_label, out_dir,
                     paper_wide, pyplot, rows_of, save_fig, sort_rows, split_base, style_long, write_missing)
from .verdicts import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, REPRODUCED, Claim, better_by_seeds,
                       combine, evaluate, paper_verdict, value_of, verdict)

#: The methods of the paper's style tables (1, 4, 5, 6): its claims are judged among these only,
#: so a method the suite adds (peft's SHiRA, Super-Tuning) neither wins them nor moves their VLHI.
TABLE1_METHODS = ["full", "lora", "adaptformer", "lt_sft", "sara"]
TABLE4_METHODS = TABLE1_METHODS + ["dora", "diffpruning"]

#: The generated tables by output name: their methods (row order follows analysis.common), the
#: methods of which one must have runs (else "No results yet": without them the table is Table 1),
#: and the text-alignment metric. ``--methods`` / ``--requires`` / ``--quality`` override a preset.
TABLES = {
    "table1_style": {"methods": TABLE1_METHODS, "requires": [], "quality": "clip_score"},
    "table4_style": {"methods": TABLE4_METHODS, "requires": ["dora", "diffpruning"], "quality": "clip_score"},
    "table6_bvqa": {"methods": ["full", "dora", "lora", "adaptformer", "lt_sft", "sara"], "requires": [],
                    "quality": "bvqa"},
    "table1_peers": {"methods": TABLE1_METHODS + ["shira", "super_tuning"], "requires": ["shira", "super_tuning"],
                     "quality": "clip_score"},
}


def parser():
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/style")
    ap.add_argument("--name", default=None,
                    help=f"output file stem; one of {', '.join(TABLES)} also sets the methods, --requires and "
                         f"--quality of that table (default table1_style, with --quality bvqa table6_bvqa)")
    ap.add_argument("--quality", default=None, choices=["clip_score", "bvqa"],
                    help="text-alignment metric in VLHI (default: the preset's, else clip_score)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated method ids to include (default: the preset's, else every method present)")
    ap.add_argument("--requires", default=None,
                    help="comma-separated method ids of which at least one must have runs, else the table reads "
                         "'No results yet' (default: the preset's)")
    return ap


def build(df, quality="clip_score", methods=None):
    d = df.copy()
    if methods:
        d = d[d["method"].isin(methods)]
    d = d[d["dataset"].isin(DATASETS) | ~d["dataset"].isin(["pretrain"])]
    return style_long(d, quality)


BASE_LABEL = "Pre-trained (no fine-tuning)"


def base_long(base_df, quality):
    """Seed means (and stds) of the base runs per backbone × dataset, with their Mean column."""
    if base_df.empty or not has_metric(base_df, "fid", quality):
        return pd.DataFrame()
    b = mean_over_seeds(base_df, ["backbone", "dataset"], ["fid", quality])
    means = [{"backbone": bb, "dataset": MEAN, "fid": g["fid"].mean(), quality: g[quality].mean(),
              "n_seeds": int(g["n_seeds"].min())}
             for bb, g in b.groupby("backbone") if set(DATASETS) <= set(g["dataset"])]
    return pd.concat([b, pd.DataFrame(means)], ignore_index=True) if means else b


def sections_for(long, quality, base=None):
    q = QUALITY_LABEL.get(quality, quality)
    ds = [x for x in DATASETS if x in set(long["dataset"])] + \
        sorted(set(long["dataset"]) - set(DATASETS) - {MEAN}) + ([MEAN] if MEAN in set(long["dataset"]) else [])
    sections = []
    for bb, g in long.groupby("backbone", sort=True):
        rows = sort_rows(g[["budget", "method"]].drop_duplicates(), ["budget", "method"])
        cells, bold, mids = [], [], []
        cols = []
        for d in ds:
            cols += [(d, "fid", True), (d, quality, False), (d, "vlhi", False)]
        values = []
        for i, (_, r) in enumerate(rows.iterrows()):
            if i and rows["budget"].iloc[i] != rows["budget"].iloc[i - 1]:
                mids.append(i)
            row_vals = []
            for d, c, _ in cols:
                v = g[(g["budget"] == r["budget"]) & (g["method"] == r["method"]) & (g["dataset"] == d)][c]
                row_vals.append(float(v.iloc[0]) if len(v) else np.nan)
            values.append(row_vals)
        values = np.array(values, dtype=float).reshape(len(rows), len(cols))
        texts = []
        for i, (_, r) in enumerate(rows.iterrows()):
            sel = g[(g["budget"] == r["budget"]) & (g["method"] == r["method"])].set_index("dataset")
            texts.append([fmt_mean_std(sel.loc[d], c, 3 if quality == "bvqa" and c == quality else 2) if d in sel.index
                          else "–" for d, c, _ in cols])
        marks = np.zeros_like(values, dtype=bool)
        for bu in dict.fromkeys(rows["budget"]):
            idx = np.flatnonzero((rows["budget"] == bu).to_numpy())
            if len(idx) < 2:
                continue
            for j, (_, c, lower) in enumerate(cols):
                marks[idx, j] = best_mask(list(values[idx, j]), lower)
        bb_base = base[base["backbone"] == bb].set_index("dataset") if base is not None and len(base) else None
        if bb_base is not None and len(bb_base):  # reference row: outside VLHI and the bold marks
            cells.append(["–", BASE_LABEL] + [fmt_mean_std(bb_base.loc[d], c, 3 if quality == "bvqa" and c == quality else 2)
                                              if d in bb_base.index and c != "vlhi" else "–" for d, c, _ in cols])
            bold.append([False] * (2 + len(cols)))
            mids = [m + 1 for m in mids] + [1]
        for i, (_, r) in enumerate(rows.iterrows()):
            cells.append([str(r["budget"]), method_label(r["method"])] + texts[i])
            bold.append([False, False] + list(marks[i]))
        header = ["budget", "method"] + [f"{d} {'FID' if c == 'fid' else (q if c == quality else 'VLHI')}"
                                         for d, c, _ in cols]
        short = ["budget", "method"] + ["FID" if c == "fid" else (q if c == quality else "VLHI") for d, c, _ in cols]
        sections.append({"title": f"backbone {bb}", "header": header, "cells": cells, "bold": bold,
                         "caption": f"Style fine-tuning on backbone {bb}: FID ↓, {q} ↑, VLHI ↑ "
                                    f"(best per budget in bold)",
                         "label": f"tab:style-{bb}-{quality}", "n_index": 2, "midrule_before": mids,
                         "header_groups": [("", 2)] + [(d, 3) for d in ds], "latex_header": short})
    return sections


def main(argv=None):
    args = parser().parse_args(argv)
    out = out_dir(args.out)
    name = args.name or ("table6_bvqa" if args.quality == "bvqa" else "table1_style")
    preset = TABLES.get(name, {})
    args.quality = args.quality or preset.get("quality", "clip_score")
    base_df, df = split_base(rows_of(load(args.results), args.experiment or "style"))
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else preset.get("methods")
    if df.empty or not has_metric(df, "fid", args.quality):
        return write_missing(out, name, f"no `style` runs with FID and {args.quality} in the results table")
    required = [m.strip() for m in args.requires.split(",")] if args.requires else preset.get("requires", [])
    if required and not set(required) & set(df["method"]):
        return write_missing(out, name, f"no {', '.join(method_label(m) for m in required)} `style` runs; "
                                        "without them this table is Table 1")
    long = build(df, args.quality, methods)
    if long.empty:
        return write_missing(out, name, "no complete (FID, quality) pairs among the selected methods")
    long.to_csv(out / f"{name}.csv", index=False)
    secs = sections_for(long, args.quality, base_long(base_df, args.quality))
    for s in secs:  # LaTeX: dataset names in the grouped header, short metric names below
        s["header_tex"] = s.pop("latex_header")
    files = [out / f"{name}.csv"]
    files += _write(out, name, secs, args.quality, failed_runs(args.results, df, methods))
    files += _write_vs_sara(out, name, df, args.quality, methods)

    mean = long[long["dataset"] == MEAN]
    if len(mean):
        plt = pyplot()
        budgets = list(dict.fromkeys(sort_rows(mean, ["budget", "method"])["budget"]))
        meths = list(dict.fromkeys(sort_rows(mean, ["method"])["method"]))
        fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(budgets), 3.2))
        w = 0.8 / max(1, len(meths))
        for k, me in enumerate(meths):
            ys = [mean[(mean["budget"] == b) & (mean["method"] == me)]["vlhi"] for b in budgets]
            ys = [float(y.iloc[0]) if len(y) else np.nan for y in ys]
            ax.bar(np.arange(len(budgets)) + (k - (len(meths) - 1) / 2) * w, ys, w, label=method_label(me),
                   color="C3" if me == "sara" else f"C{k % 10 if k % 10 != 3 else 9}")
        ax.set_xticks(range(len(budgets)), budgets)
        ax.set_xlabel("budget")
        ax.set_ylabel("Mean VLHI ↑")
        ax.set_ylim(0, 2)
        ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach the top
        ax.set_title(f"Mean VLHI over the datasets ({QUALITY_LABEL.get(args.quality, args.quality)})")
        files += save_fig(fig, out, f"{name}_mean_vlhi")
    return files


def _title(name, quality):
    return ("Table 6 — style fine-tuning with B-VQA" if quality == "bvqa" else
            "Table 4 — style fine-tuning with DoRA and DiffPruning" if name == "table4_style" else
            "Table 1 with peft's sparse methods (SHiRA, Super-Tuning; not in the paper)" if name == "table1_peers" else
            "Table 1 — style fine-tuning")


def failed_runs(results, df, methods=None) -> list[str]:
    """The `style` runs of ``methods`` that failed (the ``<table>_failed.csv`` that
    ``sara.results`` writes beside the table), unless rerun to a result since: what is missing
    from a cell and why, e.g. a rate at which a method diverged on one set and seed."""
    path = failed_table_path(results)
    if not path.is_file():
        return []
    f = pd.read_csv(path)
    f = f[(f["experiment"] == "style") & (f["method"].isin(methods) if methods else True)]
    done = set(df["run_dir"].astype(str)) if "run_dir" in df else set()
    f = sort_rows(f[~f["run_dir"].astype(str).isin(done)], ["budget", "method", "dataset", "seed"])
    return [f"{method_label(r['method'])} {r['budget']} {r['dataset']} seed {r['seed']}: {r['error_type']} "
            f"({r['error']})" for _, r in f.iterrows()]


def _write(out, name, secs, quality, failed=()):
    # Markdown gets "Dataset Metric" headers; LaTeX the grouped two-row header.
    from .common import latex_table

    q = QUALITY_LABEL.get(quality, quality)
    md = [f"# {_title(name, quality)}",
          f"FID ↓, {q} ↑, VLHI ↑ (SPEC Eq. 8, within each backbone × dataset over all methods "
          f"and budgets, from seed means; Mean = VLHI of each row's mean FID and mean {q}). Cells: mean "
          f"± std over seeds where there are several. Best per budget in bold. The pre-trained row "
          f"(`style--base` runs) is a reference outside VLHI."]
    if failed:
        md.append("Runs that failed, left out of the cells: " + "; ".join(failed) + ".")
    tex = []
    for s in secs:
        md.append(f"## {s['title']}")
        md.append(markdown_table(s["cells"], s["header"], s["bold"]))
        tex.append(latex_table(s["cells"], s["header_tex"], s["caption"], s["label"], s["bold"], 2,
                               s["header_groups"], s["midrule_before"]))
    (out / f"{name}.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    (out / f"{name}.tex").write_text("\n\n".join(tex) + "\n", encoding="utf-8")
    return [out / f"{name}.md", out / f"{name}.tex"]


def _budget_groups_with_full(per_seed):
    """(backbone, budget, rows) per budget of the per-seed Mean rows, with full fine-tuning's rows
    (budget none) joined to every budget of its backbone, as the paper's tables compare them."""
    full = per_seed[per_seed["method"] == "full"]
    for (bb, bu), g in per_seed[per_seed["budget"] != "none"].groupby(["backbone", "budget"]):
        yield bb, bu, pd.concat([g, full[full["backbone"] == bb]], ignore_index=True)


def vs_sara(df, quality="clip_score", methods=None) -> pd.DataFrame:
    """SaRA against every other method of each budget (full fine-tuning, at budget none, in every
    budget) on the Mean FID, quality and VLHI: one value per seed from that seed's own table, the
    difference SaRA − other, its Welch standard error and the noise rule's reading."""
    per_seed = _per_seed_means(df, quality, methods)
    if per_seed is None or "sara" not in set(per_seed["method"]):
        return pd.DataFrame()
    rows = []
    for bb, bu, g in _budget_groups_with_full(per_seed):
        if "sara" not in set(g["method"]):
            continue
        sara = g[g["method"] == "sara"]
        for other in set(g["method"]) - {"sara"}:
            o = g[g["method"] == other]
            row = {"backbone": bb, "budget": bu, "method": other, "n_seeds": min(len(sara), len(o))}
            for col, lower in (("fid", True), (quality, False), ("vlhi", False)):
                a, b = (x[col].astype(float).dropna() for x in (sara, o))
                if a.empty or b.empty:  # e.g. VLHI of a seed whose methods all scored alike
                    row.update({f"{col}_{k}": np.nan for k in ("sara", "other", "diff", "se")})
                    row[f"{col}_reading"] = "no values"
                    continue
                c = compare(a, b, lower_is_better=lower)
                reading = ("one seed: spread unknown" if c.se is None else "inside the noise" if not c.decided
                           else "SaRA better" if c.better == "a" else f"{method_label(other)} better")
                row.update({f"{col}_sara": c.mean_a, f"{col}_other": c.mean_b, f"{col}_diff": c.diff,
                            f"{col}_se": c.se, f"{col}_reading": reading})
            rows.append(row)
    return sort_rows(pd.DataFrame(rows), ["backbone", "budget", "method"]) if rows else pd.DataFrame()


def _write_vs_sara(out, name, df, quality, methods):
    vs = vs_sara(df, quality, methods)
    if vs.empty:
        return []
    q = QUALITY_LABEL.get(quality, quality)
    vs.to_csv(out / f"{name}_vs_sara.csv", index=False)
    cells = []
    for _, r in vs.iterrows():
        cell = [str(r["budget"]), method_label(r["method"]), str(int(r["n_seeds"]))]
        for col, nd in (("fid", 0), (quality, 3 if quality == "bvqa" else 1), ("vlhi", 2)):
            if pd.isna(r[f"{col}_sara"]):
                cell.append("–")
                continue
            se = "?" if pd.isna(r[f"{col}_se"]) else f"{r[f'{col}_se']:.{nd}f}"
            cell.append(f"{r[f'{col}_sara']:.{nd}f} vs {r[f'{col}_other']:.{nd}f} ({r[f'{col}_diff']:+.{nd}f}, "
                        f"SE {se}): {r[f'{col}_reading']}")
        cells.append(cell)
    md = [f"# SaRA against each method: {_title(name, quality)}",
          f"Mean over the datasets, one value per seed (VLHI from each seed's own table): SaRA vs the other "
          f"method (difference, Welch standard error). A difference counts only beyond 2 SE, otherwise it is "
          f"inside the noise; full fine-tuning joins every budget.",
          markdown_table(cells, ["budget", "method", "seeds", "Mean FID ↓", f"Mean {q} ↑", "Mean VLHI ↑"])]
    (out / f"{name}_vs_sara.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    return [out / f"{name}_vs_sara.csv", out / f"{name}_vs_sara.md"]


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


PEFT_EXCLUDE = {"full", "none", "pretrained", "base"}


def _style(df, quality="clip_score", methods=None):
    d = split_base(rows_of(df, "style"))[1]
    if methods is not None:
        d = d[d["method"].isin(methods)]
    if d.empty or not has_metric(d, "fid", quality):
        return None
    return style_long(d, quality)


def _best_mean_per_budget(long, col, lower, with_full=False):
    """Per (backbone, budget): the best method's Mean ``col``, SaRA's, and the runner-up against
    SaRA (the best other method when SaRA wins, else the winner). ``with_full``: full fine-tuning's
    Mean row (budget none) joins every budget's comparison, as in the paper's Table 1."""
    rows = []
    mean = long[long["dataset"] == MEAN]
    m = mean[~mean["method"].isin(PEFT_EXCLUDE)]
    full = mean[mean["method"] == "full"] if with_full else mean.iloc[:0]
    for (bb, bu), g in m.groupby(["backbone", "budget"], sort=False):
        g = pd.concat([g, full[full["backbone"] == bb]], ignore_index=True)
        g = g[np.isfinite(g[col].astype(float))]
        if g["method"].nunique() < 2:
            continue
        v = g[col].astype(float)
        best = g.loc[v.idxmin() if lower else v.idxmax()]
        sara = g[g["method"] == "sara"]
        if sara.empty:
            continue
        others = g[g["method"] != "sara"]
        ov = others[col].astype(float)
        rival = others.loc[ov.idxmin() if lower else ov.idxmax()]
        rows.append((bb, bu, best["method"], float(best[col]), float(sara[col].iloc[0]), rival["method"],
                     rival["budget"]))
    return sorted(rows, key=lambda r: (str(r[0]), budget_sort_key(r[1])))


def _per_seed_means(df, quality, methods):
    """One Mean row per (backbone, budget, method, seed): the style table of each seed alone
    (VLHI normalised within that seed's runs), for the noise rule."""
    d = split_base(rows_of(df, "style"))[1]
    if methods is not None:
        d = d[d["method"].isin(methods)]
    out = []
    for seed, g in d.groupby("seed"):
        long = style_long(g, quality) if has_metric(g, "fid", quality) else None
        if long is not None and len(long):
            out.append(long[long["dataset"] == MEAN].assign(seed=seed))
    return pd.concat(out, ignore_index=True) if out else None


def _claim_best(df, col, lower, quality="clip_score", methods=None, what="Mean VLHI", requires=(), with_full=False):
    """SaRA best on the Mean ``col`` at every budget, each budget decided against the runner-up by
    the noise rule over seeds (per-seed style tables)."""
    long = _style(df, quality, methods)
    if long is None:
        return NOT_RUN, "no `style` runs"
    rows = _best_mean_per_budget(long, col, lower, with_full)
    if not rows:
        return NOT_RUN, "no budget with SaRA and another method over every dataset"
    per_seed = _per_seed_means(df, quality, methods)
    parts, ev = [], []
    for bb, bu, best, best_v, sara_v, rival, rival_budget in rows:
        g = per_seed[(per_seed["backbone"] == bb) & per_seed["budget"].isin([bu, rival_budget])] \
            if per_seed is not None else None
        if g is None or g.empty:
            v, why = INCONCLUSIVE, "no per-seed values"
        else:
            g = g[(g["method"] == "sara") & (g["budget"] == bu) | (g["method"] == rival) & (g["budget"] == rival_budget)]
            v, why = better_by_seeds(g, col, "sara", rival, lower)
        parts.append(v)
        ev.append(f"{bb} {bu}: best {method_label(best)} {fmt(best_v)}, SaRA {fmt(sara_v)}; {why} → {v}")
    text = f"{what} — " + "; ".join(ev) + _coverage(long)
    # VLHI is normalised over the methods present, and a method without a Mean row (runs on only
    # some datasets) drops out of the Mean comparison: either leaves the verdict open
    missing = [m for m in requires if m not in _with_mean(long)]
    if missing:
        names = ", ".join(method_label(m) for m in missing)
        return NOT_RUN, (f"no {names} style runs on every dataset (bash experiments/bvqa.sh); without "
                         "them: " + text)
    return combine(parts), text


def _bvqa_rank(df):
    """C4 as the paper states it: SaRA's B-VQA is best or second-best in most (dataset, budget)
    cells of Table 6 (full fine-tuning, at budget none, ranked in every budget's cells)."""
    d = split_base(rows_of(df, "style"))[1]
    d = d[d["method"].isin(TABLES["table6_bvqa"]["methods"])]  # Table 6 has no DiffPruning
    if d.empty or not has_metric(d, "bvqa"):
        return NOT_RUN, "no `style` runs with B-VQA"
    if "dora" not in set(d["method"]):
        return NOT_RUN, "no DoRA style runs (bash experiments/bvqa.sh): Table 6 compares with DoRA"
    m = mean_over_seeds(d, ["backbone", "budget", "method", "dataset"], ["bvqa"])
    full = m[m["method"] == "full"]
    cells, top2 = 0, 0
    for (bb, bu, ds), g in m[~m["method"].isin(PEFT_EXCLUDE)].groupby(["backbone", "budget", "dataset"]):
        g = pd.concat([g, full[(full["backbone"] == bb) & (full["dataset"] == ds)]], ignore_index=True)
        if "sara" not in set(g["method"]) or g["method"].nunique() < 3:
            continue
        v = g["bvqa"].astype(float)
        sara = float(v[g["method"] == "sara"].iloc[0])
        rank = 1 + int((v > sara).sum())  # ties share the better rank
        cells += 1
        top2 += rank <= 2
    if not cells:
        return NOT_RUN, "no (dataset, budget) cell with SaRA and two other methods"
    return verdict(top2 > cells / 2), (f"SaRA's B-VQA is best or second-best in {top2} of {cells} (dataset, budget) "
                                       "cells (seeds averaged; a rank, so the noise rule is not applied)")


def _with_mean(long):
    """Methods with a Mean row, i.e. runs on every dataset of the style table."""
    return set(long.loc[long["dataset"] == MEAN, "method"])


def _coverage(long):
    """Which datasets the Mean covers: a verdict from one style set is weaker than one from all five."""
    names = sorted(set(long["dataset"]) - {MEAN})
    return f" (Mean over {len(names)} dataset{'s' if len(names) != 1 else ''}: {', '.join(names)})"


def _paper_best(tables, col, lower, q="CLIP", exclude=("Full",), with_full=False):
    """SaRA best (or tied) on the paper's Mean ``col`` in every (backbone, budget) of ``tables``;
    ``with_full``: full fine-tuning's row joins every budget's comparison."""
    rows, ok = [], True
    for t in tables:
        try:
            w = paper_wide(t)
        except FileNotFoundError:
            return NOT_RUN, "paper numbers not found"
        mean = w[w["dataset"] == "Mean"]
        full = mean[mean["method"] == "Full"] if with_full else mean.iloc[:0]
        m = mean[~mean["method"].isin(exclude + ("Full",))]
        for (bb, pa), g in m.groupby(["backbone", "params"], sort=True):
            g = pd.concat([g, full[full["backbone"] == bb]], ignore_index=True)
            if g["method"].nunique() < 2 or "SaRA" not in set(g["method"]):
                continue
            v = g[col].astype(float)
            best = g.loc[v.idxmin() if lower else v.idxmax()]
            sara = float(g[g["method"] == "SaRA"][col].iloc[0])
            tie = np.isclose(sara, float(best[col]))
            ok &= bool(tie)
            if not tie:
                rows.append(f"{t} {bb} {pa}: best {best['method']} {fmt(best[col])} vs SaRA {fmt(sara)}")
    return paper_verdict(ok), ("; ".join(rows) if rows else "SaRA best (or tied) in every "
                                                  f"(backbone, budget) of {', '.join(tables)}")


PAPER_DIFFPRUNING_BUDGET = "10M"  # the budget of Table 4's DiffPruning row


def _diffpruning(df):
    """C5 as the paper states it, by the noise rule over seeds (per-seed Mean FID).
    "DoRA performs comparably to LoRA": per budget where both ran, it holds unless their Mean FID is
    decided apart (the rule cannot show equality: inside 2 SE counts as comparable, and the
    evidence gives the SE). "DiffPruning ... an extremely high FID": the paper's DiffPruning row
    (10M) has the highest Mean FID of Table 4, so that row is compared with every other row of the
    table (each method at each budget, and full fine-tuning) and holds when it is decided above
    all of them; without runs at 10M every budget DiffPruning ran at is judged so."""
    long = _style(df, methods=TABLE4_METHODS)
    if long is None or "diffpruning" not in _with_mean(long):
        return NOT_RUN, "no DiffPruning style runs on every dataset (bash experiments/bvqa.sh)"
    per_seed = _per_seed_means(df, "clip_score", TABLE4_METHODS)
    parts, ev = [], []
    for bb, bu, g in _budget_groups_with_full(per_seed):
        if {"dora", "lora"} <= set(g["method"]):
            v, why = better_by_seeds(g, "fid", "dora", "lora", True)
            apart = (NOT_REPRODUCED, "decided apart")  # either one better: not comparable
            part, said = {REPRODUCED: apart, NOT_REPRODUCED: apart,
                          INCONCLUSIVE: (REPRODUCED, "comparable")}.get(v, (v, v))
            parts.append(part)
            ev.append(f"{bu}: DoRA vs LoRA {why} → {said}")
    for bb, g in per_seed.groupby("backbone"):
        rows = g.assign(method=[method_label(m) if b == "none" else f"{method_label(m)} {b}"
                                for m, b in zip(g["method"], g["budget"])])
        ran = sorted(set(g.loc[g["method"] == "diffpruning", "budget"]), key=budget_sort_key)
        judged = [PAPER_DIFFPRUNING_BUDGET] if PAPER_DIFFPRUNING_BUDGET in ran else ran
        for bu in judged:
            dp = f"{method_label('diffpruning')} {bu}"
            for other in sorted(set(rows["method"]) - {f"{method_label('diffpruning')} {b}" for b in ran}):
                v, why = better_by_seeds(rows, "fid", other, dp, True)  # reproduced: DiffPruning higher
                parts.append(v)
                ev.append(f"{why} → {v}")
    return combine(parts), "Mean FID, per seed — " + "; ".join(ev)


def _paper_diffpruning():
    w = paper_wide("table4")
    m = w[w["dataset"] == "Mean"]
    worst = m.loc[m["FID"].idxmax()]
    return paper_verdict(worst["method"] == "DiffPruning"), \
        f"Table 4: highest Mean FID {worst['method']} ({worst['params']}) {worst['FID']}"


def _memory(df):
    d = split_base(rows_of(df, "style"))[1]
    if d.empty or not has_metric(d, "peak_memory_bytes"):
        return NOT_RUN, "no `style` runs with peak memory"
    m = mean_over_seeds(d, ["backbone", "budget", "method"], ["peak_memory_bytes"])
    rows, ok, n = [], True, 0
    for (bb, bu), g in m.groupby(["backbone", "budget"]):
        a, b = value_of(g, "sara", "peak_memory_bytes"), value_of(g, "lora", "peak_memory_bytes")
        if np.isfinite(a) and np.isfinite(b):
            n += 1
            ok &= a < b
            rows.append(f"{bu}: SaRA {a / 2**20:.0f} MiB vs LoRA {b / 2**20:.0f} MiB")
    if not n:
        return NOT_RUN, "needs SaRA and LoRA style runs at one budget"
    kind = d["peak_memory_kind"].dropna().iloc[0] if "peak_memory_kind" in d and d["peak_memory_kind"].notna().any() else "?"
    text = f"peak memory ({kind}) — " + "; ".join(rows)
    if kind != "cuda_max_allocated":
        # a CPU run records the process's running maximum of RSS: in a multirun it includes every
        # earlier job of the same process, so it does not measure this run
        return NOT_TESTABLE, (text + "; a CPU process's peak RSS is not a per-run measure: the memory benchmark "
                              "(benchmarks/memory_speed.py, docs/benchmark.md) judges this claim")
    return verdict(ok), text


CLAIMS = [
    Claim("C1", "SaRA has the best Mean VLHI at every budget, against the other PEFT methods and full fine-tuning",
          "Table 1", "style",
          lambda d: _claim_best(d, "vlhi", False, methods=TABLE1_METHODS, with_full=True),
          lambda: _paper_best(["table1"], "VLHI", False, with_full=True)),
    Claim("C2", "SaRA has the best Mean VLHI at every budget, with DoRA and DiffPruning in the comparison", "Table 4",
          "style", lambda d: _claim_best(d, "vlhi", False, methods=TABLE4_METHODS, requires=("dora", "diffpruning")),
          lambda: _paper_best(["table4", "table5"], "VLHI", False)),
    Claim("C3", "SaRA has the lowest Mean FID among the PEFT methods at every budget", "Table 4 text", "style",
          lambda d: _claim_best(d, "fid", True, methods=TABLE4_METHODS, what="Mean FID"),
          lambda: _paper_best(["table1", "table4"], "FID", True)),
    Claim("C4", "SaRA has the best or second-best B-VQA score in most cases", "Table 6", "style", _bvqa_rank,
          lambda: _paper_best(["table6"], "VLHI", False, q="B-VQA")),
    Claim("C5", "DoRA comparable to LoRA; DiffPruning learns too little task knowledge: the highest Mean FID",
          "Table 4 text", "style",
          _diffpruning, _paper_diffpruning),
    Claim("C28", "SaRA needs less training memory than LoRA at the same budget", "Sec. 4.4, Fig. 5", "style", _memory),
]


def claims(df) -> list[dict]:
    """The records of C1, C2, C3, C4, C5, C28 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
