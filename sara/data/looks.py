"""Varied looks for the pre-training domain: backgrounds, palettes, outlines, glows, textures.

Why: a base model pre-trained only on flat objects over a plain light background puts every style
set far outside its support (its denoising error on the style sets is 23-97 times its error on its own
domain, docs/latent_world.md), so fine-tuning must first learn to draw dark, saturated or textured
images at all. Stable Diffusion's pre-training covers such looks; this module gives the embedded
pre-training domain the same breadth. A look is a random combination of generic ingredients
(background kind and colours, a palette shift that keeps each object's hue, outlines, glows,
shading, trails, accessories, bands, vignette, grain); none of the combinations is one of the five
styles, and captions never mention the look, as web captions seldom describe how an image is
rendered.

A look is a plain dict (JSON-serialisable) drawn by :func:`sample_look` from its own generator,
so the same scene index renders the same content in the ``plain`` and ``varied`` domains.
:func:`render_look` draws a scene with a look at any resolution; feature sizes are given in pixels
of the 32-px backbone (``u = size / 32``), so they survive down-sampling.
"""
from __future__ import annotations

import colorsys

import numpy as np
from scipy import ndimage

from .procedural import Scene, composite, downsample, object_mask, to_uint8

#: Bumped whenever the looks drawn for a given (seed, index) change.
LOOKS_VERSION = 1
BACKGROUNDS = ("plain", "solid", "gradient", "texture", "horizon")
_BACKGROUND_P = (0.30, 0.20, 0.25, 0.15, 0.10)
PALETTES = ("keep", "light", "dark", "vivid", "muted")
_PALETTE_P = (0.45, 0.15, 0.15, 0.15, 0.10)


def _random_colour(rng: np.random.Generator) -> list[int]:
    """Any hue, saturation and value (dark colours as likely as light ones)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.random() ** 0.7, 0.05 + 0.95 * rng.random())
    return [int(round(255 * c)) for c in (r, g, b)]


def sample_look(rng: np.random.Generator) -> dict:
    """A random look (every field always present, so the dict's keys do not depend on the draw)."""
    bg = str(rng.choice(BACKGROUNDS, p=_BACKGROUND_P))
    return {
        "background": bg,
        "colours": [_random_colour(rng), _random_colour(rng)],
        "gradient_angle": float(rng.uniform(0, 2 * np.pi)),
        "texture_cells": int(rng.integers(3, 9)),
        "horizon": float(rng.uniform(0.6, 0.9)),
        "palette": str(rng.choice(PALETTES, p=_PALETTE_P)),
        "palette_amount": float(rng.uniform(0.25, 0.6)),
        "outline": bool(rng.random() < 0.3),
        "outline_px": float(rng.choice([1.0, 1.5, 2.0])),
        "outline_colour": _random_colour(rng),
        "glow": bool(rng.random() < 0.2),
        "glow_px": float(rng.uniform(1.0, 3.0)),
        "glow_own_colour": bool(rng.random() < 0.6),
        "glow_colour": _random_colour(rng),
        "shading": bool(rng.random() < 0.2),
        "trail": bool(rng.random() < 0.1),
        "trail_angle": float(rng.uniform(0, 2 * np.pi)),
        "trail_px": float(rng.uniform(4, 10)),
        "accessory": bool(rng.random() < 0.15),
        "accessory_colour": _random_colour(rng),
        "accessory_side": int(rng.integers(0, 4)),
        "bands": bool(rng.random() < 0.15),
        "bands_px": int(rng.integers(2, 5)),
        "bands_vertical": bool(rng.random() < 0.3),
        "bands_gain": float(rng.uniform(0.75, 1.2)),
        "vignette": bool(rng.random() < 0.15),
        "grain": float(rng.uniform(3, 10)) if rng.random() < 0.15 else 0.0,
        "grain_seed": int(rng.integers(0, 2**31)),
    }


def _background(look: dict, scene: Scene, size: int) -> np.ndarray:
    kind = look["background"]
    c0, c1 = (np.asarray(c, np.float64) for c in look["colours"])
    img = np.empty((size, size, 3))
    if kind == "plain":
        img[:] = scene.background
        return img
    if kind == "solid":
        img[:] = c0
        return img
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    if kind == "gradient":
        a = look["gradient_angle"]
        t = np.clip((xx * np.cos(a) + yy * np.sin(a)) / 0.71 + 0.5, 0, 1)
    elif kind == "texture":
        cells = look["texture_cells"]
        grid = np.random.default_rng(look["grain_seed"] + 1).random((cells, cells))
        t = ndimage.zoom(grid, size / cells, order=3, mode="grid-wrap", grid_mode=True)[:size, :size]
        t = np.clip((t - t.min()) / max(np.ptp(t), 1e-9), 0, 1)
    else:  # horizon: sky above, ground below a soft edge
        t = np.clip((yy + 0.5 - look["horizon"]) * size / 1.5 + 0.5, 0, 1)
    return (1 - t)[..., None] * c0 + t[..., None] * c1


def _palette(rgb, look: dict) -> np.ndarray:
    """Shift an object's colour without changing its hue (the caption's colour word stays true)."""
    c = np.asarray(rgb, np.float64)
    k, a = look["palette"], look["palette_amount"]
    if k == "light":
        return c + (255 - c) * a
    if k == "dark":
        return c * (1 - 0.8 * a)
    if k == "vivid":
        return np.clip(c * (1 + a) + 60 * a, 0, 255)
    if k == "muted":
        return c + (c.mean() - c) * a
    return c


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def render_look(scene: Scene, look: dict, size: int = 32, ss: int = 4) -> np.ndarray:
    """Draw ``scene`` with ``look``: ``np.uint8[size, size, 3]``."""
    u = size / 32
    img = _background(look, scene, size)
    masks = [object_mask(o, size, ss) for o in scene.objects]
    alphas = [downsample(m, ss) for m in masks]
    colours = [_palette(o.rgb, look) for o in scene.objects]
    union = np.zeros((size, size))
    for a in alphas:
        union = 1 - (1 - union) * (1 - a)
    if look["trail"]:  # a fading smear behind the objects
        trail = np.zeros_like(union)
        n = max(1, int(look["trail_px"] * u))
        dy, dx = np.sin(look["trail_angle"]), np.cos(look["trail_angle"])
        for k in range(1, n + 1):
            trail = np.maximum(trail, _shift(union, int(round(k * dy)), int(round(k * dx))) * (1 - k / (n + 1)))
        tint = np.mean(colours, axis=0)
        img = composite(img, ndimage.gaussian_filter(trail, 0.7 * u) * 0.8, tint)
    if look["glow"]:
        for a, c in zip(alphas, colours):
            halo = np.clip(ndimage.gaussian_filter(a, look["glow_px"] * u) * 1.8, 0, 1) * 0.8
            img = composite(img, halo, c if look["glow_own_colour"] else look["glow_colour"])
    for o, m, a, c in zip(scene.objects, masks, alphas, colours):
        if look["accessory"]:  # a small uncaptioned block attached to one side of the object
            side = look["accessory_side"]
            ox, oy = [(0, -0.55), (0.55, 0), (0, 0.55), (-0.55, 0)][side]
            cx, cy, h = o.cx + ox * o.scale, o.cy + oy * o.scale, 0.16 * o.scale + 1.5 / 32
            yy, xx = (np.mgrid[0:size * ss, 0:size * ss] + 0.5) / (size * ss)
            acc = (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h) & ~m
            img = composite(img, downsample(acc, ss), look["accessory_colour"])
        fill = c
        if look["shading"]:  # lit from the top: brighter above the centre, darker below
            yy = (np.arange(size) + 0.5)[:, None] / size
            gain = np.clip(1.25 - 0.5 * (yy - (o.cy - 0.5 * o.scale)) / max(o.scale, 1e-6), 0.7, 1.25)
            fill = np.clip(c[None, None, :] * gain[..., None], 0, 255) * np.ones((1, size, 1))
        img = composite(img, a, fill)
        if look["outline"]:
            inner = ndimage.binary_erosion(m, iterations=max(1, int(round(look["outline_px"] * u * ss))), border_value=0)
            img = composite(img, downsample(m & ~inner, ss), look["outline_colour"])
    if look["bands"]:
        period = max(1, int(look["bands_px"] * u))
        idx = np.arange(size) // period % 2 == 1
        if look["bands_vertical"]:
            img[:, idx] *= look["bands_gain"]
        else:
            img[idx] *= look["bands_gain"]
    if look["vignette"]:
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
        img *= (1 - 0.6 * ((xx**2 + yy**2) / 0.5) ** 1.5)[..., None]
    if look["grain"]:
        img = img + np.random.default_rng(look["grain_seed"]).normal(0, look["grain"], (size, size, 1))
    return to_uint8(img)
