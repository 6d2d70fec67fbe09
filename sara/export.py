"""Export a finished run for use outside the suite.

    python -m sara.export RUN_DIR --out DIR --format diffusers      # a complete diffusers pipeline
    python -m sara.export RUN_DIR --out DIR --format lora --rank 8  # a LoRA of ΔW (diffusers format)

``diffusers``: the run's backbone as a diffusers pipeline folder (``model_index.json`` + one folder
per component) with the fine-tuned denoiser merged in and the run's sampling scheduler, so that
``DiffusionPipeline.from_pretrained(DIR)`` called with the run's prompt, seed, steps and guidance
gives the run's samples. ``export.json`` in the folder holds those sampling settings. A backbone
without a VAE (the pixel-space ``tiny``) has no VAE component: load it with
``DiffusionPipeline.from_pretrained(DIR, vae=None)`` and call it with ``output_type="latent"``;
the "latents" it returns are the images, in [-1, 1].

``lora``: ΔW = W1 − W0 of every changed weight matrix (linear layers, and conv layers as
``out × (in·kh·kw)``) factorised by truncated SVD, ``ΔW ≈ B A`` with ``B = U_r √S_r``,
``A = √S_r V_rᵀ`` (rank ``min(R, out, in·kh·kw)``), written with the pipeline class's own
``save_lora_weights`` (``pytorch_lora_weights.safetensors``), so ``pipe.load_lora_weights(DIR)``
reads it. Changed biases and norm weights have no LoRA form: their share of ‖ΔW‖ is reported.
The relative error ‖ΔW − BA‖_F / ‖ΔW‖_F is printed overall and for the worst layer.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXPORT_FILE = "export.json"


# ------------------------------------------------------------------------------------------------
# the run's models
# ------------------------------------------------------------------------------------------------
def load_run(run_dir: str | os.PathLike) -> tuple[Any, nn.Module, dict]:
    """``(backbone, base_denoiser_copy, record)``: the run's backbone with its fine-tuned denoiser
    merged in (``backbone.denoiser``), a copy of the base denoiser, and the run's record."""
    import copy

    from sara.backbones import load_backbone
    from sara.weights import run_record, trained_denoiser

    record = run_record(run_dir)
    backbone = load_backbone(record["config"]["backbone"])
    base = copy.deepcopy(backbone.denoiser)
    module, method = trained_denoiser(run_dir, backbone.denoiser, record["config"],
                                      record.get("target_params"))
    if set(dict(module.named_parameters())) != set(dict(base.named_parameters())):
        raise ValueError(f"{run_dir}: method {method.name!r} adds modules to the denoiser; its "
                         "result is not a plain model that diffusers can load or a LoRA can hold")
    backbone.denoiser = module
    return backbone, base, record


def sampling_settings(record: dict, backbone) -> dict:
    """The run's sampling settings (what makes its samples), for ``export.json``."""
    ecfg = record["config"].get("eval") or {}
    return {"num_inference_steps": int(ecfg.get("num_inference_steps") or backbone.default_steps),
            "guidance_scale": float(ecfg.get("guidance_scale") if ecfg.get("guidance_scale")
                                    is not None else backbone.default_guidance),
            "seed": int(ecfg.get("seed", record.get("seed", 0))),
            "batch_size": int(ecfg.get("batch_size", 16)),
            "negative_prompt": backbone.negative_prompt,
            "latent_output_is_image": backbone.vae is None}


# ------------------------------------------------------------------------------------------------
# diffusers pipeline
# ------------------------------------------------------------------------------------------------
def export_diffusers(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the run's fine-tuned model as a diffusers pipeline folder; return it."""
    backbone, _, record = load_run(run_dir)
    return save_pipeline(backbone, out, {"run_dir": str(run_dir),
                                         "sampling": sampling_settings(record, backbone)})


def save_pipeline(backbone, out: str | os.PathLike, info: dict | None = None) -> Path:
    """``backbone`` (with whatever denoiser it holds) as a pipeline folder, its sampling
    scheduler as the pipeline's scheduler."""
    out = Path(out)
    backbone.save_pretrained(out)
    sampler = backbone.make_sampler()
    import shutil

    shutil.rmtree(out / "scheduler", ignore_errors=True)
    sampler.save_pretrained(out / "scheduler")
    index = json.loads((out / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", type(sampler).__name__]
    if backbone.pipeline_class in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        for opt in ("safety_checker", "feature_extractor", "image_encoder"):
            index.setdefault(opt, [None, None])
        if backbone.pipeline_class == "StableDiffusionPipeline":
            index.setdefault("requires_safety_checker", False)
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / EXPORT_FILE).write_text(json.dumps(info or {}, indent=2) + "\n")
    return out


def load_pipeline(folder: str | os.PathLike):
    """``DiffusionPipeline.from_pretrained(folder)`` (``vae=None`` for a pixel-space model)."""
    from diffusers import DiffusionPipeline

    index = json.loads((Path(folder) / "model_index.json").read_text())
    kw = {"vae": None} if index.get("vae", [None])[0] is None else {}
    pipe = DiffusionPipeline.from_pretrained(str(folder), **kw)
    # Stable Diffusion pipelines rewrite a scheduler config with steps_offset != 1 on load
    # (a deprecation fix-up), which moves every timestep by one; the exported config is the one
    # the run sampled with, so it is put back.
    pipe.scheduler = type(pipe.scheduler).from_pretrained(str(folder), subfolder="scheduler")
    return pipe


@torch.no_grad()
def pipeline_images(pipe, prompts: list[str], steps: int, guidance: float, seed: int,
                    latent_output_is_image: bool) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] from a diffusers pipeline, one call (the suite's noise layout)."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    if latent_output_is_image:
        x = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                 output_type="latent").images
        return x.float().clamp(-1, 1).cpu()
    x = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=g,
             output_type="pt").images
    return (x.float() * 2 - 1).cpu()


def reproduction_error(run_dir: str | os.PathLike, folder: str | os.PathLike,
                       n: int | None = None) -> dict:
    """Max |pipeline − suite| over the run's first sampling chunk: against the suite's sampler
    in float (``max_abs``) and against the run's PNG files in 8-bit levels (``max_png_levels``)."""
    import numpy as np
    from PIL import Image

    info = json.loads((Path(folder) / EXPORT_FILE).read_text())["sampling"]
    rows = [json.loads(l) for l in (Path(run_dir) / "samples/prompts.jsonl").read_text().splitlines()]
    rows = rows[:min(len(rows), info["batch_size"], n or len(rows))]
    texts = [r["text"] for r in rows]
    pipe = load_pipeline(folder)
    got = pipeline_images(pipe, texts, info["num_inference_steps"], info["guidance_scale"],
                          info["seed"], info["latent_output_is_image"])
    backbone, _, _ = load_run(run_dir)
    want = backbone.sample(texts, num_inference_steps=info["num_inference_steps"],
                           guidance_scale=info["guidance_scale"], seed=info["seed"],
                           batch_size=len(texts), output_type="pt")
    png = np.stack([np.asarray(Image.open(Path(run_dir) / "samples" / r["file_name"]).convert("RGB"))
                    for r in rows]).astype(np.int64)
    mine = ((got.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.int64)
    return {"images": len(texts), "max_abs": float((got - want).abs().max()),
            "max_png_levels": int(np.abs(mine - png).max())}


# ------------------------------------------------------------------------------------------------
# LoRA by truncated SVD
# ------------------------------------------------------------------------------------------------
def lora_from_delta(base: nn.Module, tuned: nn.Module, rank: int) -> tuple[dict, dict]:
    """``(lora_state, report)``: peft-named ``<module>.lora_A.weight`` / ``lora_B.weight`` of every
    changed Linear / Conv2d weight, and the relative errors."""
    if rank < 1:
        raise ValueError(f"--rank must be >= 1, got {rank}")
    b_mods = dict(base.named_modules())
    t_params = dict(tuned.named_parameters())
    state, layers = {}, []
    err2 = tot2 = other2 = 0.0
    with torch.no_grad():
        for name, p0 in base.named_parameters():
            d = (t_params[name].detach().double().cpu() - p0.detach().double().cpu())
            norm2 = float((d * d).sum())
            if norm2 == 0.0:
                continue
            mod_name, _, leaf = name.rpartition(".")
            mod = b_mods.get(mod_name)
            if leaf != "weight" or not isinstance(mod, (nn.Linear, nn.Conv2d)) or \
                    (isinstance(mod, nn.Conv2d) and mod.groups != 1):
                other2 += norm2
                continue
            mat = d.reshape(d.shape[0], -1)
            u, s, vh = torch.linalg.svd(mat, full_matrices=False)
            r = min(rank, s.numel())
            root = s[:r].sqrt()
            b = u[:, :r] * root
            a = root[:, None] * vh[:r]
            e2 = float(((mat - b @ a) ** 2).sum())
            err2, tot2 = err2 + e2, tot2 + norm2
            layers.append({"layer": mod_name, "rank": r, "rel_error": math.sqrt(e2 / norm2)})
            dt = p0.dtype
            if isinstance(mod, nn.Conv2d):
                a = a.reshape(r, *d.shape[1:])          # Conv(in, r, k): peft's lora_A
                b = b.reshape(d.shape[0], r, 1, 1)      # Conv(r, out, 1): peft's lora_B
            state[f"{mod_name}.lora_A.weight"] = a.to(dt).contiguous()
            state[f"{mod_name}.lora_B.weight"] = b.to(dt).contiguous()
    if not layers:
        raise ValueError("the run changed no Linear/Conv2d weight: nothing to put in a LoRA")
    worst = max(layers, key=lambda x: x["rel_error"])
    report = {"rank": rank, "layers": len(layers),
              "rel_error": math.sqrt(err2 / tot2) if tot2 else 0.0,
              "worst_layer": worst,
              "not_in_lora_share": math.sqrt(other2 / (other2 + tot2)) if other2 + tot2 else 0.0}
    return state, report


def export_lora(run_dir: str | os.PathLike, out: str | os.PathLike, rank: int) -> dict:
    """Write a LoRA of the run's ΔW to ``out`` (diffusers' format); return the error report."""
    import diffusers

    backbone, base, _ = load_run(run_dir)
    state, report = lora_from_delta(base, backbone.denoiser, rank)
    cls = getattr(diffusers, backbone.pipeline_class)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cls.save_lora_weights(str(out), **{f"{backbone.denoiser_subfolder}_lora_layers": state})
    (out / EXPORT_FILE).write_text(json.dumps({"run_dir": str(run_dir), "lora": report},
                                              indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sara.export", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("run_dir", help="a finished run directory (holding result.json)")
    ap.add_argument("--out", required=True, help="the folder to write")
    ap.add_argument("--format", choices=("diffusers", "lora"), default="diffusers")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (--format lora)")
    ap.add_argument("--check", action="store_true",
                    help="diffusers: regenerate the run's first samples with the exported "
                         "pipeline and print the largest difference")
    args = ap.parse_args(argv)
    try:
        if args.format == "diffusers":
            folder = export_diffusers(args.run_dir, args.out)
            pixel = not (Path(folder) / "vae").is_dir()
            how = (f"DiffusionPipeline.from_pretrained({str(folder)!r}, vae=None), called with output_type='latent' "
                   "(pixel space: no VAE)") if pixel else f"DiffusionPipeline.from_pretrained({str(folder)!r})"
            print(f"wrote {folder} (load with {how}; or sara.export.load_pipeline)")
            if args.check:
                r = reproduction_error(args.run_dir, folder)
                print(f"reproduction over {r['images']} samples: max |Δ| {r['max_abs']:.3g} "
                      f"(float), {r['max_png_levels']} levels against the run's PNGs")
        else:
            r = export_lora(args.run_dir, args.out, args.rank)
            w = r["worst_layer"]
            print(f"wrote {args.out}: rank {args.rank}, {r['layers']} layers, relative error "
                  f"||ΔW - BA|| / ||ΔW|| = {r['rel_error']:.4g} (worst layer {w['layer']}: "
                  f"{w['rel_error']:.4g}); share of ΔW outside any LoRA (biases, norms): "
                  f"{r['not_in_lora_share']:.3g}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
