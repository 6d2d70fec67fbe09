#!/usr/bin/env python
"""Pre-train the latent tiny world's AutoencoderKL (64 px images <-> 16x16x4 or 8x8x4 latents).

    python scripts/pretrain_vae.py --time-budget 120 --device cuda          # the GPU recipe
    python scripts/pretrain_vae.py --steps 20 --batch-size 8 --out /tmp/vae  # a smoke run (CPU)
    python scripts/pretrain_vae.py --resume outputs/pretrain/vae_ckpt ...    # continue a stopped run

Data: an unlimited stream where item ``i`` is a pure function of ``(data seed, i)``: a procedural
scene (:func:`sara.data.procedural.sample_scene`) drawn plain (:func:`~sara.data.procedural.render`)
or in one of the five styles (:func:`sara.data.styles.render_style`), kinds in turn, all at 64 px,
so the latents keep every style's signature. Loss: L1 + MSE of the reconstruction (posterior
sample) + ``kl_weight`` x KL, AdamW + cosine. ``scaling_factor`` = 1 / std of the latents of
held-out images (as Stable Diffusion's 0.18215), written into the VAE's config.
``--latent-channels 16``: SD 3's VAE layout (16 channels, no quant convs, ``shift_factor`` = mean
of the latents, ``scaling_factor`` = 1 / their std around it, as SD 3's 0.0609 / 1.5305), for
``tiny_sd3`` (:mod:`sara.backbones.tiny_families`).

Validation (held-out stream): PSNR per kind, and per style set S the embedded FID of the
reconstructions against the originals next to the FID between the base domain and S (the "gap");
a usable VAE has ``FID(recon S, S) <= 0.10 x FID(base, S)`` for every S.

Resume: ``--ckpt DIR`` holds the training state (weights, optimizer, step, generator, elapsed
time), saved every ``--ckpt-every`` seconds and at the end; ``--resume DIR`` continues from it
(same command otherwise). Output (atomic): ``--out`` = a diffusers ``AutoencoderKL`` folder
(config.json + diffusion_pytorch_model.safetensors) + manifest.json (command, seeds, steps, wall
time, device, validation).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("base", "BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")
RESOLUTION = 64
_STREAM = {"train": 810, "val": 820}  # scene_rng streams of this script (disjoint from the others)


def vae_item(index: int, seed: int, split: str = "train", kind: str | None = None) -> tuple[str, np.ndarray]:
    """``(kind, uint8 [64, 64, 3])``: item ``index`` of the stream (kinds in turn unless given)."""
    from sara.data.procedural import render, sample_scene, scene_rng
    from sara.data.styles import render_style

    kind = KINDS[index % len(KINDS)] if kind is None else kind
    k = KINDS.index(kind)
    scene = sample_scene(scene_rng(seed, _STREAM[split] + k, index))
    if kind == "base":
        return kind, render(scene, RESOLUTION)
    return kind, render_style(kind, scene, RESOLUTION, scene_rng(seed, _STREAM[split] + 50 + k, index))


class VaeStream:
    """Map-style dataset over the stream from ``start`` (resume = a later start)."""

    def __init__(self, seed: int, start: int = 0, length: int = 10 ** 9):
        self.seed, self.start, self.length = seed, start, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        import torch

        _, img = vae_item(self.start + int(i), self.seed)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def vae_arch(factor: int, latent_channels: int = 4) -> dict:
    """The ``vae`` entry of the tiny_latent architecture for a down-sampling ``factor`` (4 or 8);
    ``latent_channels=16``: tiny_sd3's (SD 3's layout)."""
    from sara.backbones.tiny import tiny_config
    from sara.backbones.tiny_families import world_arch

    if latent_channels not in (4, 16):
        raise ValueError(f"--latent-channels must be 4 (SD 1/2, SDXL) or 16 (SD 3), got {latent_channels}")
    arch = tiny_config(world="tiny_latent")["vae"] if latent_channels == 4 else world_arch("tiny_sd3")["vae"]
    if factor == 8:
        levels = 4
        arch.update(down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                    block_out_channels=[32, 64, 64, 64])
    elif factor != 4:
        raise ValueError(f"--factor must be 4 (64 px -> 16x16 latents) or 8 (-> 8x8), got {factor}")
    return arch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "outputs" / "pretrain" / "vae"))
    p.add_argument("--ckpt", default=None, help="training-state folder (default: <out>_ckpt)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue from this training-state folder")
    p.add_argument("--factor", type=int, default=4, help="spatial down-sampling: 4 (16x16x4 latents) or 8 (8x8x4)")
    p.add_argument("--latent-channels", type=int, default=4,
                   help="4 (tiny_latent, tiny_sd2, tiny_sdxl) or 16 (tiny_sd3: SD 3's VAE layout, with shift_factor)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--time-budget", type=float, default=None, help="stop after S seconds of training (summed over resumes)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ckpt-every", type=float, default=300.0, metavar="S")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--n-val", type=int, default=300, help="held-out images per kind for validation (0: skip)")
    p.add_argument("--log-every", type=int, default=50)
    return p.parse_args(argv)


def save_state(path: Path, vae, opt, gen, step: int, elapsed: float, args, history) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.pt.tmp"
    torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                "elapsed_s": elapsed, "args": vars(args), "history": history}, tmp)
    os.replace(tmp, path / "state.pt")


def latent_stats(vae, images, device, batch: int = 128) -> tuple[float, float]:
    """(mean, std) of the latents (posterior samples) of ``images``."""
    import torch

    zs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i: i + batch].to(device)
            zs.append(vae.encode(x).latent_dist.sample().float().cpu())
    z = torch.cat(zs)
    return float(z.mean()), float(z.std())


def validate(vae, device, n_per_kind: int, seed: int, tmp: Path) -> dict:
    """PSNR per kind; per style: FID(recon, original) and FID(base, style) with the embedded FID."""
    import torch
    from PIL import Image

    from sara.metrics.fid import compute_fid, embedded_extractor

    ext = embedded_extractor(str(device))
    out = {"n_per_kind": n_per_kind, "psnr": {}, "fid_recon": {}, "fid_base_vs_style": {}, "ratio": {}}
    folders = {}
    for kind in KINDS:
        imgs = [vae_item(i, seed, "val", kind)[1] for i in range(n_per_kind)]
        x = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2).copy()).float().div(127.5).sub(1)
        recs = []
        with torch.no_grad():
            for i in range(0, len(x), 128):
                xb = x[i: i + 128].to(device)
                recs.append(vae.decode(vae.encode(xb).latent_dist.mode()).sample.float().clamp(-1, 1).cpu())
        r = torch.cat(recs)
        mse = ((r - x) / 2).pow(2).mean(dim=(1, 2, 3))
        out["psnr"][kind] = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
        r8 = ((r + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for name, arr in (("orig", imgs), ("recon", r8)):
            d = tmp / kind / name
            d.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(arr):
                Image.fromarray(np.asarray(a)).save(d / f"{i:05d}.png")
        folders[kind] = tmp / kind
    for kind in KINDS[1:]:
        fr = compute_fid(folders[kind] / "recon", folders[kind] / "orig", ext, str(device), cache=False)
        fb = compute_fid(folders["base"] / "orig", folders[kind] / "orig", ext, str(device), cache=False)
        out["fid_recon"][kind] = fr
        out["fid_base_vs_style"][kind] = fb
        out["ratio"][kind] = fr / fb
    out["fid_recon"]["base"] = compute_fid(folders["base"] / "recon", folders["base"] / "orig", ext, str(device), cache=False)
    out["max_ratio"] = max(out["ratio"].values())
    out["passed"] = bool(out["max_ratio"] <= 0.10)
    return out


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "numpy", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    from torch.utils.data import DataLoader

    from sara.backbones.tiny import build_vae

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    out = Path(args.out)
    ckpt = Path(args.ckpt) if args.ckpt else out.with_name(out.name + "_ckpt")
    arch = vae_arch(args.factor, args.latent_channels)
    vae = build_vae(arch, seed=args.seed).to(device)
    n_params = sum(p.numel() for p in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(args.seed)
    step, elapsed0, history = 0, 0.0, []
    if args.resume:
        sp = Path(args.resume) / "state.pt"
        if not sp.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no state.pt there (written by --ckpt)")
        st = torch.load(sp, map_location=device, weights_only=False)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed0 = int(st["step"]), float(st["elapsed_s"])
        history = st.get("history", [])
        ckpt = Path(args.resume)
        print(f"resumed at step {step} ({elapsed0:.0f}s trained)", flush=True)
    print(f"AutoencoderKL: {n_params:,} params, factor {args.factor}, device {device}", flush=True)

    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 2) - 1))
    data = VaeStream(args.data_seed, start=step * args.batch_size)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup)))))

    t0 = time.time()
    last_ckpt = t0
    stop = "steps"
    vae.train()
    ema_loss = None
    for x in loader:
        if step >= args.steps:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = x.to(device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen, device=device)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + args.kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"non-finite VAE loss {lv} at step {step}")
        ema_loss = lv if ema_loss is None else 0.95 * ema_loss + 0.05 * lv
        elapsed = elapsed0 + time.time() - t0
        if step % args.log_every == 0:
            history.append((step, round(ema_loss, 5)))
            print(f"step {step}/{args.steps} loss {ema_loss:.4f} lr {lr_at(step):.2e} {elapsed:.0f}s", flush=True)
        if time.time() - last_ckpt >= args.ckpt_every:
            save_state(ckpt, vae, opt, gen, step, elapsed, args, history)
            last_ckpt = time.time()
        if args.time_budget and elapsed >= args.time_budget:
            stop = "time_budget"
            break
    wall = elapsed0 + time.time() - t0
    save_state(ckpt, vae, opt, gen, step, wall, args, history)
    vae.eval()
    print(f"trained {step} steps ({step * args.batch_size:,} images) in {wall:.0f}s; loss {ema_loss}", flush=True)

    held = np.stack([vae_item(i, args.data_seed, "val")[1] for i in range(10_000, 10_000 + 512)])
    xs = torch.from_numpy(held.transpose(0, 3, 1, 2).copy()).float().div(127.5).sub(1)
    mean, std = latent_stats(vae, xs, device)
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    if vae.config.shift_factor is not None:  # SD 3's layout: latents (z - shift) * scale
        vae.register_to_config(shift_factor=round(mean, 5))
    print(f"latent mean {mean:.4f} std {std:.4f} -> scaling_factor {vae.config.scaling_factor}, "
          f"shift_factor {vae.config.shift_factor}", flush=True)
    validation = None
    if args.n_val:
        with tempfile.TemporaryDirectory() as tmp:
            validation = validate(vae, device, args.n_val, args.data_seed, Path(tmp))
        print("validation:", json.dumps({k: validation[k] for k in ("psnr", "ratio", "max_ratio", "passed")}), flush=True)

    cmd = " ".join(["python", "scripts/pretrain_vae.py"] + (sys.argv[1:] if argv is None else list(argv)))
    manifest = {
        "what": "AutoencoderKL of the latent tiny world" + (" (tiny_latent, tiny_sd2, tiny_sdxl)" if args.latent_channels == 4
                                                             else " in SD 3's layout (tiny_sd3)"),
        "command": cmd, "seed": args.seed, "data_seed": args.data_seed, "factor": args.factor,
        "latent_shape": [arch["latent_channels"], RESOLUTION // args.factor, RESOLUTION // args.factor],
        "steps": step, "stopped_by": stop, "batch_size": args.batch_size, "samples_seen": step * args.batch_size,
        "hyper": {k: getattr(args, k) for k in ("lr", "kl_weight", "warmup", "steps")},
        "params": n_params, "scaling_factor": vae.config.scaling_factor, "shift_factor": vae.config.shift_factor,
        "latent_mean": mean, "latent_std": std, "latent_channels": args.latent_channels,
        "wall_time_s": round(wall, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} threads)",
        "final_loss": ema_loss, "loss_curve": history[:: max(1, len(history) // 100)],
        "validation": validation, "versions": versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    vae.to("cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        vae.save_pretrained(tmpdir, safe_serialization=True)
        (tmpdir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        for f in [tmpdir, *tmpdir.rglob("*")]:  # mkdtemp / safetensors leave 0700 / 0600
            f.chmod(0o755 if f.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmpdir.rename(out)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    print(f"saved {out}", flush=True)
    return manifest


if __name__ == "__main__":
    main()
