"""Metrics of generated clips (stored as horizontal frame strips, ``sara.backbones.motion``):

* ``camera_motion_accuracy``: share of clips whose estimated camera motion
  (:mod:`sara.metrics.camera_motion`) is the motion of the training data (the ``"motion"`` key of
  the dataset folder's ``metadata.jsonl``);
* ``frame_clip``: per-frame CLIP score (100 x cos(frame, prompt)), mean over frames and clips;
* ``temporal_consistency``: mean cosine similarity of the CLIP image features of consecutive
  frames (CLIP-I between frames t and t+1);
* ``frame_fid``: FID of all generated frames against the frames of the dataset's clips (at most
  ``max_reference_clips`` of them).

The CLIP model and the FID features are the embedded evaluators for frames of at most 64 px, the
real ones (CLIP ViT-L/14, Inception) above, as for images (:func:`sara.evaluate.evaluate`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

VIDEO_METRICS = ("camera_motion_accuracy", "frame_clip", "temporal_consistency", "frame_fid")


def read_strips(files: Sequence[str | os.PathLike]) -> list[np.ndarray]:
    """Clips ``uint8[F, H, W, 3]`` from frame-strip images (square frames side by side)."""
    from PIL import Image

    from sara.data.camera_motion import strip_to_clip

    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(strip_to_clip(np.asarray(im.convert("RGB"))))
    return out


def dataset_motion(dataset_root: str | os.PathLike) -> str:
    """The camera motion of a clip folder (the one ``"motion"`` value of its ``metadata.jsonl``)."""
    meta = Path(dataset_root) / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"camera_motion_accuracy: no metadata.jsonl in {dataset_root}")
    motions = {json.loads(l).get("motion") for l in meta.read_text(encoding="utf-8").splitlines() if l.strip()}
    if None in motions or len(motions) != 1:
        raise ValueError(f"camera_motion_accuracy: {meta} must give one \"motion\" for every clip "
                         f"(found {sorted(map(str, motions))})")
    return motions.pop()


def reference_frames_dir(dataset_root: str | os.PathLike, resolution: int, max_clips: int) -> Path:
    """A cached folder with the frames of the dataset's first ``max_clips`` clips (PNG)."""
    from PIL import Image

    from sara.data.camera_motion import VideoCaptionFolder
    from sara.io import file_lock
    from sara.metrics.fid import cache_dir

    root = Path(dataset_root).resolve()
    meta = (root / "metadata.jsonl").read_bytes()
    key = hashlib.sha256(str(root).encode() + meta + f"{resolution}-{max_clips}".encode()).hexdigest()[:16]
    out = cache_dir().parent / "video_frames" / f"{root.name}-{key}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):  # parallel runs share the cache
        if (out / ".complete").is_file():
            return out
        ds = VideoCaptionFolder(root, resolution, num_frames=2)
        ds.num_frames = ds.clip_length  # every frame
        out.mkdir(parents=True, exist_ok=True)
        for i in range(min(len(ds), int(max_clips))):
            for k, frame in enumerate(ds.clip(i)):
                Image.fromarray(frame).save(out / f"{i:05d}_{k:03d}.png")
        (out / ".complete").write_text("")
    return out


def video_metrics(files: Sequence[Path], prompts: Sequence[str] | None, dataset_root, wanted: Sequence[str],
                  device: str = "cpu", kind: str = "auto", motion: str | None = None,
                  max_reference_clips: int = 250, fid_cache=True) -> tuple[dict, dict]:
    """``(metrics, info)`` of the clips in ``files`` for the metrics of :data:`VIDEO_METRICS` asked."""
    from PIL import Image

    clips = read_strips(files)
    if not clips:
        raise ValueError("video metrics: no clips")
    size = clips[0].shape[1]
    kind = ("embedded" if size <= 64 else "real") if kind == "auto" else kind
    out, info = {}, {"evaluators": kind, "num_frames": int(clips[0].shape[0])}
    if "camera_motion_accuracy" in wanted:
        from .camera_motion import camera_motion_labels, check_motion

        if motion is None:
            if dataset_root is None:
                raise ValueError("camera_motion_accuracy needs the trained motion (motion=...) or the dataset folder")
            motion = dataset_motion(dataset_root)
        check_motion(motion)
        labels = camera_motion_labels(clips)
        out["camera_motion_accuracy"] = float(np.mean([lab == motion for lab in labels]))
        info["camera_motion"] = {"target": motion, "labels": dict(zip(*np.unique(labels, return_counts=True)))}
        info["camera_motion"]["labels"] = {str(k): int(v) for k, v in info["camera_motion"]["labels"].items()}
    if any(m in wanted for m in ("frame_clip", "temporal_consistency")):
        from .clip_score import load_clip

        model = load_clip(kind, device)
        info["clip_model"] = model.name
        frames = [Image.fromarray(f) for c in clips for f in c]
        fi = model.encode_images(frames)
        n_f = clips[0].shape[0]
        fi = fi.view(len(clips), n_f, -1)
        if "frame_clip" in wanted:
            if prompts is None:
                raise ValueError("frame_clip needs the prompts")
            ft = model.encode_texts(list(prompts))
            out["frame_clip"] = float((100.0 * (fi * ft[:, None, :]).sum(-1)).mean())
        if "temporal_consistency" in wanted:
            out["temporal_consistency"] = float((fi[:, 1:] * fi[:, :-1]).sum(-1).mean())
    if "frame_fid" in wanted:
        from .fid import compute_fid

        if dataset_root is None:
            raise ValueError("frame_fid needs the dataset folder (dataset_root)")
        ref = reference_frames_dir(dataset_root, size, max_reference_clips)
        with tempfile.TemporaryDirectory() as tmp:
            for i, c in enumerate(clips):
                for k, f in enumerate(c):
                    Image.fromarray(f).save(Path(tmp) / f"{i:05d}_{k:03d}.png")
            value, finfo = compute_fid(tmp, ref, "embedded" if kind == "embedded" else "inception", device,
                                       cache=fid_cache, return_info=True)
        out["frame_fid"] = value
        info["frame_fid"] = {"reference_frames": finfo["n_images"], "generated_frames": finfo["n_generated"]}
    return out, info
