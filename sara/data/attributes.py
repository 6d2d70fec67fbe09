"""A rule-based attribute detector for images of the procedural domain (clean renders or model
samples on a light, roughly uniform background).

Pipeline of :func:`detect_objects`:

1. **Background**: the per-channel median of the image's border ring.
2. **Colour segmentation**: every pixel ``p`` is "unmixed" against each palette colour ``c``: the
   coverage ``a = <p - bg, c - bg> / |c - bg|^2`` (clipped to [0, 1]) and the residual
   ``|p - bg - a (c - bg)|``. A pixel is foreground of the palette colour with the smallest residual
   if that colour explains it with ``a >= 0.5``. Antialiased edges (object blended with background)
   lie on that line, so edges get the object's colour and not a neighbouring palette entry.
3. **Objects**: 8-connected components per colour, components smaller than ``min_area`` (share of
   the image) are dropped. The object's own colour is the median of its core pixels; its coverage
   map is the unmixing against that colour inside the component grown by one pixel.
4. **Shape**: the coverage map is matched against each shape of :data:`~sara.data.procedural.SHAPES`
   rendered (with the same exact-coverage renderer as the domain) into the object's box, over a
   small grid of scales and sub-pixel offsets; the shape with the smallest L1 error wins. The box
   comes from the column / row maxima of the coverage (their sums are the width / height).
5. **Size**: ``large`` if the box side is above the midpoint of the two nominal sizes.

:func:`check_prompt` matches the objects a caption states to the detected ones (same colour first,
same colour and shape preferred) and reports whether colour, shape, size, relation and count agree.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .procedural import COLOURS, SHAPES, SIZES, inside_shape, parse_caption

_PALETTE = np.array(list(COLOURS.values()), np.float64)
_NAMES = list(COLOURS)
_SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2


def estimate_background(img: np.ndarray, ring: int = 1) -> np.ndarray:
    """Per-channel median of the outer ``ring`` pixels."""
    h, w = img.shape[:2]
    m = np.zeros((h, w), bool)
    m[:ring], m[-ring:], m[:, :ring], m[:, -ring:] = True, True, True, True
    return np.median(img[m].astype(np.float64), axis=0)


def _unmix(pix: np.ndarray, bg: np.ndarray, colours: np.ndarray):
    """pix [...,3], colours [K,3] -> (alpha [...,K], residual [...,K])."""
    d = colours - bg  # [K,3]
    q = pix[..., None, :] - bg  # [...,1,3]
    a = np.clip((q * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6), 0.0, 1.0)
    res = np.linalg.norm(q - a[..., None] * d, axis=-1)
    return a, res


def _shape_moments(n: int = 400) -> dict[str, tuple[float, float, float]]:
    """(var_u, var_v, mean_v) of each shape in box units, by dense sampling."""
    g = (np.arange(n) + 0.5) / n - 0.5
    u, v = g[None, :], g[:, None]
    out = {}
    for shape in SHAPES:
        m = inside_shape(shape, u, v).astype(np.float64)
        m /= m.sum()
        mu, mv = (m * u).sum(), (m * v).sum()
        out[shape] = (float((m * (u - mu) ** 2).sum()), float((m * (v - mv) ** 2).sum()), float(mv))
    return out


_MOMENTS = _shape_moments()


def _fit_shape(alpha: np.ndarray, ss: int = 3, blurs=(0.0, 0.6, 1.0)):
    """Best shape for a coverage patch: for every shape and blur level, the box is set from the
    patch's centroid and second moments (blur adds sigma^2 to the variance), the shape is rendered
    there (three scales), blurred, and compared (L1) to the patch.
    Returns (shape, errors dict, (cx, cy, w, h) of the winning box, in patch pixels)."""
    ph, pw = alpha.shape
    total = max(float(alpha.sum()), 1e-9)
    xs = np.arange(pw) + 0.5
    ys = np.arange(ph) + 0.5
    mx = float((alpha.sum(0) * xs).sum() / total)
    my = float((alpha.sum(1) * ys).sum() / total)
    vx = float((alpha.sum(0) * (xs - mx) ** 2).sum() / total)
    vy = float((alpha.sum(1) * (ys - my) ** 2).sum() / total)
    gx = (np.arange(pw * ss) + 0.5) / ss
    gy = (np.arange(ph * ss) + 0.5) / ss
    scales = np.array([0.95, 1.0, 1.05])[:, None, None]
    errors, boxes = {}, {}
    for shape in SHAPES:
        ku, kv, mv = _MOMENTS[shape]
        best = np.inf
        for sigma in blurs:
            w = np.sqrt(max(vx - sigma**2, 0.25) / ku)
            h = np.sqrt(max(vy - sigma**2, 0.25) / kv)
            cx, cy = mx, my - mv * h
            u = (gx[None, None, :] - cx) / (w * scales)
            v = (gy[None, :, None] - cy) / (h * scales)
            t = inside_shape(shape, u, v)
            t = t.reshape(t.shape[0], ph, ss, pw, ss).mean(axis=(2, 4))
            if sigma > 0:
                t = ndimage.gaussian_filter(t, (0, sigma, sigma), mode="constant")
            err = np.abs(t - alpha[None]).sum(axis=(1, 2))
            i = int(err.argmin())
            if err[i] < best:
                best = float(err[i])
                sc = float(scales[i, 0, 0])
                boxes[shape] = (cx, cy, w * sc, h * sc)
        errors[shape] = best / total
    shape = min(errors, key=errors.get)
    return shape, errors, boxes[shape]


def detect_objects(img: np.ndarray, min_area: float = 0.006, max_residual: float = 70.0) -> list[dict]:
    """Detect the objects of an image of the procedural domain.

    ``img``: ``uint8[H, W, 3]`` (or a PIL image). Returns a list (largest first) of dicts:
    ``colour``, ``shape``, ``size`` (small/large), ``bbox`` (x0, y0, x1, y1 in pixels), ``area``
    (covered pixels), ``centre`` (cx, cy in [0, 1]), ``rgb`` (the object's median colour),
    ``shape_errors`` (L1 template error per shape; lower is better).
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an RGB image array [H, W, 3], got shape {img.shape}")
    pix = img[..., :3].astype(np.float64)
    H, W = pix.shape[:2]
    bg = estimate_background(pix)
    a, res = _unmix(pix, bg, _PALETTE)
    k = res.argmin(-1)
    a_best = np.take_along_axis(a, k[..., None], -1)[..., 0]
    r_best = np.take_along_axis(res, k[..., None], -1)[..., 0]
    fg = (a_best >= 0.5) & (r_best <= max_residual)
    struct = np.ones((3, 3), bool)
    out = []
    for ci, name in enumerate(_NAMES):
        lab, n = ndimage.label(fg & (k == ci), structure=struct)
        for j in range(1, n + 1):
            comp = lab == j
            if comp.sum() < min_area * H * W:
                continue
            core = ndimage.binary_erosion(comp, structure=struct)
            sel = core if core.sum() >= 3 else comp
            rgb = np.median(pix[sel], axis=0)
            region = ndimage.binary_dilation(comp, structure=struct) & ~(fg & ~comp)
            ca, _ = _unmix(pix, bg, rgb[None])
            alpha = np.where(region, ca[..., 0], 0.0)
            alpha[comp] = np.maximum(alpha[comp], 0.5)
            ys, xs = np.nonzero(region)
            y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, H)
            x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, W)
            shape, errors, (cx, cy, w, h) = _fit_shape(alpha[y0:y1, x0:x1])
            cx, cy = cx + x0, cy + y0
            side = max(w, h) / max(H, W)
            out.append({
                "colour": name,
                "shape": shape,
                "size": "large" if side > _SIZE_SPLIT else "small",
                "bbox": (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                "area": float(alpha.sum()),
                "centre": (cx / W, cy / H),
                "rgb": tuple(float(v) for v in rgb),
                "shape_errors": errors,
            })
    out.sort(key=lambda d: -d["area"])
    return out


def _relation_ok(a: dict, b: dict, relation: str) -> bool:
    dx = b["centre"][0] - a["centre"][0]
    dy = b["centre"][1] - a["centre"][1]
    on, off = {"above": (dy, dx), "below": (-dy, dx), "left of": (dx, dy), "right of": (-dx, dy)}[relation]
    return on > 0 and abs(off) <= on


def check_prompt(img: np.ndarray, prompt: str, detections: list[dict] | None = None) -> dict:
    """Check an image against the objects its prompt states.

    Each stated object is matched to a distinct detected object: first of the same colour and
    shape (and size), else of the same colour. Per stated object: ``colour_ok`` (a detected object of that
    colour exists for it), ``shape_ok`` (its matched object also has the stated shape), ``size_ok``
    (and the stated size; True when the prompt states none). The image-level ``colour_ok`` /
    ``shape_ok`` / ``size_ok`` are True when they hold for every stated object; ``colour_acc`` /
    ``shape_acc`` are the shares of stated objects; ``relation_ok`` (None when the prompt states no
    relation) checks the matched objects' centres; ``count_ok``: as many objects detected as stated.
    """
    stated = parse_caption(prompt)
    det = detect_objects(img) if detections is None else detections
    used: set[int] = set()
    match: list[int | None] = [None] * len(stated)
    for want_shape, want_size in ((True, True), (True, False), (False, True), (False, False)):
        for i, s in enumerate(stated):
            if match[i] is not None:
                continue
            for j, d in enumerate(det):
                if j in used or d["colour"] != s["colour"]:
                    continue
                if want_shape and d["shape"] != s["shape"]:
                    continue
                if want_size and s["size"] is not None and d["size"] != s["size"]:
                    continue
                match[i] = j
                used.add(j)
                break
    objs = []
    for i, s in enumerate(stated):
        d = det[match[i]] if match[i] is not None else None
        objs.append({
            "colour": s["colour"], "shape": s["shape"], "size": s["size"],
            "colour_ok": d is not None,
            "shape_ok": d is not None and d["shape"] == s["shape"],
            "size_ok": d is not None and (s["size"] is None or d["size"] == s["size"]),
            "detected": match[i],
        })
    rel_ok = None
    for i, s in enumerate(stated):
        if s["relation"] is not None:
            j = s["relation"]["target"]
            ok = match[i] is not None and match[j] is not None and _relation_ok(
                det[match[i]], det[match[j]], s["relation"]["relation"])
            rel_ok = ok if rel_ok is None else (rel_ok and ok)
    n = len(stated)
    return {
        "colour_ok": all(o["colour_ok"] for o in objs),
        "shape_ok": all(o["shape_ok"] for o in objs),
        "size_ok": all(o["size_ok"] for o in objs),
        "relation_ok": rel_ok,
        "count_ok": len(det) == n,
        "colour_acc": sum(o["colour_ok"] for o in objs) / n,
        "shape_acc": sum(o["shape_ok"] for o in objs) / n,
        "objects": objs,
        "detected": det,
    }
