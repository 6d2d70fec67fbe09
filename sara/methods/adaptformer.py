"""AdaptFormer (Chen et al. 2022): a parallel bottleneck adapter beside each transformer
feed-forward block: ``ff(x) + s * up(relu(down(x)))``, ``up`` zero-initialised (so training starts
from the pre-trained function), ``s = 0.1``.

Placed beside every ``FeedForward`` held as ``.ff`` by a transformer block (diffusers
``BasicTransformerBlock`` in the UNets, ``JointTransformerBlock`` in SD3; ``ff_context`` of SD3's
joint blocks too when ``include_context_ff``). Knob: the bottleneck width, per adapter (trainable
count = sum over adapters of ``2 d b + b + d`` with ``d`` the block width). A budget sets the base
width ``b`` on every adapter and ``b + 1`` on an evenly spread subset of them
(``per_module_int_knob``); ``bottleneck_pattern`` lists the adapters at ``b + 1``. It adds modules,
so it cannot be merged: :meth:`merged` returns the module unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._util import check_int_pattern, freeze, per_module_int_knob
from .base import AddedParamsMethod, PrepareContext, scope_names


class ParallelAdapter(nn.Module):
    """``ff(x) + scale * up(dropout(relu(down(x))))`` around an existing feed-forward module."""

    def __init__(self, ff: nn.Module, dim_in: int, dim_out: int, bottleneck: int,
                 scale: float = 0.1, dropout: float = 0.0) -> None:
        super().__init__()
        self.ff = ff
        self.scale = float(scale)
        ref = next(ff.parameters())
        self.down = nn.Linear(dim_in, bottleneck, device=ref.device, dtype=ref.dtype)
        self.up = nn.Linear(bottleneck, dim_out, device=ref.device, dtype=ref.dtype)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():  # AdaptFormer init: down kaiming-uniform (Linear default), zero biases, up zero
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.ff(hidden_states, *args, **kwargs)
        return out + self.scale * self.up(self.dropout(torch.relu(self.down(hidden_states))))


def _ff_dims(ff: nn.Module) -> tuple[int, int]:
    linears = [m for m in ff.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot find the Linear layers of feed-forward module {type(ff).__name__}")
    return linears[0].in_features, linears[-1].out_features


class AdaptFormer(AddedParamsMethod):
    name = "adaptformer"
    knob = "bottleneck"
    pattern_attr = "bottleneck_pattern"
    weights_name = "adaptformer.safetensors"

    def __init__(self, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.0,
                 ff_names: tuple[str, ...] | list[str] = ("ff",), include_context_ff: bool = False,
                 name: str | None = None, lr: float | None = 1e-4, params=None,
                 bottleneck_pattern: dict[str, int] | None = None) -> None:
        super().__init__()
        self.params = params  # scope: only feed-forwards whose weights are all in it (None: all)
        if name:
            self.name = name
        self.lr = lr  # used when the trainer passes lr=None
        self.bottleneck = int(bottleneck)
        self.bottleneck_pattern = check_int_pattern(bottleneck_pattern, self.name, "bottleneck_pattern")
        self.scale = float(scale)
        self.dropout = float(dropout)
        self.ff_names = tuple(ff_names) + (("ff_context",) if include_context_ff else ())
        self._adapters: dict[str, ParallelAdapter] = {}
        self._trainable: list[nn.Parameter] = []
        self._names: list[str] = []

    def feed_forwards(self, denoiser: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module]]:
        """``(block_name, block, attr, ff)`` for every feed-forward block to adapt."""
        from diffusers.models.attention import FeedForward

        out = []
        scope = scope_names(denoiser, self.params)
        for bname, block in denoiser.named_modules():
            for attr in self.ff_names:
                ff = getattr(block, attr, None)
                if isinstance(ff, (FeedForward, ParallelAdapter)) and ff in block.children():
                    prefix = f"{bname}.{attr}." if bname else f"{attr}."
                    if scope is not None and not all(prefix + n in scope for n, _ in ff.named_parameters()):
                        continue
                    out.append((bname, block, attr, ff))
        if not out:
            raise ValueError(f"{self.name}: the denoiser has no transformer feed-forward block "
                             f"(attributes {self.ff_names} holding a diffusers FeedForward)")
        return out

    def _adapter_terms(self, denoiser: nn.Module) -> list[tuple[str, int, int]]:
        """``(adapter name, const, per_unit)`` per adapted feed-forward: its count is
        ``const + per_unit * b``."""
        out = []
        for bname, _, attr, ff in self.feed_forwards(denoiser):
            d_in, d_out = _ff_dims(ff.ff if isinstance(ff, ParallelAdapter) else ff)
            # up bias; down weight + down bias + up weight per bottleneck unit
            out.append((_adapter_key(bname, attr), d_out, d_in + 1 + d_out))
        return out

    def knob_modules(self, denoiser: nn.Module) -> list[str]:
        return [key for key, _, _ in self._adapter_terms(denoiser)]

    def count_for_bottleneck(self, denoiser: nn.Module, bottleneck: int,
                             bottleneck_pattern: dict[str, int] | None = None) -> int:
        """The trainable count at ``bottleneck`` (and ``bottleneck_pattern``) from the shapes."""
        pattern = bottleneck_pattern or {}
        return sum(const + per * pattern.get(key, int(bottleneck))
                   for key, const, per in self._adapter_terms(denoiser))

    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        """Base width ``b`` everywhere, ``b + 1`` on an evenly spread subset of the adapters (in
        module order) chosen to bring the count nearest ``target``; sets ``bottleneck_pattern``."""
        terms = self._adapter_terms(denoiser)
        b, up = per_module_int_knob(int(target), [c for _, c, _ in terms], [p for *_, p in terms])
        self.bottleneck_pattern = {terms[i][0]: b + 1 for i in up}
        return b, self.count_for_bottleneck(denoiser, b, self.bottleneck_pattern)

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.take_budget(denoiser, budget, "bottleneck")
        freeze(denoiser)
        if ctx is not None:
            torch.manual_seed(ctx.seed)
        self._adapters = {}
        for bname, block, attr, ff in self.feed_forwards(denoiser):
            if isinstance(ff, ParallelAdapter):
                raise RuntimeError(f"{self.name}: {bname}.{attr} already has an adapter")
            d_in, d_out = _ff_dims(ff)
            key = _adapter_key(bname, attr)
            width = self.bottleneck_pattern.get(key, self.bottleneck)
            ad = ParallelAdapter(ff, d_in, d_out, width, self.scale, self.dropout)
            setattr(block, attr, ad)
            self._adapters[key] = ad
        unknown = sorted(set(self.bottleneck_pattern) - set(self._adapters))
        if unknown:
            raise ValueError(f"{self.name}: bottleneck_pattern names feed-forwards that are not "
                             f"adapted: {unknown[:3]} (adapted, e.g.: {list(self._adapters)[:3]})")
        self._trainable, self._names = [], []
        for key, ad in self._adapters.items():
            for sub in ("down", "up"):
                for pn, p in getattr(ad, sub).named_parameters():
                    p.requires_grad_(True)
                    self._trainable.append(p)
                    self._names.append(f"{key}.{sub}.{pn}")
        return denoiser

    def restore(self, denoiser: nn.Module, state: dict[str, torch.Tensor],
                budget: int | None = None) -> nn.Module:
        widths = {k[:-len(".down.weight")]: int(v.shape[0]) for k, v in state.items()
                  if k.endswith(".down.weight")}
        if not widths:
            raise ValueError(f"{self.name}: the state has no '.down.weight' tensor to read the widths from")
        self.bottleneck = min(widths.values())
        self.bottleneck_pattern = {k: v for k, v in widths.items() if v != self.bottleneck}
        module = self.apply(denoiser, budget=None)
        self.target_params = budget
        self.load_trained_state_dict(state)
        return module

    def merged(self, module: nn.Module) -> nn.Module:
        return module  # new modules: nothing to fold into the base weights


def _adapter_key(block_name: str, attr: str) -> str:
    return f"{block_name}.{attr}" if block_name else attr
