"""Diagnostics for the analysis experiments: per-layer counts, learned ΔW, and how parameters
migrate across the threshold during training (SPEC §4 "migration", paper Fig. 3)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .selection import ParamSpec, Selection, resolve_params, select

if TYPE_CHECKING:
    from .sparse import SparseParameters


def per_layer_counts(obj: "SparseParameters | Selection") -> dict[str, int]:
    """Selected (active) entries per tensor, in model order."""
    return obj.per_layer_counts()


def delta(sparse: "SparseParameters", dense: bool = True) -> dict[str, Tensor]:
    """Learned change ``W_t - W0`` per tensor (every entry ever trained, retired ones included):
    dense tensors of the parameter's shape, or sparse COO tensors with ``dense=False``."""
    return sparse.delta(dense=dense)


def share_below(sparse: "SparseParameters", theta: float) -> float:
    """Share of the initial selection (every entry ever trained) whose current |value| < θ."""
    return sparse.share_below(theta)


class MigrationTracker:
    """Tracks, over training, the two shares of paper Fig. 3 for a threshold θ:

    * ``still_below``: share of the entries initially below θ that are still below θ;
    * ``new_below``: share of the entries currently below θ that started at or above θ.

    Each :meth:`record` scans the scope densely (one tensor at a time), so call it every few
    hundred steps, not every step.
    """

    def __init__(self, model: nn.Module, threshold: float, params: ParamSpec = None):
        self.model = model
        self.threshold = float(threshold)
        self.params = params
        self.initial: Selection = select(model, threshold=threshold, params=params)
        self.history: list[dict] = []

    @torch.no_grad()
    def measure(self) -> dict:
        init_n = stayed = now_n = 0
        for n, p in resolve_params(self.model, self.params):
            below = (p.detach().reshape(-1).abs().float() < self.threshold)
            idx = self.initial.indices[n].long().to(below.device)
            s = int(below[idx].sum())
            stayed += s
            init_n += int(idx.numel())
            now_n += int(below.sum())
        new = now_n - stayed
        return {"initial_below": init_n, "now_below": now_n, "stayed": stayed,
                "newly_below": new,
                "still_below": stayed / init_n if init_n else float("nan"),
                "new_below": new / now_n if now_n else float("nan")}

    def record(self, step: int) -> dict:
        row = {"step": int(step), **self.measure()}
        self.history.append(row)
        return row

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "history": list(self.history)}
