"""Shared test fixtures: small stand-ins for a backbone and a dataset (fast on a CPU), and a copy
of ``conf/`` with a ``backbone=stub`` / ``data=stub`` option so ``run.py`` can be driven end to end
in seconds without the shipped tiny backbone or generated data.

The stand-ins follow the contracts of docs/ARCHITECTURE.md (Backbone.training_loss / sample,
batches ``{"pixel_values", "prompts"}``)."""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The test machines are small and shared: one intra-op thread avoids oversubscription, which
# made the tiny models here 5-30x slower with 2 threads under load.
torch.set_num_threads(1)


class HashTextEncoder(nn.Module):
    """Prompt -> [B, T, D] from a fixed embedding of word hashes (no tokenizer files needed)."""

    def __init__(self, dim: int = 8, tokens: int = 4, vocab: int = 97) -> None:
        super().__init__()
        self.tokens, self.vocab = tokens, vocab
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(vocab, dim, generator=g))
        self.requires_grad_(False)

    def ids(self, prompts):
        out = []
        for p in prompts:
            w = p.split()[: self.tokens]
            h = [int(hashlib.md5(x.encode()).hexdigest(), 16) % self.vocab for x in w]
            out.append(h + [0] * (self.tokens - len(h)))
        return torch.tensor(out, device=self.emb.weight.device)

    def forward(self, prompts):
        return self.emb(self.ids(prompts))


def tiny_unet(size: int = 8, dim: int = 8):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=dim,
        attention_head_dim=2, norm_num_groups=4)


class StubBackbone:
    """Pixel-space text-to-image model at 8x8 with the Backbone contract."""

    def __init__(self, name: str = "stub", resolution: int = 8, nan_after: int | None = None):
        from diffusers import DDIMScheduler, DDPMScheduler

        self.name = name
        self.resolution = resolution
        self.prediction_type = "epsilon"
        self.denoiser = tiny_unet(resolution)
        self.vae = None
        self.text_encoder = HashTextEncoder()
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=100)
        self._sampler = DDIMScheduler(num_train_timesteps=100)
        self.nan_after = nan_after  # make the loss NaN from this call on (tests)
        self.calls = 0
        self.default_steps, self.default_guidance = 4, 2.0

    @property
    def device(self):
        return next(self.denoiser.parameters()).device

    def to(self, device=None, dtype=None):
        self.denoiser.to(device=device, **({"dtype": dtype} if dtype is not None else {}))
        self.text_encoder.to(device=device)
        return self

    def training_loss(self, denoiser=None, batch=None, generator=None):
        denoiser = self.denoiser if denoiser is None else denoiser
        self.calls += 1
        x0 = batch["pixel_values"].to(self.device)
        cond = self.text_encoder(list(batch["prompts"]))
        gdev = generator.device if generator is not None else self.device
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(self.device)
        t = torch.randint(0, 100, (x0.shape[0],), generator=generator, device=gdev).to(self.device)
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        pred = denoiser(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise.float())
        if self.nan_after is not None and self.calls > self.nan_after:
            loss = loss * float("nan")
        return loss

    @torch.no_grad()
    def sample(self, prompts, num_inference_steps=None, guidance_scale=None, seed=0,
               denoiser=None, batch_size=16, **kw):
        from PIL import Image

        denoiser = self.denoiser if denoiser is None else denoiser
        steps = num_inference_steps or self.default_steps
        g = self.default_guidance if guidance_scale is None else guidance_scale
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(len(prompts), 3, self.resolution, self.resolution, generator=gen)
        x = x.to(self.device)
        cond = self.text_encoder(list(prompts))
        unc = self.text_encoder([""] * len(prompts))
        self._sampler.set_timesteps(steps)
        for t in self._sampler.timesteps:
            eps = denoiser(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([unc, cond])).sample
            eu, ec = eps.chunk(2)
            x = self._sampler.step(eu + g * (ec - eu), t, x).prev_sample
        arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arr]


class StubDataset(torch.utils.data.Dataset):
    """n random 'images' with captions; item i is a pure function of (seed, i)."""

    def __init__(self, n: int = 10, resolution: int = 8, seed: int = 0, prefix: str = ""):
        self.n, self.resolution, self.seed, self.prefix = n, resolution, seed, prefix

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        x = torch.rand(3, self.resolution, self.resolution, generator=g) * 2 - 1
        return {"pixel_values": x, "prompt": f"{self.prefix}a shape number {i}"}


def stub_collate(items):
    return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "prompts": [it["prompt"] for it in items]}


@pytest.fixture
def stub_backbone():
    return StubBackbone()


@pytest.fixture
def stub_dataset():
    return StubDataset()


STUB_BACKBONE_YAML = "# test stand-in (tests/conftest.py)\nkind: stub\nname: stub\nresolution: 8\n"
STUB_DATA_YAML = ("# test stand-in (tests/conftest.py)\nkind: stub\nname: StubStyle\nroot: data\n"
                  "seed: 0\nn: 12\ncaption_prefix: \"${data.name} style, \"\n")


@pytest.fixture
def stub_conf(tmp_path):
    """A copy of conf/ with backbone=stub and data=stub added."""
    dst = tmp_path / "conf"
    shutil.copytree(CONF, dst)
    (dst / "backbone").mkdir(exist_ok=True)
    (dst / "backbone" / "stub.yaml").write_text(STUB_BACKBONE_YAML)
    (dst / "data").mkdir(exist_ok=True)
    (dst / "data" / "stub.yaml").write_text(STUB_DATA_YAML)
    return dst


@pytest.fixture
def stub_world(monkeypatch):
    """Route load_backbone / build_dataset / eval prompts of sara.runs to the stand-ins for
    configs of kind ``stub`` (real kinds pass through)."""
    import sara.backbones
    import sara.runs

    real_load = getattr(sara.backbones, "load_backbone", None)
    real_build = sara.runs.build_dataset
    real_prompts = sara.runs.eval_prompt_list

    def load_backbone(cfg, *a, **k):
        if cfg.get("kind") == "stub":
            return StubBackbone(name=cfg.get("name", "stub"), resolution=cfg.get("resolution", 8),
                                nan_after=cfg.get("nan_after"))
        return real_load(cfg, *a, **k)

    def build_dataset(cfg_data, resolution, accelerator=None):
        if cfg_data.get("kind") == "stub":
            return (StubDataset(cfg_data.get("n", 12), resolution, cfg_data.get("seed", 0),
                                cfg_data.get("caption_prefix") or ""), None)
        return real_build(cfg_data, resolution, accelerator)

    def eval_prompt_list(cfg_eval):
        if cfg_eval.get("prompts_file"):
            return real_prompts(cfg_eval)
        return [f"a red circle number {i}" for i in range(int(cfg_eval.get("num_prompts", 0)))]

    monkeypatch.setattr(sara.backbones, "load_backbone", load_backbone, raising=False)
    monkeypatch.setattr(sara.runs, "build_dataset", build_dataset)
    monkeypatch.setattr(sara.runs, "eval_prompt_list", eval_prompt_list)
    monkeypatch.setattr("sara.train.default_collate", stub_collate)
    return {"StubBackbone": StubBackbone}


def compose_conf(conf_dir, overrides):
    """The composed config of ``run.py`` from the config folder ``conf_dir``."""
    from hydra import compose as hcompose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides)


@pytest.fixture
def sampled(monkeypatch):
    """Every denoiser that sara.runs samples with: a list of CPU state dicts (in call order)."""
    import sara.sample

    real = sara.sample.sample_to_folder
    seen = []

    def spy(backbone, prompts, out_dir, *, denoiser=None, **kw):
        m = denoiser if denoiser is not None else backbone.denoiser
        seen.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})
        return real(backbone, prompts, out_dir, denoiser=denoiser, **kw)

    monkeypatch.setattr(sara.sample, "sample_to_folder", spy)
    return seen
