"""SD 1.5 / SD 2 / SDXL / SD3 through the real loading code: tiny randomly initialised models of
the same classes are saved as diffusers-format folders, loaded back with ``load_backbone`` (the
code path real weights take), then trained one step and sampled one step."""
from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
RES = 16  # pixels; the tiny VAE downsamples by 2 -> 8x8 latents
WORDS = ["a", "red", "blue", "circle", "square", "style", "cyberpunk", ","]


def clip_tokenizer(max_len=16):
    from sara.backbones.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(WORDS, model_max_length=max_len)


def clip_text(tok, cls, hidden=16, proj=16):
    from transformers import CLIPTextConfig

    torch.manual_seed(0)
    return cls(CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                              projection_dim=proj, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id))


def vae(latent=4, **kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=latent,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4, sample_size=RES, **kw)


def unet(cross, **kw):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    args = dict(sample_size=RES // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross,
                attention_head_dim=2, norm_num_groups=4)
    args.update(kw)
    return UNet2DConditionModel(**args)


def t5_pair():
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in string.ascii_lowercase + ",."] + [("\u2581" + c, -1.5) for c in string.ascii_lowercase]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=32)
    torch.manual_seed(0)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                                  decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return enc, tok


def save(folder: Path, parts: dict):
    folder.mkdir(parents=True)
    for sub, obj in parts.items():
        obj.save_pretrained(folder / sub)
    (folder / "model_index.json").write_text("{}")
    return folder


def write_sd(folder, kind):
    from diffusers import DDIMScheduler, PNDMScheduler
    from transformers import CLIPTextModel

    tok = clip_tokenizer()
    if kind == "sd15":
        sched = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True)
        u = unet(16)
    else:  # sd2: linear projections, per-block heads, v-prediction
        sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False)
        u = unet(16, use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True)
    return save(folder, {"unet": u, "vae": vae(), "text_encoder": clip_text(tok, CLIPTextModel), "tokenizer": tok,
                         "scheduler": sched})


def write_sdxl(folder):
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok1, tok2 = clip_tokenizer(), clip_tokenizer()
    te1 = clip_text(tok1, CLIPTextModel, hidden=16)
    te2 = clip_text(tok2, CLIPTextModelWithProjection, hidden=16, proj=16)
    u = unet(32, addition_embed_type="text_time", addition_time_embed_dim=4,
             projection_class_embeddings_input_dim=6 * 4 + 16, use_linear_projection=True,
             transformer_layers_per_block=(1, 2), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return save(folder, {"unet": u, "vae": vae(force_upcast=True), "text_encoder": te1, "text_encoder_2": te2,
                         "tokenizer": tok1, "tokenizer_2": tok2, "scheduler": sched})


def write_sd3(folder, with_t5=True):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    tok1, tok2 = clip_tokenizer(), clip_tokenizer()
    te1 = clip_text(tok1, CLIPTextModelWithProjection, hidden=16, proj=16)
    te2 = clip_text(tok2, CLIPTextModelWithProjection, hidden=16, proj=16)
    torch.manual_seed(0)
    tr = SD3Transformer2DModel(sample_size=RES // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                               attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                               caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16)
    parts = {"transformer": tr, "vae": vae(shift_factor=0.06, scaling_factor=1.5), "text_encoder": te1,
             "text_encoder_2": te2, "tokenizer": tok1, "tokenizer_2": tok2,
             "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}
    if with_t5:
        parts["text_encoder_3"], parts["tokenizer_3"] = t5_pair()
    return save(folder, parts)


def cfg_for(name, folder, **extra):
    cfg = yaml.safe_load((REPO / "conf" / "backbone" / f"{name}.yaml").read_text())
    cfg.update(pretrained=str(folder), resolution=RES, dtype="float32", **extra)
    return cfg


def train_and_sample(bb, sample_steps=1):
    torch.manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, RES, RES) * 2 - 1, "prompts": ["a red circle", "cyberpunk style, a blue square"]}
    before = {k: v.clone() for k, v in bb.denoiser.state_dict().items()}
    opt = torch.optim.AdamW([p for p in bb.denoiser.parameters() if p.requires_grad], lr=1e-3)
    loss = bb.training_loss(bb.denoiser, batch, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    after = bb.denoiser.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the optimizer step did not change the denoiser"
    for te in bb.text_encoders:
        assert all(p.grad is None for p in te.parameters()), "text encoders are frozen at fine-tuning time"
    imgs = bb.sample(["a red circle", "a blue square"], num_inference_steps=sample_steps, guidance_scale=3.0, seed=0)
    assert len(imgs) == 2 and all(im.size == (RES, RES) and im.mode == "RGB" for im in imgs)
    return loss


@pytest.mark.parametrize("name", ["sd15", "sd2"])
def test_stable_diffusion_roundtrip(name, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    from sara.backbones import load_backbone

    folder = write_sd(tmp_path / name, name)
    bb = load_backbone(cfg_for(name, folder))
    assert isinstance(bb.denoiser, UNet2DConditionModel) and isinstance(bb.vae, AutoencoderKL)
    assert isinstance(bb.text_encoder, CLIPTextModel)
    assert bb.prediction_type == ("epsilon" if name == "sd15" else "v_prediction")
    assert bb.noise_scheduler.config.prediction_type == bb.prediction_type
    assert type(bb.noise_scheduler).__name__ == "DDPMScheduler"
    # sampling uses the model's own scheduler (PNDM for SD 1.5, DDIM for SD 2)
    assert type(bb.make_sampler()).__name__ == ("PNDMScheduler" if name == "sd15" else "DDIMScheduler")
    train_and_sample(bb, sample_steps=2)


def test_v_prediction_target(tmp_path):
    """SD 2's loss regresses the velocity: a denoiser that outputs exactly v has zero loss."""
    from sara.backbones import load_backbone

    bb = load_backbone(cfg_for("sd2", write_sd(tmp_path / "sd2", "sd2")))
    batch = {"pixel_values": torch.rand(2, 3, RES, RES) * 2 - 1, "prompts": ["a", "a"]}
    seen = {}

    def oracle(x, t, cond):
        g = torch.Generator().manual_seed(5)
        x0 = bb.encode_pixels(batch["pixel_values"], g)
        noise = torch.randn(x0.shape, generator=g)
        return bb.noise_scheduler.get_velocity(x0, noise, t)

    bb.call_denoiser = lambda den, x, t, cond: oracle(x, t, cond)
    with torch.no_grad():
        loss = bb.training_loss(bb.denoiser, batch, generator=torch.Generator().manual_seed(5))
    assert float(loss) < 1e-10


def test_sdxl_roundtrip(tmp_path):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    from sara.backbones import load_backbone

    bb = load_backbone(cfg_for("sdxl", write_sdxl(tmp_path / "sdxl")))
    assert isinstance(bb.text_encoders[0], CLIPTextModel)
    assert isinstance(bb.text_encoders[1], CLIPTextModelWithProjection)
    cond = bb.encode_prompt(["a red circle"])
    assert cond["encoder_hidden_states"].shape[-1] == 32  # both encoders' penultimate states
    assert cond["text_embeds"].shape == (1, 16)
    assert cond["time_ids"].tolist() == [[RES, RES, 0, 0, RES, RES]]
    assert type(bb.make_sampler()).__name__ == "EulerDiscreteScheduler"
    train_and_sample(bb, sample_steps=1)


@pytest.mark.parametrize("drop_t5", [False, True])
def test_sd3_roundtrip(drop_t5, tmp_path):
    from diffusers import SD3Transformer2DModel
    from sara.backbones import load_backbone

    folder = write_sd3(tmp_path / "sd3", with_t5=not drop_t5)
    bb = load_backbone(cfg_for("sd3", folder, drop_t5=drop_t5))
    assert isinstance(bb.denoiser, SD3Transformer2DModel)
    assert bb.prediction_type == "flow_matching"
    assert (bb.t5 is None) == drop_t5
    cond = bb.encode_prompt(["a red circle", "a blue square"])
    n_t5 = 16 if drop_t5 else 256  # zeros of the CLIP length when T5 is dropped, as diffusers' pipeline
    assert cond["encoder_hidden_states"].shape == (2, 16 + n_t5, 32)
    assert cond["pooled_projections"].shape == (2, 32)
    assert type(bb.make_sampler()).__name__ == "FlowMatchEulerDiscreteScheduler"
    train_and_sample(bb, sample_steps=2)


def test_sd3_flow_matching_target(tmp_path):
    """x_s = (1 - s) x0 + s eps and target eps - x0: the exact velocity gives zero loss."""
    from sara.backbones import load_backbone

    bb = load_backbone(cfg_for("sd3", write_sd3(tmp_path / "sd3", with_t5=False), drop_t5=True,
                               weighting_scheme="uniform"))
    batch = {"pixel_values": torch.rand(3, 3, RES, RES) * 2 - 1, "prompts": ["a"] * 3}
    with torch.no_grad():
        x0 = bb.encode_pixels(batch["pixel_values"], torch.Generator().manual_seed(9))

    def oracle(den, x, t, cond):
        s = (t / 1000.0).view(-1, 1, 1, 1)
        eps = (x - (1 - s) * x0) / s  # recover the noise that was drawn
        return eps - x0

    bb.call_denoiser = oracle
    with torch.no_grad():
        loss = bb.training_loss(bb.denoiser, batch, generator=torch.Generator().manual_seed(9))
    assert float(loss) < 1e-6
