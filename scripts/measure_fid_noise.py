#!/usr/bin/env python
"""FID's sampling noise on the embedded world: the standard deviation of the embedded FID over
sampling seeds, at several numbers of evaluation prompts, for the base model and a fully
fine-tuned one, on style sets; and the smallest prompt count whose noise is small against the
base-vs-fine-tuned gap.

    python scripts/measure_fid_noise.py --backbone tiny_latent                   # 5 seeds x 100/250/500
    python scripts/measure_fid_noise.py --counts 4,8 --seeds 0,1 --datasets Cyberpunk \\
        --extra train=smoke eval.num_inference_steps=2 --out outputs/fid_noise_smoke   # a smoke run

Per style set D: one full fine-tuning run (``+experiment=style method=full budget=none``, seed 0);
then per sampling seed s, the base model (``train.steps=0``) and the fine-tuned one (its ΔP loaded
with ``delta.source``, ``train.steps=0``) each sample the first max(counts) evaluation prompts
with ``eval.seed=s``. FID of the first N samples (N in counts) against D. The default prompt count
is the smallest N with std <= ``--rel`` (5%) of |mean FID(base) - mean FID(fine-tuned)|, for every
model and set. Writes ``<out>/fid_noise.json`` and ``<out>/fid_noise.md``; a stopped measurement
resumes (finished runs are skipped).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_runs import add_common_args, dataset_dir, fid_first_n, mean_std, run_job, write_report  # noqa: E402

from analysis.fid_noise import table_lines  # noqa: E402  (the repository root is on sys.path: world_runs)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "Cyberpunk,Expedition", "fid_noise")
    p.add_argument("--counts", default="100,250,500")
    p.add_argument("--seeds", default="0,1,2,3,4", help="sampling seeds (eval.seed)")
    p.add_argument("--rel", type=float, default=0.05, help="noise target: std <= rel x base-vs-FT gap")
    p.add_argument("--device", default="cpu", help="for the FID features")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    counts = [int(x) for x in a.counts.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    datasets = a.datasets.split(",")
    out = Path(a.out)
    runs = out / "runs"
    t0 = time.time()
    common = ["+experiment=style", f"backbone={a.backbone}", "method=full", "budget=none",
              "eval.metrics=[]", *a.extra]
    table = {}
    for d in datasets:
        ft_dir = runs / d / "full_train"
        run_job(ft_dir, [*common, f"data.name={d}", "seed=0", "eval.num_prompts=1"])
        ref = dataset_dir(d)
        for model in ("base", "full"):
            per_n = {n: [] for n in counts}
            for s in seeds:
                rd = runs / d / f"{model}_evalseed{s}"
                ov = [*common, f"data.name={d}", "seed=0", "train.steps=0", f"eval.seed={s}",
                      f"eval.num_prompts={max(counts)}"]
                if model == "full":
                    ov.append(f"delta.source={ft_dir}")
                run_job(rd, ov)
                for n in counts:
                    per_n[n].append(fid_first_n(rd, n, ref, a.device))
            table.setdefault(d, {})[model] = {str(n): {"fids": v, "mean": mean_std(v)[0], "std": mean_std(v)[1]}
                                              for n, v in per_n.items()}
    verdict = {}
    for n in counts:
        ok = True
        for d in datasets:
            gap = abs(table[d]["base"][str(n)]["mean"] - table[d]["full"][str(n)]["mean"])
            table[d].setdefault("gap", {})[str(n)] = gap
            for model in ("base", "full"):
                ok &= table[d][model][str(n)]["std"] <= a.rel * gap
        verdict[str(n)] = bool(ok)
    default_n = next((n for n in counts if verdict[str(n)]), None)
    res = {"backbone": a.backbone, "datasets": datasets, "counts": counts, "seeds": seeds, "rel": a.rel,
           "extra_overrides": a.extra, "table": table, "std_within_rel_gap": verdict,
           "default_num_prompts": default_n, "wall_s": round(time.time() - t0, 1),
           "command": "python scripts/measure_fid_noise.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    return write_report(out, "fid_noise", res, table_lines(res))


if __name__ == "__main__":
    main()
