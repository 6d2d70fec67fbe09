#!/usr/bin/env python
"""Per-part costs of sara.core's training step at Stable Diffusion scale (issue 7, item 2).

Builds a randomly initialised denoiser (``--arch sd15``), wraps a ``--budget`` selection with
``sara.core.SaRA`` and times, without any forward pass, the parts SaRA adds to a plain training
step, so each can be compared with the whole step measured by ``memory_speed.py``:

* ``sync``: writing ``values`` into the weights (``SparseParameters.sync``), once per step;
* ``gather``: reading the selected entries of one dense gradient per touched tensor (what the
  post-accumulate-grad hooks do during backward), summed over the touched tensors;
* ``adamw``: the optimizer update over ``values`` (``fused`` on and off), and the transient
  memory it allocates (CUDA: exact; CPU: resident-set growth);
* ``rank``: the rank-loss step (one random eligible matrix: dense ``P``, reduced SVD, ``U Vᵀ``),
  as the mean over every eligible matrix (what a random choice costs on average), and the same
  subgradient from a Newton–Schulz polar iteration (matmuls only) for comparison;
* bytes kept besides the model: ``values``, the ``initial`` copy, indices, Adam moments.

    python benchmarks/sara_core_profile.py --arch sd15 --budget 50M --device cpu [--json OUT]
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device, reps=3):
    out = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _transient(fn, device):
    """Peak extra bytes allocated while ``fn`` runs (CUDA exact; CPU: VmHWM growth)."""
    import torch
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss()
    fn()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 - base
    return 0


@__import__("torch").no_grad()
def polar_newton_schulz(p, steps: int = 12):
    """Orthogonal polar factor ``U Vᵀ`` of ``p`` by the cubic Newton–Schulz iteration
    ``X <- 1.5 X - 0.5 X Xᵀ X`` from ``X0 = P / ||P||_F`` (matmuls only). Singular values of
    ``X0`` lie in (0, 1]; each iteration pushes them towards 1 (zero ones stay zero, which is a
    valid subgradient of the nuclear norm too)."""
    import torch
    transpose = p.shape[0] > p.shape[1]
    x = p.T if transpose else p
    x = x / (torch.linalg.matrix_norm(x) + 1e-12)
    for _ in range(steps):
        x = 1.5 * x - 0.5 * (x @ x.T) @ x
    return x.T if transpose else x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sd15")
    ap.add_argument("--budget", default="50M")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rank-matrices", type=int, default=6,
                    help="time the rank step on this many eligible matrices (spread over sizes; 0 = all)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import torch
    from sara.backbones import build_denoiser_from_config
    from sara.budget import budget_target
    from sara.core import SaRA, threshold_for_budget
    from sara.core.rank_loss import eligible_matrices, nuclear_norm_and_subgradient, sparse_matrix
    from sara.core.sparse import read_entries

    dev = a.device
    torch.manual_seed(0)
    out: dict = {"arch": a.arch, "device": dev, "budget": a.budget, "torch": torch.__version__}
    t = time.perf_counter()
    model = build_denoiser_from_config(a.arch, random_init=True, device=dev)
    out["build_s"] = round(time.perf_counter() - t, 2)
    n_params = sum(p.numel() for p in model.parameters())
    target = budget_target(a.budget, n_params)
    t = time.perf_counter()
    theta = threshold_for_budget(model, target)
    out["threshold_for_budget_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    opt = SaRA(model, threshold=theta, progressive_iter=None, lambda_rank=5e-4)
    out["wrap_s"] = round(time.perf_counter() - t, 2)
    sp = opt.sparse
    k = sp.count()
    params = dict(model.named_parameters())
    names = [n for n in sp.names if sp.count(n) > 0]
    out.update({"n_params": n_params, "trained": k, "threshold": theta, "touched_tensors": len(names),
                "touched_numel": sum(params[n].numel() for n in names),
                "values_bytes": sp.values.numel() * sp.values.element_size(),
                "initial_bytes": 0 if sp.initial is None else sp.initial.numel() * sp.initial.element_size(),
                "index_bytes": sum(i.numel() * i.element_size() for i in sp.indices.values()),
                "index_dtypes": sorted({str(i.dtype) for i in sp.indices.values()})})

    # sync (values -> weights)
    out["sync_s"] = _time(sp.sync, dev)
    out["sync_transient_bytes"] = _transient(sp.sync, dev)

    # gather (what the hooks do per touched tensor during backward)
    def gather():
        for n in names:
            p = params[n]
            read_entries(p, sp._index(n, p.device))
    out["gather_s"] = _time(gather, dev)

    # AdamW over values: the optimizer's default (fused on CUDA) and the alternative
    sp.values.grad = torch.randn_like(sp.values) * 1e-3
    res = {}
    for fused in (False, True):
        try:
            o = torch.optim.AdamW([sp.values], lr=1e-4, weight_decay=1e-2, fused=fused)
            o.step()  # state
            res[f"fused={fused}"] = {"step_s": _time(o.step, dev), "transient_bytes": _transient(o.step, dev)}
            del o
        except Exception as e:  # fused not available on this device / version
            res[f"fused={fused}"] = {"error": str(e).splitlines()[0][:160]}
        gc.collect()
    out["adamw"] = res
    out["sara_optimizer_fused"] = opt.param_groups[0].get("fused")
    out["sara_optimizer_foreach"] = opt.param_groups[0].get("foreach")

    # rank loss: mean over eligible matrices (the random choice's expected cost)
    elig = eligible_matrices(sp, 64)
    sizes = sorted(elig, key=lambda n: params[n].numel())
    if a.rank_matrices and len(sizes) > a.rank_matrices:
        step = (len(sizes) - 1) / (a.rank_matrices - 1)
        chosen = [sizes[round(i * step)] for i in range(a.rank_matrices)]
    else:
        chosen = sizes
    rows = []
    for n in chosen:
        p = sparse_matrix(sp, n, sp.values.detach())
        t_svd = _time(lambda: nuclear_norm_and_subgradient(p), dev, reps=1)
        t_ns = _time(lambda: polar_newton_schulz(p), dev, reps=1)
        _, g = nuclear_norm_and_subgradient(p)
        g2 = polar_newton_schulz(p)
        # agreement on the trained entries (what reaches values.grad)
        idx = sp.indices[n].long()
        a1, a2 = g.reshape(-1)[idx], g2.reshape(-1)[idx]
        cos = float(torch.nn.functional.cosine_similarity(a1, a2, dim=0))
        rows.append({"name": n, "shape": list(p.shape), "svd_s": round(t_svd, 4), "newton_schulz_s": round(t_ns, 4),
                     "cosine_on_trained_entries": round(cos, 4)})
        del p, g, g2
    out["rank_eligible"] = len(elig)
    out["rank_rows"] = rows
    w = [params[r["name"]].numel() for r in rows]
    # expected per-step cost of one uniformly chosen matrix, extrapolated by the SVD cost model
    # O(m n min(m, n)) from the timed matrices
    if rows:
        def cost(n):
            r, c = (params[n].shape[0], params[n].numel() // params[n].shape[0])
            return r * c * min(r, c)
        per_unit = statistics.median(r["svd_s"] / cost(r["name"]) for r in rows)
        per_unit_ns = statistics.median(r["newton_schulz_s"] / cost(r["name"]) for r in rows)
        out["rank_step_expected_svd_s"] = statistics.mean(per_unit * cost(n) for n in elig)
        out["rank_step_expected_newton_schulz_s"] = statistics.mean(per_unit_ns * cost(n) for n in elig)
    del w
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
