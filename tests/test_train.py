"""Trainer: exact resume after a kill, NaN stop, gradient accumulation, data order, logging."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import StubBackbone, StubDataset, stub_collate
from sara.methods.full import FullFineTune
from sara.train import (InfiniteBatchSampler, NonFiniteLossError, CheckpointMismatchError,
                        TrainConfig, Trainer, make_accelerator, read_train_log, seed_everything)


class Killed(Exception):
    pass


class KillableFull(FullFineTune):
    """Full FT that 'dies' right after optimizer step ``kill_at`` (before its checkpoint)."""

    def __init__(self, kill_at=None, **kw):
        super().__init__(**kw)
        self.kill_at = kill_at

    def on_step_end(self, step, total):
        if self.kill_at is not None and step == self.kill_at:
            raise Killed(step)


def make_trainer(run_dir, steps=6, kill_at=None, nan_after=None, **cfg_kw):
    seed_everything(0)
    bb = StubBackbone(nan_after=nan_after)
    method = KillableFull(kill_at=kill_at, lr=1e-3)
    model = method.apply(bb.denoiser)
    opt = method.make_optimizer(lr=None)
    cfg = TrainConfig(**{"steps": steps, "batch_size": 3, "warmup_steps": 2, "checkpoint_every": 3,
                         "device": "cpu", "progress": False, "seed": 0,
                         "keep_optimizer_state": True, **cfg_kw})
    tr = Trainer(model, method, opt,
                 lambda m, b, g: bb.training_loss(m, b, generator=g),
                 StubDataset(n=7), cfg, run_dir=run_dir, collate_fn=stub_collate,
                 accelerator=make_accelerator("no", "cpu"))
    return tr, method


def test_resume_after_kill_is_bit_exact(tmp_path):
    straight, m1 = make_trainer(tmp_path / "a")
    r1 = straight.train()
    assert r1.steps == 6 and r1.resumed_from is None

    killed, _ = make_trainer(tmp_path / "b", kill_at=4)  # dies after step 4, checkpoint at 3
    with pytest.raises(Killed):
        killed.train()
    resumed, m2 = make_trainer(tmp_path / "b")  # a fresh process: new model, optimizer, RNG
    r2 = resumed.train()
    assert r2.resumed_from == 3 and r2.steps == 6

    s1, s2 = m1.trained_state_dict(), m2.trained_state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    # optimizer state and schedule identical too
    o1, o2 = straight.raw_optimizer.state_dict(), resumed.raw_optimizer.state_dict()
    for i in o1["state"]:
        assert torch.equal(o1["state"][i]["exp_avg"], o2["state"][i]["exp_avg"])
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    # the loss log has each step once, with the same losses
    l1, l2 = read_train_log(tmp_path / "a/train_log.jsonl"), read_train_log(tmp_path / "b/train_log.jsonl")
    assert [r["step"] for r in l2] == list(range(1, 7))
    assert [r["loss"] for r in l1] == [r["loss"] for r in l2]
    assert r1.final_loss == r2.final_loss


def test_finished_checkpoint_skips_training(tmp_path):
    tr, m = make_trainer(tmp_path, steps=3)
    tr.train()
    before = {k: v.clone() for k, v in m.trained_state_dict().items()}
    tr2, m2 = make_trainer(tmp_path, steps=3)
    r = tr2.train()
    assert r.resumed_from == 3 and r.session_time_s < 5
    for k, v in m2.trained_state_dict().items():
        assert torch.equal(v, before[k])


def test_checkpoint_with_other_settings_is_refused(tmp_path):
    tr, _ = make_trainer(tmp_path, steps=3)
    tr.train()
    tr2, _ = make_trainer(tmp_path, steps=5)
    with pytest.raises(CheckpointMismatchError, match="steps: checkpoint 3 vs now 5"):
        tr2.train()


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    # loss NaN from the 5th loss call on = step 5; checkpoints every 2 steps -> step 4 kept
    tr, m = make_trainer(tmp_path, steps=8, nan_after=4, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError) as ei:
        tr.train()
    msg = str(ei.value)
    assert "loss is nan at step 5/8" in msg
    assert "last finite loss" in msg and "at step 4" in msg
    assert "step 4" in msg and "state.pt" in msg
    ck = torch.load(tmp_path / "checkpoint/state.pt", weights_only=False)
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["trained"].values())
    # weights in memory were not touched by the NaN step
    for k, v in m.trained_state_dict().items():
        assert torch.isfinite(v).all(), k


def test_gradient_accumulation_matches_larger_batch(tmp_path):
    """grad_accum=2 x batch 2 == batch 4 when the data and noise of the micro-steps coincide."""
    def run(batch, accum, d):
        seed_everything(0)
        bb = StubBackbone()
        method = FullFineTune(lr=1e-3)
        model = method.apply(bb.denoiser)
        opt = method.make_optimizer(lr=None)
        cfg = TrainConfig(steps=2, batch_size=batch, grad_accum=accum, device="cpu",
                          progress=False, shuffle=False, max_grad_norm=None, lr_scheduler="constant")
        # one fixed noise tensor per sample: the loss is independent of how batches are split
        def loss(m, b, g):
            x0 = b["pixel_values"]
            noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(int(p.split()[-1])))
                                 for p in b["prompts"]])
            t = torch.full((x0.shape[0],), 50)
            xt = bb.noise_scheduler.add_noise(x0, noise, t)
            pred = m(xt, t, encoder_hidden_states=bb.text_encoder(b["prompts"])).sample
            return torch.nn.functional.mse_loss(pred, noise)
        Trainer(model, method, opt, loss, StubDataset(n=8), cfg, run_dir=None,
                collate_fn=stub_collate, accelerator=make_accelerator("no", "cpu")).train()
        return method.trained_state_dict()

    a, b = run(4, 1, tmp_path / "a"), run(2, 2, tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_batch_sampler_is_deterministic_and_resumable():
    s = InfiniteBatchSampler(7, 3, seed=5)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    resumed = iter(InfiniteBatchSampler(7, 3, seed=5, start=4))
    assert [next(resumed) for _ in range(6)] == first[4:]
    flat = [i for b in first for i in b]
    assert sorted(flat[:7]) == list(range(7))  # epoch 0 is a permutation
    # two processes split the stream
    r0 = iter(InfiniteBatchSampler(7, 3, seed=5, rank=0, world=2))
    r1 = iter(InfiniteBatchSampler(7, 3, seed=5, rank=1, world=2))
    assert [next(r0), next(r1), next(r0), next(r1)] == first[:4]


def test_train_log_and_summary(tmp_path):
    tr, m = make_trainer(tmp_path, steps=4, checkpoint_every=0)
    r = tr.train()
    rows = read_train_log(tmp_path / "train_log.jsonl")
    assert [x["step"] for x in rows] == [1, 2, 3, 4]
    assert all(set(x) >= {"loss", "lr", "elapsed_s", "grad_norm"} for x in rows)
    assert rows[0]["lr"] == pytest.approx(1e-3 / 2)  # warm-up 2 steps
    assert r.final_loss == rows[-1]["loss"]
    assert r.peak_memory_kind == "cpu_max_rss" and r.peak_memory_bytes > 10_000_000
    assert r.mixed_precision == "no"
    ck = torch.load(tmp_path / "checkpoint/state.pt", weights_only=False)
    assert ck["step"] == 4


def test_train_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown train settings"):
        TrainConfig.from_mapping({"stepz": 3})


def test_accelerator_follows_requested_device_within_one_process():
    acc = make_accelerator("no", "cpu")
    assert acc.device.type == "cpu" and acc.mixed_precision == "no"
    if torch.cuda.is_available():
        assert make_accelerator("auto", "cuda").device.type == "cuda"
        assert make_accelerator("no", "cpu").device.type == "cpu"


def test_official_compat_does_not_clip(tmp_path):
    """compat=official reproduces the authors' script: SaRA's updates are never clipped."""
    from sara.methods.sara import SaRAMethod

    def run(compat, d):
        seed_everything(0)
        bb = StubBackbone()
        method = SaRAMethod(threshold=0.05, lambda_rank=0.0, progressive_iter=None, lr=1e-2,
                            compat=compat)
        model = method.apply(bb.denoiser)
        cfg = TrainConfig(steps=3, batch_size=3, device="cpu", progress=False, seed=0,
                          max_grad_norm=1e-6, lr_scheduler="constant", checkpoint_every=0)
        tr = Trainer(model, method, method.make_optimizer(lr=None),
                     lambda m, b, g: bb.training_loss(m, b, generator=g), StubDataset(n=9), cfg,
                     run_dir=d, collate_fn=stub_collate, accelerator=make_accelerator("no", "cpu"))
        tr.train()
        return read_train_log(d / "train_log.jsonl")

    assert all("grad_norm" in r for r in run("ours", tmp_path / "ours"))
    assert not any("grad_norm" in r for r in run("official", tmp_path / "official"))
