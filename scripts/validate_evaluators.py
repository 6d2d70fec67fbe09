#!/usr/bin/env python
"""Check the embedded evaluators against ground truth; exit non-zero when a check fails.

    python scripts/validate_evaluators.py [--zoo sara/zoo/evaluators] [--device cpu] [--json out.json]

Every image is drawn fresh from :mod:`sara.data` with the validation seed ``3000 + seed`` (the
training script uses ``1000 + seed`` and monitors on ``2000 + seed``), and every metric goes
through the suite's own metric code (``sara.metrics.clip_score.load_clip``,
``sara.metrics.fid.compute_fid`` on folders of PNGs, ``sara.metrics.embedded.load_attr_vqa``).

Captions carry content only (no style words): the CLIP evaluator must follow content whatever
the style (style strength is FID's job; the style classifier is reported as info).

Checks:
  clip_top1_base     text->image top-1 among 100 held-out base renders >= 0.90; a hit is an
                     image whose true caption is the query (identical captions occur)
  clip_top1_styled   the same among 100 styled renders (20 per style) >= 0.90
  clip_top1_gap      |clip_top1_base - clip_top1_styled| <= 0.03
  clip_attr_change_win[_base|_styled]  score(image, caption) > score(image, caption with one
                     colour/shape/size of one object changed) >= 0.95, over all held-out images,
                     over base renders and over styled renders
  info: --generated DIR  the same CLIP figures on sample folders of the base / a fine-tuned model
  info: clip_score_style_shift  mean CLIP score of a styled render minus that of the plain render
                     of the same scene (same caption): near 0 when the score ignores style
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


def _top1(clip, items) -> tuple[float, float]:
    """Text->image top-1 among ``items`` (hit: the retrieved image has the query's caption;
    identical captions occur) and the exact-index rate."""
    texts = [it["text"] for it in items]
    fi = clip.encode_images([it["image"] for it in items])
    ft = clip.encode_texts(texts)
    best = (ft @ fi.T).argmax(1).cpu().numpy()
    hits = [texts[int(b)] == texts[i] for i, b in enumerate(best)]
    return float(np.mean(hits)), float(np.mean(best == np.arange(len(items))))


def check_clip(zoo, device, seed, workers, n_attr, n_retrieval=100):
    """Captions carry content only (``evaluator_data``): the CLIP score must follow content
    whatever the style. Retrieval galleries: ``n_retrieval`` base renders; ``n_retrieval`` styled
    renders (an equal share per style)."""
    from sara.metrics.clip_score import load_clip

    clip = load_clip("embedded", device=device, weights=zoo)
    vseed = 3000 + seed
    per_style = max(1, n_retrieval // len(ED.KINDS_STYLES))
    base = ED.make_items("base", n_retrieval, vseed, workers)
    styled = [x for s in ED.KINDS_STYLES for x in ED.make_items(s, per_style, vseed, workers, with_plain=True)]
    top1_base, exact_base = _top1(clip, base)
    # style shift: score(styled render, caption) - score(plain render of the same scene, caption)
    ft = clip.encode_texts([it["text"] for it in styled])
    s_styled = 100 * (clip.encode_images([it["image"] for it in styled]) * ft).sum(-1).cpu().numpy()
    s_plain = 100 * (clip.encode_images([ED.to32(it["plain64"]) for it in styled]) * ft).sum(-1).cpu().numpy()
    shift = s_styled - s_plain
    kinds_r = np.array([it["kind"] for it in styled])
    top1_styled, exact_styled = _top1(clip, styled)
    top1_styled_by = {s: _top1(clip, [x for x in styled if x["kind"] == s])[0] for s in ED.KINDS_STYLES}

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
    by_kind = {k: float(win[kinds == k].mean()) for k in ED.KINDS}
    return {
        "clip_top1_base": top1_base,
        "clip_top1_styled": top1_styled,
        "clip_top1_gap": abs(top1_base - top1_styled),
        "clip_top1_styled_by_style": top1_styled_by,
        "clip_top1_exact_index": {"base": exact_base, "styled": exact_styled},
        "clip_retrieval_n": {"base": len(base), "styled": len(styled)},
        "clip_score_style_shift": float(shift.mean()),
        "clip_score_style_shift_by_style": {k: float(shift[kinds_r == k].mean()) for k in ED.KINDS_STYLES},
        "clip_score_plain_mean": float(s_plain.mean()),
        "clip_attr_change_win": float(win.mean()),
        "clip_attr_change_win_base": by_kind["base"],
        "clip_attr_change_win_styled": float(win[kinds != "base"].mean()),
        "clip_attr_change_win_by_kind": by_kind,
        "clip_mean_score_matching": float(100 * pos_s.mean()),
        "clip_mean_score_changed": float(100 * neg_s.mean()),
    }


def check_clip_generated(zoo, device, folder: Path, seed: int) -> dict:
    """The content CLIP on generated images (a sample folder with prompts.jsonl): text->image
    top-1 among the folder's images, and the prompt (style trigger dropped) beating a
    one-attribute-changed prompt."""
    from sara.metrics.clip_score import load_clip
    from sara.sample import read_prompts_file

    clip = load_clip("embedded", device=device, weights=zoo)
    rows = read_prompts_file(folder)
    items = [ED.item_from_prompt(r["text"]) for r in rows]
    fi = clip.encode_images([folder / r["file_name"] for r in rows])
    texts = [it["text"] for it in items]
    ft = clip.encode_texts(texts)
    best = (ft @ fi.T).argmax(1).cpu().numpy()
    top1 = float(np.mean([texts[int(b)] == texts[i] for i, b in enumerate(best)]))
    rng = np.random.default_rng(3000 + seed)
    neg = clip.encode_texts([ED.one_attribute_changed(it, rng) for it in items])
    win = float(((fi * ft).sum(-1) > (fi * neg).sum(-1)).float().mean())
    return {"folder": str(folder), "n": len(rows), "clip_top1": top1, "clip_attr_change_win": win,
            "clip_score_mean": float(100 * (fi * ft).sum(-1).mean())}


def check_style_classifier(zoo, device, seed, workers, n_per_kind):
    """Style-classifier accuracy (an extra metric beside FID): the FID network's style head on
    held-out renders, base + five styles (:func:`sara.metrics.style_acc.style_predictions`)."""
    from sara.metrics.style_acc import load_style_classifier, style_predictions

    net = load_style_classifier(zoo, device)
    vseed = 3000 + seed
    out = {}
    for k in ED.KINDS:
        items = ED.make_items(k, n_per_kind, vseed, workers, start=30000)
        pred = style_predictions([it["image"] for it in items], net)
        out[k] = float(np.mean([p == k for p in pred]))
    return {"style_classifier_acc": float(np.mean(list(out.values()))), "style_classifier_acc_by_kind": out,
            "style_classifier_n_per_kind": n_per_kind}


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


PARTS = ("clip", "style", "fid", "vqa")
_PART_MODEL = {"clip": "clip", "style": "fid_net", "fid": "fid_net", "vqa": "attr_vqa"}
_PART_KEYS = {"fid": ("fid",), "vqa": ("vqa_",), "style": ("style_classifier",), "clip": ("clip_",)}


def write_manifest(zoo: Path, res: dict, parts: set, command: str) -> None:
    """Store ``res`` as the manifest's ``validation``. Parts not checked now are carried over from
    the previous validation (``validation``, or ``validation_previous`` that train_evaluators.py
    keeps when it retrains some models) — only if their model was not retrained since."""
    mp = zoo / "manifest.json"
    m = json.loads(mp.read_text()) if mp.is_file() else {}
    prev = m.get("validation") or m.get("validation_previous") or {}
    val = {"command": command, **{k: v for k, v in res.items() if k != "zoo"}}
    carried = []
    for part in sorted(set(PARTS) - parts):
        if _PART_MODEL[part] in m.get("trained_now", []) and prev is m.get("validation_previous"):
            raise SystemExit(f"--write-manifest: {_PART_MODEL[part]} was retrained since the last validation; "
                             f"check part {part!r} too (--only ...,{part})")
        keys = [k for k in prev if any(k.startswith(p) for p in _PART_KEYS[part])]
        pchecks = [c for c in prev.get("checks", []) if any(c["name"].startswith(p) for p in _PART_KEYS[part])]
        if not keys and not pchecks:
            continue
        for k in keys:
            val[k] = prev[k]
        val["checks"] = val["checks"] + pchecks
        val["failed"] = val["failed"] + [f for f in prev.get("failed", []) if any(f.startswith(p) for p in _PART_KEYS[part])]
        carried.append(part)
    if carried:
        val["carried_over"] = {"parts": carried, "from_command": prev.get("command"), "device": prev.get("device"),
                               "seconds": prev.get("seconds")}
        val["passed"] = not val["failed"]
    m["validation"] = val
    m.pop("validation_previous", None)
    atomic_write_text(mp, json.dumps(m, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(ROOT / "sara" / "zoo" / "evaluators"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=ED.default_workers())
    p.add_argument("--n-attr", type=int, default=1000)
    p.add_argument("--n-vqa", type=int, default=1000)
    p.add_argument("--n-style-cls", type=int, default=200, help="held-out renders per kind for the style classifier")
    p.add_argument("--n-base", type=int, default=500)
    p.add_argument("--n-blend", type=int, default=300)
    p.add_argument("--n-style", type=int, default=None, help="images of the dataset-like sample (default: the dataset's size)")
    p.add_argument("--n-eval", type=int, default=500, help="images of the generated-like sample (the paper's 500 prompts)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--write-manifest", action="store_true", help="store the results in the zoo's manifest.json")
    p.add_argument("--quick", action="store_true", help="smaller samples (smoke test; thresholds still applied)")
    p.add_argument("--generated", nargs="*", default=[], metavar="DIR",
                   help="also check the CLIP evaluator on these sample folders (prompts.jsonl + images; info)")
    p.add_argument("--only", default="clip,style,fid,vqa",
                   help="parts to check (clip, style, fid, vqa); with --write-manifest the other parts' results are "
                        "carried over from the manifest's previous validation when their models were not retrained")
    a = p.parse_args(argv)
    parts = set(a.only.split(","))
    if not parts <= set(PARTS):
        p.error(f"--only: unknown part(s) {sorted(parts - set(PARTS))}; known: {', '.join(PARTS)}")
    if a.quick:
        a.n_attr, a.n_vqa, a.n_base, a.n_blend, a.n_style, a.n_eval, a.n_style_cls = 60, 60, 40, 20, 30, 40, 10
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    t0 = time.time()
    res = {"zoo": a.zoo, "seed": a.seed, "validation_seed": 3000 + a.seed, "device": device}
    res["parts"] = sorted(parts)
    if "clip" in parts:
        res.update(check_clip(a.zoo, device, a.seed, a.workers, a.n_attr))
    if a.generated:
        res["clip_generated"] = [check_clip_generated(a.zoo, device, Path(d), a.seed) for d in a.generated]
    if "style" in parts:
        res.update(check_style_classifier(a.zoo, device, a.seed, a.workers, a.n_style_cls))
    fid = {}
    if "fid" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            fid = check_fid(a.zoo, device, a.seed, a.workers, a.n_base, a.n_blend, Path(tmp), a.n_style, a.n_eval)
        res["fid"] = fid
    if "vqa" in parts:
        res.update(check_vqa(a.zoo, device, a.seed, a.workers, a.n_vqa))
    res["seconds"] = round(time.time() - t0, 1)

    checks = []
    if "clip" in parts:
        checks += [
            ("clip_top1_base (text->image top-1 among 100 base renders)", res["clip_top1_base"], ">=", 0.90),
            ("clip_top1_styled (text->image top-1 among 100 styled renders)", res["clip_top1_styled"], ">=", 0.90),
            ("clip_top1_gap (|base - styled|)", res["clip_top1_gap"], "<=", 0.03),
            ("clip_attr_change_win (caption beats 1-attribute-changed)", res["clip_attr_change_win"], ">=", 0.95),
            ("clip_attr_change_win_base", res["clip_attr_change_win_base"], ">=", 0.95),
            ("clip_attr_change_win_styled", res["clip_attr_change_win_styled"], ">=", 0.95),
        ]
    for s, r in fid.items():
        checks.append((f"fid_style_{s} (within / base-vs-style = {r['fid_within_style']:.3g} / {r['fid_base_vs_style']:.3g})",
                       r["ratio"], "<=", 0.10))
        checks.append((f"fid_blend_{s} (FID to base at 0..100%: {', '.join(f'{v:.3g}' for v in r['blend_fid_to_base'])})",
                       float(r["blend_monotonic_to_base"]), ">=", 1.0))
    if "vqa" in parts:
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
    if "clip" in parts:
        log(f"  info  CLIP score of a styled render minus its plain render (same scene, caption): "
            f"{res['clip_score_style_shift']:+.2f} (plain mean {res['clip_score_plain_mean']:.1f}); by style "
            f"{json.dumps({k: round(v, 2) for k, v in res['clip_score_style_shift_by_style'].items()})}")
        log(f"  info  CLIP top-1 on styled renders by style: {json.dumps({k: round(v, 3) for k, v in res['clip_top1_styled_by_style'].items()})}")
        log(f"  info  CLIP attribute-change win by kind: {json.dumps({k: round(v, 3) for k, v in res['clip_attr_change_win_by_kind'].items()})}")
    for g in res.get("clip_generated", []):
        log(f"  info  CLIP on {g['n']} generated images of {g['folder']}: top-1 {g['clip_top1']:.3f}, "
            f"prompt beats 1-attribute-changed {g['clip_attr_change_win']:.3f}, mean score {g['clip_score_mean']:.1f}")
    if "style" in parts:
        log(f"  info  style classifier accuracy {res['style_classifier_acc']:.3f}: "
            f"{json.dumps({k: round(v, 3) for k, v in res['style_classifier_acc_by_kind'].items()})}")
    if "vqa" in parts:
        log(f"  info  VQA accuracy by kind: {json.dumps({k: round(v, 3) for k, v in res['vqa_accuracy_by_kind'].items()})}")
    res["checks"] = [{"name": n, "value": v, "op": o, "target": t} for n, v, o, t in checks]
    res["failed"] = failed
    res["passed"] = not failed
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.write_manifest:
        write_manifest(Path(a.zoo), res, parts, "python scripts/validate_evaluators.py " + " ".join(sys.argv[1:] if argv is None else argv))
    log("ALL PASSED" if not failed else f"FAILED: {len(failed)} check(s)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
