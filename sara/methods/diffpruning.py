"""DiffPruning (Guo et al. 2020): a learned sparse diff ``W = W0 + z ⊙ δ`` with hard-concrete
L0 gates ``z`` (Louizos et al. 2018), then magnitude projection to the budget and fixed-mask
fine-tuning of the diff.

Gate phase (inside :meth:`apply`, with the trainer's loss and batches, ``gate_steps`` long: null =
``ctx.steps``; a float in (0, 1] = that fraction; an int = steps): every tensor in scope is
reparametrised (``torch.nn.utils.parametrize``) as ``W0 + z ⊙ δ`` with ``δ`` (init 0) and the gate
logits ``log α`` (init ``log_alpha_init``) trained by Adam on
``loss + l0_lambda · Σ sigmoid(log α − β log(−γ/ζ))`` (the expected L0 norm);
``z = clamp(sigmoid((log u − log(1−u) + log α)/β)(ζ − γ) + γ, 0, 1)``, ``u ~ U(0, 1)``,
β = 2/3, γ = −0.1, ζ = 1.1. Projection: keep the k entries of largest ``|ẑ ⊙ δ|`` (ẑ the
deterministic gate), then the parametrisation is removed (weights are ``W0`` again) and the kept
entries start from ``W0 + ẑ δ`` and are trained with a fixed mask through sara.core's
SparseParameters (unstructural backprop; every other entry stays ``W0`` bit-exactly).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from sara.core import Selection, select_from_scores
from sara.core.selection import index_dtype, resolve_params
from sara.core.sparse import read_entries

from ._util import freeze, need_ctx, next_batch, phase_steps, reject_nonfinite, resolve_steps
from .base import PrepareContext
from .selective import SparseMethod

log = logging.getLogger(__name__)

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteDiff(nn.Module):
    """Parametrisation ``W0 -> W0 + z ⊙ δ`` with a hard-concrete gate per entry."""

    def __init__(self, like: torch.Tensor, log_alpha_init: float) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros_like(like, dtype=torch.float32))
        self.log_alpha = nn.Parameter(torch.full_like(like, float(log_alpha_init), dtype=torch.float32))

    def gate(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp_(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / BETA)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def forward(self, w0: torch.Tensor) -> torch.Tensor:
        return w0 + (self.gate() * self.delta).to(w0.dtype)

    def expected_l0(self) -> torch.Tensor:
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA)).sum()


class DiffPruning(SparseMethod):
    name = "diffpruning"
    knob = "k"

    def __init__(self, k: int | None = None, density: float | None = 0.0058,
                 gate_steps: int | float | None = None, delta_lr: float | None = None,
                 alpha_lr: float = 0.1, l0_lambda: float = 1.25e-7, log_alpha_init: float = 5.0,
                 params: Any = None, lr: float | None = 1e-4, name: str | None = None) -> None:
        super().__init__(k=k, density=density, params=params, lr=lr, name=name)
        self.gate_steps = gate_steps
        self.delta_lr = delta_lr
        self.alpha_lr = float(alpha_lr)
        self.l0_lambda = float(l0_lambda)
        self.log_alpha_init = float(log_alpha_init)
        self._gate: dict = {}

    def _gate_phase(self, denoiser: nn.Module, ctx: PrepareContext) -> tuple[dict, dict, dict]:
        """Returns (scores |ẑ δ|, diffs ẑ δ, |δ| of closed gates) per tensor name."""
        loss_fn, batches = need_ctx(ctx, self.name, "gate phase")
        steps = resolve_steps(self.gate_steps, ctx.steps, "gate_steps")
        if steps < 1:
            raise ValueError(f"{self.name}: the gate phase needs at least one step")
        named = resolve_params(denoiser, self.params)
        freeze(denoiser)
        gates: dict[str, HardConcreteDiff] = {}
        for n, p in named:
            mod_name, _, attr = n.rpartition(".")
            mod = denoiser.get_submodule(mod_name) if mod_name else denoiser
            g = HardConcreteDiff(p.detach(), self.log_alpha_init)
            parametrize.register_parametrization(mod, attr, g, unsafe=True)
            gates[n] = g
        try:
            lr_d = self.delta_lr if self.delta_lr is not None else (ctx.extra.get("lr") or self.lr or 1e-4)
            opt = torch.optim.Adam([
                {"params": [g.delta for g in gates.values()], "lr": float(lr_d)},
                {"params": [g.log_alpha for g in gates.values()], "lr": self.alpha_lr}])
            first = last = None
            denoiser.train()
            for i in phase_steps(ctx, steps, f"{self.name} gates"):
                batch = next_batch(batches)
                with parametrize.cached():  # one gate sample per tensor per step
                    task = loss_fn(denoiser, batch)
                    reject_nonfinite(task, self.name, i)
                    l0 = sum(g.expected_l0() for g in gates.values())
                    (task + self.l0_lambda * l0).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                first = float(task.detach()) if first is None else first
                last = float(task.detach())
            scores, diffs, fallback = {}, {}, {}
            with torch.no_grad():
                for n, g in gates.items():
                    g.eval()
                    d = g.gate() * g.delta
                    diffs[n] = d
                    scores[n] = d.abs()
                    fallback[n] = g.delta.abs().masked_fill_(scores[n] > 0, 0)
                nonzero = sum(int((sc > 0).sum()) for sc in scores.values())
            self._gate = {"steps": steps, "delta_lr": float(lr_d), "loss_first": first,
                          "loss_last": last, "nonzero_gated_diff": nonzero,
                          "expected_l0": float(sum(g.expected_l0().detach() for g in gates.values()))}
        finally:
            for n, _ in named:  # back to the original W0 parameters
                mod_name, _, attr = n.rpartition(".")
                mod = denoiser.get_submodule(mod_name) if mod_name else denoiser
                parametrize.remove_parametrizations(mod, attr, leave_parametrized=False)
            freeze(denoiser)
        return scores, diffs, fallback

    def project(self, denoiser: nn.Module, scores: dict, fallback: dict, k: int) -> Selection:
        """The k entries of largest |ẑ δ|. If fewer than k entries have a non-zero gated diff
        (the L0 penalty closed most gates), the rest are the closed entries of largest |δ|."""
        nonzero = sum(int((sc > 0).sum()) for sc in scores.values())
        if nonzero >= k:
            return select_from_scores(denoiser, scores, k)
        log.warning("%s: only %d entries have a non-zero gated diff (< k=%d); filling with the "
                    "largest |δ| of closed gates", self.name, nonzero, k)
        first = ({n: torch.nonzero((sc > 0).reshape(-1)).squeeze(1) for n, sc in scores.items()}
                 if nonzero else {n: torch.zeros(0, dtype=torch.long) for n in scores})
        rest = select_from_scores(denoiser, fallback, k - nonzero) if k > nonzero else None
        params = dict(denoiser.named_parameters())
        indices = {}
        for n in scores:
            parts = [first[n].long()] + ([rest.indices[n].long()] if rest is not None else [])
            idx = torch.cat(parts).sort().values
            indices[n] = idx.to(index_dtype(params[n].numel()))
        return Selection(indices, {n: tuple(params[n].shape) for n in scores}, rule="scores", k=k)

    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.seed = ctx.seed if ctx is not None else 0
        k = self.resolve_k(denoiser, budget)
        need_ctx(ctx, self.name, "gate phase")
        scores, diffs, fallback = self._gate_phase(denoiser, ctx)
        sel = self.project(denoiser, scores, fallback, k)
        del scores, fallback
        self._build(denoiser, sel)  # wraps W0: initial = W0, values = W0 at the kept entries
        sp = self.sparse
        with torch.no_grad():
            d = torch.cat([read_entries(diffs[n], sp.indices[n]).reshape(-1) for n in sp.names])
            sp.values.add_(d.to(sp.values.device, sp.values.dtype))  # start from W0 + ẑ δ
            sp.sync()
        return denoiser

    def record(self) -> dict:
        rec = super().record()
        rec["gate_phase"] = dict(self._gate)
        return rec
