"""FishMask (Sung et al. 2021): train the k entries with the largest empirical Fisher information.

Inside :meth:`apply` (trainer's loss and batches): the empirical Fisher ``F = mean_i (∂L_i/∂W)²``
over ``n_samples`` single-sample batches (each trainer batch is split into batches of size 1,
``sara.methods._util.split_batch``), the k largest entries are selected and trained with a fixed
mask through sara.core's SparseParameters (unstructural backprop). The weights are not changed by
the Fisher pass.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sara.core import select_from_scores
from sara.core.selection import resolve_params

from ._util import freeze, need_ctx, next_batch, reject_nonfinite, split_batch
from .base import PrepareContext
from .selective import SparseMethod


class FishMask(SparseMethod):
    name = "fishmask"
    knob = "k"

    def __init__(self, k: int | None = None, density: float | None = 0.0058, n_samples: int = 1024,
                 params: Any = None, lr: float | None = 1e-4, name: str | None = None) -> None:
        super().__init__(k=k, density=density, params=params, lr=lr, name=name)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples = int(n_samples)
        self._fisher: dict = {}

    def fisher(self, denoiser: nn.Module, ctx: PrepareContext) -> dict[str, torch.Tensor]:
        loss_fn, batches = need_ctx(ctx, self.name, "Fisher estimate")
        named = resolve_params(denoiser, self.params)
        freeze(denoiser)
        for _, p in named:
            p.requires_grad_(True)
        tensors = [p for _, p in named]
        fisher = [torch.zeros_like(p, dtype=torch.float32) for p in tensors]
        count = 0
        try:
            while count < self.n_samples:
                for single in split_batch(next_batch(batches)):
                    if count >= self.n_samples:
                        break
                    loss = loss_fn(denoiser, single)
                    reject_nonfinite(loss, self.name, count)
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                    with torch.no_grad():
                        for f, g in zip(fisher, grads):
                            if g is not None:
                                f.add_(g.float().square())
                    count += 1
        finally:
            freeze(denoiser)
        with torch.no_grad():
            for f in fisher:
                f.div_(count)
        self._fisher = {"n_samples": count}
        return {n: f for (n, _), f in zip(named, fisher)}

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.seed = ctx.seed if ctx is not None else 0
        k = self.resolve_k(denoiser, budget)
        need_ctx(ctx, self.name, "Fisher estimate")
        scores = self.fisher(denoiser, ctx)
        sel = select_from_scores(denoiser, scores, k)
        del scores
        self._build(denoiser, sel)
        return denoiser

    def record(self) -> dict:
        rec = super().record()
        rec["fisher"] = dict(self._fisher)
        return rec
