"""CLIP-I and CLIP-T, the customisation metrics of the paper's Table 7 (DreamBooth protocol).

* CLIP-I: mean pairwise cosine similarity between the CLIP image embeddings of the generated
  images and those of the subject's reference images (reported as a raw cosine, e.g. 0.854);
* CLIP-T: mean 100 × cosine between each generated image and its prompt (the CLIP score;
  reported on the ×100 scale, e.g. 24.88).

Both use the model of :func:`sara.metrics.clip_score.load_clip` (ViT-L/14 real, or the embedded one).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .clip_score import ClipModel, clip_score

__all__ = ["clip_i", "clip_t"]


def clip_i(images, reference_images, model: ClipModel) -> float:
    if len(images) == 0 or len(reference_images) == 0:
        raise ValueError("CLIP-I needs at least one generated and one reference image")
    a = model.encode_images(images)
    b = model.encode_images(reference_images)
    return float((a @ b.T).mean())


def clip_t(images, prompts: Sequence[str], model: ClipModel) -> float:
    return clip_score(images, prompts, model)
