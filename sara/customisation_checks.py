"""Checks and re-scoring around customisation runs (:mod:`sara.customisation`), and their command
line ``python -m sara.customisation_checks ...``:

* ``validate``: does CLIP-I tell the embedded subjects apart (:func:`validate_clip_i`), and how
  does the ground-truth detector do on renders (:func:`sara.data.subjects.validate_detector`);
* ``class-images``: how many class images the shipped tiny backbone draws blank, per class prompt
  mode (:func:`class_images_blank_share`);
* ``check``: are the weights of a real-scale customisation run present (:func:`check_weights`);
* ``ground-truth RUN_DIR ...``: score a finished run's saved samples again with the current
  ground truth (:func:`rescore_ground_truth`): subject fidelity and language drift of a run
  evaluated with an older detector version, without training it again.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from sara.customisation import class_image_report, class_prompts, ensure_class_images, eval_prompts


# ------------------------------------------------------------------------------------------------
# evaluator validation: does CLIP-I tell the subjects apart?
# ------------------------------------------------------------------------------------------------
def validate_clip_i(n_per_subject: int = 30, seed: int = 0, device: str = "cpu", root=None) -> dict:
    """How often the embedded CLIP-I ranks a render of the right subject above a render of another
    subject, against the right subject's reference images: for every subject ``s`` and every pair
    (held-out render of ``s``, held-out render of ``t != s``) of the same layout, whether
    ``clip_i(render_s, refs_s) > clip_i(render_t, refs_s)``. Renders (32 px) are never in the
    subject folders. Layouts: the subject alone (as in the property prompts) and beside one
    ordinary object of the domain (as in the recontextualisation prompts) make ``share_correct``;
    beside two objects (harder than any evaluation prompt) is reported as ``share_two_objects``."""
    import tempfile

    from sara.data.subjects import SUBJECT_NAMES, heldout_subject_image, subject_images, write_subjects
    from sara.metrics.clip_score import load_clip

    model = load_clip("embedded", device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(root) if root is not None else Path(tmp)
        if not all((root / n).is_dir() for n in SUBJECT_NAMES):
            write_subjects(root, seed)
        refs = {n: model.encode_images(subject_images(root / n)) for n in SUBJECT_NAMES}
    res: dict[str, Any] = {"n_per_subject_and_layout": n_per_subject, "seed": seed, "evaluator": model.name}
    counts = {}
    for context in (0, 1, 2):
        renders = {n: model.encode_images([heldout_subject_image(n, i, seed, 32, context=context)
                                           for i in range(n_per_subject)]) for n in SUBJECT_NAMES}
        for s in SUBJECT_NAMES:
            own = (renders[s] @ refs[s].T).mean(1)
            for o in SUBJECT_NAMES:
                if o != s:
                    other = (renders[o] @ refs[s].T).mean(1)
                    w, t = counts.get((context, s), (0, 0))
                    counts[(context, s)] = (w + int((own[:, None] > other[None, :]).sum()),
                                            t + own.numel() * other.numel())

    def share(keys):
        w = sum(counts[k][0] for k in keys)
        return w / sum(counts[k][1] for k in keys)

    res["share_correct"] = share([k for k in counts if k[0] < 2])
    res["per_subject"] = {s: share([(0, s), (1, s)]) for s in SUBJECT_NAMES}
    res["share_alone"] = share([k for k in counts if k[0] == 0])
    res["share_one_object"] = share([k for k in counts if k[0] == 1])
    res["share_two_objects"] = share([k for k in counts if k[0] == 2])
    res["pairs"] = sum(counts[k][1] for k in counts if k[0] < 2)
    return res


def class_images_blank_share(mode: str = "auto", n: int = 32, seed: int = 0, root=None, threads: int = 1) -> dict:
    """Generate the class images of the three embedded subjects' classes with the shipped tiny
    backbone (``custom.class_prompt`` = ``mode``, as a run does) and report per class how many are
    blank or show the class (:func:`class_image_report`)."""
    import tempfile
    import time

    import torch
    from omegaconf import OmegaConf

    from sara.backbones import load_backbone
    from sara.data.subjects import SUBJECTS

    torch.set_num_threads(int(threads))
    conf = Path(__file__).resolve().parents[1] / "conf" / "backbone" / "tiny.yaml"
    backbone = load_backbone(OmegaConf.to_container(OmegaConf.load(conf), resolve=True))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(root) if root else Path(tmp)
        per = []
        for noun in sorted({s.class_noun for s in SUBJECTS.values()}):
            prompts = class_prompts(mode, backbone, noun, n, seed)
            per.append(class_image_report(ensure_class_images(backbone, noun, prompts, seed, root, n), noun))
    total = sum(r["n"] for r in per)
    return {"class_prompt": mode, "n_per_class": n, "seed": seed, "backbone": backbone.name,
            "blank_share": sum(r["blank"] for r in per) / total,
            "shows_class_share": sum(r["shows_class"] for r in per) / total,
            "blank_rule": "foreground (RGB distance > 40 from the border median) under 2% of the pixels",
            "per_class": per, "wall_s": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------------
# python -m sara.customisation_checks ground-truth RUN_DIR ...
# ------------------------------------------------------------------------------------------------
def rescore_ground_truth(run_dir: str | Path) -> dict:
    """Subject fidelity, its score and language drift of a finished customisation run, from its
    saved samples (``samples/`` with ``prompts.jsonl``) with the current ground truth
    (:data:`sara.data.subjects.GROUND_TRUTH`), written into its ``result.json`` metrics (the other
    metrics untouched; the previous values kept under ``ground_truth_previous``). Returns the new
    values; a ValueError names what is missing."""
    from PIL import Image

    from sara.data.subjects import GROUND_TRUTH, fidelity, subject_spec
    from sara.evaluate import read_prompts, update_record

    run_dir = Path(run_dir)
    path = run_dir / "result.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no result.json (not a finished run directory)")
    rec = json.loads(path.read_text(encoding="utf-8"))
    info, custom = rec.get("eval_info") or {}, (rec.get("config") or {}).get("custom") or {}
    spec = subject_spec(str(rec.get("dataset")))
    if spec is None or not info.get("identifier") or not info.get("class_noun"):
        raise ValueError(f"{run_dir}: not a customisation run on an embedded subject (dataset "
                         f"{rec.get('dataset')!r}, eval_info identifier/class_noun missing)")
    seeds = int(info.get("eval_seeds", custom.get("eval_seeds", 0)))
    rows = eval_prompts(info["identifier"], info["class_noun"], seeds,
                        int(custom.get("drift_samples", 0)))
    files, texts = read_prompts(run_dir / "samples")
    if list(texts) != [r["text"] for r in rows]:
        raise ValueError(f"{run_dir / 'samples'}: its prompts are not this run's evaluation prompts")

    def load(i):
        with Image.open(files[i]) as im:
            return im.convert("RGB")

    wanted = set((rec.get("config") or {}).get("eval", {}).get("metrics") or ["subject_fidelity", "language_drift"])
    old = {k: rec["metrics"].get(k) for k in ("subject_fidelity", "subject_score", "language_drift", "ground_truth")
           if k in (rec.get("metrics") or {})}
    out: dict[str, Any] = {"ground_truth": GROUND_TRUTH}
    if "subject_fidelity" in wanted:
        out["subject_fidelity"], out["subject_score"] = fidelity(
            [load(i) for i, r in enumerate(rows) if r["kind"] != "class"], spec)
    cls_ = [i for i, r in enumerate(rows) if r["kind"] == "class"]
    if "language_drift" in wanted and cls_:
        out["language_drift"], _ = fidelity([load(i) for i in cls_], spec)
    if old.get("ground_truth") != GROUND_TRUTH:  # the first score of this version keeps the one before
        out["ground_truth_previous"] = {**old, "ground_truth": old.get("ground_truth", "colour-1")}
    update_record(path, out)
    return out


def _rescore_cli(run_dirs: Sequence[str]) -> int:
    if not run_dirs:
        print("usage: python -m sara.customisation_checks ground-truth RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    status = 0
    for d in run_dirs:
        try:
            r = rescore_ground_truth(d)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        values = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if isinstance(v, float))
        print(f"{d}: {values} ({r['ground_truth']})")
    return status


# ------------------------------------------------------------------------------------------------
# python -m sara.customisation_checks check
# ------------------------------------------------------------------------------------------------
def check_weights(backbone: str = "sd15", evaluators: str = "real") -> str | None:
    """None when a customisation run on ``backbone`` with ``evaluators`` has every weight it needs
    on this machine (a local folder or the Hugging Face cache; nothing is downloaded), else one
    line naming what to download and where to put it."""
    missing = []
    if backbone != "tiny":
        from omegaconf import OmegaConf

        from sara.metrics.weights import weights_dir

        conf = Path(__file__).resolve().parents[1] / "conf" / "backbone" / f"{backbone}.yaml"
        if not conf.is_file():
            return f"unknown backbone {backbone!r} (no {conf})"
        bcfg = OmegaConf.to_container(OmegaConf.load(conf), resolve=True)
        src = str(bcfg.get("pretrained") or bcfg.get("model_id"))
        if not _weights_present(src, bcfg.get("denoiser", "unet")):
            target = weights_dir() / Path(str(bcfg.get("model_id") or src)).name
            missing.append(f"{backbone} weights: huggingface-cli download {bcfg.get('model_id') or src} "
                           f"--local-dir {target}, then pass backbone.pretrained={target}")
    if evaluators == "real":
        from sara.metrics.weights import REAL, MissingWeightsError, resolve_real, weights_dir

        try:
            resolve_real("clip")
        except MissingWeightsError:
            spec = REAL["clip"]
            target = weights_dir() / spec.folder
            missing.append(f"CLIP ViT-L/14 for CLIP-I/CLIP-T: huggingface-cli download "
                           f"timm/vit_large_patch14_clip_224.openai --local-dir {target} (or set {spec.env})")
    return " | ".join(missing) if missing else None


def _weights_present(src: str, denoiser: str) -> bool:
    """A local diffusers folder, or a Hub id whose denoiser config is in the local cache."""
    if Path(src).is_dir():
        return (Path(src) / denoiser).is_dir()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(src, f"{denoiser}/config.json"), str)
    except Exception:  # noqa: BLE001 - an unreadable cache counts as absent
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "validate", "class-images", "ground-truth"):
        print("usage: python -m sara.customisation_checks check [backbone=tiny|sd15|...] [evaluators=auto|real|embedded]\n"
              "       python -m sara.customisation_checks validate [n=30] [out=FILE.json]\n"
              "       python -m sara.customisation_checks ground-truth RUN_DIR [RUN_DIR ...]\n"
              "       python -m sara.customisation_checks class-images [class_prompt=auto|plain|described] [n=32] [seed=0]"
              " [root=DIR] [threads=1] [out=FILE.json]")
        return 2
    if args[0] == "ground-truth":
        return _rescore_cli(args[1:])
    kv = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    if args[0] in ("validate", "class-images"):
        if args[0] == "validate":
            import time

            from sara.data.subjects import validate_detector

            t0 = time.perf_counter()
            res = {**validate_clip_i(int(kv.get("n", 30))), "detector": validate_detector(int(kv.get("n", 30)))}
            res.update(command="python -m sara.customisation_checks " + " ".join(args),
                       wall_s=round(time.perf_counter() - t0, 1))
        else:
            res = class_images_blank_share(kv.get("class_prompt", "auto"), int(kv.get("n", 32)),
                                           int(kv.get("seed", 0)), kv.get("root"), int(kv.get("threads", 1)))
        text = json.dumps(res, indent=1)
        if kv.get("out"):
            from sara.io import atomic_write_text

            atomic_write_text(kv["out"], text + "\n")
        print(text)
        return 0
    backbone = kv.get("backbone", "tiny")  # the suite's default backbone
    evaluators = kv.get("evaluators", "auto")
    if evaluators == "auto":  # the embedded evaluators score the embedded world, the real ones the rest
        evaluators = "embedded" if backbone == "tiny" else "real"
    msg = check_weights(backbone, evaluators)
    if msg:
        print(f"missing weights: {msg}")
        return 1
    print(f"ok: every weight a customisation run on backbone={backbone} needs is present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
