"""SHiRA (Bhardwaj et al. 2024, "Sparse High Rank Adapters") through peft's ``ShiraConfig``: a
fixed random sparse mask per adapted weight, ``r (in + out)`` trained entries per layer (LoRA's
count at rank ``r``, at high rank), added to the frozen weight.

peft's SHiRA adapts ``nn.Linear`` layers only: on the diffusion UNets it trains entries of every
linear layer (attention projections, feed-forward, time embedding, ``proj_in``/``proj_out`` where
linear) and none of the convolutions; the budget is matched on those layers. Knob: ``r``, one
value for every adapted layer (peft's ``ShiraConfig`` has no per-layer rank), so the per-layer knob
is whether a layer is adapted: a budget sets the smallest ``r`` whose count over all layers reaches
it and leaves out an evenly spread subset of layers (``rank_pattern`` maps them to 0) chosen to
bring the count nearest the budget. The mask is drawn from the run's seed.
"""
from __future__ import annotations


from torch import nn

from ._peft import PeftAdapterMethod
from ._util import check_int_pattern, spread_subset
from .base import AddedParamsMethod, PrepareContext


class SHiRA(PeftAdapterMethod, AddedParamsMethod):
    name = "shira"
    knob = "rank"
    pattern_attr = "rank_pattern"
    param_prefix = "shira_"
    shape_only = False  # peft draws the mask with torch.nonzero, which the meta device lacks

    def __init__(self, rank: int = 4, target_modules: str | None = None, mask_seed: int | None = None,
                 lr: float | None = 1e-4, name: str | None = None,
                 rank_pattern: dict[str, int] | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        if int(rank) < 1:
            raise ValueError(f"shira: rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.rank_pattern = self._check_pattern(rank_pattern)
        self.target_modules = target_modules
        self.mask_seed = mask_seed
        self.lr = lr
        self.module: nn.Module | None = None
        self._seed = 0

    def _check_pattern(self, pattern) -> dict[str, int]:
        out = check_int_pattern(pattern, self.name, "rank_pattern", lo=0)
        if any(out.values()):
            raise ValueError(f"{self.name}: rank_pattern may only map layers to 0 (left out): peft's "
                             f"SHiRA has one rank for all layers, got {pattern!r}")
        return out

    def all_linear_layers(self, denoiser: nn.Module) -> list[tuple[str, nn.Linear]]:
        """Every layer ``target_modules`` matches, the left-out ones included."""
        return super().linear_layers(denoiser)

    def linear_layers(self, denoiser: nn.Module) -> list[tuple[str, nn.Linear]]:
        """The adapted layers: those ``target_modules`` matches, less ``rank_pattern``'s zeros."""
        out = [(n, m) for n, m in self.all_linear_layers(denoiser) if n not in self.rank_pattern]
        if not out:
            raise ValueError(f"{self.name}: rank_pattern leaves out every layer")
        return out

    def knob_modules(self, denoiser: nn.Module) -> list[str]:
        return [n for n, _ in self.all_linear_layers(denoiser)]

    def count_for_rank(self, denoiser: nn.Module, rank: int,
                       rank_pattern: dict[str, int] | None = None) -> int:
        """The trainable count at ``rank`` with the layers ``rank_pattern`` maps to 0 left out."""
        skip = rank_pattern or {}
        return sum(int(rank) * (m.in_features + m.out_features)
                   for n, m in self.all_linear_layers(denoiser) if n not in skip)

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        """The smallest ``r`` whose all-layer count reaches ``target``, then the evenly spread
        subset of layers (in module order) to leave out that brings the count nearest ``target``
        (at least one layer stays); sets ``rank_pattern``."""
        layers = self.all_linear_layers(denoiser)
        per = [m.in_features + m.out_features for _, m in layers]
        r = max(1, -(-int(target) // sum(per)))  # ceil
        drop = spread_subset([r * p for p in per], r * sum(per) - int(target), max_size=len(per) - 1)
        self.rank_pattern = {layers[i][0]: 0 for i in drop}
        return r, self.count_for_rank(denoiser, r, self.rank_pattern)

    def peft_config(self, denoiser: nn.Module | None = None):
        from peft import ShiraConfig

        names = [n for n, _ in self.linear_layers(denoiser if denoiser is not None else self.module)]
        seed = self.mask_seed if self.mask_seed is not None else self._seed
        return ShiraConfig(r=self.rank, target_modules=names, random_seed=int(seed))

    def set_knob_from(self, config, denoiser: nn.Module) -> None:
        self.rank = int(config.r)
        self.mask_seed = config.random_seed
        from peft.tuners.tuners_utils import check_target_module_exists

        # the layers the saved adapter does not target (peft may save its targets as suffixes)
        self.rank_pattern = {n: 0 for n, _ in self.all_linear_layers(denoiser)
                             if not check_target_module_exists(config, n)}

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.take_budget(denoiser, budget, "rank")
        unknown = sorted(set(self.rank_pattern) - set(self.knob_modules(denoiser)))
        if unknown:
            raise ValueError(f"{self.name}: rank_pattern names layers that target_modules does not "
                             f"match: {unknown[:3]}")
        self._seed = ctx.seed if ctx is not None else self._seed
        return self._inject(denoiser, ctx)

    def record(self) -> dict:
        rec = super().record()
        rec.update({"layers": "nn.Linear only (peft's SHiRA has no Conv2d layer)",
                    "mask_seed": self.mask_seed if self.mask_seed is not None else self._seed})
        return rec
