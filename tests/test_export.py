"""``python -m sara.export`` on real runs of the tiny backbone: the diffusers folder loads with
``DiffusionPipeline`` and regenerates the run's samples (float and PNG), the LoRA loads with
``load_lora_weights`` onto the base pipeline, holds W0 + BA, and its error is ~0 for a LoRA run
exported at the run's own rank."""
from __future__ import annotations

import json

import pytest
import torch

from sara.record import run_dir_for
from sara.runs import execute

TINY = ["backbone=tiny", "train=smoke", "train.steps=2", "train.batch_size=2", "eval=smoke",
        "eval.num_prompts=2", "eval.num_inference_steps=2", "eval.batch_size=2",
        "torch_threads=1", "hydra/job_logging=disabled"]


def compose(overrides):
    from hydra import compose as hcompose, initialize_config_dir

    from sara.env import REPO_ROOT

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    dirs = {}
    for m, extra in (("sara", []), ("lora", ["method.rank=2", "train.lr=0.01"])):
        cfg = compose(TINY + [f"method={m}", f"output_root={out}", f"data.root={data}"] + extra)
        d = run_dir_for(cfg)
        assert execute(cfg, d)["status"] == "complete"
        dirs[m] = d
    return dirs


def test_diffusers_export_reproduces_the_run_samples(runs, tmp_path):
    from sara.export import export_diffusers, reproduction_error

    folder = export_diffusers(runs["sara"], tmp_path / "pipe")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and (folder / "unet").is_dir()
    r = reproduction_error(runs["sara"], folder)
    assert r["images"] == 2 and r["max_abs"] <= 1e-5 and r["max_png_levels"] == 0


def test_exported_unet_is_the_merged_one(runs, tmp_path):
    from diffusers import UNet2DConditionModel

    import sara
    from sara.export import export_diffusers
    from sara.backbones import load_backbone

    folder = export_diffusers(runs["sara"], tmp_path / "pipe")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    base = load_backbone({"name": "tiny", "kind": "tiny"}).denoiser
    sara.load_sparse(base, runs["sara"] / "delta.safetensors")
    for (k, a), b in zip(unet.state_dict().items(), base.state_dict().values()):
        assert torch.equal(a, b), k


def test_lora_export_loads_with_load_lora_weights(runs, tmp_path):
    from sara.backbones import load_backbone
    from sara.export import export_lora, load_pipeline, lora_from_delta, pipeline_images
    from sara.backbones.tiny import TINY_ROOT

    rep = export_lora(runs["lora"], tmp_path / "lora", rank=2)  # the run's own rank
    assert rep["rel_error"] < 1e-5 and rep["not_in_lora_share"] == 0.0
    rep_sara = export_lora(runs["sara"], tmp_path / "lora_sara", rank=4)
    assert 0.0 < rep_sara["rel_error"] < 1.0

    pipe = load_pipeline(TINY_ROOT)
    w0 = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.load_lora_weights(str(tmp_path / "lora_sara"))
    img = pipeline_images(pipe, ["a red circle"], 2, 4.0, 0, latent_output_is_image=True)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = pipe.unet.state_dict()
    # the fused weights are W0 + BA of the SVD
    tuned = load_backbone({"name": "tiny", "kind": "tiny"}).denoiser
    import sara

    sara.load_sparse(tuned, runs["sara"] / "delta.safetensors")
    base = load_backbone({"name": "tiny", "kind": "tiny"}).denoiser
    state, _ = lora_from_delta(base, tuned, 4)
    name = next(k for k in state if k.endswith("lora_A.weight")).rsplit(".lora_A", 1)[0]
    a, b = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]
    ba = (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)).reshape(w0[f"{name}.weight"].shape)
    torch.testing.assert_close(fused[f"{name}.weight"], w0[f"{name}.weight"] + ba, rtol=0, atol=1e-6)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from sara.export import main

    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "result.json" in err and "Traceback" not in err


def latent_backbone():
    """A Stable Diffusion backbone at toy size with a VAE (random weights): the latent case."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from sara.backbones.stable_diffusion import StableDiffusionBackbone
    from sara.backbones.tiny import build_tiny

    tiny = build_tiny(seed=0)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=128, attention_head_dim=2)
    sched = DDPMScheduler(beta_schedule="scaled_linear", steps_offset=1, clip_sample=False)
    cfg = {"name": "latent", "kind": "stable_diffusion", "resolution": 16,
           "sampling": {"sampler": "DPMSolverMultistepScheduler", "steps": 3, "guidance_scale": 3.0}}
    return StableDiffusionBackbone(cfg=cfg, denoiser=unet, vae=vae, text_encoders=tiny.text_encoders,
                                   tokenizers=tiny.tokenizers, noise_scheduler=sched,
                                   scheduler_config=dict(sched.config))


def test_latent_backbone_exports_a_plain_stable_diffusion_pipeline(tmp_path):
    """With a VAE (SD 1.5/2, a latent tiny model), the folder loads with a bare
    DiffusionPipeline.from_pretrained(DIR) and its images are the suite's sampler's."""
    from diffusers import DiffusionPipeline

    from sara.export import pipeline_images, save_pipeline

    bb = latent_backbone()
    with torch.no_grad():  # a "fine-tuned" denoiser
        for p in bb.denoiser.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = save_pipeline(bb, tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    prompts = ["a red circle", "a blue square"]
    got = pipeline_images(pipe, prompts, 3, 3.0, seed=5, latent_output_is_image=False)
    want = bb.sample(prompts, num_inference_steps=3, guidance_scale=3.0, seed=5, batch_size=2,
                     output_type="pt")
    assert got.shape == want.shape == (2, 3, 16, 16)
    assert float((got - want).abs().max()) <= 1e-5
