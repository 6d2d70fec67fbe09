"""Write preview grids of the embedded world's data to docs/img/ (for the README):

    docs/img/data_base.png            32 validation scenes of the pre-training domain (32x32, 4x)
    docs/img/data_looks.png           the same scenes with varied looks (PretrainDomain(looks="varied"))
    docs/img/style_<Name>.png         the first 16 images of each style dataset (64x64 as on disk, 2x)
    docs/img/style_<Name>_32.png      the same at 32x32, what the tiny backbone trains on (4x)
    docs/img/data_previews.json       the captions of every grid, row-major

Usage: python scripts/make_data_previews.py [--out docs/img] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sara.data.preview import base_preview, looks_preview, style_preview  # noqa: E402
from sara.data.styles import STYLE_NAMES, png_bytes  # noqa: E402

import numpy as np  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    captions = {}

    def save(img, name):
        (out / name).write_bytes(png_bytes(np.asarray(img)))
        print("wrote", out / name)

    grid, caps = base_preview(32, a.seed)
    save(grid, "data_base.png")
    captions["data_base.png"] = caps
    grid, caps = looks_preview(32, a.seed)
    save(grid, "data_looks.png")
    captions["data_looks.png"] = caps
    for name in STYLE_NAMES:
        grid, caps = style_preview(name, 16, a.seed)
        save(grid, f"style_{name}.png")
        captions[f"style_{name}.png"] = caps
        grid, _ = style_preview(name, 16, a.seed, resolution=32)
        save(grid, f"style_{name}_32.png")
    (out / "data_previews.json").write_text(json.dumps(captions, indent=1) + "\n")


if __name__ == "__main__":
    main()
