"""Loader for any image-caption folder in the paper's format (the CIVITAI sets, our style sets):

    <root>/metadata.jsonl   one JSON object a line: {"file_name": "0000.png", "text": "a caption"}
    <root>/0000.png ...     the images (any format / size / mode PIL reads; subfolders allowed)

Extra keys in a line are ignored; blank lines are skipped. Everything is validated when the
dataset is built; a problem raises :class:`DatasetError` naming the path, and where it applies the
line number and key.

Images are converted to RGB (transparent areas composited on white, EXIF orientation applied),
resized so the shorter side equals ``resolution`` (box filter when shrinking, i.e. area averaging;
bicubic when enlarging) and center-cropped to a square (``center_crop=False``: the whole image is
resized to the square instead, no crop). No random flip: it would contradict captions that state
"left of" / "right of".
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from .domain import to_tensor

METADATA = "metadata.jsonl"


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message names the path (and line / key)."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied, alpha composited on white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, im).convert("RGB")
        return im.convert("RGB")


def resize_crop(im: Image.Image, resolution: int, center_crop: bool = True) -> Image.Image:
    w, h = im.size
    if not center_crop:
        resample = Image.Resampling.BOX if min(w, h) >= resolution else Image.Resampling.BICUBIC
        return im.resize((resolution, resolution), resample)
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        im = im.resize((nw, nh), resample)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return im.crop((left, top, left + resolution, top + resolution))


def read_metadata(root: str | os.PathLike) -> list[tuple[int, str, str]]:
    """Validate ``root/metadata.jsonl`` and return ``(line_number, file_name, text)`` entries."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset path is not a folder: {root}")
    meta = root / METADATA
    if not meta.is_file():
        raise DatasetError(
            f"{meta}: missing {METADATA} (expected one JSON object a line: "
            '{"file_name": "0000.png", "text": "a caption"})'
        )
    try:
        raw = meta.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{meta}: not UTF-8 text ({e})") from None
    entries = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta}, line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise DatasetError(f"{meta}, line {lineno}: expected a JSON object, got {type(d).__name__}")
        for key in ("file_name", "text"):
            if key not in d:
                raise DatasetError(f"{meta}, line {lineno}: missing key {key!r}")
            if not isinstance(d[key], str):
                raise DatasetError(f"{meta}, line {lineno}: key {key!r} must be a string, got {type(d[key]).__name__}")
        entries.append((lineno, d["file_name"], d["text"]))
    if not entries:
        raise DatasetError(f"{meta}: empty metadata file (no entries)")
    return entries


class ImageCaptionFolder(Dataset):
    """Map-style dataset over an images + ``metadata.jsonl`` folder.

    Items: ``{"pixel_values": float32 [3, R, R] in [-1, 1], "prompt": caption_prefix + text}``.
    ``verify``: check at construction that every listed file is a readable image (PIL ``verify``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        caption_prefix: str | None = None,
        center_crop: bool = True,
        verify: bool = True,
    ):
        self.root = Path(root)
        self.resolution = int(resolution)
        self.caption_prefix = caption_prefix or ""
        self.center_crop = center_crop
        meta = self.root / METADATA
        self.files: list[Path] = []
        self.texts: list[str] = []
        for lineno, fn, text in read_metadata(self.root):
            path = self.root / fn
            if not path.is_file():
                raise DatasetError(f"{meta}, line {lineno}: listed file {fn!r} not found (looked for {path})")
            if verify:
                try:
                    with Image.open(path) as im:
                        im.verify()
                except Exception as e:  # PIL raises many types for broken files
                    raise DatasetError(
                        f"{path} (listed in {meta}, line {lineno}) is not a readable image: {type(e).__name__}: {e}"
                    ) from None
            self.files.append(path)
            self.texts.append(text)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def prompts(self) -> list[str]:
        return [self.caption_prefix + t for t in self.texts]

    def image(self, index: int) -> np.ndarray:
        """The resized, cropped image ``index`` as ``uint8[R, R, 3]``."""
        path = self.files[index]
        try:
            im = load_rgb(path)
        except Exception as e:
            raise DatasetError(f"{path} is not a readable image: {type(e).__name__}: {e}") from None
        return np.asarray(resize_crop(im, self.resolution, self.center_crop))

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": to_tensor(self.image(index)), "prompt": self.caption_prefix + self.texts[index]}

    def __repr__(self) -> str:
        return f"ImageCaptionFolder({str(self.root)!r}, resolution={self.resolution}, n={len(self)}, caption_prefix={self.caption_prefix!r})"
