"""sara.results: gathering result.json / failed.json records of a runs tree into one table."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

from sara.results import (ResultWarning, decode, load_failed, load_results, main, parse_budget, read_table,
                          split_experiment, write_table)


def _record(exp="style", backbone="tiny", dataset="Cyberpunk", method="sara", budget="5M", seed=0, **extra):
    rec = {
        "schema": 1, "status": "complete", "experiment": exp, "backbone": backbone, "dataset": dataset,
        "method": method, "budget": budget, "seed": seed, "denoiser_params": 1000, "target_params": 10,
        "trainable_params": 11,
        "method_record": {"method": method, "knob": "threshold", "knob_value": 0.002, "target_params": 10,
                          "trainable_params": 11},
        "train": {"steps": 4, "final_loss": 0.1}, "steps": 4, "final_loss": 0.1,
        "wall_time_s": 16.5, "train_time_s": 10.0, "sample_time_s": 2.0, "eval_time_s": 3.0,
        "time": {"setup_s": 1.0, "train_s": 10.0, "sample_s": 2.0, "eval_s": 3.0, "total_this_session_s": 16.5},
        "peak_memory_bytes": 12345, "peak_memory": {"bytes": 12345, "kind": "cpu_rss"}, "git_commit": "abc",
        "metrics": {"fid": 40.5, "clip_score": 25.1, "bvqa": 0.5, "n_images": 4, "evaluators": "embedded",
                    "eval_info": {"fid": {"n_images": 4}}},
        "config": {"experiment_name": exp, "seed": seed, "train": {"lr": None, "steps": 4},
                   "method": {"name": method, "threshold": 0.002}, "data": {"name": dataset}},
    }
    rec.update(extra)
    return rec


def _write(root: Path, rel: str, name: str, obj) -> Path:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return p


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    _write(root, "style/tiny/Cyberpunk/sara/5M/seed0", "result.json", _record())
    _write(root, "style/tiny/Cyberpunk/lora/5M/seed1", "result.json", _record(method="lora", seed=1))
    _write(root, "threshold--th0.002/tiny/Expedition/sara/none/seed0", "result.json",
           _record(exp="threshold--th0.002", dataset="Expedition", budget="none",
                   diagnostics={"migration": {"threshold": 0.002, "history": [{"step": 0, "still_below": 1.0}]},
                                "share_below": 0.25, "prune": {"threshold": 0.001, "fraction": 0.1}}))
    # failed run (no result.json)
    _write(root, "style/tiny/Hornify/lt_sft/20M/seed0", "failed.json",
           {"schema": 1, "status": "failed", "exception": "RuntimeError", "message": "boom",
            "traceback_tail": "Traceback ...\nRuntimeError: boom", "config": {"experiment_name": "style"}})
    # a stale failed.json next to a finished result: the run counts as finished
    _write(root, "style/tiny/Cyberpunk/sara/5M/seed0", "failed.json", {"status": "failed", "message": "old"})
    # corrupt / partial records
    _write(root, "style/tiny/BarbieCore/sara/5M/seed0", "result.json", '{"status": "complete", "metrics": {"fid": 1')
    _write(root, "style/tiny/BarbieCore/lora/5M/seed0", "result.json", "[1, 2, 3]")
    _write(root, "style/tiny/BarbieCore/dora/5M/seed0", "result.json", json.dumps({**_record(), "status": "running"}))
    # a temporary file of an atomic write in progress is not a record
    _write(root, "style/tiny/Expedition/sara/5M/seed0", ".result.json.123.tmp", '{"status": "comp')
    return root


def test_load_results_rows_and_columns(tree):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResultWarning)
        df = load_results(tree)
    assert len(df) == 3
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResultWarning)]
    assert len(msgs) == 3
    assert any("BarbieCore/sara/5M/seed0/result.json" in m and "not valid JSON" in m for m in msgs)
    assert any("BarbieCore/lora/5M/seed0/result.json" in m and "JSON object" in m for m in msgs)
    assert any("BarbieCore/dora/5M/seed0/result.json" in m and "running" in m for m in msgs)
    for col in ("experiment", "variant", "backbone", "dataset", "method", "budget", "seed", "trainable_params",
                "target_params", "wall_time_s", "train_time_s", "peak_memory_bytes", "fid", "clip_score", "bvqa",
                "run_dir", "threshold", "lr"):
        assert col in df.columns, col
    r = df[(df["method"] == "lora")].iloc[0]
    assert r["seed"] == 1 and r["budget"] == "5M" and r["experiment"] == "style" and r["variant"] == ""
    assert r["fid"] == 40.5 and r["trainable_params"] == 11 and r["peak_memory_bytes"] == 12345
    assert r["wall_time_s"] == pytest.approx(16.5) and r["setup_time_s"] == 1.0 and r["steps"] == 4
    assert r["git_commit"] == "abc" and r["peak_memory_kind"] == "cpu_rss"
    assert r["threshold"] == 0.002
    assert "eval_info.fid.n_images" in df.columns  # nested metrics flattened
    t = df[df["experiment"] == "threshold"].iloc[0]
    assert t["variant"] == "th0.002" and t["budget"] == "none"
    assert t["share_below"] == 0.25 and t["prune_fraction"] == 0.1
    mig = decode(t["migration"])
    assert mig["history"][0]["still_below"] == 1.0


def test_load_failed(tree):
    f = load_failed(tree)
    assert len(f) == 1
    r = f.iloc[0]
    assert (r["experiment"], r["dataset"], r["method"], r["budget"], r["seed"]) == ("style", "Hornify", "lt_sft", "20M", 0)
    assert r["error_type"] == "RuntimeError" and r["error"] == "boom" and "Traceback" in r["traceback"]


def test_experiment_filter(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultWarning)
        assert set(load_results(tree, "threshold")["experiment"]) == {"threshold"}
        assert len(load_results(tree, "style")) == 2


def test_cli_csv_roundtrip(tree, tmp_path, capsys):
    out = tmp_path / "res" / "results.csv"
    assert main(["--root", str(tree), "--csv", str(out)]) == 0
    assert out.is_file() and (tmp_path / "res" / "results_failed.csv").is_file()
    text = capsys.readouterr()
    assert "3 finished run(s)" in text.out and "1 failed" in text.out
    assert "not valid JSON" in text.err
    df = read_table(out)
    assert len(df) == 3
    r = df[df["experiment"] == "threshold"].iloc[0]
    assert r["budget"] == "none"  # "none" stays a name, not NaN
    assert decode(r["migration"])["threshold"] == 0.002
    assert df[df["method"] == "lora"]["variant"].iloc[0] == ""


def test_empty_root(tmp_path):
    (tmp_path / "r").mkdir()
    assert len(load_results(tmp_path / "r")) == 0
    assert len(load_failed(tmp_path / "r")) == 0
    assert main(["--root", str(tmp_path / "nope")]) == 2


def test_write_table_parquet_needs_pyarrow(tmp_path, tree):
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultWarning)
        df = load_results(tree)
    p = write_table(df, tmp_path / "r.parquet")
    assert len(read_table(p)) == 3


def test_helpers():
    assert parse_budget("5M") == 5e6 and parse_budget("20k") == 2e4 and parse_budget(0.01) == 0.01
    assert math.isnan(parse_budget("none")) and math.isnan(parse_budget(None))
    assert split_experiment("hyper--lr_theta--lr0.001-th0.002") == ("hyper", "lr_theta--lr0.001-th0.002")
    assert split_experiment("style") == ("style", "")
    assert decode(float("nan")) is None and decode('{"a": 1}') == {"a": 1} and decode("x") == "x"


def test_wall_time_from_parts_when_absent(tmp_path):
    rec = _record()
    del rec["wall_time_s"]
    _write(tmp_path, "style/tiny/Cyberpunk/sara/5M/seed0", "result.json", rec)
    assert load_results(tmp_path)["wall_time_s"].iloc[0] == pytest.approx(16.0)  # setup + train + sample + eval


def test_a_per_module_pattern_is_one_json_column(tmp_path):
    """A rank pattern keyed by module name stays one column (not one per module) and reads back whole."""
    pattern = {"down.attn1.to_q": 2, "up.attn2.to_k": 7}
    rec = _record(method="lora")
    rec["method_record"]["knob_pattern"] = pattern
    _write(tmp_path, "style/tiny/Cyberpunk/lora/5M/seed0", "result.json", rec)
    _write(tmp_path, "style/tiny/Cyberpunk/lora/5M/seed1", "result.json", _record(method="lora", seed=1))
    df = load_results(tmp_path)
    assert [c for c in df.columns if "knob_pattern" in c] == ["method_record.knob_pattern"]
    assert decode(df["method_record.knob_pattern"].iloc[0]) == pattern
    assert df["method_record.knob"].iloc[0] == "threshold"  # the record's other keys are still flattened


@pytest.mark.slow
def test_a_real_run_record_loads(stub_conf, stub_world, tmp_path):
    """Integration: the record sara.runs.execute writes (stand-in backbone, 4 steps) gathers into
    the canonical columns (guards against the record layout drifting)."""
    from hydra import compose, initialize_config_dir

    from sara.record import run_dir_for
    from sara.runs import execute

    with initialize_config_dir(config_dir=str(stub_conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backbone=stub", "data=stub", "train=smoke", "eval=smoke",
                                                       f"output_root={tmp_path / 'runs'}",
                                                       "experiment_name=threshold--th0.002"])
    execute(cfg, run_dir_for(cfg))
    df = load_results(tmp_path / "runs")
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["experiment"], r["variant"], r["backbone"], r["dataset"], r["method"], r["budget"], r["seed"]) == (
        "threshold", "th0.002", "stub", "StubStyle", "full", "none", 0)
    for col in ("trainable_params", "wall_time_s", "train_time_s", "peak_memory_bytes", "steps"):
        assert r[col] == r[col] and r[col] is not None, col
    assert r["steps"] == 4 and r["trainable_params"] == r["denoiser_params"]
