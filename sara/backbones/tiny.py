"""The tiny embedded backbones: Stable Diffusion's classes at toy size.

Two worlds, one loading code (:class:`~sara.backbones.stable_diffusion.StableDiffusionBackbone`,
the class that loads SD 1.5):

* ``tiny`` (``sara/zoo/tiny``): pixel space — the UNet denoises 32x32 RGB images, no VAE;
* ``tiny_latent`` (``sara/zoo/tiny_latent``): a latent Stable Diffusion pipeline — a small
  ``AutoencoderKL`` (64x64 images <-> 16x16x4 latents, scaled by its ``scaling_factor``), the UNet
  on the latents; the folder loads as it is with ``diffusers.StableDiffusionPipeline.from_pretrained``.

Parts:

* denoiser: diffusers ``UNet2DConditionModel`` (pixel: 32x32x3, cross-attention at 16x16 and 8x8;
  latent: 16x16x4, channels 64/128/128, cross-attention at 8x8 and 4x4);
* text encoder: transformers ``CLIPTextModel`` (small), trained jointly with the UNet during
  pre-training; tokenizer: a real ``CLIPTokenizer`` whose BPE vocabulary makes every word of the
  procedural domain one token (:mod:`sara.backbones.tokenizer`);
* schedulers: ``DDPMScheduler`` (epsilon, 1000 steps, squared-cosine betas) for training,
  ``DPMSolverMultistepScheduler`` (20 steps, CFG 4) for sampling (``conf/backbone/tiny.yaml``).

Shipped weights: ``sara/zoo/<name>`` (diffusers format), reproduced by ``scripts/pretrain_tiny.py``
(latent: ``scripts/pretrain_vae.py`` first, then ``scripts/pretrain_tiny.py --world tiny_latent``;
both in one call: ``scripts/pretrain_world.sh``).
"""
from __future__ import annotations

import copy
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "zoo"
TINY_ROOT = ZOO / "tiny"
TINY_LATENT_ROOT = ZOO / "tiny_latent"

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

#: the latent world: what differs from :data:`TINY_ARCH` (the text encoder and scheduler are shared)
TINY_LATENT_OVERRIDES = {
    "resolution": 64,
    "unet": {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [64, 128, 128],
        "norm_num_groups": 32,
        "attention_head_dim": 4,
    },
    # 64 px -> 16x16x4 (three levels: two down-samplings); 0.95M parameters
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": 64,
        "scaling_factor": 1.0,  # set by scripts/pretrain_vae.py to 1 / std of the latents
    },
    # SD 1.5's convention with "leading" spacing (diffusers' pipeline expects it)
    "scheduler": {"steps_offset": 1},
}

#: named worlds: architecture overrides of :data:`TINY_ARCH`, and where their weights ship
WORLDS = {"tiny": ({}, TINY_ROOT), "tiny_latent": (TINY_LATENT_OVERRIDES, TINY_LATENT_ROOT)}

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


def merge_arch(arch: dict, overrides: dict | None) -> dict:
    """``arch`` with ``overrides`` applied in place: per part, dicts update, anything else replaces."""
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(arch.get(k), dict):
            arch[k].update(v)
        else:
            arch[k] = copy.deepcopy(v)
    return arch


def tiny_config(overrides: dict | None = None, world: str = "tiny") -> dict:
    """The architecture of ``world`` (``tiny`` | ``tiny_latent``) with ``overrides`` applied."""
    if world not in WORLDS:
        raise ValueError(f"unknown tiny world {world!r}; known: {sorted(WORLDS)}")
    return merge_arch(merge_arch(copy.deepcopy(TINY_ARCH), WORLDS[world][0]), overrides)


def build_vae(vae_arch: dict, seed: int = 0):
    """A randomly initialised ``AutoencoderKL`` from the ``vae`` entry of an architecture."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**vae_arch)


def build_tiny(arch: dict | None = None, seed: int = 0, cfg: dict | None = None, world: str = "tiny", vae=None):
    """A randomly initialised tiny backbone (for pre-training from scratch). ``world="tiny_latent"``
    adds a VAE: ``vae`` (a trained ``AutoencoderKL``, kept frozen) or a random one."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .stable_diffusion import StableDiffusionBackbone
    from .tokenizer import build_clip_tokenizer

    arch = tiny_config(arch, world)
    if vae is None and "vae" in arch:
        vae = build_vae(arch["vae"], seed)
    if vae is not None and int(vae.config.latent_channels) != int(arch["unet"]["in_channels"]):
        raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels but the UNet takes "
                         f"{arch['unet']['in_channels']}")
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
    cfg.setdefault("name", world)
    cfg.setdefault("kind", "tiny")
    cfg.setdefault("resolution", arch["resolution"])
    cfg.setdefault("sampling", {"steps": 20, "guidance_scale": 4.0, "sampler": "DPMSolverMultistepScheduler"})
    cfg["vae"] = "vae" if vae is not None else None
    return StableDiffusionBackbone(cfg=cfg, denoiser=unet, vae=vae, text_encoders=[te], tokenizers=[tok],
                                   noise_scheduler=sched, scheduler_config=dict(sched.config))


def load_tiny(cfg: dict):
    """Load a tiny backbone: ``pretrained`` (a diffusers folder) or, when null, the shipped zoo
    folder of ``cfg["world"]`` (``tiny`` | ``tiny_latent``; default ``tiny``). Loading is Stable
    Diffusion's (:meth:`StableDiffusionBackbone.from_pretrained`, as for ``sd15``); ``cfg["vae"]``
    names the VAE subfolder (``null``: pixel space)."""
    from .loading import zoo_source
    from .stable_diffusion import StableDiffusionBackbone

    cfg = dict(cfg)
    world = cfg.get("world") or "tiny"
    if world not in WORLDS:
        raise ValueError(f"backbone.world: unknown tiny world {world!r}; known: {sorted(WORLDS)}")
    root = WORLDS[world][1]
    cfg.setdefault("vae", "vae" if world == "tiny_latent" else None)  # the pixel-space world has none
    script = ("`bash scripts/pretrain_world.sh` (or scripts/pretrain_vae.py, then scripts/pretrain_tiny.py "
              "--world tiny_latent)") if world == "tiny_latent" else "`python scripts/pretrain_tiny.py`"
    parts = ("unet", "text_encoder", "tokenizer", "scheduler", *([cfg["vae"]] if cfg.get("vae") else []))
    src = zoo_source(dict(cfg, world=world), root, parts, script)
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
