"""Learnability of the style sets (not a paper table): per set and schedule, the embedded FID of
the base model, of full fine-tuning and of SaRA at 50M (mean ± std over seeds), and whether both
fine-tuned FIDs are at least ``--target`` (25%) below the base's. Rows are kept apart by the
backbone's weights (``weights``: the first digits of ``backbone.weights_id``), training steps,
learning rate and variant (``experiment_name=learnability--<variant>``), so another base model, a
longer schedule, another rate or another setting is its own row, never averaged in. The verdict
counts the experiment's own runs and its rate and schedule probes (variants ``lr…``/``steps…``);
other variants (e.g. another loss weighting) are listed as probes of their own.

Reads the `learnability` rows (``learnability--base``: the pre-trained model, ``train.steps=0``).
Writes ``learnability.{md,csv}``, and ``learnability_samples.png`` where the runs' sample folders are
on disk: per set, training images, the base model, full fine-tuning and SaRA 50M (the newest
weights, the lowest seed, the experiment's own rates); and ``learnability_steps.{png,pdf}`` where a
set was trained at several schedule lengths: FID against the number of steps per method and rate,
the base's FID beside it, and each longest run's training loss (from its ``train_log.jsonl``;
``learnability_steps_fid.{png,pdf}``, the FID panel alone, where no such log is on disk).

    python -m analysis.learnability --results results.csv --out outputs/analysis/learnability
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .common import (DATASETS, arg_parser, fmt, load, markdown_table, num, out_dir, pyplot, rows_of, save_fig,
                     split_base, write_missing)

METHODS = {("full", "none"): "full fine-tuning", ("sara", "50M"): "SaRA 50M"}
COUNTED_VARIANT = r"^(|(lr|steps)\d.*)$"  # the experiment's own runs and its rate / schedule probes


def parser():
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/learnability")
    ap.add_argument("--target", type=float, default=0.25, help="required relative FID reduction vs the base")
    return ap


def _agg(g: pd.DataFrame) -> dict:
    f = num(g, "fid").dropna()
    return {"fid": f.mean(), "fid_std": f.std(ddof=1) if len(f) > 1 else np.nan, "n_seeds": len(f),
            "seeds": ",".join(str(int(s)) for s in sorted(num(g, "seed").dropna()))}


def build(df: pd.DataFrame, target: float = 0.25) -> pd.DataFrame:
    """One row per (backbone, weights, dataset, method, steps, lr, variant): FID over seeds, the base's,
    the reduction, and whether the variant counts toward the verdict."""
    df = df[num(df, "fid").notna()].copy()
    base_df, ft = split_base(df)
    base = {k: _agg(g) for k, g in base_df.groupby(["backbone", "weights", "dataset"])}
    rows = []
    ft = ft[num(ft, "steps") > 0].copy()
    ft["budget"] = ft["budget"].astype(str)
    ft["variant"] = ft["variant"].astype(str)  # load() fills a missing variant with ""
    for (bb, w, ds, me, bu, steps, lr, var), g in ft.groupby(["backbone", "weights", "dataset", "method", "budget",
                                                              "steps", "lr", "variant"], dropna=False):
        if (me, bu) not in METHODS:
            continue
        b = base.get((bb, w, ds), {"fid": np.nan, "fid_std": np.nan})
        r = {"backbone": bb, "weights": w, "dataset": ds, "method": me, "budget": bu, "steps": steps, "lr": lr,
             "variant": var, "counted": bool(re.match(COUNTED_VARIANT, var)), **_agg(g),
             "base_fid": b["fid"], "base_fid_std": b["fid_std"]}
        r["reduction"] = 1 - r["fid"] / r["base_fid"] if np.isfinite(r["base_fid"]) else np.nan
        r["learned"] = bool(np.isfinite(r["reduction"]) and r["reduction"] >= target)
        rows.append(r)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {d: i for i, d in enumerate(DATASETS)}
    return out.sort_values(["backbone", "weights", "dataset", "steps", "method", "lr"],
                           key=lambda s: s.map(order).fillna(99) if s.name == "dataset" else s).reset_index(drop=True)


def _rate(lr) -> str:
    v = pd.to_numeric(lr, errors="coerce")
    return f"{v:.2g}" if np.isfinite(v) else str(lr)


def _pm(v, sd) -> str:
    return fmt(v, 0) + (f" ± {fmt(sd, 0)}" if np.isfinite(sd) else "")


def main(argv=None):
    args = parser().parse_args(argv)
    out = out_dir(args.out)
    name = "learnability"
    df = rows_of(load(args.results, keep_superseded=True), args.experiment or "learnability")
    t = build(df, args.target) if len(df) and "fid" in df else pd.DataFrame()
    if t.empty:
        return write_missing(out, name, "no `learnability` runs with FID in the results table")
    t.to_csv(out / f"{name}.csv", index=False)
    cells = [[r.backbone, r.weights, r.dataset, METHODS[(r.method, r.budget)], fmt(r.steps), _rate(r.lr),
              r.variant if not r.counted else "", f"{r.seeds}", _pm(r.base_fid, r.base_fid_std), _pm(r.fid, r.fid_std),
              f"{-100 * r.reduction:+.0f}%" if np.isfinite(r.reduction) else "–", "yes" if r.learned else "no"]
             for r in t.itertuples()]
    verdict = []
    for (bb, w, st), g in t[t["counted"]].groupby(["backbone", "weights", "steps"]):
        # a set is learnable at a schedule when each method, at its best rate tried, is >= target below the base
        ok = [ds for ds, gd in g.groupby("dataset", sort=False)
              if set(gd["method"]) >= {m for m, _ in METHODS} and gd.groupby("method")["learned"].any().all()]
        verdict.append(f"{bb} (weights {w}) at {fmt(st)} steps: {len(ok)}/{g['dataset'].nunique()} sets learnable by both methods"
                       f" ({', '.join(ok) or 'none'})")
    md = [f"# Learnability of the style sets",
          f"Embedded FID against each style set (100 evaluation prompts), mean ± std over the seeds listed; "
          f"a set is learnable at a schedule when full fine-tuning and SaRA 50M each lower the base's FID "
          f"by at least {args.target:.0%}. A `probe` entry names a run setting outside the experiment's "
          f"own (`experiment_name=learnability--<probe>`); probes are not counted in the verdicts.",
          markdown_table(cells, ["backbone", "weights", "set", "method", "steps", "lr", "probe", "seeds", "base FID",
                                 "FID", "change", f"≥ {args.target:.0%} lower"]),
          "\n".join(f"- {v}" for v in verdict)]
    (out / f"{name}.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    written = [out / f"{name}.md", out / f"{name}.csv"]
    written += steps_figure(df, t, out)
    grid = sample_grid(df)
    if grid is not None:
        grid.save(out / f"{name}_samples.png")
        written.append(out / f"{name}_samples.png")
    return written


def _loss_curve(path, every: int = 20) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, loss averaged over windows of ``every`` steps) of a run's train_log.jsonl."""
    import json
    from pathlib import Path

    p = Path(str(path))
    if not p.is_file():
        return None
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    steps = np.array([r["step"] for r in rows if "loss" in r], float)
    loss = np.array([r["loss"] for r in rows if "loss" in r], float)
    if len(loss) < every:
        return None
    k = len(loss) // every * every
    return steps[:k].reshape(-1, every).mean(1), loss[:k].reshape(-1, every).mean(1)


def steps_figure(df: pd.DataFrame, t: pd.DataFrame, out) -> list:
    """FID against schedule length for each (weights, set) trained at two or more step counts (the
    counted runs: a probe of another setting is not a point of the schedule curve), beside the
    longest runs' training loss. Without any run's ``train_log.jsonl`` on disk the figure is the FID
    panel alone, ``learnability_steps_fid``: the docs' copy (``learnability_steps``) keeps its loss
    curves."""
    t = t[t["counted"]]
    multi = [(w, ds) for (w, ds), g in t.groupby(["weights", "dataset"]) if g["steps"].nunique() > 1]
    if not multi:
        return []
    panels = []  # per (weights, set): (weights, set, its rows, [(runs of a method and rate, label, loss curve or None)])
    for w, ds in multi:
        g = t[(t["weights"] == w) & (t["dataset"] == ds)]
        rows = []
        for (me, bu, lr), gl in g.groupby(["method", "budget", "lr"]):
            gl = gl.sort_values("steps")
            longest = df[(df["weights"] == w) & (df["dataset"] == ds) & (df["method"] == me)
                         & (df["budget"].astype(str) == bu) & (df["lr"].astype(str) == str(lr))
                         & (num(df, "steps") == gl["steps"].max())]
            curve = _loss_curve(longest["paths.train_log"].iloc[0]) if "paths.train_log" in longest and len(longest) else None
            rows.append((gl, f"{METHODS[(me, bu)]}, lr {_rate(lr)}", curve))
        panels.append((w, ds, g, rows))
    with_loss = any(c is not None for *_, rows in panels for *_, c in rows)
    plt = pyplot()
    fig, axes = plt.subplots(len(multi), 2 if with_loss else 1, figsize=(9 if with_loss else 4.8, 3.2 * len(multi)),
                             squeeze=False)
    for (w, ds, g, rows), ax_row in zip(panels, axes):
        ax = ax_row[0]
        for gl, label, curve in rows:
            ax.errorbar(gl["steps"], gl["fid"], yerr=gl["fid_std"].fillna(0), marker="o", capsize=3, label=label)
            if curve is not None:
                ax_row[1].plot(*curve, label=f"{label}, {fmt(gl['steps'].max())} steps")
        ax.axhline(g["base_fid"].iloc[0], color="gray", ls="--", label="pre-trained")
        ax.set(title=f"{ds} (weights {w}): FID by schedule length", xlabel="training steps", ylabel="embedded FID")
        ax.legend(fontsize=7)
        if with_loss:
            ax_row[1].set(title="training loss (mean of 20 steps)", xlabel="step", ylabel="loss")
            if ax_row[1].lines:
                ax_row[1].legend(fontsize=7)
    return save_fig(fig, out, "learnability_steps" if with_loss else "learnability_steps_fid")


def sample_grid(df: pd.DataFrame, n: int = 6, tile: int = 40):
    """The sample grid of the newest weights' runs (None when no sample folder is on disk)."""
    from .style_samples import grid_rows, render

    done = df[num(df, "fid").notna()]
    if done.empty or "finished_at" not in done:
        return None
    newest = done.loc[done["finished_at"].astype(str).idxmax(), "weights"]
    d = done[(done["weights"] == newest) & done["variant"].isin(["", "base"])]
    d = d[num(d, "seed") == num(d, "seed").min()].copy()
    base = d["variant"].eq("base")
    d.loc[base, "method"] = "base"  # its row label: Pre-trained
    blocks = grid_rows(d[base | (d["method"] == "full") | (d["budget"].astype(str) == "50M")], "50M", n)
    if not blocks:
        return None
    return render(blocks, n, tile, f"weights {newest}, seed {int(num(d, 'seed').min())}")


if __name__ == "__main__":
    main()
