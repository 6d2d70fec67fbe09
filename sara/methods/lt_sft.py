"""LT-SFT (Ansell et al. 2021), lottery-ticket sparse fine-tuning.

Phase 1 (inside :meth:`apply`, with the trainer's loss and batches): full fine-tuning of every
tensor in scope for ``phase1_steps`` (null = ``ctx.steps``, the same length as the main phase;
a float in (0, 1] = that fraction of it; an int = that many steps). Then keep the k entries with
the largest ``|W1 - W0|``, reset the whole model to ``W0``, and (phase 2, the trainer's run)
train only those k entries.

``unstructural: true`` -> phase 2 uses SaRA's sparse backpropagation (sara.core
SparseParameters: one flat leaf, no dense gradient kept). ``unstructural: false`` -> the classical
dense-gradient masking: every touched tensor has ``requires_grad`` and a full-size ``.grad``, a
gradient hook multiplies it by a boolean mask, AdamW runs over the full tensors (decoupled weight
decay masked too, so frozen entries stay bit-identical). This is what the memory benchmark
compares (paper: SaRA uses a fixed 9.2 GB less than LT-SFT on SD 2.0).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from sara.core import select_from_scores
from sara.core.norms import affine_partners, drop_grad
from sara.core.selection import index_dtype, resolve_params
from sara.core.sparse import read_entries, write_entries

from ._util import freeze, need_ctx, next_batch, phase_steps, reject_nonfinite, resolve_steps
from .base import PrepareContext
from .selective import SparseMethod, entries_from_state

log = logging.getLogger(__name__)


class MaskedAdamW(torch.optim.AdamW):
    """AdamW over whole tensors whose gradients are already masked (zero outside the mask), with
    the decoupled weight decay masked as well: entries outside the mask never change (zero
    gradient -> zero moments -> zero update, and no decay)."""

    def __init__(self, params: list[nn.Parameter], masks: list[torch.Tensor], **kw: Any) -> None:
        self._wd = float(kw.pop("weight_decay", 1e-2))
        super().__init__(params, weight_decay=0.0, **kw)
        self.masks = dict(zip(params, masks))
        for g in self.param_groups:
            g["masked_weight_decay"] = self._wd

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            wd = g.get("masked_weight_decay", 0.0)
            if wd:
                for p in g["params"]:
                    if p.grad is not None:
                        m = self.masks[p]
                        p.mul_(torch.where(m, 1.0 - g["lr"] * wd, 1.0).to(p.dtype))
        return super().step(closure)


class LTSFT(SparseMethod):
    name = "lt_sft"
    knob = "k"

    def __init__(self, k: int | None = None, density: float | None = 0.0058,
                 phase1_steps: int | float | None = None, phase1_lr: float | None = None,
                 phase1_weight_decay: float = 0.0, unstructural: bool = True,
                 w0_device: str | None = None, params: Any = None, lr: float | None = 1e-4,
                 name: str | None = None) -> None:
        super().__init__(k=k, density=density, params=params, lr=lr, name=name)
        self.phase1_steps = phase1_steps
        self.phase1_lr = phase1_lr
        self.phase1_weight_decay = float(phase1_weight_decay)
        self.unstructural = bool(unstructural)
        self.w0_device = w0_device  # where W0 is kept during phase 1 (None: with the weights)
        # dense-masking mode state
        self._dense: dict[str, torch.Tensor] = {}  # name -> bool mask (full size)
        self._dense_idx: dict[str, torch.Tensor] = {}
        self._dense_w0: dict[str, torch.Tensor] = {}  # W0 at the selected entries
        self._hooks: list = []
        self._phase1_info: dict = {}

    # --- phase 1 ---------------------------------------------------------------------------------
    def _phase1(self, denoiser: nn.Module, ctx: PrepareContext) -> dict[str, torch.Tensor]:
        loss_fn, batches = need_ctx(ctx, self.name, "full fine-tuning phase (phase 1)")
        steps = resolve_steps(self.phase1_steps, ctx.steps, "phase1_steps")
        if steps < 1:
            raise ValueError(f"{self.name}: phase 1 needs at least one step (phase1_steps="
                             f"{self.phase1_steps!r}, ctx.steps={ctx.steps})")
        named = resolve_params(denoiser, self.params)
        w0 = {n: p.detach().to(self.w0_device or p.device, copy=True) for n, p in named}
        freeze(denoiser)
        for _, p in named:
            p.requires_grad_(True)
        lr = self.phase1_lr if self.phase1_lr is not None else (ctx.extra.get("lr") or self.lr or 1e-4)
        opt = torch.optim.AdamW([p for _, p in named], lr=float(lr),
                                weight_decay=self.phase1_weight_decay)
        clip = ctx.extra.get("max_grad_norm")
        losses = []
        denoiser.train()
        for i in phase_steps(ctx, steps, f"{self.name} phase 1"):
            loss = loss_fn(denoiser, next_batch(batches))
            reject_nonfinite(loss, self.name, i)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_([p for _, p in named], float(clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        del opt
        scores = {}
        with torch.no_grad():
            for n, p in named:
                scores[n] = (p.detach() - w0[n].to(p.device)).abs_()
                p.copy_(w0[n].to(p.device))  # reset to W0
        del w0
        freeze(denoiser)
        self._phase1_info = {"steps": steps, "lr": float(lr), "loss_first": losses[0], "loss_last": losses[-1]}
        return scores

    # --- life cycle ------------------------------------------------------------------------------
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        self.seed = ctx.seed if ctx is not None else 0
        k = self.resolve_k(denoiser, budget)
        need_ctx(ctx, self.name, "full fine-tuning phase (phase 1)")
        scores = self._phase1(denoiser, ctx)
        sel = select_from_scores(denoiser, scores, k)
        del scores
        if self.unstructural:
            self._build(denoiser, sel)
        else:
            self._build_dense(denoiser, sel.indices)
        return denoiser

    def _build_dense(self, denoiser: nn.Module, indices: dict[str, torch.Tensor]) -> None:
        freeze(denoiser)
        self._remove_hooks()
        params = dict(denoiser.named_parameters())
        self._dense, self._dense_idx, self._dense_w0 = {}, {}, {}
        for n, idx in indices.items():
            if idx.numel() == 0:
                continue
            p = params[n]
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[idx.to(p.device).long()] = True
            mask = mask.view(p.shape)
            self._dense[n] = mask
            self._dense_idx[n] = idx.to(p.device, index_dtype(p.numel()))
            self._dense_w0[n] = read_entries(p, self._dense_idx[n]).clone()
            p.requires_grad_(True)
            self._hooks.append(p.register_hook(lambda g, m=mask: torch.where(m, g, torch.zeros((), dtype=g.dtype, device=g.device))))
        # a norm layer's frozen weight/bias trains along with its partner's (sara.core.norms)
        for p in affine_partners(denoiser, set(self._dense)).values():
            p.requires_grad_(True)
            self._hooks.append(p.register_post_accumulate_grad_hook(drop_grad))
        self.module = denoiser
        self.optimizer = None

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        if self.unstructural:
            return super().make_optimizer(lr, weight_decay, betas)
        if not self._dense:
            raise RuntimeError("call apply() before make_optimizer()")
        params = dict(self.module.named_parameters())
        names = list(self._dense)
        return MaskedAdamW([params[n] for n in names], [self._dense[n] for n in names],
                           lr=float(self.lr if lr is None else lr), weight_decay=weight_decay,
                           betas=tuple(betas))

    def trainable_parameters(self) -> list[torch.Tensor]:
        if self.unstructural:
            return super().trainable_parameters()
        params = dict(self.module.named_parameters()) if self.module is not None else {}
        return [params[n] for n in self._dense]

    def num_trainable(self) -> int:
        if self.unstructural:
            return super().num_trainable()
        return int(sum(int(i.numel()) for i in self._dense_idx.values()))

    def record(self) -> dict:
        rec = super().record() if self.unstructural else dict(super(SparseMethod, self).record())
        rec.update({"unstructural": self.unstructural, "phase1": dict(self._phase1_info)})
        return rec

    # --- persistence (dense mode; the unstructural mode is SparseMethod's) -------------------------
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        if self.unstructural:
            return super().trained_state_dict()
        params = dict(self.module.named_parameters())
        out = {}
        for n, idx in self._dense_idx.items():
            out[f"indices/{n}"] = idx.cpu().clone()
            out[f"values/{n}"] = read_entries(params[n], idx).cpu().clone()
        return out

    def save_trained(self, path, metadata: dict | None = None) -> None:
        if self.unstructural:
            return super().save_trained(path, metadata)
        return super(SparseMethod, self).save_trained(path, metadata)

    def save_weights(self, run_dir):
        """``delta.safetensors`` in the ``sara.load_sparse`` format (both modes)."""
        if self.unstructural:
            return super().save_weights(run_dir)
        params = dict(self.module.named_parameters())
        entries = {n: (idx, read_entries(params[n], idx)) for n, idx in self._dense_idx.items()}
        return save_sparse_entries(Path(run_dir) / self.weights_name, self.module, entries,
                                   self._dense_w0, {"method": self.name, "knob": self.knob})

    def load_weights(self, denoiser, run_dir, budget=None):
        if self.unstructural:
            return super().load_weights(denoiser, run_dir, budget)
        from pathlib import Path

        from sara.core.checkpoint import read_sparse

        tensors, _ = read_sparse(Path(run_dir) / self.weights_name)
        return self.restore(denoiser, tensors, budget)

    def load_trained(self, path) -> None:
        if self.unstructural:
            return super().load_trained(path)
        return super(SparseMethod, self).load_trained(path)

    @torch.no_grad()
    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.unstructural:
            return super().load_trained_state_dict(state)
        if self.module is None:
            raise RuntimeError(f"{self.name}: call apply() (or restore()) before loading")
        entries = entries_from_state(state)
        params = dict(self.module.named_parameters())
        same = set(entries) == set(self._dense_idx) and all(
            torch.equal(entries[n][0].long().cpu(), self._dense_idx[n].long().cpu()) for n in entries)
        if not same:
            for n, idx in self._dense_idx.items():  # back to W0
                write_entries(params[n], idx, self._dense_w0[n])
            for n in entries:
                if n not in params:
                    raise ValueError(f"{self.name}: checkpoint tensor {n!r} is not in the model")
            self._build_dense(self.module, {n: e[0] for n, e in entries.items()})
        for n, (idx, vals) in entries.items():
            write_entries(params[n], self._dense_idx[n], vals)

    def restore(self, denoiser: nn.Module, state: dict[str, torch.Tensor],
                budget: int | None = None) -> nn.Module:
        if self.unstructural:
            return super().restore(denoiser, state, budget)
        self.module = denoiser
        self.target_params = budget
        self.load_trained_state_dict(state)
        self.k = self.knob_value = self.num_trainable()
        return denoiser

    def merged(self, module: nn.Module) -> nn.Module:
        if self.unstructural:
            return super().merged(module)
        self._remove_hooks()
        freeze(module)
        for p in module.parameters():
            p.grad = None
        return module


def save_sparse_entries(path: str | os.PathLike, model: nn.Module,
                        entries: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                        base_values: Mapping[str, torch.Tensor], metadata: dict | None = None
                        ) -> Path:
    """Write ``{name: (flat indices, trained values)}`` of ``model`` as a sara sparse checkpoint
    (the ``sara.load_sparse`` format), for methods that keep their entries outside sara.core's
    wrapper. ``base_values[name]`` are the base model's values at those entries (the
    fingerprint is taken of the base model, not of the trained one)."""
    from sara.core.checkpoint import FORMAT, _SAMPLE_KEY, write_sparse
    from sara.core.identity import model_fingerprint
    from sara.core.selection import index_dtype

    params = dict(model.named_parameters())
    order = {n: i for i, n in enumerate(params)}
    overrides = {}
    for n, (idx, _) in entries.items():
        idx = idx.long().cpu()
        srt = torch.argsort(idx)
        overrides[n] = (idx[srt], base_values[n].detach().reshape(-1).cpu()[srt])
    fp, base, sample = model_fingerprint(model, overrides)
    tensors, shapes, count = {}, {}, 0
    for n in sorted(entries, key=order.__getitem__):
        idx, vals = entries[n]
        numel = params[n].numel()
        tensors[f"indices/{n}"] = idx.to(index_dtype(numel)).cpu().contiguous().clone()
        tensors[f"values/{n}"] = vals.detach().reshape(-1).cpu().contiguous().clone()
        shapes[n] = list(params[n].shape)
        count += int(idx.numel())
    tensors[_SAMPLE_KEY] = sample.float().contiguous().clone()
    meta = {"format": FORMAT, "threshold": "null", "rule": "checkpoint", "k": json.dumps(count),
            "count": str(count), "active_count": str(count), "compat": "ours",
            "base_fingerprint": fp,
            "base_params": json.dumps([[n, list(s), d] for n, s, d in base]),
            "shapes": json.dumps(shapes)}
    for k, v in (metadata or {}).items():
        meta.setdefault(str(k), v if isinstance(v, str) else json.dumps(v, default=str))
    return write_sparse(path, tensors, meta)
