"""FID's sampling noise, as measured by ``scripts/measure_fid_noise.py``: per style set, the mean ±
standard deviation of the embedded FID over sampling seeds for the base model and a fully
fine-tuned one at each number of evaluation prompts, the base-vs-fine-tuned gap, and the smallest
prompt count whose standard deviation is within ``rel`` (5%) of that gap for every model and set.

Reads the measurement's JSON (the committed copy: ``results/embedded/fid_noise.json``), not the
results table. Writes ``fid_noise.md``.

    python -m analysis.fid_noise --json results/embedded/fid_noise.json --out outputs/analysis/fid_noise
"""
from __future__ import annotations

from .common import markdown_table, record_report

NAME = "fid_noise"


def table_lines(res: dict) -> list[str]:
    """The Markdown table and verdict of one measurement record (``fid_noise.json``)."""
    counts = [str(n) for n in res["counts"]]
    cells = []
    for d in res["datasets"]:
        t = res["table"][d]
        for model in ("base", "full"):
            cells.append([d, "fine-tuned (full)" if model == "full" else model, *[
                f"{t[model][n]['mean']:.0f} ± {t[model][n]['std']:.0f} ({t[model][n]['std'] / t['gap'][n]:.1%} of the gap)"
                for n in counts]])
        cells.append([d, "gap (base − fine-tuned)", *[f"{t['gap'][n]:.0f}" for n in counts]])
    default = res.get("default_num_prompts")
    verdict = (f"Smallest prompt count with std ≤ {res['rel']:.0%} of the gap for every model and set: "
               + (f"**{default}**" if default else f"none of {', '.join(counts)}"))
    return [markdown_table(cells, ["set", "model", *[f"N = {n}: mean ± std" for n in counts]]), "", verdict]


def report_lines(res: dict) -> list[str]:
    head = (f"Embedded FID over sampling seeds {', '.join(map(str, res['seeds']))} (training seed 0), "
            f"backbone {res['backbone']}; command: `{res['command']}`; {res['wall_s']:.0f} s.")
    return [head, "", *table_lines(res)]


def main(argv=None):
    return record_report(argv, __doc__, NAME, "FID sampling noise", "results/embedded/fid_noise.json",
                         "outputs/analysis/fid_noise", "scripts/measure_fid_noise.py", report_lines)


if __name__ == "__main__":
    main()
