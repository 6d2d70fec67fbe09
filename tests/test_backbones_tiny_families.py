"""The tiny SD 2 / SD 3 / SDXL backbones (sara.backbones.tiny_families): random-init folders load
with diffusers' own pipeline classes and generate; the suite loads them through the full-size
backbone classes; each config differs from its full-size one only in weights location,
resolution and sizes; a missing zoo names the pre-training command; budgets; every method steps."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf" / "backbone"
WORLDS = ["tiny_sd2", "tiny_sdxl", "tiny_sd3"]
FULL = {"tiny_sd2": "sd2", "tiny_sdxl": "sdxl", "tiny_sd3": "sd3"}
PIPELINES = {"tiny_sd2": "StableDiffusionPipeline", "tiny_sdxl": "StableDiffusionXLPipeline",
             "tiny_sd3": "StableDiffusion3Pipeline"}
CLASSES = {"tiny_sd2": "StableDiffusionBackbone", "tiny_sdxl": "SDXLBackbone", "tiny_sd3": "SD3Backbone"}


def load_yaml(name):
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One random-init folder per world (diffusers format), built by the suite's builder."""
    from sara.backbones.tiny_families import write_random_folder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    return {w: write_random_folder(w, root / w, seed=0) for w in WORLDS}


@pytest.fixture(scope="module")
def loaded(folders):
    from sara.backbones import load_backbone

    cache = {}

    def get(world):
        if world not in cache:
            cache[world] = load_backbone(dict(load_yaml(world), pretrained=str(folders[world])))
        return cache[world]
    return get


@pytest.mark.parametrize("world", WORLDS)
def test_diffusers_pipeline_generates_from_the_folder(world, folders):
    import diffusers

    pipe = getattr(diffusers, PIPELINES[world]).from_pretrained(folders[world])
    img = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (64, 64)
    expected = {"tiny_sd2": "DDIMScheduler", "tiny_sdxl": "EulerDiscreteScheduler",
                "tiny_sd3": "FlowMatchEulerDiscreteScheduler"}[world]
    assert type(pipe.scheduler).__name__ == expected
    if world == "tiny_sd3":
        assert pipe.text_encoder_3 is not None and pipe.vae.config.latent_channels == 16
        assert pipe.vae.config.shift_factor is not None


def test_builder_is_deterministic(folders, tmp_path):
    from safetensors.torch import load_file

    from sara.backbones.tiny_families import write_random_folder

    again = write_random_folder("tiny_sd3", tmp_path / "again", seed=0)
    for sub in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder_3/model.safetensors"):
        a, b = load_file(str(folders["tiny_sd3"] / sub)), load_file(str(again / sub))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub


@pytest.mark.parametrize("world", WORLDS)
def test_loads_through_the_full_size_class(world, loaded):
    bb = loaded(world)
    cfg, full = load_yaml(world), load_yaml(FULL[world])
    assert type(bb).__name__ == CLASSES[world] and cfg["kind"] == full["kind"]
    assert bb.prediction_type == full["prediction_type"] and bb.resolution == 64
    assert type(bb.denoiser).__name__ == full["denoiser_class"]
    assert [type(t).__name__ for t in bb.text_encoders] == {
        "tiny_sd2": ["CLIPTextModel"], "tiny_sdxl": ["CLIPTextModel", "CLIPTextModelWithProjection"],
        "tiny_sd3": ["CLIPTextModelWithProjection"] * 2}[world]
    n = bb.num_params()
    assert n[full["denoiser"]] == cfg["denoiser_params"] and n["vae"] == cfg["vae_params"]
    assert sum(v for k, v in n.items() if k.startswith("text_encoder")) == cfg["text_encoder_params"]
    assert not any(p.requires_grad for t in bb.text_encoders for p in t.parameters())  # frozen when fine-tuning
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "prompts": ["a red circle", "a small blue square"]}
    assert torch.isfinite(bb.training_loss(batch=batch, generator=g))
    imgs = bb.sample(["a red circle"], num_inference_steps=2, seed=0)
    assert imgs[0].size == (64, 64)


@pytest.mark.parametrize("world", WORLDS)
def test_config_differs_from_full_size_only_in_location_resolution_and_sizes(world):
    cfg, full = load_yaml(world), load_yaml(FULL[world])
    # where the weights are; resolution; sizes (parameter counts, T5 length); the sampling budget
    # and guidance of a toy model; frozen parts in float32 (CPU)
    allowed = {"name", "world", "model_id", "pretrained", "gated", "resolution", "architecture", "denoiser_params",
               "text_encoder_params", "vae_params", "max_sequence_length", "dtype", "sampling"}
    assert set(full) - {"gated"} <= set(cfg), set(full) - set(cfg)
    differ = {k for k in set(cfg) | set(full) if cfg.get(k) != full.get(k)}
    assert differ <= allowed, differ - allowed
    assert {k for k in cfg["sampling"] if cfg["sampling"][k] != full["sampling"][k]} <= {"steps", "guidance_scale"}
    assert cfg["world"] == world and cfg["pretrained"] is None


def test_sdxl_empty_prompts_are_zero_conditioning(loaded):
    bb = loaded("tiny_sdxl")
    cond = bb._encode_for_training(["a red circle", ""])
    assert cond["encoder_hidden_states"][1].abs().sum() == 0 and cond["text_embeds"][1].abs().sum() == 0
    assert cond["encoder_hidden_states"][0].abs().sum() > 0 and cond["time_ids"][1].tolist() == [64, 64, 0, 0, 64, 64]


def test_sd3_latents_use_the_vae_shift(loaded):
    bb = loaded("tiny_sd3")
    bb.vae.register_to_config(shift_factor=0.25, scaling_factor=2.0)
    try:
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        z = bb.vae.encode(x).latent_dist.mean
        got = bb.encode_pixels(x, torch.Generator().manual_seed(0))
        assert got.shape == (1, 16, 16, 16)
        assert torch.allclose(got.mean(), ((z - 0.25) * 2.0).mean(), atol=0.5)
    finally:
        bb.vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)


@pytest.mark.parametrize("world", WORLDS)
def test_missing_zoo_names_the_pretraining_command(world, tmp_path, monkeypatch):
    from sara.backbones import MissingWeightsError, load_backbone
    from sara.backbones import tiny_families

    monkeypatch.setitem(tiny_families.WORLDS, world, dict(tiny_families.WORLDS[world], root=tmp_path / "none"))
    vae = "vae16" if world == "tiny_sd3" else "vae"
    with pytest.raises(MissingWeightsError, match=f'STAGES="{vae} {world}" bash scripts/pretrain_world.sh'):
        load_backbone(load_yaml(world))
    with pytest.raises(MissingWeightsError, match="has no .* folder"):
        load_backbone(dict(load_yaml(world), pretrained=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown tiny world 'tiny_sd9'"):
        load_backbone(dict(load_yaml(world), world="tiny_sd9"))


def test_run_py_without_the_zoo_fails_fast_with_the_command(tmp_path):
    import subprocess
    import sys

    from sara.backbones.tiny_families import WORLDS as ARCH

    if (ARCH["tiny_sd3"]["root"] / "model_index.json").is_file():
        pytest.skip("the tiny_sd3 weights are shipped")
    p = subprocess.run([sys.executable, "run.py", "backbone=tiny_sd3", "train=smoke", f"output_root={tmp_path}",
                        "torch_threads=1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert 'STAGES="vae16 tiny_sd3" bash scripts/pretrain_world.sh' in p.stderr


@pytest.mark.parametrize("world", WORLDS)
def test_budget_cli_on_the_tiny_backbones(world, tmp_path):
    """Every method's knob within 5% of each scaled budget, or the best its integer knob allows."""
    from sara.budget import instantiate_method, main
    from test_budget import check_close

    out = tmp_path / "b.json"
    assert main(["--backbone", world, "--random-init", "--json", str(out)]) == 0
    recs = json.loads(out.read_text())
    from sara.backbones import build_denoiser_from_config

    torch.manual_seed(0)
    den = build_denoiser_from_config(world, device="cpu")
    assert {r["denoiser_params"] for r in recs} == {load_yaml(world)["denoiser_params"]}
    for r in recs:
        check_close(instantiate_method(r["method"]), den, r)


@pytest.mark.parametrize("world", WORLDS)
def test_every_method_takes_a_step(world, loaded):
    """Every compared method applies to the denoiser at the 5M budget (scaled) and takes one
    optimizer step on the backbone's own loss."""
    import copy

    from sara.budget import budget_config, instantiate_method, method_names, target_for
    from sara.methods.base import PrepareContext
    from test_methods import FAST

    bb = loaded(world)
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1, "prompts": ["a red circle", "a small blue square"]}
    bc = budget_config("5M")
    target = target_for(bc["params"], bc["reference_params"], sum(p.numel() for p in bb.denoiser.parameters()))

    def loss_fn(model, b):
        return bb.training_loss(model, b, generator=g)

    for name in (m for m in method_names() if m != "textual_inversion"):  # (a text-encoder row: test_customisation)
        den = copy.deepcopy(bb.denoiser)
        m = instantiate_method(name, **FAST.get(name, {}))
        ctx = PrepareContext(loss_fn=loss_fn, batches=itertools.repeat(batch), steps=2, seed=0)
        mod = m.apply(den, budget=None if name == "full" else target, ctx=ctx)
        opt = m.make_optimizer(lr=1e-3)
        trainable = [p for p in mod.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        loss = loss_fn(mod, batch)
        assert torch.isfinite(loss), name
        loss.backward()
        opt.step()
        assert m.num_trainable() > 0, name
        assert any(not torch.equal(a, p) for a, p in zip(before, trainable)), f"{name}: the step changed nothing"


def test_pretraining_needs_the_right_vae():
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import pretrain_tiny

    with pytest.raises(SystemExit):
        pretrain_tiny.parse_args(["--world", "tiny_sd3"])
    assert pretrain_tiny.parse_args(["--world", "tiny_sd2", "--vae", "x"]).save_dtype == "fp16"
    assert pretrain_tiny.parse_args(["--world", "tiny_latent", "--vae", "x"]).save_dtype == "fp32"


@pytest.mark.slow
def test_sd3_pretraining_resumes_bit_exactly_and_the_pipeline_loads(tmp_path):
    """A 16-channel VAE with shift_factor, then tiny_sd3 (transformer + three text encoders):
    an interrupted run resumed ends bit-identical to an uninterrupted one; the folder loads with
    StableDiffusion3Pipeline and records its prompt following."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import pretrain_tiny
    import pretrain_vae
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    vm = pretrain_vae.main(["--steps", "2", "--batch-size", "2", "--warmup", "1", "--workers", "0", "--n-val", "0",
                            "--latent-channels", "16", "--out", str(tmp_path / "vae16")])
    assert vm["latent_channels"] == 16 and vm["shift_factor"] == pytest.approx(vm["latent_mean"], abs=1e-4)
    args = ["--world", "tiny_sd3", "--vae", str(tmp_path / "vae16"), "--steps", "3", "--batch-size", "2",
            "--warmup", "1", "--workers", "0", "--no-progress"]
    pretrain_tiny.main([*args, "--out", str(tmp_path / "a"), "--ckpt", str(tmp_path / "a_ck"), "--eval-prompts", "2"])
    assert pretrain_tiny.main([*args, "--out", str(tmp_path / "b"), "--ckpt", str(tmp_path / "b_ck"),
                               "--stop-at", "1"]) is None
    m = pretrain_tiny.main([*args, "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "b_ck")])
    assert m["world"] == "tiny_sd3" and m["steps"] == 3 and m["save_dtype"] == "fp16"
    for sub in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                "text_encoder_2/model.safetensors", "text_encoder_3/model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / sub)), load_file(str(tmp_path / "b" / sub))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {"colour_acc", "shape_acc", "bvqa"} <= set(ma["prompt_following"])
    assert sum(f.stat().st_size for f in (tmp_path / "a").rglob("*") if f.is_file()) < 30e6
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "a")
    assert pipe("a red circle", num_inference_steps=2).images[0].size == (64, 64)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("world", WORLDS)
def test_smoke_run_on_a_random_init_folder(world, folders, data_root, tmp_path):
    """``python run.py backbone=<world> backbone.pretrained=<folder> train=smoke`` (in process):
    trains, samples and writes its result record."""
    from hydra import compose, initialize_config_dir

    from sara.record import run_dir_for
    from sara.runs import execute

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"backbone={world}", f"backbone.pretrained={folders[world]}", "train=smoke", "train.steps=2",
            "eval.num_prompts=2", f"output_root={tmp_path / 'runs'}", f"data.root={data_root}", "torch_threads=1"])
    run_dir = run_dir_for(cfg)
    rec = execute(cfg, run_dir)
    assert rec["status"] == "complete"
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["backbone"] == world and on_disk["steps"] == 2 and on_disk["final_loss"] > 0
    assert on_disk["denoiser_params"] == load_yaml(world)["denoiser_params"]
    from PIL import Image

    assert Image.open(run_dir / "samples/00001.png").size == (64, 64)


def test_lora_targets_the_joint_attention_of_tiny_sd3():
    from sara.backbones import build_denoiser_from_config
    from sara.budget import instantiate_method

    den = build_denoiser_from_config("tiny_sd3", device="meta")
    for name in ("lora", "dora"):
        layers = [n for n, _ in instantiate_method(name).target_layers(den)]
        suffixes = {n.rsplit(".", 1)[-1] for n in layers}
        assert {"to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"} <= suffixes, name
        assert sum(n.endswith("to_out.0") for n in layers) == den.config.num_layers
