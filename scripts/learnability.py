#!/usr/bin/env python
"""Learnability of the style sets: per set, the embedded FID of the base model, of full
fine-tuning and of SaRA at 50M, over training seeds; a set is learnable when both fine-tuned
FIDs are at least ``--target`` (25%) below the base.

    python scripts/learnability.py --backbone tiny_latent                 # 5 sets x seeds 0,1,2
    python scripts/learnability.py --datasets Cyberpunk --seeds 0 \\
        --extra train=smoke eval.num_prompts=8 --out outputs/learn_smoke  # a smoke run

Jobs: ``+experiment=style`` with ``method=full budget=none`` and ``method=sara budget=50M`` (the
style experiment's default schedule), and the base model (``train.steps=0``, one run: sampling
does not depend on the training seed). Writes ``<out>/learnability.json`` and a markdown table
``<out>/learnability.md``; finished runs are skipped, so it resumes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_runs import add_common_args, mean_std, run_job, write_report  # noqa: E402

STYLE_SETS = "BarbieCore,Cyberpunk,ElementFire,Expedition,Hornify"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, STYLE_SETS, "learnability")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--target", type=float, default=0.25, help="required relative FID reduction vs the base")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")]
    out = Path(a.out)
    runs = out / "runs"
    t0 = time.time()
    common = ["+experiment=style", f"backbone={a.backbone}", "eval.metrics=[fid]", *a.extra]
    rows = {}
    for d in a.datasets.split(","):
        base = run_job(runs / d / "base", [*common, f"data.name={d}", "method=full", "budget=none", "train.steps=0"])
        row = {"base": base["metrics"]["fid"]}
        for label, ov in (("full", ["method=full", "budget=none"]), ("sara_50M", ["method=sara", "budget=50M"])):
            fids = [run_job(runs / d / f"{label}_seed{s}", [*common, f"data.name={d}", *ov, f"seed={s}"])["metrics"]["fid"]
                    for s in seeds]
            m, sd = mean_std(fids)
            row[label] = {"fids": fids, "mean": m, "std": sd, "reduction": 1 - m / row["base"]}
        row["learnable"] = all(row[k]["reduction"] >= a.target for k in ("full", "sara_50M"))
        rows[d] = row
    res = {"backbone": a.backbone, "seeds": seeds, "target": a.target, "extra_overrides": a.extra, "sets": rows,
           "all_learnable": all(r["learnable"] for r in rows.values()), "wall_s": round(time.time() - t0, 1),
           "command": "python scripts/learnability.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = [f"| set | base FID | full FT FID (mean ± std, {len(seeds)} seeds) | SaRA-50M FID | learnable (both ≥ {a.target:.0%} below base) |",
             "|---|---|---|---|---|"]
    for d, r in rows.items():
        cell = lambda k: f"{r[k]['mean']:.1f} ± {r[k]['std']:.1f} ({-100 * r[k]['reduction']:+.0f}%)"  # noqa: E731
        lines.append(f"| {d} | {r['base']:.1f} | {cell('full')} | {cell('sara_50M')} | {'yes' if r['learnable'] else 'no'} |")
    return write_report(out, "learnability", res, lines)


if __name__ == "__main__":
    main()
