"""SDXL: ``UNet2DConditionModel`` (text_time additional embeddings) + ``AutoencoderKL`` +
``CLIPTextModel`` and ``CLIPTextModelWithProjection`` (penultimate hidden states concatenated,
pooled output of the second encoder), ``add_time_ids = (H, W, 0, 0, H, W)``."""
from __future__ import annotations

import torch

from sara.precision import parse_dtype

from .base import Backbone
from .loading import load_component, resolve_source
from .stable_diffusion import _ConfigOnly, tokenize


class SDXLBackbone(Backbone):
    kind = "sdxl"
    denoiser_subfolder = "unet"
    pipeline_class = "StableDiffusionXLPipeline"

    def encode_prompt(self, prompts):
        embeds, pooled = [], None
        for tok, te in zip(self.tokenizers, self.text_encoders):
            ids = tokenize(tok, prompts, te.device)
            out = te(ids, output_hidden_states=True, return_dict=True)
            embeds.append(out.hidden_states[-2])
            if getattr(out, "text_embeds", None) is not None:
                pooled = out.text_embeds
        e = torch.cat(embeds, dim=-1)
        r = self.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=e.device, dtype=e.dtype).repeat(e.shape[0], 1)
        return {"encoder_hidden_states": e, "text_embeds": pooled, "time_ids": time_ids}

    def _negative(self, n, neg, cond):
        # SDXL's pipeline zeroes the unconditional embeddings for an empty negative prompt
        if not neg and self.cfg.get("force_zeros_for_empty_prompt", True):
            return {k: (torch.zeros_like(v) if k != "time_ids" else v) for k, v in cond.items()}
        return self.encode_prompt([neg] * n)

    def _encode_for_training(self, prompts):
        # pre-training drops prompts as SDXL did: an empty prompt is zero conditioning, which is
        # what sampling feeds for an empty negative prompt (force_zeros_for_empty_prompt)
        cond = super()._encode_for_training(prompts)
        if not self.cfg.get("force_zeros_for_empty_prompt", True) or all(prompts):
            return cond
        keep = torch.tensor([bool(p) for p in prompts], device=cond["text_embeds"].device)
        for k in ("encoder_hidden_states", "text_embeds"):
            cond[k] = cond[k] * keep.view(-1, *([1] * (cond[k].ndim - 1))).to(cond[k].dtype)
        return cond

    def save_pretrained(self, path):
        super().save_pretrained(path)
        self.update_model_index(path, image_encoder=[None, None], feature_extractor=[None, None],
                                force_zeros_for_empty_prompt=bool(self.cfg.get("force_zeros_for_empty_prompt", True)))

    def call_denoiser(self, denoiser, x, t, cond):
        added = {"text_embeds": cond["text_embeds"].to(x.dtype), "time_ids": cond["time_ids"].to(x.dtype)}
        return denoiser(x, t, encoder_hidden_states=cond["encoder_hidden_states"].to(x.dtype),
                        added_cond_kwargs=added, return_dict=False)[0]

    @classmethod
    def from_pretrained(cls, cfg):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        source = resolve_source(cfg)
        wdtype = parse_dtype(cfg.get("dtype"))
        unet = load_component(UNet2DConditionModel, cfg, source, "unet", dtype=parse_dtype(cfg.get("denoiser_dtype")))
        vae = load_component(AutoencoderKL, cfg, source, "vae", dtype=None)
        # SDXL's VAE overflows in fp16 (config force_upcast): it stays float32 then
        if wdtype not in (None, torch.float32) and not (getattr(vae.config, "force_upcast", False)
                                                        and wdtype == torch.float16):
            vae.to(dtype=wdtype)
        te1 = load_component(CLIPTextModel, cfg, source, "text_encoder", is_transformers=True, dtype=wdtype)
        te2 = load_component(CLIPTextModelWithProjection, cfg, source, "text_encoder_2", is_transformers=True, dtype=wdtype)
        tok1 = load_component(AutoTokenizer, cfg, source, "tokenizer", is_transformers=True)
        tok2 = load_component(AutoTokenizer, cfg, source, "tokenizer_2", is_transformers=True)
        sched_cfg = load_component(_ConfigOnly(DDPMScheduler), cfg, source, "scheduler")
        pt = cfg.get("prediction_type") or sched_cfg.get("prediction_type", "epsilon")
        return cls(cfg=cfg, denoiser=unet, vae=vae, text_encoders=[te1, te2], tokenizers=[tok1, tok2],
                   noise_scheduler=DDPMScheduler.from_config(sched_cfg, prediction_type=pt),
                   scheduler_config=sched_cfg, source=source)
