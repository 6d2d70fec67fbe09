"""Video (AnimateDiff-style camera motion): motion backbone, clip data, camera-motion metric,
methods restricted to the motion modules."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from sara.backbones.motion import MOTION_PARAMS, build_adapter, is_motion_param, zero_motion_outputs
from sara.data.camera_motion import (PAPER_MOTIONS, VideoCaptionFolder, make_clip, save_apng,
                                     write_motion_dataset)
from sara.data.folder import DatasetError
from sara.metrics.camera_motion import camera_motion_accuracy, classify_motion, estimate_motion

torch.set_num_threads(1)
F = 4  # frames in the model tests (the metric tests use the data's 8)


def _tiny_unet():
    from sara.budget import tiny_denoiser

    torch.manual_seed(0)
    return tiny_denoiser()


def _motion_unet(unet, zero_init=True, seed=1):
    from diffusers import UNetMotionModel

    adapter = build_adapter(unet, seed=seed, zero_init=zero_init)
    return UNetMotionModel.from_unet2d(copy.deepcopy(unet), adapter)


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, F, 32, 32, generator=g)
    t = torch.tensor([10, 600][:b])
    ehs = torch.randn(b, 8, 128, generator=g)
    return x, t, ehs


def _call(model, x, t, ehs):
    return model(x, t, encoder_hidden_states=ehs.repeat_interleave(x.shape[2], 0)).sample


# ---------------------------------------------------------------------------------------- model
def test_zero_initialised_adapter_reproduces_the_image_model_per_frame():
    unet = _tiny_unet().eval()
    video = _motion_unet(unet, zero_init=True).eval()
    x, t, ehs = _inputs()
    with torch.no_grad():
        out = _call(video, x, t, ehs)
        frames = x.transpose(1, 2).flatten(0, 1)
        ref = unet(frames, t.repeat_interleave(F), encoder_hidden_states=ehs.repeat_interleave(F, 0)).sample
    ref = ref.unflatten(0, (2, F)).transpose(1, 2)
    assert torch.allclose(out, ref, atol=1e-4, rtol=0), (out - ref).abs().max()
    # a fresh (non-zeroed) adapter is not an identity: the zeroing is what makes the test pass
    with torch.no_grad():
        other = _call(_motion_unet(unet, zero_init=False).eval(), x, t, ehs)
    assert (other - ref).abs().max() > 1e-3


def test_zero_motion_outputs_counts_every_motion_module():
    unet = _tiny_unet()
    adapter = build_adapter(unet, zero_init=False)
    n = zero_motion_outputs(adapter)
    assert n == 3 + 6 + 1  # one per down resnet, two per up block (layers + 1), one mid
    from sara.backbones.motion import motion_modules

    assert len(motion_modules(adapter)) == n
    assert all(not m.proj_out.weight.any() and not m.proj_out.bias.any() for _, m in motion_modules(adapter))


# ---------------------------------------------------------------------------------------- methods
METHOD_CFGS = {
    "full": ("sara.methods.full.FullFineTune", {}),
    "lora": ("sara.methods.lora.LoRA", {"rank": 2}),
    "adaptformer": ("sara.methods.adaptformer.AdaptFormer", {"bottleneck": 4}),
    "lt_sft": ("sara.methods.lt_sft.LTSFT", {"phase1_steps": 1, "density": None}),
    "sara": ("sara.methods.sara.SaRAMethod", {"progressive_iter": None, "lambda_rank": 0.0}),
}


@pytest.mark.parametrize("name", list(METHOD_CFGS))
def test_motion_only_training_leaves_every_spatial_weight_bit_identical(name):
    from hydra.utils import get_class

    from sara.methods.base import PrepareContext

    unet = _tiny_unet()
    model = _motion_unet(unet, zero_init=False)  # gradients reach every motion weight
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    target, kw = METHOD_CFGS[name]
    method = get_class(target)(params=MOTION_PARAMS, **kw)
    x, t, ehs = _inputs()

    def loss_fn(m, batch):
        return (_call(m, *batch) ** 2).mean()

    def batches():
        while True:
            yield (x, t, ehs)

    budget = None if name == "full" else 20_000
    ctx = PrepareContext(loss_fn=loss_fn, batches=batches(), steps=2, seed=0, extra={"lr": 1e-2})
    module = method.apply(model, budget=budget, ctx=ctx)
    if budget is not None:  # budget-matched inside the motion modules
        assert abs(method.num_trainable() - budget) / budget < 0.2, method.num_trainable()
    n_motion = sum(p.numel() for n, p in model.named_parameters() if is_motion_param(n))
    assert method.num_trainable() <= n_motion
    opt = method.make_optimizer(lr=1e-2)
    for _ in range(2):
        loss_fn(module, (x, t, ehs)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    merged = method.merged(module)
    after = dict(merged.named_parameters())
    spatial = [n for n in before if not is_motion_param(n)]
    assert len(spatial) > 50
    for n in spatial:
        assert torch.equal(after[n], before[n]), n
    if name in ("full", "lt_sft", "sara", "lora"):  # the motion modules did change
        assert any(not torch.equal(after[n], before[n]) for n in before if is_motion_param(n))
    else:  # AdaptFormer adds modules next to the motion feed-forwards only
        added = [n for n in after if n not in before]
        assert added and all(re.fullmatch(MOTION_PARAMS, n) for n in added)


def test_sara_on_a_fresh_adapter_trains_exactly_the_budget_inside_the_zeroed_outputs(monkeypatch):
    """A fresh adapter's output projections and biases are exactly 0 (55,584 entries): a budget below
    that count selects exactly that many zeros (the first in model order), not all of them; no
    progressive re-selection at θ just above 0 (it would leave nothing to train), said in the log."""
    import sara.methods.sara as sara_method
    from sara.methods.base import PrepareContext
    from sara.methods.sara import SaRAMethod

    model = _motion_unet(_tiny_unet(), zero_init=True)
    zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if is_motion_param(n))
    assert zeros > 20_000
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = SaRAMethod(params=MOTION_PARAMS, lambda_rank=0.0, progressive_iter=0.5)
    knob, achieved = method.solve_budget(model, 20_000)
    assert achieved == 20_000 and 0 < knob < 1e-30
    # the warning as the method logs it (Hydra's job logging in an earlier test may have disabled
    # the existing loggers, so pytest's log capture cannot be relied on)
    warned: list[str] = []
    monkeypatch.setattr(sara_method.log, "warning", lambda msg, *args: warned.append(msg % args))
    module = method.apply(model, budget=20_000, ctx=PrepareContext(steps=4, seed=0))
    assert method.num_trainable() == 20_000 and method.knob_value == knob
    assert len(warned) == 1 and f"below the {zeros} entries" in warned[0] and "progressive_iter=null" in warned[0]
    assert method.optimizer.progressive_iter is None
    x, t, ehs = _inputs(b=1)
    opt = method.make_optimizer(lr=1e-2)
    for _ in range(3):  # past the step re-selection would have been (0.5 x 4 steps)
        (_call(module, x, t, ehs) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert method.num_active() == 20_000
    after = dict(method.merged(module).named_parameters())
    changed = {n for n in before if not torch.equal(after[n], before[n])}
    assert changed and all(is_motion_param(n) for n in changed)
    assert all(not before[n][after[n] != before[n]].any() for n in changed)  # trained entries were 0


def test_lora_targets_only_temporal_attention_projections():
    from sara.methods.lora import LoRA

    model = _motion_unet(_tiny_unet())
    names = [n for n, _ in LoRA(params=MOTION_PARAMS).target_layers(model)]
    assert names and all("motion_modules" in n and n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0")
                         for n in names)
    assert len(names) == 10 * 2 * 4  # 10 modules x 2 attentions x (q, k, v, out)


# ---------------------------------------------------------------------------------------- metric
@pytest.mark.parametrize("motion", PAPER_MOTIONS + ("static",))
def test_metric_on_procedural_clips(motion):
    clips = [make_clip(motion, i, split="val")[0] for i in range(6)]
    assert camera_motion_accuracy(clips, motion) >= 5 / 6


def test_metric_on_synthetic_pans_and_zooms():
    rng = np.random.default_rng(0)
    big = np.kron(rng.uniform(0, 255, (24, 24)), np.ones((4, 4)))  # a textured 96 px canvas

    def crop(cx, cy, side):
        from PIL import Image

        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        return np.asarray(Image.fromarray(big.astype(np.uint8)).resize((32, 32), Image.BILINEAR, box=box))

    pan = np.stack([crop(40 + 2 * k, 48, 40) for k in range(8)])  # camera moves right
    zoom_in = np.stack([crop(48, 48, 48 / 1.07 ** k) for k in range(8)])
    zoom_out = zoom_in[::-1]
    static = np.stack([crop(48, 48, 40)] * 8)
    assert estimate_motion(pan).label == "pan_right"
    assert estimate_motion(pan[::-1]).label == "pan_left"
    assert estimate_motion(zoom_in).label == "zoom_in"
    assert estimate_motion(zoom_out).label == "zoom_out"
    assert estimate_motion(static).label == "static"


def test_classify_motion_rules_and_bad_input():
    assert classify_motion(0.0, 0.0, 0.0) == "static"
    assert classify_motion(0.4, 0.02, 0.0) == "zoom_in"
    assert classify_motion(-0.4, 0.0, 0.0) == "zoom_out"
    assert classify_motion(0.1, -0.3, 0.0) == "pan_right"
    with pytest.raises(ValueError, match="unknown camera motion"):
        camera_motion_accuracy([np.zeros((8, 32, 32, 3))], "dolly_zoom")
    with pytest.raises(ValueError, match="F >= 2"):
        estimate_motion(np.zeros((1, 32, 32, 3)))


# ---------------------------------------------------------------------------------------- data
def test_motion_folder_roundtrip(tmp_path):
    folder = write_motion_dataset(tmp_path / "pan_right", "pan_right", n=3)
    ds = VideoCaptionFolder(folder, 32, num_frames=8)
    assert len(ds) == 3 and ds.motion == "pan_right" and ds.clip_length == 8
    item = ds[1]
    assert item["pixel_values"].shape == (8, 3, 32, 32) and item["prompt"]
    frames, _ = make_clip("pan_right", 1)
    assert np.array_equal(ds.clip(1), frames)  # lossless
    # a still camera keeps all its (identical) frames
    still = write_motion_dataset(tmp_path / "static", "static", n=2)
    assert VideoCaptionFolder(still, 32).clip_length == 8


def test_frame_folder_clips(tmp_path):
    from PIL import Image

    frames, text = make_clip("zoom_in", 0)
    (tmp_path / "c0").mkdir()
    for k, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "c0" / f"{k:03d}.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "c0", "text": text}) + "\n")
    ds = VideoCaptionFolder(tmp_path, 32, num_frames=4, frame_stride=2)
    assert np.array_equal(ds.clip(0), frames[::2][:4]) and ds.motion is None


def _write(tmp_path, rows, lengths):
    for (fn, _), n in zip(rows, lengths):
        save_apng(make_clip("pan_right", 0)[0][:n], tmp_path / fn)
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for _, r in rows))


def test_mixed_lengths_is_a_clear_error(tmp_path):
    rows = [("a.png", {"file_name": "a.png", "text": "a red circle"}),
            ("b.png", {"file_name": "b.png", "text": "a blue square"})]
    _write(tmp_path, rows, [8, 6])
    with pytest.raises(DatasetError, match=r"mixed lengths.*'a.png' has 8.*'b.png' has 6|mixed lengths.*'b.png' has 6.*'a.png' has 8"):
        VideoCaptionFolder(tmp_path, 32)


def test_missing_or_empty_caption_is_a_clear_error(tmp_path):
    _write(tmp_path, [("a.png", {"file_name": "a.png"})], [8])
    with pytest.raises(DatasetError, match=r"line 1: missing key 'text'"):
        VideoCaptionFolder(tmp_path, 32)
    _write(tmp_path, [("a.png", {"file_name": "a.png", "text": "  "})], [8])
    with pytest.raises(DatasetError, match=r"line 1: clip 'a.png' has an empty caption"):
        VideoCaptionFolder(tmp_path, 32)


def test_too_short_clips_and_missing_clip(tmp_path):
    _write(tmp_path, [("a.png", {"file_name": "a.png", "text": "x"})], [4])
    with pytest.raises(DatasetError, match="clips have 4 frames, 8 are needed"):
        VideoCaptionFolder(tmp_path, 32, num_frames=8)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "nope.mp4", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match="listed clip 'nope.mp4' not found"):
        VideoCaptionFolder(tmp_path, 32)


def test_missing_motion_adapter_names_what_to_download(tmp_path):
    from sara.backbones.loading import MissingWeightsError
    from sara.backbones import load_backbone

    cfg = {"kind": "motion", "name": "sd15_motion", "image": {"kind": "stable_diffusion"},
           "adapter_model_id": "guoyww/animatediff-motion-adapter-v1-5-2",
           "motion_adapter": str(tmp_path / "adapter")}
    with pytest.raises(MissingWeightsError) as e:
        load_backbone(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert "guoyww/animatediff-motion-adapter-v1-5-2" in msg and str(tmp_path / "adapter") in msg


# ---------------------------------------------------------------------------------------- run.py
@pytest.mark.slow
def test_video_smoke_run_writes_a_complete_record(tmp_path):
    """`python run.py +experiment=video train=smoke method=sara` end to end (the shipped motion
    prior, a small procedural Zoom In set): a complete result.json with the video metrics."""
    import subprocess
    import sys

    from conftest import REPO

    if not (REPO / "sara/zoo/motion/config.json").is_file():
        pytest.skip("motion prior not shipped (python scripts/pretrain_motion.py)")
    out, data = tmp_path / "runs", tmp_path / "data"
    p = subprocess.run([sys.executable, "run.py", "+experiment=video", "train=smoke", "method=sara",
                        f"data.root={data}", "data.size=16", f"output_root={out}", "torch_threads=1"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "video/tiny_motion/zoom_in/sara/motion43k/seed0/result.json").read_text())
    assert rec["status"] == "complete" and rec["backbone"] == "tiny_motion"
    assert 0 < rec["trainable_params"] <= 1_163_040
    m = rec["metrics"]
    assert 0.0 <= m["camera_motion_accuracy"] <= 1.0
    for k in ("frame_clip", "temporal_consistency", "frame_fid"):
        assert isinstance(m[k], float), k
