"""Text-to-video backbones in AnimateDiff's way: an image backbone's UNet + diffusers' motion modules.

``UNetMotionModel.from_unet2d(image_unet, MotionAdapter)`` inserts a temporal transformer
(``AnimateDiffTransformer3D``, attention along the frame axis) after every resnet/attention pair of
the image UNet; every spatial weight is the image model's. :class:`MotionBackbone` wraps any image
:class:`~sara.backbones.base.Backbone` (the tiny embedded one, SD 1.5, ...): prompts are encoded
and frames are encoded/decoded by the image backbone, the denoiser works on ``[B, C, F, h, w]``.

* **Identity at start.** A fresh ``MotionAdapter`` is not an identity (its output projections are
  randomly initialised). :func:`zero_motion_outputs` zeroes every motion module's ``proj_out``;
  since each module adds its output to its input, the video model then computes exactly the image
  model on every frame (``tests/test_video.py`` checks it).
* **Text conditioning.** In the installed diffusers (0.3x/0.4x) ``UNetMotionModel`` repeats the
  time embedding per frame but not ``encoder_hidden_states``; the pipeline repeats them
  (``AnimateDiffPipeline``: ``prompt_embeds.repeat_interleave(num_frames, dim=0)``), and so does
  :meth:`MotionBackbone.call_denoiser`.
* **Clips as images.** :meth:`MotionBackbone.sample` returns one horizontal frame strip per prompt
  (``[3, H, F*W]``), so the image sampler/evaluation folders hold clips unchanged;
  :func:`sara.data.camera_motion.strip_to_clip` splits a strip.

Config (``conf/backbone/tiny_motion.yaml``, ``sd15_motion.yaml``): ``image`` (an image backbone
config), ``num_frames``, ``motion_adapter`` (a local ``MotionAdapter`` folder, or null for a fresh
adapter built from ``adapter`` and zero-initialised), ``adapter`` (MotionAdapter arguments).
Motion-module parameters are named ``*motion_modules*`` (:data:`MOTION_PARAMS`, the scope the
methods are restricted to in ``conf/experiment/video.yaml``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from .base import Backbone, to_plain_dict
from .loading import MissingWeightsError

#: Regex (full match on parameter names) of the motion modules' parameters.
MOTION_PARAMS = r".*motion_modules\..*"
MOTION_ROOT = Path(__file__).resolve().parents[1] / "zoo" / "motion"

#: The tiny adapter: one motion module per resnet of the tiny UNet (block widths 32/64/96).
TINY_ADAPTER = {
    "block_out_channels": [32, 64, 96],
    "motion_layers_per_block": 1,
    "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 4,
    "motion_norm_num_groups": 16,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}

#: What to download for the real scale (shown when the adapter folder is missing).
SD15_ADAPTER_ID = "guoyww/animatediff-motion-adapter-v1-5-2"


def is_motion_param(name: str) -> bool:
    return ".motion_modules." in f".{name}"


def motion_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, AnimateDiffTransformer3D)`` of every motion module of an adapter or motion UNet."""
    out = []
    for name, mod in model.named_modules():
        parent, _, _ = name.rpartition(".")
        if parent.endswith("motion_modules") and hasattr(mod, "proj_out"):
            out.append((name, mod))
    return out


@torch.no_grad()
def zero_motion_outputs(model: torch.nn.Module) -> int:
    """Zero every motion module's output projection (the module becomes an identity); returns
    how many modules were zeroed."""
    mods = motion_modules(model)
    for _, m in mods:
        m.proj_out.weight.zero_()
        if m.proj_out.bias is not None:
            m.proj_out.bias.zero_()
    return len(mods)


def build_adapter(unet, adapter_cfg: dict | None = None, seed: int = 0, zero_init: bool = True):
    """A fresh ``MotionAdapter`` matching ``unet`` (block widths and layers taken from it)."""
    from diffusers import MotionAdapter

    cfg = dict(TINY_ADAPTER)
    cfg["block_out_channels"] = list(unet.config.block_out_channels)
    lpb = unet.config.layers_per_block
    cfg["motion_layers_per_block"] = lpb if isinstance(lpb, int) else list(lpb)
    cfg.update(adapter_cfg or {})
    torch.manual_seed(seed)
    adapter = MotionAdapter(**cfg)
    if zero_init:
        zero_motion_outputs(adapter)
    return adapter


def resolve_adapter_path(src: str) -> Path:
    """A local adapter folder: as given, else relative to the repository (``sara/zoo/motion``)."""
    p = Path(src).expanduser()
    if not p.is_absolute() and not p.exists():
        alt = Path(__file__).resolve().parents[2] / p
        if alt.exists():
            return alt
    return p.resolve()


def load_adapter(src: str, cfg: dict):
    """``MotionAdapter.from_pretrained`` of a local folder, or one clear line saying what to get."""
    from diffusers import MotionAdapter

    p = resolve_adapter_path(src)
    if not (p / "config.json").is_file():
        name = cfg.get("name", "motion")
        model_id = cfg.get("adapter_model_id")
        if model_id:
            hint = (f"download {model_id} (on a machine with internet: huggingface-cli download {model_id} "
                    f"--local-dir {p}) and copy the folder there")
        else:
            hint = ("reproduce it with `python scripts/pretrain_motion.py --out " + str(p) + "`, or set "
                    "backbone.motion_adapter=null for a fresh (identity) adapter")
        raise MissingWeightsError(f"backbone '{name}': no motion adapter at {p} (a diffusers MotionAdapter folder: "
                                  f"config.json + diffusion_pytorch_model.safetensors): {hint}; or point "
                                  "backbone.motion_adapter=/path/to/adapter at a copy")
    return MotionAdapter.from_pretrained(str(p), local_files_only=True)


class MotionBackbone(Backbone):
    """An image backbone turned into a text-to-video model (module docstring)."""

    kind = "motion"
    denoiser_subfolder = "unet"
    pipeline_class = "AnimateDiffPipeline"

    def __init__(self, image: Backbone, adapter, cfg: dict, num_frames: int = 8):
        from diffusers import UNetMotionModel

        self.image = image
        self.adapter_config = dict(adapter.config)
        self.num_frames = int(num_frames)
        if self.num_frames < 2:
            raise ValueError(f"backbone.num_frames must be >= 2, got {num_frames}")
        denoiser = UNetMotionModel.from_unet2d(image.denoiser, adapter)
        image.denoiser = None  # its weights live on in the motion UNet
        merged = {**image.cfg, **{k: v for k, v in cfg.items() if k != "image"}}
        merged["resolution"] = merged.get("resolution") or image.resolution
        super().__init__(cfg=merged, denoiser=denoiser, vae=image.vae, text_encoders=image.text_encoders,
                         tokenizers=image.tokenizers, noise_scheduler=image.noise_scheduler,
                         scheduler_config=image.scheduler_config, source=image.source)

    # --- conditioning and model space: the image backbone's, per frame ------------------------
    def encode_prompt(self, prompts: Sequence[str]) -> dict:
        return self.image.encode_prompt(prompts)

    def unconditional(self, n: int, cond_like: dict | None = None) -> dict:
        return self.image.unconditional(n, cond_like)

    def _negative(self, n, neg, cond):
        return self.image._negative(n, neg, cond)

    def encode_pixels(self, pixel_values: torch.Tensor, generator=None) -> torch.Tensor:
        """``[B, F, 3, H, W]`` clips -> ``[B, C, F, h, w]`` model-space samples."""
        if pixel_values.ndim != 5:
            raise ValueError(f"a video backbone trains on clips [B, F, 3, H, W], got shape {tuple(pixel_values.shape)}")
        b, f = pixel_values.shape[:2]
        z = self.image.encode_pixels(pixel_values.flatten(0, 1), generator)
        return z.unflatten(0, (b, f)).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, h, w]`` -> frame strips ``[B, 3, H, F*W]``."""
        b, _, f = latents.shape[:3]
        x = self.image.decode(latents.transpose(1, 2).flatten(0, 1))
        x = x.unflatten(0, (b, f))  # [B, F, 3, H, W]
        return torch.cat(x.unbind(1), dim=-1)

    def latent_shape(self, n: int) -> tuple:
        s = self.resolution // self.vae_scale_factor
        return (n, self.latent_channels, self.num_frames, s, s)

    def call_denoiser(self, denoiser, x, t, cond):
        ehs = cond["encoder_hidden_states"].to(x.dtype)
        f = x.shape[2]
        if ehs.shape[0] == x.shape[0]:  # one text per clip -> one per frame (as AnimateDiffPipeline)
            ehs = ehs.repeat_interleave(f, dim=0)
        return denoiser(x, t, encoder_hidden_states=ehs, return_dict=False)[0]

    def _default_resolution(self) -> int:
        return self.image.resolution

    def motion_params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.denoiser.named_parameters() if is_motion_param(n)]

    def save_adapter(self, path, dtype=torch.float16, denoiser=None) -> Path:
        """Write the motion modules as a diffusers ``MotionAdapter`` folder (``dtype``: fp16 keeps
        the tiny prior at a few MB); ``backbone.motion_adapter=<path>`` loads it back."""
        from diffusers import MotionAdapter

        den = self.denoiser if denoiser is None else denoiser
        adapter = MotionAdapter.from_config(self.adapter_config)
        state = {n: p.detach().cpu() for n, p in den.state_dict().items() if is_motion_param(n)}
        adapter.load_state_dict(state)
        adapter.to(dtype).save_pretrained(str(path), safe_serialization=True)
        return Path(path)


def load_motion(cfg, load_backbone) -> MotionBackbone:
    """``kind: motion``: the image backbone ``cfg.image`` (built by ``load_backbone``, the factory,
    so this module needs no import of it) + the adapter ``cfg.motion_adapter``."""
    cfg = to_plain_dict(cfg)
    image_cfg = cfg.get("image")
    if not image_cfg:
        raise ValueError("backbone kind 'motion' needs backbone.image (an image backbone config)")
    src = cfg.get("motion_adapter")
    adapter = load_adapter(str(src), cfg) if src else None  # before the (large) image model
    image = load_backbone(copy.deepcopy(image_cfg))
    if adapter is None:
        adapter = build_adapter(image.denoiser, cfg.get("adapter"), seed=int(cfg.get("adapter_seed", 0)))
    return MotionBackbone(image, adapter, cfg, num_frames=int(cfg.get("num_frames", 8)))
