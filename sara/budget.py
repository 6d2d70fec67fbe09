"""Parameter-budget matching: every compared method solves its own knob so that its trainable
count matches a budget (paper: 5M / 20M / 50M on SD 1.5's 860M UNet).

Budgets are given relative to a reference model (``conf/budget/*.yaml``: ``params`` and
``reference_params: 859520964``, the SD 1.5 UNet); on a denoiser with ``D`` parameters the target
is ``round(params / reference_params * D)``, so ``budget=5M`` is the same share of the model on
every backbone. A fraction (``0 < params <= 1``) means that share of the denoiser directly; with
``reference_params: null`` a number is an absolute count.

Knobs (each method's ``solve_budget``): SaRA's threshold θ (``threshold_for_budget``; or the k
smallest entries, exact), k for the selective methods (exact), Super-Tuning's sparsity
(bisection), ``full``: no knob (the whole denoiser). The integer knobs are set per module, so that
small budgets are met too: LoRA/DoRA rank (peft ``rank_pattern``) and AdaptFormer bottleneck
(``bottleneck_pattern``) take a base value on every module and one more on an evenly spread
subset of the modules; SHiRA (one rank for all layers in peft) leaves out an evenly spread subset
of layers instead. Methods that add parameters (LoRA, DoRA, AdaptFormer, SHiRA, Super-Tuning) are
counted on the model they build (``built_count``), not from the formula alone.

CLI (no weights needed: the architecture is built from its config, randomly initialised)::

    python -m sara.budget --backbone sd15 --random-init --json OUT.json [--budgets 5M,20M,50M]
                          [--methods sara,lora,...] [--dtype float32|bfloat16]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from sara.backbones.arch import KNOWN_PARAM_COUNTS
from sara.io import atomic_write_text

log = logging.getLogger(__name__)

REFERENCE_PARAMS = KNOWN_PARAM_COUNTS["sd15"]  # SD 1.5 UNet, the paper's reference for budgets
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_BUDGETS = ("5M", "20M", "50M")
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def parse_budget(value: Any) -> float | None:
    """``"5M"`` -> 5e6, ``"1.5k"`` -> 1500, ``"0.01"`` -> 0.01 (a fraction), ``"none"``/None -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    s = str(value).strip()
    if s.lower() in ("none", "null", "", "full"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([kKmMbBgG]?)", s)
    if not m:
        raise ValueError(f"cannot read budget {value!r}: use e.g. 5M, 20M, 1.5e6, 0.01 (a fraction) or none")
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def target_for(params: float | None, reference_params: float | None, n_denoiser: int) -> int | None:
    """The trainable-parameter target on a denoiser with ``n_denoiser`` parameters.

    ``None`` -> None (no budget); ``0 < params <= 1`` -> that fraction of the denoiser;
    otherwise ``round(params / reference_params * n_denoiser)`` (``reference_params`` None or 0:
    ``params`` is an absolute count). Always at least 1."""
    if params is None:
        return None
    params = float(params)
    if params <= 0 or math.isnan(params):
        raise ValueError(f"budget params must be > 0, got {params}")
    if params <= 1:
        t = params * n_denoiser
    elif reference_params:
        t = params / float(reference_params) * n_denoiser
    else:
        t = params
    return max(1, int(round(t)))


def budget_target(budget_cfg: Any, n_denoiser: int) -> int | None:
    """``target_for`` from a budget config (dict/DictConfig with ``params``, ``reference_params``),
    a budget string (``"5M"``) or a number."""
    if budget_cfg is None:
        return None
    if hasattr(budget_cfg, "get"):
        ref = budget_cfg.get("reference_params", REFERENCE_PARAMS)
        return target_for(parse_budget(budget_cfg.get("params")), ref, n_denoiser)
    return target_for(parse_budget(budget_cfg), REFERENCE_PARAMS, n_denoiser)


def solve_knob(method, denoiser, target: int | None) -> dict:
    """Set ``method``'s knob for ``target`` trainable entries on ``denoiser`` (weights untouched).

    Returns ``{"method", "knob", "knob_value", "knob_pattern", "target", "achieved",
    "rel_error", "counted_on"}``: ``knob_pattern`` the per-module values that differ from
    ``knob_value`` (None: one value everywhere), ``counted_on`` ``"built model"`` where the method
    was built on a copy of ``denoiser`` and its trained tensors counted (``achieved`` is that
    count; ``solver_count`` is added if the solver's own count differs), else ``"solver"``."""
    from sara.methods.base import AddedParamsMethod

    n = sum(p.numel() for p in denoiser.parameters())
    if target is None:
        knob_value, achieved = None, None
    else:
        knob_value, achieved = method.solve_budget(denoiser, int(target))
    pattern = method.knob_pattern if target is not None else None
    counted_on, extra = "solver", {}
    modules = method.knob_modules(denoiser)
    if modules is not None:
        extra["knob_modules"] = len(modules)
    if target is not None and isinstance(method, AddedParamsMethod):
        built = built_count(method, denoiser, int(target))
        if built != achieved:
            extra["solver_count"] = achieved
        achieved, counted_on = built, "built model"
    if achieved is None and target is not None:
        achieved = n
    rel = None if target is None or achieved is None else (achieved - target) / target
    return {"method": getattr(method, "name", type(method).__name__), "knob": method.knob or None,
            "knob_value": knob_value, "knob_pattern": pattern, "target": target, "achieved": achieved,
            "rel_error": rel, "counted_on": counted_on, "denoiser_params": n, **extra}


def built_count(method, denoiser, target: int) -> int:
    """Build ``method`` for ``target`` on a copy of ``denoiser`` that shares no memory with it
    (meta tensors where the method needs only shapes, else uninitialised ones) and count the
    tensors it trains."""
    import copy

    import torch

    device = "meta" if method.shape_only else None
    memo = {}
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        empty = torch.empty_like(t, device=device)
        memo[id(t)] = torch.nn.Parameter(empty, requires_grad=False) if isinstance(t, torch.nn.Parameter) else empty
    method.apply(copy.deepcopy(denoiser, memo), budget=int(target))
    return int(method.num_trainable())


def eq12_lr_for_budget(denoiser, target: int) -> tuple[float, float]:
    """``(θ, lr)``: the threshold SaRA needs for ``target`` trainable entries on ``denoiser`` and
    Eq. 12's learning rate for it. The paper derives every method's initial learning rate from
    the threshold (App. training details); ``train.lr=eq12`` gives all methods of one budget the
    same rate this way, so no baseline is left under-trained by an SD-scale default."""
    from .core.optimizer import lr_from_threshold
    from .core.selection import threshold_for_budget

    theta = threshold_for_budget(denoiser, int(target))
    return theta, lr_from_threshold(theta)


def tuned_lr_key(plain: dict) -> tuple[str, str, str]:
    """(backbone, method, budget) under which ``train.lr=tuned`` looks a run's rate up (``plain``:
    the run's config); ``train.lr_of`` names another method's search (SaRA's ablation variants)."""
    backbone, method, budget = (str((plain.get(g) or {}).get("name")) for g in ("backbone", "method", "budget"))
    return backbone, (plain.get("train") or {}).get("lr_of") or method, budget


def resolve_lr(lr: Any, denoiser: Any, budget: int | None,
               tuned_key: tuple[str, str, str] | None = None) -> tuple[float | None, dict]:
    """``train.lr``: a number, ``null`` (the method's own default), ``eq12`` or ``tuned``.

    ``eq12``: Eq. 12's rate ``1e-3 · exp(-350 θ)`` at the θ that gives SaRA this run's budget on
    this denoiser, so every method of one budget trains at the same rate (the paper derives the
    initial rate from the threshold); with ``budget: none`` the method's default.
    ``tuned``: the method's own rate from the learning-rate search (:mod:`sara.lr_search`), looked
    up by ``tuned_key = (backbone name, method name, budget label)``.
    Returns ``(lr, record)``."""
    if lr is None or isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return lr, {"policy": "fixed" if lr is not None else "method_default", "lr": lr}
    policy = str(lr).lower()
    if policy == "tuned":
        if tuned_key is None:
            raise ValueError("train.lr=tuned needs the backbone, method and budget names of the run")
        from sara.lr_search import lr_table_path, tuned_lr

        value = tuned_lr(*tuned_key)
        return value, {"policy": "tuned", "lr": value, "table": str(lr_table_path(tuned_key[0])),
                       "of": tuned_key[1]}
    if policy != "eq12":
        raise ValueError(f"train.lr: expected a number, null, 'eq12' or 'tuned', got {lr!r}")
    if budget is None:
        log.warning("train.lr=eq12 with budget=none: using the method's own default rate")
        return None, {"policy": "eq12", "lr": None, "threshold": None}
    theta, value = eq12_lr_for_budget(denoiser, budget)
    return value, {"policy": "eq12", "lr": value, "threshold": theta}


# --- configs ----------------------------------------------------------------------------------
def method_names(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / "method").glob("*.yaml"))


def method_config(name: str, conf_dir: Path = CONF_DIR):
    """The composed ``conf/method/<name>.yaml`` (Hydra defaults lists resolved)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name=f"method/{name}")
    return cfg.method


def instantiate_method(name: str, conf_dir: Path = CONF_DIR, **overrides: Any):
    from hydra.utils import instantiate

    cfg = method_config(name, conf_dir)
    return instantiate(cfg, **overrides)


def budget_config(name: str, conf_dir: Path = CONF_DIR) -> dict:
    """``conf/budget/<name>.yaml`` as a dict; a name without a file is read as a number/fraction."""
    p = conf_dir / "budget" / f"{name}.yaml"
    if p.is_file():
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(OmegaConf.load(p), resolve=True))
    return {"name": name, "params": parse_budget(name), "reference_params": REFERENCE_PARAMS}


# --- CLI --------------------------------------------------------------------------------------
def tiny_denoiser(device: str = "cpu", dtype=None):
    """The tiny backbone's UNet architecture, randomly initialised (no weights needed)."""
    import torch
    from diffusers import UNet2DConditionModel

    from sara.backbones.tiny import tiny_config

    arch = tiny_config()
    cfg = dict(arch["unet"])
    cfg["cross_attention_dim"] = arch["text_encoder"]["hidden_size"]
    with torch.device(device):
        model = UNet2DConditionModel(**cfg)
    return model.to(dtype=dtype) if dtype not in (None, torch.float32) else model


def build_denoiser(backbone: str, random_init: bool = True, device: str = "cpu", dtype=None):
    """The denoiser of ``backbone`` (sd15 | sd2 | sd3 | sdxl | tiny | tiny_sd2 | tiny_sd3 | tiny_sdxl
    | a config path); random initialisation unless ``random_init=False`` (the tiny backbones' zoo
    weights)."""
    from sara.backbones import build_denoiser_from_config

    if backbone == "tiny":
        if random_init:
            return tiny_denoiser(device, dtype)
        from sara.backbones.tiny import TINY_ROOT

        return build_denoiser_from_config(TINY_ROOT, random_init=False, device=device, dtype=dtype)
    if not random_init:
        from sara.backbones.tiny_families import WORLDS, pretrain_command

        if backbone in WORLDS:  # SaRA's threshold depends on the weights: the pre-trained ones
            root = WORLDS[backbone]["root"]
            if not (root / "model_index.json").is_file():
                raise SystemExit(f"--backbone {backbone}: the pre-trained weights are not in {root} yet (reproduce "
                                 f"them with {pretrain_command(backbone)}); pass --random-init to match the "
                                 "budgets on random weights")
            return build_denoiser_from_config(root, random_init=False, device=device, dtype=dtype)
        raise SystemExit(f"--backbone {backbone}: only --random-init is supported here (a parameter "
                         "count needs no weights); pass --random-init")
    return build_denoiser_from_config(backbone, random_init=True, device=device, dtype=dtype)


def run(backbone: str, budgets=DEFAULT_BUDGETS, methods=None, random_init: bool = True,
        device: str = "cpu", dtype: str = "float32", seed: int = 0, log=print,
        denoiser=None) -> list[dict]:
    """Records for every method x budget on ``backbone``'s denoiser (built here unless given)."""
    import torch

    torch.manual_seed(seed)
    t0 = time.time()
    dt = getattr(torch, dtype)
    den = denoiser if denoiser is not None else build_denoiser(
        backbone, random_init, device, None if dt == torch.float32 else dt)
    den.requires_grad_(False)
    n = sum(p.numel() for p in den.parameters())
    log(f"# {backbone}: {n:,} denoiser parameters ({type(den).__name__}, built in {time.time() - t0:.1f}s)")
    records = []
    memo: dict = {}
    for mname in methods or method_names():
        method = instantiate_method(mname)
        for b in budgets:
            bc = budget_config(b)
            target = target_for(bc.get("params"), bc.get("reference_params"), n)
            t1 = time.time()
            try:
                if method.knob == "threshold":  # the SaRA ablations share θ: solve it once
                    key = (type(method).__name__, repr(getattr(method, "params", None)), target)
                    if key not in memo:
                        memo[key] = solve_knob(method, den, target)
                    rec = dict(memo[key])
                else:
                    rec = solve_knob(method, den, target)
            except (ValueError, NotImplementedError) as e:  # SaRA's θ, SHiRA's mask need values
                if not next(den.parameters()).is_meta:
                    raise
                rec = {"method": mname, "knob": method.knob, "knob_value": None, "target": target,
                       "achieved": None, "rel_error": None, "denoiser_params": n,
                       "note": f"not on the meta device: {e}"}
            rec.update({"method": mname, "budget": str(bc.get("name", b)), "backbone": backbone,
                        "seconds": round(time.time() - t1, 2)})
            records.append(rec)
    return records


def _knob_text(r: dict) -> str:
    """``knob_value``, then ``(v on n of N)`` for the n modules (of N) whose value is v instead."""
    kv = r["knob_value"]
    kv = f"{kv:.4g}" if isinstance(kv, float) else f"{kv:,}" if type(kv) is int else str(kv)
    values = list((r.get("knob_pattern") or {}).values())
    of = f" of {r['knob_modules']}" if r.get("knob_modules") else ""
    return kv + "".join(f" ({v} on {values.count(v)}{of})" for v in sorted(set(values)))


def format_table(records: list[dict]) -> str:
    rows = [("method", "budget", "knob", "knob_value", "target", "achieved", "rel_err", "counted on")]
    for r in records:
        kv = _knob_text(r)
        rel = "" if r["rel_error"] is None else f"{100 * r['rel_error']:+.3f}%"
        if not r["knob"] and r["target"]:
            rel = "(no knob)"
        if r.get("note"):
            rel = "needs values (run without --device meta)"
        rows.append((r["method"], r["budget"], str(r["knob"]), kv, f"{r['target']:,}" if r["target"] else "-",
                     f"{r['achieved']:,}" if r["achieved"] is not None else "-", rel,
                     r.get("counted_on") or ""))
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    note = ("\nknob_value: the value on every module, (v on n of N): n of the N modules at v "
            "instead (rank 0: layer left out)")
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows) + note


def _cell(r: dict) -> str:
    if not r["knob"] or r["target"] is None:
        return f"{r['achieved']:,} (no knob)" if r["achieved"] is not None else "-"
    rel = f"{100 * r['rel_error']:+.2f}%".replace("-", "−")
    return f"{_knob_text(r)}: {r['achieved']:,} ({rel})"


def format_markdown(records: list[dict]) -> str:
    """One Markdown row per method (methods whose cells are all equal share a row), one column
    per budget: ``knob value (per-module values): achieved count (relative error)``."""
    budgets = list(dict.fromkeys(r["budget"] for r in records))
    targets = {r["budget"]: r["target"] for r in records}
    rows: dict[tuple, list[str]] = {}
    for m in dict.fromkeys(r["method"] for r in records):
        by = {r["budget"]: r for r in records if r["method"] == m}
        knob = next(iter(by.values()))["knob"]
        rows.setdefault((knob, *(_cell(by[b]) if b in by else "-" for b in budgets)), []).append(m)
    head = ["method (knob)"] + [f"{b} → {targets[b]:,}" if targets[b] else b for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for (knob, *cells), methods in rows.items():
        name = ", ".join(f"`{m}`" for m in methods) + (f" ({knob})" if knob else "")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sara.budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="sd15 | sd2 | sd3 | sdxl | tiny | tiny_sd2 | tiny_sd3 | tiny_sdxl")
    ap.add_argument("--random-init", action="store_true", help="build the architecture randomly initialised")
    ap.add_argument("--json", type=Path, help="write the records here")
    ap.add_argument("--budgets", default=",".join(DEFAULT_BUDGETS))
    ap.add_argument("--methods", default=None, help="comma-separated conf/method names (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (halves memory on sd3/sdxl)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (one row per method)")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    budgets = [b.strip() for b in a.budgets.split(",") if b.strip()]
    records = run(a.backbone, budgets, methods, a.random_init, a.device, a.dtype, a.seed,
                  log=lambda s: print(s, file=sys.stderr))
    print(format_markdown(records) if a.markdown else format_table(records))
    if a.json:
        atomic_write_text(a.json, json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
