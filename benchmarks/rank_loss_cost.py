#!/usr/bin/env python
"""Per-step cost of SaRA's rank loss at Stable Diffusion scale.

SaRA applies the nuclear-norm subgradient to one uniformly chosen eligible matrix per step, so
the expected per-step cost is the mean over the eligible matrices. This times the whole rank
step (``sara.core.rank_loss.add_rank_grad``: the dense ``P`` from the values, the subgradient,
the scatter into ``values.grad``) on every eligible matrix of a randomly initialised denoiser
with a ``--budget`` threshold selection, and prints the mean, the median and the largest, to be
compared with the step time that ``memory_speed.py`` measures with the same thread count.

    python benchmarks/rank_loss_cost.py --arch sd15 --budget 50M [--conv] [--threads 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sd15")
    ap.add_argument("--budget", default="50M")
    ap.add_argument("--conv", action="store_true", help="conv weights viewed as matrices too")
    ap.add_argument("--min-side", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import torch
    from sara.backbones import build_denoiser_from_config
    from sara.budget import budget_target
    from sara.core import select, threshold_for_budget, wrap
    from sara.core.rank_loss import add_rank_grad, eligible_matrices

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_denoiser_from_config(a.arch, random_init=True, device="cpu")
    target = budget_target(a.budget, sum(p.numel() for p in model.parameters()))
    sp = wrap(model, select(model, threshold=threshold_for_budget(model, target)))
    names = eligible_matrices(sp, a.min_side, conv=a.conv)
    rows = []
    for n in names:
        sp.values.grad = None
        t = time.perf_counter()
        add_rank_grad(sp, [n], 5e-4)
        rows.append({"name": n, "shape": list(sp.shapes[n]), "entries": sp.count(n),
                     "seconds": round(time.perf_counter() - t, 4)})
        print(f"{n:<70} {str(tuple(sp.shapes[n])):<22} {rows[-1]['seconds']:.3f} s", flush=True)
    secs = [r["seconds"] for r in rows]
    out = {"arch": a.arch, "budget": a.budget, "conv": a.conv, "threads": torch.get_num_threads(),
           "eligible": len(rows), "mean_s": statistics.mean(secs), "median_s": statistics.median(secs),
           "max_s": max(secs), "rows": rows}
    print(f"rank step over {len(rows)} eligible matrices ({'2-D and conv' if a.conv else '2-D'}), "
          f"{out['threads']} thread(s): mean {out['mean_s']:.3f} s, median {out['median_s']:.3f} s, "
          f"max {out['max_s']:.3f} s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
