"""The settings tried for one customisation row (e.g. full DreamBooth), side by side: per setting
(the experiment's own runs and each ``custom--<variant>`` probe, e.g. ``experiment_name=custom--steps300
train.steps=300``), its rate, steps and prior-loss weight, subject fidelity per subject and over the
subjects (k of n, with its standard error), language drift, CLIP-I and CLIP-T; and the pre-trained
model as the reference. The evidence behind a row's settings in ``conf/experiment_method/custom/``.

Reads the ``custom`` rows of a results table of the newest weights (``analysis.common.load``).
Writes ``custom_settings.{md,csv}``.

    python -m analysis.custom_settings --results results/embedded/runs.csv --out outputs/analysis/custom
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import arg_parser, fmt, load, markdown_table, num, out_dir, rows_of, write_missing
from .table7_custom import current_ground_truth, pooled_count

NAME = "custom_settings"


def parser():
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/custom")
    ap.add_argument("--method", default="full", help="the row whose settings are compared (default full)")
    return ap


def build(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per setting (variant) of ``method`` and one for the pre-trained model."""
    df = current_ground_truth(df)
    df = df[num(df, "subject_fidelity").notna()].copy()
    df["variant"] = df["variant"].fillna("").astype(str)
    base = df["variant"].eq("base")
    picked = df[base | (df["method"].eq(method) & ~base)]
    rows = []
    for variant, g in picked.groupby("variant", sort=False):
        k, n = pooled_count(g, "subject_fidelity", "n_images")
        drift_k, drift_n = pooled_count(g, "language_drift", "n_class_images")
        p = k / n if n else np.nan
        r = {"setting": "pre-trained" if variant == "base" else (variant or "the experiment's own"),
             "lr": _one(g, "lr"), "steps": _one(g, "steps"),
             "prior_loss_weight": _one(g, "config.custom.prior_loss_weight"),
             **{f"fidelity {s}": v for s, v in zip(g["dataset"], num(g, "subject_fidelity"))},
             "fidelity": p, "fidelity_se": math.sqrt(p * (1 - p) / n) if n else np.nan, "k": k, "n": n,
             "drift": drift_k / drift_n if drift_n else np.nan, "drift_k": drift_k, "drift_n": drift_n,
             "clip_i": num(g, "clip_i").mean(), "clip_t": num(g, "clip_t").mean(), "subjects": g["dataset"].nunique()}
        rows.append(r)
    return pd.DataFrame(rows)


def _one(g: pd.DataFrame, col: str) -> str:
    vals = sorted({fmt(v) for v in g[col].dropna()}) if col in g else []
    return "/".join(vals) or "–"


def main(argv=None):
    args = parser().parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "custom")
    t = build(df, args.method) if len(df) and "subject_fidelity" in df else pd.DataFrame()
    if t.empty or not (t["setting"] != "pre-trained").any():
        return write_missing(out, NAME, f"no `custom` runs of method {args.method} with subject fidelity")
    t.to_csv(out / f"{NAME}.csv", index=False)
    subjects = sorted(c.removeprefix("fidelity ") for c in t.columns if c.startswith("fidelity ") and c != "fidelity_se")
    ref = t[t["setting"] == "pre-trained"]
    cells = []
    for _, r in t.iterrows():
        above, trained = "", r["setting"] != "pre-trained"
        if len(ref) and trained:
            b = ref.iloc[0]
            se = math.sqrt(r["fidelity_se"] ** 2 + b["fidelity_se"] ** 2)
            above = f"{(r['fidelity'] - b['fidelity']) / se:+.1f}" if se > 0 else "–"
        knobs = [str(r["lr"]), str(r["steps"]), str(r["prior_loss_weight"])] if trained else ["–", "0", "–"]
        cells.append([r["setting"], *knobs, *[fmt(r.get(f"fidelity {s}"), 2) for s in subjects],
                      f"{r['fidelity']:.2f} ({int(r['k'])} of {int(r['n'])})", above,
                      f"{r['drift']:.2f} ({int(r['drift_k'])} of {int(r['drift_n'])})", fmt(r["clip_i"], 3),
                      fmt(r["clip_t"], 1)])
    md = [f"#### Settings of {args.method} on the customisation subjects",
          "One seed per subject; fidelity over the subjects with its binomial standard error; *vs pre-trained*: "
          "the difference in standard errors (difference of two proportions, unpooled).",
          markdown_table(cells, ["setting", "lr", "steps", "prior-loss weight", *subjects, "subject fidelity (all)",
                                 "vs pre-trained (SE)", "language drift (all)", "CLIP-I", "CLIP-T"])]
    (out / f"{NAME}.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    return [out / f"{NAME}.md", out / f"{NAME}.csv"]


if __name__ == "__main__":
    main()
