"""Ground-truth data for training and validating the embedded evaluators.

Every item is a pure function of ``(seed, kind, index)`` (``kind`` = ``"base"`` or a style name),
drawn from :mod:`sara.data` — the procedural domain (:func:`~sara.data.procedural.sample_scene`,
:func:`~sara.data.procedural.render`) and the style renderer
(:func:`~sara.data.styles.render_style`) — never from a generator of this package's own:

* ``base``: a scene of :class:`sara.data.domain.PretrainDomain` (train split, with this seed)
  rendered at 32×32 (what the tiny backbone is pre-trained on);
* ``<Style>``: a scene drawn in that style at 64×64 (as the style datasets are written) and
  resized to 32×32 with PIL bicubic; the unstyled 64×64 render of the same scene is kept too
  (pixel blends for the FID validation). Styled scenes are any domain scenes (also the
  colour/shape pairs the style datasets hold out for the evaluation prompts: the evaluators must
  judge exactly those samples).

``text`` is the content caption only (no style words), whatever the kind: the CLIP score measures
whether the prompt's content is followed, so the same content in any style, or none, shares one
caption; the style is ``kind``.

Training uses ``seed = 1000 + s``, validation ``seed = 2000 + s``, so no scene is shared.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image

KINDS_STYLES = ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")
KINDS = ("base", *KINDS_STYLES)
_STREAM = {k: 900 + i for i, k in enumerate(KINDS)}


def to32(img: np.ndarray, size: int = 32) -> np.ndarray:
    if img.shape[0] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def blend(styled: np.ndarray, plain: np.ndarray, alpha: float) -> np.ndarray:
    """Pixel blend ``alpha * styled + (1 - alpha) * plain`` (uint8)."""
    out = alpha * styled.astype(np.float64) + (1 - alpha) * plain.astype(np.float64)
    return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def item(kind: str, index: int, seed: int, with_plain: bool = False) -> dict:
    from sara.data.procedural import caption, render, sample_scene, scene_rng

    if kind == "base":  # the pre-training domain itself (its train split, drawn with this seed)
        from sara.data.domain import PretrainDomain

        scene = PretrainDomain(32, "train", seed=seed, length=1 << 40).scene(index)
    else:  # any domain scene (held-out colour/shape pairs included: the evaluators judge them too)
        scene = sample_scene(scene_rng(seed, _STREAM[kind], index))
    text = caption(scene)
    out = {"kind": kind, "attrs": [o.attributes() for o in scene.objects], "relation": scene.relation}
    if kind == "base":
        out.update(image=render(scene, 32), text=text)
        if with_plain:
            out["plain64"] = render(scene, 64)
    else:
        from sara.data.styles import render_style

        styled = render_style(kind, scene, 64, scene_rng(seed, _STREAM[kind] + 50, index))
        out.update(image=to32(styled), text=text)
        if with_plain:
            out["styled64"] = styled
            out["plain64"] = render(scene, 64)
    return out


def _chunk(args):
    kind, start, stop, seed, with_plain = args
    return [item(kind, i, seed, with_plain) for i in range(start, stop)]


def make_items(kind: str, n: int, seed: int, workers: int = 0, with_plain: bool = False, start: int = 0) -> list[dict]:
    """Items ``start .. start+n-1`` of ``kind`` (in parallel over ``workers`` processes)."""
    if workers <= 1 or n < 64:
        return [item(kind, i, seed, with_plain) for i in range(start, start + n)]
    step = max(16, n // (workers * 4))
    jobs = [(kind, a, min(a + step, start + n), seed, with_plain) for a in range(start, start + n, step)]
    with ProcessPoolExecutor(workers) as ex:
        return [x for chunk in ex.map(_chunk, jobs) for x in chunk]


def make_pool(n_base: int, n_per_style: int, seed: int, workers: int = 0, styles: Sequence[str] = KINDS_STYLES) -> list[dict]:
    items = make_items("base", n_base, seed, workers)
    for s in styles:
        items += make_items(s, n_per_style, seed, workers)
    return items


def default_workers() -> int:
    return max(1, min(16, (os.cpu_count() or 1)))


# ------------------------------------------------------------------------------ captions


def phrase(a: dict) -> str:
    parts = [a.get("size"), a.get("colour"), a.get("shape")]
    return "a " + " ".join(p for p in parts if p)


def caption_from_attrs(attrs: list[dict], relation) -> str:
    text = phrase(attrs[0])
    rest = attrs[1:]
    if relation is not None:
        text += f" {relation[1]} {phrase(attrs[1])}"
        rest = attrs[2:]
    for a in rest:
        text += f" and {phrase(a)}"
    return text


def item_from_prompt(prompt: str) -> dict:
    """``{"text", "attrs", "relation"}`` of a domain prompt (a style trigger is dropped), so that
    :func:`one_attribute_changed` applies to generated images' prompts too."""
    from sara.data.procedural import parse_caption
    from sara.data.styles import strip_style_prefix

    text = strip_style_prefix(prompt)
    objs = parse_caption(text)
    rel = objs[0]["relation"]
    attrs = [{k: o[k] for k in ("shape", "colour", "size")} for o in objs]
    return {"text": text, "attrs": attrs, "relation": (None, rel["relation"]) if rel else None}


def one_attribute_changed(it: dict, rng: np.random.Generator) -> str:
    """The item's caption with one attribute (colour, shape or size) of one object changed."""
    from sara.data.procedural import COLOUR_NAMES, SHAPES, SIZES

    attrs = [dict(a) for a in it["attrs"]]
    k = int(rng.integers(len(attrs)))
    key = ("colour", "shape", "size")[int(rng.integers(3))]
    choices = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": tuple(SIZES)}[key]
    attrs[k][key] = str(rng.choice([c for c in choices if c != attrs[k][key]]))
    return caption_from_attrs(attrs, it["relation"])


# ------------------------------------------------------------------------------ VQA


def vqa_question(it: dict, rng: np.random.Generator, p_yes: float = 0.5, p_drop_size: float = 0.2) -> tuple[dict, int]:
    """A query ``{"size", "colour", "shape"}`` about the item and its answer (1 yes / 0 no).
    Yes: an object's attributes (size dropped with ``p_drop_size``). No: one attribute of an
    object changed so that no object of the scene matches."""
    from sara.data.procedural import COLOUR_NAMES, SHAPES, SIZES

    objs = it["attrs"]
    o = dict(objs[int(rng.integers(len(objs)))])
    q = {"size": o["size"], "colour": o["colour"], "shape": o["shape"]}
    if rng.random() < p_drop_size:
        q["size"] = None

    def matches(q):
        return any(all(q[k] is None or q[k] == ob[k] for k in ("size", "colour", "shape")) for ob in objs)

    if rng.random() < p_yes:
        return q, 1
    for _ in range(50):
        keys = ["colour", "shape"] + (["size"] if q["size"] is not None else [])
        key = keys[int(rng.integers(len(keys)))]
        choices = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": tuple(SIZES)}[key]
        q2 = dict(q)
        q2[key] = str(rng.choice([c for c in choices if c != q[key]]))
        if not matches(q2):
            return q2, 0
    return q, 1  # pragma: no cover (every change matched another object: extremely rare)
