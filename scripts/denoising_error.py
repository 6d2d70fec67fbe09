#!/usr/bin/env python
"""Denoising error by timestep: the ε-prediction MSE of one or more models on the images of a
style set, at a few timesteps, with the style prompt and with the empty prompt (the
unconditional branch of classifier-free guidance). It tells "not learned yet" (the error at
mid timesteps stays high) from "learned but sampled wrongly" (low error, bad samples), and shows
how far a style set lies outside the pre-trained model's support (the base model's error).

    python scripts/denoising_error.py --dataset Cyberpunk --models base=sara/zoo/tiny \\
        full=EXPORT_DIR sara=EXPORT_DIR2         # EXPORT_DIR: python -m sara.export RUN --out EXPORT_DIR

Pixel-space pipelines (the ``tiny`` backbone and its exports); the same noise and timesteps for
every model. Prints one line per model and writes ``--json`` if given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_images(folder: Path, n: int, size: int) -> tuple[torch.Tensor, list[str]]:
    from PIL import Image

    meta = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines() if x.strip()][:n]
    if not meta:
        raise SystemExit(f"{folder / 'metadata.jsonl'} lists no images")
    ims = [np.asarray(Image.open(folder / m["file_name"]).convert("RGB").resize((size, size), Image.BOX)) for m in meta]
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, [m["text"] for m in meta]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="style set name (under --data-root) or a folder")
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME=PIPELINE_DIR")
    ap.add_argument("--timesteps", default="5,20,100,300,600,900")
    ap.add_argument("--n", type=int, default=48, help="images of the set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from sara.data.styles import STYLE_SIZES, caption_prefix

    torch.manual_seed(a.seed)
    folder = Path(a.dataset) if Path(a.dataset).is_dir() else Path(a.data_root) / a.dataset
    prefix = caption_prefix(a.dataset) if a.dataset in STYLE_SIZES else ""
    models = dict(m.split("=", 1) for m in a.models)
    first = Path(next(iter(models.values())))
    sched = DDPMScheduler.from_pretrained(first / "scheduler")
    size = int(UNet2DConditionModel.load_config(first / "unet")["sample_size"])
    x0, texts = load_images(folder, a.n, size)

    def embed(path: Path, *prompt_lists):  # each model with its own text encoder (trained with its UNet)
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
        te = CLIPTextModel.from_pretrained(path / "text_encoder").eval()
        out = []
        for prompts in prompt_lists:
            ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            with torch.no_grad():
                out.append(te(ids)[0])
        return out

    noise = torch.randn_like(x0)
    res = {"dataset": str(folder), "n": len(texts), "seed": a.seed, "models": {}}
    for name, path in models.items():
        cond, uncond = embed(Path(path), [prefix + t for t in texts], [""] * len(texts))
        unet = UNet2DConditionModel.from_pretrained(Path(path) / "unet").eval()
        row = {}
        for t in (int(s) for s in a.timesteps.split(",")):
            tt = torch.full((len(x0),), t)
            xt = sched.add_noise(x0, noise, tt)
            with torch.no_grad():
                row[t] = {"cond": float(((unet(xt, tt, cond).sample - noise) ** 2).mean()),
                          "uncond": float(((unet(xt, tt, uncond).sample - noise) ** 2).mean())}
        res["models"][name] = row
        print(f"{name}: " + " | ".join(f"t={t} {v['cond']:.3f} ({v['uncond']:.3f})" for t, v in row.items()), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
