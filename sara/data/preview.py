"""Preview grids of the domain and the style datasets (for the README / docs)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .procedural import caption, render, sample_scene, scene_rng


def preview_grid(images: Sequence[np.ndarray], ncol: int = 8, scale: int = 2, pad: int = 2,
                 pad_value: int = 255) -> Image.Image:
    """Tile ``uint8[H, W, 3]`` images (same size) into a grid, upscaled ``scale``x (nearest)."""
    if not len(images):
        raise ValueError("preview_grid() needs at least one image")
    h, w = images[0].shape[:2]
    ncol = min(ncol, len(images))
    nrow = -(-len(images) // ncol)
    g = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), pad_value, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        g[y : y + h, x : x + w] = im[..., :3]
    out = Image.fromarray(g)
    if scale != 1:
        out = out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
    return out


def base_preview(n: int = 32, seed: int = 0, resolution: int = 32, split_stream: int = 1):
    """(grid image, captions) of the first ``n`` validation scenes."""
    scenes = [sample_scene(scene_rng(seed, split_stream, i)) for i in range(n)]
    return preview_grid([render(s, resolution) for s in scenes], scale=4), [caption(s) for s in scenes]


def looks_preview(n: int = 32, seed: int = 0, resolution: int = 32):
    """(grid image, captions) of the first ``n`` validation items of the varied-looks domain
    (the scenes of :func:`base_preview`, each drawn with its look)."""
    from .domain import PretrainDomain

    d = PretrainDomain(resolution, "val", seed=seed, looks="varied")
    return preview_grid([d.image(i) for i in range(n)], scale=4), [caption(d.scene(i)) for i in range(n)]


def style_preview(name: str, n: int = 16, seed: int = 0, resolution: int | None = None):
    """(grid image, captions) of the first ``n`` images of a style dataset; ``resolution``
    (e.g. 32) box-downsamples them to what the model sees."""
    from .styles import style_item

    ims, caps = [], []
    for i in range(n):
        text, im = style_item(name, i, seed)
        if resolution is not None and resolution != im.shape[0]:
            im = np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.Resampling.BOX))
        ims.append(im)
        caps.append(text)
    return preview_grid(ims, scale=2 if im.shape[0] >= 64 else 4), caps
