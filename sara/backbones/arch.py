"""Build a denoiser from an architecture config, without any download.

``build_denoiser_from_config("sd15")`` returns a ``UNet2DConditionModel`` with exactly the
architecture of the SD 1.5 UNet (random init, or on the ``meta`` device: shapes only, no memory).
Useful for parameter counts, selection statistics, memory benchmarks of the real architectures.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: short name -> (json file, diffusers class name)
KNOWN_CONFIGS = {
    "sd15": ("sd15_unet.json", "UNet2DConditionModel"),
    "sd2": ("sd2_unet.json", "UNet2DConditionModel"),
    "sd3": ("sd3_transformer.json", "SD3Transformer2DModel"),
    "sdxl": ("sdxl_unet.json", "UNet2DConditionModel"),
}
#: known parameter counts of the public denoisers (checked by the tests)
KNOWN_PARAM_COUNTS = {"sd15": 859_520_964, "sd2": 865_910_724, "sd3": 2_028_328_000, "sdxl": 2_567_463_684}

_ALIASES = {"sd1.5": "sd15", "sd15_unet": "sd15", "sd2_unet": "sd2", "sd20": "sd2", "sd2.0": "sd2",
            "sd3_transformer": "sd3", "sd3-medium": "sd3", "sdxl_unet": "sdxl"}


def load_denoiser_config(name_or_path: str | os.PathLike) -> dict:
    """The config dict for a short name (``sd15``, ``sd2``, ``sd3``, ``sdxl``, ``tiny``, ``tiny_sd2``,
    ``tiny_sd3``, ``tiny_sdxl``), a json file, or a diffusers model folder (``<dir>/config.json`` or
    ``<dir>/unet|transformer/config.json``)."""
    key = str(name_or_path)
    key = _ALIASES.get(key.lower(), key.lower()) if not os.path.exists(key) else key
    if key in KNOWN_CONFIGS:
        return json.loads((CONFIG_DIR / KNOWN_CONFIGS[key][0]).read_text())
    if key == "tiny":
        from .tiny import TINY_ROOT
        return json.loads((TINY_ROOT / "unet" / "config.json").read_text())
    from .tiny_families import WORLDS, denoiser_config
    if key in WORLDS:  # the tiny SD 2 / SD 3 / SDXL worlds: built from their architecture
        return denoiser_config(key)
    p = Path(name_or_path)
    if p.is_dir():
        for cand in (p / "config.json", p / "unet" / "config.json", p / "transformer" / "config.json"):
            if cand.is_file():
                return json.loads(cand.read_text())
        raise FileNotFoundError(f"no config.json in {p} (nor in its unet/ or transformer/ subfolder)")
    if p.is_file():
        return json.loads(p.read_text())
    raise ValueError(f"unknown denoiser config {name_or_path!r}; known: {sorted(KNOWN_CONFIGS)} + 'tiny', "
                     f"{', '.join(repr(w) for w in sorted(WORLDS))}, "
                     "or a path to a config.json / diffusers folder")


def build_denoiser_from_config(name_or_path, random_init: bool = True, device: str = "meta", dtype=None):
    """Instantiate the denoiser class named in the config (``_class_name``).

    ``device="meta"``: no memory is allocated (parameter shapes only, for counting / planning).
    ``device="cpu"`` with ``random_init=True``: diffusers' default initialisation.
    ``random_init=False`` is accepted only with a folder holding weights (loads them, local only).
    """
    import torch
    import diffusers

    cfg = load_denoiser_config(name_or_path)
    cls = getattr(diffusers, cfg.get("_class_name", "UNet2DConditionModel"))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if not random_init:
        p = Path(name_or_path)
        if not p.is_dir():
            raise ValueError("random_init=False needs a local diffusers folder with weights")
        sub = None
        for s in ("unet", "transformer"):
            if (p / s).is_dir():
                sub = s
        model = cls.from_pretrained(str(p), subfolder=sub, local_files_only=True, torch_dtype=dtype)
        return model.to(device) if device != "meta" else model
    with torch.device(device):
        model = cls.from_config(cfg)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())
