"""Unstructural backpropagation (SPEC §1.5, Sec. 4.4, Eq. 6-7).

The selected entries of every tensor live in ONE flat leaf ``values`` (the only thing an
optimizer sees). The model keeps its own parameters, which always hold the current weights, so
it stays an ordinary module (``state_dict``, ``.to()``, ``eval()``, ``no_grad`` sampling).

Gradient path: tensors with selected entries keep ``requires_grad=True``; a post-accumulate-grad
hook on each moves ``W.grad[idx]`` into ``values.grad`` and drops ``W.grad`` right away, so one
dense gradient exists only transiently (one tensor at a time) and none persists. Every other
tensor is frozen and never gets a ``.grad`` (except a normalisation layer's frozen weight or bias
whose partner trains: its gradient is dropped at once, :mod:`sara.core.norms`). Layers below the
``sampled_wgrad`` density skip the dense gradient altogether (:mod:`sara.core.sampled_grad`).
DDP is told to ignore every touched tensor; the optimizer averages ``values.grad`` itself.

Value path: ``sync()`` writes ``values`` into the weights in place (O(k)); the SaRA optimizer
calls it after each step, and a forward pre-hook on the root model calls it whenever ``values``
changed since the last sync (so any optimizer works without an extra call).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from .identity import model_fingerprint
from .initial import InitialStore, resolve_storage
from .norms import affine_partners, drop_grad
from .sampled_grad import SampledLayer, crossover_for, supports
from .selection import Selection, index_dtype

_ATTR = "_sara_sparse"


# --------------------------------------------------------------------------------------------
# flat reads/writes at logical (row-major) positions, whatever the strides


def read_entries(t: Tensor, idx: Tensor) -> Tensor:
    t = t.detach()
    if t.is_contiguous():
        return t.view(-1).index_select(0, idx.to(t.device))
    return t[torch.unravel_index(idx.to(t.device).long(), t.shape)]


@torch.no_grad()
def write_entries(t: Tensor, idx: Tensor, vals: Tensor) -> None:
    t = t.detach()
    vals = vals.to(device=t.device, dtype=t.dtype)
    idx = idx.to(t.device)
    if t.is_contiguous():
        # index_copy_ wants int64 indices; the transient copy still makes it ~1.7x faster on
        # CPU than index_put_ with the stored int32 ones (the per-step sync's cost)
        t.view(-1).index_copy_(0, idx.long(), vals)
    else:
        t.index_put_(torch.unravel_index(idx.long(), t.shape), vals)


def _common_dtype(dtypes) -> torch.dtype:
    dtypes = set(dtypes)
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


class SparseParameters:
    """The trained entries of a wrapped model (build it with :func:`wrap`).

    Attributes: ``values`` (the flat leaf ``nn.Parameter``), ``initial`` (``W0`` at the selected
    entries, for deltas; None with ``keep_initial=False``), ``indices[name]`` (sorted flat
    indices), ``names`` (tensors with entries, model order), ``retired`` (entries dropped by
    :meth:`reselect`: they keep the value they had, and still count as trained for checkpoints
    and deltas), ``fingerprint`` (base-model identity, computed before anything was written).
    """

    def __init__(self, model: nn.Module, indices: dict[str, Tensor], *, keep_initial: bool = True,
                 abs_init: bool = False, dense_masks: bool = False, values: Tensor | None = None,
                 initial: Tensor | None = None, retired: dict | None = None,
                 fingerprint: tuple[str, list, Tensor] | None = None, meta: dict | None = None,
                 sampled_wgrad: float | str | None = "auto", initial_storage: str = "auto"):
        if getattr(model, _ATTR, None) is not None:
            raise ValueError("model is already wrapped by sara; call sara.merge(model) first")
        params = dict(model.named_parameters())
        for n, idx in indices.items():
            if n not in params:
                raise ValueError(f"selection names parameter {n!r}, which the model does not have")
            if idx.numel() and int(idx.max()) >= params[n].numel():
                raise ValueError(f"selection index {int(idx.max())} out of range for {n!r} "
                                 f"of shape {tuple(params[n].shape)}")
        retired = retired or {}
        # Tensors with active entries, or with retired ones only (after a re-selection).
        order = [n for n in params
                 if (n in indices and indices[n].numel() > 0) or n in retired]
        devices = {params[n].device for n in order}
        if len(devices) > 1:
            raise ValueError(f"selected tensors lie on several devices {sorted(map(str, devices))}; "
                             "move the model to one device before wrapping")
        device = devices.pop() if devices else torch.device("cpu")

        self._model = model
        self._params = {n: params[n] for n in order}
        self.names: list[str] = order
        self.shapes = {n: tuple(params[n].shape) for n in order}
        self.indices = {n: indices.get(n, torch.zeros(0, dtype=torch.int64)).to(
            device=device, dtype=index_dtype(params[n].numel())) for n in order}
        self.meta = dict(meta or {})
        self.abs_pending = False
        self.retired: dict[str, dict[str, Tensor]] = {}
        self._index_cache: dict[tuple[str, torch.device], Tensor] = {}
        self._handles: list = []
        self._sampled: dict[str, SampledLayer] = {}
        self.sampled_wgrad = sampled_wgrad
        self._set_slices()

        # Identity first, before anything is written into the model.
        self.fingerprint, self.base_params, self.base_sample = (
            fingerprint if fingerprint is not None else model_fingerprint(model))

        dtype = _common_dtype(params[n].dtype for n in order) if order else torch.float32
        if values is None:
            parts = [read_entries(params[n], self.indices[n]) for n in order]
            values = torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)
        self.values = nn.Parameter(values.detach().to(device=device, dtype=dtype).clone())
        self.initial_storage = resolve_storage(initial_storage, device)
        if initial is None and keep_initial:
            initial = self.values.detach()
        self.initial = initial
        if retired:
            self.retired = {n: {k: v.to(device) for k, v in r.items()} for n, r in retired.items()}
            for n, r in self.retired.items():
                write_entries(params[n], r["indices"], r["values"])
        # Boolean whole-tensor masks, kept only to reproduce the official memory footprint.
        self.dense_masks = ({n: self.mask(n) for n in order} if dense_masks else None)

        self.abs_pending = bool(abs_init)
        self._synced_version = None
        self.sync()
        self._attach(model)

    # ---------------------------------------------------------------- W0

    @property
    def initial(self) -> Tensor | None:
        """``W0`` at the active entries (flat, on the values' device), or None. Kept where
        ``initial_storage`` says (:mod:`sara.core.initial`): read it once per use."""
        return None if self._initial is None else self._initial.get()

    @initial.setter
    def initial(self, t: Tensor | None) -> None:
        self._initial = (None if t is None else
                         InitialStore(t, self.initial_storage, self.values.device))

    @property
    def initial_device_bytes(self) -> int:
        """Bytes ``W0`` takes in the training device's memory."""
        return 0 if self._initial is None else self._initial.device_bytes

    # ---------------------------------------------------------------- life cycle

    def _set_slices(self) -> None:
        self._slices, off = {}, 0
        for n in self.names:
            m = int(self.indices[n].numel())
            self._slices[n] = slice(off, off + m)
            off += m

    def _attach(self, model: nn.Module) -> None:
        self._orig_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(n in self._params and self.count(n) > 0)
        self._param_handles = {}
        for n in self.names:
            if self.count(n) > 0:
                self._param_handles[n] = self._params[n].register_post_accumulate_grad_hook(
                    functools.partial(self._accumulate, n))
        self._partner_handles: dict[str, object] = {}
        self._pair_norm_affines(model)
        self._install_sampled(model)
        self._hide_from_ddp(model)
        self._handles = [model.register_forward_pre_hook(self._pre_forward),
                         model.register_state_dict_pre_hook(self._pre_state_dict),
                         model.register_load_state_dict_post_hook(self._post_load)]
        object.__setattr__(model, _ATTR, self)

    def _pair_norm_affines(self, model: nn.Module) -> None:
        """A trained weight or bias of a normalisation layer makes its frozen partner require
        grad, its gradient dropped at once (see :mod:`sara.core.norms`); re-run after the set of
        trained tensors changes."""
        params = dict(model.named_parameters())
        for n, h in self._partner_handles.items():
            h.remove()
            params[n].requires_grad_(False)
            params[n].grad = None
        trained = {n for n in self.names if self.count(n) > 0}
        partners = affine_partners(model, trained)
        for p in partners.values():
            p.requires_grad_(True)
        self._partner_handles = {n: p.register_post_accumulate_grad_hook(drop_grad)
                                 for n, p in partners.items()}

    def _hide_from_ddp(self, model: nn.Module) -> None:
        """Tell ``DistributedDataParallel`` to leave the tensors this object trains alone (its
        ignore list, read when DDP wraps the model): DDP would keep a dense gradient bucket the
        size of every touched tensor and all-reduce it, although only ``values.grad`` is used,
        and the optimizer all-reduces that once (:meth:`SaRA.step`). A model with nothing else
        to train needs no DDP wrapper at all."""
        mine = set(self._params) | set(self._partner_handles)
        other = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ())) - getattr(
            self, "_ddp_ignored", set())
        self._ddp_ignored = mine
        model._ddp_params_and_buffers_to_ignore = sorted(other | mine)

    def _install_sampled(self, model: nn.Module) -> None:
        """Route every linear/conv layer whose trained share of the weight is below the
        crossover density through :class:`~sara.core.sampled_grad.SampledWeightGrad` (weight
        gradient at the trained entries only); re-run after the selection changes."""
        self._uninstall_sampled()
        for prefix, mod in model.named_modules():
            name = f"{prefix}.weight" if prefix else "weight"
            if name not in self._params or self.count(name) == 0 or not supports(mod):
                continue
            if self.count(name) / mod.weight.numel() >= crossover_for(
                    self.values.device, self.sampled_wgrad, mod):
                continue
            layer = SampledLayer(mod, self.indices[name], functools.partial(self._add_grad, name))
            mod.forward = layer.forward  # instance attribute: nn.Module.__call__ uses it
            self._sampled[name] = layer

    def _uninstall_sampled(self) -> None:
        for layer in self._sampled.values():
            layer.module.__dict__.pop("forward", None)
        self._sampled = {}

    @property
    def sampled_layers(self) -> list[str]:
        """Weights whose gradient is computed at the trained entries only."""
        return list(self._sampled)

    @property
    def attached(self) -> bool:
        return self._model is not None

    def detach_from_model(self, restore_requires_grad: bool = False) -> nn.Module:
        """Sync, remove every hook and the wrapper attribute; freeze all parameters (or restore
        the flags they had before wrapping). Returns the plain model."""
        model = self._model
        if model is None:
            raise ValueError("these sparse parameters are not attached to a model any more")
        self.sync()
        self._uninstall_sampled()
        for h in (list(self._param_handles.values()) + list(self._partner_handles.values())
                  + self._handles):
            h.remove()
        self._param_handles, self._partner_handles, self._handles = {}, {}, []
        left = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ())) - self._ddp_ignored
        if left:
            model._ddp_params_and_buffers_to_ignore = sorted(left)
        else:
            model.__dict__.pop("_ddp_params_and_buffers_to_ignore", None)
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(self._orig_requires_grad.get(n, False) if restore_requires_grad
                             else False)
        if model.__dict__.get(_ATTR) is self:
            del model.__dict__[_ATTR]
        self._model = None
        return model

    @torch.no_grad()
    def restore_base(self) -> None:
        """Write ``W0`` back into every trained entry (active and retired)."""
        init = self.initial
        if init is None:
            raise ValueError("restore_base needs keep_initial=True")
        for n in self.names:
            write_entries(self._params[n], self.indices[n], init[self._slices[n]])
        for n, r in self.retired.items():
            write_entries(self._params[n], r["indices"], r["initial"])
        self._synced_version = None

    @torch.no_grad()
    def reapply(self) -> None:
        """Write every trained entry (retired and active) into the model again."""
        for n, r in self.retired.items():
            write_entries(self._params[n], r["indices"], r["values"])
        self.sync()

    # ---------------------------------------------------------------- hooks

    def _index(self, name: str, device: torch.device) -> Tensor:
        idx = self.indices[name]
        if idx.device == device:
            return idx
        key = (name, device)
        if key not in self._index_cache:
            self._index_cache[key] = idx.to(device)
        return self._index_cache[key]

    def _accumulate(self, name: str, w: Tensor) -> None:
        g = w.grad
        if g is None:
            return
        w.grad = None  # the dense gradient never outlives this hook
        self._add_grad(name, read_entries(g, self._index(name, g.device)))

    def _add_grad(self, name: str, part: Tensor) -> None:
        """``values.grad[slice(name)] += part`` (the gradient at ``name``'s trained entries)."""
        part = part.to(self.values.device, self.values.dtype)
        s = self._slices[name]
        if self.abs_pending:  # weights hold |values|: chain rule through abs
            part = part * torch.sgn(self.values.detach()[s])
        if self.values.grad is None:
            self.values.grad = torch.zeros_like(self.values)
        self.values.grad[s].add_(part)

    def _pre_forward(self, module, args):
        self.maybe_sync()

    def _pre_state_dict(self, module, prefix, keep_vars):
        self.maybe_sync()

    def _post_load(self, module, incompatible_keys):
        self.pull()

    @torch.no_grad()
    def pull(self) -> None:
        """Read the model's weights back into the values (after ``model.load_state_dict`` on
        a wrapped model, so the loaded weights are what trains on)."""
        parts = [read_entries(self._params[n], self.indices[n]) for n in self.names]
        if parts:
            self.values.copy_(torch.cat(parts).to(self.values.dtype))
        for n, r in self.retired.items():
            r["values"] = read_entries(self._params[n], r["indices"]).to(r["values"].dtype)
        self.abs_pending = False
        self._synced_version = self.values._version

    # ---------------------------------------------------------------- values <-> weights

    @torch.no_grad()
    def sync(self) -> None:
        """Write the trained values into the model's weights (in place, O(k))."""
        v = self.values.detach()
        if self.abs_pending:
            v = v.abs()
        for n in self.names:
            p = self._params[n]
            write_entries(p, self._index(n, p.device), v[self._slices[n]])
        self._synced_version = self.values._version

    def clear_dense_grads(self) -> None:
        """Drop any dense ``.grad`` of the selected tensors (DDP writes its all-reduced bucket
        back into them after our hook ran; SaRA does not need it)."""
        for p in self._params.values():
            p.grad = None

    def maybe_sync(self) -> None:
        if self.values._version != self._synced_version:
            self.sync()

    def reselect(self, keep: Tensor, abs_init: bool = False) -> Tensor:
        """Shrink the selection to ``values[keep]`` (a new leaf). Dropped entries keep their
        current value in the model and move to :attr:`retired`. Returns the kept positions
        (int64) so an optimizer can carry its state over."""
        keep = keep.to(self.values.device).bool().reshape(-1)
        if keep.numel() != self.values.numel():
            raise ValueError(f"keep has {keep.numel()} entries, values has {self.values.numel()}")
        self.sync()
        pos = torch.nonzero(keep).squeeze(1)
        old_v = self.values.detach()
        old_init = self.initial
        new_indices = {}
        for n in self.names:
            s = self._slices[n]
            k = keep[s]
            idx = self.indices[n]
            drop = ~k
            if bool(drop.any()):
                self._retire(n, idx[drop], old_v[s][drop],
                             old_init[s][drop] if old_init is not None else None)
            new_indices[n] = idx[k]
        self.indices = new_indices
        self._index_cache.clear()
        self._set_slices()
        self.values = nn.Parameter(old_v[pos].clone())
        if old_init is not None:
            self.initial = old_init[pos].clone()
        if self.dense_masks is not None:
            self.dense_masks = {n: self.mask(n) for n in self.names}
        # Tensors left without entries are frozen like the rest.
        for n in self.names:
            if self.count(n) == 0 and n in self._param_handles:
                self._param_handles.pop(n).remove()
                self._params[n].requires_grad_(False)
                self._params[n].grad = None
        self._pair_norm_affines(self._model)
        self._install_sampled(self._model)
        self._hide_from_ddp(self._model)
        self.abs_pending = bool(abs_init)
        self._synced_version = None
        self.sync()
        return pos

    def _retire(self, name: str, idx: Tensor, vals: Tensor, init: Tensor | None) -> None:
        r = self.retired.get(name)
        if r is None:
            r = {"indices": idx, "values": vals.clone()}
            if init is not None:
                r["initial"] = init.clone()
        else:
            cat_idx = torch.cat([r["indices"], idx])
            order = torch.argsort(cat_idx)
            r = {"indices": cat_idx[order], "values": torch.cat([r["values"], vals])[order]}
            if init is not None and "initial" in self.retired[name]:
                r["initial"] = torch.cat([self.retired[name]["initial"], init])[order]
        self.retired[name] = r

    # ---------------------------------------------------------------- inspection

    def count(self, name: str | None = None) -> int:
        """Trained (active) entries, in total or of one tensor."""
        if name is None:
            return int(self.values.numel())
        return int(self.indices[name].numel()) if name in self.indices else 0

    def parameters(self) -> list[nn.Parameter]:
        """What to hand to an optimizer or to ``clip_grad_norm_``."""
        return [self.values]

    def mask(self, name: str) -> Tensor:
        m = torch.zeros(self.shapes[name], dtype=torch.bool, device=self.values.device)
        m.view(-1)[self.indices[name].long()] = True
        return m

    def slice(self, name: str) -> slice:
        return self._slices[name]

    def param(self, name: str) -> nn.Parameter:
        return self._params[name]

    def trained_entries(self, name: str | None = None, effective: bool = False
                        ) -> dict[str, tuple[Tensor, Tensor, Tensor | None]]:
        """Every entry ever trained (active + retired), per tensor: (sorted int64 indices,
        current values, initial values or None). With ``effective`` the values are what the
        weights hold (``|values|`` while an official-compat abs write is pending)."""
        out = {}
        v = self.values.detach()
        if effective and self.abs_pending:
            v = v.abs()
        init_all = self.initial
        for n in self.names if name is None else [name]:
            s = self._slices[n]
            idx, vals = self.indices[n].long(), v[s]
            init = init_all[s] if init_all is not None else None
            r = self.retired.get(n)
            if r is not None:
                cat_idx = torch.cat([idx, r["indices"].long()])
                order = torch.argsort(cat_idx)
                idx = cat_idx[order]
                vals = torch.cat([vals, r["values"]])[order]
                if init is not None and "initial" in r:
                    init = torch.cat([init, r["initial"]])[order]
                else:
                    init = None
            out[n] = (idx, vals, init)
        return out

    def per_layer_counts(self) -> dict[str, int]:
        """Selected (active) entries per tensor, in model order."""
        return {n: self.count(n) for n in self.names}

    def delta(self, dense: bool = True) -> dict[str, Tensor]:
        """Learned change ``W_t - W0`` per tensor (every entry ever trained, retired ones included):
        dense tensors of the parameter's shape, or sparse COO tensors with ``dense=False``."""
        if self.initial is None:
            raise ValueError("delta needs the initial values (wrap with keep_initial=True)")
        out = {}
        for n, (idx, vals, init) in self.trained_entries().items():
            d = (vals - init).float()
            shape = self.shapes[n]
            if dense:
                t = torch.zeros(shape, dtype=torch.float32, device=d.device)
                t.view(-1)[idx] = d
                out[n] = t
            else:
                coords = torch.stack(torch.unravel_index(idx, shape))
                out[n] = torch.sparse_coo_tensor(coords, d, shape, is_coalesced=True,
                                                 check_invariants=True)
        return out

    def share_below(self, theta: float) -> float:
        """Share of the initial selection (every entry ever trained) whose current |value| < θ."""
        below = total = 0
        for _, (idx, vals, _) in self.trained_entries().items():
            below += int((vals.detach().abs().float() < theta).sum())
            total += int(idx.numel())
        return below / total if total else float("nan")

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict:
        """Everything needed to rebuild this object on a model (see :meth:`from_state`)."""
        return {
            "names": list(self.names),
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "indices": {n: self.indices[n] for n in self.names},
            "values": self.values.detach(),
            "initial": self.initial,
            "retired": {n: dict(r) for n, r in self.retired.items()},
            "abs_pending": self.abs_pending,
            "fingerprint": self.fingerprint,
            "base_params": [[n, list(s), d] for n, s, d in self.base_params],
            "base_sample": self.base_sample,
            "meta": dict(self.meta),
            "dense_masks": self.dense_masks is not None,
        }

    @classmethod
    def from_state(cls, model: nn.Module, state: dict,
                   sampled_wgrad: float | str | None = "auto",
                   initial_storage: str = "auto") -> "SparseParameters":
        params = dict(model.named_parameters())
        for n, shape in state["shapes"].items():
            if n not in params:
                raise ValueError(f"state has tensor {n!r}, which the model does not have")
            if tuple(params[n].shape) != tuple(shape):
                raise ValueError(f"tensor {n!r}: state shape {tuple(shape)} but model shape "
                                 f"{tuple(params[n].shape)}")
        fp = (state["fingerprint"], [(n, tuple(s), d) for n, s, d in state["base_params"]],
              state["base_sample"])
        sp = cls(model, dict(state["indices"]), values=state["values"], initial=state["initial"],
                 retired=state["retired"], fingerprint=fp, meta=state.get("meta"),
                 keep_initial=state["initial"] is not None,
                 dense_masks=state.get("dense_masks", False), abs_init=state["abs_pending"],
                 sampled_wgrad=sampled_wgrad, initial_storage=initial_storage)
        return sp

    def __repr__(self) -> str:
        return (f"SparseParameters(count={self.count()}, tensors={len(self.names)}, "
                f"dtype={self.values.dtype}, device={self.values.device}, "
                f"attached={self.attached})")


def wrap(model: nn.Module, selection: Selection, keep_initial: bool = True, *,
         abs_init: bool = False, dense_masks: bool = False,
         sampled_wgrad: float | str | None = "auto",
         initial_storage: str = "auto") -> SparseParameters:
    """Make ``model`` train only the selected entries; returns their :class:`SparseParameters`.

    ``abs_init`` and ``dense_masks`` reproduce the authors' optimizer (``compat="official"``):
    the weights hold ``|values|`` until the next sync after an update, and whole-tensor boolean
    masks are kept in memory. ``sampled_wgrad``: linear/conv layers whose trained share is below
    this density get their weight gradient at the trained entries only ("auto": the device's
    measured crossover for the layer's kind, :data:`~sara.core.sampled_grad.CROSSOVER_DENSITY`;
    None: never).
    ``initial_storage``: where ``W0`` at the trained entries is kept ("auto": host memory on an
    accelerator, a temporary file on CPU; "device", "host", "disk"; :mod:`sara.core.initial`).
    """
    if selection.count() == 0:
        raise ValueError("the selection is empty: nothing to train")
    meta = {"rule": selection.rule, "threshold": selection.threshold, "k": selection.k,
            "seed": selection.seed}
    return SparseParameters(model, selection.indices, keep_initial=keep_initial,
                            abs_init=abs_init, dense_masks=dense_masks, meta=meta,
                            sampled_wgrad=sampled_wgrad, initial_storage=initial_storage)


def get_sparse(model: nn.Module) -> SparseParameters | None:
    """The :class:`SparseParameters` wrapping ``model``, if any."""
    return model.__dict__.get(_ATTR)


def merge(model: nn.Module, restore_requires_grad: bool = False) -> nn.Module:
    """Return ``model`` as a plain module with the learned values in place: every hook removed,
    no wrapper attribute left, all parameters frozen (or, with ``restore_requires_grad``, back
    to the flags they had before wrapping). A plain model is returned unchanged."""
    sp = get_sparse(model)
    if sp is None:
        return model
    return sp.detach_from_model(restore_requires_grad)
