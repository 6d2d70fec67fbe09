"""Where one training step's CPU time goes, for a method as ``memory_speed.py`` builds it.

Process CPU seconds (steadier than wall time on a shared machine) of forward, backward and the
optimizer step, and inside them of the pieces of SaRA's step: the gathers of trained entries
from dense weight gradients (``_accumulate``), the sampled weight gradients (``_dots``), the
adds into ``values.grad``, the rank loss, AdamW, ``sync`` and ``clear_dense_grads``. Medians
over the timed steps. With ``--compare REF`` (SaRA only) the same process alternates, step by
step, the step as it is and the step with ``sara.core.sparse``'s ``sync`` and
``sara.core.sampled_grad``'s backward as they are at git ``REF``, so the two are timed under the
same load.

    python benchmarks/step_profile.py --arch benchmarks/configs/sd15_half_width.json \\
        --budget 5M --batch-size 4 --methods sara,lora_dropout --threads 1
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import memory_speed as ms  # noqa: E402
from code_at_ref import module_at  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)
ORIG: dict = {}  # (owner, attr) -> the function before it was timed


def _timed(owner, attr: str, key: str) -> None:
    """Wrap ``owner.attr`` so its process CPU time adds up under ``key``."""
    fn = getattr(owner, attr)
    ORIG.setdefault((owner, attr), fn)

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        c = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            TIMES[key] += time.process_time() - c
    setattr(owner, attr, wrapper)


def instrument() -> None:
    import torch
    from sara.core import rank_loss, sampled_grad, sparse
    _timed(sparse.SparseParameters, "_accumulate", "gather_dense (incl. add)")
    _timed(sparse.SparseParameters, "_add_grad", "add_into_values_grad")
    _timed(sparse.SparseParameters, "sync", "sync")
    _timed(sparse.SparseParameters, "clear_dense_grads", "clear_dense_grads")
    _timed(sampled_grad, "_dots", "sampled_dots")
    _timed(sampled_grad, "_conv_operands", "sampled_conv_operands")
    _timed(sampled_grad.SampledWeightGrad, "backward", "sampled_backward (all)")
    _timed(rank_loss.RankLoss, "step", "rank_loss")
    _timed(torch.optim.AdamW, "step", "adamw")


def _swap(ref_mods):
    """Install, timed, the ``ref`` versions (with None: the current ones) of the swapped parts."""
    from sara.core import sampled_grad, sparse
    parts = [(sparse.SparseParameters, "sync", "sync", 0),
             (sampled_grad.SampledWeightGrad, "backward", "sampled_backward (all)", 1)]
    for owner, attr, key, i in parts:
        fn = ORIG[(owner, attr)] if ref_mods is None else getattr(getattr(
            ref_mods[i], owner.__name__), attr)
        setattr(owner, attr, fn)
        _timed(owner, attr, key)


def profile(method: str, arch: str, budget: str, bs: int, res: int, steps: int, warmup: int,
            compare: str | None = None) -> dict:
    import torch
    from sara.backbones import build_denoiser_from_config
    torch.manual_seed(0)
    model = build_denoiser_from_config(arch, random_init=True, device="cpu")
    model.train()
    target = ms.scaled_target(budget, sum(p.numel() for p in model.parameters()))
    prep = ms.prepare(method, model, target, "cpu", None)
    latents, t, text, noise = ms._inputs(model, bs, res, "cpu")
    ref = None if compare is None else (module_at(compare, "sparse"),
                                        module_at(compare, "sampled_grad"))
    runs, ref_runs = [], []
    for i in range(2 * (warmup + steps) if ref else warmup + steps):
        use_ref = ref is not None and i % 2 == 1
        if ref is not None:
            _swap(ref if use_ref else None)
        TIMES.clear()
        c0 = time.process_time()
        x = latents.detach().requires_grad_(True) if prep.input_grad else latents
        out = prep.module(x, t, encoder_hidden_states=text, return_dict=False)[0]
        c1 = time.process_time()
        loss = torch.nn.functional.mse_loss(out.float(), noise.float())
        loss.backward()
        c2 = time.process_time()
        if prep.optimizer is not None:
            prep.optimizer.step()
            prep.optimizer.zero_grad(set_to_none=True)
        c3 = time.process_time()
        del out, loss, x
        if i >= (2 * warmup if ref else warmup):
            (ref_runs if use_ref else runs).append(
                {"forward": c1 - c0, "backward": c2 - c1, "optimizer": c3 - c2, "step": c3 - c0,
                 **TIMES})
    out = {"method": method, "budget": budget, "batch_size": bs, "trainable": prep.trainable,
           "cpu_s": _medians(runs)}
    if ref_runs:
        out.update({"compare": compare, "cpu_s_ref": _medians(ref_runs),
                    "step_s_all": [round(r["step"], 4) for r in runs],
                    "step_s_all_ref": [round(r["step"], 4) for r in ref_runs]})
    return out


def _medians(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r})
    return {k: round(statistics.median(r.get(k, 0.0) for r in runs), 4) for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="benchmarks/configs/sd15_half_width.json")
    ap.add_argument("--budget", default="5M")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--methods", default="sara")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", default=None, help="git ref: alternate with its sync and "
                    "sampled backward (SaRA)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    instrument()
    recs = []
    for m in a.methods.split(","):
        r = profile(m, a.arch, a.budget, a.batch_size, a.resolution, a.steps, a.warmup,
                    a.compare if m == "sara" else None)
        print(json.dumps(r), flush=True)
        recs.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(recs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
