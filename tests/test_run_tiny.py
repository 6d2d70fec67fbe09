"""run.py with the real pieces: the shipped tiny backbone, a generated style set, the command
line (subprocess). Slow on a loaded 2-core CPU (about 1-2 minutes each), hence marked slow; the
fast end-to-end check on stand-ins is tests/test_run.py::test_end_to_end_smoke_then_skip."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run_cli(*overrides, timeout=1200):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_smoke_with_tiny_backbone(tmp_path):
    out, data = tmp_path / "runs", tmp_path / "data"
    args = ["train=smoke", "data.name=ElementFire", f"data.root={data}", f"output_root={out}",
            "train.steps=3", "eval.num_prompts=3", "torch_threads=1"]
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = out / "default/tiny/ElementFire/full/none/seed0"
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["status"] == "complete" and rec["backbone"] == "tiny"
    assert rec["trainable_params"] == rec["denoiser_params"] == 2_799_107
    assert rec["steps"] == 3 and rec["final_loss"] > 0
    rows = (run_dir / "samples/prompts.jsonl").read_text().splitlines()
    assert len(rows) == 3 and json.loads(rows[0])["text"].startswith("ElementFire style, ")
    from PIL import Image

    assert Image.open(run_dir / "samples/00000.png").size == (32, 32)
    assert (data / "ElementFire/metadata.jsonl").is_file()
    # the same command again: nothing is redone
    p = run_cli(*args)
    assert p.returncode == 0 and "already done" in p.stderr + p.stdout


def test_cli_with_metrics(tmp_path):
    """The default metrics (FID, CLIP score, B-VQA) end up in the record."""
    if not (REPO / "sara/zoo/evaluators").is_dir():
        pytest.skip("embedded evaluators not shipped yet (sara/zoo/evaluators)")
    out, data = tmp_path / "runs", tmp_path / "data"
    p = run_cli("train=smoke", "eval=default", "eval.num_prompts=8", "eval.num_inference_steps=4",
                "data.name=ElementFire", f"data.root={data}", f"output_root={out}",
                "torch_threads=1")
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "default/tiny/ElementFire/full/none/seed0/result.json").read_text())
    for m in ("fid", "clip_score", "bvqa"):
        assert isinstance(rec["metrics"][m], float), m


@pytest.mark.parametrize("method", ["sara", "lora", "full"])
def test_kill_and_resume_is_exact_for_real_methods(tmp_path, monkeypatch, method):
    """Through the whole pipeline (real tiny backbone, real method, budget 5M): a run killed
    after its step-3 checkpoint and re-run ends with the same trained values as a straight run."""
    import torch
    from hydra import compose, initialize_config_dir

    import sara.train
    from conftest import CONF
    from sara.record import run_dir_for
    from sara.runs import execute

    torch.set_num_threads(1)

    def cfg_for(root):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=[
                "train=smoke", "eval=none", f"method={method}", "budget=5M", "train.steps=6",
                "train.checkpoint_every=3", "train.batch_size=2", "data.name=ElementFire",
                f"data.root={tmp_path / 'data'}", f"output_root={root}"])

    straight = cfg_for(tmp_path / "a")
    execute(straight, run_dir_for(straight))

    class Killed(Exception):
        pass

    real_save = sara.train.Trainer.save_checkpoint

    def save_then_die(self, final=False):
        out = real_save(self, final)
        if self.step == 3 and not final:
            raise Killed()
        return out

    killed = cfg_for(tmp_path / "b")
    monkeypatch.setattr(sara.train.Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        execute(killed, run_dir_for(killed))
    monkeypatch.setattr(sara.train.Trainer, "save_checkpoint", real_save)
    rec = execute(killed, run_dir_for(killed))
    assert rec["train"]["resumed_from"] == 3

    a = torch.load(run_dir_for(straight) / "checkpoint/state.pt", weights_only=False)["trained"]
    b = torch.load(run_dir_for(killed) / "checkpoint/state.pt", weights_only=False)["trained"]
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
