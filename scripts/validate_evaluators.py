#!/usr/bin/env python
"""Check the embedded evaluators against ground truth; exit non-zero when a check fails.

    python scripts/validate_evaluators.py [--zoo sara/zoo/evaluators] [--device cpu] [--json out.json]

Every image is drawn fresh from :mod:`sara.data` with the validation seed ``3000 + seed`` (the
training script uses ``1000 + seed`` and monitors on ``2000 + seed``), and every metric goes
through the suite's own metric code (``sara.metrics.clip_score.load_clip``,
``sara.metrics.fid.compute_fid`` on folders of PNGs, ``sara.metrics.embedded.load_attr_vqa``).

Checks (targets of issue 5):
  clip_retrieval     text->image top-1 among 100 held-out pairs (50 base, 50 styled) >= 0.90; a
                     hit is an image whose true caption is the query (identical captions occur)
  clip_attribute     score(image, caption) > score(image, caption with one colour/shape/size of
                     one object changed), over held-out images >= 0.90
  fid_style_<S>      FID(two disjoint samples of style S) <= 0.10 * FID(base domain, S): as FID is
                     used, one sample the size of S's dataset (the reference) and one of 500 (the
                     paper's number of generated images); the base sample has 500 too. The ratio
                     with two dataset-sized samples is printed as info (ratio_equal_n)
  fid_blend_<S>      FID(blend, base domain) strictly increases with the pixel blend of S's render
                     with the plain render of the same scene at 0, 25, 50, 75, 100 %
  vqa_accuracy       attribute VQA on held-out yes/no questions >= 0.95
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sara.io import atomic_write_text  # noqa: E402
from sara.metrics import evaluator_data as ED  # noqa: E402

BLEND = (0.0, 0.25, 0.5, 0.75, 1.0)


def log(*a):
    print(*a, flush=True)


def _save(folder: Path, images) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    return folder


def check_clip(zoo, device, seed, workers, n_attr):
    from sara.metrics.clip_score import load_clip

    clip = load_clip("embedded", device=device, weights=zoo)
    vseed = 3000 + seed
    items = ED.make_items("base", 50, vseed, workers)
    for s in ED.KINDS_STYLES:
        items += ED.make_items(s, 10, vseed, workers)
    ims = [it["image"] for it in items]
    texts = [it["text"] for it in items]
    fi = clip.encode_images(ims)
    ft = clip.encode_texts(texts)
    best = (ft @ fi.T).argmax(1).cpu().numpy()
    hits = [texts[int(b)] == texts[i] for i, b in enumerate(best)]
    exact = float(np.mean(best == np.arange(len(items))))
    retrieval = float(np.mean(hits))

    rng = np.random.default_rng(vseed)
    att = ED.make_items("base", n_attr // 2, vseed, workers, start=1000)
    per = max(1, (n_attr - n_attr // 2) // len(ED.KINDS_STYLES))
    for s in ED.KINDS_STYLES:
        att += ED.make_items(s, per, vseed, workers, start=1000)
    neg = [ED.one_attribute_changed(it, rng) for it in att]
    fi = clip.encode_images([it["image"] for it in att])
    pos_s = (fi * clip.encode_texts([it["text"] for it in att])).sum(-1)
    neg_s = (fi * clip.encode_texts(neg)).sum(-1)
    win = (pos_s > neg_s).cpu().numpy()
    kinds = np.array([it["kind"] for it in att])
    return {
        "clip_retrieval": retrieval,
        "clip_retrieval_exact_index": exact,
        "clip_attribute": float(win.mean()),
        "clip_attribute_by_kind": {k: float(win[kinds == k].mean()) for k in ED.KINDS},
        "clip_mean_score_matching": float(100 * pos_s.mean()),
        "clip_mean_score_changed": float(100 * neg_s.mean()),
    }


def check_fid(zoo, device, seed, workers, n_base, n_blend, tmp: Path, n_style=None, n_eval=500):
    from sara.data.styles import STYLE_SIZES
    from sara.metrics.fid import compute_fid, embedded_extractor

    ext = embedded_extractor(device, zoo)
    vseed = 3000 + seed
    base = _save(tmp / "base", [it["image"] for it in ED.make_items("base", n_base, vseed, workers, start=5000)])
    out = {}
    for s in ED.KINDS_STYLES:
        n = STYLE_SIZES[s] if n_style is None else n_style
        items = ED.make_items(s, n + n_eval + n_blend, vseed, workers, start=5000, with_plain=True)
        a = _save(tmp / s / "A", [it["styled64"] for it in items[:n]])  # stands in for the dataset
        b_items = items[n: n + n_eval]  # stands in for the generated images
        b = _save(tmp / s / "B", [it["styled64"] for it in b_items])
        b_n = _save(tmp / s / "B_n", [it["styled64"] for it in b_items[:n]])
        within = compute_fid(b, a, ext, device, cache=False)
        within_equal_n = compute_fid(b_n, a, ext, device, cache=False)
        across = compute_fid(base, a, ext, device, cache=False)
        blend_items = items[n + n_eval:]
        to_base, to_style = [], []
        for alpha in BLEND:
            d = _save(tmp / s / f"blend{int(alpha * 100)}", [ED.blend(it["styled64"], it["plain64"], alpha) for it in blend_items])
            to_base.append(compute_fid(d, base, ext, device, cache=False))
            to_style.append(compute_fid(d, a, ext, device, cache=False))
        out[s] = {
            "n_dataset_sample": n,
            "n_eval_sample": n_eval,
            "fid_within_style": within,
            "fid_base_vs_style": across,
            "ratio": within / across,
            "fid_within_style_equal_n": within_equal_n,
            "ratio_equal_n": within_equal_n / across,
            "blend_fid_to_base": to_base,
            "blend_fid_to_style": to_style,
            "blend_monotonic_to_base": bool(all(x < y for x, y in zip(to_base, to_base[1:]))),
            "blend_monotonic_to_style": bool(all(x > y for x, y in zip(to_style, to_style[1:]))),
        }
    return out


def check_vqa(zoo, device, seed, workers, n_items):
    from sara.metrics.embedded import load_attr_vqa

    net = load_attr_vqa(zoo, device)
    vseed = 3000 + seed
    items = ED.make_items("base", n_items // 2, vseed, workers, start=20000)
    per = max(1, (n_items - n_items // 2) // len(ED.KINDS_STYLES))
    for s in ED.KINDS_STYLES:
        items += ED.make_items(s, per, vseed, workers, start=20000)
    rng = np.random.default_rng(vseed + 1)
    qs, ys, kinds, ims = [], [], [], []
    for it in items:
        for _ in range(2):
            q, y = ED.vqa_question(it, rng)
            qs.append(q)
            ys.append(y)
            kinds.append(it["kind"])
            ims.append(it["image"])
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    s, c, h = net.query_indices(qs)
    preds = []
    with torch.no_grad():
        for i in range(0, len(qs), 256):
            sl = slice(i, i + 256)
            preds.append((net(x[sl].to(device), s[sl].to(device), c[sl].to(device), h[sl].to(device)) > 0).cpu())
    pred = torch.cat(preds).numpy()
    ok = pred == np.array(ys, bool)
    kinds = np.array(kinds)
    return {"vqa_accuracy": float(ok.mean()), "vqa_n_questions": len(qs),
            "vqa_accuracy_by_kind": {k: float(ok[kinds == k].mean()) for k in ED.KINDS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(ROOT / "sara" / "zoo" / "evaluators"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=ED.default_workers())
    p.add_argument("--n-attr", type=int, default=1000)
    p.add_argument("--n-vqa", type=int, default=1000)
    p.add_argument("--n-base", type=int, default=500)
    p.add_argument("--n-blend", type=int, default=300)
    p.add_argument("--n-style", type=int, default=None, help="images of the dataset-like sample (default: the dataset's size)")
    p.add_argument("--n-eval", type=int, default=500, help="images of the generated-like sample (the paper's 500 prompts)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--write-manifest", action="store_true", help="store the results in the zoo's manifest.json")
    p.add_argument("--quick", action="store_true", help="smaller samples (smoke test; thresholds still applied)")
    a = p.parse_args(argv)
    if a.quick:
        a.n_attr, a.n_vqa, a.n_base, a.n_blend, a.n_style, a.n_eval = 60, 60, 40, 20, 30, 40
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    t0 = time.time()
    res = {"zoo": a.zoo, "seed": a.seed, "validation_seed": 3000 + a.seed, "device": device}
    res.update(check_clip(a.zoo, device, a.seed, a.workers, a.n_attr))
    with tempfile.TemporaryDirectory() as tmp:
        fid = check_fid(a.zoo, device, a.seed, a.workers, a.n_base, a.n_blend, Path(tmp), a.n_style, a.n_eval)
    res["fid"] = fid
    res.update(check_vqa(a.zoo, device, a.seed, a.workers, a.n_vqa))
    res["seconds"] = round(time.time() - t0, 1)

    checks = [
        ("clip_retrieval (text->image top-1 of 100)", res["clip_retrieval"], ">=", 0.90),
        ("clip_attribute (caption beats 1-attribute-changed)", res["clip_attribute"], ">=", 0.90),
    ]
    for s, r in fid.items():
        checks.append((f"fid_style_{s} (within / base-vs-style = {r['fid_within_style']:.3g} / {r['fid_base_vs_style']:.3g})",
                       r["ratio"], "<=", 0.10))
        checks.append((f"fid_blend_{s} (FID to base at 0..100%: {', '.join(f'{v:.3g}' for v in r['blend_fid_to_base'])})",
                       float(r["blend_monotonic_to_base"]), ">=", 1.0))
    checks.append(("vqa_accuracy (held-out yes/no)", res["vqa_accuracy"], ">=", 0.95))
    failed = []
    log(f"evaluator validation ({device}, validation seed {3000 + a.seed}, {res['seconds']}s)")
    for name, v, op, thr in checks:
        ok = v >= thr if op == ">=" else v <= thr
        if not ok:
            failed.append(name)
        log(f"  {'PASS' if ok else 'FAIL'}  {name}: {v:.4f} (target {op} {thr})")
    for s, r in fid.items():
        log(f"  info  {s}: FID to style sample at 0..100%: {', '.join(f'{v:.3g}' for v in r['blend_fid_to_style'])}"
            f" (decreasing: {r['blend_monotonic_to_style']}); within/base-vs-style with two {r['n_dataset_sample']}-image "
            f"samples: {r['ratio_equal_n']:.4f}")
    log(f"  info  CLIP attribute by kind: {json.dumps({k: round(v, 3) for k, v in res['clip_attribute_by_kind'].items()})}")
    log(f"  info  VQA accuracy by kind: {json.dumps({k: round(v, 3) for k, v in res['vqa_accuracy_by_kind'].items()})}")
    res["checks"] = [{"name": n, "value": v, "op": o, "target": t} for n, v, o, t in checks]
    res["failed"] = failed
    res["passed"] = not failed
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.write_manifest:
        mp = Path(a.zoo) / "manifest.json"
        m = json.loads(mp.read_text()) if mp.is_file() else {}
        m["validation"] = {"command": "python scripts/validate_evaluators.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           **{k: v for k, v in res.items() if k != "zoo"}}
        atomic_write_text(mp, json.dumps(m, indent=1))
    log("ALL PASSED" if not failed else f"FAILED: {len(failed)} check(s)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
