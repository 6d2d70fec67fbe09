"""Shared machinery of the selective methods (SaRA and its ablations, LT-SFT, DiffPruning,
FishMask): the trained entries live in sara.core's :class:`~sara.core.SparseParameters` (one flat
leaf ``values``, unstructural backpropagation) driven by sara.core's :class:`~sara.core.SaRA`
optimizer (AdamW over ``values``; for the non-SaRA methods with ``lambda_rank=0`` and no
progressive re-selection, which makes it a plain masked AdamW that also all-reduces under DDP).

The optimizer is built in :meth:`apply` (it owns the wrapper); :meth:`make_optimizer` sets the
trainer's lr / weight decay / betas on it and returns it. Checkpoints are sara.core sparse
checkpoints: ``indices/<name>`` + ``values/<name>`` per tensor (``save_trained`` adds the
metadata so ``sara.load_sparse(plain_model, path)`` works too).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from sara.core import SaRA, Selection, get_sparse, merge, wrap
from sara.core.checkpoint import read_sparse, save_sparse, sparse_state_dict
from sara.core.selection import index_dtype, resolve_params
from sara.core.sparse import read_entries

from ._util import freeze
from .base import Method

log = logging.getLogger(__name__)


def scope_total(denoiser: nn.Module, params=None) -> int:
    return sum(p.numel() for _, p in resolve_params(denoiser, params))


def entries_from_state(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (indices, values)}`` from a sparse state dict (``indices/<n>``, ``values/<n>``)."""
    out = {}
    for key, idx in state.items():
        if key.startswith("indices/"):
            n = key[len("indices/"):]
            if f"values/{n}" not in state:
                raise KeyError(f"sparse state has indices for {n!r} but no values")
            out[n] = (idx, state[f"values/{n}"])
    if not out:
        raise KeyError("not a sparse state dict: no 'indices/<name>' entries "
                       f"(keys: {sorted(state)[:4]}...)")
    return out


class SparseMethod(Method):
    """Base of every method that trains a selected subset of the denoiser's own entries."""

    knob = "k"
    #: passed to the core optimizer; the SaRA method sets its own
    lambda_rank: float = 0.0
    compat: str = "ours"

    def __init__(self, k: int | None = None, density: float | None = None, params: Any = None,
                 lr: float | None = 1e-4, name: str | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        self.k = None if k is None else int(k)
        self.density = density
        self.params = params  # scope: None = every floating-point tensor, or a regex / names
        self.lr = lr
        self.module: nn.Module | None = None
        self.optimizer: SaRA | None = None
        self.seed = 0

    # --- knob ----------------------------------------------------------------------------------
    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[int, int]:
        total = scope_total(denoiser, self.params)
        k = max(1, min(int(target), total))
        if k != target:
            log.warning("%s: budget %d exceeds the %d entries in scope; using k=%d",
                        self.name, target, total, k)
        return k, k

    def resolve_k(self, denoiser: nn.Module, budget: int | None) -> int:
        if budget is not None:
            self.target_params = int(budget)
            self.k, _ = self.solve_budget(denoiser, int(budget))
        elif self.k is None:
            if self.density is None:
                raise ValueError(f"{self.name}: give a budget, k or density")
            self.k = max(1, int(round(float(self.density) * scope_total(denoiser, self.params))))
        self.knob_value = self.k
        return self.k

    # --- wrapper ---------------------------------------------------------------------------------
    @property
    def sparse(self):
        return None if self.optimizer is None else self.optimizer.sparse

    def _optimizer_kwargs(self) -> dict:
        """Extra arguments of the core optimizer (SaRA overrides)."""
        return {"progressive_iter": None, "lambda_rank": 0.0, "compat": "ours"}

    def _default_lr(self, selection: Selection) -> float:
        return 1e-4 if self.lr is None else float(self.lr)

    def _build(self, denoiser: nn.Module, selection: Selection) -> None:
        freeze(denoiser)
        if self.optimizer is not None and self.sparse is not None and not self.sparse.attached:
            # Re-wrap inside the existing optimizer object (whoever holds it keeps a valid
            # reference, e.g. the trainer resuming: load_trained_state_dict, then the optimizer's
            # own load_state_dict).
            opt = self.optimizer
            official = opt.compat == "official"
            sp = wrap(denoiser, selection, dense_masks=official,
                      sampled_wgrad=opt.sparse.sampled_wgrad,
                      initial_storage=opt.sparse.initial_storage)
            sp.meta["compat"] = opt.compat
            opt.sparse = sp
            opt.param_groups[0]["params"] = [sp.values]
            opt.state.clear()
            opt.initial_count = sp.count()
            opt.iteration, opt.reselected = 0, False
            if selection.rule not in ("threshold", "smallest"):
                opt.progressive_iter = None
        else:
            kw = self._optimizer_kwargs()
            self.optimizer = SaRA(denoiser, threshold=selection.threshold,
                                  lr=self._default_lr(selection), selection=selection,
                                  seed=self.seed, **kw)
        self.module = denoiser

    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("call apply() before make_optimizer()")
        for g in self.optimizer.param_groups:
            if lr is not None:
                g["lr"] = float(lr)
            g["weight_decay"] = float(weight_decay)
            g["betas"] = tuple(betas)
        return self.optimizer

    def trainable_parameters(self) -> list[torch.Tensor]:
        return [] if self.optimizer is None else list(self.sparse.parameters())

    def num_trainable(self) -> int:
        """Entries trained over the run: the initial selection (entries SaRA's progressive
        re-selection retires were trained too and stay in the checkpoint). The entries still
        trained from now on: :meth:`num_active`."""
        if self.optimizer is None:
            return 0
        sp = self.sparse
        return int(sp.count() + sum(int(r["indices"].numel()) for r in sp.retired.values()))

    def num_active(self) -> int:
        return 0 if self.optimizer is None else int(self.sparse.count())

    def record(self) -> dict:
        rec = super().record()
        if self.optimizer is not None:
            rec["active_trainable_params"] = self.num_active()
        return rec

    # --- persistence -------------------------------------------------------------------------------
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trained entry (re-selection's retired ones included): ``indices/<n>`` and
        ``values/<n>`` per tensor, plus the core's base-model sample."""
        if self.optimizer is None:
            raise RuntimeError("call apply() first")
        return sparse_state_dict(self.sparse)[0]

    def save_trained(self, path, metadata: dict | None = None) -> None:
        meta = {"method": self.name, "knob": self.knob, "knob_value": self.knob_value,
                "target_params": self.target_params}
        meta.update(metadata or {})
        save_sparse(path, self.sparse, metadata=meta)

    def load_trained(self, path) -> None:
        tensors, meta = read_sparse(path)
        self._load(tensors, meta)

    weights_name = "delta.safetensors"  # sara.load_sparse(plain_denoiser, path) reads it

    def load_weights(self, denoiser: nn.Module, run_dir, budget: int | None = None) -> nn.Module:
        """The run's ``delta.safetensors`` on a fresh ``denoiser``, base identity checked."""
        from pathlib import Path

        path = Path(run_dir) / self.weights_name
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: no trained weights at {path}")
        tensors, meta = read_sparse(path)
        self.module = denoiser
        self.target_params = budget
        self._load(tensors, meta)
        self.k = self.knob_value = self.sparse.count() if self.knob == "k" else self.knob_value
        return denoiser

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._load(state, None)

    @torch.no_grad()
    def _load(self, state: dict[str, torch.Tensor], meta: dict | None) -> None:
        if self.module is None:
            raise RuntimeError(f"{self.name}: call apply() (or restore()) before loading")
        entries = entries_from_state(state)
        sp = self.sparse
        same = sp is not None and set(entries) == set(sp.names) and all(
            torch.equal(entries[n][0].long().cpu(), sp.indices[n].long().cpu()) for n in sp.names)
        if not same:
            # Another selection (calibration gave other entries, or re-selection retired some):
            # put W0 back, drop the wrapper, wrap the checkpoint's entries.
            model = self.module
            if sp is not None and sp.attached:
                merge(model)  # detaching syncs the values into the weights, so W0 goes back after
                sp.restore_base()
            if meta is not None:  # validates shapes and base identity; writes nothing
                from sara.core import load_sparse
                load_sparse(model, state, alpha=0.0, metadata=meta)
            params = dict(model.named_parameters())
            for n, (idx, _) in entries.items():
                if n not in params:
                    raise ValueError(f"{self.name}: checkpoint tensor {n!r} is not in the model")
                if idx.numel() and int(idx.max()) >= params[n].numel():
                    raise ValueError(f"{self.name}: checkpoint indices out of range for {n!r}")
            indices = {n: entries[n][0].to(index_dtype(params[n].numel())) for n in entries}
            shapes = {n: tuple(p.shape) for n, p in params.items() if n in indices}
            k = sum(int(i.numel()) for i in indices.values())
            sel = Selection(indices, shapes, rule="checkpoint", threshold=self._load_threshold(), k=k)
            self._build(model, sel)
            sp = self.sparse
        vals = torch.cat([entries[n][1].reshape(-1).to(sp.values.dtype) for n in sp.names])
        sp.values.data.copy_(vals.to(sp.values.device))
        sp.abs_pending = False  # the state holds the values the weights had (effective values)
        sp.sync()

    def _load_threshold(self) -> float | None:
        return None

    def restore(self, denoiser: nn.Module, state: dict[str, torch.Tensor],
                budget: int | None = None) -> nn.Module:
        """Prepare ``denoiser`` from a trained state without any calibration phase."""
        self.module = denoiser
        self.target_params = budget
        self._load(state, None)
        self.k = self.knob_value = self.sparse.count() if self.knob == "k" else self.knob_value
        return denoiser

    def merged(self, module: nn.Module) -> nn.Module:
        """The plain module with the trained values in place (sara.core ``merge``; in place:
        the wrapper is removed, all parameters are frozen)."""
        if get_sparse(module) is not None:
            merge(module)
        return module


def values_at(selection: Selection, tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Concatenate ``tensors[n].flat[selection.indices[n]]`` over ``names`` (the wrapper order)."""
    return torch.cat([read_entries(tensors[n], selection.indices[n]).reshape(-1) for n in names])

