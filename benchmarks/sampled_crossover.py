#!/usr/bin/env python
"""The weight-gradient crossover of ``memory_speed.py`` alone, optionally old against new code.

Runs ``memory_speed.measure_crossover`` (SD 1.5's linear, feed-forward, 1x1 and 3x3 layer
shapes built from the config, no weights; the dense weight gradient against the gradient at
random trained entries only, process CPU seconds) without the full-model methods. With
``--compare REF`` the same process also measures ``sara/core/sampled_grad.py`` as it is at git
``REF``, the two in alternating order over runs, so their ratio is taken under the same load.
Each invocation appends one run to ``--json`` and rewrites the medians over the runs there.

    python benchmarks/sampled_crossover.py --arch sd15 --resolution 256 --batch-size 4 \\
        --threads 1 --compare 0fc5d0e --json benchmarks/results/sd15_cpu_crossover_conv.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from code_at_ref import module_at  # noqa: E402

SUMMARY = ("dense_s", "sampled_s", "crossover_density",
           "dense_s_conv3x3", "sampled_s_conv3x3", "crossover_density_conv3x3")


def _median(runs: list[dict]) -> dict:
    out = {}
    for key in SUMMARY:
        vals = [r[key] for r in runs]
        if isinstance(vals[0], dict):
            out[key] = {d: statistics.median(v[d] for v in vals) for d in vals[0]}
        else:
            out[key] = statistics.median(vals)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sd15")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--densities", default="0.002,0.005,0.01,0.02,0.05")
    ap.add_argument("--compare", default=None, help="git ref of the old sampled_grad.py")
    ap.add_argument("--json", required=True, help="append this run here (medians rewritten)")
    args = ap.parse_args(argv)

    import sara.core.sampled_grad as current
    from memory_speed import measure_crossover

    dens = tuple(float(d) for d in args.densities.split(","))
    kw = dict(arch=args.arch, device=args.device, resolution=args.resolution,
              batch_size=args.batch_size, densities=dens, threads=args.threads)
    path = Path(args.json)
    rec = json.loads(path.read_text()) if path.exists() else {
        "arch": args.arch, "device": args.device, "resolution": args.resolution,
        "batch_size": args.batch_size, "threads": args.threads, "compare": args.compare,
        "machine": f"{platform.machine()}, {platform.processor() or '?'}", "runs": []}
    impls = {"new": current.SampledLayer}
    if args.compare:
        impls["old"] = module_at(args.compare, "sampled_grad").SampledLayer
    order = list(impls) if len(rec["runs"]) % 2 == 0 else list(impls)[::-1]
    run = {"order": order}
    for name in order:
        with mock.patch.object(current, "SampledLayer", impls[name]):
            run[name] = measure_crossover(**kw)
        r = run[name]
        print(f"{name}: 3x3 dense {r['dense_s_conv3x3']:.3f} s, sampled "
              + ", ".join(f"{d}: {v:.3f}" for d, v in r["sampled_s_conv3x3"].items())
              + f"; linear/1x1 dense {r['dense_s']:.3f} s, sampled "
              + ", ".join(f"{d}: {v:.3f}" for d, v in r["sampled_s"].items()), flush=True)
    rec["runs"].append(run)
    rec["median"] = {name: _median([r[name] for r in rec["runs"] if name in r]) for name in impls}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec["median"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
