"""Build a :class:`~sara.backbones.base.Backbone` from the ``backbone`` config group: the one place
that knows every backbone kind (the base class knows none of its subclasses)."""
from __future__ import annotations

from .base import Backbone, to_plain_dict


def load_backbone(cfg, device=None, dtype=None) -> Backbone:
    """Build a :class:`Backbone` from the ``backbone`` config group (dict or DictConfig).

    ``cfg["kind"]``: ``tiny`` (pixel-space UNet, shipped weights in ``sara/zoo/tiny`` unless
    ``pretrained`` names another folder) | ``stable_diffusion`` (SD 1.5 / 2.x) | ``sdxl`` | ``sd3``.
    ``cfg["world"]`` (``tiny_sd2`` | ``tiny_sd3`` | ``tiny_sdxl``) reads the weights from that
    world's zoo folder unless ``pretrained`` names another, and loads them with the full-size class.
    Missing weights raise :class:`MissingWeightsError` naming the model id, the config key to set
    (``backbone.pretrained=/path``), the folder layout and the download command."""
    cfg = to_plain_dict(cfg)
    kind = cfg.get("kind", "stable_diffusion")
    if cfg.get("world") and kind != "tiny":  # tiny_sd2 / tiny_sd3 / tiny_sdxl: weights in the zoo
        from .tiny_families import resolve_world
        cfg = resolve_world(cfg)
    if kind == "tiny":
        from .tiny import load_tiny
        bb = load_tiny(cfg)
    elif kind in ("stable_diffusion", "sd", "sd15", "sd2"):
        from .stable_diffusion import StableDiffusionBackbone
        bb = StableDiffusionBackbone.from_pretrained(cfg)
    elif kind == "sdxl":
        from .sdxl import SDXLBackbone
        bb = SDXLBackbone.from_pretrained(cfg)
    elif kind == "sd3":
        from .sd3 import SD3Backbone
        bb = SD3Backbone.from_pretrained(cfg)
    elif kind == "motion":  # video: an image backbone + motion modules (sara.backbones.motion)
        from .motion import load_motion
        bb = load_motion(cfg, load_backbone)
    else:
        raise ValueError(f"unknown backbone kind {kind!r} (tiny | stable_diffusion | sdxl | sd3 | motion)")
    if device is not None or dtype is not None:
        bb.to(device, dtype)
    return bb
