"""``delta.*``: sample with a trained delta of another run instead of training:
``W = W0 + β1·α·ΔP [+ β2·ΔP2]`` (App. F scaling, App. G merging). Sparse deltas (SaRA and the
selective methods) go through sara.core's ``load_sparse`` / ``merge_sparse``; other methods'
states are restored on a copy of the base and merged densely."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping

from sara.budget import budget_target
from sara.env import REPO_ROOT
from sara.io import read_json
from sara.record import (DEFAULT_OUTPUT_ROOT, FAILED_FILE, RUN_DIR_LEVELS, identity_from_parts,
                         is_complete, load_result)


def source_command(run_dir: Path, output_root: str | os.PathLike | None) -> str:
    """The ``run.py`` command that makes the run in ``run_dir`` (from its path layout)."""
    root = Path(output_root or DEFAULT_OUTPUT_ROOT)
    n = len(RUN_DIR_LEVELS)
    try:
        parts = run_dir.resolve().relative_to(root.resolve()).parts
    except ValueError:
        parts = run_dir.parts[-n:] if len(run_dir.parts) >= n else None
    ident = identity_from_parts(parts) if parts and len(parts) == n else {}
    if "experiment" not in ident:
        return "the run that writes it (e.g. bash experiments/style.sh)"
    exp = ident["experiment"]
    base = exp.split("--")[0]
    exp_arg = (f"+experiment={base}" if (REPO_ROOT / "conf/experiment" / f"{base}.yaml").is_file()
               else f"experiment_name={exp}")
    cmd = (f"python run.py {exp_arg} backbone={ident['backbone']} data.name={ident['dataset']} "
           f"method={ident['method']} budget={ident['budget']} seed={ident['seed']}")
    if str(output_root or DEFAULT_OUTPUT_ROOT) != DEFAULT_OUTPUT_ROOT:
        cmd += f" output_root={output_root}"
    return cmd


def read_source_config(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(resolved config, result record) of a run directory, whatever of them exists."""
    rec = load_result(run_dir)
    if rec is not None and isinstance(rec.get("config"), dict):
        return rec["config"], rec
    for name in (FAILED_FILE,):
        with contextlib.suppress(OSError, ValueError):
            cfg = read_json(run_dir / name).get("config")
            if isinstance(cfg, dict):
                return cfg, None
    p = run_dir / ".hydra" / "config.yaml"
    if p.is_file():
        with contextlib.suppress(Exception):
            from omegaconf import OmegaConf

            return OmegaConf.to_container(OmegaConf.load(p), resolve=True), None
    return None, None


def load_delta_source(key: str, run_dir: str | os.PathLike, output_root=None,
                      backbone_name: str | None = None) -> dict:
    """The trained weights of a finished run for ``delta.source`` / ``delta.merge_source``:
    ``{"key", "run_dir", "checkpoint", "trained", "meta", "sparse", "step", "method", "config",
    "record"}``, read from the run's weights file (safetensors: loading never runs code from a
    file). Errors name the path and the command that makes the run."""
    from sara.weights import read_run_weights

    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        why = ("the run failed (see its failed.json)" if (run_dir / FAILED_FILE).is_file() else
               "the directory does not exist" if not run_dir.is_dir() else
               "the run has not finished")
        raise FileNotFoundError(
            f"{key}={run_dir}: no finished run with trained weights there ({why}). Make it "
            f"first: {source_command(run_dir, output_root)}")
    weights = read_run_weights(run_dir)
    ckpt, step = weights["path"], int(weights["record"].get("steps") or 0)
    cfg, rec = read_source_config(run_dir)
    src_bb = ((cfg or {}).get("backbone") or {}).get("name")
    if backbone_name is not None and src_bb is not None and src_bb != backbone_name:
        raise ValueError(f"{key}: the run in {run_dir} fine-tuned backbone {src_bb!r}, this run "
                         f"samples backbone {backbone_name!r}")
    return {"key": key, "run_dir": str(run_dir), "checkpoint": ckpt, "trained": weights["tensors"],
            "meta": weights["meta"], "sparse": weights["sparse"], "step": step,
            "method": weights["method"], "config": cfg, "record": rec}


def dense_delta(src: dict, base) -> dict:
    """name -> W1 - W0 of a non-sparse trained state (LoRA, DoRA, full, ...): the source run's
    method is restored on a copy of ``base`` and merged."""
    import copy

    import hydra.utils
    import torch

    cfg = src["config"]
    if not cfg or not cfg.get("method"):
        raise ValueError(f"{src['key']}: {src['run_dir']} has no readable config (result.json or "
                         ".hydra/config.yaml): the method that made its trained state is unknown")
    method = hydra.utils.instantiate(cfg["method"], _convert_="all")
    n = sum(p.numel() for p in base.parameters())
    budget = (src.get("record") or {}).get("target_params")
    if budget is None:
        budget = budget_target(cfg.get("budget"), int(n))
    module = method.load_weights(copy.deepcopy(base), src["run_dir"], budget=budget)
    module = method.merged(module)
    w0 = dict(base.named_parameters())
    w1 = dict(module.named_parameters())
    if set(w0) != set(w1):
        extra = sorted(set(w1) - set(w0))[:2]
        raise ValueError(f"{src['key']}: method {getattr(method, 'name', '?')!r} does not change the "
                         f"denoiser's own weights only (it adds {extra}); its change is not a weight "
                         "delta that can be scaled or merged")
    with torch.no_grad():
        return {k: (w1[k].detach().float() - w0[k].detach().float())
                for k in w0 if not torch.equal(w1[k], w0[k])}


def apply_delta(model, dcfg: Mapping, sources: list[dict]) -> dict:
    """Write ``W0 + β1·α·ΔP [+ β2·ΔP2]`` into the plain ``model`` (which holds W0). Sparse deltas
    (SaRA and the selective methods) go through sara.core's ``load_sparse`` (one delta: an exact
    lerp, α=0 the base, α=1 the trained values) / ``merge_sparse``; other methods' states are
    restored and merged densely. Returns what the record keeps about it."""
    import tempfile

    import torch

    from sara.core import load_sparse, merge_sparse

    weights = [float(dcfg["alpha"]) * float(dcfg["beta1"])]
    if len(sources) > 1:
        weights.append(float(dcfg["beta2"]))
    info = {"alpha": dcfg["alpha"], "beta1": dcfg["beta1"],
            "beta2": dcfg["beta2"] if len(sources) > 1 else None, "merge_with": dcfg["merge_with"],
            "sources": []}
    for src, w in zip(sources, weights):
        entries = (sum(int(v.numel()) for k, v in src["trained"].items() if str(k).startswith("indices/"))
                   if src["sparse"] else None)
        info["sources"].append({"key": src["key"], "run_dir": src["run_dir"],
                                "checkpoint": src["checkpoint"], "weight": w, "step": src["step"],
                                "method": src["method"], "kind": "sparse" if src["sparse"] else "dense",
                                "entries": entries})
    if all(s["sparse"] for s in sources):
        metas = [s["meta"] for s in sources]  # the delta file's own metadata
        if len(sources) == 1:
            load_sparse(model, dict(sources[0]["trained"]), alpha=weights[0], metadata=metas[0])
        else:
            from safetensors.torch import save_file

            with tempfile.TemporaryDirectory(prefix="sara-delta-") as tmp:
                items = []
                for i, (s, meta, w) in enumerate(zip(sources, metas, weights)):
                    p = Path(tmp) / f"delta{i}.safetensors"
                    save_file({k: v.detach().cpu().contiguous().clone() for k, v in s["trained"].items()},
                              str(p), metadata=meta)
                    items.append((p, w))
                merge_sparse(model, items)
        return info
    deltas = [(dense_delta(s, model), w) for s in sources]  # all against W0, before writing
    params = dict(model.named_parameters())
    with torch.no_grad():
        for d, w in deltas:
            for k, v in d.items():
                p = params[k]
                p.copy_((p.float() + w * v.to(p.device)).to(p.dtype))
    return info
