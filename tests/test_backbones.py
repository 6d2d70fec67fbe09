"""Backbones: the public architectures' configs, the tiny backbone (tokenizer, shipped weights,
training and sampling through the Backbone contract) and the missing-weights error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf" / "backbone"


def load_yaml(name):
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())


# --- architectures of the public models -----------------------------------------------------
@pytest.mark.parametrize("name", ["sd15", "sd2", "sd3", "sdxl"])
def test_public_denoiser_configs_have_the_known_parameter_counts(name):
    from sara.backbones import KNOWN_PARAM_COUNTS, build_denoiser_from_config, count_params

    model = build_denoiser_from_config(name, device="meta")  # shapes only, no memory, no download
    assert next(model.parameters()).device.type == "meta"
    assert count_params(model) == KNOWN_PARAM_COUNTS[name]
    assert load_yaml(name)["denoiser_params"] == KNOWN_PARAM_COUNTS[name]
    assert type(model).__name__ == load_yaml(name)["denoiser_class"]


def test_known_counts_are_the_published_ones():
    from sara.backbones import KNOWN_PARAM_COUNTS

    assert KNOWN_PARAM_COUNTS["sd15"] == 859_520_964
    assert KNOWN_PARAM_COUNTS["sd2"] == 865_910_724


def test_backbone_yamls_are_complete():
    for name in ("tiny", "tiny_latent", "sd15", "sd2", "sd3", "sdxl"):
        cfg = load_yaml(name)
        for key in ("name", "kind", "pretrained", "prediction_type", "resolution", "denoiser", "text_encoders",
                    "sampling", "dtype", "denoiser_params"):
            assert key in cfg, (name, key)
        assert cfg["name"] == name
    assert load_yaml("sd2")["prediction_type"] == "v_prediction"
    assert load_yaml("sd3")["prediction_type"] == "flow_matching"
    assert load_yaml("tiny")["vae"] is None
    assert load_yaml("tiny_latent")["vae"] == "vae"


# --- tiny tokenizer ---------------------------------------------------------------------------
def test_tiny_tokenizer_makes_domain_words_single_tokens():
    from sara.backbones.tiny import domain_words
    from sara.backbones.tokenizer import build_clip_tokenizer

    words = domain_words()
    for w in ("red", "purple", "circle", "diamond", "small", "large", "above", "left", "of", "and", "a",
              "style", "barbiecore", "cyberpunk", "elementfire", "expedition", "hornify", ","):
        assert w in words
    tok = build_clip_tokenizer(words, model_max_length=32)
    assert type(tok).__name__ == "CLIPTokenizer"
    for w in words:
        ids = tok(w).input_ids
        assert len(ids) == 3, (w, tok.convert_ids_to_tokens(ids))  # <bos> word <eos>
    # unknown words fall back to byte-level characters
    toks = tok.convert_ids_to_tokens(tok("zebra").input_ids)[1:-1]
    assert "".join(toks) == "zebra</w>" and len(toks) == 5
    caption = "Cyberpunk style, a small red circle above a large blue square and a small green cross"
    assert len(tok(caption).input_ids) == len(caption.replace(",", " ,").split()) + 2


# --- the shipped tiny backbone ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from sara.backbones import load_backbone

    return load_backbone(load_yaml("tiny"))


def test_tiny_zoo_is_small_and_documented():
    from sara.backbones.tiny import TINY_ROOT

    files = [f for f in TINY_ROOT.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 20e6
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (TINY_ROOT / sub).is_dir()
    assert any(f.suffix == ".safetensors" for f in (TINY_ROOT / "unet").iterdir())
    m = json.loads((TINY_ROOT / "manifest.json").read_text())
    for key in ("command", "seed", "steps", "wall_time_s", "device", "final_loss", "versions", "reproduce"):
        assert key in m
    # the shipped base: plain scenes, then varied looks; the manifest reproduces the whole chain
    assert m["looks"] == "varied" and m["init_manifest"]["steps"] > 0
    assert m["reproduce"].count("scripts/pretrain_tiny.py") == 2 and "--looks varied" in m["reproduce"]
    pf = m["prompt_following"]
    assert pf["n_prompts"] == 500 and pf["colour_acc"] >= 0.80 and pf["shape_acc"] >= 0.60


def test_tiny_backbone_contract(tiny):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    cfg = load_yaml("tiny")
    assert tiny.name == "tiny" and tiny.resolution == 32 and tiny.prediction_type == "epsilon"
    assert tiny.vae is None
    assert isinstance(tiny.denoiser, UNet2DConditionModel)
    assert isinstance(tiny.text_encoder, CLIPTextModel) and isinstance(tiny.tokenizer, CLIPTokenizer)
    n = sum(p.numel() for p in tiny.denoiser.parameters())
    assert n == cfg["denoiser_params"] and 1e6 < n < 4e6
    assert not any(p.requires_grad for p in tiny.text_encoder.parameters())  # frozen at fine-tuning time
    assert type(tiny.make_sampler()).__name__ == "DPMSolverMultistepScheduler"


def test_tiny_denoiser_config_matches_the_builder():
    from sara.backbones import build_denoiser_from_config, count_params
    from sara.backbones.tiny import TINY_ROOT

    assert count_params(build_denoiser_from_config("tiny")) == load_yaml("tiny")["denoiser_params"]
    loaded = build_denoiser_from_config(TINY_ROOT, random_init=False, device="cpu")
    assert count_params(loaded) == load_yaml("tiny")["denoiser_params"]


def test_tiny_training_step_changes_only_the_denoiser(tiny):
    torch.manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32) * 2 - 1, "prompts": ["a red circle", "a small blue square"]}
    before = {k: v.clone() for k, v in tiny.denoiser.state_dict().items()}
    te_before = {k: v.clone() for k, v in tiny.text_encoder.state_dict().items()}
    opt = torch.optim.AdamW(tiny.denoiser.parameters(), lr=1e-3)
    loss = tiny.training_loss(tiny.denoiser, batch, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    after = tiny.denoiser.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(te_before[k], v) for k, v in tiny.text_encoder.state_dict().items())
    tiny.denoiser.load_state_dict(before)  # leave the module-scoped fixture as loaded


def test_tiny_loss_is_seeded(tiny):
    batch = {"pixel_values": torch.zeros(2, 3, 32, 32), "prompts": ["a red circle", ""]}
    with torch.no_grad():
        a = tiny.training_loss(tiny.denoiser, batch, generator=torch.Generator().manual_seed(3))
        b = tiny.training_loss(tiny.denoiser, batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_tiny_sampling_is_seeded_and_returns_pil(tiny):
    prompts = ["a large red circle", "a small blue square above a large green cross", "a purple diamond"]
    a = tiny.sample(prompts, num_inference_steps=2, guidance_scale=4.0, seed=1, batch_size=2)
    assert len(a) == 3 and all(im.size == (32, 32) and im.mode == "RGB" for im in a)
    b = tiny.sample(prompts, num_inference_steps=2, guidance_scale=4.0, seed=1, batch_size=2)
    assert all(list(x.getdata()) == list(y.getdata()) for x, y in zip(a, b))
    c = tiny.sample(prompts[:1], num_inference_steps=2, guidance_scale=4.0, seed=2, output_type="pt")
    assert c.shape == (1, 3, 32, 32) and c.min() >= -1 and c.max() <= 1


def test_tiny_sampling_uses_the_given_denoiser(tiny):
    import copy

    other = copy.deepcopy(tiny.denoiser)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.0)
    x = tiny.sample(["a red circle"], num_inference_steps=2, seed=0, output_type="pt")
    y = tiny.sample(["a red circle"], num_inference_steps=2, seed=0, output_type="pt", denoiser=other)
    assert not torch.equal(x, y)


def test_build_tiny_save_load_roundtrip(tmp_path):
    """The pre-training path: a fresh tiny backbone (text encoder trainable) saved in diffusers
    format loads back through load_backbone with identical outputs."""
    from sara.backbones import load_backbone
    from sara.backbones.tiny import build_tiny

    arch = {"unet": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 2},
            "text_encoder": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "projection_dim": 16}}
    bb = build_tiny(arch, seed=0, cfg={"train_text_encoder": True, "prompt_dropout": 0.5})
    assert all(p.requires_grad for p in bb.text_encoder.parameters())
    batch = {"pixel_values": torch.rand(4, 3, 32, 32) * 2 - 1, "prompts": ["a red circle"] * 4}
    loss = bb.training_loss(bb.denoiser, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bb.text_encoder.parameters())
    bb.save_pretrained(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "model_index.json").is_file()
    cfg = dict(load_yaml("tiny"), pretrained=str(tmp_path / "tiny"))
    bb2 = load_backbone(cfg)
    x = bb.sample(["a red circle"], num_inference_steps=2, seed=0, output_type="pt")
    y = bb2.sample(["a red circle"], num_inference_steps=2, seed=0, output_type="pt")
    assert torch.equal(x, y)


def test_tiny_missing_folder_error(tmp_path):
    from sara.backbones import MissingWeightsError, load_backbone

    with pytest.raises(MissingWeightsError, match="backbone.pretrained"):
        load_backbone(dict(load_yaml("tiny"), pretrained=str(tmp_path / "nope")))


# --- missing weights of the real models -------------------------------------------------------
@pytest.mark.parametrize("name", ["sd15", "sd2", "sd3", "sdxl"])
def test_missing_local_path_error_says_what_to_do(name, tmp_path):
    from sara.backbones import MissingWeightsError, load_backbone

    cfg = load_yaml(name)
    missing = tmp_path / "no-such-folder"
    with pytest.raises(MissingWeightsError) as e:
        load_backbone(dict(cfg, pretrained=str(missing)))
    msg = str(e.value)
    assert str(missing) in msg and "does not exist" in msg
    assert cfg["model_id"] in msg
    assert "backbone.pretrained=" in msg
    assert "diffusers format" in msg and f"{cfg['denoiser']}/" in msg
    assert f"huggingface-cli download {cfg['model_id']} --local-dir" in msg


def test_uncached_model_id_offline_error(monkeypatch, tmp_path):
    from sara.backbones import MissingWeightsError, load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dict(load_yaml("sd15"), pretrained="sara-tests/not-a-cached-model", model_id="sara-tests/not-a-cached-model")
    with pytest.raises(MissingWeightsError) as e:
        load_backbone(cfg)
    msg = str(e.value)
    assert "sara-tests/not-a-cached-model" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    assert "backbone.pretrained=/path/to/not-a-cached-model" in msg
    assert "huggingface-cli download sara-tests/not-a-cached-model --local-dir /path/to/not-a-cached-model" in msg


def test_the_real_model_ids_are_not_cached_offline(monkeypatch):
    """The shipped configs' model ids, offline and not cached here, give the clear error."""
    from sara.backbones import MissingWeightsError, load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        load_backbone(load_yaml("sd15"))
    except MissingWeightsError as e:
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(e)
    else:  # pragma: no cover - a machine with the weights cached
        pytest.skip("SD 1.5 is cached on this machine")


def test_folder_without_a_component_names_it(tmp_path):
    from sara.backbones import MissingWeightsError, load_backbone

    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="no 'unet/' folder"):
        load_backbone(dict(load_yaml("sd15"), pretrained=str(tmp_path / "sd")))
