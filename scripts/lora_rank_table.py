"""Rank vs relative error of the LoRA that ``python -m sara.export --format lora`` extracts from one
SaRA run; writes ``docs/use_outside_lora.json`` and the table in ``docs/use_outside.md``.

    python scripts/lora_rank_table.py [--run RUN_DIR] [--ranks 1 2 4 8 16 32 64]

Without ``--run`` it makes (or reuses) the SaRA smoke run of the tiny backbone,
``python run.py method=sara train=smoke experiment_name=lora_table``.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT_JSON = ROOT / "docs" / "use_outside_lora.json"
DOC = ROOT / "docs" / "use_outside.md"
BEGIN, END = "<!-- lora-table:begin -->", "<!-- lora-table:end -->"
RUN = ROOT / "outputs/runs/lora_table/tiny/BarbieCore/sara/none/seed0"


def table(data: dict) -> str:
    lines = [f"SaRA run `{data['run']}` ({data['trainable_params']:,} trained entries of "
             f"{data['denoiser_params']:,}; {data['changed_layers']} changed Linear/Conv2d "
             f"weights). Share of ‖ΔW‖ in biases and norms, which no LoRA holds: "
             f"{data['not_in_lora_share']:.3f}.", "",
             "| rank | LoRA parameters | relative error ‖ΔW − BA‖/‖ΔW‖ | worst layer |",
             "|---:|---:|---:|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['rank']} | {r['lora_params']:,} | {r['rel_error']:.4f} | "
                     f"{r['worst_layer']} ({r['worst_rel_error']:.3f}) |")
    lines += ["", f"Made by `python scripts/lora_rank_table.py` ({data['machine']})."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    args = ap.parse_args()
    import copy

    from sara.export import load_run, lora_from_delta
    from sara.weights import run_record

    run = args.run or RUN
    if not (run / "result.json").is_file():
        subprocess.run([sys.executable, "run.py", "method=sara", "train=smoke",
                        "experiment_name=lora_table", "torch_threads=1"], cwd=ROOT, check=True)
    rec = run_record(run)
    backbone, base, _ = load_run(run)
    rows = []
    for r in args.ranks:
        state, rep = lora_from_delta(base, backbone.denoiser, r)
        rows.append({"rank": r, "rel_error": rep["rel_error"],
                     "lora_params": int(sum(v.numel() for v in state.values())),
                     "worst_layer": rep["worst_layer"]["layer"],
                     "worst_rel_error": rep["worst_layer"]["rel_error"]})
    data = {"run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
            "trainable_params": rec["trainable_params"], "denoiser_params": rec["denoiser_params"],
            "changed_layers": rep["layers"], "not_in_lora_share": rep["not_in_lora_share"],
            "machine": f"{platform.machine()}, {platform.system()}, CPU", "rows": rows}
    OUT_JSON.write_text(json.dumps(data, indent=2) + "\n")
    text = DOC.read_text()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:a] + "\n" + table(data) + "\n" + text[b:])
    print(table(data))


if __name__ == "__main__":
    main()
