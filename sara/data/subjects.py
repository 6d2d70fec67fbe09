"""Subjects for customisation (DreamBooth / Textual Inversion) and their folder layout.

**Embedded subjects.** Three patterned objects the pre-training never shows (its objects are
single flat colours from :data:`sara.data.procedural.COLOURS`); each keeps one shape, one pattern
and two colours, a pair no object of the domain carries:

=================  ===========  =================================================================
subject            class noun   look
=================  ===========  =================================================================
striped_circle     circle       horizontal black and orange stripes (five bands)
twotone_square     square       left half magenta, right half teal
dotted_diamond     diamond      navy with a 3x3 grid of lime dots
=================  ===========  =================================================================

Each subject has :data:`N_IMAGES` images (position, size jitter and background vary; the subject
does not), written at 64 px by :func:`write_subjects` as a pure function of the seed.

**Folder layout** (DreamBooth's ``dataset/`` of google/dreambooth)::

    <root>/<subject>/*.png|*.jpg      the subject's images (no captions: the prompt is built
                                      from the identifier and the class noun)
    <root>/<subject>/class_noun.txt   the class noun, one word or phrase (what write_subjects writes)
    <root>/prompts_and_classes.txt    or: DreamBooth's own file, lines ``subject_name,class``

The class noun may also be given directly (``data.class_noun``). A folder with no images or no
class noun raises :class:`~sara.data.folder.DatasetError` naming the folder and what to add.

**Identifier.** :data:`IDENTIFIER` (``sks``, DreamBooth's rare token) is one token of the tiny
backbone's tokenizer that no pre-training caption uses (:func:`check_identifier` tests a tokenizer).
Instance prompts are ``"a sks circle"``; class prompts ``"a circle"`` (DreamBooth's) or, in the
domain's caption language, ``"a large red circle"`` (:func:`described_class_prompts`).

**Ground truth.** :func:`detect_subject` finds a subject in an image by its pattern: a connected
foreground blob made of two colour groups near the subject's colours, laid out as the subject's
pattern (the domain's objects are flat; two separate objects are never one blob).
:func:`validate_detector` measures it on renders. It gives the subject-fidelity score and the
language-drift check of :mod:`sara.customisation`; :data:`GROUND_TRUTH` names its version.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sara.io import atomic_dir

from .folder import DatasetError
from .styles import png_bytes
from .procedural import (BACKGROUND, BACKGROUND_JITTER, MARGIN, SceneObject, composite, coverage_mask,
                         downsample, inside_shape, render, sample_scene, scene_rng, to_uint8)

IDENTIFIER = "sks"
N_IMAGES = 5
SUBJECT_RESOLUTION = 64
CLASS_FILE = "class_noun.txt"
DREAMBOOTH_CLASSES = "prompts_and_classes.txt"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MARKER = ".sara_subjects.json"
SUBJECTS_VERSION = 2
_STREAM = 300  # rng streams 300.. (styles use 100..154, the domain 0/1)


@dataclass(frozen=True)
class SubjectSpec:
    """One embedded subject: its shape (= class noun), two colours and a pattern."""

    name: str
    shape: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    pattern: str  # stripes | halves | dots

    @property
    def class_noun(self) -> str:
        return self.shape

    def pattern_b(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Where (box coordinates in [-0.5, 0.5]) the subject takes ``colour_b``."""
        if self.pattern == "stripes":  # five horizontal bands: a b a b a
            return (np.floor((v + 0.5) * 5).astype(int) % 2) == 1
        if self.pattern == "halves":
            return u > 0
        if self.pattern == "dots":  # 3x3 grid of dots of radius 0.09
            cu = np.round(u / 0.25).clip(-1, 1) * 0.25
            cv = np.round(v / 0.25).clip(-1, 1) * 0.25
            return (u - cu) ** 2 + (v - cv) ** 2 <= 0.09 ** 2
        raise ValueError(f"unknown pattern {self.pattern!r}")


SUBJECTS: dict[str, SubjectSpec] = {
    s.name: s for s in (
        SubjectSpec("striped_circle", "circle", (35, 35, 35), (250, 130, 20), "stripes"),
        SubjectSpec("twotone_square", "square", (225, 50, 150), (20, 140, 130), "halves"),
        SubjectSpec("dotted_diamond", "diamond", (30, 35, 110), (165, 235, 45), "dots"),
    )
}
SUBJECT_NAMES = tuple(SUBJECTS)


def _check_subject(name: str) -> SubjectSpec:
    if name not in SUBJECTS:
        raise ValueError(f"unknown embedded subject {name!r}; known: {', '.join(SUBJECTS)}")
    return SUBJECTS[name]


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def subject_layers(spec: SubjectSpec, cx: float, cy: float, scale: float, size: int,
                   ss: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of colour a and colour b (float [H, W] each) of the subject at ``(cx, cy)``."""
    inside = coverage_mask(lambda x, y: inside_shape(spec.shape, (x - cx) / scale, (y - cy) / scale), size, ss)
    b = coverage_mask(lambda x, y: spec.pattern_b((x - cx) / scale, (y - cy) / scale), size, ss)
    return downsample(inside & ~b, ss), downsample(inside & b, ss)


def render_subject(spec: SubjectSpec, rng: np.random.Generator, size: int = SUBJECT_RESOLUTION,
                   context: int = 0, large: bool | None = None) -> np.ndarray:
    """One image of the subject (``uint8[size, size, 3]``) at a random place and size; with
    ``context`` (0-2) other, ordinary objects of the domain drawn around it (they never overlap
    it). ``large``: force the subject's size (None: large 80% of the time)."""
    if large is None:
        large = rng.random() < 0.8
    scale = (0.46 if large else 0.30) + float(rng.uniform(-0.02, 0.02))
    bg = tuple(int(v) for v in np.array(BACKGROUND) + rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, 3))
    for _ in range(200):  # place the subject so that the context objects fit beside it
        lo, hi = MARGIN + scale / 2, 1 - MARGIN - scale / 2
        cx, cy = (float(v) for v in rng.uniform(lo, hi, 2))
        others: list[SceneObject] = []
        if context:
            sc = sample_scene(rng, n_objects=min(3, context + 1))
            box = (cx - scale / 2 - 0.05, cy - scale / 2 - 0.05, cx + scale / 2 + 0.05, cy + scale / 2 + 0.05)
            others = [o for o in sc.objects[1:]
                      if o.box[2] <= box[0] or o.box[0] >= box[2] or o.box[3] <= box[1] or o.box[1] >= box[3]]
            if len(others) < context:
                continue
        break
    img = np.empty((size, size, 3), np.float64)
    img[:] = bg
    if others:
        from .procedural import Scene
        ctx = render(Scene(tuple(others), None, bg), size).astype(np.float64)
        img = ctx
    a, b = subject_layers(spec, cx, cy, scale, size)
    img = composite(img, a, spec.colour_a)
    img = composite(img, b, spec.colour_b)
    return to_uint8(img)


def subject_image(name: str, index: int, seed: int = 0, size: int = SUBJECT_RESOLUTION) -> np.ndarray:
    """Reference image ``index`` of subject ``name``: a pure function of ``(seed, name, index)``."""
    spec = _check_subject(name)
    rng = scene_rng(seed, _STREAM + SUBJECT_NAMES.index(name), index)
    return render_subject(spec, rng, size, context=0, large=True if index < 3 else None)


def heldout_subject_image(name: str, index: int, seed: int = 0, size: int = SUBJECT_RESOLUTION,
                          context: int = 0) -> np.ndarray:
    """Renders of a subject never written to its folder (evaluator validation)."""
    spec = _check_subject(name)
    rng = scene_rng(seed, _STREAM + 50 + SUBJECT_NAMES.index(name), 1000 * context + index)
    return render_subject(spec, rng, size, context=context)


# --------------------------------------------------------------------------------------------
# writing and reading folders
# --------------------------------------------------------------------------------------------
def write_subjects(root: str | os.PathLike, seed: int = 0, names: Sequence[str] | None = None,
                   n_images: int = N_IMAGES) -> dict[str, Path]:
    """Write ``root/<subject>/00.png ...`` + ``class_noun.txt`` for each embedded subject,
    atomically (built under a temporary name, then renamed); byte-identical for one seed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (SUBJECT_NAMES if names is None else names):
        spec = _check_subject(name)

        with atomic_dir(root / name) as tmp:
            for i in range(n_images):
                (tmp / f"{i:02d}.png").write_bytes(png_bytes(subject_image(name, i, seed)))
            (tmp / CLASS_FILE).write_text(spec.class_noun + "\n", encoding="utf-8")
            (tmp / MARKER).write_text(json.dumps({"name": name, "seed": int(seed), "count": n_images,
                                                  "version": SUBJECTS_VERSION}, sort_keys=True) + "\n")
        out[name] = root / name
    return out


def ensure_subjects(root: str | os.PathLike, seed: int = 0, names: Sequence[str] | None = None) -> dict[str, Path]:
    """(Re)write only the embedded subject folders that are missing or from another seed/version;
    a folder without the suite's marker (your own images) is left alone."""
    root = Path(root)
    todo = []
    for name in (SUBJECT_NAMES if names is None else names):
        _check_subject(name)
        m = root / name / MARKER
        if not (root / name).exists():
            todo.append(name)
        elif m.is_file():
            try:
                d = json.loads(m.read_text())
            except ValueError:
                d = {}
            if d != {"name": name, "seed": int(seed), "count": N_IMAGES, "version": SUBJECTS_VERSION}:
                todo.append(name)
    if todo:
        write_subjects(root, seed, todo)
    return {n: root / n for n in (SUBJECT_NAMES if names is None else names)}


def subject_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a subject folder (sorted); a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"subject folder not found: {folder} (expected <root>/<subject>/ holding the "
                           f"subject's images, DreamBooth's layout)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DatasetError(f"subject folder {folder} holds no images ({', '.join(IMAGE_EXTS)}); put the "
                           "subject's 3-6 photos there")
    return files


def read_class_noun(folder: str | os.PathLike, class_noun: str | None = None) -> str:
    """The subject's class noun: ``class_noun`` if given, else ``<folder>/class_noun.txt``, else the
    ``subject,class`` line of DreamBooth's ``<root>/prompts_and_classes.txt``."""
    folder = Path(folder)
    if class_noun is not None and str(class_noun).strip():
        return str(class_noun).strip()
    f = folder / CLASS_FILE
    if f.is_file():
        noun = f.read_text(encoding="utf-8").strip()
        if not noun:
            raise DatasetError(f"{f} is empty: write the subject's class noun in it (e.g. 'dog')")
        return noun.splitlines()[0].strip()
    db = folder.parent / DREAMBOOTH_CLASSES
    if db.is_file():
        for line in db.read_text(encoding="utf-8").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0] == folder.name and parts[1]:
                return parts[1]
    raise DatasetError(f"no class noun for subject folder {folder}: write it to {f} (one line, e.g. 'dog'), "
                       f"list '{folder.name},<class>' in {db}, or set data.class_noun")


class SubjectDataset:
    """The instance images of one subject as training items
    ``{"pixel_values": [3, R, R] in [-1, 1], "prompt": "a <identifier> <class noun>"}``."""

    def __init__(self, folder: str | os.PathLike, resolution: int, identifier: str = IDENTIFIER,
                 class_noun: str | None = None):
        from .folder import load_rgb, resize_crop

        self.folder = Path(folder)
        self.files = subject_images(self.folder)
        self.class_noun = read_class_noun(self.folder, class_noun)
        self.identifier = identifier
        self.prompt = instance_prompt(identifier, self.class_noun)
        self.resolution = int(resolution)
        self._images = []
        for p in self.files:
            try:
                self._images.append(np.asarray(resize_crop(load_rgb(p), self.resolution)))
            except Exception as e:  # PIL raises many types for broken files
                raise DatasetError(f"{p} is not a readable image: {type(e).__name__}: {e}") from None

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        return self._images[index]

    def __getitem__(self, index: int) -> dict:
        from .domain import to_tensor

        return {"pixel_values": to_tensor(self._images[index]), "prompt": self.prompt}


def instance_prompt(identifier: str, class_noun: str) -> str:
    return f"a {identifier} {class_noun}"


def class_prompt(class_noun: str) -> str:
    return f"a {class_noun}"


def described_class_prompts(class_noun: str, n: int, seed: int = 0) -> list[str]:
    """``n`` class prompts in the embedded domain's caption language, ``"a <size> <colour>
    <class>"`` (``"a large red circle"``): the pre-training captions always state a size and a
    colour, and the tiny backbone answers a bare ``"a circle"`` mostly with an empty canvas. Every
    size x colour pair comes once per round of 14, in an order drawn from ``seed``."""
    from .procedural import COLOUR_NAMES

    pairs = [(size, colour) for size in ("small", "large") for colour in COLOUR_NAMES]
    out: list[str] = []
    for r in range((int(n) + len(pairs) - 1) // len(pairs)):
        order = scene_rng(seed, _STREAM + 90, r).permutation(len(pairs))
        out += [f"a {pairs[i][0]} {pairs[i][1]} {class_noun}" for i in order]
    return out[:int(n)]


def check_identifier(tokenizer, identifier: str = IDENTIFIER) -> int:
    """The token id of ``identifier`` if the tokenizer keeps it as one token, else a ValueError."""
    ids = tokenizer(identifier, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"identifier {identifier!r} is split into {len(ids)} tokens by this tokenizer "
                         f"({tokenizer.convert_ids_to_tokens(ids)}); pick a rare word it keeps whole")
    return int(ids[0])


# --------------------------------------------------------------------------------------------
# ground truth: is the subject in an image?
# --------------------------------------------------------------------------------------------
def foreground(img: np.ndarray, min_distance: float = 40.0) -> np.ndarray:
    """Pixels (bool [H, W]) farther than ``min_distance`` (RGB) from the median colour of the
    image's border: what is drawn on the domain's plain background."""
    x = np.asarray(img, np.float64)[..., :3]
    bg = np.median(np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]]), axis=0)
    return np.linalg.norm(x - bg, axis=-1) > min_distance


#: A class image whose foreground covers less than this share of its pixels shows no object: the
#: domain's smallest objects (a small triangle or cross, box side 0.26) cover about 3% of a 32 px
#: canvas.
BLANK_FOREGROUND = 0.02


def is_blank(img, max_foreground: float = BLANK_FOREGROUND) -> bool:
    """Whether an image (PIL or uint8 array) of the embedded domain shows no object: its
    :func:`foreground` covers less than ``max_foreground`` of the pixels."""
    x = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
    return float(foreground(x).mean()) < max_foreground


#: The ground truth's version, recorded with every subject-fidelity number (``metrics.ground_truth``
#: of a customisation run): results of another version are not compared with these.
GROUND_TRUTH = "pattern-2"
_BOX_JITTER = [(a, b, c, d) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) for d in (-1, 0, 1)]


def detect_subject(img: np.ndarray, spec: SubjectSpec, tol: float = 110.0, min_share: float = 0.08,
                   min_area: float = 0.02, min_contrast: float = 60.0, min_agreement: float = 0.72) -> dict:
    """Whether ``img`` (uint8 [H, W, 3]) shows ``spec``, by its pattern: some connected foreground
    blob (pixels farther than 40 from the border's median colour) covering at least ``min_area`` of
    the image whose pixels split into two colour groups (2-means started from the subject's two
    colours) that each cover ``min_share`` of it, lie within RGB distance ``tol`` of the subject's
    colours and ``min_contrast`` apart, and sit where the subject's pattern puts them: the
    balanced agreement between the pixels' groups and :meth:`SubjectSpec.pattern_b` drawn over the
    blob's bounding box is at least ``min_agreement`` (0.5 = chance; pixels mixed by
    anti-aliasing, near both groups, are left out). Generated subjects keep their pattern while
    their colours drift toward the base model's palettes, hence the wide colour tolerance; a flat
    object, another pattern in the same colours, or the pattern in other colours are rejected.
    Returns ``{"present", "score", "agreement", "share_a", "share_b"}`` of the best blob; ``score`` =
    the agreement where the colours match (else 0)."""
    from scipy import ndimage

    x = np.asarray(img, np.float64)[..., :3]
    h, w = x.shape[:2]
    colour_a, colour_b = np.asarray(spec.colour_a, np.float64), np.asarray(spec.colour_b, np.float64)
    labels, n = ndimage.label(foreground(x))
    best = {"present": False, "score": 0.0, "agreement": 0.0, "share_a": 0.0, "share_b": 0.0}
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        if len(ys) < min_area * h * w:
            continue
        px = x[ys, xs]
        ca, cb = colour_a, colour_b
        for _ in range(5):  # 2-means from the subject's colours
            is_b = np.linalg.norm(px - cb, axis=1) < np.linalg.norm(px - ca, axis=1)
            if is_b.all() or not is_b.any():
                break
            ca, cb = px[~is_b].mean(0), px[is_b].mean(0)
        share_b = float(is_b.mean())
        contrast = float(np.linalg.norm(ca - cb))
        clear = np.abs(np.linalg.norm(px - ca, axis=1) - np.linalg.norm(px - cb, axis=1)) >= 0.3 * max(contrast, 1e-6)
        agreement = 0.0
        for d0, d1, e0, e1 in _BOX_JITTER:  # the blob's box is known to a pixel: anti-aliased rims
            x0, x1, y0, y1 = xs.min() + d0, xs.max() + 1 + d1, ys.min() + e0, ys.max() + 1 + e1
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            expect_b = spec.pattern_b((xs + 0.5 - x0) / (x1 - x0) - 0.5, (ys + 0.5 - y0) / (y1 - y0) - 0.5)
            on_b, off_b = expect_b & clear, ~expect_b & clear
            if on_b.any() and off_b.any():
                agreement = max(agreement, 0.5 * float(is_b[on_b].mean() + (~is_b[off_b]).mean()))
        colours = np.linalg.norm(ca - colour_a) <= tol and np.linalg.norm(cb - colour_b) <= tol
        r = {"present": bool(colours and min(share_b, 1 - share_b) >= min_share and contrast >= min_contrast
                             and agreement >= min_agreement),
             "score": agreement if colours else 0.0, "agreement": agreement, "share_a": 1 - share_b,
             "share_b": share_b}
        if (r["present"], r["score"]) > (best["present"], best["score"]):
            best = r
    return best


def validate_detector(n: int = 40, seed: int = 0, size: int = 32, colour_shift: float = 60.0) -> dict:
    """How :func:`detect_subject` does on renders never in the subject folders (``size`` px, the
    tiny world's): per subject, the share of its own renders found (alone, beside one and beside
    two ordinary objects; and with each colour moved by ``colour_shift`` in a random RGB direction,
    as generated colours drift), and the share wrongly found in renders of the other subjects, of
    the subject's shape and colours with another pattern, and of ``10 n`` scenes of the domain."""
    import dataclasses

    from .procedural import render as render_scene

    scenes = [render_scene(sample_scene(scene_rng(seed, _STREAM + 80, i)), size) for i in range(10 * n)]
    out: dict = {"n": n, "seed": seed, "size": size, "colour_shift": colour_shift, "ground_truth": GROUND_TRUTH,
                 "per_subject": {}}
    for name, spec in SUBJECTS.items():
        def found(images, spec=spec):
            return float(np.mean([detect_subject(im, spec)["present"] for im in images]))

        rng = scene_rng(seed, _STREAM + 81, SUBJECT_NAMES.index(name))
        shifted = []
        for i in range(n):
            d = rng.normal(size=(2, 3))
            d *= colour_shift / np.linalg.norm(d, axis=1, keepdims=True)
            a, b = (tuple(int(c) for c in np.clip(np.asarray(col) + dd, 0, 255))
                    for col, dd in ((spec.colour_a, d[0]), (spec.colour_b, d[1])))
            shifted.append(render_subject(dataclasses.replace(spec, colour_a=a, colour_b=b), rng, size))
        other_patterns = [render_subject(dataclasses.replace(spec, pattern=p), rng, size)
                          for p in ("stripes", "halves", "dots") if p != spec.pattern for _ in range(n)]
        out["per_subject"][name] = {
            **{f"found_{k}": found([heldout_subject_image(name, i, seed, size, context=c) for i in range(n)])
               for c, k in enumerate(("alone", "one_object", "two_objects"))},
            "found_colour_shifted": found(shifted),
            "false_other_subjects": found([heldout_subject_image(o, i, seed, size, context=c)
                                           for o in SUBJECT_NAMES if o != name for c in (0, 1) for i in range(n)]),
            "false_other_pattern": found(other_patterns),
            "false_domain_scenes": found(scenes)}
    per = out["per_subject"].values()
    out["found_min"] = min(min(r["found_alone"], r["found_one_object"]) for r in per)
    out["false_max"] = max(max(r["false_other_subjects"], r["false_other_pattern"], r["false_domain_scenes"])
                           for r in per)
    return out


def subject_spec(name: str) -> SubjectSpec | None:
    """The embedded subject called ``name`` (None for a folder of your own: no ground truth)."""
    return SUBJECTS.get(name)


def fidelity(images: Sequence, spec: SubjectSpec, detect: Callable = detect_subject) -> tuple[float, float]:
    """(share of images showing the subject, mean score) over images (PIL or arrays)."""
    res = [detect(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im), spec) for im in images]
    if not res:
        raise ValueError("subject fidelity: no images")
    return float(np.mean([r["present"] for r in res])), float(np.mean([r["score"] for r in res]))
