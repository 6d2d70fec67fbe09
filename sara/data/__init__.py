"""The embedded world's data (see docs/ARCHITECTURE.md, "Data").

- :mod:`.procedural`: scenes, rendering, captions, caption parsing;
- :mod:`.domain`: :class:`PretrainDomain`, the pre-training data;
- :mod:`.styles`: the five style datasets (:data:`STYLE_SIZES`), writing / ensuring them on disk;
- :mod:`.prompts`: the 500 held-out evaluation prompts;
- :mod:`.folder`: :class:`ImageCaptionFolder`, the loader of any images + ``metadata.jsonl`` folder;
- :mod:`.attributes`: the rule-based attribute detector (:func:`detect_objects`, :func:`check_prompt`);
- :mod:`.preview`: preview grids.

``python -m sara.data --out DIR [--seed N]`` writes the five style folders and ``eval_prompts.txt``.
Submodules that need torch are imported lazily, so the writer runs without importing torch.
"""
from __future__ import annotations

from .procedural import Scene, SceneObject, caption, parse_caption, render, sample_scene
from .prompts import HELD_OUT_PAIRS, eval_prompts, eval_scenes
from .styles import STYLE_NAMES, STYLE_SIZES, ensure_style_datasets, write_style_datasets

__all__ = [
    "Scene", "SceneObject", "caption", "parse_caption", "render", "sample_scene",
    "HELD_OUT_PAIRS", "eval_prompts", "eval_scenes",
    "STYLE_NAMES", "STYLE_SIZES", "ensure_style_datasets", "write_style_datasets",
    "collate", "PretrainDomain", "ImageCaptionFolder", "DatasetError",
    "detect_objects", "check_prompt", "preview_grid",
]


def collate(items: list[dict], keep_scenes: bool = False) -> dict:
    """Items ``{"pixel_values": [3,H,W], "prompt": str, ...}`` -> batch
    ``{"pixel_values": [B,3,H,W], "prompts": [str]}`` (plus ``"scenes"`` when ``keep_scenes``
    and the items carry them; any other keys are dropped)."""
    import torch

    if not items:
        raise ValueError("collate() needs at least one item")
    batch = {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]).contiguous(),
        "prompts": [it["prompt"] for it in items],
    }
    if keep_scenes and all("scene" in it for it in items):
        batch["scenes"] = [it["scene"] for it in items]
    return batch


def __getattr__(name: str):  # lazy: these import torch
    if name == "PretrainDomain":
        from .domain import PretrainDomain
        return PretrainDomain
    if name in ("ImageCaptionFolder", "DatasetError"):
        from . import folder
        return getattr(folder, name)
    if name in ("detect_objects", "check_prompt"):
        from . import attributes
        return getattr(attributes, name)
    if name == "preview_grid":
        from .preview import preview_grid
        return preview_grid
    raise AttributeError(f"module 'sara.data' has no attribute {name!r}")
