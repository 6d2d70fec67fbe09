"""Five procedural style datasets that stand in for the paper's CIVITAI sets.

Same names and image counts as the paper (:data:`STYLE_SIZES`), same folder format
(``<Name>/0000.png ...`` + ``metadata.jsonl`` lines ``{"file_name": ..., "text": ...}``).
Each image is an ordinary scene of the procedural domain (see :mod:`sara.data.procedural`; its
objects never use a held-out (colour, shape) pair of :mod:`sara.data.prompts`) drawn in one style:

- **BarbieCore**: pink gradient background with a soft diagonal sheen, pastel (whitened, pink-tinted)
  objects with a glossy highlight, a white-pink glow around every object.
- **Cyberpunk**: dark indigo-to-violet background with coarse scan bands, objects filled with a
  bright neon version of their colour, a white-hot edge and a wide neon glow, a magenta horizon band.
- **ElementFire**: near-black to dark-red background, a smooth flame (yellow-orange-red colour map)
  rising from every object, objects in their colour with a glowing orange rim.
- **Expedition**: parchment background with mottling and paper grain, objects half-toned to sepia
  with a dark-brown ink outline, an overall warm tone, vignette and a thin dark frame.
- **Hornify**: olive-green background darkening to a ground band, objects darkened with a black
  outline and two large ivory horns on top of each object (tips darker), outlined.

Images are written at 64x64 (the training loader resizes to the backbone's 32x32); every feature
is at least two pixels wide at 64 so it survives the 2x box downsampling. Version 2 of the data
redrew Cyberpunk (no one-pixel scanlines or thin outlines), ElementFire (no turbulent flames or
embers) and Hornify (larger horns): the 32-px backbone did not learn the version-1 looks within the
style experiment's schedule (full fine-tuning at 300 steps left the FID against Cyberpunk at or
above the base model's).

Captions are the scene's plain caption, with the objects' real colour words even where the style
shifts the palette (pastel, sepia, neon): the colours stay recognisable (hue is kept, only
saturation / value change) and this is what a captioner such as BLIP would describe. The
``"<Name> style, "`` prefix is *not* stored: as in the paper, the training loader adds it
(``ImageCaptionFolder(..., caption_prefix="<Name> style, ")``).

Every image is a pure function of ``(seed, style, index)``; PNGs are written with fixed options and
no metadata, so writing a dataset twice with the same seed gives byte-identical files.
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image
from scipy import ndimage

from sara.io import atomic_dir

from .procedural import (
    Scene,
    SceneObject,
    caption,
    composite,
    coverage_mask,
    downsample,
    object_mask,
    sample_scene,
    scene_rng,
    to_uint8,
    top_edge,
)

STYLE_SIZES: dict[str, int] = {
    "BarbieCore": 316,
    "Cyberpunk": 440,
    "ElementFire": 156,
    "Expedition": 396,
    "Hornify": 236,
}
STYLE_NAMES: tuple[str, ...] = tuple(STYLE_SIZES)
STYLE_RESOLUTION = 64
SUPERSAMPLE = 4
#: Bumped whenever the images of a given seed change (recorded in each folder's marker file).
DATA_VERSION = 2  # 2: Cyberpunk, ElementFire and Hornify redrawn so the 32-px backbone can learn them
MARKER = ".sara_data.json"
_STREAM = {name: 100 + k for k, name in enumerate(STYLE_NAMES)}  # rng stream per style

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _gradient(size: int, top, bottom, power: float = 1.0) -> np.ndarray:
    t = ((np.arange(size) + 0.5) / size) ** power
    col = (1 - t)[:, None] * np.asarray(top, np.float64) + t[:, None] * np.asarray(bottom, np.float64)
    return np.broadcast_to(col[:, None, :], (size, size, 3)).copy()


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, aspect: float = 1.0) -> np.ndarray:
    """Smooth noise in [0, 1]: a random grid of ``cells`` (x ``cells*aspect`` rows), cubic zoom."""
    rows = max(2, int(round(cells * aspect)))
    g = rng.random((rows, cells))
    z = ndimage.zoom(g, (size / rows, size / cells), order=3, mode="grid-wrap", grid_mode=True)
    z = z[:size, :size]
    z -= z.min()
    return z / max(z.max(), 1e-9)


def _masks(scene: Scene, size: int, ss: int) -> list[np.ndarray]:
    return [object_mask(o, size, ss) for o in scene.objects]


def _inside_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each True pixel to the nearest False pixel (the canvas border
    counts as False); computed on the mask's bounding box only."""
    out = np.zeros(mask.shape)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows):
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out[r0:r1, c0:c1] = ndimage.distance_transform_edt(np.pad(mask[r0:r1, c0:c1], 1))[1:-1, 1:-1]
    return out


def _outline(mask_ss: np.ndarray, width_px: float, ss: int) -> np.ndarray:
    """Coverage of the inner band of width ``width_px`` (output pixels) along the mask's edge."""
    dist = _inside_distance(mask_ss)
    return downsample(mask_ss & (dist <= width_px * ss), ss)


def _union(alphas: Iterable[np.ndarray]) -> np.ndarray:
    out = None
    for a in alphas:
        out = a.copy() if out is None else 1 - (1 - out) * (1 - a)
    return out


def _pastel(rgb, white=0.45, tint=(255, 225, 240)) -> np.ndarray:
    return (1 - white) * np.asarray(rgb, np.float64) + white * np.asarray(tint, np.float64)


def _sepia(img: np.ndarray) -> np.ndarray:
    lum = img @ np.array([0.299, 0.587, 0.114])
    return np.clip(lum[..., None] * np.array([1.07, 0.88, 0.62]) + np.array([18, 8, 0]), 0, 255)


def _highlight(o: SceneObject, size: int, ss: int) -> np.ndarray:
    """A soft glossy spot in the upper-left of an object (supersampled weight in [0, 1])."""
    def pred(x, y):
        u, v = (x - o.cx) / o.scale, (y - o.cy) / o.scale
        return np.exp(-((u + 0.17) ** 2 + (v + 0.17) ** 2) / (2 * 0.11**2))
    return downsample(coverage_mask(pred, size, ss), ss)


def _tri(x, y, a, b, c):
    """Point-in-triangle (any orientation) for arrays x, y; a, b, c vertices."""
    def edge(p, q):
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])
    e1, e2, e3 = edge(a, b), edge(b, c), edge(c, a)
    return ((e1 >= 0) & (e2 >= 0) & (e3 >= 0)) | ((e1 <= 0) & (e2 <= 0) & (e3 <= 0))


def horn_triangles(o: SceneObject) -> list[tuple[tuple[float, float], ...]]:
    """The two horns of an object (canvas units): triangles whose base sits inside the object's
    top edge and whose tips point up and outwards."""
    s = o.scale
    horns = []
    for side in (-1, 1):
        u = 0.25 * side
        vt = top_edge(o.shape, u)
        # at least 3 px wide and 6 px tall on a small object at 32 px, so the backbone can draw them
        base_l = (o.cx + (u - 0.21) * s, o.cy + (vt + 0.12) * s)
        base_r = (o.cx + (u + 0.21) * s, o.cy + (vt + 0.12) * s)
        tip = (o.cx + (u + 0.26 * side) * s, o.cy + (vt - 0.72) * s)
        horns.append((base_l, base_r, tip))
    return horns


# --------------------------------------------------------------------------------------------
# the five styles: (scene, rng, size) -> float image [H, W, 3] in 0..255
# --------------------------------------------------------------------------------------------


def style_barbiecore(scene: Scene, rng: np.random.Generator, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    img = _gradient(size, (255, 212, 232), (244, 150, 198))
    yy, xx = np.mgrid[0:size, 0:size] / size
    sheen = np.clip(1 - np.abs((xx + yy) - 0.6 - 0.2 * rng.random()) / 0.25, 0, 1) * 0.35
    img = composite(img, sheen, (255, 240, 248))
    masks = _masks(scene, size, ss)
    alphas = [downsample(m, ss) for m in masks]
    glow = np.clip(ndimage.gaussian_filter(_union(alphas), size / 26) * 1.8, 0, 1)
    img = composite(img, glow * 0.75, (255, 246, 252))
    for o, a in zip(scene.objects, alphas):
        img = composite(img, a, _pastel(o.rgb))
        img = composite(img, a * _highlight(o, size, ss) * 0.8, (255, 255, 255))
    return img


def style_cyberpunk(scene: Scene, rng: np.random.Generator, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    u = size / 32  # one pixel of the 32-px training resolution: every feature is at least this wide
    img = _gradient(size, (12, 10, 40), (60, 14, 80))
    horizon = int(size * (0.80 + 0.06 * rng.random()))
    img[horizon : horizon + int(2 * u)] = (255, 50, 200)
    img[horizon + int(2 * u) :] *= 0.75
    bands = (np.arange(size) // int(2 * u)) % 2 == 1  # coarse scan bands, two 32-px rows each
    img[bands] *= 0.85
    masks = _masks(scene, size, ss)
    alphas = [downsample(m, ss) for m in masks]
    neons = [np.clip(1.2 * np.asarray(o.rgb, np.float64) + 50, 0, 255) for o in scene.objects]
    glow = np.zeros_like(img)
    for a, neon in zip(alphas, neons):
        glow += np.clip(ndimage.gaussian_filter(a, 1.6 * u) * 2.0, 0, 1)[..., None] * neon
    img = img + glow * 0.6
    for m, a, neon in zip(masks, alphas, neons):
        img = composite(img, a, neon)
        img = composite(img, _outline(m, u, ss) * 0.8, (255, 250, 255))  # white-hot edge
    return img


_FIRE = np.array([[0, 0, 0], [150, 20, 5], [235, 70, 10], [255, 150, 30], [255, 225, 120], [255, 250, 220]], np.float64)


def _fire_colour(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1) * (len(_FIRE) - 1)
    i = np.minimum(t.astype(int), len(_FIRE) - 2)
    f = (t - i)[..., None]
    return _FIRE[i] * (1 - f) + _FIRE[i + 1] * f


def style_elementfire(scene: Scene, rng: np.random.Generator, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    u = size / 32
    img = _gradient(size, (20, 5, 5), (95, 25, 8), power=1.5)
    masks = _masks(scene, size, ss)
    alphas = [downsample(m, ss) for m in masks]
    src = _union(alphas)
    # flames: the objects smeared upwards with a linear decay, then blurred (no turbulence: a smooth
    # yellow-orange-red gradient the 32-px backbone can draw); its reach varies a little per image
    flame = np.zeros_like(src)
    reach = int(size * (0.26 + 0.08 * rng.random()))
    for k in range(1, reach + 1):
        shifted = np.zeros_like(src)
        shifted[:-k] = src[k:]
        flame = np.maximum(flame, shifted * (1 - k / (reach + 1)))
    heat = np.clip(ndimage.gaussian_filter(flame, 1.5 * u) * 1.1, 0, 0.9)
    img = img * (1 - heat[..., None]) + _fire_colour(heat) * heat[..., None] + _fire_colour(heat) * 0.3
    for o, m, a in zip(scene.objects, masks, alphas):
        img = composite(img, a, o.rgb)
        img = composite(img, _outline(m, u, ss), (255, 120, 20))  # glowing orange rim
    return img


def style_expedition(scene: Scene, rng: np.random.Generator, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    img = np.empty((size, size, 3))
    img[:] = (226, 205, 160)
    mottle = _smooth_noise(rng, size, 5) - 0.5
    img += mottle[..., None] * np.array([30, 28, 22])
    half = max(1, size // 32)
    grain = rng.normal(0, 1, (size // half, size // half)).repeat(half, 0).repeat(half, 1)
    img += grain[..., None] * 7
    masks = _masks(scene, size, ss)
    for o, m in zip(scene.objects, masks):
        a = downsample(m, ss)
        col = np.asarray(o.rgb, np.float64)
        col = 0.55 * col + 0.45 * _sepia(col[None])[0]
        img = composite(img, a, col)
        img = composite(img, _outline(m, size / 32 * 1.0, ss) * 0.9, (72, 46, 24))
    img = 0.78 * img + 0.22 * _sepia(img)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    r2 = (xx**2 + yy**2) / 0.5
    img *= (1 - 0.5 * r2**1.5)[..., None]
    img = img * 0.92 + np.array([20, 8, 0])
    f = max(1, size // 32)
    for sl in (np.s_[:f], np.s_[-f:], np.s_[:, :f], np.s_[:, -f:]):
        img[sl] = (70, 45, 25)
    return img


def style_hornify(scene: Scene, rng: np.random.Generator, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    img = _gradient(size, (120, 140, 88), (70, 88, 48))
    ground = int(size * (0.84 + 0.06 * rng.random()))
    img[ground:] = img[ground:] * 0.65
    g = (np.arange(size * ss) + 0.5) / (size * ss)
    x, y = g[None, :], g[:, None]
    for o in scene.objects:
        m = object_mask(o, size, ss)
        horns_ss = np.zeros_like(m)
        tips = np.zeros(m.shape)
        for a, b, c in horn_triangles(o):
            t = _tri(x, y, a, b, c)
            horns_ss |= t
            # horns darken towards the tip: position along the base->tip axis
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            ax = np.array(c) - np.array(mid)
            proj = ((x - mid[0]) * ax[0] + (y - mid[1]) * ax[1]) / (ax @ ax)
            tips = np.maximum(tips, np.where(t, np.clip(proj, 0, 1), 0))
        horns_ss &= ~m
        both = horns_ss | m
        dist = _inside_distance(both)
        img = composite(img, downsample(both, ss), (20, 16, 12))  # black outline of object + horns
        hcol = (1 - downsample(tips, ss)[..., None] * 0.4) * np.array([250, 244, 222])
        img = composite(img, downsample(horns_ss & (dist > ss * size / 64), ss), hcol)
        dist_m = _inside_distance(m)
        img = composite(img, downsample(m & (dist_m > ss * size / 32), ss), 0.85 * np.asarray(o.rgb, np.float64))
    return img


STYLES: dict[str, Callable[..., np.ndarray]] = {
    "BarbieCore": style_barbiecore,
    "Cyberpunk": style_cyberpunk,
    "ElementFire": style_elementfire,
    "Expedition": style_expedition,
    "Hornify": style_hornify,
}


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in STYLE_SIZES:
        raise ValueError(f"unknown style {name!r}; the styles are {', '.join(STYLE_NAMES)}")


def style_scene(name: str, index: int, seed: int = 0) -> Scene:
    """The scene of image ``index`` of style ``name`` (no held-out pair; see :mod:`.prompts`)."""
    from .prompts import HELD_OUT_PAIRS

    _check_name(name)
    return sample_scene(scene_rng(seed, _STREAM[name], index), exclude_pairs=HELD_OUT_PAIRS)


def style_scenes(name: str, seed: int = 0) -> list[Scene]:
    return [style_scene(name, i, seed) for i in range(STYLE_SIZES[name])]


def render_style(name: str, scene: Scene, size: int = STYLE_RESOLUTION, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw ``scene`` in style ``name``: ``uint8[size, size, 3]``. ``rng`` drives the style's own
    randomness (noise, flame turbulence...); default: a generator seeded with 0."""
    _check_name(name)
    if rng is None:
        rng = np.random.default_rng(0)
    return to_uint8(STYLES[name](scene, rng, size))


def style_item(name: str, index: int, seed: int = 0, size: int = STYLE_RESOLUTION) -> tuple[str, np.ndarray]:
    """``(caption, uint8 image)`` of image ``index`` of style ``name``."""
    scene = style_scene(name, index, seed)
    rng = scene_rng(seed, _STREAM[name] + 50, index)
    return caption(scene), render_style(name, scene, size, rng)


def png_bytes(img: np.ndarray) -> bytes:
    """Deterministic PNG encoding (fixed zlib level, no optimisation pass, no metadata chunks)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _write_one(out: Path, name: str, seed: int, limit: int | None, progress: Callable[[int], None] | None) -> Path:
    n = STYLE_SIZES[name] if limit is None else min(int(limit), STYLE_SIZES[name])
    final = out / name
    with atomic_dir(final) as tmp:
        lines = []
        for i in range(n):
            text, img = style_item(name, i, seed)
            fn = f"{i:04d}.png"
            (tmp / fn).write_bytes(png_bytes(img))
            lines.append(json.dumps({"file_name": fn, "text": text}, ensure_ascii=False))
            if progress is not None:
                progress(1)
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        marker = {"name": name, "seed": int(seed), "count": n, "complete": n == STYLE_SIZES[name],
                  "version": DATA_VERSION, "resolution": STYLE_RESOLUTION}
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
    return final


def write_style_datasets(
    out: str | os.PathLike,
    seed: int = 0,
    names: Iterable[str] | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Write (or overwrite) ``out/<Name>/`` for each style (default: all five), atomically: each
    folder is built under a temporary name next to it and renamed into place.

    ``limit``: write only the first ``limit`` images (tests; such a folder counts as incomplete).
    ``progress``: called with 1 after each image (e.g. ``tqdm.update``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(STYLE_NAMES if names is None else names)
    for n in names:
        _check_name(n)
    return {n: _write_one(out, n, seed, limit, progress) for n in names}


def dataset_status(folder: str | os.PathLike, name: str, seed: int = 0) -> str:
    """``"missing"``, ``"ok"`` (complete, this seed and version), ``"stale"`` (written by this
    suite but incomplete, other seed or version, or files missing) or ``"foreign"`` (a folder
    this suite did not write, e.g. the real CIVITAI set: left alone)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    marker = folder / MARKER
    if not marker.is_file():
        return "foreign"
    try:
        m = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "stale"
    if not (m.get("complete") and m.get("seed") == seed and m.get("version") == DATA_VERSION
            and m.get("count") == STYLE_SIZES[name]):
        return "stale"
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        return "stale"
    try:
        lines = [json.loads(x) for x in meta.read_text(encoding="utf-8").splitlines() if x.strip()]
    except ValueError:
        return "stale"
    if len(lines) != STYLE_SIZES[name] or not all((folder / d.get("file_name", "")).is_file() for d in lines):
        return "stale"
    return "ok"


def ensure_style_datasets(
    root: str | os.PathLike,
    seed: int = 0,
    names: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Make sure ``root/<Name>/`` exists for each style; (re)write only the missing ones and the
    ones this suite wrote that are incomplete or from another seed/version. A folder without the
    suite's marker file (e.g. the real CIVITAI set dropped in) is never touched."""
    root = Path(root)
    names = list(STYLE_NAMES if names is None else names)
    todo = []
    for n in names:
        _check_name(n)
        st = dataset_status(root / n, n, seed)
        if st in ("missing", "stale"):
            todo.append(n)
        elif st == "foreign":
            warnings.warn(f"{root / n} was not written by sara.data (no {MARKER}); using it as is", stacklevel=2)
    if todo:
        write_style_datasets(root, seed, todo, progress=progress)
    return {n: root / n for n in names}


def iter_style_images(name: str, seed: int = 0, limit: int | None = None, size: int = STYLE_RESOLUTION) -> Iterator[tuple[str, np.ndarray]]:
    n = STYLE_SIZES[name] if limit is None else min(limit, STYLE_SIZES[name])
    for i in range(n):
        yield style_item(name, i, seed, size)


def caption_prefix(name: str) -> str:
    """The prefix the paper puts before every caption of a style dataset: ``"<Name> style, "``."""
    return f"{name} style, "


_STYLE_TRIGGERS = re.compile(r"^\s*(?:[^,]*?\bstyle\s*,\s*)+", re.IGNORECASE)


def strip_style_prefix(text: str) -> str:
    """A prompt's content: every leading ``"<Name> style, "`` trigger removed (a merged model's
    prompt carries two), e.g. ``"Cyberpunk style, a red circle"`` -> ``"a red circle"``."""
    return _STYLE_TRIGGERS.sub("", text.strip(), count=1).strip()
