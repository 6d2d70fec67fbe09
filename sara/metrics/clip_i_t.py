"""CLIP-I and CLIP-T, the customisation metrics of the paper's Table 7 (DreamBooth protocol).

* CLIP-I: mean pairwise cosine similarity between the CLIP image embeddings of the generated
  images and those of the subject's reference images (reported as a raw cosine, e.g. 0.854);
* CLIP-T: mean 100 × cosine between each generated image and its prompt (the CLIP score;
  reported on the ×100 scale, e.g. 24.88).

Both use the model of :func:`sara.metrics.clip_score.load_clip` (ViT-L/14 real, or the embedded one).

VLHI of a customisation table (:func:`vlhi_custom`): within the rows of one subject,
``(CLIP-I - min) / (max - min) + (CLIP-T - min) / (max - min)`` (both higher-is-better); the Mean
column is its own group of each row's mean CLIP-I and mean CLIP-T. Applied to the paper's Table 7
(``paper/reported_customisation.csv``) this reproduces all 24 reported VLHI cells within 0.01
(:func:`reproduce_table7`; ``tests/test_customisation.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .clip_score import ClipModel, clip_score

__all__ = ["clip_i", "clip_i_per_image", "clip_t", "vlhi_custom", "load_reported_custom", "reproduce_table7"]


def clip_i(images, reference_images, model: ClipModel) -> float:
    return float(clip_i_per_image(images, reference_images, model).mean())


def clip_i_per_image(images, reference_images, model: ClipModel) -> np.ndarray:
    """Per generated image: its mean cosine to the reference images."""
    if len(images) == 0 or len(reference_images) == 0:
        raise ValueError("CLIP-I needs at least one generated and one reference image")
    a = model.encode_images(images)
    b = model.encode_images(reference_images)
    return (a @ b.T).mean(1).cpu().numpy().astype(np.float64)


def clip_t(images, prompts: Sequence[str], model: ClipModel) -> float:
    return clip_score(images, prompts, model)


def vlhi_custom(clip_i_values: Sequence[float], clip_t_values: Sequence[float]) -> np.ndarray:
    """VLHI of the rows of one subject: normalised CLIP-I + normalised CLIP-T (range [0, 2])."""
    from .vlhi import vlhi

    # Eq. 8 normalises a lower-is-better first metric: CLIP-I enters with its sign flipped
    return vlhi(-np.asarray(clip_i_values, np.float64), clip_t_values)


def load_reported_custom(path=None):
    """The paper's Table 7 in long form (table, method, label, subject, metric, value)."""
    import pandas as pd

    from .vlhi import _paper_dir

    p = Path(path) if path is not None else _paper_dir() / "reported_customisation.csv"
    if not p.is_file():
        raise FileNotFoundError(f"reported Table 7 not found at {p} (expected the repo's paper/ folder)")
    return pd.read_csv(p)


def reproduce_table7(df=None):
    """Table 7's VLHI cells recomputed from its CLIP-I / CLIP-T cells: one row per (method,
    subject) with ``VLHI`` (reported), ``VLHI_recomputed`` and ``abs_err``."""
    df = load_reported_custom() if df is None else df
    w = df.pivot_table(index=["method", "subject"], columns="metric", values="value").reset_index()
    w["VLHI_recomputed"] = np.nan
    for _, g in w.groupby("subject", sort=False):
        w.loc[g.index, "VLHI_recomputed"] = vlhi_custom(g["CLIP-I"], g["CLIP-T"])
    w["abs_err"] = (w["VLHI"] - w["VLHI_recomputed"]).abs()
    return w
