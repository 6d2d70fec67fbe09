"""The "pre-training" data of the embedded world: an unlimited stream of procedural scenes.

Item ``i`` of a split is a pure function of ``(seed, split, i)`` (its own random generator,
``numpy.random.default_rng([seed, stream, i])``), so any worker, order or resume gives the same
data. ``train`` and ``val`` use different generator streams, so they are disjoint draws; ``val``
is a fixed 1,000 items. Because train items are already random draws, a sequential sampler is as
good as a shuffled one (and avoids a permutation of the large nominal length).

No augmentation (in particular no horizontal flip, which would contradict "left of" / "right of").

``looks="plain"`` draws every scene on a plain light background (the first pre-training stage of
``sara/zoo/tiny``; its manifest's ``looks`` names the last); ``looks="varied"`` draws the same scenes with a
random look of :mod:`sara.data.looks` (backgrounds, palettes, outlines, glows, textures), from a
generator stream of its own so item ``i`` has the same content in both.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .looks import render_look, sample_look
from .procedural import caption, render, sample_scene, scene_rng

SPLIT_STREAMS = {"train": 0, "val": 1}
LOOK_STREAM_OFFSET = 10  # the look of item i of split s comes from stream SPLIT_STREAMS[s] + 10
LOOKS = ("plain", "varied")
DEFAULT_LENGTHS = {"train": 1_000_000, "val": 1_000}


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [-1, 1] -> uint8 [H, W, 3] (inverse of :func:`to_tensor`)."""
    x = (x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().byte().permute(1, 2, 0).numpy()


class PretrainDomain(Dataset):
    """Map-style dataset of the procedural domain.

    Items: ``{"pixel_values": float32 [3, R, R] in [-1, 1], "prompt": str, "scene": dict}``
    (``scene``: :meth:`Scene.to_dict`, the ground truth of the image's content).
    """

    def __init__(self, resolution: int = 32, split: str = "train", seed: int = 0, length: int | None = None,
                 looks: str = "plain"):
        if split not in SPLIT_STREAMS:
            raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
        if looks not in LOOKS:
            raise ValueError(f"looks must be one of {list(LOOKS)}, got {looks!r}")
        self.looks = looks
        self.resolution = int(resolution)
        self.split = split
        self.seed = int(seed)
        self.length = int(DEFAULT_LENGTHS[split] if length is None else length)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.split} split of length {self.length}")
        return sample_scene(scene_rng(self.seed, SPLIT_STREAMS[self.split], index))

    def look(self, index: int) -> dict | None:
        """The look of item ``index`` (``None`` in the plain domain)."""
        if self.looks == "plain":
            return None
        return sample_look(scene_rng(self.seed, SPLIT_STREAMS[self.split] + LOOK_STREAM_OFFSET, index))

    def _render(self, index: int, s) -> np.ndarray:
        look = self.look(index)
        return render(s, self.resolution) if look is None else render_look(s, look, self.resolution)

    def image(self, index: int) -> np.ndarray:
        return self._render(index, self.scene(index))

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += self.length
        s = self.scene(index)
        return {
            "pixel_values": to_tensor(self._render(index, s)),
            "prompt": caption(s),
            "scene": s.to_dict(),
        }

    def __repr__(self) -> str:
        return f"PretrainDomain(resolution={self.resolution}, split={self.split!r}, seed={self.seed}, length={self.length}, looks={self.looks!r})"
