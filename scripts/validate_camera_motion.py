"""Validate the camera-motion estimator (sara.metrics.camera_motion) on held-out ground truth.

Clips of every camera motion are drawn from the procedural generator's validation stream
(``split="val"``: other scenes and speeds than any training clip) and classified; the table gives,
per true motion, the share classified correctly and the confusions.

    python scripts/validate_camera_motion.py [--n 200] [--json OUT.json] [--doc docs/video.md]

``--doc`` replaces the block between ``<!-- motion-validation:start -->`` and
``<!-- motion-validation:end -->`` of that file with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from sara.data.camera_motion import CAMERA_MOTIONS, NUM_FRAMES, make_clip
from sara.metrics.camera_motion import MOTIONS, SCALE_THRESHOLD, SHIFT_THRESHOLD, estimate_motion

START, END = "<!-- motion-validation:start -->", "<!-- motion-validation:end -->"


def validate(n: int, seed: int = 0, size: int = 32, num_frames: int = NUM_FRAMES, motions=CAMERA_MOTIONS) -> dict:
    rows = {}
    for m in motions:
        labels = [estimate_motion(make_clip(m, i, seed, "val", num_frames, size)[0]).label for i in range(n)]
        c = Counter(labels)
        rows[m] = {"n": n, "correct": c.get(m, 0), "accuracy": c.get(m, 0) / n,
                   "confusions": {k: v for k, v in c.most_common() if k != m}}
    return rows


def table(rows: dict, meta: dict) -> str:
    lines = ["| true camera motion | clips | classified correctly | confused with |", "|---|---:|---:|---|"]
    for m, r in rows.items():
        conf = ", ".join(f"{k} {v}" for k, v in r["confusions"].items()) or "-"
        lines.append(f"| {m} | {r['n']} | {100 * r['accuracy']:.1f}% | {conf} |")
    lines.append("")
    lines.append(f"Held-out procedural clips ({meta['num_frames']} frames of {meta['size']}x{meta['size']}, "
                 f"validation stream, seed {meta['seed']}); thresholds: |log scale| {meta['scale_threshold']}, "
                 f"shift {meta['shift_threshold']} of the frame side. Command: `{meta['command']}` "
                 f"({meta['wall_time_s']:.0f} s on {meta['machine']}).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="clips per motion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=NUM_FRAMES)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None)
    a = ap.parse_args(argv)
    t0 = time.time()
    rows = validate(a.n, a.seed, a.size, a.frames)
    meta = {"n": a.n, "seed": a.seed, "size": a.size, "num_frames": a.frames, "scale_threshold": SCALE_THRESHOLD,
            "shift_threshold": SHIFT_THRESHOLD, "labels": list(MOTIONS), "wall_time_s": time.time() - t0,
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.system()}",
            "command": "python scripts/validate_camera_motion.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = table(rows, meta)
    print(md)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    if a.doc:
        text = a.doc.read_text(encoding="utf-8")
        if START not in text or END not in text:
            raise SystemExit(f"{a.doc}: no {START} ... {END} block to replace")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        a.doc.write_text(head + START + "\n" + md + "\n" + END + tail, encoding="utf-8")
    worst = min(r["accuracy"] for r in rows.values())
    return 0 if worst >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
