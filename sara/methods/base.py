"""The interface every compared method implements (SaRA, LoRA, DoRA, AdaptFormer, LT-SFT, ...).

A method is built from its Hydra config (``conf/method/<name>.yaml``, ``_target_`` points at the
class), then driven by the trainer in this order::

    method = hydra.utils.instantiate(cfg.method)           # knobs only, no model yet
    denoiser = method.apply(denoiser, budget=..., ctx=ctx)  # adds/marks trainable parameters
    optimizer = method.make_optimizer(lr=..., weight_decay=..., betas=...)
    ... loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad() ...
    method.save_weights(run_dir)   # the trained weights in the ecosystem's format (one call)
    method.merged(denoiser) -> plain module for sampling

``save_weights`` / ``load_weights`` are the one registration point for a method's files: the base
class writes :meth:`trained_state_dict` to ``<run_dir>/<weights_name>`` (safetensors); sparse
methods write ``delta.safetensors`` (``sara.load_sparse`` format), LoRA/DoRA a peft adapter folder,
full fine-tuning a diffusers model folder. Reading them never runs code from a file.

``ctx`` (:class:`PrepareContext`) lets a method that needs a calibration phase before its
fixed-parameter training (LT-SFT's full fine-tuning phase, FishMask's Fisher estimate,
DiffPruning's gate phase) run it inside ``apply`` with the trainer's own loss and data.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn


@dataclass
class PrepareContext:
    """What a method may use while it prepares (calibration phases, budget solving)."""

    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None  # (denoiser, batch) -> scalar loss
    batches: Iterator[Any] | None = None  # endless iterator of training batches
    steps: int = 0  # total main-phase steps the trainer will run (for phase lengths)
    seed: int = 0
    extra: dict = field(default_factory=dict)


def scope_names(denoiser: nn.Module, params: Any = None) -> set[str] | None:
    """Names of the parameters a method may touch: ``params`` None = all (returns None), a regex
    (full match on parameter names, e.g. ``.*motion_modules\\..*``), a list of names or a
    predicate ``(name, param) -> bool``; the ``params`` knob of every method (sara.core's rule)."""
    if params is None:
        return None
    from sara.core.selection import resolve_params

    return {n for n, _ in resolve_params(denoiser, params)}


class Method(abc.ABC):
    """Base class: one subclass per compared method, one file per subclass."""

    name: str = "method"
    knob: str = ""  # name of the knob the budget solver sets (threshold, rank, bottleneck, k)
    #: attribute holding the per-module knob values that differ from ``knob_value`` (module name ->
    #: value; LoRA/DoRA/SHiRA ``rank_pattern``, AdaptFormer ``bottleneck_pattern``), "" if none
    pattern_attr: str = ""

    def __init__(self) -> None:
        self.target_params: int | None = None  # the budget asked for
        self.knob_value: Any = None

    # --- life cycle -------------------------------------------------------------------------
    @abc.abstractmethod
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        """Make ``denoiser`` trainable the method's way; return the module to train and call."""

    @abc.abstractmethod
    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """The optimizer over exactly the method's trainable values."""

    @abc.abstractmethod
    def num_trainable(self) -> int:
        """Exact number of trained scalar values."""

    # --- persistence --------------------------------------------------------------------------
    @abc.abstractmethod
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what the method trained (plus what is needed to put it back, e.g. indices)."""

    @abc.abstractmethod
    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trained_state_dict` on a module prepared by :meth:`apply`."""

    def merged(self, module: nn.Module) -> nn.Module:
        """A plain module with the learned change folded in (for sampling/export).

        Methods that cannot merge (AdaptFormer adds new blocks) return the module unchanged."""
        return module

    # --- budget ------------------------------------------------------------------------------
    def solve_budget(self, denoiser: nn.Module, target: int) -> tuple[Any, int]:
        """Set the method's own knob so its trainable count is as close to ``target`` as the knob
        allows; return ``(knob_value, achieved_count)``. Must not modify ``denoiser``'s weights
        (may read them: SaRA's threshold, on the ``meta`` device where shapes suffice).

        Compatible addition (methods issue): methods without a knob (``full``) keep this default,
        which reports every parameter of the denoiser."""
        return None, sum(p.numel() for p in denoiser.parameters())

    @property
    def knob_pattern(self) -> dict[str, Any] | None:
        """The per-module knob values that differ from ``knob_value`` (None: one value for all)."""
        pattern = getattr(self, self.pattern_attr, None) if self.pattern_attr else None
        return dict(pattern) if pattern else None

    def knob_modules(self, denoiser: nn.Module) -> list[str] | None:
        """The names of the modules whose knob ``knob_pattern`` may set (None: no per-module knob)."""
        return None

    def take_budget(self, denoiser: nn.Module, budget: int | None, attr: str) -> Any:
        """Set the knob attribute ``attr`` from ``budget`` (when given) and record it."""
        if budget is not None:
            self.target_params = int(budget)
            setattr(self, attr, self.solve_budget(denoiser, int(budget))[0])
        self.knob_value = getattr(self, attr)
        return self.knob_value

    # --- convenience (compatible additions) ---------------------------------------------------------
    def trainable_parameters(self) -> list[torch.Tensor]:
        """The leaf tensors the optimizer updates now (for gradient clipping). Read it again after
        each step: SaRA's progressive re-selection replaces its leaf."""
        if hasattr(self, "_trainable"):
            return list(self._trainable)
        module = getattr(self, "module", None)
        return [p for p in module.parameters() if p.requires_grad] if module is not None else []

    def save_trained(self, path, metadata: dict | None = None) -> None:
        """Write :meth:`trained_state_dict` to a safetensors file (atomic: tmp + rename)."""
        import json

        from sara.io import atomic_save_safetensors

        state = {k: v.detach().contiguous().cpu() for k, v in self.trained_state_dict().items()}
        meta = {"method": self.name, "knob": str(self.knob), "record": json.dumps(self.record(), default=str)}
        meta.update({k: str(v) for k, v in (metadata or {}).items()})
        atomic_save_safetensors(state, path, metadata=meta)

    #: file or folder, inside the run directory, that :meth:`save_weights` writes
    weights_name: str = "trained.safetensors"

    def save_weights(self, run_dir) -> Path:
        """Write what the method trained into ``run_dir`` in its ecosystem format; return the path."""
        path = Path(run_dir) / self.weights_name
        self.save_trained(path)
        return path

    def load_weights(self, denoiser: nn.Module, run_dir, budget: int | None = None) -> nn.Module:
        """Prepare a fresh ``denoiser`` with the weights :meth:`save_weights` wrote in ``run_dir``
        (for sampling, export or another run's delta); returns the module to call or merge."""
        from safetensors.torch import load_file

        path = Path(run_dir) / self.weights_name
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: no trained weights at {path}")
        return self.restore(denoiser, load_file(str(path)), budget=budget)

    def load_trained(self, path) -> None:
        """Inverse of :meth:`save_trained` on a module prepared by :meth:`apply`."""
        import os
        from safetensors.torch import load_file

        self.load_trained_state_dict(load_file(os.fspath(path)))

    def restore(self, denoiser: nn.Module, state: dict[str, torch.Tensor],
                budget: int | None = None) -> nn.Module:
        """Prepare ``denoiser`` from a saved :meth:`trained_state_dict` for sampling/evaluation,
        without the calibration phases :meth:`apply` may run (LT-SFT, FishMask, DiffPruning take
        their selection from the state). Compatible addition; the default is apply + load."""
        module = self.apply(denoiser, budget=budget, ctx=None)
        self.load_trained_state_dict(state)
        return module

    def record(self) -> dict:
        """What goes into the run's result record about the method."""
        rec = {"method": self.name, "knob": self.knob, "knob_value": self.knob_value,
               "target_params": self.target_params, "trainable_params": self.num_trainable()}
        if self.pattern_attr:
            rec["knob_pattern"] = self.knob_pattern or {}
        return rec


class AddedParamsMethod(Method):
    """A method that trains whole parameter tensors it added or named (LoRA, DoRA, AdaptFormer):
    ``apply`` fills ``self._trainable`` / ``self._names``; optimizer, count and checkpoint
    state follow from those two lists."""

    #: ``apply`` needs only the shapes of the denoiser (it builds on the meta device)
    shape_only = True

    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        if not getattr(self, "_trainable", None):
            raise RuntimeError("call apply() before make_optimizer()")
        return torch.optim.AdamW(self._trainable, lr=self.lr if lr is None else lr,
                                 weight_decay=weight_decay, betas=tuple(betas))

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self._trainable)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in zip(self._names, self._trainable)}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self._names) - set(state))
        extra = sorted(set(state) - set(self._names))
        if missing or extra:
            raise KeyError(f"{self.name}: checkpoint does not match the adapted model "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
        with torch.no_grad():
            for n, p in zip(self._names, self._trainable):
                if state[n].shape != p.shape:
                    raise ValueError(f"{self.name}: {n} has shape {tuple(state[n].shape)} in the "
                                     f"checkpoint, {tuple(p.shape)} in the model "
                                     f"(another {getattr(self, 'knob', None) or 'size'}?)")
                p.copy_(state[n].to(p.dtype))
