"""LoRA (Hu et al. 2021) through peft: ``W x + (alpha/r) B A x`` on the attention projections.

Knob: the rank, per module (peft's ``rank_pattern``). A budget sets the base rank ``r`` on every
target module and ``r + 1`` on an evenly spread subset of them (``per_module_int_knob``), so the
count lands near the budget even where one rank step is a large share of it; ``rank_pattern``
lists the modules at ``r + 1``. ``alpha`` follows each module's rank (``alpha_pattern``): with
``alpha: null`` every module has ``alpha = rank`` (scale 1), otherwise module ``i`` gets
``alpha * r_i / r``, so ``alpha_i / r_i = alpha / r`` is the same scale everywhere. Targets
default to the modules the diffusers training scripts use (UNet: ``to_q``, ``to_k``, ``to_v``,
``to_out.0``; the SD3 transformer additionally
``add_q_proj``, ``add_k_proj``, ``add_v_proj``, ``to_add_out`` — added automatically when the
denoiser has them, see ``joint_target_modules``). ``merged()`` folds ``B A`` into the base weights
with peft's own merge and removes every peft layer (a plain module is returned).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ._peft import load_peft_adapter, merge_and_unload, save_peft_adapter
from ._util import check_int_pattern, freeze, per_module_int_knob
from .base import AddedParamsMethod, PrepareContext, scope_names

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
JOINT_TARGETS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class LoRA(AddedParamsMethod):
    name = "lora"
    knob = "rank"
    pattern_attr = "rank_pattern"
    use_dora = False

    def __init__(self, rank: int = 4, alpha: float | None = None,
                 target_modules: Sequence[str] | str | None = UNET_TARGETS,
                 joint_target_modules: Sequence[str] | None = JOINT_TARGETS,
                 dropout: float = 0.0, init_lora_weights: Any = True, name: str | None = None,
                 lr: float | None = 1e-4, params=None,
                 rank_pattern: dict[str, int] | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        self.lr = lr  # used when the trainer passes lr=None
        self.params = params  # scope: only target layers whose weight is in it (None: all)
        self.rank = int(rank)
        self.rank_pattern = check_int_pattern(rank_pattern, self.name, "rank_pattern")
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

    def lora_config(self, denoiser: nn.Module, rank: int | None = None,
                    rank_pattern: dict[str, int] | None = None):
        """peft's ``LoraConfig``; ``rank`` None: the method's rank and ``rank_pattern``."""
        from peft import LoraConfig

        if rank is None:
            rank, rank_pattern = self.rank, self.rank_pattern
        r = int(rank)
        alpha = self.alpha if self.alpha is not None else r
        pattern = dict(rank_pattern or {})
        # the same scale alpha_i / r_i = alpha / r on every module
        alpha_pattern = {k: alpha * v / r for k, v in pattern.items()}
        return LoraConfig(r=r, lora_alpha=alpha, target_modules=self._targets(denoiser),
                          rank_pattern=pattern, alpha_pattern=alpha_pattern,
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

    def knob_modules(self, denoiser: nn.Module) -> list[str]:
        return [n for n, _ in self.target_layers(denoiser)]

    def count_for_rank(self, denoiser: nn.Module, rank: int,
                       rank_pattern: dict[str, int] | None = None) -> int:
        """The trainable count at ``rank`` (and ``rank_pattern``) from the layer shapes."""
        pattern = rank_pattern or {}
        return sum(const + per * pattern.get(name, int(rank))
                   for name, const, per in self._layer_terms(denoiser))

    def _layer_terms(self, denoiser: nn.Module) -> list[tuple[str, int, int]]:
        """``(module name, const, per_rank)`` per target layer: its count is ``const + per_rank * r``
        (works on the meta device: shapes only)."""
        out = []
        for name, m in self.target_layers(denoiser):
            if isinstance(m, nn.Linear):
                fan_in, fan_out = m.in_features, m.out_features
            else:  # Conv2d: A = Conv(in, r, k), B = Conv(r, out, 1)
                kh, kw = m.kernel_size
                fan_in, fan_out = m.in_channels * kh * kw // m.groups, m.out_channels
            out.append((name, fan_out if self.use_dora else 0, fan_in + fan_out))  # DoRA: + magnitude
        return out

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        """Base rank ``r`` everywhere, ``r + 1`` on an evenly spread subset of the target modules
        (in module order) chosen to bring the count nearest ``target``; sets ``rank_pattern``."""
        terms = self._layer_terms(denoiser)
        r, up = per_module_int_knob(int(target), [c for _, c, _ in terms], [p for *_, p in terms])
        self.rank_pattern = {terms[i][0]: r + 1 for i in up}
        return r, self.count_for_rank(denoiser, r, self.rank_pattern)

    # --- life cycle -------------------------------------------------------------------------
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        from peft import inject_adapter_in_model

        self.take_budget(denoiser, budget, "rank")
        freeze(denoiser)
        if ctx is not None:
            torch.manual_seed(ctx.seed)  # lora_A's kaiming init
        config = self.lora_config(denoiser)
        names = self.knob_modules(denoiser)
        unknown = [k for k in config.rank_pattern
                   if not any(re.match(rf"(.*\.)?({k})$", n) for n in names)]  # peft's matching rule
        if unknown:
            raise ValueError(f"{self.name}: rank_pattern names modules that are not adapted: "
                             f"{unknown[:3]} (adapted, e.g.: {names[:3]})")
        model = inject_adapter_in_model(config, denoiser, adapter_name="default")
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
        ranks = {k.split(".lora_A", 1)[0]: int(v.shape[0]) for k, v in state.items() if ".lora_A" in k}
        if not ranks:
            raise ValueError(f"{self.name}: the state has no lora_A tensor to read the ranks from")
        self.rank = min(ranks.values())
        self.rank_pattern = {k: v for k, v in ranks.items() if v != self.rank}
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
        self.rank_pattern = check_int_pattern(getattr(cfg, "rank_pattern", None), self.name, "rank_pattern")
        module = self.apply(denoiser, budget=None)
        self.target_params = budget
        load_peft_adapter(module, folder, prefixes=("lora_",))
        return module

    def merged(self, module: nn.Module) -> nn.Module:
        """Fold the adapters into the base weights (peft ``merge``) and replace each peft layer by
        its base layer. Works in place: ``module`` is consumed (save the adapters first)."""
        return merge_and_unload(module)
