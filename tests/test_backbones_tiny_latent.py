"""The latent tiny world: a miniature Stable Diffusion folder that diffusers' own pipeline loads,
loaded by the suite through the sd15 code path; clear errors for missing or corrupt weights."""
import json

import pytest
import torch

from sara.backbones import load_backbone
from sara.backbones.loading import MissingWeightsError


@pytest.fixture(scope="module")
def latent_folder(tmp_path_factory):
    """A random-weight latent tiny pipeline (the tiny_latent architecture), saved in diffusers format."""
    from sara.backbones.tiny import build_tiny

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny_latent")
    build_tiny(world="tiny_latent", seed=0).save_pretrained(folder)
    return folder


def latent_cfg(**kw):
    from omegaconf import OmegaConf

    from sara.backbones.tiny import ZOO

    cfg = OmegaConf.to_container(OmegaConf.load(ZOO.parent.parent / "conf" / "backbone" / "tiny_latent.yaml"))
    cfg.update(kw)
    return cfg


def test_diffusers_pipeline_loads_folder(latent_folder):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(latent_folder)
    assert pipe.vae.config.latent_channels == 4 and pipe.unet.config.sample_size == 16
    out = pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    img = out.images[0]
    assert img.size == (64, 64)


def test_config_loads_through_the_sd15_code_path(latent_folder):
    from sara.backbones.stable_diffusion import StableDiffusionBackbone

    bb = load_backbone(latent_cfg(pretrained=str(latent_folder)))
    assert type(bb) is StableDiffusionBackbone and bb.vae is not None
    assert bb.resolution == 64 and bb.vae_scale_factor == 4 and bb.latent_shape(2) == (2, 4, 16, 16)
    # the same folder loaded as an SD 1.x model (kind stable_diffusion) gives the same weights
    sd = load_backbone({"name": "sd", "kind": "stable_diffusion", "pretrained": str(latent_folder), "vae": "vae",
                        "dtype": "float32", "resolution": 64})
    for a, b in zip(bb.denoiser.state_dict().values(), sd.denoiser.state_dict().values()):
        assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    loss = bb.training_loss(batch={"pixel_values": torch.zeros(2, 3, 64, 64), "prompts": ["a red circle", ""]},
                            generator=g)
    assert torch.isfinite(loss)
    ims = bb.sample(["a red circle"], num_inference_steps=2, seed=0)
    assert ims[0].size == (64, 64)


def test_missing_zoo_names_the_script(tmp_path, monkeypatch):
    from sara.backbones import tiny

    monkeypatch.setitem(tiny.WORLDS, "tiny_latent", (tiny.TINY_LATENT_OVERRIDES, tmp_path / "none"))
    with pytest.raises(MissingWeightsError, match="pretrain_world.sh"):
        load_backbone(latent_cfg())
    with pytest.raises(ValueError, match="unknown tiny world 'tiny_huge'"):
        load_backbone(latent_cfg(world="tiny_huge"))


def test_corrupt_zoo_file_is_a_clear_error(latent_folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(latent_folder, bad)
    (bad / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MissingWeightsError, match=r"component 'vae/'"):
        load_backbone(latent_cfg(pretrained=str(bad)))
    (bad / "vae").rename(tmp_path / "vae_gone")
    with pytest.raises(MissingWeightsError, match=r"no vae/ folder"):
        load_backbone(latent_cfg(pretrained=str(bad)))


def test_unknown_style_is_a_clear_error():
    import numpy as np

    from sara.data.procedural import sample_scene, scene_rng
    from sara.data.styles import render_style

    with pytest.raises(ValueError, match="unknown style 'Vaporwave'; the styles are BarbieCore"):
        render_style("Vaporwave", sample_scene(scene_rng(0, 0, 0)), 64, np.random.default_rng(0))


def test_config_states_the_architecture_sizes(latent_folder):
    cfg = latent_cfg()
    bb = load_backbone(latent_cfg(pretrained=str(latent_folder)))
    n = bb.num_params()
    assert (n["unet"], n["text_encoder"], n["vae"]) == (cfg["denoiser_params"], cfg["text_encoder_params"],
                                                       cfg["vae_params"])


def test_model_index_is_sd_shaped(latent_folder):
    idx = json.loads((latent_folder / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionPipeline"
    assert idx["vae"] == ["diffusers", "AutoencoderKL"] and idx["safety_checker"] == [None, None]
