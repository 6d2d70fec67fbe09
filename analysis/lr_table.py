"""Tuned learning rates — each method's rate from the `lr_search` grid (validation prompts).

For every backbone in the results, :func:`sara.lr_search.select_learning_rates` picks per
(method, budget) the rate with the highest VLHI over its grid (seeds averaged) and writes
``<tables>/<backbone>.yaml``, which ``train.lr=tuned`` reads. Writes ``lr_table.{md,tex}`` with
every rate's FID, CLIP and VLHI (chosen rate in bold) and, for SaRA, Eq. 12's rate beside its
tuned one; and ``lr_search_samples.png`` (50M and full fine-tuning; every other budget
``lr_search_samples_<budget>.png``) where the runs' sample folders are on disk: per method a row of
its first validation samples at each rate of the grid, the chosen rate framed, so a reader sees what
a rate too low (the base model's look) or too high (broken images) does.

    python -m analysis.lr_table --results outputs/results/lr_search.csv --out outputs/analysis/lr_search

``--next`` writes nothing: it prints the sweeps that widen each grid whose best rate lies at its
edge (:func:`sara.lr_search.widen`), one line of ``run.py -m`` overrides each, for
``experiments/run_experiment.sh``'s ``REFINE`` step (the table is read the same way as for the
rates, so the two agree).
"""
from __future__ import annotations

import math

from sara.lr_search import LR_TABLE_DIR, select_learning_rates, widen, write_lr_table

from .common import (arg_parser, budget_sort_key, fmt, has_metric, load, method_label, method_sort_key, num,
                     out_dir, rows_of, sci, split_base, write_missing, write_tables)

NAME = "lr_table"
MAIN_BUDGET = "50M"  # the budget of lr_search_samples.png; every other budget has lr_search_samples_<budget>.png
EQ12_A, EQ12_B = 1e-3, -350.0


def _eq12_rate(df, backbone, method, budget) -> float | None:
    """Eq. 12's rate at the median threshold of a threshold-selecting method's runs (else None)."""
    if "threshold" not in df.columns:
        return None
    g = df[(df["backbone"] == backbone) & (df["method"] == method) & (df["budget"].astype(str) == budget)]
    th = g["threshold"].astype(float).dropna() if len(g) else None
    if th is None or th.empty or method != "sara":
        return None
    return EQ12_A * math.exp(EQ12_B * float(th.median()))


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/lr_search")
    ap.add_argument("--tables", default=str(LR_TABLE_DIR), help=f"where the per-backbone tables go (default {LR_TABLE_DIR})")
    ap.add_argument("--next", action="store_true", help="print the sweeps that widen edge-won grids; write nothing")
    ap.add_argument("--backbone", default=None, help="with --next: only this backbone's grids (default: the one in the table)")
    args = ap.parse_args(argv)
    df = rows_of(load(args.results), args.experiment or "lr_search")
    if args.next:
        for line in next_sweeps(df, args.experiment or "lr_search", args.backbone):
            print(line)
        return []
    out = out_dir(args.out)
    if df.empty or not has_metric(df, "fid", "clip_score", "lr"):
        return write_missing(out, NAME, "no `lr_search` runs with FID, CLIP and a learning rate in the results table")
    base, df = split_base(df)  # the pre-trained model on the same prompts: a reference row, not a rate
    if df.empty:
        return write_missing(out, NAME, "no `lr_search` training runs in the results table")
    rates, scores = select_learning_rates(df.to_dict("records"))
    files, sections = [], []
    for backbone in sorted(scores):
        meta = {"experiment": args.experiment or "lr_search", "results": str(args.results),
                "n_runs": int((df["backbone"] == backbone).sum()),
                "seeds": sorted(int(s) for s in df.loc[df["backbone"] == backbone, "seed"].dropna().unique()),
                "datasets": sorted(str(d) for d in df.loc[df["backbone"] == backbone, "dataset"].dropna().unique()),
                "rule": "highest VLHI over each (method, budget) grid, seeds averaged, ties to the smaller rate"}
        files.append(write_lr_table(f"{args.tables}/{backbone}.yaml", rates.get(backbone, {}), scores[backbone], meta))
        cells, bold = [], []
        b = base[base["backbone"] == backbone]
        if len(b):
            cells.append(["pre-trained", "–", "–", fmt(num(b, "fid").mean()), fmt(num(b, "clip_score").mean()), "–",
                          str(len(b)), "train.steps=0 (`experiment_name=lr_search--base`)"])
            bold.append([False] * 8)
        for method in sorted(scores[backbone]):
            for budget in sorted(scores[backbone][method], key=budget_sort_key):
                s = scores[backbone][method][budget]
                eq12 = _eq12_rate(df, backbone, method, budget)
                for g in s["grid"]:
                    chosen = g["lr"] == s["chosen"]
                    note = "chosen" + (" (grid edge)" if s["at_edge"] else "") if chosen else ""
                    if s.get("incomplete"):
                        note = f"no rate chosen: {s['incomplete']}"
                    if chosen and eq12 is not None:
                        note += f"; Eq. 12: {sci(eq12)} ({s['chosen'] / eq12:.3g}× tuned/Eq. 12)"
                    cells.append([method, budget, sci(g["lr"]), fmt(g["fid"]), fmt(g["clip_score"]), fmt(g["vlhi"]),
                                  str(g["n_seeds"]), note])
                    bold.append([False, False] + [chosen] * 4 + [False, False])
        sections.append({"title": f"backbone {backbone}", "cells": cells, "bold": bold,
                         "header": ["method", "budget", "lr", "FID", "CLIP", "VLHI", "seeds", ""],
                         "caption": f"Learning-rate search, {backbone}", "label": f"tab:lr-{backbone}"})
    note = ("Eq. 12: lr = 1e-3·exp(−350 θ) at the threshold the SaRA runs selected with; "
            "the paper does not state its baselines' rates.")
    files += write_tables(out, NAME, sections, title="Tuned learning rates", note=note)
    # one figure per budget (full fine-tuning's budget-less rows beside 50M), each drawn only from its
    # own runs' sample folders, so the runs of one budget on disk never stand in for another's figure
    budgets = df["budget"].astype(str)
    others = sorted(set(budgets) - {"none", "nan", MAIN_BUDGET}, key=budget_sort_key)
    for name, keep in [("lr_search_samples", {"none", "nan", MAIN_BUDGET})] + \
            [(f"lr_search_samples_{b}", {b}) for b in others]:
        grid = sample_grid(df[budgets.isin(keep)], scores, base)
        if grid is not None:
            grid.save(out / f"{name}.png")
            files.append(out / f"{name}.png")
    return files


def next_sweeps(df, experiment: str, backbone: str | None = None) -> list[str]:
    """``run.py -m`` overrides of the runs that widen every grid whose best rate is at its edge."""
    if df.empty or not has_metric(df, "fid", "clip_score", "lr"):
        return []
    df = split_base(df)[1]
    backbones = sorted(df["backbone"].dropna().astype(str).unique())
    if backbone is None and len(backbones) > 1:
        raise SystemExit(f"lr_table --next: the table holds {experiment} runs of several backbones {backbones}; "
                         "pass --backbone")
    if backbone is not None:
        df = df[df["backbone"].astype(str) == backbone]
    _, scores = select_learning_rates(df.to_dict("records"))
    return [f"+experiment={experiment} method={method} budget={budget} train.lr={lr:g}"
            for _, method, budget, lr in widen(scores)]


def sample_grid(df, scores, base=None, n: int = 3, tile: int = 32):
    """Per (backbone, method, budget) a row, per rate of its grid ``n`` samples side by side, the
    chosen rate framed in red; on top the training images and the pre-trained model's samples
    (``base`` rows). None unless every graded run's sample folder is on disk: a grid of the runs on
    one machine would replace the one drawn from all."""
    from PIL import Image, ImageDraw

    from .style_samples import first_images, paste_tile

    rows, lrs_all, training_dir = [], set(), None
    for (backbone, method, budget), g in df.groupby(["backbone", "method", "budget"], sort=False):
        s = scores.get(backbone, {}).get(method, {}).get(str(budget))
        if s is None:
            continue
        by_lr = {}  # rate -> the lowest seed's samples
        for _, r in g.sort_values("seed").iterrows():
            ims = first_images(r.get("paths.samples"), n)
            if not ims:
                return None
            by_lr.setdefault(float(r["lr"]), ims)
        if training_dir is None and "paths.dataset" in g and g["paths.dataset"].notna().any():
            training_dir = g["paths.dataset"].dropna().iloc[0]
        label = f"{method_label(method)}" + ("" if str(budget) in ("none", "nan") else f" {budget}")
        rows.append((method_sort_key(method), budget_sort_key(budget), label, by_lr, s["chosen"]))
        lrs_all |= set(by_lr)
    if not rows:
        return None
    rows = [r[2:] for r in sorted(rows, key=lambda r: r[:2])]
    lrs = sorted(lrs_all)
    wide = [("training images", first_images(training_dir, n * len(lrs)) if training_dir is not None else [])]
    if base is not None and len(base) and "paths.samples" in base:
        wide.append(("pre-trained", first_images(base.sort_values("seed")["paths.samples"].iloc[0], n) * len(lrs)))
    wide = [(label, ims) for label, ims in wide if ims]
    label_w, gap, head = 110, 8, 30
    cell = n * tile + gap
    canvas = Image.new("RGB", (label_w + len(lrs) * cell, head + (len(rows) + len(wide)) * (tile + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "Validation samples at each learning rate (red frame: the chosen rate)", fill="black")
    for j, lr in enumerate(lrs):
        draw.text((label_w + j * cell, head - 12), f"lr {sci(lr)}", fill="black")
    y = head
    for label, ims in wide:  # rows that are no rate's (the pre-trained model's first prompts under every rate)
        draw.text((4, y + tile // 2 - 6), label, fill="black")
        for k, path in enumerate(ims):
            paste_tile(canvas, path, tile, (label_w + k * tile + (k // n) * gap, y))
        y += tile + 4
    for label, by_lr, chosen in rows:
        draw.text((4, y + tile // 2 - 6), label, fill="black")
        for j, lr in enumerate(lrs):
            x = label_w + j * cell
            for k, path in enumerate(by_lr.get(lr, [])):
                paste_tile(canvas, path, tile, (x + k * tile, y))
            if lr == chosen:
                draw.rectangle([x - 2, y - 2, x + n * tile + 1, y + tile + 1], outline=(220, 0, 0), width=2)
        y += tile + 4
    return canvas


if __name__ == "__main__":
    from .common import run_main

    run_main(main)
