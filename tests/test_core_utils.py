"""Tiny models and helpers shared by the sara.core tests (no tests in this module)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class MLP(nn.Module):
    """Embedding -> Linear(+bias) -> LayerNorm -> GELU -> Linear."""

    def __init__(self, vocab=10, dim=6, hidden=16, out=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, tokens):
        h = self.emb(tokens)
        h = torch.nn.functional.gelu(self.norm(self.fc1(h)))
        return self.fc2(h).mean(1)


class ConvNet(nn.Module):
    """Conv2d -> GroupNorm -> SiLU -> Conv2d."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.conv2(torch.nn.functional.silu(self.norm(self.conv1(x)))).mean((2, 3))


def pretrained(model: nn.Module, seed: int = 0, std: float = 0.5) -> nn.Module:
    """Give every tensor (norm weights and biases included) non-trivial 'pre-trained' values so
    a threshold selects part of each."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def mlp(seed=0):
    return pretrained(MLP(), seed)


def convnet(seed=0):
    return pretrained(ConvNet(), seed)


def mlp_batch(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n, 7), generator=g), torch.randn(n, 4, generator=g)


def conv_batch(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randn(n, 4, generator=g)


def tiny_unet(seed=0):
    import pytest

    UNet2DConditionModel = pytest.importorskip("diffusers").UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=8,
        norm_num_groups=4, sample_size=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def unet_batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.tensor([10, 500][:n]),
            torch.randn(n, 3, 8, generator=g))


def unet_out(model, batch):
    x, t, e = batch
    return model(x, t, e).sample


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train(model, opt, batches, loss_fn, steps):
    for i in range(steps):
        loss = loss_fn(model, batches[i % len(batches)])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def mlp_loss(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def conv_loss(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def unet_loss(model, batch):
    return unet_out(model, batch).pow(2).mean()


def clone(model):
    return copy.deepcopy(model)
