"""SaRA (the paper's method) and its Table 2 ablations, as one class over sara.core's optimizer.

* ``sara``: entries with ``|W0| < θ``, nuclear-norm rank loss (``lambda_rank``; 2-D weights,
  conv weights viewed as matrices too with ``rank_loss_conv: true``), progressive
  re-selection at ``progressive_iter``, unstructural backpropagation; ``lr: null`` -> Eq. 12.
* ``sara_no_ppa`` (``progressive_iter: null``), ``sara_no_rank`` (``lambda_rank: 0``),
  ``sara_plain`` (neither).
* ``largest`` / ``random``: the same pipeline with the k largest-|w| or k random entries
  (``rule``). Progressive re-selection ("still below θ") does not apply to them. With no budget
  and no ``k`` they train as many entries as θ would select (the fair comparison of Table 2); with
  ``lr: null`` they use Eq. 12 at the θ that selects that many entries, i.e. SaRA's lr.

Knob: θ (``select_for_budget``; ``budget_mode: threshold``) or k (``budget_mode: k``: the k
smallest entries, exact; always k for ``largest`` / ``random``). A budget below the number of
entries that are exactly 0 (zero-initialised layers, e.g. a fresh AnimateDiff adapter's output
projections) trains exactly that many zeros, the first in model order, at θ just above 0, without
progressive re-selection (no trained entry stays below that θ).
``progressive_iter``: a float in (0, 1] is a fraction of the trainer's steps (``ctx.steps``;
paper: 2,500 of 5,000 = 0.5), an int an absolute step, null never.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from sara.core import (Selection, lr_from_threshold, select, select_for_budget,
                       threshold_for_budget)
from sara.core.initial import STORAGES
from sara.core.sampled_grad import crossover_for
from sara.core.selection import resolve_params

from .base import PrepareContext
from .selective import SparseMethod

log = logging.getLogger(__name__)

RULES = ("threshold", "smallest", "largest", "random")


class SaRAMethod(SparseMethod):
    name = "sara"

    def __init__(self, threshold: float = 2e-3, rule: str = "threshold", budget_mode: str = "threshold",
                 k: int | None = None, progressive_iter: int | float | None = 0.5,
                 lambda_rank: float = 5e-4, lr: float | None = None, compat: str = "ours",
                 rank_targets: str = "random", rank_min_side: int = 64, params: Any = None,
                 name: str | None = None, rank_loss_conv: bool = False,
                 sampled_wgrad: float | str | None = "auto", initial_storage: str = "auto") -> None:
        super().__init__(k=k, params=params, lr=lr, name=name)
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if budget_mode not in ("threshold", "k"):
            raise ValueError(f"budget_mode must be 'threshold' or 'k', got {budget_mode!r}")
        if threshold is not None and not float(threshold) > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold = None if threshold is None else float(threshold)
        self.rule = rule
        self.budget_mode = budget_mode
        self.progressive_iter = progressive_iter
        self.lambda_rank = float(lambda_rank)
        self.compat = compat
        self.rank_targets = rank_targets
        self.rank_min_side = int(rank_min_side)
        if not isinstance(rank_loss_conv, bool):
            raise ValueError(f"rank_loss_conv must be true or false, got {rank_loss_conv!r}")
        if rank_loss_conv and compat == "official":
            raise ValueError("rank_loss_conv: true needs compat: ours (the authors' optimizer "
                             "constrains 2-D weights only)")
        self.rank_loss_conv = rank_loss_conv
        crossover_for("cpu", sampled_wgrad)  # validates: "auto", null or a density in [0, 1]
        if initial_storage not in STORAGES:
            raise ValueError(f"initial_storage must be one of {STORAGES}, got {initial_storage!r}")
        self.sampled_wgrad = sampled_wgrad
        self.initial_storage = initial_storage
        self.knob = "threshold" if (rule == "threshold" and budget_mode == "threshold") else "k"
        self._progressive_resolved: int | None = None
        self._lr_theta: float | None = None

    # --- knob ----------------------------------------------------------------------------------
    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[Any, int]:
        if self.knob == "k":
            return super().solve_budget(denoiser, target)
        if next(denoiser.parameters()).is_meta:
            raise ValueError("sara: solving θ for a budget needs the weights' values (not the meta device)")
        sel = select_for_budget(denoiser, int(target), params=self.params)
        return sel.threshold, sel.count()

    def _resolve_progressive(self, ctx: PrepareContext | None) -> int | None:
        pi = self.progressive_iter
        if pi is None:
            return None
        if isinstance(pi, float) and 0 < pi <= 1:
            steps = ctx.steps if ctx is not None else 0
            if not steps:
                # a run that trains nothing (train.steps=0: scaling, merging, pruning) has nothing
                # to re-select; only a caller without a trainer context is worth a warning
                (log.debug if ctx is not None else log.warning)(
                    "sara: progressive_iter=%s is a fraction of the training steps but the step "
                    "count is %s; no progressive re-selection", pi, "0" if ctx is not None else "unknown")
                return None
            pi = int(round(pi * steps))
        pi = int(pi)
        return pi if pi >= 1 else None

    # --- life cycle -------------------------------------------------------------------------------
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.seed = ctx.seed if ctx is not None else 0
        if self.knob == "threshold":
            if budget is not None:
                self.target_params = int(budget)
                sel = select_for_budget(denoiser, int(budget), params=self.params)
                self.threshold = sel.threshold
            else:
                sel = select(denoiser, threshold=self.threshold, params=self.params)
            self.knob_value = self.threshold
            self._lr_theta = self.threshold
        else:
            if budget is None and self.k is None:
                # as many entries as θ selects (Table 2's fair comparison)
                self.k = sum(int((p.detach().abs().float() < self.threshold).sum())
                             for _, p in resolve_params(denoiser, self.params))
            k = self.resolve_k(denoiser, budget)
            rule = "smallest" if self.rule == "threshold" else self.rule
            sel = select(denoiser, k=k, rule=rule, params=self.params, seed=self.seed)
            self._lr_theta = (sel.threshold if sel.threshold is not None else
                              threshold_for_budget(denoiser, k, params=self.params)
                              if self.lr is None else None)
        self._progressive_resolved = self._resolve_progressive(ctx)
        if "zero_ties" in sel.meta:
            log.warning("sara: the budget %d is below the %d entries in scope that are exactly 0 "
                        "(zero-initialised layers): training the first %d zeros in model order, "
                        "θ = %.3g (just above 0).%s", sel.count(), sel.meta["zero_ties"],
                        sel.count(), sel.threshold,
                        "" if self._progressive_resolved is None else
                        " No progressive re-selection (progressive_iter=null): every trained entry "
                        "leaves |w| < θ at its first update, so re-selecting at step "
                        f"{self._progressive_resolved} would leave nothing to train.")
            self._progressive_resolved = None
        self._build(denoiser, sel)
        return denoiser

    def _optimizer_kwargs(self) -> dict:
        return {"progressive_iter": self._progressive_resolved, "lambda_rank": self.lambda_rank,
                "compat": self.compat, "rank_targets": self.rank_targets,
                "rank_min_side": self.rank_min_side, "rank_conv": self.rank_loss_conv,
                "sampled_wgrad": self.sampled_wgrad, "initial_storage": self.initial_storage}

    def _default_lr(self, selection: Selection) -> float:
        if self.lr is not None:
            return float(self.lr)
        theta = self._lr_theta or selection.threshold or self.threshold
        return lr_from_threshold(theta)

    def _load_threshold(self) -> float | None:
        return self.optimizer.threshold if self.optimizer is not None else self.threshold

    def record(self) -> dict:
        rec = super().record()
        rec.update({"rule": self.rule, "threshold": self.optimizer.threshold if self.optimizer else
                    self.threshold, "progressive_iter": self._progressive_resolved,
                    "lambda_rank": self.lambda_rank, "compat": self.compat,
                    "lr_default": self._default_lr_safe()})
        return rec

    def _default_lr_safe(self) -> float | None:
        try:
            return self._default_lr(Selection({}, {}, threshold=self.threshold))
        except (ValueError, TypeError):
            return None
