#!/usr/bin/env python
"""Train the embedded world's evaluators and write them to ``sara/zoo/evaluators/``.

    python scripts/train_evaluators.py                      # the shipped weights (GPU: ~3 min)
    python scripts/train_evaluators.py --quick --out /tmp/z  # a smoke run (seconds, CPU)

Three models (code in :mod:`sara.metrics.embedded`), trained on ground truth from :mod:`sara.data`
(the procedural domain and the five styles, items from :mod:`sara.metrics.evaluator_data`):

* ``clip/``  — open_clip CLIP (32×32 ViT + small text transformer), contrastive loss with
  one-attribute-changed and style-swapped captions as extra negatives; style images are captioned
  ``"<Name> style, <caption>"`` as in the paper's training;
* ``fid_net.safetensors`` — CNN classifying style (base + 5; pixel blends of a styled render with
  its plain render carry soft labels) and present colours/shapes/sizes; FID uses its 64-d features;
* ``attr_vqa.safetensors`` — attribute VQA (image, (size?, colour, shape) query) → yes/no.

``manifest.json`` records the command, seeds, steps, wall time, device and library versions.
Validate with ``python scripts/validate_evaluators.py``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sara.io import atomic_write_text  # noqa: E402
from sara.metrics import evaluator_data as ED  # noqa: E402
from sara.metrics.embedded import (  # noqa: E402
    AttrVQA, FIDNet, WordTokenizer, clip_model_config, domain_words, save_safetensors,
)


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ----------------------------------------------------------------------------- tensors


def images_tensor(items, key="image") -> torch.Tensor:
    a = np.stack([it[key] for it in items])  # N,H,W,3 uint8
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW


def to_unit(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float() / 127.5 - 1


def augment(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Mild corruptions seen in generated samples: gaussian noise and blur (x in [-1, 1])."""
    b = x.shape[0]
    dev = x.device
    sigma = torch.rand(b, 1, 1, 1, device=dev) * 0.12
    x = x + torch.randn_like(x) * sigma * (torch.rand(b, 1, 1, 1, device=dev) < 0.5)
    blur = torch.rand(b, device=dev) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0], device=dev)
        k = (k[:, None] * k[None, :]) / 16
        xb = Fn.conv2d(Fn.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3), groups=3)
        x = x.clone()
        x[blur] = xb
    return x.clamp(-1.2, 1.2)


def attr_multi_hot(items) -> torch.Tensor:
    from sara.data.procedural import COLOUR_NAMES, SHAPES, SIZES

    names = list(COLOUR_NAMES) + list(SHAPES) + list(SIZES)
    out = torch.zeros(len(items), len(names))
    for i, it in enumerate(items):
        for a in it["attrs"]:
            for k in ("colour", "shape", "size"):
                out[i, names.index(a[k])] = 1
    return out


def style_index(items) -> torch.Tensor:
    return torch.tensor([ED.KINDS.index(it["kind"]) for it in items], dtype=torch.long)


def cosine_lr(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def autocast(device):
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ----------------------------------------------------------------------------- CLIP


def clip_eval(model, tok, val_items, device, n_retrieval=100, seed=0):
    """(text->image top-1 among the first n_retrieval items [ground-truth: retrieved image has the
    query's caption], matching caption beats one-attribute-changed caption)."""
    model.eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        x = to_unit(images_tensor(val_items)).to(device)
        fi = Fn.normalize(model.encode_image(x).float(), dim=-1)
        texts = [it["text"] for it in val_items]
        ft = Fn.normalize(model.encode_text(tok(texts).to(device)).float(), dim=-1)
        neg = [ED.one_attribute_changed(it, rng) for it in val_items]
        fn_ = Fn.normalize(model.encode_text(tok(neg).to(device)).float(), dim=-1)
    n = min(n_retrieval, len(val_items))
    sim = ft[:n] @ fi[:n].T
    best = sim.argmax(1).cpu().numpy()
    retr = float(np.mean([texts[int(b)] == texts[i] for i, b in enumerate(best)]))
    attr = float(((fi * ft).sum(-1) > (fi * fn_).sum(-1)).float().mean())
    model.train()
    return retr, attr


def train_clip(pool, val_items, args, device, out_dir: Path):
    import open_clip

    tok = WordTokenizer(domain_words(), context_length=args.context_length)
    cfg = clip_model_config(tok.vocab_size, args.context_length, embed_dim=args.clip_embed,
                            vision_width=args.clip_width, vision_layers=args.clip_layers,
                            text_width=args.clip_text_width, text_layers=args.clip_text_layers)
    tmp_cfg = out_dir / "clip"
    tmp_cfg.mkdir(parents=True, exist_ok=True)
    (tmp_cfg / "open_clip_config.json").write_text(json.dumps(cfg, indent=1))
    from sara.metrics.clip_score import quiet_open_clip

    with quiet_open_clip():  # (it would warn that the model starts from random weights: intended)
        model = open_clip.create_model(f"local-dir:{tmp_cfg}", device=device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"CLIP: {n_params / 1e6:.2f}M params, vocab {tok.vocab_size}")

    rng = np.random.default_rng(args.seed)
    x_all = images_tensor(pool).to(device)
    texts = [it["text"] for it in pool]
    cap_ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    cid = torch.tensor([cap_ids[t] for t in texts], device=device)
    t_all = tok(texts).to(device)
    # hard negatives: per item, K one-attribute-changed captions and one style-swapped caption
    K = 3
    negs = []
    for it in pool:
        row = [ED.one_attribute_changed(it, rng) for _ in range(K)]
        plain = it["text"].split("style, ", 1)[-1]
        others = [s for s in ED.KINDS_STYLES if not it["text"].startswith(s + " ")]
        other = str(rng.choice(others))
        row.append(f"{other} style, {plain}" if it["kind"] == "base" or rng.random() < 0.7 else plain)
        negs.append(row)
    neg_tok = torch.stack([tok(r) for r in negs]).to(device)  # N, K+1, L

    opt = torch.optim.AdamW(model.parameters(), lr=args.clip_lr, betas=(0.9, 0.98), weight_decay=0.05)
    n = len(pool)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    t0 = time.time()
    steps_done = 0
    for step in range(args.clip_steps):
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, args.clip_steps, args.clip_lr, max(1, args.clip_steps // 20))
        idx = torch.randint(0, n, (args.batch,), generator=g).to(device)
        x = augment(to_unit(x_all[idx]))
        nsel = torch.randint(0, K + 1, (args.batch,), generator=g).to(device)
        with autocast(device):
            fi = Fn.normalize(model.encode_image(x), dim=-1)
            ft = Fn.normalize(model.encode_text(t_all[idx]), dim=-1)
            fh = Fn.normalize(model.encode_text(neg_tok[idx, nsel]), dim=-1)
            scale = model.logit_scale.exp().clamp(max=100)
            li2t = scale * fi @ torch.cat([ft, fh]).T  # B x 2B
            lt2i = scale * ft @ fi.T
        same = (cid[idx][:, None] == cid[idx][None, :]).float()
        tgt = same / same.sum(1, keepdim=True)
        tgt_i2t = torch.cat([tgt, torch.zeros_like(tgt)], 1)
        loss = 0.5 * (torch.sum(-tgt_i2t * Fn.log_softmax(li2t.float(), 1), 1).mean()
                      + torch.sum(-tgt * Fn.log_softmax(lt2i.float(), 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        if (step + 1) % args.eval_every == 0 or step + 1 == args.clip_steps:
            retr, attr = clip_eval(model, tok, val_items, device)
            log(f"CLIP step {step + 1}/{args.clip_steps} loss {loss.item():.3f} scale {scale.item():.1f} "
                f"val retrieval {retr:.3f} attr-vs-changed {attr:.3f} ({time.time() - t0:.0f}s)")
            if args.early_stop and step + 1 >= args.clip_steps // 3 and retr >= 0.97 and attr >= 0.97:
                log("CLIP: targets met with margin, stopping early")
                break
    model.eval()
    retr, attr = clip_eval(model, tok, val_items, device)
    # write the open_clip local-dir: config + weights + tokenizer
    save_safetensors(model, tmp_cfg / "open_clip_model.safetensors", config=None, half=True)
    tok.save(tmp_cfg / "sara_tokenizer.json")
    return {"steps": steps_done, "params": n_params, "seconds": time.time() - t0, "val_retrieval": retr,
            "val_attr_vs_changed": attr, "config": cfg["model_cfg"]}


# ----------------------------------------------------------------------------- FIDNet


def train_fid(pool, pairs, args, device, out_dir: Path):
    net = FIDNet(width=args.fid_width, feat_dim=args.fid_dim).to(device)
    x_all = images_tensor(pool).to(device)
    y_all = style_index(pool).to(device)
    a_all = attr_multi_hot(pool).to(device)
    # blend pairs: styled and plain 64 renders of one scene, resized to 32
    s32 = torch.from_numpy(np.stack([ED.to32(p["styled64"]) for p in pairs])).permute(0, 3, 1, 2).to(device)
    p32 = torch.from_numpy(np.stack([ED.to32(p["plain64"]) for p in pairs])).permute(0, 3, 1, 2).to(device)
    py = style_index(pairs).to(device)
    pa = attr_multi_hot(pairs).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.fid_lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed + 1)
    n, m = len(pool), len(pairs)
    nb = args.batch // 4  # share of blended pairs in a batch
    t0 = time.time()
    for step in range(args.fid_steps):
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, args.fid_steps, args.fid_lr, max(1, args.fid_steps // 20))
        idx = torch.randint(0, n, (args.batch - nb,), generator=g).to(device)
        jdx = torch.randint(0, m, (nb,), generator=g).to(device)
        alpha = torch.rand(nb, device=device)
        xb = alpha[:, None, None, None] * s32[jdx].float() + (1 - alpha[:, None, None, None]) * p32[jdx].float()
        x = torch.cat([x_all[idx].float(), xb.round()]) / 127.5 - 1
        ys = torch.zeros(args.batch, len(ED.KINDS), device=device)
        ys[torch.arange(args.batch - nb, device=device), y_all[idx]] = 1
        yb = torch.zeros(nb, len(ED.KINDS), device=device)
        yb[torch.arange(nb, device=device), py[jdx]] = alpha
        yb[:, 0] += 1 - alpha
        ys[args.batch - nb:] = yb
        attrs = torch.cat([a_all[idx], pa[jdx]])
        with autocast(device):
            f = net.features(x)
            ls, la = net.heads(f)
        loss = torch.sum(-ys * Fn.log_softmax(ls.float(), 1), 1).mean() + Fn.binary_cross_entropy_with_logits(la.float(), attrs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.fid_steps:
            acc = (ls[: args.batch - nb].argmax(1) == y_all[idx]).float().mean().item()
            log(f"FIDNet step {step + 1}/{args.fid_steps} loss {loss.item():.4f} style acc {acc:.3f} ({time.time() - t0:.0f}s)")
    net.eval()
    save_safetensors(net, out_dir / "fid_net.safetensors", config=net.config, half=True)
    return {"steps": args.fid_steps, "params": sum(p.numel() for p in net.parameters()), "seconds": time.time() - t0,
            "config": net.config}


# ----------------------------------------------------------------------------- VQA


def vqa_tensors(net: AttrVQA, items, rng, per_item: int):
    qs, ys = [], []
    for it in items:
        for _ in range(per_item):
            q, y = ED.vqa_question(it, rng)
            qs.append(q)
            ys.append(y)
    s, c, h = net.query_indices(qs)
    n = len(items)
    return (s.view(n, per_item), c.view(n, per_item), h.view(n, per_item),
            torch.tensor(ys, dtype=torch.float32).view(n, per_item))


def vqa_eval(net, items, device, seed=7, per_item=4):
    rng = np.random.default_rng(seed)
    s, c, h, y = vqa_tensors(net, items, rng, per_item)
    x = to_unit(images_tensor(items)).to(device)
    net.eval()
    correct = 0
    with torch.no_grad():
        for k in range(per_item):
            logit = net(x, s[:, k].to(device), c[:, k].to(device), h[:, k].to(device))
            correct += ((logit > 0).float().cpu() == y[:, k]).sum().item()
    net.train()
    return correct / (len(items) * per_item)


def train_vqa(pool, val_items, args, device, out_dir: Path):
    from sara.data.procedural import COLOUR_NAMES, SHAPES, SIZES

    net = AttrVQA(list(SIZES), list(COLOUR_NAMES), list(SHAPES), width=args.vqa_width).to(device)
    rng = np.random.default_rng(args.seed + 2)
    per_item = 4
    s, c, h, y = (t.to(device) for t in vqa_tensors(net, pool, rng, per_item))
    x_all = images_tensor(pool).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.vqa_lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed + 2)
    n = len(pool)
    t0 = time.time()
    for step in range(args.vqa_steps):
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, args.vqa_steps, args.vqa_lr, max(1, args.vqa_steps // 20))
        idx = torch.randint(0, n, (args.batch,), generator=g).to(device)
        k = torch.randint(0, per_item, (args.batch,), generator=g).to(device)
        x = augment(to_unit(x_all[idx]))
        with autocast(device):
            logit = net(x, s[idx, k], c[idx, k], h[idx, k])
        loss = Fn.binary_cross_entropy_with_logits(logit.float(), y[idx, k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.vqa_steps:
            acc = vqa_eval(net, val_items, device)
            log(f"VQA step {step + 1}/{args.vqa_steps} loss {loss.item():.4f} val acc {acc:.3f} ({time.time() - t0:.0f}s)")
    net.eval()
    acc = vqa_eval(net, val_items, device)
    save_safetensors(net, out_dir / "attr_vqa.safetensors", config=net.config, half=True)
    return {"steps": args.vqa_steps, "params": sum(p.numel() for p in net.parameters()), "seconds": time.time() - t0,
            "val_acc": acc, "config": net.config}


# ----------------------------------------------------------------------------- main


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "open_clip_torch", "clean-fid", "pillow", "scipy", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "sara" / "zoo" / "evaluators"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=ED.default_workers())
    p.add_argument("--only", default="clip,fid,vqa", help="comma list of models to train")
    p.add_argument("--n-base", type=int, default=30000)
    p.add_argument("--n-style", type=int, default=4000, help="styled images per style")
    p.add_argument("--n-pairs", type=int, default=1000, help="styled/plain pairs per style (FID blends)")
    p.add_argument("--n-val", type=int, default=600)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument("--clip-steps", type=int, default=6000)
    p.add_argument("--clip-lr", type=float, default=1e-3)
    p.add_argument("--clip-embed", type=int, default=128)
    p.add_argument("--clip-width", type=int, default=160)
    p.add_argument("--clip-layers", type=int, default=4)
    p.add_argument("--clip-text-width", type=int, default=128)
    p.add_argument("--clip-text-layers", type=int, default=3)
    p.add_argument("--fid-steps", type=int, default=2500)
    p.add_argument("--fid-lr", type=float, default=2e-3)
    p.add_argument("--fid-width", type=int, default=32)
    p.add_argument("--fid-dim", type=int, default=64)
    p.add_argument("--vqa-steps", type=int, default=3000)
    p.add_argument("--vqa-lr", type=float, default=2e-3)
    p.add_argument("--vqa-width", type=int, default=48)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--no-early-stop", dest="early_stop", action="store_false")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data and a handful of steps")
    p.add_argument("--retry-failed", default=None, metavar="VALIDATION_JSON",
                   help="retrain only the models whose checks failed in this validate_evaluators.py --json "
                        "output, with twice the steps")
    a = p.parse_args(argv)
    if a.retry_failed:
        failed = json.loads(Path(a.retry_failed).read_text()).get("failed", [])
        only = sorted({"clip" if f.startswith("clip") else "fid" if f.startswith("fid") else "vqa" for f in failed})
        a.only = ",".join(only) if only else "none"
        a.clip_steps, a.fid_steps, a.vqa_steps = 2 * a.clip_steps, 2 * a.fid_steps, 2 * a.vqa_steps
    if a.quick:
        a.n_base, a.n_style, a.n_pairs, a.n_val, a.batch = 64, 12, 8, 24, 16
        a.clip_steps, a.fid_steps, a.vqa_steps, a.eval_every = 3, 3, 3, 2
        a.clip_width, a.clip_layers, a.clip_text_width, a.clip_text_layers, a.clip_embed = 32, 1, 32, 1, 32
        a.fid_width, a.vqa_width = 8, 8
        a.workers = 0
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    only = set(args.only.split(","))
    if only == {"none"}:
        log("nothing to retrain")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    tseed, vseed = 1000 + args.seed, 2000 + args.seed
    log(f"device {device}; generating data with {args.workers} workers")
    pool = ED.make_pool(args.n_base, args.n_style, tseed, args.workers)
    nv = max(len(ED.KINDS), args.n_val)
    val = ED.make_items("base", nv // 2, vseed, args.workers)
    for s in ED.KINDS_STYLES:
        val += ED.make_items(s, nv // 2 // len(ED.KINDS_STYLES), vseed, args.workers)
    # interleave so the first 100 validation items mix base and styles
    rng = np.random.default_rng(args.seed)
    val = [val[i] for i in rng.permutation(len(val))]
    pairs = []
    if "fid" in only:
        for s in ED.KINDS_STYLES:
            pairs += ED.make_items(s, args.n_pairs, tseed + 500, args.workers, with_plain=True)
    t_data = time.time() - t_start
    log(f"data: {len(pool)} items, {len(pairs)} blend pairs, {len(val)} validation items in {t_data:.0f}s")

    report = {}
    if "clip" in only:
        report["clip"] = train_clip(pool, val, args, device, out)
    if "fid" in only:
        report["fid_net"] = train_fid(pool, pairs, args, device, out)
    if "vqa" in only:
        report["attr_vqa"] = train_vqa(pool, val, args, device, out)

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    history = manifest.get("history", [])
    if manifest.get("command"):
        history.append({"command": manifest["command"], "models": sorted(manifest.get("models", {})),
                        "wall_time_s": manifest.get("wall_time_s"), "device": manifest.get("device")})
    manifest.update({
        "history": history,
        "trained_now": sorted(report),
        "what": "evaluators of the embedded world (CLIP-style model, FID feature net, attribute VQA)",
        "command": "python scripts/train_evaluators.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "train_seed": tseed,
        "monitoring_seed": vseed,  # early stopping / progress; validate_evaluators.py uses 3000 + seed
        "data": {"n_base": args.n_base, "n_style_per_style": args.n_style, "n_blend_pairs_per_style": args.n_pairs,
                 "source": "sara.data.procedural + sara.data.styles via sara.metrics.evaluator_data",
                 "seconds": round(t_data, 1)},
        "args": vars(args),
        "models": {**manifest.get("models", {}), **report},
        "wall_time_s": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "versions": versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    manifest.pop("validation", None)  # stale once retrained; validate_evaluators.py --write-manifest
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, default=str))
    log(f"done in {time.time() - t_start:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
