"""The tiny embedded backbone: Stable Diffusion's classes at toy size, in pixel space.

* denoiser: diffusers ``UNet2DConditionModel`` on 32x32 RGB pixels (no VAE), cross-attention at
  16x16 and 8x8;
* text encoder: transformers ``CLIPTextModel`` (small), trained jointly with the UNet during
  pre-training; tokenizer: a real ``CLIPTokenizer`` whose BPE vocabulary makes every word of the
  procedural domain one token (:mod:`sara.backbones.tokenizer`);
* schedulers: ``DDPMScheduler`` (epsilon, 1000 steps, squared-cosine betas) for training,
  ``DPMSolverMultistepScheduler`` (20 steps, CFG 4) for sampling (``conf/backbone/tiny.yaml``).

Shipped weights: ``sara/zoo/tiny`` (diffusers format), reproduced by ``scripts/pretrain_tiny.py``.
"""
from __future__ import annotations

import copy
from pathlib import Path

TINY_ROOT = Path(__file__).resolve().parents[1] / "zoo" / "tiny"

#: architecture of the tiny backbone (the knobs of ``build_tiny``)
TINY_ARCH = {
    "resolution": 32,
    "unet": {
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [32, 64, 96],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": 4,  # diffusers' name; it is the number of heads (head size 16 / 24)
        "cross_attention_dim": 128,
        "norm_num_groups": 16,
    },
    "text_encoder": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "projection_dim": 128,
    },
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon",
        "clip_sample": False,
        # "leading" spacing never starts sampling at t=999, where the capped cosine schedule has
        # alpha_bar ~ 0 and an epsilon model's x0 estimate blows up
        "timestep_spacing": "leading",
    },
}

#: words beyond the procedural vocabulary that get their own token
EXTRA_WORDS = ["a", "an", "and", "the", "style", "of", "left", "right", "above", "below", "small", "large",
               "barbiecore", "cyberpunk", "elementfire", "expedition", "hornify", "with", "in", "on", "photo",
               "image", "picture", "object", "objects", "shape", "shapes", "colour", "color", "sks",
               ",", ".", ":", ";", "-", "'"]


def domain_words() -> list[str]:
    """Every word the procedural captions, style prefixes and eval prompts use."""
    words = set(EXTRA_WORDS)
    try:
        from sara.data import procedural as P
        words |= set(P.SHAPES) | set(P.COLOURS) | set(P.SIZES)
        for r in P.RELATIONS:
            words |= set(r.split())
    except Exception:  # data package not importable: the static list still covers the domain
        words |= {"circle", "square", "triangle", "diamond", "cross", "red", "orange", "yellow", "green", "cyan",
                  "blue", "purple"}
    try:
        from sara.data.styles import STYLE_SIZES
        words |= {s.lower() for s in STYLE_SIZES}
    except Exception:
        pass
    return sorted(words)


def tiny_config(overrides: dict | None = None) -> dict:
    arch = copy.deepcopy(TINY_ARCH)
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(arch.get(k), dict):
            arch[k].update(v)
        else:
            arch[k] = v
    return arch


def build_tiny(arch: dict | None = None, seed: int = 0, cfg: dict | None = None):
    """A randomly initialised tiny backbone (for pre-training from scratch)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .stable_diffusion import StableDiffusionBackbone
    from .tokenizer import build_clip_tokenizer

    arch = tiny_config(arch)
    torch.manual_seed(seed)
    tcfg = arch["text_encoder"]
    tok = build_clip_tokenizer(domain_words(), model_max_length=tcfg["max_position_embeddings"])
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, **tcfg))
    unet_cfg = dict(arch["unet"])
    unet_cfg["cross_attention_dim"] = tcfg["hidden_size"]
    unet = UNet2DConditionModel(**unet_cfg)
    sched = DDPMScheduler(**arch["scheduler"])
    cfg = dict(cfg or {})
    cfg.setdefault("name", "tiny")
    cfg.setdefault("kind", "tiny")
    cfg.setdefault("resolution", arch["resolution"])
    cfg.setdefault("sampling", {"steps": 20, "guidance_scale": 4.0, "sampler": "DPMSolverMultistepScheduler"})
    cfg["vae"] = None
    return StableDiffusionBackbone(cfg=cfg, denoiser=unet, vae=None, text_encoders=[te], tokenizers=[tok],
                                   noise_scheduler=sched, scheduler_config=dict(sched.config))


def load_tiny(cfg: dict):
    """Load the tiny backbone: ``pretrained`` (a diffusers folder) or, when null, the shipped zoo."""
    from .loading import MissingWeightsError
    from .stable_diffusion import StableDiffusionBackbone

    cfg = dict(cfg)
    cfg["vae"] = None
    src = cfg.get("pretrained") or str(TINY_ROOT)
    if not (Path(src) / "unet").is_dir():
        hint = ("the shipped weights are missing: reproduce them with `python scripts/pretrain_tiny.py` "
                f"(writes {TINY_ROOT})") if not cfg.get("pretrained") else "no unet/ folder there"
        raise MissingWeightsError(f"tiny backbone: cannot load weights from {src}: {hint}. "
                                  "Set backbone.pretrained=/path/to/folder (diffusers format: unet/, text_encoder/, "
                                  "tokenizer/, scheduler/) to use another copy.")
    cfg["pretrained"] = src
    cfg.setdefault("model_id", None)
    return StableDiffusionBackbone.from_pretrained(cfg)


def prompt_following_accuracy(images, prompts) -> tuple[dict, list]:
    """Check images of the procedural domain against their prompts (``sara.data.attributes.check_prompt``).

    Returns (summary, per-prompt rows). Per stated object: ``colour_acc`` (an object of that colour
    was drawn), ``shape_acc`` (the matched object has the stated shape), ``size_acc``; per prompt
    with a relation: ``relation_acc``; per image, all objects right: ``image_*_ok``."""
    import numpy as np
    from sara.data.attributes import check_prompt

    obj = {"colour": 0, "shape": 0, "size": 0}
    img = {"colour": 0, "shape": 0, "size": 0, "count": 0}
    tot = rel_n = rel_ok = 0
    rows = []
    for im, p in zip(images, prompts):
        r = check_prompt(np.asarray(im), p)
        for o in r["objects"]:
            tot += 1
            for k in obj:
                obj[k] += bool(o[f"{k}_ok"])
        for k in img:
            img[k] += bool(r[f"{k}_ok"])
        if r["relation_ok"] is not None:
            rel_n += 1
            rel_ok += bool(r["relation_ok"])
        rows.append({"prompt": p, "colour_acc": r["colour_acc"], "shape_acc": r["shape_acc"],
                     "detected": [(d["colour"], d["shape"], d["size"]) for d in r["detected"]]})
    out = {"n_prompts": len(rows), "n_objects": tot}
    out.update({f"{k}_acc": round(v / max(tot, 1), 4) for k, v in obj.items()})
    out["relation_acc"] = round(rel_ok / rel_n, 4) if rel_n else None
    out.update({f"image_{k}_ok": round(v / max(len(rows), 1), 4) for k, v in img.items()})
    return out, rows
