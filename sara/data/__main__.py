"""``python -m sara.data --out DIR [--seed N]``: write the five style datasets
(``DIR/BarbieCore`` ... ``DIR/Hornify``, images + ``metadata.jsonl``) and ``DIR/eval_prompts.txt``
(the 500 held-out evaluation prompts, one a line)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sara.io import atomic_write_text

from .prompts import eval_prompts
from .styles import STYLE_NAMES, STYLE_SIZES, ensure_style_datasets, write_style_datasets


def write_eval_prompts(out: str | os.PathLike, seed: int = 0) -> Path:
    return atomic_write_text(Path(out) / "eval_prompts.txt", "\n".join(eval_prompts(seed)) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sara.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=STYLE_NAMES, help="write only these style datasets")
    p.add_argument("--missing-only", action="store_true",
                   help="keep folders that are already complete for this seed (default: rewrite)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    names = a.only or list(STYLE_NAMES)
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(STYLE_SIZES[n] for n in names), unit="img", desc="style datasets",
                   disable=a.no_progress)
    except ImportError:  # pragma: no cover
        bar = None
    progress = bar.update if bar is not None else None
    if a.missing_only:
        ensure_style_datasets(a.out, a.seed, names, progress=progress)
    else:
        write_style_datasets(a.out, a.seed, names, progress=progress)
    if bar is not None:
        bar.close()
    path = write_eval_prompts(a.out, a.seed)
    print(f"wrote {', '.join(f'{n} ({STYLE_SIZES[n]})' for n in names)} and {path} to {Path(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
