"""The budget tables of ``docs/backbones.md``: the output of ``python -m sara.budget --backbone X
--markdown`` for the embedded backbones, spliced between the ``<!-- budget:X:begin/end -->``
markers (``--random-init`` where ``sara/zoo/X`` holds no weights yet).

    python scripts/budget_tables.py            # rewrite the tables
    python scripts/budget_tables.py --check    # exit 1 if a table differs from a fresh run
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backbones.md"
BACKBONES = ("tiny", "tiny_sd2", "tiny_sd3", "tiny_sdxl")


def command(backbone: str) -> list[str]:
    args = ["python", "-m", "sara.budget", "--backbone", backbone, "--markdown"]
    if not (ROOT / "sara" / "zoo" / backbone / "model_index.json").is_file():
        args.append("--random-init")  # the counts need shapes only; SaRA's θ is then a random model's
    return args


def block(backbone: str) -> str:
    args = command(backbone)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    header = next(line for line in out.stderr.splitlines() if line.startswith(f"# {backbone}:"))
    params = re.search(r"([\d,]+) denoiser parameters", header).group(1)
    weights = "random weights" if "--random-init" in args else f"the weights in `sara/zoo/{backbone}`"
    return (f"`{' '.join(args)}` ({params} denoiser parameters, {weights}):\n\n"
            f"{out.stdout.strip()}")


def splice(text: str, backbone: str, body: str) -> str:
    begin, end = f"<!-- budget:{backbone}:begin -->", f"<!-- budget:{backbone}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{DOC}: the markers {begin} ... {end} are missing")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    a = ap.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    new = text
    for b in a.backbones:
        new = splice(new, b, block(b))
    if a.check:
        if new != text:
            print(f"{DOC}: the budget tables differ from a fresh run; rerun python scripts/budget_tables.py")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
