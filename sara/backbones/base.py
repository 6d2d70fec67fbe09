"""The ``Backbone`` class (contract: docs/ARCHITECTURE.md, "Backbones"); ``load_backbone`` in
:mod:`sara.backbones.factory` builds one from a config.

One class serves every backbone; what differs between Stable Diffusion 1.5/2, SDXL, SD3 and the
tiny pixel-space model is how prompts are encoded and how the denoiser is called, which the
subclasses in ``stable_diffusion.py``, ``sdxl.py`` and ``sd3.py`` supply.

The diffusion loss (:meth:`Backbone.training_loss`) is the one of diffusers' text-to-image
fine-tuning scripts:

* ``epsilon`` / ``v_prediction`` (``train_text_to_image.py``): ``x0`` = VAE latents x scaling factor
  (or pixels for the tiny model), ``t ~ U{0..T-1}``, ``x_t = DDPM.add_noise(x0, eps, t)``, target
  ``eps`` or ``DDPM.get_velocity(x0, eps, t)``, MSE (optionally min-SNR weighted);
* ``flow_matching`` (``train_dreambooth_sd3.py``): ``sigma`` from the scheduler's (shifted) sigma
  table at ``u ~ U(0,1)`` or ``sigmoid(N(m, s))`` (logit-normal), ``x_s = (1-sigma) x0 + sigma eps``,
  target ``eps - x0``, MSE.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sara.precision import parse_dtype


def to_plain_dict(cfg) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, dict):
        return dict(cfg)
    try:  # omegaconf DictConfig
        from omegaconf import OmegaConf
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return dict(cfg)


def module_dtype(module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def module_device(module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _map(obj, fn):
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _cat(a, b):
    if torch.is_tensor(a):
        return torch.cat([a, b], 0)
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) for k in a}
    return a


def _randn(shape, generator, device, dtype=torch.float32):
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def _rand(shape, generator, device):
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def to_pil(x: torch.Tensor):
    """[-1, 1] images [B,3,H,W] -> list of PIL images."""
    from PIL import Image

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class Backbone:
    """A text-to-image diffusion model: denoiser + (optional) VAE + text encoder(s) + schedulers.

    Attributes (contract): ``name``, ``resolution``, ``prediction_type`` (``epsilon`` |
    ``v_prediction`` | ``flow_matching``), ``denoiser`` (the module methods fine-tune), ``vae``
    (``None`` = pixel space), ``text_encoders`` / ``tokenizers`` (lists; ``text_encoder`` /
    ``tokenizer`` are the first), ``noise_scheduler`` (training: DDPM, or flow-matching Euler for
    SD3), ``scheduler_config`` (the model's own scheduler config; :meth:`make_sampler` builds the
    sampling scheduler from it: ``sampling.sampler`` or the model's own class).
    Knobs: ``train_text_encoder`` (pre-training only), ``prompt_dropout`` (share of prompts
    replaced by ``""`` in :meth:`training_loss`, for classifier-free guidance), ``snr_gamma``.
    """

    kind = "base"
    denoiser_subfolder = "unet"

    def __init__(self, *, cfg: dict, denoiser, vae, text_encoders: Sequence, tokenizers: Sequence,
                 noise_scheduler, scheduler_config: dict, source: str | None = None):
        self.cfg = dict(cfg)
        self.name = cfg.get("name", self.kind)
        self.source = source
        self.denoiser = denoiser
        self.vae = vae
        self.text_encoders = list(text_encoders)
        self.tokenizers = list(tokenizers)
        self.noise_scheduler = noise_scheduler
        # ``_use_default_values`` would make another scheduler class (the sampler) substitute its own
        # defaults (e.g. timestep_spacing) for values this config holds: keep the values explicit
        self.scheduler_config = {k: v for k, v in dict(scheduler_config).items() if k != "_use_default_values"}
        self.prediction_type = cfg.get("prediction_type") or getattr(noise_scheduler.config, "prediction_type", "epsilon")
        self.resolution = int(cfg.get("resolution") or self._default_resolution())
        sampling = cfg.get("sampling") or {}
        self.default_steps = int(sampling.get("steps", 50))
        self.default_guidance = float(sampling.get("guidance_scale", 7.5))
        self.sampler_name = sampling.get("sampler") or cfg.get("sampler")
        self.negative_prompt = sampling.get("negative_prompt", "")
        self.train_text_encoder = bool(cfg.get("train_text_encoder", False))
        self.prompt_dropout = float(cfg.get("prompt_dropout", 0.0) or 0.0)
        self.snr_gamma = cfg.get("snr_gamma")
        for te in self.text_encoders:
            te.requires_grad_(self.train_text_encoder)
        if self.vae is not None:
            self.vae.requires_grad_(False)

    # ---------------------------------------------------------------- convenience ----------
    @property
    def text_encoder(self):
        return self.text_encoders[0] if self.text_encoders else None

    @property
    def tokenizer(self):
        return self.tokenizers[0] if self.tokenizers else None

    @property
    def device(self) -> torch.device:
        return module_device(self.denoiser)

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _default_resolution(self) -> int:
        return int(self.denoiser.config.sample_size) * (2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae else 1)

    def modules(self) -> dict:
        out = {self.denoiser_subfolder: self.denoiser}
        if self.vae is not None:
            out["vae"] = self.vae
        for i, te in enumerate(self.text_encoders):
            out["text_encoder" + ("" if i == 0 else f"_{i + 1}")] = te
        return out

    def num_params(self) -> dict:
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.modules().items()}

    def to(self, device=None, dtype=None) -> "Backbone":
        """Move every module; ``dtype`` (if given) casts every module."""
        dtype = parse_dtype(dtype)
        for m in self.modules().values():
            if dtype is None:
                m.to(device)
            else:
                m.to(device=device, dtype=dtype)
        return self

    def save_pretrained(self, path) -> None:
        """Write a diffusers-format folder (``from_pretrained`` of this class reads it back)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        index = {"_class_name": self.pipeline_class, "_diffusers_version": _version("diffusers")}
        for sub, m in self.modules().items():
            m.save_pretrained(path / sub, safe_serialization=True)
            index[sub] = [m.__module__.split(".")[0], type(m).__name__]
        for i, tok in enumerate(self.tokenizers):
            sub = "tokenizer" + ("" if i == 0 else f"_{i + 1}")
            tok.save_pretrained(path / sub)
            index[sub] = ["transformers", type(tok).__name__]
        sched = self.folder_scheduler()
        sched.save_pretrained(path / "scheduler")
        index["scheduler"] = ["diffusers", type(sched).__name__]
        if self.vae is None:
            index["vae"] = [None, None]
        if self.pipeline_class == "StableDiffusionPipeline":  # the parts SD 1.5's folder has, empty
            index.update(safety_checker=[None, None], feature_extractor=[None, None], image_encoder=[None, None],
                         requires_safety_checker=False)
        (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    pipeline_class = "StableDiffusionPipeline"

    @staticmethod
    def update_model_index(path, **entries) -> None:
        """Add ``entries`` to a saved folder's ``model_index.json`` (the parts a subclass adds)."""
        index_file = Path(path) / "model_index.json"
        index = json.loads(index_file.read_text())
        index.update(entries)
        index_file.write_text(json.dumps(index, indent=2) + "\n")

    def folder_scheduler(self):
        """The scheduler a saved folder holds: the model's own (``scheduler_config``'s class, e.g.
        SD 2's DDIM, SDXL's Euler), else the training one."""
        import diffusers

        name = self.scheduler_config.get("_class_name")
        if not name or name == type(self.noise_scheduler).__name__:
            return self.noise_scheduler
        extra = {} if self.prediction_type == "flow_matching" else {"prediction_type": self.prediction_type}
        return getattr(diffusers, name).from_config(self.scheduler_config, **extra)

    # ------------------------------------------------------------ subclass hooks -----------
    def encode_prompt(self, prompts: Sequence[str]) -> dict:
        """Conditioning kwargs for :meth:`call_denoiser` (tensors on the backbone's device)."""
        raise NotImplementedError

    def call_denoiser(self, denoiser, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        raise NotImplementedError

    def unconditional(self, n: int, cond_like: dict | None = None) -> dict:
        return self.encode_prompt([self.negative_prompt] * n)

    # ------------------------------------------------------------ pixels <-> model space ---
    def encode_pixels(self, pixel_values: torch.Tensor, generator=None) -> torch.Tensor:
        if self.vae is None:
            return pixel_values
        vae_dtype = module_dtype(self.vae)
        dist = self.vae.encode(pixel_values.to(dtype=vae_dtype)).latent_dist
        z = dist.mean + dist.std * _randn(dist.mean.shape, generator, dist.mean.device, dist.mean.dtype)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((z - shift) * self.vae.config.scaling_factor).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        return self.vae.decode(z.to(module_dtype(self.vae)), return_dict=False)[0]

    # ------------------------------------------------------------ training ------------------
    def _encode_for_training(self, prompts):
        if self.train_text_encoder:
            return self.encode_prompt(prompts)
        with torch.no_grad():
            return self.encode_prompt(prompts)

    def training_loss(self, denoiser=None, batch: dict | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion loss of ``denoiser`` (default: ``self.denoiser``) on ``batch``
        (``{"pixel_values": [B,3,H,W] in [-1,1], "prompts": list[str]}``)."""
        denoiser = self.denoiser if denoiser is None else denoiser
        device = self.device
        pix = batch["pixel_values"].to(device)
        prompts = list(batch.get("prompts", batch.get("prompt")))
        bsz = pix.shape[0]
        if self.prompt_dropout > 0:
            drop = _rand((bsz,), generator, "cpu") < self.prompt_dropout
            prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        with torch.no_grad():
            x0 = self.encode_pixels(pix, generator)
        cond = self._encode_for_training(prompts)
        noise = _randn(x0.shape, generator, device)
        dt = module_dtype(denoiser)
        if self.prediction_type == "flow_matching":
            sched = self.noise_scheduler
            n_train = sched.config.num_train_timesteps
            scheme = self.cfg.get("weighting_scheme", "logit_normal")
            if scheme == "logit_normal":
                gdev = generator.device if generator is not None else device
                u = torch.normal(float(self.cfg.get("logit_mean", 0.0)), float(self.cfg.get("logit_std", 1.0)),
                                 size=(bsz,), generator=generator, device=gdev).sigmoid().to(device)
            else:
                u = _rand((bsz,), generator, device)
            idx = (u * n_train).long().clamp_(0, n_train - 1).cpu()
            timesteps = sched.timesteps[idx].to(device)
            sigmas = sched.sigmas[idx].to(device=device, dtype=x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
            noisy = (1.0 - sigmas) * x0 + sigmas * noise
            target = noise - x0
            pred = self.call_denoiser(denoiser, noisy.to(dt), timesteps, cond)
            return F.mse_loss(pred.float(), target.float())
        n_train = self.noise_scheduler.config.num_train_timesteps
        gdev = generator.device if generator is not None else device
        timesteps = torch.randint(0, n_train, (bsz,), generator=generator, device=gdev).to(device).long()
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(x0, noise, timesteps)
        elif self.prediction_type == "sample":
            target = x0
        else:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")
        pred = self.call_denoiser(denoiser, noisy.to(dt), timesteps, cond)
        if not self.snr_gamma:
            return F.mse_loss(pred.float(), target.float())
        from diffusers.training_utils import compute_snr  # min-SNR weighting, as in diffusers' script
        snr = compute_snr(self.noise_scheduler, timesteps)
        w = torch.stack([snr, float(self.snr_gamma) * torch.ones_like(snr)], 1).min(1)[0]
        w = w / snr if self.prediction_type == "epsilon" else w / (snr + 1)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
        return (loss * w).mean()

    # ------------------------------------------------------------ sampling ------------------
    def make_sampler(self):
        """A fresh sampling scheduler: ``sampling.sampler`` (a diffusers scheduler class name) or the
        model's own scheduler class, configured from the model's scheduler config."""
        import diffusers

        cls_name = self.sampler_name or self.scheduler_config.get("_class_name") or "DDIMScheduler"
        cls = getattr(diffusers, cls_name)
        extra = {}
        if self.prediction_type != "flow_matching":
            extra["prediction_type"] = self.prediction_type
        return cls.from_config(self.scheduler_config, **extra)

    def latent_shape(self, n: int) -> tuple:
        s = self.resolution // self.vae_scale_factor
        return (n, self.latent_channels, s, s)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], num_inference_steps: int | None = None, guidance_scale: float | None = None,
               seed: int = 0, denoiser=None, batch_size: int = 16, negative_prompt: str | None = None,
               output_type: str = "pil", progress: bool = False, autocast_dtype=None,
               on_step=None) -> list:
        """Generate one image per prompt with classifier-free guidance (unconditional = empty prompt).

        The initial noise of prompt ``i`` depends only on ``(seed, i)``, never on ``batch_size``.
        Returns PIL images (``output_type="pil"``) or a [N,3,H,W] tensor in [-1, 1] (``"pt"``).
        ``on_step()`` is called after every denoising step."""
        denoiser = self.denoiser if denoiser is None else denoiser
        steps = int(num_inference_steps or self.default_steps)
        g = self.default_guidance if guidance_scale is None else float(guidance_scale)
        prompts = list(prompts)
        device = self.device
        dt = module_dtype(denoiser)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        all_noise = torch.randn(self.latent_shape(len(prompts)), generator=gen)
        neg = self.negative_prompt if negative_prompt is None else negative_prompt
        was_training = denoiser.training
        denoiser.eval()
        outs = []
        it = range(0, len(prompts), batch_size)
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc=f"sample {self.name}", total=(len(prompts) + batch_size - 1) // batch_size)
        ac = parse_dtype(autocast_dtype)
        try:
            for b0 in it:
                chunk = prompts[b0:b0 + batch_size]
                n = len(chunk)
                with torch.autocast(device.type, dtype=ac, enabled=ac is not None):
                    cond = self.encode_prompt(chunk)
                    if g != 1.0:
                        uncond = self._negative(n, neg, cond)
                        cond = _cat(uncond, cond)
                cond = _map(cond, lambda t: t.to(dt) if t.is_floating_point() else t)
                sched = self.make_sampler()
                self._set_timesteps(sched, steps, device)
                x = all_noise[b0:b0 + n].to(device) * getattr(sched, "init_noise_sigma", 1.0)
                step_kw = {}
                if "generator" in inspect.signature(sched.step).parameters:
                    step_kw["generator"] = torch.Generator("cpu").manual_seed(int(seed) * 100003 + b0)
                for t in sched.timesteps:
                    xin = torch.cat([x, x]) if g != 1.0 else x
                    if hasattr(sched, "scale_model_input"):
                        xin = sched.scale_model_input(xin, t)
                    tt = t.expand(xin.shape[0]).to(device) if torch.is_tensor(t) else torch.full((xin.shape[0],), t, device=device)
                    with torch.autocast(device.type, dtype=ac, enabled=ac is not None):
                        out = self.call_denoiser(denoiser, xin.to(dt), tt, cond).float()
                    if g != 1.0:
                        ou, oc = out.chunk(2)
                        out = ou + g * (oc - ou)
                    x = sched.step(out, t, x, **step_kw, return_dict=False)[0]
                    if on_step is not None:  # progress per denoising step (sara.sample)
                        on_step()
                with torch.autocast(device.type, dtype=ac, enabled=ac is not None):
                    img = self.decode(x).float().clamp(-1, 1)
                outs.append(img.cpu())
        finally:
            denoiser.train(was_training)
        imgs = torch.cat(outs) if outs else torch.empty(0, 3, self.resolution, self.resolution)
        return imgs if output_type == "pt" else to_pil(imgs)

    def _negative(self, n, neg, cond):
        return self.encode_prompt([neg] * n)

    def _set_timesteps(self, sched, steps, device):
        sched.set_timesteps(steps, device=device)


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:  # pragma: no cover
        return "unknown"
