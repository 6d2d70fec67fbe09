"""Video experiment (paper App. E, Fig. 15): the metrics table per camera motion and method, and a
Fig. 15-like grid of frame strips (per motion: a training clip, then each method's first clips).

    python -m analysis.video_table [--root outputs/runs] [--experiment video] [--out outputs/analysis/video]

Writes ``video_table.md`` / ``video_table.csv`` (camera_motion_accuracy, frame_clip,
temporal_consistency, frame_fid, trainable parameters, training time per motion x method; the
``prior`` rows are the motion prior without fine-tuning) and ``video_grid_<motion>.png``.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

METRICS = ("camera_motion_accuracy", "frame_clip", "temporal_consistency", "frame_fid")
METHOD_ORDER = ("prior", "full", "lora", "adaptformer", "lt_sft", "sara")
MOTION_ORDER = ("zoom_in", "zoom_out", "pan_right", "pan_left", "tilt_up", "tilt_down", "static")


def _order(values, order):
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def load(root: str, experiment: str):
    """The finished runs of ``experiment``; its variant ``prior`` (the motion prior, not fine-tuned)
    becomes the method ``prior``."""
    from sara.results import load_results

    df = load_results(root, experiment=experiment)
    if not len(df):
        raise SystemExit(f"no finished runs of experiment {experiment!r} under {root}: run bash experiments/video.sh first")
    if "variant" in df:
        df.loc[df["variant"] == "prior", "method"] = "prior"
    return df


def table(df) -> tuple[list[str], list[list[str]]]:
    cols = ["motion", "method", "trainable params"] + list(METRICS) + ["train s", "runs"]
    rows = []
    for motion in _order(df["dataset"].unique(), MOTION_ORDER):
        g = df[df["dataset"] == motion]
        for method in _order(g["method"].unique(), METHOD_ORDER):
            r = g[g["method"] == method]
            cells = [motion, method, f"{int(r['trainable_params'].iloc[0]):,}" if method != "prior" else "0"]
            for m in METRICS:
                v = r[m].astype(float).mean() if m in r else float("nan")
                cells.append("n/a" if v != v else (f"{100 * v:.0f}%" if m == "camera_motion_accuracy" else f"{v:.3f}"))
            ts = r["train_time_s"].astype(float).mean() if "train_time_s" in r else float("nan")
            cells += [f"{ts:.0f}" if ts == ts else "-", str(len(r))]
            rows.append(cells)
    return cols, rows


def markdown(cols, rows) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _strips(folder, n):
    p = Path(str(folder))
    return sorted(f for f in p.glob("*.png"))[:n] if p.is_dir() else []


def _training_strips(dataset_dir, n, num_frames):
    from PIL import Image

    from sara.data.camera_motion import VideoCaptionFolder, clip_to_strip

    try:
        ds = VideoCaptionFolder(dataset_dir, 32, num_frames=num_frames)
    except Exception:  # noqa: BLE001 - the grid is drawn without the training row
        return []
    return [Image.fromarray(clip_to_strip(ds.clip(i))) for i in range(min(n, len(ds)))]


def grid(df, out: Path, n: int = 2, scale: int = 3) -> list[Path]:
    """One PNG per motion: rows = training clips, then each method (its first ``n`` clips)."""
    from PIL import Image, ImageDraw

    written = []
    for motion in _order(df["dataset"].unique(), MOTION_ORDER):
        g = df[df["dataset"] == motion]
        rows = []
        ds = g["paths.dataset"].dropna() if "paths.dataset" in g else []
        nf = int(g["config.backbone.num_frames"].iloc[0]) if "config.backbone.num_frames" in g else 8
        train = _training_strips(ds.iloc[0], n, nf) if len(ds) else []
        if train:
            rows.append(("training clips", train))
        for method in _order(g["method"].unique(), METHOD_ORDER):
            r = g[g["method"] == method].iloc[0]
            files = _strips(r.get("paths.samples"), n)
            if files:
                rows.append((method, [Image.open(f).convert("RGB") for f in files]))
        if not rows:
            continue
        w = max(sum(im.width for im in ims) + 4 * (len(ims) - 1) for _, ims in rows) * scale
        h = rows[0][1][0].height * scale
        label_w, pad = 120, 4
        canvas = Image.new("RGB", (label_w + w, (h + pad) * len(rows) + 20), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 4), f"{motion}: frames left to right", fill="black")
        for i, (label, ims) in enumerate(rows):
            y = 20 + i * (h + pad)
            draw.text((4, y + h // 2 - 5), label, fill="black")
            x = label_w
            for im in ims:
                canvas.paste(im.resize((im.width * scale, im.height * scale), Image.NEAREST), (x, y))
                x += im.width * scale + 4 * scale
        path = out / f"video_grid_{motion}.png"
        canvas.save(path)
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="outputs/runs", help="run directories (result.json records and samples)")
    ap.add_argument("--results", default=None,
                    help="the experiment's results table (accepted from experiments/run_experiment.sh; the "
                         "table is built from the run records under --root, which also hold the samples)")
    ap.add_argument("--experiment", default="video", help="experiment name (its variant 'prior': the prior rows)")
    ap.add_argument("--out", type=Path, default=Path("outputs/analysis/video"))
    ap.add_argument("--clips", type=int, default=2, help="clips per row of the grid")
    ap.add_argument("--doc", type=Path, default=None,
                    help="a markdown file whose <!-- video-results:start/end --> block gets the table and grids")
    ap.add_argument("--note", default="", help="a paragraph put under the table in --doc (settings, machine)")
    a = ap.parse_args(argv)
    df = load(a.root, a.experiment)
    a.out.mkdir(parents=True, exist_ok=True)
    cols, rows = table(df)
    md = markdown(cols, rows)
    (a.out / "video_table.md").write_text(md)
    with open(a.out / "video_table.csv", "w", newline="") as f:
        csv.writer(f).writerows([cols] + rows)
    print(md)
    grids = grid(df, a.out, a.clips)
    for p in grids:
        print(f"wrote {p}")
    if a.doc is not None:
        write_doc(a.doc, md, grids, a.note)
    return 0


def write_doc(doc: Path, md: str, grids: list[Path], note: str = "") -> None:
    """Replace the ``video-results`` block of ``doc`` with the table, ``note`` and the grids
    (copied to ``img/video/`` beside it)."""
    import shutil

    start, end = "<!-- video-results:start -->", "<!-- video-results:end -->"
    text = doc.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{doc}: no {start} ... {end} block to replace")
    img = doc.parent / "img" / "video"
    img.mkdir(parents=True, exist_ok=True)
    links = []
    for g in grids:
        shutil.copyfile(g, img / g.name)
        links.append(f"![{g.stem}](img/video/{g.name})")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    body = "\n".join([md.rstrip(), "", note.strip(), "", *links]).strip()
    doc.write_text(head + start + "\n" + body + "\n" + end + tail, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
