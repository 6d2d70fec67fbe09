"""The tiny SD 2, SD 3 and SDXL backbones: each family's own classes and conditioning at toy size.

All three share the latent world of ``tiny_latent`` (64 px images, an ``AutoencoderKL`` with four
times down-sampling, the domain ``CLIPTokenizer``) and are loaded by their full-size backbone
class, so ``backbone=tiny_sd3`` runs the same code as ``backbone=sd3``:

* ``tiny_sd2`` (:class:`~sara.backbones.stable_diffusion.StableDiffusionBackbone`): SD 2's recipe —
  v-prediction, a ``DDIMScheduler`` in the folder, a ``CLIPTextModel`` with GELU (OpenCLIP's text
  tower), a UNet with linear projections and per-level head counts;
* ``tiny_sdxl`` (:class:`~sara.backbones.sdxl.SDXLBackbone`): a UNet with ``text_time`` added
  embeddings (pooled text + size/crop ids), two text encoders (``CLIPTextModel`` and
  ``CLIPTextModelWithProjection``, penultimate states concatenated), an ``EulerDiscreteScheduler``
  in the folder, more transformer layers at the lowest level, empty prompts as zero conditioning;
* ``tiny_sd3`` (:class:`~sara.backbones.sd3.SD3Backbone`): an ``SD3Transformer2DModel`` (joint
  attention) with rectified flow (``FlowMatchEulerDiscreteScheduler``), two
  ``CLIPTextModelWithProjection`` plus a small ``T5EncoderModel`` (kept, not dropped: the config
  then equals ``sd3.yaml`` but for sizes, and the third encoder's path runs), and a 16-channel VAE
  with ``shift_factor`` (latents ``(z - shift) * scale``, as SD 3's VAE).

:func:`build_family` gives a randomly initialised backbone (tests, the start of pre-training);
the weights ship in ``sara/zoo/<world>`` (``scripts/pretrain_tiny.py --world <world>``).
"""
from __future__ import annotations

import copy
import json
import string
from pathlib import Path

from .tiny import TINY_ARCH, TINY_LATENT_OVERRIDES, ZOO, domain_words, merge_arch

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "backbone"

_TEXT = TINY_ARCH["text_encoder"]  # the tiny CLIP text tower (width 128, 3 layers)
_VAE = TINY_LATENT_OVERRIDES["vae"]  # 64 px <-> 16x16 latents
_UNET = {**TINY_ARCH["unet"], **TINY_LATENT_OVERRIDES["unet"]}
_SCHED = {**TINY_ARCH["scheduler"], **TINY_LATENT_OVERRIDES["scheduler"]}

#: world -> family (the full-size config it mirrors), where the weights ship, and the architecture
WORLDS = {
    "tiny_sd2": {
        "family": "sd2", "root": ZOO / "tiny_sd2", "resolution": 64,
        "vae": dict(_VAE),
        "text_encoders": [{**_TEXT, "hidden_act": "gelu"}],
        "unet": {**_UNET, "use_linear_projection": True, "attention_head_dim": [2, 4, 4], "upcast_attention": True},
        # SD 2's folder holds a DDIMScheduler (v-prediction); training uses DDPM on the same betas
        "scheduler": {**_SCHED, "prediction_type": "v_prediction"},
        "scheduler_class": "DDIMScheduler",
        "scheduler_extra": {"set_alpha_to_one": False},
    },
    "tiny_sdxl": {
        "family": "sdxl", "root": ZOO / "tiny_sdxl", "resolution": 64,
        "vae": {**_VAE, "force_upcast": True},
        # CLIP ViT-L (quick GELU) and OpenCLIP bigG (GELU, with projection), at toy width
        "text_encoders": [{**_TEXT, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
                           "projection_dim": 64},
                          {**_TEXT, "hidden_act": "gelu"}],
        "unet": {**_UNET, "use_linear_projection": True, "attention_head_dim": [2, 4, 4],
                 "transformer_layers_per_block": [1, 1, 2], "addition_embed_type": "text_time",
                 "addition_time_embed_dim": 32},
        "scheduler": dict(_SCHED),
        "scheduler_class": "EulerDiscreteScheduler",
        "scheduler_extra": {},
    },
    "tiny_sd3": {
        "family": "sd3", "root": ZOO / "tiny_sd3", "resolution": 64,
        # SD 3's VAE: 16 latent channels, no quant convs, shift_factor + scaling_factor (set by
        # scripts/pretrain_vae.py --latent-channels 16 to the mean and 1 / std of the latents)
        "vae": {**_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False,
                "shift_factor": 0.0},
        "text_encoders": [{**_TEXT, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
                           "projection_dim": 64},
                          {**_TEXT, "hidden_act": "gelu"}],
        "t5": {"d_model": 192, "d_kv": 32, "d_ff": 512, "num_layers": 2, "num_heads": 6,
               "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
               "relative_attention_max_distance": 64,
               # no dropout: it would draw from the global RNG and break bit-exact resume
               "dropout_rate": 0.0},
        "transformer": {"sample_size": 16, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 12,
                        "attention_head_dim": 32, "num_attention_heads": 4, "caption_projection_dim": 128,
                        "pos_embed_max_size": 16},
        # shift 1: 64 image tokens is SD 3's 256 px base case (shift 3 is for 1024 px)
        "scheduler": {"num_train_timesteps": 1000, "shift": 1.0},
        "scheduler_class": "FlowMatchEulerDiscreteScheduler",
    },
}


def world_arch(world: str, overrides: dict | None = None) -> dict:
    """The architecture of ``world`` with ``overrides`` (per part: dicts update, lists replace)."""
    if world not in WORLDS:
        raise ValueError(f"unknown tiny world {world!r}; the tiny SD 2 / SD 3 / SDXL worlds are {sorted(WORLDS)}")
    return merge_arch(copy.deepcopy(WORLDS[world]), overrides)


def world_config(world: str) -> dict:
    """``conf/backbone/<world>.yaml`` as a dict (the run-time settings: sampling, loss knobs)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{world}.yaml"), resolve=True)


def denoiser_config(world: str, arch: dict | None = None) -> dict:
    """The denoiser's diffusers config (``_class_name`` included) of ``world`` (with ``arch``
    overrides), without building anything."""
    arch = world_arch(world, arch)
    hidden = [t["hidden_size"] for t in arch["text_encoders"]]
    if arch["family"] == "sd3":
        proj = [t["projection_dim"] for t in arch["text_encoders"]]
        return {"_class_name": "SD3Transformer2DModel", **arch["transformer"],
                "joint_attention_dim": arch["t5"]["d_model"], "pooled_projection_dim": sum(proj)}
    unet = {"_class_name": "UNet2DConditionModel", **arch["unet"], "cross_attention_dim": sum(hidden)}
    if arch["family"] == "sdxl":  # pooled text of the second encoder + 6 time ids
        unet["projection_class_embeddings_input_dim"] = (6 * unet["addition_time_embed_dim"]
                                                         + arch["text_encoders"][-1]["projection_dim"])
    return unet


def t5_tokenizer(words, model_max_length: int = 32):
    """A real ``T5Tokenizer`` (Unigram) in which every domain word is one piece; other words fall
    back to letters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in sorted({w.lower() for w in words})]
    vocab += [(c, -5.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _clip_text(cls, tok, tcfg: dict):
    from transformers import CLIPTextConfig

    return cls(CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id, **tcfg))


def build_family(world: str, arch: dict | None = None, seed: int = 0, vae=None, cfg: dict | None = None):
    """A randomly initialised ``world`` backbone of its full-size class (``vae``: a trained
    ``AutoencoderKL`` to use instead of a random one). Deterministic in ``seed``."""
    import diffusers
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .tiny import build_vae
    from .tokenizer import build_clip_tokenizer

    den_cfg = denoiser_config(world, arch)
    arch = world_arch(world, arch)
    fam = arch["family"]
    cfg = {**world_config(world), **(cfg or {})}
    if vae is None:
        vae = build_vae(arch["vae"], seed)
    if int(vae.config.latent_channels) != int(den_cfg["in_channels"]):
        raise ValueError(f"{world}: the VAE has {vae.config.latent_channels} latent channels but the denoiser "
                         f"takes {den_cfg['in_channels']}")
    torch.manual_seed(seed)
    words = domain_words()
    toks = [build_clip_tokenizer(words, model_max_length=t["max_position_embeddings"]) for t in arch["text_encoders"]]
    classes = {"sd2": [CLIPTextModel], "sdxl": [CLIPTextModel, CLIPTextModelWithProjection],
               "sd3": [CLIPTextModelWithProjection, CLIPTextModelWithProjection]}[fam]
    tes = [_clip_text(c, tok, t) for c, tok, t in zip(classes, toks, arch["text_encoders"])]
    den_cls = getattr(diffusers, den_cfg["_class_name"])
    denoiser = den_cls(**{k: v for k, v in den_cfg.items() if not k.startswith("_")})
    sched_cls = getattr(diffusers, arch["scheduler_class"])
    cfg.update(name=world, resolution=arch["resolution"])
    common = dict(cfg=cfg, denoiser=denoiser, vae=vae, text_encoders=tes, tokenizers=toks)
    if fam == "sd3":
        from transformers import T5Config, T5EncoderModel

        from .sd3 import SD3Backbone

        t5_tok = t5_tokenizer(words, model_max_length=int(cfg.get("max_sequence_length", 32)))
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), decoder_start_token_id=0, pad_token_id=0,
                                     eos_token_id=1, **arch["t5"]))
        sched = sched_cls(**arch["scheduler"])
        return SD3Backbone(**common, noise_scheduler=sched, scheduler_config={"_class_name": sched_cls.__name__,
                                                                             **dict(sched.config)},
                           t5=t5, t5_tokenizer=t5_tok)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**arch["scheduler"])
    sampler = sched_cls.from_config(dict(sched.config), **arch["scheduler_extra"])
    sched_cfg = {"_class_name": sched_cls.__name__, **dict(sampler.config)}
    if fam == "sdxl":
        from .sdxl import SDXLBackbone

        return SDXLBackbone(**common, noise_scheduler=sched, scheduler_config=sched_cfg)
    from .stable_diffusion import StableDiffusionBackbone

    return StableDiffusionBackbone(**common, noise_scheduler=sched, scheduler_config=sched_cfg)


def write_random_folder(world: str, folder, seed: int = 0, arch: dict | None = None) -> Path:
    """A randomly initialised ``world`` pipeline saved in diffusers format (for tests and for
    trying the code paths without the pre-trained weights)."""
    folder = Path(folder)
    build_family(world, arch, seed=seed).save_pretrained(folder)
    (folder / "manifest.json").write_text(json.dumps({"what": f"{world}, random initialisation (untrained)",
                                                      "seed": seed}, indent=2) + "\n")
    return folder


def zoo_root(world: str) -> Path:
    return WORLDS[world]["root"]


#: the subfolders each family's zoo folder must hold
PARTS = {"sd2": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
         "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
         "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
                 "tokenizer_3", "scheduler")}


def pretrain_command(world: str) -> str:
    """The GPU command that writes ``sara/zoo/<world>`` (with the VAE it needs)."""
    vae = "vae16" if WORLDS[world]["family"] == "sd3" else "vae"
    return f'`STAGES="{vae} {world}" bash scripts/pretrain_world.sh` on a GPU machine'


def resolve_world(cfg: dict) -> dict:
    """``cfg`` with ``pretrained`` set: the given folder, else the shipped ``sara/zoo/<world>``;
    a missing folder or part raises ``MissingWeightsError`` naming the pre-training command."""
    from .loading import zoo_source

    world = cfg["world"]
    if world not in WORLDS:
        raise ValueError(f"backbone.world: unknown tiny world {world!r}; the tiny SD 2 / SD 3 / SDXL worlds "
                         f"are {sorted(WORLDS)}")
    parts = list(PARTS[WORLDS[world]["family"]])
    if cfg.get("drop_t5"):
        parts = [p for p in parts if not p.endswith("_3")]
    src = zoo_source(cfg, WORLDS[world]["root"], parts, pretrain_command(world))
    return dict(cfg, pretrained=src)
