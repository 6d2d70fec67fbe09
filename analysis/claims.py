"""Claims report: each qualitative claim of the SaRA paper, quoted verbatim, its verdict on the
embedded world — ``reproduced``, ``not_reproduced``, ``inconclusive`` (inside the noise),
``not_run`` or ``not_testable`` — with the numbers behind it, and whether the paper's own reported
tables bear the claim out where they can. Checks that cannot fail as written are marked trivial
and not counted.

Each figure/table module states its own claims beside its figure (``claims(df)``, records of
``analysis.verdicts.Claim``); this module only collects them (``CLAIM_MODULES``) and writes the
report. Reads the results table (and the repo's ``paper/`` for the second check). Writes
``claims.md``, ``claims.tex`` and ``claims.json``.

    python -m analysis.claims --results results.csv --out outputs/analysis/claims
"""
from __future__ import annotations

from . import (fig2_pruning, fig3_migration, fig6_backbone, fig16_scaling, fig17_merging, fig19_subspace,
               fig21_24_hyper, table1_style, table2_ablation, table7_custom, table8_threshold, table9_rank,
               table10_amplification)
from .common import arg_parser, dump_json, latex_table, load, markdown_table, out_dir
from .verdicts import VERDICTS

# every module whose figure/table states claims of the paper (tests check none is left out)
CLAIM_MODULES = (table1_style, table2_ablation, table9_rank, fig2_pruning, fig3_migration, fig6_backbone,
                 fig19_subspace, table10_amplification, fig16_scaling, fig17_merging, fig21_24_hyper, table8_threshold,
                 table7_custom)


def _number(claim_id: str) -> int:
    return int(claim_id.lstrip("C"))


def collect(df) -> list[dict]:
    """Every module's claim records on the results table ``df``, in claim-id order (C1, C2, ...)."""
    records = [r for m in CLAIM_MODULES for r in m.claims(df)]
    ids = [r["id"] for r in records]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"claim ids stated by more than one module: {', '.join(twice)}")
    return sorted(records, key=lambda r: _number(r["id"]))


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/claims").parse_args(argv)
    out = out_dir(args.out)
    df = load(args.results)
    res = collect(df)
    counts = {v: sum(r["verdict"] == v and r["counted"] for r in res) for v in VERDICTS}
    trivial = [r["id"] for r in res if not r["counted"]]
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    md = ["# Claims of the SaRA paper on the embedded world",
          f"{summary} (of {len(res) - len(trivial)} counted claims"
          + (f"; {len(trivial)} trivial, not counted: {', '.join(trivial)}" if trivial else "") + "). "
          f"Source: results table `{args.results}` ({len(df)} runs). A difference decides a comparison only "
          "beyond 2 Welch standard errors over seeds (sara.stats); one seed is inconclusive. *Paper's own "
          "numbers*: whether the paper's reported tables bear the claim out (– = a text/figure claim with no "
          "table to check).",
          markdown_table([[r["id"], r["claim"], r["source"], r["verdict"] + (" (trivial)" if not r["counted"] else ""),
                           r["paper_check"]] for r in res],
                         ["id", "claim", "paper", "verdict", "paper's own numbers"]),
          "## Evidence"]
    for r in res:
        quote = f"  \n*Paper* ({r['paper_source']}): “{r['paper_quote']}”" if r["paper_quote"] else ""
        md.append(f"**{r['id']}** ({r['experiment']}, {r['verdict']}): {r['evidence']}" + quote +
                  (f"  \n*Not counted*: {r['trivial']}" if r["trivial"] else "") +
                  (f"  \n*Paper's numbers*: {r['paper_evidence']}" if r["paper_evidence"] else ""))
    (out / "claims.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    (out / "claims.tex").write_text(latex_table([[r["id"], r["claim"], r["source"], r["verdict"], r["paper_check"]]
                                                 for r in res], ["id", "claim", "paper", "verdict", "paper's tables"],
                                                "Claims of the paper and their verdict on the embedded world",
                                                "tab:claims") + "\n", encoding="utf-8")
    dump_json(out / "claims.json", res)
    print(f"claims: {counts}")
    return [out / "claims.md", out / "claims.tex", out / "claims.json"]


if __name__ == "__main__":
    for f in main():
        print(f)
