"""Camera-motion clips of the embedded world and the loader of any captioned video folder.

**Procedural clips.** A scene of the procedural domain (:mod:`sara.data.procedural`) filmed by a
camera that zooms in, zooms out, pans or stays still. The camera is a square window on the scene
canvas (centre ``(x, y)``, zoom ``z``: the window side is ``1 / z``); frame ``k`` renders the scene
through the window at time ``k / (F - 1)`` exactly (the objects are transformed, then rasterised
with the domain's antialiased renderer, so no resampling blur). Per clip the speed is drawn from
:data:`MOTION_RANGES`:

* ``zoom_in`` / ``zoom_out``: zoom from 1 to ``Z`` (or back), ``Z`` in [1.45, 1.8], about the
  canvas centre;
* ``pan_right`` / ``pan_left`` (``tilt_up`` / ``tilt_down``): zoom 1.35, the window slides by
  ``D`` in [0.18, 0.26] canvas units (the content moves the other way);
* ``static``: zoom in [1, 1.35], centre fixed; the objects stay put.
* ``objects`` (the motion prior's data): static camera, every object moves on its own straight
  line (up to 0.2 canvas units over the clip).

The caption is the scene's caption (content only, as in AnimateDiff's MotionLoRA data); the motion
is the folder's (``metadata.jsonl`` carries it as ``"motion"``).

**Folder format** (:class:`VideoCaptionFolder`), the image folder's format with clips::

    <root>/metadata.jsonl   {"file_name": "00000.png", "text": "a caption", "motion": "zoom_in"}
    <root>/00000.png        a clip: an animated PNG/GIF/WebP (read with PIL), a folder of frame
                            images (sorted by name), or a video file (.mp4 .webm .avi .mov .mkv,
                            read with imageio or PyAV when installed)

Every clip must have the same number of frames (at least ``num_frames * frame_stride``) and a
non-empty caption; a problem raises :class:`~sara.data.folder.DatasetError` naming the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from sara.io import file_lock

from .folder import METADATA, DatasetError, read_metadata, resize_crop
from .procedural import Scene, caption, render, sample_scene, scene_rng

#: Motions written by :func:`write_motion_dataset` (``objects``: moving objects, static camera).
CAMERA_MOTIONS = ("zoom_in", "zoom_out", "pan_right", "pan_left", "tilt_up", "tilt_down", "static")
#: The paper's three (App. E, Fig. 15).
PAPER_MOTIONS = ("zoom_in", "zoom_out", "pan_right")
MOTION_RANGES = {"zoom": (1.45, 1.8), "pan": (0.18, 0.26), "pan_zoom": 1.35, "static_zoom": (1.0, 1.35),
                 "object_shift": 0.2}
#: Random streams (sara.data.procedural.scene_rng) per split; the metric validation uses "val".
SPLIT_STREAMS = {"train": 20, "val": 21}
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
NUM_FRAMES = 8
FORMAT_VERSION = 2  # bumped when written clips change: older folders are rewritten


def _camera_path(motion: str, rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, zoom)`` of the camera at times ``t`` in [0, 1]."""
    one = np.ones_like(t)
    if motion in ("zoom_in", "zoom_out"):
        zmax = rng.uniform(*MOTION_RANGES["zoom"])
        # geometric interpolation: the same scale change every frame
        z = zmax ** t if motion == "zoom_in" else zmax ** (1 - t)
        return 0.5 * one, 0.5 * one, z
    if motion in ("pan_right", "pan_left", "tilt_up", "tilt_down"):
        d = rng.uniform(*MOTION_RANGES["pan"])
        z = MOTION_RANGES["pan_zoom"] * one
        off = (t - 0.5) * d
        sign = 1.0 if motion in ("pan_right", "tilt_down") else -1.0
        if motion.startswith("pan"):
            return 0.5 + sign * off, 0.5 * one, z
        return 0.5 * one, 0.5 + sign * off, z
    if motion in ("static", "objects"):
        return 0.5 * one, 0.5 * one, rng.uniform(*MOTION_RANGES["static_zoom"]) * one
    raise ValueError(f"unknown motion {motion!r}; expected one of {', '.join(CAMERA_MOTIONS + ('objects',))}")


def render_clip(scene: Scene, motion: str, rng: np.random.Generator, num_frames: int = NUM_FRAMES,
                size: int = 32) -> np.ndarray:
    """``uint8[F, size, size, 3]``: ``scene`` filmed with camera ``motion``."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    t = np.linspace(0.0, 1.0, num_frames)
    cx, cy, z = _camera_path(motion, rng, t)
    vel = np.zeros((len(scene.objects), 2))
    if motion == "objects":
        ang = rng.uniform(0, 2 * np.pi, len(scene.objects))
        mag = rng.uniform(0.05, MOTION_RANGES["object_shift"], len(scene.objects))
        vel = np.stack([np.cos(ang), np.sin(ang)], 1) * mag[:, None]
    frames = []
    for k in range(num_frames):
        objs = tuple(replace(o, cx=float((o.cx + vel[i, 0] * (t[k] - 0.5) - cx[k]) * z[k] + 0.5),
                             cy=float((o.cy + vel[i, 1] * (t[k] - 0.5) - cy[k]) * z[k] + 0.5),
                             scale=float(o.scale * z[k]))
                     for i, o in enumerate(scene.objects))
        frames.append(render(replace(scene, objects=objs), size))
    return np.stack(frames)


def make_clip(motion: str, index: int, seed: int = 0, split: str = "train", num_frames: int = NUM_FRAMES,
              size: int = 32) -> tuple[np.ndarray, str]:
    """Clip ``index`` of ``motion``: a pure function of ``(motion, index, seed, split)``."""
    stream = SPLIT_STREAMS[split] * 100 + (CAMERA_MOTIONS + ("objects",)).index(motion)
    rng = scene_rng(seed, stream, index)
    scene = sample_scene(rng)
    return render_clip(scene, motion, rng, num_frames, size), caption(scene)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def save_apng(frames: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``uint8[F, H, W, 3]`` as a lossless animated PNG (atomic). No frame duration is given:
    with one, Pillow merges identical consecutive frames into one longer frame (a still camera
    would lose frames)."""
    from PIL import Image

    path = Path(path)
    ims = [Image.fromarray(f) for f in frames]
    tmp = path.with_name(f".{path.name}.tmp")
    ims[0].save(tmp, format="PNG", save_all=True, append_images=ims[1:], loop=0)
    os.replace(tmp, path)


def write_motion_dataset(out: str | os.PathLike, motion: str, n: int = 1000, seed: int = 0, split: str = "train",
                         num_frames: int = NUM_FRAMES, size: int = 32) -> Path:
    """Write ``n`` clips of ``motion`` to ``out`` (APNGs + ``metadata.jsonl``, written last)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        frames, text = make_clip(motion, i, seed, split, num_frames, size)
        name = f"{i:05d}.png"
        save_apng(frames, out / name)
        rows.append({"file_name": name, "text": text, "motion": motion})
    tmp = out / f".{METADATA}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out / METADATA)
    (out / "dataset.json").write_text(json.dumps({"motion": motion, "n": n, "seed": seed, "split": split,
                                                  "num_frames": num_frames, "size": size,
                                                  "format": FORMAT_VERSION}, indent=1) + "\n")
    return out


def ensure_motion_dataset(root: str | os.PathLike, motion: str, n: int = 1000, seed: int = 0,
                          num_frames: int = NUM_FRAMES, size: int = 32) -> Path:
    """``root/<motion>`` with ``n`` clips; (re)written when missing or made with other settings."""
    folder = Path(root) / motion
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{motion}.lock"):  # parallel runs of a sweep share the folder
        return _ensure(folder, motion, n, seed, num_frames, size)


def _ensure(folder: Path, motion: str, n: int, seed: int, num_frames: int, size: int) -> Path:
    want = {"motion": motion, "n": n, "seed": seed, "split": "train", "num_frames": num_frames, "size": size,
            "format": FORMAT_VERSION}
    try:
        if json.loads((folder / "dataset.json").read_text()) == want and (folder / METADATA).is_file():
            return folder
    except (OSError, ValueError):
        pass
    return write_motion_dataset(folder, motion, n, seed, "train", num_frames, size)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _frames_of_image(path: Path) -> list:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [f.convert("RGB") for f in ImageSequence.Iterator(im)]


def _frames_of_video(path: Path) -> list:
    from PIL import Image

    try:
        import imageio.v3 as iio
        return [Image.fromarray(np.asarray(f)[..., :3]) for f in iio.imiter(path)]
    except ImportError:
        pass
    try:
        import av
    except ImportError:
        raise DatasetError(f"{path}: reading video files needs imageio (with its pyav plugin) or PyAV: "
                           "pip install av (or: pip install imageio[pyav]); or convert the clip to an "
                           "animated PNG / a folder of frames") from None
    with av.open(str(path)) as c:
        return [f.to_image().convert("RGB") for f in c.decode(video=0)]


def read_clip_frames(path: str | os.PathLike) -> list:
    """The frames of a clip (PIL RGB images): a frame folder, an animated image or a video."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DatasetError(f"{path}: a clip folder without frame images ({', '.join(IMAGE_EXTS)})")
        from .folder import load_rgb
        return [load_rgb(f) for f in files]
    if path.suffix.lower() in VIDEO_EXTS:
        return _frames_of_video(path)
    return _frames_of_image(path)


def count_frames(path: Path) -> int:
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if path.suffix.lower() in VIDEO_EXTS:
        return len(_frames_of_video(path))
    from PIL import Image

    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


class VideoCaptionFolder:
    """Map-style dataset over a clips + ``metadata.jsonl`` folder (format: module docstring).

    Items: ``{"pixel_values": float32 [F, 3, R, R] in [-1, 1], "prompt": caption_prefix + text}``
    with ``F = num_frames`` frames ``0, s, 2s, ...`` (``s = frame_stride``) of the clip.
    ``motion``: the clips' camera motion (from the ``"motion"`` keys; ``None`` when absent).
    """

    def __init__(self, root: str | os.PathLike, resolution: int, num_frames: int = NUM_FRAMES,
                 frame_stride: int = 1, caption_prefix: str | None = None):
        self.root = Path(root)
        self.resolution, self.num_frames, self.frame_stride = int(resolution), int(num_frames), int(frame_stride)
        if self.num_frames < 2 or self.frame_stride < 1:
            raise DatasetError(f"{self.root}: num_frames must be >= 2 and frame_stride >= 1 "
                               f"(got {num_frames}, {frame_stride})")
        self.caption_prefix = caption_prefix or ""
        meta = self.root / METADATA
        entries = read_metadata(self.root)
        raw = [json.loads(l) for l in meta.read_text(encoding="utf-8-sig").splitlines() if l.strip()]
        self.files, self.texts, motions, lengths = [], [], set(), {}
        for (lineno, fn, text), rec in zip(entries, raw):
            if not text.strip():
                raise DatasetError(f"{meta}, line {lineno}: clip {fn!r} has an empty caption ('text')")
            path = self.root / fn
            if not path.exists():
                raise DatasetError(f"{meta}, line {lineno}: listed clip {fn!r} not found (looked for {path})")
            try:
                n = count_frames(path)
            except DatasetError:
                raise
            except Exception as e:  # PIL raises many types for broken files
                raise DatasetError(f"{path} (listed in {meta}, line {lineno}) is not a readable clip: "
                                   f"{type(e).__name__}: {e}") from None
            lengths.setdefault(n, fn)
            self.files.append(path)
            self.texts.append(text)
            motions.add(rec.get("motion"))
        if len(lengths) > 1:
            desc = ", ".join(f"{fn!r} has {n}" for n, fn in sorted(lengths.items()))
            raise DatasetError(f"{self.root}: clips of mixed lengths ({desc} frames); every clip of a "
                               "folder must have the same number of frames")
        self.clip_length = next(iter(lengths))
        need = (self.num_frames - 1) * self.frame_stride + 1
        if self.clip_length < need:
            raise DatasetError(f"{self.root}: clips have {self.clip_length} frames, {need} are needed "
                               f"(num_frames={self.num_frames}, frame_stride={self.frame_stride})")
        motions.discard(None)
        if len(motions) > 1:
            raise DatasetError(f"{meta}: clips of several motions {sorted(motions)}; one folder holds one motion")
        self.motion = motions.pop() if motions else None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def prompts(self) -> list[str]:
        return [self.caption_prefix + t for t in self.texts]

    def clip(self, index: int) -> np.ndarray:
        """``uint8[F, R, R, 3]``: the frames used, resized and centre-cropped."""
        frames = read_clip_frames(self.files[index])
        frames = frames[::self.frame_stride][:self.num_frames]
        return np.stack([np.asarray(resize_crop(f, self.resolution)) for f in frames])

    def __getitem__(self, index: int) -> dict:
        import torch

        x = torch.from_numpy(self.clip(int(index))).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return {"pixel_values": x.contiguous(), "prompt": self.caption_prefix + self.texts[int(index)]}

    def __repr__(self) -> str:
        return (f"VideoCaptionFolder({str(self.root)!r}, resolution={self.resolution}, n={len(self)}, "
                f"num_frames={self.num_frames}, motion={self.motion!r})")


class ProceduralClips:
    """Map-style dataset of procedural clips generated on the fly (the motion prior's data)."""

    def __init__(self, motion: str = "objects", resolution: int = 32, num_frames: int = NUM_FRAMES, seed: int = 0,
                 split: str = "train", length: int = 1_000_000):
        self.motion, self.resolution, self.num_frames = motion, int(resolution), int(num_frames)
        self.seed, self.split, self.length = int(seed), split, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        import torch

        frames, text = make_clip(self.motion, int(index), self.seed, self.split, self.num_frames, self.resolution)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return {"pixel_values": x.contiguous(), "prompt": text}


def strip_to_clip(strip: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """A horizontal frame strip ``[H, F*W, 3]`` -> ``[F, H, W, 3]`` (square frames unless ``num_frames``)."""
    strip = np.asarray(strip)
    h, w = strip.shape[:2]
    f = num_frames or w // h
    if f < 1 or w % f:
        raise ValueError(f"a frame strip of width {w} does not split into {f} frames")
    return np.stack(np.split(strip, f, axis=1))


def clip_to_strip(frames: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(frames), axis=1)


def build_video_dataset(cfg_data, resolution: int) -> tuple[VideoCaptionFolder, Path]:
    """The dataset of a ``data`` config of kind ``camera_motion`` (procedural clips of motion
    ``name``, written under ``root`` when missing) or ``video_folder`` (``<root>/<name>``, any
    clip folder); returns ``(dataset, folder)``."""
    kind = cfg_data.get("kind")
    root, name = Path(cfg_data.get("root", "data/camera_motion")), str(cfg_data.get("name"))
    num_frames = int(cfg_data.get("num_frames", NUM_FRAMES))
    if kind == "camera_motion":
        if name not in CAMERA_MOTIONS:
            raise ValueError(f"data.name={name!r} is not a procedural camera motion ({', '.join(CAMERA_MOTIONS)}); "
                             "for your own clips use data.kind=video_folder")
        folder = ensure_motion_dataset(root, name, int(cfg_data.get("size", 1000)), int(cfg_data.get("seed", 0)),
                                       num_frames, resolution)
    else:
        folder = root / name
    ds = VideoCaptionFolder(folder, resolution, num_frames, int(cfg_data.get("frame_stride", 1)),
                            cfg_data.get("caption_prefix") or None)
    return ds, folder
