"""Super-Tuning (arXiv:2607.09287) through peft's ``SupertuningConfig``: per adapted weight, the
entries selected by magnitude (``select_top: false``, the default here: the smallest, the
variant nearest to SaRA without its progressive adjustment and rank loss) are trained as a
sparse update of the frozen weight; every layer keeps the same share ``1 - sparsity``.

peft's Super-Tuning adapts ``nn.Linear`` layers only: on the diffusion UNets it trains entries of
every linear layer (attention projections, feed-forward, time embedding, ``proj_in``/``proj_out``
where linear) and none of the convolutions; the budget is matched on those layers. Knob:
``sparsity`` (solved by bisection so that ``Σ int(numel · (1 - sparsity))`` is nearest the
budget).
"""
from __future__ import annotations

from torch import nn

from ._peft import PeftAdapterMethod
from .base import AddedParamsMethod, PrepareContext


class SuperTuning(PeftAdapterMethod, AddedParamsMethod):
    name = "super_tuning"
    knob = "sparsity"
    param_prefix = "supertuning_"

    def __init__(self, sparsity: float = 0.99, select_top: bool = False,
                 target_modules: str | None = None, lr: float | None = 1e-4,
                 name: str | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"super_tuning: sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = float(sparsity)
        self.select_top = bool(select_top)
        self.target_modules = target_modules
        self.lr = lr
        self.module: nn.Module | None = None

    def count_for_sparsity(self, denoiser: nn.Module, sparsity: float) -> int:
        # peft's own rule (SupertuningLayer._num_trainable)
        return sum(int(m.weight.numel() * (1 - sparsity)) for _, m in self.linear_layers(denoiser))

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[float, int]:
        sizes = [m.weight.numel() for _, m in self.linear_layers(denoiser)]

        def count(s: float) -> int:
            return sum(int(n * (1 - s)) for n in sizes)

        # the highest sparsity that leaves every layer >= 1 entry (peft refuses an empty layer)
        lo, hi = 0.0, 1.0 - (1.0 + 1e-9) / min(sizes)
        if count(hi) > target:
            s = hi
        else:
            for _ in range(64):  # count is non-increasing in s
                mid = (lo + hi) / 2
                if count(mid) >= target:
                    lo = mid
                else:
                    hi = mid
            s = min((lo, hi), key=lambda v: (abs(count(v) - target), v))
        return float(s), count(s)

    def peft_config(self, denoiser: nn.Module | None = None):
        from peft import SupertuningConfig

        names = [n for n, _ in self.linear_layers(denoiser if denoiser is not None else self.module)]
        return SupertuningConfig(sparsity=self.sparsity, select_top=self.select_top,
                                 target_modules=names)

    def set_knob_from(self, config, denoiser: nn.Module) -> None:
        self.sparsity = float(config.sparsity)
        self.select_top = bool(config.select_top)

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.take_budget(denoiser, budget, "sparsity")
        return self._inject(denoiser, ctx)

    def record(self) -> dict:
        rec = super().record()
        rec.update({"select_top": self.select_top,
                    "layers": "nn.Linear only (peft's Super-Tuning has no Conv2d layer)"})
        return rec
