"""What a run trains on and is compared with, from its ``data`` / ``eval`` config: the training
dataset, the folder metrics compare against (the FID reference; for ``data=pretrain`` a fixed
folder of the domain's validation split, written on first use) and the evaluation prompts."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Mapping

from sara.io import atomic_dir, file_lock, read_json

log = logging.getLogger(__name__)


def build_dataset(cfg_data: Mapping, resolution: int, accelerator=None):
    """The training dataset of a ``data`` config and the folder metrics compare against."""
    kind = cfg_data.get("kind", "style")
    root = Path(cfg_data.get("root", "data"))
    name = cfg_data.get("name")
    prefix = cfg_data.get("caption_prefix") or None
    seed = int(cfg_data.get("seed", 0))
    if kind in ("camera_motion", "video_folder"):  # clips for a video backbone
        from .camera_motion import build_video_dataset

        return build_video_dataset(cfg_data, resolution)
    if kind == "pretrain":
        from .domain import PretrainDomain

        return PretrainDomain(resolution, split=cfg_data.get("split", "train"), seed=seed,
                              looks=_looks(cfg_data)), None
    if kind == "style":
        from .styles import STYLE_SIZES, ensure_style_datasets

        if name not in STYLE_SIZES:
            raise ValueError(f"data.name={name!r} is not an embedded style dataset "
                             f"({', '.join(STYLE_SIZES)}); for your own folder use data=folder")
        main = accelerator is None or accelerator.is_main_process
        if main:  # only the set this run needs (about 10 s each on a CPU)
            with file_lock(root / f".{name}.lock"):  # parallel jobs of a sweep share data/
                from tqdm.auto import tqdm

                with tqdm(total=STYLE_SIZES[name], desc=f"style set {name}", unit="img", leave=False,
                          disable=None) as bar:  # shows only while images are written, on a terminal
                    ensure_style_datasets(root, seed, names=[name], progress=bar.update)
        if accelerator is not None:
            accelerator.wait_for_everyone()
    elif kind != "folder":
        raise ValueError(f"unknown data.kind {kind!r} (style | folder | pretrain)")
    from .folder import ImageCaptionFolder

    folder = root / str(name)
    return ImageCaptionFolder(folder, resolution, caption_prefix=prefix), folder


def eval_prompt_list(cfg_eval: Mapping) -> list[str]:
    """The first ``eval.num_prompts`` prompts of ``eval.prompts_file`` or of the embedded set named by
    ``eval.prompt_set``: ``test`` (the 500 held-out prompts) or ``validation`` (100 prompts disjoint
    from them, for tuning)."""
    n = int(cfg_eval.get("num_prompts", 0) or 0)
    if n <= 0:
        return []
    prompt_set = str(cfg_eval.get("prompt_set", "test") or "test")
    if cfg_eval.get("prompts_file"):
        with open(cfg_eval["prompts_file"], encoding="utf-8") as f:
            prompts = [l.strip() for l in f if l.strip()]
    elif prompt_set == "test":
        from .prompts import eval_prompts

        prompts = list(eval_prompts(seed=int(cfg_eval.get("prompt_seed", 0))))
    elif prompt_set == "validation":
        from .prompts import validation_prompts

        prompts = list(validation_prompts(seed=int(cfg_eval.get("prompt_seed", 0))))
    else:
        raise ValueError(f"eval.prompt_set: expected 'test' or 'validation', got {prompt_set!r}")
    if n > len(prompts):
        log.warning("eval.num_prompts=%d but only %d prompts exist; using all", n, len(prompts))
    return prompts[:n]


# --- FID reference of the pre-training domain -------------------------------------------------
PRETRAIN_REFERENCE_VERSION = 1


def _looks(cfg_data: Mapping) -> str:
    """``data.looks`` of the pre-training domain (``plain`` where a config predates it)."""
    return str(cfg_data.get("looks", "plain"))


def pretrain_reference_dir(cfg_data: Mapping, resolution: int) -> Path:
    """Where the FID reference folder of ``data=pretrain`` lives: the first
    ``data.reference_images`` (default 1,000 = all) items of the domain's fixed validation split,
    at the backbone's resolution and in the domain's ``data.looks``, under ``<data.root>/pretrain_val/``."""
    n = int(cfg_data.get("reference_images", 1000) or 1000)
    seed = int(cfg_data.get("seed", 0))
    looks = _looks(cfg_data)
    suffix = "" if looks == "plain" else f"_{looks}"
    return Path(cfg_data.get("root", "data")) / "pretrain_val" / f"seed{seed}_{int(resolution)}px_n{n}{suffix}"


def ensure_pretrain_reference(cfg_data: Mapping, resolution: int) -> Path:
    """Write the reference folder of :func:`pretrain_reference_dir` if it is missing or
    incomplete (images + ``metadata.jsonl``, the dataset folder format; deterministic from the
    seed; atomic: built under a temporary name, then renamed; locked against parallel jobs)."""
    from .domain import DEFAULT_LENGTHS, PretrainDomain
    from .looks import LOOKS_VERSION
    from .procedural import caption
    from .styles import png_bytes

    folder = pretrain_reference_dir(cfg_data, resolution)
    n = int(cfg_data.get("reference_images", 1000) or 1000)
    if not 2 <= n <= DEFAULT_LENGTHS["val"]:
        raise ValueError(f"data.reference_images must be in [2, {DEFAULT_LENGTHS['val']}] (the "
                         f"validation split's size), got {n}")
    seed = int(cfg_data.get("seed", 0))
    looks = _looks(cfg_data)
    ds = PretrainDomain(resolution, split="val", seed=seed, looks=looks)  # refuses an unknown look
    marker = {"kind": "pretrain_val", "seed": seed, "resolution": int(resolution), "count": n,
              "version": PRETRAIN_REFERENCE_VERSION, "complete": True,
              **({} if looks == "plain" else {"looks": looks, "looks_version": LOOKS_VERSION})}

    def ok() -> bool:
        with contextlib.suppress(OSError, ValueError):
            if read_json(folder / ".sara_data.json") == marker:
                return len(list(folder.glob("*.png"))) == n
        return False

    if ok():
        return folder
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if ok():
            return folder
        with atomic_dir(folder) as tmp:
            lines = []
            for i in range(n):
                scene = ds.scene(i)
                fn = f"{i:04d}.png"
                (tmp / fn).write_bytes(png_bytes(ds.image(i)))
                lines.append(json.dumps({"file_name": fn, "text": caption(scene)}))
            (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (tmp / ".sara_data.json").write_text(json.dumps(marker) + "\n", encoding="utf-8")
    log.info("wrote the FID reference of the pre-training domain: %s (%d images)", folder, n)
    return folder
