"""Full fine-tuning: every parameter tensor of the denoiser is trained (the paper's "Full")."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from sara.methods._util import replace_dir
from sara.methods.base import Method, PrepareContext, scope_names

log = logging.getLogger(__name__)


class FullFineTune(Method):
    """Train every weight of the denoiser with AdamW.

    Full fine-tuning has no knob: a budget, if given, is recorded but cannot be met (the count is
    the whole denoiser), and a warning says so.
    """

    name = "full"
    knob = ""
    weights_name = "denoiser"  # a diffusers model folder (``<Class>.from_pretrained`` reads it)

    def __init__(self, lr: float | None = 1e-4, name: str | None = None, params=None) -> None:
        super().__init__()
        self.scope = params  # None: every parameter; a regex / names: only those (e.g. motion modules)
        if name:
            self.name = name
        self.lr = lr  # used when the trainer passes lr=None
        self.module: nn.Module | None = None
        self.params: dict[str, nn.Parameter] = {}

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.target_params = budget
        self.module = denoiser
        scope = scope_names(denoiser, self.scope)
        self.params = {n: p for n, p in denoiser.named_parameters() if scope is None or n in scope}
        denoiser.requires_grad_(False)
        for p in self.params.values():
            p.requires_grad_(True)
        n = self.num_trainable()
        if budget is not None and budget != n:
            log.warning("method=full trains all %d denoiser parameters; the budget of %d "
                        "parameters cannot be applied", n, budget)
        return denoiser

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[None, int]:
        scope = scope_names(denoiser, self.scope)
        return None, sum(p.numel() for n, p in denoiser.named_parameters() if scope is None or n in scope)

    def _check_applied(self) -> None:
        if self.module is None:
            raise RuntimeError("FullFineTune.apply(denoiser) must be called first")

    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        self._check_applied()
        lr = self.lr if lr is None else lr
        return torch.optim.AdamW(list(self.params.values()), lr=lr, weight_decay=weight_decay,
                                 betas=tuple(betas))

    def num_trainable(self) -> int:
        return int(sum(p.numel() for p in self.params.values()))

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        self._check_applied()
        return {k: p.detach() for k, p in self.params.items()}

    def save_weights(self, run_dir) -> Path:
        """The fine-tuned denoiser as a diffusers model folder (safetensors), or a plain
        ``denoiser/model.safetensors`` for a module without ``save_pretrained``."""
        from safetensors.torch import save_file

        self._check_applied()
        final = Path(run_dir) / self.weights_name
        tmp = final.with_name(f".{final.name}.tmp")
        if hasattr(self.module, "save_pretrained"):
            self.module.save_pretrained(tmp, safe_serialization=True)
        else:
            tmp.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous().cpu() for k, v in self.trained_state_dict().items()},
                      str(tmp / "model.safetensors"))
        return replace_dir(tmp, final)

    def load_weights(self, denoiser: nn.Module, run_dir, budget: int | None = None) -> nn.Module:
        from safetensors.torch import load_file

        folder = Path(run_dir) / self.weights_name
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{self.name}: no trained weights (*.safetensors) in {folder}")
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        return self.restore(denoiser, state, budget=budget)

    @torch.no_grad()
    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._check_applied()
        missing = sorted(set(self.params) - set(state))
        unexpected = sorted(set(state) - set(self.params))
        if missing or unexpected:
            raise KeyError(f"trained state does not match the denoiser: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
        for k, p in self.params.items():
            p.copy_(state[k].to(device=p.device, dtype=p.dtype))
