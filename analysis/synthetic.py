"""A synthetic runs tree for every analysis experiment (tests, notebook preview, demos).

Writes ``result.json`` records in the layout ``sara.record`` defines (identity, trainable counts,
``time_s``, ``peak_memory``, ``metrics``, ``config``, ``method_record``) plus the
``diagnostics`` the analysis experiments record (pruning, migration, share below θ, subspace and
amplification), with numbers that are random but seeded and shaped like the paper's trends.
It is NOT a result: every figure made from it says "synthetic" in its source table.

    python -m analysis.synthetic --root /tmp/fake_runs [--seed 0]
    python -m sara.results --root /tmp/fake_runs --csv /tmp/fake.csv
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sara.analysis_math import amplification_report, subspace_report
from sara.budget import REFERENCE_PARAMS as REF
from sara.record import RESULT_FILE

DATASETS = ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")
PEFT = ("sara", "lora", "adaptformer", "lt_sft", "dora", "diffpruning")
BUDGETS = {"5M": 5e6, "20M": 20e6, "50M": 50e6}
TINY_PARAMS = 1_700_000

# quality of each method (higher = better style fit, lower FID) and prior preservation (CLIP)
_FIT = {"sara": 1.0, "lora": 0.7, "dora": 0.72, "adaptformer": 0.45, "lt_sft": 0.5, "diffpruning": -0.8,
        "full": 1.2, "largest": 0.9, "random": 0.3, "sara_no_ppa": 0.7, "sara_no_rank": 1.05,
        "sara_plain": 0.6, "fishmask": 0.6}
_PRIOR = {"sara": 0.9, "lora": 0.8, "dora": 0.82, "adaptformer": 0.5, "lt_sft": 0.3, "diffpruning": 1.0,
          "full": 0.1, "largest": -0.6, "random": 0.2, "sara_no_ppa": 0.75, "sara_no_rank": 0.5,
          "sara_plain": 0.45, "fishmask": 0.4}
_BASE_FID = {"BarbieCore": 60.0, "Cyberpunk": 45.0, "ElementFire": 70.0, "Expedition": 50.0, "Hornify": 58.0,
             "pretrain": 20.0}


def _record(exp: str, backbone: str, dataset: str, method: str, budget: str, seed: int, metrics: dict,
            rng: np.random.Generator, config_extra: dict | None = None, method_extra: dict | None = None,
            diagnostics: dict | None = None) -> dict:
    target = None if budget not in BUDGETS else int(round(BUDGETS[budget] / REF * TINY_PARAMS))
    trainable = TINY_PARAMS if method == "full" else int((target or 20_000) * rng.uniform(0.97, 1.03))
    knob = {"sara": "threshold", "lora": "rank", "dora": "rank", "adaptformer": "bottleneck"}.get(method, "k")
    mrec = {"method": method, "knob": knob, "knob_value": 2e-3 if knob == "threshold" else 4,
            "target_params": target, "trainable_params": trainable}
    mrec.update(method_extra or {})
    config = {"experiment_name": exp, "seed": seed, "backbone": {"name": backbone},
              "data": {"name": dataset}, "method": {"name": method}, "budget": {"name": budget},
              "train": {"steps": 400, "lr": None, "batch_size": 16}}
    for k, v in (config_extra or {}).items():
        node = config
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    mem = {"sara": 0.8, "lora": 1.2, "full": 2.0, "lt_sft": 1.7}.get(method, 1.0) * 1e9
    peak = int(mem * rng.uniform(0.95, 1.05))
    wall = float(rng.uniform(240, 440))
    rec = {
        "schema": 1, "status": "complete", "experiment": exp, "backbone": backbone, "dataset": dataset,
        "method": method, "budget": budget, "seed": seed, "denoiser_params": TINY_PARAMS,
        "target_params": target, "trainable_params": trainable,
        "trainable_fraction": trainable / TINY_PARAMS, "method_record": mrec,
        "train": {"steps": 400, "final_loss": float(rng.uniform(0.05, 0.2))},
        "steps": 400, "final_loss": float(rng.uniform(0.05, 0.2)),
        "wall_time_s": wall, "train_time_s": wall - 42.0, "sample_time_s": 30.0, "eval_time_s": 10.0,
        "time": {"setup_s": 2.0, "train_s": wall - 42.0, "sample_s": 30.0, "eval_s": 10.0,
                 "total_this_session_s": wall},
        "peak_memory_bytes": peak, "peak_memory": {"bytes": peak, "kind": "cpu_rss"},
        "metrics": metrics, "config": config,
    }
    if diagnostics:
        rec["diagnostics"] = diagnostics
    return rec


def _style_metrics(method: str, dataset: str, budget: str, rng, quality_noise=0.15) -> dict:
    b = {"5M": 0.8, "20M": 1.0, "50M": 1.15}.get(budget, 1.0)
    fit = _FIT.get(method, 0.5) * (b if method != "full" else 1.0)
    prior = _PRIOR.get(method, 0.5)
    fid = _BASE_FID.get(dataset, 50.0) * (1.0 - 0.25 * fit) + rng.normal(0, 0.8)
    clip = 25.0 + 1.5 * prior - 0.3 * fit + rng.normal(0, quality_noise)
    bvqa = 0.45 + 0.05 * prior - 0.01 * fit + rng.normal(0, 0.005)
    return {"fid": float(fid), "clip_score": float(clip), "bvqa": float(bvqa)}


def synthetic_records(seed: int = 0, seeds: tuple[int, ...] = (0, 1)) -> list[tuple[str, dict]]:
    """``(relative run dir, record)`` for every synthetic run."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, dict]] = []

    def add(exp, bb, ds, me, bu, sd, rec):
        out.append((f"{exp}/{bb}/{ds}/{me}/{bu}/seed{sd}", rec))

    # style (Tables 1, 4, 6): PEFT × budgets × datasets, full without a budget
    for sd in seeds:
        for ds in DATASETS:
            for me in PEFT:
                for bu in BUDGETS:
                    add("style", "tiny", ds, me, bu, sd,
                        _record("style", "tiny", ds, me, bu, sd, _style_metrics(me, ds, bu, rng), rng))
            add("style", "tiny", ds, "full", "none", sd,
                _record("style", "tiny", ds, "full", "none", sd, _style_metrics("full", ds, "none", rng), rng))

    # seeds (seed-to-seed spread): SaRA and LT-SFT × three seeds on one dataset and budget
    for me in ("sara", "lt_sft"):
        for sd in (0, 1, 2):
            add("seeds", "tiny", "Expedition", me, "50M", sd,
                _record("seeds", "tiny", "Expedition", me, "50M", sd,
                        _style_metrics(me, "Expedition", "50M", rng), rng))

    # pruning (Fig. 2): θ sweep, no training
    for bb, base in (("tiny", 20.0), ("sd15", 12.0)):
        for th in (0.0, 1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2):
            frac = 1 - np.exp(-th / 8e-3)
            fid = base * (1 + (8.0 * max(0.0, th - 3e-3) / 1e-2) ** 2) + rng.normal(0, 0.15)
            clip = 26.0 - 4.0 * max(0.0, th - 3e-3) / 1e-2 + rng.normal(0, 0.05)
            exp = f"pruning--th{th}"
            rec = _record(exp, bb, "pretrain", "full", "none", 0, {"fid": float(fid), "clip_score": float(clip)}, rng,
                          config_extra={"diagnostics.prune_threshold": th, "train.steps": 0},
                          diagnostics={"prune": {"threshold": th, "pruned": int(frac * 1e6), "total": 1_000_000,
                                                 "fraction": float(frac)}})
            add(exp, bb, "pretrain", "full", "none", 0, rec)

    # migration (Fig. 3)
    steps = list(range(0, 1001, 100))
    hist = [{"step": s, "still_below": float(np.exp(-s / 250) * 0.9 + 0.1), "new_below": float(0.5 * (1 - np.exp(-s / 300))),
             "initial_below": 1000, "now_below": 1000} for s in steps]
    add("migration", "tiny", "pretrain", "full", "none", 0,
        _record("migration", "tiny", "pretrain", "full", "none", 0, {"fid": 19.5}, rng,
                config_extra={"diagnostics.migration_every": 100},
                diagnostics={"migration": {"threshold": 2e-3, "history": hist}}))

    # backbone (Fig. 6): continue training on the pre-training data
    for me in ("full", "lora", "adaptformer", "lt_sft", "sara"):
        bu = "none" if me == "full" else "50M"
        fid = 20.0 - 2.0 * _FIT[me] * _PRIOR[me] + rng.normal(0, 0.1)
        add("backbone", "tiny", "pretrain", me, bu, 0,
            _record("backbone", "tiny", "pretrain", me, bu, 0, {"fid": float(fid), "clip_score": 26.0}, rng))
    add("backbone--pretrained", "tiny", "pretrain", "full", "none", 0,
        _record("backbone--pretrained", "tiny", "pretrain", "full", "none", 0, {"fid": 20.3, "clip_score": 26.1}, rng,
                config_extra={"train.steps": 0}))

    # ablation (Table 2 on Expedition, Table 9 on Cyberpunk / ElementFire)
    for me in ("sara", "sara_no_ppa", "sara_no_rank", "sara_plain", "largest", "random"):
        diag = {"share_below": 0.05 if me in ("sara", "sara_no_rank") else 0.35}
        add("ablation", "tiny", "Expedition", me, "50M", 0,
            _record("ablation", "tiny", "Expedition", me, "50M", 0, _style_metrics(me, "Expedition", "50M", rng, 0.02),
                    rng, diagnostics=diag))
    for ds in ("Cyberpunk", "ElementFire"):
        for me in ("sara", "sara_no_rank"):
            add("ablation", "tiny", ds, me, "50M", 0,
                _record("ablation", "tiny", ds, me, "50M", 0, _style_metrics(me, ds, "50M", rng, 0.02), rng))

    # threshold (Table 8)
    for th in (2e-4, 8e-4, 2e-3, 5e-3, 1e-2, 5e-2, 1e-1):
        exp = f"threshold--th{th}"
        m = {"fid": float(50 - 2 * np.log10(th / 2e-4) + rng.normal(0, 0.3)),
             "clip_score": float(26 - 0.1 * abs(np.log10(th / 2e-3)) + rng.normal(0, 0.02))}
        add(exp, "tiny", "Expedition", "sara", "none", 0,
            _record(exp, "tiny", "Expedition", "sara", "none", 0, m, rng, config_extra={"method.threshold": th},
                    method_extra={"threshold": th}))

    # hyper (Figs. 21–24): three grids
    # 3 × 3 grids (the experiment's are 5 × 5): enough for the heatmaps and the Eq. 12 fit
    lrs = (1e-5, 1e-4, 1e-3)
    ths = (5e-4, 2e-3, 1e-2)
    piters = (80, 200, 320)
    lams = (0.0, 5e-4, 5e-3)
    for lr in lrs:
        for th in ths:
            best = 1e-3 * np.exp(-350 * th)
            d = np.log10(lr / best)
            fid = 50 - 3 * np.log10(lr / 1e-5) - 2 * np.log10(th / 5e-4) + rng.normal(0, 0.2)
            clip = 26 - 0.25 * d ** 2 - 0.05 * d + rng.normal(0, 0.01)
            exp = f"hyper--lr_theta--lr{lr}-th{th}"
            add(exp, "tiny", "Expedition", "sara", "none", 0,
                _record(exp, "tiny", "Expedition", "sara", "none", 0, {"fid": float(fid), "clip_score": float(clip)},
                        rng, config_extra={"train.lr": lr, "method.threshold": th}, method_extra={"threshold": th}))
    for lr in lrs:
        for pi in piters:
            fid = 50 - 3 * np.log10(lr / 1e-5) - pi / 100 + rng.normal(0, 0.2)
            clip = 26 - 0.3 * np.log10(lr / 1e-5) - pi / 1000 + rng.normal(0, 0.02)
            exp = f"hyper--lr_piter--lr{lr}-pi{pi}"
            add(exp, "tiny", "Expedition", "sara", "50M", 0,
                _record(exp, "tiny", "Expedition", "sara", "50M", 0, {"fid": float(fid), "clip_score": float(clip)},
                        rng, config_extra={"train.lr": lr, "method.progressive_iter": pi},
                        method_extra={"progressive_iter": pi}))
    for lam in lams:
        for pi in piters:
            fid = 45 + 400 * lam - pi / 100 + rng.normal(0, 0.2)
            clip = 25.5 + 60 * lam - pi / 1000 + rng.normal(0, 0.02)
            exp = f"hyper--rank_piter--lam{lam}-pi{pi}"
            add(exp, "tiny", "Expedition", "sara", "50M", 0,
                _record(exp, "tiny", "Expedition", "sara", "50M", 0, {"fid": float(fid), "clip_score": float(clip)},
                        rng, config_extra={"method.lambda_rank": lam, "method.progressive_iter": pi},
                        method_extra={"lambda_rank": lam, "progressive_iter": pi}))

    # scaling (Fig. 16)
    for ds in DATASETS:
        for a in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5):
            m = {"fid": float(_BASE_FID[ds] * (1 - 0.2 * min(a, 1.2)) + rng.normal(0, 0.3)),
                 "clip_score": float(26.5 - 0.8 * a + rng.normal(0, 0.03))}
            exp = f"scaling--a{a}"
            add(exp, "tiny", ds, "sara", "50M", 0,
                _record(exp, "tiny", ds, "sara", "50M", 0, m, rng, config_extra={"delta.alpha": a}))

    # merging (Fig. 17): data.name = D, merge_with = E, model = β1·ΔP_D + β2·ΔP_E, evaluated against D
    for a, b in (("BarbieCore", "Cyberpunk"), ("Cyberpunk", "ElementFire"), ("ElementFire", "Expedition"),
                 ("Hornify", "Cyberpunk")):
        for d, e in ((a, b), (b, a)):
            for b1 in (0.0, 1.0):
                for b2 in (0.0, 1.0):
                    fid = _BASE_FID[d] * (1 - 0.2 * b1 + 0.03 * b2) + rng.normal(0, 0.3)
                    clip = 26.5 - 0.6 * b1 - 0.6 * b2 + rng.normal(0, 0.03)
                    exp = f"merging--{e}-b{b1}-{b2}"
                    add(exp, "tiny", d, "sara", "50M", 0,
                        _record(exp, "tiny", d, "sara", "50M", 0, {"fid": float(fid), "clip_score": float(clip)}, rng,
                                config_extra={"delta.merge_with": e, "delta.beta1": b1, "delta.beta2": b2}))

    # analysis (Fig. 19, Table 10): real maths on synthetic matrices
    n = 32
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w0 = {"mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight": (q * np.geomspace(3, 0.01, n)) @ q.T,
          "mid_block.attentions.0.transformer_blocks.0.attn1.to_v.weight": (q * np.geomspace(2, 0.02, n)) @ q.T}
    for me in ("sara", "lora"):
        for bu in ("5M", "50M"):
            w1 = {}
            for k, w in w0.items():
                if me == "sara":
                    mask = np.abs(w) < np.quantile(np.abs(w), 0.2 if bu == "5M" else 0.4)
                    w1[k] = w + 0.05 * rng.standard_normal(w.shape) * mask
                else:
                    w1[k] = w + 0.2 * rng.standard_normal((n, 2)) @ rng.standard_normal((2, n))
            diag = {"subspace": subspace_report(w0, w1, max_dim=16, seed=1, delta_u_dim=8),
                    "amplification": amplification_report(w0, w1, ranks=(1, 2, 4, 8))}
            add("analysis", "tiny", "Expedition", me, bu, 0,
                _record("analysis", "tiny", "Expedition", me, bu, 0, _style_metrics(me, "Expedition", bu, rng), rng,
                        diagnostics=diag))
    return out


def write_runs(root: str | Path, seed: int = 0, seeds: tuple[int, ...] = (0, 1)) -> Path:
    root = Path(root)
    for rel, rec in synthetic_records(seed, seeds):
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / RESULT_FILE).write_text(json.dumps(rec), encoding="utf-8")
    return root


def synthetic_table(root: str | Path, seed: int = 0, seeds: tuple[int, ...] = (0, 1)):
    """Write the synthetic runs under ``root`` and return ``sara.results.load_results(root)``."""
    from sara.results import load_results

    write_runs(root, seed, seeds)
    return load_results(root)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    write_runs(args.root, args.seed)
    print(f"synthetic runs written under {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
