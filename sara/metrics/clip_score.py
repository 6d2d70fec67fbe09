"""CLIP score: 100 × cosine(image embedding, text embedding), averaged over images.

One code path for both worlds: an ``open_clip`` model loaded from a local folder.

* real: CLIP ViT-L/14 with OpenAI's weights (the paper's choice) — open_clip ``ViT-L-14`` /
  ``pretrained='openai'``; the folder is either an open_clip *local-dir* (``open_clip_config.json``
  + weights, e.g. ``huggingface-cli download timm/vit_large_patch14_clip_224.openai``) or a folder
  holding just a checkpoint (OpenAI's ``ViT-L-14.pt`` or ``open_clip_pytorch_model.bin``), built as
  ``ViT-L-14`` with QuickGELU. Located by :func:`sara.metrics.weights.resolve_real` (config key
  ``eval.clip_score.weights``, env ``SARA_CLIP_PATH``, ``$SARA_WEIGHTS_DIR/clip-vit-large-patch14``).
* embedded: ``sara/zoo/evaluators/clip`` — an open_clip local-dir of the suite's small CLIP-style
  model plus its word tokenizer (``sara_tokenizer.json``).

No clamping at 0 (torchmetrics' ``CLIPScore`` clamps; for ViT-L/14 on real images the cosine is
positive anyway, for the embedded model a mismatching caption can score below 0).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .weights import resolve_real

__all__ = ["ClipModel", "load_clip", "clip_score", "clip_scores", "load_images"]

REAL_ARCH = "ViT-L-14"


@contextlib.contextmanager
def quiet_open_clip():
    """open_clip logs every loading step on the root logger at INFO (shown under Hydra)."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(old)


def load_images(items) -> list[Image.Image]:
    """PIL images (RGB) from PIL images, uint8 arrays or paths."""
    out = []
    for x in items:
        if isinstance(x, Image.Image):
            out.append(x.convert("RGB"))
        elif isinstance(x, np.ndarray):
            out.append(Image.fromarray(x).convert("RGB"))
        else:
            with Image.open(x) as im:
                out.append(im.convert("RGB"))
    return out


@dataclass
class ClipModel:
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    device: str = "cpu"
    source: str = ""
    info: dict = field(default_factory=dict)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, device="cpu", arch: str = REAL_ARCH, name: str | None = None) -> "ClipModel":
        """Load an open_clip model from a local folder (see module docstring)."""
        path = Path(path)
        with quiet_open_clip():
            return cls._from_dir(path, device, arch, name)

    @classmethod
    def _from_dir(cls, path: Path, device, arch: str, name: str | None) -> "ClipModel":
        import open_clip

        if (path / "open_clip_config.json").is_file():
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device=device)
            tok_file = path / "sara_tokenizer.json"
            if tok_file.is_file():
                from .embedded import WordTokenizer

                tokenizer = WordTokenizer.load(tok_file)
            else:
                tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        else:
            ckpts = sorted(p for p in path.iterdir() if p.suffix in (".pt", ".bin", ".pth", ".safetensors")) if path.is_dir() else [path]
            if not ckpts:
                raise FileNotFoundError(f"CLIP: no open_clip_config.json and no checkpoint (.pt/.bin/.safetensors) in {path}")
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(ckpts[0]), device=device, force_quick_gelu=True
            )
            tokenizer = open_clip.get_tokenizer(arch)
        model.eval()
        return cls(model, preprocess, tokenizer, name or path.name, str(device), str(path))

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 64) -> torch.Tensor:
        feats = []
        for i in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im) for im in load_images(images[i : i + batch_size])]).to(self.device)
            f = self.model.encode_image(batch).float()
            feats.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(feats) if feats else torch.zeros(0)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        feats = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            f = self.model.encode_text(tok).float()
            feats.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(feats) if feats else torch.zeros(0)


def load_clip(kind: str = "embedded", device="cpu", weights: str | os.PathLike | None = None) -> ClipModel:
    """``kind="embedded"``: the zoo's CLIP-style model (``weights``: another zoo root);
    ``kind="real"``: CLIP ViT-L/14 (OpenAI) from ``weights`` or the default locations, else a
    :class:`~sara.metrics.weights.MissingWeightsError` naming what to download and where."""
    if kind == "embedded":
        from .embedded import embedded_clip_dir

        return ClipModel.from_dir(embedded_clip_dir(weights), device=device, name="sara-clip")
    if kind == "real":
        return ClipModel.from_dir(resolve_real("clip", weights), device=device, name="clip-vit-l-14-openai")
    raise ValueError(f"unknown CLIP kind {kind!r}: use 'embedded' or 'real'")


def clip_scores(images, texts: Sequence[str], model: ClipModel, batch_size: int = 64) -> np.ndarray:
    """Per-image 100 × cos(image, its text)."""
    if len(images) != len(texts):
        raise ValueError(f"CLIP score: {len(images)} images but {len(texts)} texts")
    if len(images) == 0:
        raise ValueError("CLIP score: no images")
    fi = model.encode_images(images, batch_size)
    ft = model.encode_texts(list(texts))
    return (100.0 * (fi * ft).sum(-1)).cpu().numpy().astype(np.float64)


def clip_score(images, texts: Sequence[str], model: ClipModel, batch_size: int = 64) -> float:
    """Mean over images of 100 × cos(image, text) — the paper's CLIP score."""
    return float(clip_scores(images, texts, model, batch_size).mean())
