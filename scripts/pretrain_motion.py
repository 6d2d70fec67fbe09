"""Pre-train the tiny motion prior: the motion modules of ``sara.backbones.motion`` on procedural
clips of moving objects filmed by a static camera (``sara.data.camera_motion.ProceduralClips``,
motion ``objects``), every spatial weight frozen (the shipped tiny image backbone), as AnimateDiff
trains its motion modules on top of a frozen image model.

    python scripts/pretrain_motion.py --out sara/zoo/motion --time-budget 1800 [--resume]

Resumable: a checkpoint (``<out>/.pretrain/state.pt``: motion weights, optimizer, step, RNG state,
wall time so far) is written every ``--checkpoint-every`` steps and when the time budget ends;
``--resume`` continues from it (same data order and noise: both are functions of (seed, step)).
Output: ``<out>/config.json`` + ``diffusion_pytorch_model.safetensors`` (a diffusers
``MotionAdapter``, fp16) and ``<out>/manifest.json`` (command, seed, steps, batch, wall time,
machine, loss curve). The adapter starts as an identity (zeroed output projections).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from sara.backbones import load_backbone
from sara.backbones.motion import MOTION_ROOT, is_motion_param
from sara.data import collate
from sara.data.camera_motion import ProceduralClips


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MOTION_ROOT)
    ap.add_argument("--steps", type=int, default=20000, help="optimizer steps (the time budget may stop it earlier)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds of training in this session")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out, ck_dir = a.out, a.out / ".pretrain"
    ck_dir.mkdir(parents=True, exist_ok=True)
    ck_path = ck_dir / "state.pt"

    bb = load_backbone({"kind": "motion", "name": "tiny_motion", "image": {"kind": "tiny", "name": "tiny"},
                      "num_frames": a.num_frames, "motion_adapter": None, "adapter_seed": a.seed})
    bb.to(a.device)
    den = bb.denoiser
    den.requires_grad_(False)
    params = [p for n, p in den.named_parameters() if is_motion_param(n)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    data = ProceduralClips("objects", bb.resolution, a.num_frames, seed=a.seed)
    cmd = "python scripts/pretrain_motion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    step, elapsed_before, curve, commands = 0, 0.0, [], []
    if a.resume and ck_path.is_file():
        st = torch.load(ck_path, map_location="cpu", weights_only=False)
        for k in ("batch_size", "num_frames", "seed", "lr"):
            if st["args"][k] != getattr(a, k):
                raise SystemExit(f"--resume: the checkpoint has {k}={st['args'][k]}, now {getattr(a, k)}")
        names = [n for n, _ in den.named_parameters() if is_motion_param(n)]
        with torch.no_grad():
            for n, p in zip(names, params):
                p.copy_(st["motion"][n])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"])
        step, elapsed_before, curve = st["step"], st["elapsed_s"], st["curve"]
        commands = list(st.get("commands", []))
        print(f"resumed at step {step} ({elapsed_before:.0f} s of training so far)", flush=True)
    elif ck_path.exists():
        raise SystemExit(f"{ck_path} exists: pass --resume to continue it (or delete it to start again)")
    commands.append(f"{cmd}  # from step {step}")

    def save_ckpt():
        state = {"motion": {n: p.detach().cpu().clone() for n, p in den.named_parameters() if is_motion_param(n)},
                 "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "step": step,
                 "elapsed_s": elapsed_before + (time.time() - t0), "curve": curve, "args": vars(a) | {"out": str(a.out)},
                 "commands": commands}
        tmp = ck_dir / ".state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, ck_path)

    t0 = time.time()
    den.train()
    losses = []
    while step < a.steps:
        if a.time_budget is not None and time.time() - t0 >= a.time_budget:
            break
        idx = range(step * a.batch_size, (step + 1) * a.batch_size)  # data order: a function of the step
        batch = collate([data[i] for i in idx])
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        loss = bb.training_loss(den, batch, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        losses.append(float(loss.detach()))
        if step % a.log_every == 0:
            curve.append([step, sum(losses) / len(losses)])
            print(f"step {step} loss {curve[-1][1]:.4f} ({elapsed_before + time.time() - t0:.0f} s)", flush=True)
            losses = []
        if step % a.checkpoint_every == 0:
            save_ckpt()
    save_ckpt()
    wall = elapsed_before + (time.time() - t0)
    bb.save_adapter(out)
    n_motion = sum(p.numel() for p in params)
    _atomic_json(out / "manifest.json", {
        "what": "tiny motion prior: MotionAdapter (sara.backbones.motion) on the shipped tiny image backbone, "
                "pre-trained on procedural clips of moving objects (static camera)",
        "command": commands[0].split("  #")[0], "sessions": commands, "seed": a.seed, "steps": step, "steps_planned": a.steps, "batch_size": a.batch_size,
        "num_frames": a.num_frames, "lr": a.lr, "clips_seen": step * a.batch_size,
        "motion_params": n_motion, "dtype": "float16", "wall_time_s": round(wall, 1),
        "device": a.device, "threads": a.threads, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "final_loss": curve[-1][1] if curve else None, "loss_curve": curve,
        "resume": "python scripts/pretrain_motion.py --resume --out <out> (same --batch-size/--num-frames/--seed/--lr)",
    })
    print(f"wrote {out} at step {step} ({wall:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
