"""run.py / sara.runs: end to end on stand-ins, result record, skip finished runs, failures,
atomic writes (sara.io), budgets, Hydra multirun (a failed job does not stop the others)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO
from sara.budget import REFERENCE_PARAMS, budget_target
from sara.io import atomic_torch_save, atomic_write_json
from sara.record import iter_results, load_result, run_dir_for
from sara.runs import execute

# method=full: these tests check the plumbing with every weight trained (the default is sara)
SMOKE = ["backbone=stub", "data=stub", "train=smoke", "eval=smoke", "method=full"]


def compose(conf_dir, overrides, hydra_cfg=False):
    from hydra import compose as hcompose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides, return_hydra_config=hydra_cfg)


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_json_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1, "nan": float("nan")})
    assert json.loads(p.read_text()) == {"a": 1, "nan": None}  # strict JSON

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(p, {"a": 2})
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"a": 1, "nan": None}
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_atomic_torch_save_roundtrip(tmp_path):
    import torch

    p = atomic_torch_save({"x": torch.arange(3)}, tmp_path / "sub" / "s.pt")
    assert torch.equal(torch.load(p)["x"], torch.arange(3))
    assert sorted(x.name for x in p.parent.iterdir()) == ["s.pt"]


# --------------------------------------------------------------------------- budgets
def test_budget_target():
    ref = REFERENCE_PARAMS
    assert budget_target(None, 1000) is None
    assert budget_target({"name": "none", "params": None, "reference_params": ref}, 1000) is None
    assert budget_target({"params": 5_000_000, "reference_params": ref}, ref) == 5_000_000
    assert budget_target({"params": 5_000_000, "reference_params": ref}, 1_718_000) == round(
        5e6 / ref * 1_718_000)
    assert budget_target({"params": 0.01, "reference_params": ref}, 20_000) == 200
    assert budget_target({"params": 1, "reference_params": ref}, 10) == 10
    assert budget_target({"params": 300, "reference_params": None}, 1000) == 300
    with pytest.raises(ValueError):
        budget_target({"params": -3, "reference_params": ref}, 10)


# --------------------------------------------------------------------------- run dirs
def test_run_dir_matches_hydra_run_dir(stub_conf):
    cfg = compose(stub_conf, SMOKE + ["seed=3", "experiment_name=exp", "output_root=/x/runs"],
                  hydra_cfg=True)
    assert str(run_dir_for(cfg)) == cfg.hydra.run.dir == "/x/runs/exp/stub/StubStyle/full/none/seed3"
    assert cfg.hydra.sweep.dir + "/" + cfg.hydra.sweep.subdir == cfg.hydra.run.dir


# --------------------------------------------------------------------------- end to end
def test_end_to_end_smoke_then_skip(stub_conf, stub_world, tmp_path, caplog):
    out = tmp_path / "runs"
    cfg = compose(stub_conf, SMOKE + [f"output_root={out}"])
    run_dir = run_dir_for(cfg)
    rec = execute(cfg, run_dir)
    assert rec["status"] == "complete"

    on_disk = json.loads((run_dir / "result.json").read_text())
    for key in ("config", "seed", "env", "method_record", "trainable_params", "target_params",
                "time", "train_time_s", "sample_time_s", "eval_time_s", "wall_time_s",
                "peak_memory_bytes", "final_loss", "metrics", "paths", "git_commit"):
        assert key in on_disk, key
    assert on_disk["method"] == "full" and on_disk["backbone"] == "stub"
    assert on_disk["dataset"] == "StubStyle" and on_disk["budget"] == "none"
    assert on_disk["trainable_params"] == on_disk["denoiser_params"] > 0
    assert on_disk["steps"] == 4 and on_disk["final_loss"] > 0
    assert on_disk["env"]["packages"]["torch"]
    assert "commit" in on_disk["env"]["git"] and "dirty" in on_disk["env"]["git"]
    assert on_disk["config"]["train"]["steps"] == 4
    # images + prompts in the dataset folder format
    rows = [json.loads(l) for l in (run_dir / "samples/prompts.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert rows[0]["text"] == "StubStyle style, a red circle number 0"
    from PIL import Image

    assert Image.open(run_dir / "samples/00003.png").size == (8, 8)
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) == 4
    assert (run_dir / "checkpoint/state.pt").is_file()

    # a second call is skipped ("already done") and changes nothing
    mtime = (run_dir / "result.json").stat().st_mtime_ns
    caplog.set_level("INFO")
    rec2 = execute(cfg, run_dir)
    assert rec2["finished_at"] == on_disk["finished_at"]
    assert (run_dir / "result.json").stat().st_mtime_ns == mtime
    assert "already done" in caplog.text


def test_interrupted_run_resumes_training_and_sampling(stub_conf, stub_world, tmp_path):
    """Kill during sampling: a re-run resumes (no retraining) and completes."""
    import sara.sample

    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval.batch_size=2"])
    run_dir = run_dir_for(cfg)
    real = sara.sample.sample_to_folder
    calls = {"n": 0}

    class Kill(Exception):
        pass

    def dying(backbone, *a, **k):  # the second chunk dies
        orig = backbone.sample

        def s(*aa, **kk):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Kill()
            return orig(*aa, **kk)
        backbone.sample = s
        return real(backbone, *a, **k)

    import pytest as _p
    mp = _p.MonkeyPatch()
    mp.setattr(sara.sample, "sample_to_folder", dying)
    with pytest.raises(Kill):
        execute(cfg, run_dir)
    mp.undo()
    assert (run_dir / "failed.json").is_file() and not (run_dir / "result.json").exists()
    assert (run_dir / "samples/00000.png").is_file() and not (run_dir / "samples/prompts.jsonl").exists()
    rec = execute(cfg, run_dir)
    assert rec["train"]["resumed_from"] == 4  # training was not repeated
    assert not (run_dir / "failed.json").exists()
    assert (run_dir / "samples/prompts.jsonl").is_file()


def test_failure_is_recorded(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "+backbone.nan_after=2"])
    run_dir = run_dir_for(cfg)
    from sara.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        execute(cfg, run_dir)
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["exception"] == "NonFiniteLossError"
    assert "step 3/4" in failed["message"] and "Traceback" in failed["traceback_tail"]
    assert load_result(run_dir) is None
    # on_failure=record returns instead of raising
    cfg2 = compose(stub_conf, SMOKE + [f"output_root={tmp_path / 'b'}", "+backbone.nan_after=2",
                                       "on_failure=record"])
    assert execute(cfg2, run_dir_for(cfg2))["status"] == "failed"


def test_hydra_multirun_failed_job_does_not_stop_others(stub_conf, stub_world, tmp_path,
                                                        monkeypatch):
    """`run.py -m method=broken,full`: full completes, broken records failed.json, exit != 0;
    re-running the sweep repeats nothing that finished."""
    (stub_conf / "method" / "broken.yaml").write_text(
        "_target_: sara.methods.no_such_module.NoSuchMethod\nname: broken\n")
    import run as run_py

    out = tmp_path / "runs"
    argv = ["run.py", "-m", f"--config-path={stub_conf}", *SMOKE[:-1], f"output_root={out}",
            "method=broken,full", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as ei:
        run_py.main()
    assert ei.value.code != 0
    base = out / "default/stub/StubStyle"
    assert load_result(base / "full/none/seed0") is not None
    assert (base / "broken/none/seed0/failed.json").is_file()
    assert (out / "default/multirun.yaml").is_file()
    mtime = (base / "full/none/seed0/result.json").stat().st_mtime_ns
    with pytest.raises(SystemExit):
        run_py.main()
    assert (base / "full/none/seed0/result.json").stat().st_mtime_ns == mtime


def test_overwrite_reruns(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval=none"])
    run_dir = run_dir_for(cfg)
    first = execute(cfg, run_dir)
    cfg2 = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval=none", "overwrite=true"])
    second = execute(cfg2, run_dir)
    assert second["train"]["resumed_from"] is None
    assert second["finished_at"] >= first["finished_at"]
    assert not (run_dir / "samples").exists()


def test_iter_results(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval=none"])
    execute(cfg, run_dir_for(cfg))
    recs = list(iter_results(tmp_path))
    assert len(recs) == 1 and recs[0]["method"] == "full"


@pytest.mark.slow
def test_wandb_offline_logging(stub_conf, stub_world, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval=none",
                                      "logger.wandb.enabled=true", "train.log_every=1"])
    run_dir = run_dir_for(cfg)
    execute(cfg, run_dir)
    runs_ = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs_) == 1 and any(runs_[0].glob("*.wandb"))


def test_metrics_from_sara_evaluate(stub_conf, stub_world, tmp_path, monkeypatch):
    """eval.metrics non-empty: sara.evaluate.evaluate gets the samples, prompts and dataset."""
    import sara.evaluate

    seen = {}

    def fake(images_dir, prompts, dataset_root, metrics, device):
        seen.update(images_dir=images_dir, prompts=prompts, metrics=metrics, device=device)
        return {"fid": 12.5, "clip_score": 20.0, "n_images": len(prompts), "eval_info": {"x": 1}}

    monkeypatch.setattr(sara.evaluate, "evaluate", fake)
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval.metrics=[fid,clip_score]"])
    rec = execute(cfg, run_dir_for(cfg))
    assert rec["metrics"] == {"fid": 12.5, "clip_score": 20.0, "n_images": 4}
    assert rec["eval_info"] == {"x": 1}
    import torch

    assert seen["metrics"] == ["fid", "clip_score"]
    assert seen["device"].split(":")[0] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert seen["prompts"][0] == "StubStyle style, a red circle number 0"
    assert seen["images_dir"] == run_dir_for(cfg) / "samples"


def test_metrics_skipped_without_sara_evaluate(stub_conf, stub_world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sara.evaluate", None)
    cfg = compose(stub_conf, SMOKE + [f"output_root={tmp_path}", "eval.metrics=[fid]"])
    rec = execute(cfg, run_dir_for(cfg))
    assert rec["metrics"] == {} and "not installed" in rec["metrics_note"]
