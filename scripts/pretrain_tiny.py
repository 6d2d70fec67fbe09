#!/usr/bin/env python
"""Pre-train the tiny embedded backbone from scratch on the procedural domain (reproduces sara/zoo/tiny).

    python scripts/pretrain_tiny.py                       # the shipped recipe (see manifest.json there)
    python scripts/pretrain_tiny.py --steps 200 --out /tmp/tiny   # a short run
    python scripts/pretrain_tiny.py --world tiny_latent --vae outputs/pretrain/vae   # the latent world
    python scripts/pretrain_tiny.py ... --resume outputs/pretrain/tiny_ckpt          # continue a stopped run

``--world tiny_latent``: the UNet learns on the latents of a trained, frozen AutoencoderKL
(``--vae``, written by ``scripts/pretrain_vae.py``) at 64 px; the output folder then holds vae/ too
and loads with ``diffusers.StableDiffusionPipeline.from_pretrained``.

``--world tiny_sd2 | tiny_sdxl | tiny_sd3`` (:mod:`sara.backbones.tiny_families`): the same loop on
that family's classes and loss — SD 2's v-prediction (min-SNR weighted), SDXL's UNet with two text
encoders and time ids (dropped prompts are zero conditioning), SD 3's transformer with the
rectified-flow loss (logit-normal sigmas; ``--snr-gamma`` does not apply) and its three text
encoders, all trained jointly with the denoiser. ``--vae``: the tiny_latent VAE (4 channels) for
SD 2 / SDXL, the 16-channel one (``scripts/pretrain_vae.py --latent-channels 16``) for SD 3. The
folder loads with ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` /
``StableDiffusion3Pipeline``.

What it trains: the tiny UNet2DConditionModel (pixel space, 32x32) jointly with its CLIPTextModel
(from scratch), DDPM epsilon loss with min-SNR weighting, ~10% empty prompts (classifier-free
guidance), AdamW + warm-up + cosine, EMA of the weights (the EMA weights are saved). Data:
``sara.data.domain.PretrainDomain`` (the procedural base domain only, no style sets); item ``i`` of
the stream is a pure function of (data seed, i), so the data order does not depend on the number
of loader workers. ``--time-budget S`` runs a short probe, then fixes the step count so the run
ends in about S seconds; the resolved ``--steps`` is recorded in the manifest for reproduction.

Output (atomic: written to a temporary sibling, then renamed): a diffusers-format folder with
unet/, text_encoder/, tokenizer/, scheduler/ (safetensors), model_index.json and manifest.json
(command, seed, steps, wall time, device, final loss, package versions, prompt-following check).
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# the shipped recipe (sara/zoo/tiny/manifest.json: 2,392 steps of batch 512 on one H100, 329 s)
LATENT_WORLDS = ["tiny_latent", "tiny_sd2", "tiny_sdxl", "tiny_sd3"]
DEFAULTS = dict(seed=0, data_seed=0, steps=2392, batch_size=512, lr=1e-3, weight_decay=0.01, warmup=300,
                min_lr_ratio=0.05, ema=0.999, prompt_dropout=0.1, snr_gamma=5.0, grad_clip=1.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="default: sara/zoo/<world>")
    p.add_argument("--world", default="tiny", choices=["tiny", *LATENT_WORLDS],
                   help="tiny: pixel space, 32 px; the others: latent space with --vae, 64 px")
    p.add_argument("--vae", default=None, metavar="DIR", help="trained AutoencoderKL folder (tiny_latent)")
    p.add_argument("--ckpt", default=None, metavar="DIR",
                   help="training state saved here every --ckpt-every seconds (default: outputs/pretrain/<world>_ckpt)")
    p.add_argument("--ckpt-every", type=float, default=300.0, metavar="S")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue from this training-state folder")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="warm start: the denoiser and text encoder weights of this zoo folder (e.g. sara/zoo/tiny), "
                        "a fresh optimizer and schedule")
    p.add_argument("--looks", default="plain", choices=["plain", "varied"],
                   help="PretrainDomain looks: plain light backgrounds, or varied looks (sara.data.looks)")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="save the training state at this step and exit without writing --out (an interruption)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="init / noise seed")
    p.add_argument("--data-seed", type=int, default=DEFAULTS["data_seed"], help="PretrainDomain seed")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training: probe the step time, then set --steps to fit (recorded)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    p.add_argument("--min-lr-ratio", type=float, default=DEFAULTS["min_lr_ratio"])
    p.add_argument("--ema", type=float, default=DEFAULTS["ema"], help="EMA decay (0: no EMA)")
    p.add_argument("--prompt-dropout", type=float, default=DEFAULTS["prompt_dropout"])
    p.add_argument("--snr-gamma", type=float, default=DEFAULTS["snr_gamma"], help="min-SNR weighting (0: off)")
    p.add_argument("--grad-clip", type=float, default=DEFAULTS["grad_clip"])
    p.add_argument("--arch", default=None, help="JSON overrides of the world's architecture "
                   "(sara.backbones.tiny.TINY_ARCH, or sara.backbones.tiny_families.WORLDS[world])")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default: cores - 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--save-dtype", default="auto", choices=["auto", "fp32", "fp16"],
                   help="denoiser and VAE weights as saved (auto: fp16 for tiny_sd2/sdxl/sd3, to ship each under "
                        "30 MB; fp32 otherwise). Text encoders stay fp32: diffusers loads fp16 weights as fp32, "
                        "transformers keeps their dtype, and a pipeline needs one dtype. Validation and prompt "
                        "following are measured on the weights as saved")
    p.add_argument("--eval-prompts", type=int, default=0,
                   help="after training, sample this many held-out eval prompts and record prompt-following accuracy")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.world != "tiny" and not a.vae:
        channels = " --latent-channels 16" if a.world == "tiny_sd3" else ""
        p.error(f"--world {a.world} needs --vae DIR (a trained AutoencoderKL: python scripts/pretrain_vae.py{channels})")
    if a.world == "tiny" and a.vae:
        p.error("--vae is for the latent worlds (the pixel-space tiny world has no VAE)")
    a.out = a.out or str(ROOT / "sara" / "zoo" / a.world)
    if a.save_dtype == "auto":
        a.save_dtype = "fp32" if a.world in ("tiny", "tiny_latent") else "fp16"
    a.ckpt = a.ckpt or str(ROOT / "outputs" / "pretrain" / f"{a.world}_ckpt")
    return a


def versions() -> dict:
    out = {"python": platform.python_version()}
    from importlib.metadata import version
    for pkg in ("torch", "diffusers", "transformers", "tokenizers", "numpy", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


class EMA:
    def __init__(self, params, decay):
        self.params = [p for p in params if p.requires_grad]
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in self.params]

    def update(self, step):
        import torch
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - d)

    def copy_to(self):
        import torch
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s.to(p.dtype))


def atomic_save(bb, out: Path, manifest: dict) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        bb.save_pretrained(tmp)
        # also the classic vocab.json / merges.txt of the CLIP tokenizers (older transformers read these)
        from sara.backbones.tokenizer import build_vocab_and_merges
        from sara.backbones.tiny import domain_words
        vocab, merges = build_vocab_and_merges(domain_words())
        for tok_dir in (tmp / "tokenizer", tmp / "tokenizer_2"):
            if tok_dir.is_dir():
                (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
                (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for f in [tmp, *tmp.rglob("*")]:  # mkdtemp / safetensors leave 0700 / 0600
            f.chmod(0o755 if f.is_dir() else 0o644)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prompt_following(bb, n: int, batch_size=100, seed=0) -> dict:
    """Sample the first ``n`` held-out eval prompts and check them (see scripts/check_prompt_following.py)."""
    from sara.backbones.tiny import prompt_following_accuracy
    from sara.data.prompts import eval_prompts

    from check_prompt_following import embedded_bvqa

    prompts = eval_prompts()[:n]
    images = bb.sample(prompts, seed=seed, batch_size=batch_size)
    out = prompt_following_accuracy(images, prompts)[0]
    out["bvqa"] = embedded_bvqa(images, prompts, str(bb.device))
    return out


def half_modules(bb, save_dtype: str) -> list:
    """The modules saved in fp16: the diffusers models (denoiser, VAE) when ``save_dtype`` is fp16."""
    if save_dtype != "fp16":
        return []
    return [m for m in bb.modules().values() if type(m).__module__.startswith("diffusers.")]


def build_world(args, arch, vae):
    """A randomly initialised backbone of ``args.world`` (its denoiser sized to the VAE's latents)."""
    from sara.backbones.tiny import build_tiny

    cfg = {"prompt_dropout": args.prompt_dropout, "snr_gamma": args.snr_gamma or None, "train_text_encoder": True}
    part = "unet"
    if args.world in ("tiny", "tiny_latent"):
        build = lambda a: build_tiny(a, seed=args.seed, world=args.world, vae=vae, cfg=cfg)  # noqa: E731
    else:
        from sara.backbones.tiny_families import WORLDS, build_family

        part = "transformer" if WORLDS[args.world]["family"] == "sd3" else "unet"
        build = lambda a: build_family(args.world, a, seed=args.seed, vae=vae, cfg=cfg)  # noqa: E731
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        arch = dict(arch or {})
        arch[part] = {"sample_size": 64 // factor, **(arch.get(part) or {})}
    return build(arch), arch


def init_from(trained: dict, folder: Path) -> None:
    """Load each trained module's weights from ``folder/<module>/*.safetensors`` (a zoo folder)."""
    from safetensors.torch import load_file

    for name, module in trained.items():
        files = sorted((folder / name).glob("*.safetensors"))
        if len(files) != 1:
            raise FileNotFoundError(f"--init {folder}: expected one .safetensors file in {folder / name}, found {len(files)}")
        state = {k: v.float() for k, v in load_file(files[0]).items()}
        module.load_state_dict(state)
    print(f"initialised {', '.join(trained)} from {folder}", flush=True)


def chain_init(manifest: dict, init: Path, world: str) -> dict:
    """A warm-started model's manifest carries the manifest of the weights it started from, and its
    ``reproduce`` becomes the whole chain (the initial model written to a folder of its own first),
    so it still reproduces once ``init`` itself has been replaced."""
    f = init / "manifest.json"
    if not f.is_file():
        return manifest
    first = json.loads(f.read_text())
    manifest["init_manifest"] = first
    if first.get("reproduce"):
        stage = f"outputs/pretrain/{world}_init{len(first['reproduce'].split(' && '))}"
        manifest["reproduce"] = (f"{first['reproduce']} --out {stage} && "
                                 + manifest["reproduce"].replace(f"--init {init}", f"--init {stage}"))
    return manifest


def main(argv=None):
    args = parse_args(argv)
    import torch
    from torch.utils.data import DataLoader
    from sara.data import collate
    from sara.data.domain import PretrainDomain

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    prec = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    ac_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    arch = json.loads(args.arch) if args.arch else None
    vae, vae_manifest = None, None
    if args.vae:
        from diffusers import AutoencoderKL

        vae_dir = Path(args.vae)
        if not (vae_dir / "config.json").is_file():
            raise FileNotFoundError(f"--vae {vae_dir}: no config.json there (an AutoencoderKL folder written by "
                                    "scripts/pretrain_vae.py)")
        vae = AutoencoderKL.from_pretrained(vae_dir)
        if (vae_dir / "manifest.json").is_file():
            vae_manifest = json.loads((vae_dir / "manifest.json").read_text())
    bb, arch = build_world(args, arch, vae)
    bb.to(device)
    # the denoiser and every text encoder train together (modules() order: denoiser first)
    trained = {k: m for k, m in bb.modules().items() if k != "vae"}
    if args.init and not args.resume:
        init_from(trained, Path(args.init))
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in trained.items()}
    print(f"{args.world} backbone: " + ", ".join(f"{k} {n:,}" for k, n in n_params.items())
          + f" params; device {device}, precision {prec}", flush=True)
    params = [p for m in trained.values() for p in m.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99),
                            fused=device.type == "cuda")
    ema = EMA(params, args.ema) if args.ema > 0 else None
    scaler = torch.amp.GradScaler(enabled=prec == "fp16")

    gen = torch.Generator(device).manual_seed(args.seed)
    total = args.steps
    probe = (20, 120) if args.time_budget else None
    losses, ema_loss = [], None
    step, elapsed0 = 0, 0.0
    if args.resume:
        sp = Path(args.resume) / "state.pt"
        if not sp.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no state.pt there (written every --ckpt-every seconds)")
        st = torch.load(sp, map_location=device, weights_only=False)
        for k, m in trained.items():
            m.load_state_dict(st[k])
        opt.load_state_dict(st["opt"])
        scaler.load_state_dict(st["scaler"])
        if ema is not None:
            for s_, v in zip(ema.shadow, st["ema"]):
                s_.copy_(v)
        gen.set_state(st["gen"])
        step, total, elapsed0 = int(st["step"]), int(st["total"]), float(st["elapsed_s"])
        losses, ema_loss = [tuple(x) for x in st["losses"]], st["ema_loss"]
        probe = None
        args.ckpt = args.resume
        print(f"resumed at step {step}/{total} ({elapsed0:.0f}s trained)", flush=True)

    def save_state():
        ck = Path(args.ckpt)
        ck.mkdir(parents=True, exist_ok=True)
        torch.save({**{k: m.state_dict() for k, m in trained.items()}, "opt": opt.state_dict(), "scaler": scaler.state_dict(),
                    "ema": [x.clone() for x in ema.shadow] if ema is not None else None, "gen": gen.get_state(),
                    "step": step, "total": total, "elapsed_s": elapsed0 + time.time() - t0, "losses": losses,
                    "ema_loss": ema_loss, "args": vars(args)}, ck / "state.pt.tmp")
        os.replace(ck / "state.pt.tmp", ck / "state.pt")

    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 2) - 1)
    from torch.utils.data import Subset

    # item i of the stream is a pure function of (data seed, i): a resume continues the same stream
    data = Subset(PretrainDomain(resolution=bb.resolution, split="train", seed=args.data_seed, length=10**9,
                                 looks=args.looks),
                  range(step * args.batch_size, 10**9))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0,
                        prefetch_factor=8 if workers > 0 else None)
    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))

    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=step, desc=f"pretrain {args.world}", mininterval=5.0)
    t0 = time.time()
    last_ckpt = t0
    t_probe = None
    for m in trained.values():
        m.train()
    for batch in loader:
        if step >= total:
            break
        if probe and step == probe[0]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_probe = time.time()
        if probe and step == probe[1]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per = (time.time() - t_probe) / (probe[1] - probe[0])
            left = args.time_budget - (elapsed0 + time.time() - t0)
            total = max(probe[1] + 1, probe[1] + int(left / per))
            print(f"probe: {per * 1000:.1f} ms/step -> --steps {total}", flush=True)
            if bar is not None:
                bar.total = total
                bar.refresh()
        for gp in opt.param_groups:
            gp["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=ac_dtype, enabled=ac_dtype is not None):
            loss = bb.training_loss(bb.denoiser, batch, generator=gen)
        scaler.scale(loss).backward()
        if args.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(step)
        step += 1
        if step % 10 == 0 or step == total:
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"non-finite loss {lv} at step {step}")
            ema_loss = lv if ema_loss is None else 0.95 * ema_loss + 0.05 * lv
            losses.append((step, lv))
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{ema_loss:.4f}", lr=f"{lr_at(step):.2e}")
        if args.no_progress and step % args.log_every == 0 and ema_loss is not None:
            print(f"step {step}/{total} loss {ema_loss:.4f} lr {lr_at(step):.2e} {elapsed0 + time.time() - t0:.0f}s",
                  flush=True)
        if time.time() - last_ckpt >= args.ckpt_every:
            save_state()
            last_ckpt = time.time()
        if args.stop_at is not None and step >= args.stop_at:
            save_state()
            print(f"stopped at step {step} (--stop-at); resume with --resume {args.ckpt}", flush=True)
            return None
    if device.type == "cuda":
        torch.cuda.synchronize()
    save_state()
    wall = elapsed0 + time.time() - t0
    if bar is not None:
        bar.close()
    if ema is not None:
        ema.copy_to()
    for m in trained.values():
        m.eval()
    for m in half_modules(bb, args.save_dtype):  # measure what ships: those weights rounded to fp16
        with torch.no_grad():
            for p_ in m.parameters():
                p_.copy_(p_.half().float())
    print(f"trained {step} steps in {wall:.1f}s; final loss (smoothed) {ema_loss:.4f}", flush=True)

    # held-out validation loss of the saved weights (fixed batch, fixed noise)
    val = PretrainDomain(resolution=bb.resolution, split="val", seed=args.data_seed, looks=args.looks)
    vb = collate([val[i] for i in range(min(256, len(val)))])
    bb.prompt_dropout = 0.0
    with torch.no_grad():
        vg = torch.Generator(device).manual_seed(1234)
        val_loss = float(sum(bb.training_loss(bb.denoiser, vb, generator=vg) for _ in range(4)) / 4)
    print(f"val loss {val_loss:.4f}", flush=True)

    cmd = " ".join(["python", "scripts/pretrain_tiny.py"] + (sys.argv[1:] if argv is None else list(argv)))
    repro = {k.replace("_", "-"): v for k, v in vars(args).items() if k in DEFAULTS}
    repro["steps"] = step
    repro["looks"] = args.looks
    if args.init:
        repro["init"] = args.init
    if args.world != "tiny":
        repro["world"] = args.world
        repro["vae"] = args.vae
    manifest = {
        "what": f"{args.world} embedded backbone ({type(bb).__name__}), pre-trained on sara.data.domain.PretrainDomain",
        "world": args.world, "looks": args.looks, "init": args.init, "vae": vae_manifest,
        "command": cmd,
        "reproduce": "python scripts/pretrain_tiny.py " + " ".join(f"--{k} {v}" for k, v in repro.items())
        + (f" --arch '{args.arch}'" if args.arch else ""),
        "seed": args.seed, "data_seed": args.data_seed, "steps": step, "batch_size": args.batch_size,
        "samples_seen": step * args.batch_size,
        "hyper": {k: getattr(args, k) for k in DEFAULTS}, "arch": arch,
        "params": {**n_params, **({"vae": sum(p.numel() for p in bb.vae.parameters())} if bb.vae is not None else {})},
        "save_dtype": args.save_dtype, "wall_time_s": round(wall, 1), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({os.cpu_count()} cores)", "precision": prec, "loader_workers": workers,
        "final_loss": ema_loss, "val_loss": val_loss, "loss_curve": losses[:: max(1, len(losses) // 100)],
        "versions": versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if args.init:
        chain_init(manifest, Path(args.init), args.world)
    if args.eval_prompts:
        bb.prompt_dropout = 0.0
        t1 = time.time()
        pf = prompt_following(bb, args.eval_prompts, batch_size=250 if device.type == "cuda" else 50)
        pf["wall_s"] = round(time.time() - t1, 1)
        manifest["prompt_following"] = pf
        print("prompt following:", json.dumps(pf), flush=True)
    bb.to("cpu")
    for m in half_modules(bb, args.save_dtype):
        torch.nn.Module.to(m, torch.float16)  # (diffusers' own .to warns about casting)
    atomic_save(bb, Path(args.out), manifest)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"saved {args.out} ({size / 1e6:.1f} MB)", flush=True)
    return manifest


if __name__ == "__main__":
    main()
