"""Style samples side by side (the paper's qualitative figures, e.g. Figs. 4, 7–15): per dataset, a
row of training images, then one row per method with its first samples of the evaluation prompts,
at one budget (full fine-tuning has none) and one seed. Looking at them tells what FID and CLIP cannot: whether a
method learned the style, or left the base model's look, or broke the images.

Reads the `style` rows of the results table (``paths.samples``: the run's sample folder;
``paths.dataset``: the training folder). Writes ``style_samples.{png,pdf}`` (``--name``: another stem).

    python -m analysis.style_samples --results results.csv --out outputs/analysis/style --budget 50M
    python -m analysis.style_samples --results results.csv --budget 5M --name style_samples_5M
"""
from __future__ import annotations

from pathlib import Path

from .common import (BASELINE_METHODS, split_base, arg_parser, load, method_label, method_sort_key, out_dir,
                     rows_of, run_main, write_missing)

NAME = "style_samples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
BUDGET_LESS = {"full", *BASELINE_METHODS}  # rows shown at every budget, labelled without one


def first_images(folder, n):
    """The first ``n`` images of a folder, by name (sample folders are 00000.png, ...)."""
    p = Path(str(folder))
    if not p.is_dir():
        return []
    return sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:n]


def runs_without_samples(df) -> list[str]:
    """The run directories of ``df`` whose sample folder is not on this machine. A grid is drawn
    only when there are none: the committed results table gathers runs from several machines, and
    a grid of the runs on one of them would replace the one drawn from all."""
    return [str(r.get("run_dir")) for _, r in df.iterrows() if not first_images(r.get("paths.samples"), 1)]


def at_budget(df, budget):
    """The rows a grid at ``budget`` shows: that budget's runs and the budget-less methods'."""
    return df[(df["budget"].astype(str) == str(budget)) | df["method"].isin(BUDGET_LESS)]


def grid_rows(df, budget, n):
    """[(dataset, [(row label, [image paths])])]: the training images, then each method's samples."""
    out = []
    for ds, g in df.groupby("dataset", sort=True):
        g = at_budget(g, budget)
        g = g.iloc[sorted(range(len(g)), key=lambda i: method_sort_key(g["method"].iloc[i]))]
        rows = []
        data_dirs = g["paths.dataset"].dropna() if "paths.dataset" in g else []
        training = first_images(data_dirs.iloc[0], n) if len(data_dirs) else []
        if training:
            rows.append((f"{ds} (training)", training))
        for _, r in g.iterrows():
            ims = first_images(r.get("paths.samples"), n)
            if ims:
                label = method_label(r["method"]) + ("" if r["method"] in BUDGET_LESS else f" {budget}")
                rows.append((label, ims))
        if len(rows) > 1:
            out.append((ds, rows))
    return out


def main(argv=None):
    ap = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/style")
    ap.add_argument("--budget", default="50M", help="budget whose runs are shown (default 50M)")
    ap.add_argument("--n", type=int, default=8, help="images per row (default 8)")
    ap.add_argument("--tile", type=int, default=48, help="pixels per image (default 48)")
    ap.add_argument("--methods", default=None, help="comma-separated method ids shown (default: every method)")
    ap.add_argument("--seed", type=int, default=0, help="seed whose runs are shown, one row per method (default 0)")
    ap.add_argument("--name", default=NAME, help=f"output file stem (default {NAME})")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    df = split_base(rows_of(load(args.results), args.experiment or "style"))[1]
    if args.methods and len(df):
        df = df[df["method"].isin(args.methods.split(","))]
    if "seed" in df and len(df):  # one row per method: the seeds' samples look alike, and rows would repeat
        df = df[df["seed"].astype(float) == args.seed]
    shown = at_budget(df, args.budget) if len(df) else df
    missing = runs_without_samples(shown)
    if 0 < len(missing) < len(shown):
        return write_missing(out, args.name, f"the samples of {len(missing)} of the {len(shown)} runs at budget "
                                             f"{args.budget}, seed {args.seed} are not on this machine (e.g. "
                                             f"{missing[0]}); a grid without them is not drawn")
    blocks = grid_rows(df, args.budget, args.n) if len(df) else []
    if not blocks:
        return write_missing(out, args.name, f"no `style` runs at budget {args.budget}, seed {args.seed}, "
                                             "with their samples on disk")
    paths = []
    img = render(blocks, args.n, args.tile, f"{args.budget}, seed {args.seed}; first row of each block: "
                                            "training images")
    for ext in ("png", "pdf"):
        paths.append(out / f"{args.name}.{ext}")
        img.save(paths[-1])
    return paths


def paste_tile(canvas, path, tile, xy) -> None:
    """Paste the image at ``path`` into ``canvas`` at ``xy`` as a ``tile`` x ``tile`` RGB square."""
    from PIL import Image

    with Image.open(path) as im:
        canvas.paste(im.convert("RGB").resize((tile, tile), Image.BICUBIC), xy)


def render(blocks, n, tile, title):
    """One RGB image: a title line, then per block its rows of ``n`` tiles with the row label on
    the left. Composed with PIL at the tile size (matplotlib would resample every sample)."""
    from PIL import Image, ImageDraw

    label_w, gap, head = 150, 6, 18
    nrows = sum(len(rows) for _, rows in blocks)
    canvas = Image.new("RGB", (label_w + n * tile, head + nrows * tile + gap * (len(blocks) - 1)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), f"Style samples of the evaluation prompts ({title})", fill="black")
    y = head
    for _, rows in blocks:
        for label, ims in rows:
            draw.text((4, y + tile // 2 - 6), label, fill="black")
            for j, path in enumerate(ims[:n]):
                paste_tile(canvas, path, tile, (label_w + j * tile, y))
            y += tile
        y += gap
    return canvas


if __name__ == "__main__":
    run_main(main)
