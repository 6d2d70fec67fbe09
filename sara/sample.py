"""Sampler: generate one image per evaluation prompt into a dataset-format folder.

``samples/00000.png ...`` plus ``samples/prompts.jsonl`` (one ``{"file_name", "text"}`` a line, the
same format as a dataset folder, so a sample folder loads with ``ImageCaptionFolder``). ``text`` is
the prompt the image was generated from (with the style prefix, if any); ``prompt`` holds the
prompt without the prefix.

Resume: prompts are generated in chunks of ``batch_size``; chunk ``c`` uses seed ``seed + c`` (so an
image depends on ``(seed, batch_size, index)``), each image is written atomically, a chunk whose
images all exist is skipped, and ``prompts.jsonl`` is written last: its presence with the same
prompts and settings means the folder is complete and sampling is skipped. A manifest
(``.sampling.json``) holds the settings; if they changed, old images are discarded.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from sara.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.jsonl"
MANIFEST_FILE = ".sampling.json"


def image_name(i: int) -> str:
    return f"{i:05d}.png"


def _fingerprint(texts: Sequence[str], settings: dict) -> str:
    h = hashlib.sha256(json.dumps([list(texts), settings], sort_keys=True).encode())
    return h.hexdigest()[:16]


def read_prompts_file(folder: str | Path) -> list[dict]:
    p = Path(folder) / PROMPTS_FILE
    with open(p, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def is_complete(out_dir: str | Path, texts: Sequence[str], settings: dict | None = None) -> bool:
    out_dir = Path(out_dir)
    try:
        rows = read_prompts_file(out_dir)
    except (OSError, ValueError):
        return False
    if [r.get("text") for r in rows] != list(texts):
        return False
    if settings is not None:
        try:
            man = read_json(out_dir / MANIFEST_FILE)
        except (OSError, ValueError):
            return False
        if man.get("fingerprint") != _fingerprint(texts, settings):
            return False
    return all((out_dir / r["file_name"]).is_file() for r in rows)


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_to_folder(backbone, prompts: Sequence[str], out_dir: str | Path, *,
                     denoiser=None, prefix: str = "", num_inference_steps: int | None = None,
                     guidance_scale: float | None = None, seed: int = 0, batch_size: int = 16,
                     autocast_dtype=None, progress: bool = True) -> dict:
    """Generate ``prefix + prompt`` for every prompt into ``out_dir``; skip what is done.

    Returns ``{"num_images", "skipped", "time_s", "dir"}`` (``skipped``: the folder was complete).
    """
    out_dir = Path(out_dir)
    base = [str(p) for p in prompts]
    texts = [f"{prefix}{p}" for p in base]
    settings = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "seed": int(seed), "batch_size": int(batch_size),
                "autocast": None if autocast_dtype is None else str(autocast_dtype)}
    t0 = time.perf_counter()
    if is_complete(out_dir, texts, settings):
        log.info("samples complete in %s (%d images): skipped", out_dir, len(texts))
        return {"num_images": len(texts), "skipped": True, "time_s": 0.0, "dir": str(out_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(texts, settings)
    man_path = out_dir / MANIFEST_FILE
    try:
        old = read_json(man_path).get("fingerprint")
    except (OSError, ValueError):
        old = None
    if old != fp:  # other prompts/settings: nothing here can be reused
        for f in list(out_dir.glob("*.png")) + [out_dir / PROMPTS_FILE]:
            f.unlink(missing_ok=True)
        atomic_write_json(man_path, {"fingerprint": fp, "settings": settings, "n": len(texts)})

    batch_size = max(1, int(batch_size))
    chunks = list(range(0, len(texts), batch_size))
    todo = [b0 for b0 in chunks if not all((out_dir / image_name(i)).is_file()
                                           for i in range(b0, min(b0 + batch_size, len(texts))))]
    bar, step_kw = None, {}
    if progress and todo:  # one tick per denoising step of every chunk still to sample
        import inspect

        from tqdm.auto import tqdm

        steps = int(num_inference_steps or getattr(backbone, "default_steps", 1) or 1)
        bar = tqdm(total=len(todo) * steps, desc=f"sample {len(texts)} images", unit="step",
                   dynamic_ncols=True, mininterval=1.0)
        if "on_step" in inspect.signature(backbone.sample).parameters:
            step_kw["on_step"] = lambda: bar.update(1)
    for c, b0 in enumerate(chunks):
        idx = list(range(b0, min(b0 + batch_size, len(texts))))
        if b0 not in todo:
            continue
        with torch.no_grad():
            images = backbone.sample([texts[i] for i in idx],
                                     num_inference_steps=num_inference_steps,
                                     guidance_scale=guidance_scale, seed=int(seed) + c,
                                     denoiser=denoiser, batch_size=len(idx),
                                     **({"autocast_dtype": autocast_dtype}
                                        if autocast_dtype is not None else {}), **step_kw)
        if bar is not None and not step_kw:
            bar.update(steps)
        if len(images) != len(idx):
            raise RuntimeError(f"backbone.sample returned {len(images)} images for {len(idx)} "
                               "prompts")
        for i, img in zip(idx, images):
            atomic_write_bytes(out_dir / image_name(i), _png_bytes(img))
    if bar is not None:
        bar.close()
    rows = [{"file_name": image_name(i), "text": t, "prompt": p}
            for i, (t, p) in enumerate(zip(texts, base))]
    atomic_write_text(out_dir / PROMPTS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    return {"num_images": len(texts), "skipped": False, "time_s": time.perf_counter() - t0,
            "dir": str(out_dir)}
