"""The procedural, captioned image domain of the embedded world.

A scene holds one to three flat-coloured objects on a plain light background. Every object has a
``shape`` (:data:`SHAPES`), a ``colour`` (:data:`COLOURS`), a ``size`` (``small``/``large``) and a
position (centre ``cx, cy`` in [0, 1] canvas units, ``y`` downwards). Scenes with two or more
objects carry one spatial relation between the first two objects ("above", "below", "left of",
"right of"), which holds geometrically (the boxes are separated along that axis and the offset is
within ~35 degrees of it). Objects never overlap (their boxes are at least :data:`GAP` apart).

Captions state every attribute, in object order::

    a large green triangle
    a small red circle above a large blue square
    a small red circle above a large blue square and a small yellow cross

Rendering is exact area coverage: each pixel is split into ``ss x ss`` sub-samples, each
sub-sample is tested against the shape's implicit definition, and the pixel takes the mean
(a box filter), so edges are antialiased and the result is a pure function of the scene.

Everything here is numpy only and deterministic: randomness comes from the ``numpy.random.Generator``
passed in, never from global state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from typing import Callable, Iterable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")

#: Named colours and their nominal RGB value (objects jitter by at most +-COLOUR_JITTER).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (240, 210, 40),
    "green": (45, 165, 65),
    "cyan": (35, 190, 210),
    "blue": (40, 80, 215),
    "purple": (135, 60, 185),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

#: Side of an object's (square) box, in canvas units, before jitter of +-SIZE_JITTER.
SIZES: dict[str, float] = {"small": 0.28, "large": 0.42}
SIZE_JITTER = 0.02
COLOUR_JITTER = 12
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")

BACKGROUND: tuple[int, int, int] = (240, 240, 234)
BACKGROUND_JITTER = 5
MARGIN = 0.03  # min distance of an object box from the canvas border
GAP = 0.06  # min distance between two object boxes
CROSS_ARM = 0.36  # arm width of the cross, relative to the box side

#: Probability of 1, 2, 3 objects in a scene.
N_OBJECTS_P = (0.3, 0.4, 0.3)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    scale: float  # box side in canvas units
    rgb: tuple[int, int, int]

    @property
    def box(self) -> tuple[float, float, float, float]:
        h = self.scale / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def attributes(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "size": self.size}


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    #: ``(i, relation, j)``: object i is <relation> object j; None for one-object scenes.
    relation: tuple[int, str, int] | None = None
    background: tuple[int, int, int] = BACKGROUND

    def to_dict(self) -> dict:
        return {
            "objects": [
                {**asdict(o), "rgb": list(o.rgb)} for o in self.objects
            ],
            "relation": list(self.relation) if self.relation else None,
            "background": list(self.background),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = tuple(
            SceneObject(**{**o, "rgb": tuple(int(v) for v in o["rgb"])}) for o in d["objects"]
        )
        rel = d.get("relation")
        return cls(objs, tuple(rel) if rel else None, tuple(int(v) for v in d["background"]))

    def attributes(self) -> list[dict]:
        """What the caption states, in the format :func:`parse_caption` returns."""
        out = []
        for k, o in enumerate(self.objects):
            a = o.attributes()
            a["relation"] = None
            if self.relation and self.relation[0] == k:
                a["relation"] = {"relation": self.relation[1], "target": self.relation[2]}
            out.append(a)
        return out

    def pairs(self) -> list[tuple[str, str]]:
        """The (colour, shape) pair of each object."""
        return [(o.colour, o.shape) for o in self.objects]


def _boxes_apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    return (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def relation_holds(a: SceneObject, b: SceneObject, relation: str, cone: float = 0.7) -> bool:
    """Whether ``a <relation> b`` holds geometrically: boxes separated along the relation's axis
    by at least GAP, and the off-axis offset at most ``cone`` times the on-axis offset."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    half = (a.scale + b.scale) / 2
    if relation == "above":
        on, off = dy, dx
    elif relation == "below":
        on, off = -dy, dx
    elif relation == "left of":
        on, off = dx, dy
    elif relation == "right of":
        on, off = -dx, dy
    else:
        raise ValueError(f"unknown relation {relation!r}")
    return on >= half + GAP - 1e-9 and abs(off) <= cone * on


def _uniform_centre(rng: np.random.Generator, s: float) -> tuple[float, float]:
    lo, hi = MARGIN + s / 2, 1 - MARGIN - s / 2
    cx, cy = rng.uniform(lo, hi, 2)
    return float(cx), float(cy)


def _place_pair(rng: np.random.Generator, s0: float, s1: float, relation: str, cone: float = 0.65):
    """Centres of objects 0 and 1 (box sides s0, s1) such that ``0 <relation> 1`` holds, or None
    when these sizes cannot satisfy it."""
    lo0, hi0 = MARGIN + s0 / 2, 1 - MARGIN - s0 / 2
    lo1, hi1 = MARGIN + s1 / 2, 1 - MARGIN - s1 / 2
    dmin = (s0 + s1) / 2 + GAP
    dmax = hi1 - lo0  # = hi0 - lo1: the largest possible centre distance along one axis
    if dmax < dmin:
        return None
    d = float(rng.uniform(dmin, dmax))
    offmax = min(cone * d, dmax)
    off = float(rng.uniform(-offmax, offmax))
    # delta = centre of object 1 minus centre of object 0, per axis
    sign = 1.0 if relation in ("above", "left of") else -1.0
    on_axis_delta, off_axis_delta = sign * d, off
    if relation in ("above", "below"):
        delta = (off_axis_delta, on_axis_delta)
    else:
        delta = (on_axis_delta, off_axis_delta)
    c0 = []
    for dl in delta:
        a, b = max(lo0, lo1 - dl), min(hi0, hi1 - dl)
        if a > b:
            return None
        c0.append(float(rng.uniform(a, b)))
    return [(c0[0], c0[1]), (c0[0] + delta[0], c0[1] + delta[1])]


def _sample_attrs(rng: np.random.Generator, exclude: set) -> tuple[str, str, str]:
    while True:
        colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        if (colour, shape) not in exclude:
            break
    size = ("small", "large")[rng.integers(2)]
    return colour, shape, size


def sample_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    exclude_pairs: Iterable[tuple[str, str]] = (),
    include_pairs: Sequence[tuple[str, str]] = (),
) -> Scene:
    """Draw a random scene.

    ``n_objects``: 1, 2 or 3 (default: drawn with probabilities :data:`N_OBJECTS_P`).
    ``exclude_pairs``: (colour, shape) pairs no object may have.
    ``include_pairs``: if given, at least one object gets one of these pairs (one random object is
    reassigned when none has one by chance).
    """
    exclude = set(map(tuple, exclude_pairs))
    include = [tuple(p) for p in include_pairs]
    if n_objects is None:
        n_objects = int(rng.choice(3, p=N_OBJECTS_P)) + 1
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n_objects}")
    attrs = [_sample_attrs(rng, exclude) for _ in range(n_objects)]
    if include and not any((c, s) in include for c, s, _ in attrs):
        k = int(rng.integers(n_objects))
        c, s = include[int(rng.integers(len(include)))]
        attrs[k] = (c, s, attrs[k][2])
    relation = RELATIONS[rng.integers(len(RELATIONS))] if n_objects >= 2 else None
    bg = tuple(int(v) for v in np.array(BACKGROUND) + rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, 3))

    rgbs = [
        tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(COLOURS[c], rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)))
        for c, _, _ in attrs
    ]
    for _attempt in range(1000):
        scales = [SIZES[sz] + float(rng.uniform(-SIZE_JITTER, SIZE_JITTER)) for _, _, sz in attrs]
        centres = _place_pair(rng, scales[0], scales[1], relation) if n_objects >= 2 else [_uniform_centre(rng, scales[0])]
        if centres is None:
            continue
        objs = [
            SceneObject(s, c, z, cx, cy, scales[k], rgbs[k])
            for k, ((c, s, z), (cx, cy)) in enumerate(zip(attrs, centres))
        ]
        if n_objects == 3:
            c, s, z = attrs[2]
            s2 = scales[2]
            lo, hi = MARGIN + s2 / 2, 1 - MARGIN - s2 / 2
            cand = rng.uniform(lo, hi, (256, 2))  # candidate centres, the first free one wins
            ok = np.ones(len(cand), bool)
            for o in objs:
                need = (o.scale + s2) / 2 + GAP
                ok &= (np.abs(cand[:, 0] - o.cx) >= need - 1e-12) | (np.abs(cand[:, 1] - o.cy) >= need - 1e-12)
            free = np.flatnonzero(ok)
            if not len(free):
                continue
            cx, cy = cand[free[0]]
            objs.append(SceneObject(s, c, z, float(cx), float(cy), s2, rgbs[2]))
        return Scene(tuple(objs), (0, relation, 1) if relation else None, bg)
    raise RuntimeError("could not place the scene's objects")  # pragma: no cover (never seen)


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------
def _phrase(o: SceneObject) -> str:
    return f"a {o.size} {o.colour} {o.shape}"


def caption(scene: Scene) -> str:
    objs = scene.objects
    text = _phrase(objs[0])
    if scene.relation is not None:
        i, rel, j = scene.relation
        assert (i, j) == (0, 1), "captions state the relation of object 0 to object 1"
        text += f" {rel} {_phrase(objs[1])}"
        rest = objs[2:]
    else:
        rest = objs[1:]
    for o in rest:
        text += f" and {_phrase(o)}"
    return text


_COL = "|".join(COLOUR_NAMES)
_SHP = "|".join(SHAPES)
_REL = "|".join(RELATIONS)
_OBJ = rf"(?:an?|the|one)\s+(?:(small|large)\s+)?({_COL})\s+({_SHP})s?"
_CLAUSE_RE = re.compile(rf"^{_OBJ}(?:\s+({_REL})\s+{_OBJ})?$")
_PREFIX_RE = re.compile(r"^\s*[^,]*?\bstyle\s*,\s*", re.IGNORECASE)


def parse_caption(text: str) -> list[dict]:
    """Parse a caption back into its objects: a list of
    ``{"shape", "colour", "size" (None if unstated), "relation": None | {"relation", "target"}}``.

    Tolerates a ``"<Name> style, "`` prefix, case, surrounding whitespace and a final period.
    Raises ``ValueError`` for text that is not a caption of this domain.
    """
    t = _PREFIX_RE.sub("", text.strip(), count=1).strip().rstrip(".").strip().lower()
    t = re.sub(r"\s+", " ", t)
    if not t:
        raise ValueError(f"empty caption: {text!r}")
    out: list[dict] = []
    for clause in re.split(r",?\s+and\s+|,\s+", t):
        m = _CLAUSE_RE.match(clause.strip())
        if not m:
            raise ValueError(f"not a caption of the procedural domain: {text!r} (at {clause!r})")
        size, colour, shape, rel, size2, colour2, shape2 = m.groups()
        first = {"shape": shape, "colour": colour, "size": size, "relation": None}
        out.append(first)
        if rel:
            first["relation"] = {"relation": rel, "target": len(out)}
            out.append({"shape": shape2, "colour": colour2, "size": size2, "relation": None})
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Implicit shape test in box coordinates ``u, v`` in [-0.5, 0.5] (v downwards)."""
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "square":
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if shape == "triangle":  # apex up, base at the bottom
        return (v <= 0.5) & (np.abs(u) <= (v + 0.5) / 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 0.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return (np.minimum(au, av) <= CROSS_ARM / 2) & (np.maximum(au, av) <= 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def top_edge(shape: str, u: float) -> float:
    """The ``v`` of the shape's top boundary at horizontal box coordinate ``u`` (|u| < 0.5)."""
    au = abs(u)
    if shape == "circle":
        return -float(np.sqrt(max(0.25 - u * u, 0.0)))
    if shape == "square":
        return -0.5
    if shape == "triangle":
        return 2 * au - 0.5
    if shape == "diamond":
        return au - 0.5
    if shape == "cross":
        return -0.5 if au <= CROSS_ARM / 2 else -CROSS_ARM / 2
    raise ValueError(f"unknown shape {shape!r}")


def sample_grid(size: int, ss: int) -> np.ndarray:
    """Canvas-unit coordinates of the sub-sample centres of a ``size`` canvas, ``ss`` per pixel."""
    return (np.arange(size * ss, dtype=np.float64) + 0.5) / (size * ss)


def coverage_mask(pred: Callable[[np.ndarray, np.ndarray], np.ndarray], size: int, ss: int = 4) -> np.ndarray:
    """Boolean supersampled mask ``[size*ss, size*ss]`` of ``pred(x, y)`` (canvas units)."""
    g = sample_grid(size, ss)
    return pred(g[None, :], g[:, None])


def downsample(mask_ss: np.ndarray, ss: int) -> np.ndarray:
    """Box-filter a supersampled map down by ``ss`` (exact area coverage for a boolean mask)."""
    h, w = mask_ss.shape[0] // ss, mask_ss.shape[1] // ss
    return mask_ss.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float64)


def object_mask(obj: SceneObject, size: int, ss: int = 4, grow: float = 0.0) -> np.ndarray:
    """Supersampled boolean mask of one object; ``grow`` scales its box (e.g. 0.1 = 10% larger)."""
    s = obj.scale * (1 + grow)
    return coverage_mask(lambda x, y: inside_shape(obj.shape, (x - obj.cx) / s, (y - obj.cy) / s), size, ss)


def render_layers(scene: Scene, size: int, ss: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per object: ``(alpha float64[H,W] in [0,1], rgb float64[3])``, in drawing order."""
    return [(downsample(object_mask(o, size, ss), ss), np.asarray(o.rgb, np.float64)) for o in scene.objects]


def composite(base: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """``base * (1 - alpha) + colour * alpha`` (colour: rgb or an image)."""
    a = alpha[..., None]
    return base * (1 - a) + np.asarray(colour, np.float64) * a


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(img, 0, 255) + 0.5).astype(np.uint8)


def render(scene: Scene, size: int = 32, ss: int = 4) -> np.ndarray:
    """Render a scene to ``np.uint8[size, size, 3]`` (antialiased, plain light background)."""
    img = np.empty((size, size, 3), np.float64)
    img[:] = scene.background
    for alpha, rgb in render_layers(scene, size, ss):
        img = composite(img, alpha, rgb)
    return to_uint8(img)


def scene_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of stream ``stream``: a pure function of the three."""
    return np.random.default_rng([int(seed), int(stream), int(index)])
