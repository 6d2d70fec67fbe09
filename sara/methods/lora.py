"""LoRA (Hu et al. 2021) through peft: ``W x + (alpha/r) B A x`` on the attention projections.

Knob: the rank ``r``. Targets default to the modules the diffusers training scripts use
(UNet: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``; the SD3 transformer additionally
``add_q_proj``, ``add_k_proj``, ``add_v_proj``, ``to_add_out`` — added automatically when the
denoiser has them, see ``joint_target_modules``). ``merged()`` folds ``B A`` into the base weights
with peft's own merge and removes every peft layer (a plain module is returned).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ._peft import load_peft_adapter, merge_and_unload, save_peft_adapter
from ._util import freeze, nearest_int_knob
from .base import AddedParamsMethod, PrepareContext, scope_names

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
JOINT_TARGETS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class LoRA(AddedParamsMethod):
    name = "lora"
    knob = "rank"
    use_dora = False

    def __init__(self, rank: int = 4, alpha: float | None = None,
                 target_modules: Sequence[str] | str | None = UNET_TARGETS,
                 joint_target_modules: Sequence[str] | None = JOINT_TARGETS,
                 dropout: float = 0.0, init_lora_weights: Any = True, name: str | None = None,
                 lr: float | None = 1e-4, params=None) -> None:
        super().__init__()
        if name:
            self.name = name
        self.lr = lr  # used when the trainer passes lr=None
        self.params = params  # scope: only target layers whose weight is in it (None: all)
        self.rank = int(rank)
        self.alpha = alpha
        self.target_modules = target_modules
        self.joint_target_modules = joint_target_modules
        self.dropout = float(dropout)
        self.init_lora_weights = init_lora_weights
        self.module: nn.Module | None = None
        self._trainable: list[nn.Parameter] = []
        self._names: list[str] = []

    # --- targets and counting -----------------------------------------------------------------
    def _targets(self, denoiser: nn.Module) -> list[str] | str:
        if isinstance(self.target_modules, str):
            return self.target_modules  # a regex, as in peft
        targets = list(self.target_modules or UNET_TARGETS)
        names = {n.rsplit(".", 1)[-1] for n, _ in denoiser.named_modules()}
        for t in self.joint_target_modules or ():
            if t in names and t not in targets:  # SD3 joint attention: only if the model has it
                targets.append(t)
        scope = scope_names(denoiser, self.params)
        if scope is not None:  # the full names of the target layers inside the scope
            targets = [n for n, m in denoiser.named_modules()
                       if f"{n}.weight" in scope and any(n == t or n.endswith("." + t) for t in targets)]
            if not targets:
                raise ValueError(f"{self.name}: no target layer {self.target_modules!r} inside params={self.params!r}")
        return targets

    def lora_config(self, denoiser: nn.Module, rank: int | None = None):
        from peft import LoraConfig

        r = int(rank if rank is not None else self.rank)
        alpha = self.alpha if self.alpha is not None else r
        return LoraConfig(r=r, lora_alpha=alpha, target_modules=self._targets(denoiser),
                          lora_dropout=self.dropout, use_dora=self.use_dora,
                          init_lora_weights=self.init_lora_weights)

    def target_layers(self, denoiser: nn.Module) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs peft will adapt (peft's own matching rule)."""
        from peft.tuners.tuners_utils import check_target_module_exists

        cfg = self.lora_config(denoiser, rank=1)
        out = []
        for name, mod in denoiser.named_modules():
            if name and isinstance(mod, (nn.Linear, nn.Conv2d)) and check_target_module_exists(cfg, name):
                out.append((name, mod))
        if not out:
            raise ValueError(f"{self.name}: no module of the denoiser matches target_modules="
                             f"{self.target_modules!r}")
        return out

    def count_for_rank(self, denoiser: nn.Module, rank: int) -> int:
        const, per = self._count_terms(denoiser)
        return const + per * int(rank)

    def _count_terms(self, denoiser: nn.Module) -> tuple[int, int]:
        """Trainable count = const + per_rank * r (works on the meta device: shapes only)."""
        const = per = 0
        for _, m in self.target_layers(denoiser):
            if isinstance(m, nn.Linear):
                fan_in, out = m.in_features, m.out_features
            else:  # Conv2d: A = Conv(in, r, k), B = Conv(r, out, 1)
                kh, kw = m.kernel_size
                fan_in, out = m.in_channels * kh * kw // m.groups, m.out_channels
            per += fan_in + out
            if self.use_dora:
                const += out  # the magnitude vector
        return const, per

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        const, per = self._count_terms(denoiser)
        r = nearest_int_knob(int(target), const, per, lo=1)
        return r, const + per * r

    # --- life cycle -------------------------------------------------------------------------
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        from peft import inject_adapter_in_model

        self.take_budget(denoiser, budget, "rank")
        freeze(denoiser)
        if ctx is not None:
            torch.manual_seed(ctx.seed)  # lora_A's kaiming init
        model = inject_adapter_in_model(self.lora_config(denoiser), denoiser, adapter_name="default")
        freeze(model)
        self._trainable, self._names = [], []
        for n, p in model.named_parameters():
            if "lora_" in n:  # lora_A / lora_B / lora_magnitude_vector
                p.requires_grad_(True)
                self._trainable.append(p)
                self._names.append(n)
        self.module = model
        return model

    def restore(self, denoiser: nn.Module, state: dict[str, torch.Tensor],
                budget: int | None = None) -> nn.Module:
        ranks = {int(v.shape[0]) for k, v in state.items() if "lora_A" in k}
        if len(ranks) != 1:
            raise ValueError(f"{self.name}: cannot read one rank from the state (found {sorted(ranks)})")
        self.rank = ranks.pop()
        module = self.apply(denoiser, budget=None)
        self.target_params = budget
        self.load_trained_state_dict(state)
        return module

    # --- files: a peft adapter folder ---------------------------------------------------------
    weights_name = "adapter"  # adapter_config.json + adapter_model.safetensors

    def peft_config(self):
        """The peft config of the applied adapter (``save_weights`` writes it)."""
        return self.lora_config(self.module)

    def save_weights(self, run_dir) -> Path:
        """A peft adapter folder (``PeftModel.from_pretrained(denoiser, path)`` reads it)."""
        return save_peft_adapter(self.module, self.peft_config(), Path(run_dir) / self.weights_name)

    def load_weights(self, denoiser: nn.Module, run_dir, budget: int | None = None) -> nn.Module:
        from peft import PeftConfig

        folder = Path(run_dir) / self.weights_name
        cfg = PeftConfig.from_pretrained(str(folder))
        self.rank = int(cfg.r)
        module = self.apply(denoiser, budget=None)
        self.target_params = budget
        load_peft_adapter(module, folder, prefixes=("lora_",))
        return module

    def merged(self, module: nn.Module) -> nn.Module:
        """Fold the adapters into the base weights (peft ``merge``) and replace each peft layer by
        its base layer. Works in place: ``module`` is consumed (save the adapters first)."""
        return merge_and_unload(module)
