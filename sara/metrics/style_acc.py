"""Style-classifier accuracy (embedded world): the share of images that the FID network's style
head assigns to the target style.

An extra beside FID: FID says how close the samples' distribution is to the style set, this says
how many single samples carry the style at all. The classifier is :class:`sara.metrics.embedded.FIDNet`
(trained on base renders and the five styles, with pixel-blend mixup); its labels are
:data:`STYLE_LABELS`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from .clip_score import load_images
from .embedded import STYLE_NAMES, FIDNet, load_fid_net

__all__ = ["STYLE_LABELS", "load_style_classifier", "style_predictions", "style_accuracy"]

STYLE_LABELS = ("base", *STYLE_NAMES)


def load_style_classifier(root: str | os.PathLike | None = None, device="cpu") -> FIDNet:
    """The zoo's FID network (``root``: another evaluators zoo)."""
    return load_fid_net(root, device)[0]


@torch.no_grad()
def style_predictions(images, net: FIDNet, batch_size: int = 256) -> list[str]:
    """The most likely label of :data:`STYLE_LABELS` per image (PIL images, uint8 arrays or paths)."""
    dev = next(net.parameters()).device
    out: list[str] = []
    for i in range(0, len(images), batch_size):
        arr = np.stack([np.asarray(im) for im in load_images(images[i: i + batch_size])])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(dev)
        logits, _ = net.heads(net.features(x))
        out += [STYLE_LABELS[int(j)] for j in logits.argmax(1).cpu()]
    return out


def style_accuracy(images: Sequence, style: str, net: FIDNet) -> float:
    """Share of ``images`` classified as ``style`` (one of :data:`STYLE_LABELS`)."""
    if style not in STYLE_LABELS:
        raise ValueError(f"style accuracy: unknown style {style!r}; the classifier knows {list(STYLE_LABELS)}")
    if len(images) == 0:
        raise ValueError("style accuracy: no images")
    return float(np.mean([p == style for p in style_predictions(images, net)]))
