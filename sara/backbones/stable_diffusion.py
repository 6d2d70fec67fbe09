"""Stable Diffusion 1.x / 2.x (and the tiny pixel-space model, which has the same parts minus the VAE):
``UNet2DConditionModel`` + ``AutoencoderKL`` + ``CLIPTextModel`` / ``CLIPTokenizer``."""
from __future__ import annotations

import torch

from sara.precision import parse_dtype

from .base import Backbone, module_dtype
from .loading import load_component, resolve_source


def tokenize(tokenizer, prompts, device, max_length=None):
    ids = tokenizer(list(prompts), padding="max_length", max_length=max_length or tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return ids.to(device)


class StableDiffusionBackbone(Backbone):
    kind = "stable_diffusion"
    denoiser_subfolder = "unet"
    pipeline_class = "StableDiffusionPipeline"

    def encode_prompt(self, prompts):
        te = self.text_encoder
        ids = tokenize(self.tokenizer, prompts, te.device)
        hidden = te(ids, return_dict=True).last_hidden_state  # SD: the final layer (after final LN)
        return {"encoder_hidden_states": hidden}

    def call_denoiser(self, denoiser, x, t, cond):
        return denoiser(x, t, encoder_hidden_states=cond["encoder_hidden_states"].to(x.dtype), return_dict=False)[0]

    @classmethod
    def load_parts(cls, cfg, source):
        """unet, vae (or None), [text_encoder], [tokenizer], scheduler config."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        wdtype = parse_dtype(cfg.get("dtype"))  # weights of the frozen parts (vae, text encoders)
        ddtype = parse_dtype(cfg.get("denoiser_dtype"))  # None: float32 master weights
        unet = load_component(UNet2DConditionModel, cfg, source, cfg.get("denoiser_subfolder", "unet"), dtype=ddtype)
        vae = None
        if cfg.get("vae", "vae"):
            vae = load_component(AutoencoderKL, cfg, source, cfg.get("vae", "vae"), dtype=wdtype)
        te = load_component(CLIPTextModel, cfg, source, "text_encoder", is_transformers=True, dtype=wdtype)
        tok = load_component(AutoTokenizer, cfg, source, "tokenizer", is_transformers=True)
        sched_cfg = load_component(_ConfigOnly(DDPMScheduler), cfg, source, "scheduler")
        return unet, vae, [te], [tok], sched_cfg

    @classmethod
    def from_pretrained(cls, cfg):
        from diffusers import DDPMScheduler

        source = resolve_source(cfg)
        unet, vae, tes, toks, sched_cfg = cls.load_parts(cfg, source)
        pt = cfg.get("prediction_type") or sched_cfg.get("prediction_type", "epsilon")
        noise_scheduler = DDPMScheduler.from_config(sched_cfg, prediction_type=pt)
        return cls(cfg=cfg, denoiser=unet, vae=vae, text_encoders=tes, tokenizers=toks,
                   noise_scheduler=noise_scheduler, scheduler_config=dict(sched_cfg), source=source)


class _ConfigOnly:
    """Adapter so ``load_component`` can fetch a scheduler config dict (``load_config``)."""

    def __init__(self, sched_cls):
        self.sched_cls = sched_cls

    def from_pretrained(self, source, local_files_only=False, subfolder=None, **kw):
        kw.pop("variant", None)
        kw.pop("torch_dtype", None)
        return dict(self.sched_cls.load_config(source, subfolder=subfolder, local_files_only=local_files_only, **kw))
