"""The "pre-training" data of the embedded world: an unlimited stream of procedural scenes.

Item ``i`` of a split is a pure function of ``(seed, split, i)`` (its own random generator,
``numpy.random.default_rng([seed, stream, i])``), so any worker, order or resume gives the same
data. ``train`` and ``val`` use different generator streams, so they are disjoint draws; ``val``
is a fixed 1,000 items. Because train items are already random draws, a sequential sampler is as
good as a shuffled one (and avoids a permutation of the large nominal length).

No augmentation (in particular no horizontal flip, which would contradict "left of" / "right of").
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .procedural import caption, render, sample_scene, scene_rng

SPLIT_STREAMS = {"train": 0, "val": 1}
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
    (``scene``: :meth:`Scene.to_dict`, the ground truth of the image).
    """

    def __init__(self, resolution: int = 32, split: str = "train", seed: int = 0, length: int | None = None):
        if split not in SPLIT_STREAMS:
            raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
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

    def image(self, index: int) -> np.ndarray:
        return render(self.scene(index), self.resolution)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += self.length
        s = self.scene(index)
        return {
            "pixel_values": to_tensor(render(s, self.resolution)),
            "prompt": caption(s),
            "scene": s.to_dict(),
        }

    def __repr__(self) -> str:
        return f"PretrainDomain(resolution={self.resolution}, split={self.split!r}, seed={self.seed}, length={self.length})"
