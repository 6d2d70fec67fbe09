"""Evaluate a folder of generated images against a target dataset: FID, CLIP score, B-VQA
(and CLIP-I / CLIP-T for customisation), and append the numbers to a run's result record.

    python -m sara.evaluate --images outputs/runs/.../samples --dataset Cyberpunk
    python -m sara.evaluate --images DIR --dataset path/to/folder --metrics fid,clip_score,bvqa \
        --record outputs/runs/.../result.json [--evaluators embedded|real|auto] [--device cuda]

``images_dir`` holds ``00000.png ...`` and ``prompts.jsonl`` (``{"file_name", "text"}`` lines, the
format of a dataset folder's ``metadata.jsonl``). The target dataset is a folder of images
(+ ``metadata.jsonl``); ``--dataset NAME`` resolves to ``<data-root>/NAME`` and the embedded style
datasets are written there on first use (:func:`sara.data.styles.ensure_style_datasets`).

``style_acc`` (embedded world only): the share of images the FID network's style head assigns to
the target dataset's style (:mod:`sara.metrics.style_acc`).

The CLIP score is taken against each prompt without its ``"<Name> style, "`` trigger: it measures
whether the prompt's content is followed, whatever the style (style strength is FID's job);
``--clip-full-prompt`` keeps the trigger.

Evaluators: ``embedded`` (the suite's own, ``sara/zoo/evaluators``), ``real`` (clean-fid Inception,
CLIP ViT-L/14, BLIP VQA — local weights only, see :mod:`sara.metrics.weights`), or ``auto``
(embedded when the generated images are at most 64 px, else real).

VLHI is not computed here: it compares runs (all methods and budgets of one backbone and dataset)
— see :func:`sara.metrics.vlhi.add_vlhi`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from sara.io import atomic_write_text

__all__ = ["evaluate", "read_prompts", "update_record", "METRICS", "resolve_dataset"]

from sara.metrics.video import VIDEO_METRICS  # clips stored as frame strips (video experiment)

METRICS = ("fid", "clip_score", "bvqa", "clip_i", "clip_t", "style_acc") + VIDEO_METRICS
_ALIASES = {"clip": "clip_score", "b-vqa": "bvqa", "b_vqa": "bvqa", "clip-i": "clip_i", "clip-t": "clip_t"}


def _norm_metrics(metrics: Iterable[str] | str | None) -> list[str]:
    if metrics is None:
        return ["fid", "clip_score", "bvqa"]
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    out = []
    for m in metrics:
        k = _ALIASES.get(str(m).strip().lower(), str(m).strip().lower())
        if k not in METRICS:
            raise ValueError(f"unknown metric {m!r}; available: {', '.join(METRICS)}")
        out.append(k)
    return list(dict.fromkeys(out))


def read_prompts(images_dir: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Image paths and their prompts from ``images_dir/prompts.jsonl`` (or ``metadata.jsonl``)."""
    d = Path(images_dir)
    for name in ("prompts.jsonl", "metadata.jsonl"):
        f = d / name
        if f.is_file():
            files, texts = [], []
            for ln, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    files.append(d / rec["file_name"])
                    texts.append(str(rec["text"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{f}:{ln}: expected a JSON object with 'file_name' and 'text' ({e})") from None
            missing = [str(p) for p in files if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"{f} lists {len(missing)} missing image(s), e.g. {missing[0]}")
            return files, texts
    raise FileNotFoundError(f"no prompts.jsonl (or metadata.jsonl) in {d}; pass the prompts explicitly")


def _image_files(images_dir: Path) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    return sorted(p for p in images_dir.iterdir() if p.suffix.lower() in exts)


def resolve_dataset(dataset: str | os.PathLike | None, data_root: str | os.PathLike | None = None,
                    seed: int = 0, create: bool = True) -> Path | None:
    """A dataset folder from a path or a name (``<data_root>/<name>``, default root ``data/``); the
    embedded style datasets are written on first use."""
    if dataset is None:
        return None
    p = Path(dataset)
    if p.is_dir():
        return p
    root = Path(data_root) if data_root is not None else Path(__file__).resolve().parents[1] / "data"
    folder = root / str(dataset)
    if not folder.is_dir() and create:
        try:
            from sara.data.styles import STYLE_SIZES, ensure_style_datasets
        except ImportError:  # pragma: no cover
            STYLE_SIZES = {}
        if str(dataset) in STYLE_SIZES:
            ensure_style_datasets(root, seed=seed, names=[str(dataset)])
    if not folder.is_dir():
        raise FileNotFoundError(f"target dataset {dataset!r} not found (looked for {folder})")
    return folder


def _auto_kind(files: Sequence[Path]) -> str:
    from PIL import Image

    with Image.open(files[0]) as im:
        return "embedded" if min(im.size) <= 64 else "real"  # min: a clip's frame strip is wide


def _progress(metric: str, n: int) -> None:
    """One line per metric, so a long evaluation shows where it is."""
    logging.getLogger(__name__).info("evaluating %s on %d images", metric, n)


def evaluate(
    images_dir: str | os.PathLike,
    prompts: Sequence[str] | None = None,
    dataset_root: str | os.PathLike | None = None,
    metrics: Iterable[str] | str | None = ("fid", "clip_score", "bvqa"),
    device: str = "cpu",
    *,
    evaluators: str = "auto",
    weights: dict | None = None,
    reference_dir: str | os.PathLike | None = None,
    fid_cache: bool | str | os.PathLike = True,
    record: str | os.PathLike | None = None,
    clip_content_only: bool = True,
) -> dict:
    """Compute ``metrics`` for the images of ``images_dir``.

    ``prompts``: one per image, in the order of ``prompts.jsonl`` (default: read from it; without
    it, the sorted image files). ``dataset_root``: the target dataset folder (FID reference).
    ``weights``: per-evaluator weight locations ``{"fid"|"clip_score"|"bvqa": path}`` (real:
    weight folders; embedded: another zoo root). ``reference_dir``: subject images for CLIP-I.
    ``record``: a result.json to update (atomically) with the numbers.
    ``clip_content_only``: score CLIP against each prompt without its ``"<Name> style, "``
    trigger(s) — the CLIP score measures whether the content is followed; style strength is FID's
    job (``False``: the full prompt).

    Returns ``{"fid": ..., "clip_score": ..., "bvqa": ..., "n_images": N, "evaluators": kind,
    "eval_seconds": s, "eval_info": {...}}`` (only the metrics asked for).
    """
    import torch  # noqa: F401  (fail early if the stack is missing)

    wanted = _norm_metrics(metrics)
    weights = dict(weights or {})
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    try:
        files, file_prompts = read_prompts(images_dir)
    except FileNotFoundError:
        files, file_prompts = _image_files(images_dir), None
    if not files:
        raise ValueError(f"no images in {images_dir}")
    if prompts is None:
        prompts = file_prompts
    elif len(prompts) != len(files):
        raise ValueError(f"{len(prompts)} prompts for {len(files)} images in {images_dir}")
    if prompts is None and any(m in wanted for m in ("clip_score", "bvqa", "clip_t")):
        raise ValueError(f"{images_dir} has no prompts.jsonl and no prompts were passed: needed for {wanted}")
    device = "cuda" if device == "auto" and _cuda() else ("cpu" if device == "auto" else str(device))
    kind = _auto_kind(files) if evaluators == "auto" else evaluators
    if kind not in ("embedded", "real"):
        raise ValueError(f"evaluators must be 'embedded', 'real' or 'auto', got {evaluators!r}")

    t0 = time.perf_counter()
    out: dict = {}
    info: dict = {"evaluators": kind, "images_dir": str(images_dir)}
    video = [m for m in wanted if m in VIDEO_METRICS]
    if video:  # generated clips (frame strips): sara.metrics.video
        from sara.metrics.video import video_metrics

        vout, info["video"] = video_metrics(files, prompts, dataset_root, video, device, evaluators,
                                            fid_cache=fid_cache)
        out.update(vout)
    if "fid" in wanted:
        from sara.metrics.fid import compute_fid

        _progress("FID", len(files))
        if dataset_root is None:
            raise ValueError("FID needs the target dataset folder (dataset_root)")
        ref = Path(dataset_root)
        gen = images_dir
        listed = {p.resolve() for p in files}
        extra = [p for p in _image_files(images_dir) if p.resolve() not in listed]
        tmp = None
        if extra:  # only the images of prompts.jsonl count: link them into a clean folder
            tmp = tempfile.TemporaryDirectory()
            gen = Path(tmp.name)
            for i, p in enumerate(files):
                os.symlink(p.resolve(), gen / f"{i:05d}{p.suffix}")
        try:
            value, finfo = compute_fid(gen, ref, "embedded" if kind == "embedded" else "inception", device,
                                       cache=fid_cache, weights=weights.get("fid"), return_info=True)
        finally:
            if tmp is not None:
                tmp.cleanup()
        out["fid"] = value
        info["fid"] = {k: finfo[k] for k in ("dataset", "n_images", "n_generated", "extractor", "cache_hit")}
    clip_model = None
    if any(m in wanted for m in ("clip_score", "clip_t", "clip_i")):
        from sara.metrics.clip_score import load_clip

        clip_model = load_clip(kind, device, weights.get("clip_score"))
        info["clip_model"] = clip_model.name
        _progress("CLIP", len(files))
    if "clip_score" in wanted or "clip_t" in wanted:
        from sara.metrics.clip_score import clip_scores

        clip_texts = list(prompts)
        if clip_content_only:
            from sara.data.styles import strip_style_prefix

            clip_texts = [strip_style_prefix(t) for t in clip_texts]
        info["clip_prompts"] = "content (style trigger removed)" if clip_content_only else "full prompt"
        scores = clip_scores(files, clip_texts, clip_model)
        if "clip_score" in wanted:
            out["clip_score"] = float(scores.mean())
        if "clip_t" in wanted:
            out["clip_t"] = float(scores.mean())
    if "clip_i" in wanted:
        from sara.metrics.clip_i_t import clip_i

        if reference_dir is None:
            raise ValueError("CLIP-I needs reference_dir (the subject's images)")
        out["clip_i"] = clip_i(files, _image_files(Path(reference_dir)), clip_model)
    if "bvqa" in wanted:
        _progress("B-VQA", len(files))
        from sara.metrics.bvqa import bvqa_scores, load_vqa

        vqa = load_vqa(kind, device, weights.get("bvqa"))
        out["bvqa"] = float(bvqa_scores(files, list(prompts), vqa).mean())
        info["bvqa_model"] = "sara-attr-vqa" if kind == "embedded" else "blip-vqa"
        if getattr(vqa, "unparsed", 0):
            info["bvqa_unparsed_phrases"] = int(vqa.unparsed)
    if "style_acc" in wanted:
        if kind != "embedded":
            raise ValueError("style_acc needs the embedded evaluators (its classifier knows the embedded style sets)")
        if dataset_root is None:
            raise ValueError("style_acc needs the target dataset folder (dataset_root), named after its style")
        from sara.metrics.style_acc import load_style_classifier, style_accuracy

        out["style_acc"] = style_accuracy(files, Path(dataset_root).name,
                                          load_style_classifier(weights.get("fid"), device))
    out["n_images"] = len(files)
    out["evaluators"] = kind
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    out["eval_info"] = info
    if record is not None:
        update_record(record, out)
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def update_record(path: str | os.PathLike, results: dict) -> dict:
    """Merge ``results`` into ``record["metrics"]`` of a result.json (created if absent), atomically."""
    path = Path(path)
    rec = {}
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); not overwriting it") from None
    metrics = dict(rec.get("metrics") or {})
    metrics.update({k: v for k, v in results.items() if k != "eval_info"})
    rec["metrics"] = metrics
    if "eval_info" in results:
        rec["eval_info"] = results["eval_info"]
    atomic_write_text(path, json.dumps(rec, indent=1, default=str))
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sara.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of generated images + prompts.jsonl")
    p.add_argument("--dataset", default=None, help="target dataset: a folder, or a name under --data-root")
    p.add_argument("--data-root", default=None, help="where named datasets live (default: <repo>/data)")
    p.add_argument("--metrics", default="fid,clip_score,bvqa")
    p.add_argument("--evaluators", default="auto", choices=("auto", "embedded", "real"))
    p.add_argument("--device", default="auto")
    p.add_argument("--record", default=None, help="result.json to update with the metrics")
    p.add_argument("--reference", default=None, help="subject images for clip_i")
    p.add_argument("--fid-weights", default=None)
    p.add_argument("--clip-weights", default=None)
    p.add_argument("--bvqa-weights", default=None)
    p.add_argument("--no-fid-cache", action="store_true")
    p.add_argument("--clip-full-prompt", action="store_true",
                   help="score CLIP against the full prompt (default: without its style trigger)")
    a = p.parse_args(argv)
    metrics = _norm_metrics(a.metrics)
    ds = resolve_dataset(a.dataset, a.data_root) if "fid" in metrics else None
    weights = {k: v for k, v in (("fid", a.fid_weights), ("clip_score", a.clip_weights), ("bvqa", a.bvqa_weights)) if v}
    res = evaluate(a.images, None, ds, metrics, a.device, evaluators=a.evaluators, weights=weights,
                   reference_dir=a.reference, fid_cache=not a.no_fid_cache, record=a.record,
                   clip_content_only=not a.clip_full_prompt)
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
