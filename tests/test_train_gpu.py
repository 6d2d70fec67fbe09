"""GPU paths of the trainer (skipped without CUDA): mixed precision, CUDA peak memory, resume,
and one end-to-end run on the stand-ins."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import StubBackbone, StubDataset, stub_collate
from sara.methods.full import FullFineTune
from sara.train import TrainConfig, Trainer, make_accelerator, seed_everything

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make(run_dir, mp, steps=6, kill_at=None):
    seed_everything(0)
    bb = StubBackbone().to("cuda")
    method = FullFineTune(lr=1e-3)
    if kill_at is not None:
        def hook(step, total):
            if step == kill_at:
                raise KeyboardInterrupt
        method.on_step_end = hook
    model = method.apply(bb.denoiser)
    opt = method.make_optimizer(lr=None)
    cfg = TrainConfig(steps=steps, batch_size=4, checkpoint_every=3, device="cuda",
                      mixed_precision=mp, progress=False, keep_optimizer_state=True)
    return Trainer(model, method, opt, lambda m, b, g: bb.training_loss(m, b, generator=g),
                   StubDataset(n=9), cfg, run_dir=run_dir, collate_fn=stub_collate,
                   accelerator=make_accelerator(mp, "cuda")), method


@pytest.mark.parametrize("mp", ["auto", "fp16", "bf16", "no"])
def test_mixed_precision_trains(tmp_path, mp):
    tr, m = make(tmp_path, mp)
    r = tr.train()
    assert r.device.startswith("cuda")
    want = {"auto": "bf16", "fp16": "fp16", "bf16": "bf16", "no": "no"}[mp]
    assert r.mixed_precision == want
    assert r.peak_memory_kind == "cuda_max_allocated" and r.peak_memory_bytes > 0
    assert r.final_loss is not None and r.final_loss == r.final_loss
    # weights stay fp32 (autocast only)
    assert all(v.dtype == torch.float32 for v in m.trained_state_dict().values())


@pytest.mark.parametrize("mp", ["fp16", "bf16"])
def test_gpu_resume_matches(tmp_path, mp):
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    a, ma = make(tmp_path / "a", mp)
    a.train()
    b, _ = make(tmp_path / "b", mp, kill_at=4)
    with pytest.raises(KeyboardInterrupt):
        b.train()
    c, mc = make(tmp_path / "b", mp)
    r = c.train()
    assert r.resumed_from == 3
    sa, sc = ma.trained_state_dict(), mc.trained_state_dict()
    err = max((sa[k] - sc[k]).abs().max().item() for k in sa)
    assert err < 1e-5, err
    if mp == "fp16":  # the loss scaler state came back too
        assert c.accelerator.scaler.get_scale() == a.accelerator.scaler.get_scale()


def test_end_to_end_on_gpu(stub_conf, stub_world, tmp_path):
    from hydra import compose, initialize_config_dir

    from sara.record import run_dir_for
    from sara.runs import execute

    with initialize_config_dir(config_dir=str(stub_conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "backbone=stub", "data=stub", "train=smoke", "eval=smoke", f"output_root={tmp_path}"])
    rec = execute(cfg, run_dir_for(cfg))
    assert rec["train"]["device"].startswith("cuda")
    assert rec["train"]["mixed_precision"] in ("bf16", "fp16")
    assert rec["peak_memory"]["kind"] == "cuda_max_allocated"
    assert rec["env"]["device"]["cuda_available"] is True
    assert (run_dir_for(cfg) / "samples/00003.png").is_file()
