"""Diffusion backbones behind one ``Backbone`` class (see docs/ARCHITECTURE.md, "Backbones").

``load_backbone(cfg)`` dispatches on ``cfg["kind"]``: ``tiny`` | ``stable_diffusion`` | ``sd3`` | ``sdxl``.
``cfg["world"]`` reads the weights of a tiny backbone from its zoo folder (``tiny_sd2`` /
``tiny_sdxl`` / ``tiny_sd3``: :mod:`sara.backbones.tiny_families`, loaded by the full-size classes).
``build_denoiser_from_config(name)`` builds the SD 1.5 / SD 2 / SD3 / SDXL denoiser architectures
(or a tiny one) without any download.
"""
from .arch import (KNOWN_CONFIGS, KNOWN_PARAM_COUNTS, build_denoiser_from_config, count_params,
                   load_denoiser_config)


def __getattr__(name):  # lazy: keeps ``import sara.backbones`` cheap
    if name == "Backbone":
        from .base import Backbone
        return Backbone
    if name == "load_backbone":
        from .factory import load_backbone
        return load_backbone
    if name == "MissingWeightsError":
        from .loading import MissingWeightsError
        return MissingWeightsError
    raise AttributeError(name)


__all__ = ["Backbone", "load_backbone", "MissingWeightsError", "build_denoiser_from_config",
           "load_denoiser_config", "count_params", "KNOWN_CONFIGS", "KNOWN_PARAM_COUNTS"]
