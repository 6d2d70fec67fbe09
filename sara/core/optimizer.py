"""The one-line SaRA optimizer (SPEC §1.7): ``optimizer = SaRA(model, threshold=2e-3)``.

A :class:`torch.optim.AdamW` over the single flat leaf of selected values, so torch's AdamW
maths (fused/foreach kernels), lr schedulers, ``zero_grad`` and GradScaler work unchanged.
Each :meth:`SaRA.step` adds the rank-loss subgradient, runs AdamW, writes the values into the
model, and at ``progressive_iter`` shrinks the selection to the entries still below θ.

``compat="official"`` reproduces the authors' optimizer (SPEC §1): (a) the weights hold ``|w|``
at the selected entries until the first update (and again right after re-selection), with the
gradient taken through ``abs``; (b) the rank loss is computed and logged but never changes the
values; (c) the re-selection step performs no update and resets the Adam moments and step
count; (d) whole-tensor boolean masks are kept in memory. In both modes the rank-loss
candidates are 2-D weights (conv weights as matrices only with ``rank_conv=True``, ours). Not reproduced: the authors' re-selection also restarts the optimizer's param
groups at the initial lr (only visible with a recursive scheduler) and keeps a dense ``.grad``
from the rank loss (a memory effect only).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .initial import resolve_storage
from .rank_loss import RankLoss
from .sampled_grad import crossover_for
from .selection import ParamSpec, Selection, select
from .sparse import SparseParameters, wrap

COMPAT = ("ours", "official")


#: Largest θ of the grid Eq. 12 was fitted on (paper App., Figs. 21/22: θ from 5e-4 to 1e-2).
EQ12_MAX_THRESHOLD = 1e-2


def lr_from_threshold(threshold: float) -> float:
    """Eq. 12: ``lr(θ) = 1e-3 · exp(-350 θ)``. Warns above θ = 1e-2, the end of the range it was
    fitted on, where it falls fast (θ = 0.05: 2.5e-11) and a run at that rate does not learn."""
    if threshold is None or not float(threshold) > 0:
        raise ValueError(f"threshold must be > 0 to derive a learning rate, got {threshold}")
    lr = 1e-3 * math.exp(-350.0 * float(threshold))
    if float(threshold) > EQ12_MAX_THRESHOLD:
        warnings.warn(f"Eq. 12 at θ = {float(threshold):g} gives lr = {lr:.3g}: it was fitted for θ ≤ "
                      f"{EQ12_MAX_THRESHOLD:g} and a model trained at this rate barely moves; pass the "
                      "learning rate explicitly (SaRA(..., lr=...), method.lr=... or train.lr=...)",
                      stacklevel=2)
    return lr


def _fused_available(t: torch.Tensor) -> bool:
    """Whether torch's fused AdamW kernel takes ``t`` (its device type and dtype)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
        devices = _get_fused_kernels_supported_devices()
    except Exception:  # an older or newer torch without the helper: CUDA only, as before
        devices = ["cuda"]
    return t.is_floating_point() and t.device.type in devices


class SaRA(torch.optim.AdamW):
    """Progressive sparse low-rank fine-tuning as a drop-in replacement for AdamW.

    Args:
        model: any ``nn.Module``; its parameters keep holding the current weights.
        threshold: θ of the selection rule ``|W0| < θ`` (and of the re-selection).
        progressive_iter: step after which the selection shrinks to ``|W_t| < θ``; None = never.
        lambda_rank: weight of the nuclear-norm loss (0 disables it).
        lr: AdamW lr; None = :func:`lr_from_threshold` (Eq. 12).
        params: restrict the scope (regex, names or predicate ``(name, param) -> bool``).
        rule, k, seed: alternative selections (``"smallest"``/``"largest"``/``"random"`` with a
            budget ``k``); ``selection`` passes a ready :class:`Selection` (e.g. from
            :func:`select_from_scores`). Progressive re-selection only applies to threshold-type
            rules (``"threshold"``, ``"smallest"``); it is skipped for the others.
        rank_targets: ``"random"`` (one eligible matrix per step, as the authors) or ``"all"``.
        rank_min_side: eligibility ``min(matrix shape) > rank_min_side``.
        rank_conv: also constrain conv weights viewed as ``[out, in·kh·kw]`` matrices (off: the
            specification and the authors' code constrain 2-D weights only).
        compat: ``"ours"`` or ``"official"`` (see the module docstring).
        sampled_wgrad: linear/conv layers whose trained share of the weight is below this
            density compute their weight gradient at the trained entries only ("auto": below
            the device's measured crossover for the layer's kind, linear/1x1 or kxk conv;
            None: never). Same gradients either way.
        initial_storage: where ``W0`` at the trained entries is kept during training ("auto":
            host memory on an accelerator, a temporary file on CPU; "device"; "host"; "disk").
    """

    def __init__(self, model: nn.Module, threshold: float | None = 2e-3,
                 progressive_iter: int | None = 2500, lambda_rank: float = 5e-4,
                 lr: float | None = None, weight_decay: float = 1e-2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 params: ParamSpec = None, rule: str = "threshold", k: int | None = None,
                 rank_targets: str = "random", rank_min_side: int = 64, compat: str = "ours",
                 seed: int = 0, selection: Selection | None = None, fused: bool | None = None,
                 rank_conv: bool = False, sampled_wgrad: float | str | None = "auto",
                 initial_storage: str = "auto"):
        if compat not in COMPAT:
            raise ValueError(f"compat must be one of {COMPAT}, got {compat!r}")
        if progressive_iter is not None and (isinstance(progressive_iter, bool)
                                             or int(progressive_iter) < 1):
            raise ValueError(f"progressive_iter must be a positive int or None, got "
                             f"{progressive_iter!r}")
        official = compat == "official"
        # Validate the rank-loss options before the model is touched.
        if official and rank_conv:
            raise ValueError("compat='official' constrains 2-D weights only; rank_conv=True "
                             "needs compat='ours'")
        rank = RankLoss(lambda_rank, rank_targets, rank_min_side, seed, conv=rank_conv)
        if selection is None:
            if rule == "threshold" and k is not None:
                raise ValueError("k is a budget for rule='smallest'/'largest'/'random'; "
                                 "rule='threshold' selects with threshold")
            selection = select(model, threshold=threshold, k=k, rule=rule, params=params,
                               seed=seed)
        theta = selection.threshold
        if lr is None:
            lr = lr_from_threshold(theta if theta is not None else threshold)
        crossover_for(next(iter(model.parameters())).device, sampled_wgrad)  # validate first
        resolve_storage(initial_storage, next(iter(model.parameters())).device)
        sparse = wrap(model, selection, abs_init=official, dense_masks=official,
                      sampled_wgrad=sampled_wgrad, initial_storage=initial_storage)
        sparse.meta["compat"] = compat
        if fused is None:
            # One fused kernel over the flat leaf wherever torch has one (CUDA, and CPU since
            # torch 2.4): no k-sized temporaries, and on CPU ~10x faster than the per-tensor
            # loop (50M entries: ~0.09 s instead of ~1 s and 0.37 GiB of temporaries).
            fused = True if _fused_available(sparse.values) else None
        try:
            super().__init__([sparse.values], lr=lr, betas=betas, eps=eps,
                             weight_decay=weight_decay, fused=fused)
        except Exception:
            sparse.detach_from_model(restore_requires_grad=True)
            raise
        # GradScaler must unscale values.grad before step() adds the (unscaled) rank gradient,
        # so take its generic unscale_ -> step path even when the fused kernel could unscale.
        self._step_supports_amp_scaling = False
        self.sparse: SparseParameters = sparse
        self.compat = compat
        self.threshold = theta
        # Re-selection keeps "entries still below θ": only meaningful for threshold-type rules.
        self.progressive_iter = (progressive_iter if selection.rule in ("threshold", "smallest")
                                 else None)
        self.rank = rank
        self.iteration = 0
        self.reselected = False
        self.initial_count = sparse.count()
        self._last_rank = None
        self._grad_reduced = False

    # ---------------------------------------------------------------- properties

    @property
    def model(self) -> nn.Module | None:
        return self.sparse._model

    @property
    def num_trainable(self) -> int:
        """Entries trained from now on (shrinks at re-selection)."""
        return self.sparse.count()

    @property
    def lambda_rank(self) -> float:
        return self.rank.lambda_rank

    @property
    def last_rank_loss(self) -> float | None:
        """``λ Σ ||P||_*`` of the matrices chosen at the last step (None if disabled)."""
        return None if self._last_rank is None else float(self._last_rank)

    @property
    def last_rank_targets(self) -> list[str]:
        return list(self.rank.last_targets)

    # ---------------------------------------------------------------- stepping

    def _progressive_due(self) -> bool:
        return (self.progressive_iter is not None and not self.reselected
                and self.iteration == self.progressive_iter)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sp = self.sparse
        official = self.compat == "official"
        if official and self._progressive_due():
            # (c): the authors re-select at step progressive_iter + 1 and skip its update.
            self._reselect()
            self.iteration += 1
            return loss
        if not self._grad_reduced:
            self.all_reduce_grad()
        self._grad_reduced = False
        self._last_rank = self.rank.step(sp, inert=official)
        updated = sp.values.grad is not None
        super().step()
        if updated:
            sp.abs_pending = False  # (a) ends with the first update
        sp.clear_dense_grads()
        sp.sync()
        self.iteration += 1
        if not official and self._progressive_due():
            self._reselect()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._grad_reduced = False
        super().zero_grad(set_to_none=set_to_none)

    def all_reduce_grad(self) -> None:
        """Average ``values.grad`` across processes (the only gradient synchronised: DDP is told
        to ignore the touched tensors). :meth:`step` does it unless it was called since the last
        step, e.g. by a trainer that clips the averaged gradient first."""
        self._grad_reduced = True
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        g = self.sparse.values.grad
        if world > 1:
            if g is None:  # a rank without a gradient still takes part in the collective
                g = self.sparse.values.grad = torch.zeros_like(self.sparse.values)
            torch.distributed.all_reduce(g)
            g.div_(world)

    @torch.no_grad()
    def _reselect(self) -> None:
        """M' = M ⊙ 1[|W_t| < θ]; moments and step of kept entries carry over (ours) or are
        reset (official)."""
        sp = self.sparse
        old = sp.values
        keep = old.detach().abs().float() < self.threshold
        state = self.state.pop(old, None)
        pos = sp.reselect(keep, abs_init=self.compat == "official")
        new = sp.values
        self.param_groups[0]["params"] = [new]
        if self.compat == "ours" and state:
            self.state[new] = {key: (t[pos] if torch.is_tensor(t) and t.dim() > 0 else t)
                               for key, t in state.items()}
        self.reselected = True

    def reselect_now(self) -> None:
        """Run the progressive re-selection immediately (e.g. from a custom schedule)."""
        self._reselect()

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["sara"] = {
            "version": 1,
            "sparse": self.sparse.state_dict(),
            "iteration": self.iteration,
            "reselected": self.reselected,
            "progressive_iter": self.progressive_iter,
            "threshold": self.threshold,
            "compat": self.compat,
            "initial_count": self.initial_count,
            "rank": self.rank.state_dict(),
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        sara = state_dict.pop("sara", None)
        if sara is not None:
            self._load_sara(sara)
        super().load_state_dict(state_dict)

    def _load_sara(self, sara: dict) -> None:
        from .identity import model_fingerprint

        if sara["compat"] != self.compat:
            raise ValueError(f"state was saved with compat={sara['compat']!r}, this optimizer "
                             f"has compat={self.compat!r}")
        model = self.model
        if model is None:
            raise ValueError("cannot load: the model was merged (no wrapper left)")
        saved = sara["sparse"]
        old = self.sparse
        # Put the model back to what it was when this optimizer was built, then check that the
        # saved run started from the same base (its W0 substitutes the entries it trained).
        old.restore_base()
        overrides = {}
        for n in saved["names"]:
            idx, init = saved["indices"][n].long(), saved["initial"][_slice(saved, n)]
            r = saved["retired"].get(n)
            if r is not None:
                idx = torch.cat([idx, r["indices"].long()])
                init = torch.cat([init, r["initial"]])
                order = torch.argsort(idx)
                idx, init = idx[order], init[order]
            overrides[n] = (idx.cpu(), init.cpu())
        fp, _, _ = model_fingerprint(model, overrides)
        if fp != saved["fingerprint"]:
            old.reapply()
            raise ValueError("optimizer state belongs to another base model: fingerprint "
                             f"{saved['fingerprint'][:16]} != {fp[:16]}")
        old.detach_from_model(restore_requires_grad=True)
        self.sparse = SparseParameters.from_state(model, saved, sampled_wgrad=old.sampled_wgrad,
                                                  initial_storage=old.initial_storage)
        self.param_groups[0]["params"] = [self.sparse.values]
        self.state.clear()
        self.iteration = int(sara["iteration"])
        self.reselected = bool(sara["reselected"])
        self.progressive_iter = sara["progressive_iter"]
        self.threshold = sara["threshold"]
        self.initial_count = int(sara["initial_count"])
        self.rank.load_state_dict(sara["rank"])

    def save_params(self, path=None, metadata: dict | None = None):
        """The paper's API: write only the trained entries (safetensors) to ``path``; without a
        path, return the tensors that would be written."""
        from .checkpoint import save_sparse, sparse_state_dict

        if path is None:
            return sparse_state_dict(self)[0]
        save_sparse(path, self, metadata=metadata)
        return path


def _slice(saved: dict, name: str) -> slice:
    off = 0
    for n in saved["names"]:
        m = int(saved["indices"][n].numel())
        if n == name:
            return slice(off, off + m)
        off += m
    raise KeyError(name)
