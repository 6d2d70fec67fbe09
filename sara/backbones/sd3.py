"""Stable Diffusion 3: ``SD3Transformer2DModel`` (rectified flow) + ``AutoencoderKL`` (16 channels,
shift/scale) + two ``CLIPTextModelWithProjection`` + ``T5EncoderModel`` (droppable:
``backbone.drop_t5=true`` feeds zeros in its place, as the diffusers pipeline does without it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sara.precision import parse_dtype

from .base import Backbone
from .loading import load_component, resolve_source
from .stable_diffusion import _ConfigOnly, tokenize


class SD3Backbone(Backbone):
    kind = "sd3"
    denoiser_subfolder = "transformer"
    pipeline_class = "StableDiffusion3Pipeline"

    def __init__(self, *args, t5=None, t5_tokenizer=None, **kw):
        super().__init__(*args, **kw)
        self.t5, self.t5_tokenizer = t5, t5_tokenizer
        if t5 is not None:
            t5.requires_grad_(self.train_text_encoder)
        self.prediction_type = "flow_matching"

    def modules(self):
        out = super().modules()
        if self.t5 is not None:
            out["text_encoder_3"] = self.t5
        return out

    def save_pretrained(self, path):
        from pathlib import Path

        super().save_pretrained(path)
        if self.t5_tokenizer is not None:
            self.t5_tokenizer.save_pretrained(Path(path) / "tokenizer_3")
            extra = {"tokenizer_3": ["transformers", type(self.t5_tokenizer).__name__]}
        else:  # dropped T5: the pipeline then feeds zeros in its place, as this class does
            extra = {"text_encoder_3": [None, None], "tokenizer_3": [None, None]}
        self.update_model_index(path, image_encoder=[None, None], feature_extractor=[None, None], **extra)

    def encode_prompt(self, prompts):
        clip_embeds, pooled = [], []
        for tok, te in zip(self.tokenizers, self.text_encoders):
            ids = tokenize(tok, prompts, te.device)
            out = te(ids, output_hidden_states=True, return_dict=True)
            pooled.append(out.text_embeds)
            clip_embeds.append(out.hidden_states[-2])
        clip = torch.cat(clip_embeds, dim=-1)
        joint = int(self.denoiser.config.joint_attention_dim)
        n = clip.shape[0]
        if self.t5 is not None:
            ids = tokenize(self.t5_tokenizer, prompts, self.t5.device, int(self.cfg.get("max_sequence_length", 256)))
            t5 = self.t5(ids, return_dict=True).last_hidden_state.to(clip.dtype)
        else:
            t5 = torch.zeros(n, self.tokenizers[0].model_max_length, joint, device=clip.device, dtype=clip.dtype)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"encoder_hidden_states": torch.cat([clip, t5], dim=-2), "pooled_projections": torch.cat(pooled, -1)}

    def call_denoiser(self, denoiser, x, t, cond):
        return denoiser(hidden_states=x, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"].to(x.dtype),
                        pooled_projections=cond["pooled_projections"].to(x.dtype), return_dict=False)[0]

    def _set_timesteps(self, sched, steps, device):
        kw = {}
        if getattr(sched.config, "use_dynamic_shifting", False):
            s = self.resolution // self.vae_scale_factor // self.denoiser.config.patch_size
            c = sched.config
            m = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
            kw["mu"] = s * s * m + c.base_shift - m * c.base_image_seq_len
        sched.set_timesteps(steps, device=device, **kw)

    @classmethod
    def from_pretrained(cls, cfg):
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        source = resolve_source(cfg)
        wdtype = parse_dtype(cfg.get("dtype"))
        tr = load_component(SD3Transformer2DModel, cfg, source, "transformer", dtype=parse_dtype(cfg.get("denoiser_dtype")))
        vae = load_component(AutoencoderKL, cfg, source, "vae", dtype=wdtype)
        te1 = load_component(CLIPTextModelWithProjection, cfg, source, "text_encoder", is_transformers=True, dtype=wdtype)
        te2 = load_component(CLIPTextModelWithProjection, cfg, source, "text_encoder_2", is_transformers=True, dtype=wdtype)
        tok1 = load_component(AutoTokenizer, cfg, source, "tokenizer", is_transformers=True)
        tok2 = load_component(AutoTokenizer, cfg, source, "tokenizer_2", is_transformers=True)
        t5 = t5_tok = None
        if not cfg.get("drop_t5", False):
            t5 = load_component(T5EncoderModel, cfg, source, "text_encoder_3", is_transformers=True, dtype=wdtype)
            t5_tok = load_component(AutoTokenizer, cfg, source, "tokenizer_3", is_transformers=True)
        sched_cfg = load_component(_ConfigOnly(FlowMatchEulerDiscreteScheduler), cfg, source, "scheduler")
        cfg = dict(cfg, prediction_type="flow_matching")
        return cls(cfg=cfg, denoiser=tr, vae=vae, text_encoders=[te1, te2], tokenizers=[tok1, tok2],
                   noise_scheduler=FlowMatchEulerDiscreteScheduler.from_config(sched_cfg),
                   scheduler_config=sched_cfg, source=source, t5=t5, t5_tokenizer=t5_tok)
