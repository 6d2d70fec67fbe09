"""Build a :class:`~sara.backbones.base.Backbone` from the ``backbone`` config group: the one place
that knows every backbone kind (the base class knows none of its subclasses)."""
from __future__ import annotations

import hashlib
from pathlib import Path

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


def weights_folder(cfg) -> Path | None:
    """The local folder of an embedded backbone's weights (``backbone.pretrained``, else its zoo
    folder); None for the full-size backbones, whose identity is their model id and revision."""
    cfg = to_plain_dict(cfg)
    kind, world = cfg.get("kind", "stable_diffusion"), cfg.get("world")
    if kind == "tiny":
        from .tiny import WORLDS as TINY_WORLDS

        default = TINY_WORLDS.get(world or "tiny", (None, None))[1]
    elif world:
        from .tiny_families import WORLDS as FAMILY_WORLDS

        default = (FAMILY_WORLDS.get(world) or {}).get("root")
    else:
        return None
    folder = cfg.get("pretrained") or default
    return Path(folder) if folder else None


def weights_id(cfg) -> str | None:
    """A content hash (sha256, 16 hex digits) of the ``*.safetensors`` files of an embedded
    backbone's folder: recorded with every run (``backbone.weights_id``) so a result made with
    other weights of the same name (a re-trained zoo) is never taken for this one. None for the
    full-size backbones and for a folder that is not there (the loader reports it)."""
    folder = weights_folder(cfg)
    if folder is None or not folder.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
