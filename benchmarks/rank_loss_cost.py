#!/usr/bin/env python
"""Per-step cost of SaRA's rank loss at Stable Diffusion scale.

SaRA applies the nuclear-norm subgradient to one uniformly chosen eligible matrix per step, so
the expected per-step cost is the mean over the eligible matrices. This times the whole rank
step (``sara.core.rank_loss.add_rank_grad``: the dense ``P`` from the values, the subgradient,
the scatter into ``values.grad``) on every eligible matrix of a randomly initialised denoiser
with a ``--budget`` threshold selection, and prints the mean, the median and the largest, to be
compared with the step time that ``memory_speed.py`` measures with the same thread count. The
summary uses process CPU seconds (steadier than wall time on a shared machine).

    python benchmarks/rank_loss_cost.py --arch sd15 --budget 50M [--conv] [--threads 2] [--json OUT]

``--synthetic`` needs almost no memory: the shapes come from the architecture on the ``meta``
device and each eligible matrix is a random sparse matrix at the budget's density (a threshold
selection of a randomly initialised model is spread the same way); with ``--svd`` the reduced
SVD that the rank step used before is timed on the same matrices for comparison.
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
    ap.add_argument("--synthetic", action="store_true",
                    help="shapes from the meta device, random sparse matrices at the budget's density")
    ap.add_argument("--svd", action="store_true", help="also time a reduced SVD (synthetic mode)")
    a = ap.parse_args(argv)
    if a.synthetic:
        return _synthetic(a)

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
        t, c = time.perf_counter(), time.process_time()
        add_rank_grad(sp, [n], 5e-4)
        rows.append({"name": n, "shape": list(sp.shapes[n]), "entries": sp.count(n),
                     "seconds": round(time.perf_counter() - t, 4),
                     "cpu_seconds": round(time.process_time() - c, 4)})
        print(f"{n:<70} {str(tuple(sp.shapes[n])):<22} wall {rows[-1]['seconds']:.3f} s, "
              f"cpu {rows[-1]['cpu_seconds']:.3f} s", flush=True)
    secs = [r["cpu_seconds"] for r in rows]
    out = {"arch": a.arch, "budget": a.budget, "conv": a.conv, "threads": torch.get_num_threads(),
           "eligible": len(rows), "mean_s": statistics.mean(secs), "median_s": statistics.median(secs),
           "max_s": max(secs), "rows": rows}
    print(f"rank step over {len(rows)} eligible matrices ({'2-D and conv' if a.conv else '2-D'}), "
          f"{out['threads']} thread(s), process CPU seconds: mean {out['mean_s']:.3f} s, median "
          f"{out['median_s']:.3f} s, max {out['max_s']:.3f} s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


def _synthetic(a) -> int:
    import torch
    from sara.backbones import build_denoiser_from_config
    from sara.budget import budget_target
    from sara.core.rank_loss import matrix_shape, nuclear_norm_and_subgradient

    if a.threads:
        torch.set_num_threads(a.threads)
    model = build_denoiser_from_config(a.arch, random_init=True, device="meta")
    n_params = sum(p.numel() for p in model.parameters())
    density = budget_target(a.budget, n_params) / n_params
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, p in model.named_parameters():
        if p.dim() < 2 or (p.dim() != 2 and not a.conv):
            continue
        r, c = matrix_shape(p.shape)
        if min(r, c) <= a.min_side:
            continue
        mask = torch.rand(r * c, generator=g) < density
        m = torch.zeros(r * c).masked_scatter_(mask, torch.randn(int(mask.sum()), generator=g) * 1e-3)
        m = m.view(r, c)
        idx = torch.nonzero(mask).squeeze(1)
        t = time.process_time()
        _, sub = nuclear_norm_and_subgradient(m)
        sub.reshape(-1)[idx]
        row = {"name": n, "shape": [r, c], "cpu_seconds": round(time.process_time() - t, 4)}
        if a.svd:
            t = time.process_time()
            u, _, vh = torch.linalg.svd(m.mT if r < c else m, full_matrices=False)
            row["svd_cpu_seconds"] = round(time.process_time() - t, 4)
        rows.append(row)
        print(f"{n:<70} {str((r, c)):<16} gram {row['cpu_seconds']:.3f} s"
              + (f", svd {row['svd_cpu_seconds']:.3f} s" if a.svd else ""), flush=True)
    secs = [r["cpu_seconds"] for r in rows]
    out = {"arch": a.arch, "budget": a.budget, "density": density, "conv": a.conv, "synthetic": True,
           "threads": torch.get_num_threads(), "eligible": len(rows), "mean_s": statistics.mean(secs),
           "median_s": statistics.median(secs), "max_s": max(secs), "rows": rows}
    line = (f"rank step (subgradient at the trained entries) over {len(rows)} eligible "
            f"matrices, density {density:.4f}, {out['threads']} thread(s), process CPU seconds: "
            f"mean {out['mean_s']:.3f}, median {out['median_s']:.3f}, max {out['max_s']:.3f}")
    if a.svd:
        sv = [r["svd_cpu_seconds"] for r in rows]
        out["svd_mean_s"] = statistics.mean(sv)
        line += f"; reduced SVD on the same matrices: mean {out['svd_mean_s']:.3f}"
    print(line, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
