"""SHiRA (Bhardwaj et al. 2024, "Sparse High Rank Adapters") through peft's ``ShiraConfig``: a
fixed random sparse mask per adapted weight, ``r (in + out)`` trained entries per layer (LoRA's
count at rank ``r``, at high rank), added to the frozen weight.

peft's SHiRA adapts ``nn.Linear`` layers only: on the diffusion UNets it trains entries of every
linear layer (attention projections, feed-forward, time embedding, ``proj_in``/``proj_out`` where
linear) and none of the convolutions; the budget is matched on those layers. Knob: ``r`` (integer,
nearest). The mask is drawn from the run's seed.
"""
from __future__ import annotations


from torch import nn

from ._peft import PeftAdapterMethod
from ._util import nearest_int_knob
from .base import AddedParamsMethod, PrepareContext


class SHiRA(PeftAdapterMethod, AddedParamsMethod):
    name = "shira"
    knob = "rank"
    param_prefix = "shira_"

    def __init__(self, rank: int = 4, target_modules: str | None = None, mask_seed: int | None = None,
                 lr: float | None = 1e-4, name: str | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        if int(rank) < 1:
            raise ValueError(f"shira: rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.target_modules = target_modules
        self.mask_seed = mask_seed
        self.lr = lr
        self.module: nn.Module | None = None
        self._seed = 0

    def _count_terms(self, denoiser: nn.Module) -> tuple[int, int]:
        return 0, sum(m.in_features + m.out_features for _, m in self.linear_layers(denoiser))

    def count_for_rank(self, denoiser: nn.Module, rank: int) -> int:
        const, per = self._count_terms(denoiser)
        return const + per * int(rank)

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        const, per = self._count_terms(denoiser)
        r = nearest_int_knob(int(target), const, per, lo=1)
        return r, const + per * r

    def peft_config(self, denoiser: nn.Module | None = None):
        from peft import ShiraConfig

        names = [n for n, _ in self.linear_layers(denoiser if denoiser is not None else self.module)]
        seed = self.mask_seed if self.mask_seed is not None else self._seed
        return ShiraConfig(r=self.rank, target_modules=names, random_seed=int(seed))

    def set_knob_from(self, config) -> None:
        self.rank = int(config.r)
        self.mask_seed = config.random_seed

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.take_budget(denoiser, budget, "rank")
        self._seed = ctx.seed if ctx is not None else self._seed
        return self._inject(denoiser, ctx)

    def record(self) -> dict:
        rec = super().record()
        rec.update({"layers": "nn.Linear only (peft's SHiRA has no Conv2d layer)",
                    "mask_seed": self.mask_seed if self.mask_seed is not None else self._seed})
        return rec
