"""The committed results and the documents generated from them: `experiments/report.sh --check`
passes on the committed files and fails on a table edited by hand; `sara.results --merge` gathers
runs into the committed table without losing rows of runs that are not on this machine."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import docs_tables
from sara.results import main as results_main

REPO = Path(__file__).resolve().parent.parent

DOC = """# Results
Some prose.

<!-- generated: style/table1_style.md -->
old table
<!-- /generated -->

<!-- generated: pruning/fig2_pruning.md -->
<!-- /generated -->
"""


def _analysis(tmp_path: Path, table: str = "| a | b |\n|---|---|\n| 1 | 2 |\n") -> Path:
    out = tmp_path / "analysis"
    (out / "style").mkdir(parents=True)
    (out / "style" / "table1_style.md").write_text(table, encoding="utf-8")
    return out


def test_write_fills_blocks_and_check_then_passes(tmp_path):
    out, doc = _analysis(tmp_path), tmp_path / "results.md"
    doc.write_text(DOC, encoding="utf-8")
    assert docs_tables.main(["--analysis", str(out), "--docs", str(doc), "--check"]) == 1
    assert docs_tables.main(["--analysis", str(out), "--docs", str(doc), "--write"]) == 0
    text = doc.read_text(encoding="utf-8")
    assert "| 1 | 2 |" in text and "old table" not in text and "Some prose." in text
    assert docs_tables.missing_note("pruning/fig2_pruning.md") in text  # no file: a note, not a stale table
    assert docs_tables.main(["--analysis", str(out), "--docs", str(doc), "--check"]) == 0


@pytest.mark.parametrize("tamper", [lambda t: t.replace("| 1 | 2 |", "| 1 | 3 |"),  # a number edited by hand
                                    lambda t: t.replace("Some prose.", "Some prose.\n\n<!-- generated: x/y.md -->\n"
                                                        "| made up |\n<!-- /generated -->")])
def test_check_fails_on_a_tampered_document(tmp_path, tamper, capsys):
    out, doc = _analysis(tmp_path), tmp_path / "results.md"
    doc.write_text(DOC, encoding="utf-8")
    docs_tables.main(["--analysis", str(out), "--docs", str(doc), "--write"])
    doc.write_text(tamper(doc.read_text(encoding="utf-8")), encoding="utf-8")
    assert docs_tables.main(["--analysis", str(out), "--docs", str(doc), "--check"]) == 1
    assert "differ from their regeneration" in capsys.readouterr().err


def test_copies_are_refreshed_and_a_tampered_or_stale_copy_fails_the_check(tmp_path, capsys):
    """Whole committed files made by an analysis (claims.json, the tuned learning-rate tables)."""
    out, doc = _analysis(tmp_path), tmp_path / "results.md"
    doc.write_text(DOC, encoding="utf-8")
    (out / "lr_search" / "tables").mkdir(parents=True)
    (out / "lr_search" / "tables" / "tiny.yaml").write_text("rates: {sara: {50M: 0.001}}\n")
    committed = tmp_path / "results" / "lr"
    committed.mkdir(parents=True)
    (committed / "README.md").write_text("not made by an analysis")
    args = ["--analysis", str(out), "--docs", str(doc), "--copies", f"lr_search/tables:{committed}"]
    assert docs_tables.main(args + ["--check"]) == 1  # not yet copied
    assert docs_tables.main(args + ["--write"]) == 0
    assert (committed / "tiny.yaml").read_text() == "rates: {sara: {50M: 0.001}}\n"
    assert docs_tables.main(args + ["--check"]) == 0
    (committed / "tiny.yaml").write_text("rates: {sara: {50M: 0.003}}\n")  # a rate edited by hand
    assert docs_tables.main(args + ["--check"]) == 1
    assert "tiny.yaml" in capsys.readouterr().err
    docs_tables.main(args + ["--write"])
    (committed / "sd15.yaml").write_text("rates: {}\n")  # committed, but no runs make it
    assert docs_tables.main(args + ["--check"]) == 1
    assert "sd15.yaml (no longer made" in capsys.readouterr().err
    with pytest.raises(ValueError, match="MADE:COMMITTED"):
        docs_tables.copy_pairs(out, "lr_search/tables")


def test_block_source_must_stay_inside_the_analysis_folder(tmp_path):
    with pytest.raises(ValueError, match="inside the analysis folder"):
        docs_tables.regenerate("<!-- generated: ../secret.md -->\n<!-- /generated -->", tmp_path)


def _run(root: Path, rel: str, fid: float, weights_id: str | None = None) -> None:
    d = root / rel
    d.mkdir(parents=True)
    rec = {"status": "complete", "metrics": {"fid": fid}, "seed": 0}
    if weights_id:
        rec["config"] = {"backbone": {"weights_id": weights_id}}
    (d / "result.json").write_text(json.dumps(rec))


def test_merge_keeps_rows_of_runs_not_here_and_replaces_reruns(tmp_path):
    a, b, table = tmp_path / "machine_a", tmp_path / "machine_b", tmp_path / "runs.csv"
    _run(a, "style/tiny/Cyberpunk/sara/50M/seed0", 10.0)
    _run(a, "style/tiny/Cyberpunk/sara/50M/seed1", 11.0)
    assert results_main(["--root", str(a), "--csv", str(table), "--merge"]) == 0
    _run(b, "style/tiny/Cyberpunk/sara/50M/seed1", 12.0)  # rerun elsewhere: replaces the row
    _run(b, "style/tiny/Cyberpunk/sara/50M/seed2", 13.0)
    assert results_main(["--root", str(b), "--csv", str(table), "--merge"]) == 0
    df = pd.read_csv(table)
    assert list(df["run_dir"]) == [f"style/tiny/Cyberpunk/sara/50M/seed{s}" for s in (0, 1, 2)]  # relative, sorted
    assert list(df["fid"]) == [10.0, 12.0, 13.0]
    first = table.read_bytes()
    assert results_main(["--root", str(b), "--csv", str(table), "--merge"]) == 0
    assert table.read_bytes() == first  # the same runs give the same file
    # the same run directory on re-trained backbone weights is another result: both rows stay
    c = tmp_path / "machine_c"
    _run(c, "style/tiny/Cyberpunk/sara/50M/seed0", 20.0, weights_id="abc")
    assert results_main(["--root", str(c), "--csv", str(table), "--merge"]) == 0
    df = pd.read_csv(table)
    assert len(df) == 4 and sorted(df[df["run_dir"].str.endswith("seed0")]["fid"]) == [10.0, 20.0]


def test_merge_keeps_failures_of_runs_not_here_and_clears_those_rerun(tmp_path):
    """`--merge` gathers the failed-runs table the same way: a failure recorded on another
    machine stays; a run that fails or finishes here replaces it."""
    a, b, table = tmp_path / "machine_a", tmp_path / "machine_b", tmp_path / "runs.csv"
    for rel in ("style/tiny/Hornify/lt_sft/5M/seed0", "style/tiny/Hornify/lt_sft/5M/seed1"):
        (a / rel).mkdir(parents=True)
        (a / rel / "failed.json").write_text(json.dumps({"status": "failed", "exception": "FloatingPointError",
                                                         "message": "non-finite loss nan"}))
    _run(a, "style/tiny/Cyberpunk/sara/50M/seed0", 10.0)
    assert results_main(["--root", str(a), "--csv", str(table), "--merge"]) == 0
    failed = tmp_path / "runs_failed.csv"
    assert list(pd.read_csv(failed)["run_dir"]) == [f"style/tiny/Hornify/lt_sft/5M/seed{s}" for s in (0, 1)]
    _run(b, "style/tiny/Hornify/lt_sft/5M/seed1", 12.0)  # rerun elsewhere, finished: its failure goes
    assert results_main(["--root", str(b), "--csv", str(table), "--merge"]) == 0
    f = pd.read_csv(failed)
    assert list(f["run_dir"]) == ["style/tiny/Hornify/lt_sft/5M/seed0"]
    assert list(f["error_type"]) == ["FloatingPointError"]
    assert len(pd.read_csv(table)) == 2


def test_committed_docs_match_the_committed_results():
    """What CI checks: every generated table of the docs and claims.json regenerate unchanged
    from results/embedded/runs.csv (about a minute: every analysis module runs)."""
    r = subprocess.run(["bash", str(REPO / "experiments" / "report.sh"), "--check"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]


def test_write_docs_copies_only_the_figures_this_report_made(tmp_path):
    """A sample grid needs the runs' folders on disk: `--write-docs` copies a docs figure only when
    this report drew it, never a stale one an earlier report left in the output folder."""
    import os
    import shutil

    (tmp_path / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "report.sh", tmp_path / "experiments" / "report.sh")
    (tmp_path / "results" / "embedded").mkdir(parents=True)
    (tmp_path / "results" / "embedded" / "runs.csv").write_text("x\n")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    out = tmp_path / "outputs" / "analysis"
    (out / "lr_search").mkdir(parents=True)
    (out / "lr_search" / "lr_search_samples.png").write_text("stale")  # an earlier report's grid
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    # a stand-in python: the learnability module draws its sample grid, everything else draws nothing
    (bin_ / "python").write_text('#!/usr/bin/env bash\nwhile (( $# )); do [[ $1 == --out ]] && o=$2; shift; done\n'
                                 '[[ $o == */learnability ]] && mkdir -p "$o" && echo new > "$o/learnability_samples.png"\n'
                                 'exit 0\n')
    (bin_ / "python").chmod(0o755)
    r = subprocess.run(["bash", str(tmp_path / "experiments" / "report.sh"), "--write-docs"], capture_output=True,
                       text=True, env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "docs" / "img" / "learnability_samples.png").read_text() == "new\n"
    assert not (tmp_path / "docs" / "img" / "lr_search_samples.png").exists()


def test_learnability_table_keeps_schedules_apart_and_needs_both_methods(tmp_path):
    from analysis import learnability

    rows = []
    for seed, (base, full, sara) in enumerate([(1000, 700, 700), (1010, 720, 720), (990, 710, 740)]):
        common = {"experiment": "learnability", "backbone": "tiny", "dataset": "Cyberpunk", "seed": seed}
        rows += [{**common, "variant": "base", "method": "full", "budget": "none", "steps": 0, "lr": "eq12", "fid": base},
                 {**common, "variant": "", "method": "full", "budget": "none", "steps": 900, "lr": 1e-3, "fid": full},
                 {**common, "variant": "", "method": "sara", "budget": "50M", "steps": 900, "lr": 4e-4, "fid": sara},
                 {**common, "variant": "", "method": "full", "budget": "none", "steps": 300, "lr": 1e-3, "fid": 990.0}]
    rows.append({"experiment": "learnability", "variant": "", "backbone": "tiny", "dataset": "Hornify", "seed": 0,
                 "method": "full", "budget": "none", "steps": 900, "lr": 1e-3, "fid": 100.0})  # no SaRA run
    other = {"experiment": "learnability", "backbone": "tiny", "dataset": "Cyberpunk", "seed": 0, "steps": 900,
             "config.backbone.weights_id": "abcdef0123456789"}  # another base model: its own rows
    rows += [{**other, "variant": "base", "method": "full", "budget": "none", "steps": 0, "lr": "eq12", "fid": 500.0},
             {**other, "variant": "", "method": "full", "budget": "none", "lr": 1e-3, "fid": 450.0},
             {**other, "variant": "", "method": "sara", "budget": "50M", "lr": 4e-4, "fid": 460.0}]
    probe = {"experiment": "learnability", "variant": "snr5", "backbone": "tiny", "dataset": "Hornify", "seed": 0,
             "budget": "50M", "steps": 900, "lr": 4e-4, "fid": 10.0}  # another loss: own row, not in the verdict
    rows.append({**probe, "method": "sara"})
    table = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    learnability.main(["--results", str(table), "--out", str(tmp_path / "o")])
    t = pd.read_csv(tmp_path / "o" / "learnability.csv")
    full900 = t[(t["method"] == "full") & (t["steps"] == 900) & (t["dataset"] == "Cyberpunk") & (t["weights"] == "unrecorded")].iloc[0]
    assert full900["fid"] == pytest.approx(710) and full900["base_fid"] == pytest.approx(1000)
    assert full900["n_seeds"] == 3 and bool(full900["learned"])
    assert not t[(t["steps"] == 300)]["learned"].any()  # 1% below: not learned, and not averaged with 900
    md = (tmp_path / "o" / "learnability.md").read_text()
    assert "tiny (weights unrecorded) at 900 steps: 1/2 sets learnable by both methods (Cyberpunk)" in md  # Hornify: no SaRA
    assert "tiny (weights abcdef01) at 900 steps: 0/1 sets learnable by both methods (none)" in md
    assert t[t["weights"] == "abcdef01"]["base_fid"].eq(500.0).all()  # never the other base's FID
    hornify = t[(t["dataset"] == "Hornify") & (t["method"] == "sara")]
    assert list(hornify["variant"]) == ["snr5"] and not hornify["counted"].any() and "| snr5 |" in md
    # Cyberpunk at 300 and 900 steps; no training log on disk: the FID panel alone, under its own name
    assert (tmp_path / "o" / "learnability_steps_fid.png").is_file()
    assert not (tmp_path / "o" / "learnability_steps.png").exists()
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(f'{{"step": {i}, "loss": {1 / (i + 1)}}}\n' for i in range(40)))
    rows[1]["paths.train_log"] = str(log)  # seed 0, full fine-tuning, 900 steps: the longest run
    pd.DataFrame(rows).to_csv(table, index=False)
    learnability.main(["--results", str(table), "--out", str(tmp_path / "o2")])
    assert (tmp_path / "o2" / "learnability_steps.png").is_file()  # with the loss panel: the docs' figure


def test_learnability_sample_grid_shows_the_newest_weights_lowest_seed(tmp_path):
    from PIL import Image

    from analysis import learnability

    def folder(name, colour):
        d = tmp_path / name
        d.mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), colour).save(d / f"{i:05d}.png")
        return str(d)

    data = folder("data", "pink")
    rows = []
    for wid, when, colour in (("old0000000000000", "2026-01-01", "black"), ("new0000000000000", "2026-02-01", "white")):
        for seed in (0, 1):
            common = {"experiment": "learnability", "backbone": "tiny", "dataset": "BarbieCore", "seed": seed,
                      "config.backbone.weights_id": wid, "finished_at": when, "paths.dataset": data, "fid": 1.0, "lr": 1e-3}
            c = colour if seed == 0 else "red"  # seed 1 must not be shown
            rows += [{**common, "variant": "base", "method": "full", "budget": "none", "steps": 0, "run_dir": f"b{seed}",
                      "paths.samples": folder(f"{wid}b{seed}", c)},
                     {**common, "variant": "", "method": "full", "budget": "none", "steps": 300, "run_dir": f"f{seed}",
                      "paths.samples": folder(f"{wid}f{seed}", c)},
                     {**common, "variant": "", "method": "sara", "budget": "50M", "steps": 300, "run_dir": f"s{seed}",
                      "paths.samples": folder(f"{wid}s{seed}", c)},
                     {**common, "variant": "lr3e-4", "method": "full", "budget": "none", "steps": 300,
                      "run_dir": f"v{seed}", "paths.samples": folder(f"{wid}v{seed}", "red")}]
    table = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    written = learnability.main(["--results", str(table), "--out", str(tmp_path / "o")])
    assert tmp_path / "o" / "learnability_samples.png" in written
    assert not (tmp_path / "o" / "learnability_steps.png").exists()  # one schedule length only
    grid = np.asarray(Image.open(tmp_path / "o" / "learnability_samples.png").convert("RGB"))
    tiles = grid[18:, 150:]  # below the title, right of the row labels: 4 rows (training, base, full, SaRA)
    assert tiles.shape[0] == 4 * 40
    colours = {tuple(tiles[40 * k + 20, 20]) for k in range(1, 4)}
    assert colours == {(255, 255, 255)}  # the newest weights, seed 0, the experiment's own rate


def test_table1_has_a_pretrained_row_outside_vlhi_and_mean_std_cells(tmp_path):
    from analysis import table1_style

    rows = []
    for ds in ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify"):
        for seed in (0, 1):
            common = {"experiment": "style", "backbone": "tiny", "dataset": ds, "seed": seed}
            rows.append({**common, "variant": "base", "method": "full", "budget": "none", "fid": 3000.0 + seed,
                         "clip_score": 60.0})
            for me, fid in (("sara", 900.0), ("lora", 1200.0)):
                rows.append({**common, "variant": "", "method": me, "budget": "50M", "fid": fid + 10 * seed,
                             "clip_score": 55.0 + seed})
    table = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    table1_style.main(["--results", str(table), "--out", str(tmp_path / "o")])
    md = (tmp_path / "o" / "table1_style.md").read_text()
    base = next(ln for ln in md.splitlines() if table1_style.BASE_LABEL in ln)
    cells = [c.strip() for c in base.strip("|").split("|")]
    assert cells[2] == "3000.50 ± 0.71" and cells[4] == "–"  # BarbieCore FID (2 seeds), no VLHI
    sara = next(ln for ln in md.splitlines() if "| SaRA |" in ln)
    assert "905.00 ± 7.07" in sara and "**" in sara  # best of its budget, base row not competing
    long = pd.read_csv(tmp_path / "o" / "table1_style.csv")
    assert set(long["method"]) == {"sara", "lora"}  # VLHI computed without the base row
    claims_long = table1_style._style(pd.read_csv(table, keep_default_na=False, na_values=[""]))
    assert set(claims_long["method"]) == {"sara", "lora"}  # the claims never count it as full fine-tuning


def test_sara_against_each_method_reads_the_noise_rule_per_budget(tmp_path):
    """The generated SaRA-vs-method table: a FID gap far beyond its spread is decided (in either
    direction), one inside it is not, a method with one seed has no spread, and full fine-tuning
    (budget none) joins every budget."""
    from analysis import table1_style

    rows = []
    fids = {("sara", "5M"): (1000, 1010, 990), ("lora", "5M"): (1500, 1510, 1490),   # SaRA better
            ("lt_sft", "5M"): (1005, 1300, 700), ("sara", "50M"): (900, 905, 895),  # inside the noise
            ("adaptformer", "50M"): (600, 605, 595), ("full", "none"): (1000, 1001, 999)}
    for (me, bu), per_seed in fids.items():
        for seed, fid in enumerate(per_seed):
            for ds in ("Cyberpunk", "Hornify"):
                rows.append({"experiment": "style", "variant": "", "backbone": "tiny", "dataset": ds, "seed": seed,
                             "method": me, "budget": bu, "fid": float(fid), "clip_score": 30.0 + len(me)})
    rows += [{**r, "method": "dora", "budget": "50M", "seed": 0} for r in rows[-2:]]  # one seed, both sets
    table = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    table1_style.main(["--results", str(table), "--out", str(tmp_path / "o")])
    vs = pd.read_csv(tmp_path / "o" / "table1_style_vs_sara.csv").set_index(["budget", "method"])
    assert vs.loc[("5M", "lora"), "fid_reading"] == "SaRA better"
    assert vs.loc[("5M", "lora"), "fid_diff"] == pytest.approx(-500.0)
    assert vs.loc[("5M", "lt_sft"), "fid_reading"] == "inside the noise"
    assert vs.loc[("50M", "adaptformer"), "fid_reading"] == "AdaptFormer better"
    assert vs.loc[("5M", "full"), "fid_reading"] == "inside the noise"   # full in both budgets
    assert vs.loc[("50M", "full"), "fid_reading"] == "SaRA better"
    assert "dora" not in set(vs.reset_index()["method"])  # Table 1's methods only
    table1_style.main(["--results", str(table), "--out", str(tmp_path / "all"), "--methods",
                       "sara,dora,full,lora,adaptformer,lt_sft"])
    vs = pd.read_csv(tmp_path / "all" / "table1_style_vs_sara.csv").set_index(["budget", "method"])
    assert vs.loc[("50M", "dora"), "fid_reading"] == "one seed: spread unknown"
    md = (tmp_path / "o" / "table1_style_vs_sara.md").read_text()
    assert "| 5M | LoRA | 3 | 1000 vs 1500 (-500, SE 8): SaRA better |" in md


def test_table1_names_the_runs_that_failed_unless_rerun_since(tmp_path):
    """A style run that diverged leaves its cell empty; Table 1 says which run and why, from the
    ``<table>_failed.csv`` beside the results table, and forgets it once a rerun has a result."""
    from analysis import table1_style

    rows = [{"experiment": "style", "variant": "", "backbone": "tiny", "dataset": ds, "seed": 0, "method": me,
             "budget": "5M", "fid": 1000.0 + 100 * (me == "lora"), "clip_score": 30.0 + (me == "sara"),
             "run_dir": f"r/{ds}/{me}"} for ds in ("Cyberpunk", "Hornify") for me in ("sara", "lora")]
    failed = [{"experiment": "style", "variant": "", "backbone": "tiny", "dataset": "Hornify", "method": "lt_sft",
               "budget": "5M", "seed": 0, "error_type": "FloatingPointError", "error": "non-finite loss nan",
               "run_dir": "r/Hornify/lt_sft"},
              {**rows[0], "method": "shira", "error_type": "X", "error": "y", "run_dir": "r/shira"}]  # not Table 1's
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame(failed).to_csv(tmp_path / "runs_failed.csv", index=False)
    table1_style.main(["--results", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "o")])
    md = (tmp_path / "o" / "table1_style.md").read_text()
    assert ("Runs that failed, left out of the cells: LT-SFT 5M Hornify seed 0: FloatingPointError "
            "(non-finite loss nan).") in md and "shira" not in md.lower()
    rerun = {**rows[0], "method": "lt_sft", "dataset": "Hornify", "run_dir": "r/Hornify/lt_sft"}
    pd.DataFrame(rows + [rerun]).to_csv(tmp_path / "runs.csv", index=False)
    table1_style.main(["--results", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "o")])
    assert "Runs that failed" not in (tmp_path / "o" / "table1_style.md").read_text()


def test_learnability_loss_curve_is_window_means_of_the_train_log(tmp_path):
    import json

    from analysis.learnability import _loss_curve

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": i + 1, "loss": float(i // 20)}) + "\n" for i in range(45)))
    steps, loss = _loss_curve(log)
    assert list(loss) == [0.0, 1.0] and list(steps) == [10.5, 30.5]  # the last 5 steps: no full window
    assert _loss_curve(tmp_path / "missing.jsonl") is None


def test_subject_validation_table_from_the_committed_record(tmp_path):
    from analysis import subject_validation

    [md] = subject_validation.main(["--out", str(tmp_path / "o")])  # results/embedded/subject_validation.json
    text = md.read_text()
    assert "| striped_circle |" in text and "found: colours shifted" in text and "pattern-" in text
    missing = subject_validation.main(["--json", str(tmp_path / "none.json"), "--out", str(tmp_path / "m")])[0]
    assert "No results yet" in missing.read_text()


def test_fid_noise_table_from_a_measurement_record(tmp_path):
    import json

    from analysis import fid_noise

    cell = lambda m, s: {"fids": [], "mean": m, "std": s}
    rec = {"backbone": "tiny", "datasets": ["Cyberpunk"], "counts": [100, 250], "seeds": [0, 1, 2], "rel": 0.05,
           "default_num_prompts": 250, "wall_s": 12.0, "command": "python scripts/measure_fid_noise.py",
           "table": {"Cyberpunk": {"base": {"100": cell(3200, 60), "250": cell(3180, 40)},
                                   "full": {"100": cell(1400, 120), "250": cell(1300, 80)},
                                   "gap": {"100": 1800.0, "250": 1880.0}}}}
    path = tmp_path / "noise.json"
    path.write_text(json.dumps(rec))
    [md] = fid_noise.main(["--json", str(path), "--out", str(tmp_path / "o")])
    text = md.read_text()
    assert "| Cyberpunk | fine-tuned (full) | 1400 ± 120 (6.7% of the gap) | 1300 ± 80 (4.3% of the gap) |" in text
    assert "**250**" in text
    assert "No results yet" in fid_noise.main(["--json", str(tmp_path / "none.json"), "--out", str(tmp_path / "m")])[0].read_text()
