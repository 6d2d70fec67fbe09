"""The docs' result tables, generated: every block of a markdown document between

    <!-- generated: style/table1_style.md -->
    ...
    <!-- /generated -->

is the file of that name under the analysis output folder (``experiments/report.sh`` writes it from
the committed results table). ``--write`` puts the regenerated tables into the document;
``--check`` only compares and exits 1 naming every block that differs from its regeneration (a
table edited by hand, or results that changed without the docs). ``--copies MADE:COMMITTED``
treats whole files the same way: an analysis file (or every file of an analysis folder) and its
committed copy (e.g. ``claims/claims.json:results/embedded/claims.json``, the tuned learning
rates ``lr_search/tables:results/lr``); a committed file of such a folder that is no longer made
is stale too.

    python -m analysis.docs_tables --analysis outputs/analysis --docs docs/results.md --write
    python -m analysis.docs_tables --analysis outputs/analysis --docs docs/results.md --check
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- generated: (?P<src>[^\s>]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


def missing_note(src: str) -> str:
    return f"_No results yet for `{src}`: the committed results table has no runs of this experiment._\n"


def demote_headings(text: str, levels: int = 3) -> str:
    """Headings of an analysis file sit under the document's own section headings: ``#`` -> ``####``."""
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(6, len(m[1]) + levels) + " ", text, flags=re.M)


def generated_body(analysis: Path, src: str) -> str:
    """What the block naming ``src`` holds: that file's text, headings demoted (ends with one
    newline), or a note."""
    if Path(src).is_absolute() or ".." in Path(src).parts:
        raise ValueError(f"generated block names {src!r}: give a path inside the analysis folder")
    f = analysis / src
    return demote_headings(f.read_text(encoding="utf-8").rstrip("\n")) + "\n" if f.is_file() else missing_note(src)


def regenerate(text: str, analysis: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block refreshed, and the sources of the blocks that changed."""
    changed: list[str] = []

    def fill(m: re.Match) -> str:
        body = generated_body(analysis, m["src"])
        if body != m["body"]:
            changed.append(m["src"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), changed


def copy_pairs(analysis: Path, spec: str) -> list[tuple[Path, Path]]:
    """``MADE:COMMITTED`` -> [(made file, committed file)]; for a folder, every file in either (a
    committed file no longer made pairs with a made path that does not exist)."""
    made, sep, committed = spec.partition(":")
    if not sep or not made or not committed:
        raise ValueError(f"--copies {spec!r}: expected MADE:COMMITTED (an analysis path and its committed copy)")
    src, dest = analysis / made, Path(committed)
    if not (src.is_dir() or dest.is_dir()):
        return [(src, dest)]
    names = {f.name for d in (src, dest) if d.is_dir() for f in d.iterdir() if f.is_file() and f.name != "README.md"}
    return [(src / n, dest / n) for n in sorted(names)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--analysis", required=True, help="analysis output folder (experiments/report.sh's OUT_DIR)")
    ap.add_argument("--docs", nargs="+", required=True, help="markdown documents with generated blocks")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="put the regenerated tables into the documents")
    mode.add_argument("--check", action="store_true", help="exit 1 if a document's table differs from its regeneration")
    ap.add_argument("--copies", nargs="*", default=[], metavar="MADE:COMMITTED",
                    help="analysis files or folders whose committed copies --write refreshes and --check compares")
    a = ap.parse_args(argv)
    analysis = Path(a.analysis)
    stale = []
    for doc in map(Path, a.docs):
        text = doc.read_text(encoding="utf-8")
        if not BLOCK.search(text):
            print(f"{doc}: no generated blocks", file=sys.stderr)
        new, changed = regenerate(text, analysis)
        if a.write and changed:
            doc.write_text(new, encoding="utf-8")
            print(f"{doc}: regenerated {', '.join(changed)}")
        stale += [f"{doc}: {src}" for src in changed]
    for made, committed in (pair for spec in a.copies for pair in copy_pairs(analysis, spec)):
        same = made.is_file() and committed.is_file() and made.read_bytes() == committed.read_bytes()
        if same or not (made.is_file() or committed.is_file()):
            continue
        if a.write:
            if made.is_file():
                committed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(made, committed)
                print(f"{committed}: regenerated")
            else:
                committed.unlink()
                print(f"{committed}: removed (no longer made from the results)")
        stale.append(f"{committed}" + ("" if made.is_file() else " (no longer made from the results)"))
    if a.check and stale:
        print("tables that differ from their regeneration from the committed results:\n  " + "\n  ".join(stale)
              + "\nregenerate them with: bash experiments/report.sh --write-docs", file=sys.stderr)
        return 1
    if a.check:
        print("every generated table matches the committed results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
