"""FID between a folder of generated images and a target dataset, through clean-fid.

* Real runs (Stable Diffusion): clean-fid's default — its TorchScript Inception-V3 and its
  ``mode="clean"`` PIL-bicubic resize to 299×299 — i.e. what ``cleanfid.fid.compute_fid(dir1,
  dir2, mode="clean")`` computes, with the weights file found by :mod:`sara.metrics.weights`
  (never downloaded implicitly).
* Embedded world: the same library (``cleanfid.fid.get_files_features``, the same data loader,
  the same clean resizer, to 32×32) with the suite's own feature extractor
  (:class:`sara.metrics.embedded.FIDNet`, ``sara/zoo/evaluators/fid_net.safetensors``), passed as
  clean-fid's ``custom_feat_extractor`` / ``model``.

Reference statistics (mean, covariance) of a target dataset are cached on disk, keyed by the
dataset path, a hash of its image files (names and bytes) and the extractor's fingerprint, and
written atomically. The Fréchet distance itself is :mod:`sara.metrics.frechet` (pure numpy/scipy).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from glob import glob
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sara.io import atomic_write_bytes

from .frechet import feature_stats, frechet_distance
from .weights import resolve_real

__all__ = [
    "FeatureExtractor",
    "inception_extractor",
    "embedded_extractor",
    "get_extractor",
    "list_images",
    "folder_features",
    "reference_stats",
    "compute_fid",
    "cache_dir",
]


class FeatureExtractor(torch.nn.Module):
    """A clean-fid feature extractor plus what the suite needs around it.

    Called by clean-fid as ``model(batch)`` with ``batch`` float ``[B, 3, H, W]`` in [0, 255]
    (already resized by ``fn_resize``) on ``device``; returns ``[B, D]`` features.
    ``fn_resize`` is clean-fid's ``custom_fn_resize`` (None = clean-fid's own clean 299 resize).
    ``fingerprint`` identifies the weights (it keys the reference-statistics cache).
    """

    def __init__(self, net: torch.nn.Module, name: str, fingerprint: str, fn_resize: Callable | None):
        super().__init__()
        self.net = net
        self.name = name
        self.fingerprint = fingerprint
        self.fn_resize = fn_resize

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)


def _file_sha(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def inception_extractor(device="cpu", weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """clean-fid's Inception-V3 (``mode="clean"``). ``weights``: the ``inception-2015-12-05.pt``
    file or its folder (default: see :mod:`sara.metrics.weights`)."""
    from cleanfid.inception_torchscript import InceptionV3W

    if weights is not None and Path(weights).is_dir():
        weights = Path(weights) / "inception-2015-12-05.pt"
    path = resolve_real("inception", weights)
    if path.name != "inception-2015-12-05.pt":
        raise ValueError(f"clean-fid loads the Inception weights by their file name; rename {path} to inception-2015-12-05.pt")
    net = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()
    return FeatureExtractor(net, "inception-v3-clean", _file_sha(path), fn_resize=None)


def _clean_resizer(size: int):
    """clean-fid's "clean" resize (PIL bicubic on float32 channels), to ``size`` instead of 299."""
    from cleanfid.resize import make_resizer

    return make_resizer("PIL", False, "bicubic", (size, size))


def embedded_extractor(device="cpu", root: str | os.PathLike | None = None) -> FeatureExtractor:
    """The embedded world's FID feature network (shipped in ``sara/zoo/evaluators``)."""
    from .embedded import load_fid_net

    net, fingerprint = load_fid_net(root, device=device)
    return FeatureExtractor(net, "sara-fidnet", fingerprint, fn_resize=_clean_resizer(net.image_size))


def get_extractor(kind: str | FeatureExtractor = "embedded", device="cpu", weights=None) -> FeatureExtractor:
    if isinstance(kind, FeatureExtractor):
        return kind.to(device)
    if kind == "embedded":
        return embedded_extractor(device, weights)
    if kind in ("inception", "real"):
        return inception_extractor(device, weights)
    raise ValueError(f"unknown FID extractor {kind!r}: use 'embedded' or 'inception'")


def list_images(fdir: str | os.PathLike) -> list[str]:
    """The image files clean-fid's ``get_folder_features`` would read, in its order."""
    from cleanfid.utils import EXTENSIONS

    fdir = str(fdir)
    if not os.path.isdir(fdir):
        raise FileNotFoundError(f"FID: image folder not found: {fdir}")
    return sorted([f for ext in EXTENSIONS for f in glob(os.path.join(fdir, f"**/*.{ext}"), recursive=True)])


def folder_features(
    fdir: str | os.PathLike,
    extractor: FeatureExtractor,
    device="cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    files: list[str] | None = None,
) -> np.ndarray:
    """Features of every image of ``fdir`` through clean-fid's loader (``mode="clean"``)."""
    from cleanfid.fid import get_files_features

    files = list_images(fdir) if files is None else files
    if len(files) < 2:
        raise ValueError(f"FID: {fdir} holds {len(files)} image(s); at least 2 are needed")
    extractor = extractor.to(device).eval()
    return get_files_features(
        files,
        model=extractor,
        num_workers=num_workers,
        batch_size=batch_size,
        device=torch.device(device),
        mode="clean",
        custom_fn_resize=extractor.fn_resize,
        fdir=str(fdir),
        verbose=False,
    )


def cache_dir() -> Path:
    root = os.environ.get("SARA_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "sara"
    return base / "fid_stats"


def _files_hash(fdir: str, files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.relpath(f, fdir).encode())
        h.update(b"\0")
        h.update(_file_sha(Path(f)).encode())
    return h.hexdigest()


def _atomic_savez(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def reference_stats(
    ref_dir: str | os.PathLike,
    extractor: FeatureExtractor,
    device="cpu",
    cache: bool | str | os.PathLike = True,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, info) of a target dataset; cached under :func:`cache_dir` (or ``cache`` if a
    path) keyed by (dataset path, image-file hash, extractor fingerprint)."""
    ref_dir = os.path.abspath(str(ref_dir))
    files = list_images(ref_dir)
    info = {
        "dataset": ref_dir,
        "n_images": len(files),
        "files_sha256": _files_hash(ref_dir, files),
        "extractor": extractor.name,
        "extractor_sha256": extractor.fingerprint,
    }
    key = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:20]
    path = None
    if cache:
        root = cache_dir() if cache is True else Path(cache)
        path = root / f"{Path(ref_dir).name}-{extractor.name}-{key}.npz"
        if path.is_file():
            try:
                z = np.load(path)
                return z["mu"], z["sigma"], {**info, "cache": str(path), "cache_hit": True}
            except Exception:  # a corrupt cache entry is recomputed
                pass
    feats = folder_features(ref_dir, extractor, device=device, batch_size=batch_size, files=files)
    mu, sigma = feature_stats(feats)
    if path is not None:
        _atomic_savez(path, mu=mu, sigma=sigma, info=np.array(json.dumps(info)))
    return mu, sigma, {**info, "cache": str(path) if path else None, "cache_hit": False}


def compute_fid(
    gen_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    extractor: str | FeatureExtractor = "embedded",
    device="cpu",
    cache: bool | str | os.PathLike = True,
    weights=None,
    batch_size: int = 64,
    return_info: bool = False,
):
    """FID between the images of ``gen_dir`` and those of ``ref_dir`` (reference stats cached)."""
    ext = get_extractor(extractor, device, weights)
    mu_r, sig_r, info = reference_stats(ref_dir, ext, device=device, cache=cache, batch_size=batch_size)
    gen_feats = folder_features(gen_dir, ext, device=device, batch_size=batch_size)
    mu_g, sig_g = feature_stats(gen_feats)
    value = frechet_distance(mu_g, sig_g, mu_r, sig_r)
    if return_info:
        return value, {**info, "n_generated": int(gen_feats.shape[0])}
    return value
