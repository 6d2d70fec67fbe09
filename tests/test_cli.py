"""What a person sees: bad input fails fast with one short message on stderr (no traceback, exit
status 2), Ctrl-C says where training stopped, the last line shows the metrics, a finished run of
another config is never taken as done, and one run directory belongs to one process."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import compose_conf
from sara.cli import final_line, run_or_exit
from sara.preflight import UsageError, check_config, check_weights
from sara.env import REPO_ROOT
from sara.record import run_dir_for
from sara.runs import execute

STUB = ["backbone=stub", "data=stub", "train=smoke", "eval=smoke", "eval.metrics=[]",
        "hydra/job_logging=disabled"]


compose = compose_conf


def run_cli(args, tmp_path, env=None, timeout=60):
    e = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "run.py", *args, f"output_root={tmp_path}/runs",
                        "hydra/job_logging=disabled"], cwd=REPO_ROOT, env=e, capture_output=True,
                       text=True, timeout=timeout)
    return p, time.perf_counter() - t0


# --- fail fast --------------------------------------------------------------------------------
def test_missing_weights_exit_fast_with_one_message(tmp_path):
    p, dt = run_cli(["backbone=sd15", "train=smoke"], tmp_path)
    assert p.returncode == 2 and dt < 10, (dt, p.stderr)
    err = p.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "backbone.pretrained=" in err and "hf download stable-diffusion-v1-5" in err


@pytest.mark.parametrize("args,words", [
    (["data=folder"], ["data.name is not set"]),
    (["budget=5M", "budget.params=2.0"], ["budget.params=2.0", "share", "count"]),
    (["eval.num_prompts=0", "eval.metrics=[fid]"], ["eval.num_prompts=0", "eval.metrics=[]"]),
])
def test_config_errors_exit_with_one_message(tmp_path, args, words):
    p, dt = run_cli(args, tmp_path)
    assert p.returncode == 2 and dt < 10, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert all(w in p.stderr for w in words), p.stderr


def test_check_config_rules():
    base = {"data": {"kind": "style", "name": "BarbieCore"}, "eval": {"num_prompts": 4,
                                                                      "metrics": ["fid"]}}
    check_config(base)
    check_config(dict(base, budget={"params": 0.01, "reference_params": 859520964}))
    check_config(dict(base, budget={"params": 5e6, "reference_params": 859520964}))
    with pytest.raises(UsageError, match="data.name"):
        check_config(dict(base, data={"kind": "style", "name": None}))
    for bad in (2.0, 999, -1, "lots"):
        with pytest.raises(UsageError, match="budget.params"):
            check_config(dict(base, budget={"params": bad, "reference_params": 859520964}))
    with pytest.raises(UsageError, match="eval.num_prompts"):
        check_config(dict(base, eval={"num_prompts": 0, "metrics": ["clip_score"]}))


def test_check_weights_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UsageError, match="no such folder"):
        check_weights({"kind": "stable_diffusion", "name": "sd15", "pretrained": str(tmp_path / "x")})
    (tmp_path / "sd").mkdir()
    with pytest.raises(UsageError, match="model_index.json"):
        check_weights({"kind": "stable_diffusion", "name": "sd15", "pretrained": str(tmp_path / "sd")})
    (tmp_path / "sd/model_index.json").write_text("{}")
    check_weights({"kind": "stable_diffusion", "name": "sd15", "pretrained": str(tmp_path / "sd")})
    check_weights({"kind": "tiny", "name": "tiny", "pretrained": None})  # the shipped weights


# --- what the end of a run prints -------------------------------------------------------------
def test_ctrl_c_says_where_and_how_to_resume(capsys):
    def fn(cfg):
        e = KeyboardInterrupt()
        e.sara_step = 3
        raise e

    with pytest.raises(SystemExit) as ei:
        run_or_exit(fn, None)
    assert ei.value.code == 130
    assert capsys.readouterr().err.strip() == \
        "interrupted at step 3; run the same command again to resume"


def test_ctrl_c_during_training_carries_the_step(stub_conf, stub_world, tmp_path, monkeypatch, capsys):
    from conftest import StubBackbone

    real = StubBackbone.training_loss
    calls = {"n": 0}

    def loss(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(StubBackbone, "training_loss", loss)
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}"])
    with pytest.raises(SystemExit):
        run_or_exit(lambda c: execute(c, run_dir_for(c)), cfg)
    assert "interrupted at step 2; run the same command again to resume" in capsys.readouterr().err


def test_final_line_shows_metrics_also_when_already_done(stub_conf, stub_world, tmp_path, capsys):
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}"])
    run_or_exit(lambda c: execute(c, run_dir_for(c)), cfg)
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith("done: ") and "no metrics" in first
    run_or_exit(lambda c: execute(c, run_dir_for(c)), cfg)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("already done: ")
    line = final_line({"status": "complete", "paths": {"run_dir": "d"},
                       "metrics": {"fid": 12.3456, "clip_score": 0.31}})
    assert line == "done: d | fid=12.35 clip_score=0.31"


# --- run identity and one process per run directory ---------------------------------------------
def test_a_finished_run_of_another_config_is_not_done(stub_conf, stub_world, tmp_path):
    from sara.rundir import StaleRunError

    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}"])
    d = run_dir_for(cfg)
    execute(cfg, d)
    for change in ("train.steps=2", "eval.batch_size=2", "seed=0 method.lambda_rank=0.1"):
        other = compose(stub_conf, STUB + [f"output_root={tmp_path}", *change.split()])
        with pytest.raises(StaleRunError, match="overwrite=true"):
            execute(other, d)
    other = compose(stub_conf, STUB + [f"output_root={tmp_path}", "train.steps=2", "overwrite=true"])
    assert execute(other, d)["steps"] == 2


def test_a_busy_run_dir_is_refused(stub_conf, stub_world, tmp_path):
    from sara.rundir import RunDirBusyError, hold_run_dir

    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}"])
    d = run_dir_for(cfg)
    with hold_run_dir(d):
        with pytest.raises(RunDirBusyError, match=f"in use by process {os.getpid()}"):
            execute(cfg, d)
    assert execute(cfg, d)["status"] == "complete"  # released


SLOW_PIPELINE = """
import sys, time
import sara.runs
from sara.cli import run_or_exit

def held(cfg, plain, run_dir):
    time.sleep(4)  # a run in progress
    return {"status": "complete", "paths": {"run_dir": str(run_dir)}, "metrics": {}}

sara.runs._run = held
cfg = {"data": {"kind": "style", "name": "BarbieCore"}, "backbone": {"kind": "stub"},
       "eval": {"num_prompts": 0, "metrics": []}}
run_or_exit(lambda c: sara.runs.execute(c, sys.argv[1]), cfg)
"""


def test_one_run_started_twice_at_once(tmp_path):
    """Two processes on one run directory: one runs it, the other exits with a clear message."""
    d = tmp_path / "runs/x/seed0"
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_PIPELINE, str(d)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    busy = next(err for (out, err), p in zip(outs, procs) if p.returncode == 2)
    assert "is in use by process" in busy and "Traceback" not in busy
    done = next(out for (out, err), p in zip(outs, procs) if p.returncode == 0)
    assert done.strip().startswith("done: ")


def test_a_run_on_retrained_weights_of_the_same_name_is_stale(tmp_path):
    """The embedded backbone's weights are part of a run's identity (``backbone.weights_id``):
    re-training the zoo folder makes an earlier result stale instead of passing as this run's."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sara.backbones.factory import weights_id
    from sara.rundir import StaleRunError

    assert weights_id({"kind": "stable_diffusion", "model_id": "x/y"}) is None  # hub models: by id
    folder = tmp_path / "tiny"
    shutil.copytree(REPO_ROOT / "sara" / "zoo" / "tiny", folder)
    overrides = ["train=smoke", "train.steps=1", "eval.metrics=[]", "eval.num_prompts=2", "torch_threads=1",
                 f"backbone.pretrained={folder}", f"output_root={tmp_path / 'runs'}",
                 f"data.root={tmp_path / 'data'}"]
    cfg = compose_conf(REPO_ROOT / "conf", overrides)
    d = run_dir_for(cfg)
    rec = execute(cfg, d)
    before = weights_id({"kind": "tiny", "pretrained": str(folder)})
    assert rec["config"]["backbone"]["weights_id"] == before and len(before) == 16
    assert execute(cfg, d)["_already_done"]
    unet = next((folder / "unet").glob("*.safetensors"))
    state = load_file(unet)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    save_file(state, unet)
    assert weights_id({"kind": "tiny", "pretrained": str(folder)}) != before
    with pytest.raises(StaleRunError, match="weights_id"):
        execute(cfg, d)
