"""Which entries of a model are trained (SPEC §1.1, Eq. 2, and the budget/ablation rules).

A :class:`Selection` holds, per parameter tensor, the sorted flat (row-major) indices of the
selected entries. Flat indices are much smaller than whole-model boolean masks at the budgets
the paper uses (5M-50M of 860M entries), and they are stored as int32 where that suffices.

Rules:

* ``"threshold"``: ``|W0| < θ`` (the paper's rule);
* ``"smallest"`` / ``"largest"`` / ``"random"``: exactly ``k`` entries, ranked model-wide;
* :func:`select_from_scores`: the ``k`` largest user scores (LT-SFT, FishMask);
* :func:`select_for_budget`: ``"threshold"`` at the θ for a budget, or exactly ``n`` smallest
  when the budget falls inside a tie at zero (zero-initialised layers).

Model-wide ranking never concatenates the model: a two-pass radix selection over 32-bit
order-preserving keys (one histogram of the top 16 bits, one of the low 16 bits inside the
winning bucket) finds the exact k-th key while holding at most one tensor's keys at a time.
"""
from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

import torch
from torch import Tensor, nn

RULES = ("threshold", "smallest", "largest", "random")

# What ``params`` may be: None (every floating-point parameter), a regex matched against the full
# parameter name, an iterable of exact names, or a predicate ``(name, param) -> bool``.
ParamSpec = Union[None, str, Iterable[str], Callable[[str, nn.Parameter], bool]]

_INT32_LIMIT = 2**31


def index_dtype(numel: int) -> torch.dtype:
    """int32 is enough (and half the memory) for tensors below 2**31 entries."""
    return torch.int32 if numel < _INT32_LIMIT else torch.int64


@dataclass
class Selection:
    """The selected entries of a model: ``indices[name]`` are sorted flat indices into the
    parameter ``name`` (shape ``shapes[name]``). Every tensor in scope has an entry, possibly
    empty, so per-layer statistics cover the whole scope."""

    indices: dict[str, Tensor]
    shapes: dict[str, tuple[int, ...]]
    rule: str = "threshold"
    threshold: float | None = None  # for k-based rules: the effective θ (None if meaningless)
    k: int | None = None
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    def count(self) -> int:
        return sum(int(i.numel()) for i in self.indices.values())

    def total(self) -> int:
        """Number of entries in scope (selected or not)."""
        return sum(_numel(s) for s in self.shapes.values())

    def per_layer_counts(self) -> dict[str, int]:
        return {n: int(i.numel()) for n, i in self.indices.items()}

    def names(self) -> list[str]:
        """Names of tensors with at least one selected entry, in model order."""
        return [n for n, i in self.indices.items() if i.numel() > 0]

    def mask(self, name: str) -> Tensor:
        """Dense boolean mask of one tensor (for inspection; never needed for training)."""
        idx = self.indices[name]
        m = torch.zeros(_numel(self.shapes[name]), dtype=torch.bool, device=idx.device)
        m[idx.long()] = True
        return m.view(self.shapes[name])

    def to(self, device) -> "Selection":
        return Selection({n: i.to(device) for n, i in self.indices.items()}, dict(self.shapes),
                         self.rule, self.threshold, self.k, self.seed, dict(self.meta))

    def __repr__(self) -> str:
        thr = f", threshold={self.threshold:.4g}" if self.threshold is not None else ""
        return (f"Selection(rule={self.rule!r}{thr}, count={self.count()} of {self.total()} "
                f"in {len(self.shapes)} tensors)")


# --------------------------------------------------------------------------------------------
# helpers


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def resolve_params(model: nn.Module, params: ParamSpec = None) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs in scope, in model order (shared tensors once)."""
    named = [(n, p) for n, p in model.named_parameters()
             if p.is_floating_point() and p.numel() > 0]
    if params is None:
        return named
    if isinstance(params, str):
        pat = re.compile(params)
        out = [(n, p) for n, p in named if pat.fullmatch(n)]
        if not out:
            raise ValueError(f"params regex {params!r} matches no parameter of the model "
                             f"(e.g. {', '.join(n for n, _ in named[:3])})")
        return out
    if callable(params):
        out = [(n, p) for n, p in named if params(n, p)]
        if not out:
            raise ValueError("the params predicate accepts no parameter of the model")
        return out
    wanted = list(params)
    if not wanted:
        raise ValueError("params is an empty list: nothing to select from")
    have = dict(named)
    unknown = [n for n in wanted if n not in have]
    if unknown:
        raise ValueError(
            f"unknown parameter names: {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
            f"({len(unknown)} of {len(wanted)}); the model has e.g. "
            f"{', '.join(n for n, _ in named[:3])}")
    wanted_set = set(wanted)
    return [(n, p) for n, p in named if n in wanted_set]


def order_keys(x: Tensor) -> Tensor:
    """Map float values to int64 keys in [0, 2**32) with the same order."""
    b = x.detach().float().contiguous().view(torch.int32).to(torch.int64)
    # IEEE floats order like sign-magnitude ints: flip magnitude bits of negatives.
    b = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return b + 2**31


def key_to_float(key: int) -> float:
    """Inverse of :func:`order_keys` for one key."""
    b = key - 2**31
    if b < 0:
        b ^= 0x7FFFFFFF
    return torch.tensor([b], dtype=torch.int32).view(torch.float32).item()


KeyFn = Callable[[int, str, Tensor], Tensor]  # (position, name, param) -> int64 keys, flat


def _iter_keys(named, key_fn: KeyFn) -> Iterator[tuple[str, Tensor]]:
    for i, (n, p) in enumerate(named):
        yield n, key_fn(i, n, p).reshape(-1)


_CHUNK = 2**24  # entries per histogram call: bounds the transient memory of a pass


def _key_chunks(named, key_fn: KeyFn, transform: Callable[[Tensor], Tensor]) -> Iterator[Tensor]:
    """transform(keys) of consecutive tensors, concatenated up to ``_CHUNK`` entries (small
    tensors share one histogram call; a big tensor goes alone)."""
    buf, size = [], 0
    for _, keys in _iter_keys(named, key_fn):
        buf.append(transform(keys))
        size += keys.numel()
        if size >= _CHUNK:
            yield torch.cat([b.cpu() for b in buf]) if len(buf) > 1 else buf[0]
            buf, size = [], 0
    if buf:
        yield torch.cat([b.cpu() for b in buf]) if len(buf) > 1 else buf[0]


def _histogram(chunks: Iterator[Tensor]) -> Tensor:
    hist = torch.zeros(65536, dtype=torch.int64)
    for c in chunks:
        hist += torch.bincount(c, minlength=65536).cpu()
    return hist


def _kth_key(named, key_fn: KeyFn, k: int) -> tuple[int, int, int]:
    """Exact k-th smallest key (1-based) over all tensors: (key, #keys below it, #keys equal)."""
    hist = _histogram(_key_chunks(named, key_fn, lambda keys: keys >> 16))
    cum = hist.cumsum(0)
    hi = int(torch.searchsorted(cum, torch.tensor([k])).item())
    below = int(cum[hi - 1]) if hi > 0 else 0
    hist2 = _histogram(_key_chunks(named, key_fn,
                                   lambda keys: keys[(keys >> 16) == hi] & 0xFFFF))
    cum2 = hist2.cumsum(0)
    lo = int(torch.searchsorted(cum2, torch.tensor([k - below])).item())
    n_less = below + (int(cum2[lo - 1]) if lo > 0 else 0)
    return (hi << 16) | lo, n_less, int(hist2[lo])


def _select_k(named, key_fn: KeyFn, k: int) -> tuple[dict[str, Tensor], int]:
    """Indices of the k smallest keys, and the k-th key. Ties at the k-th key go to the earliest
    entries in model order, so the count is exactly k."""
    key, n_less, _ = _kth_key(named, key_fn, k)
    ties_left = k - n_less
    out = {}
    for (n, p), (_, keys) in zip(named, _iter_keys(named, key_fn)):
        idx = torch.nonzero(keys < key).squeeze(1)
        if ties_left > 0:
            tie = torch.nonzero(keys == key).squeeze(1)[:ties_left]
            ties_left -= int(tie.numel())
            idx = torch.cat([idx, tie]).sort().values
        out[n] = idx.to(device=p.device, dtype=index_dtype(p.numel()))
    return out, key


def _abs_keys(i: int, n: str, p: Tensor) -> Tensor:
    # |w| >= 0: the float bits already order like ints (same keys as order_keys, fewer copies)
    return p.detach().abs().float().contiguous().view(torch.int32).to(torch.int64) + 2**31


def _neg_abs_keys(i: int, n: str, p: Tensor) -> Tensor:
    return (2**32 - 1) - _abs_keys(i, n, p)


def _random_keys(seed: int) -> KeyFn:
    # One CPU generator per tensor, seeded from (seed, position): the same keys in every pass,
    # on every device.
    def fn(i: int, n: str, p: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return torch.randint(0, 2**32, (p.numel(),), generator=g, dtype=torch.int64)
    return fn


def _next_up(x: float) -> float:
    """Smallest float32 above x: a threshold that admits every entry equal to x."""
    t = torch.tensor(x, dtype=torch.float32)
    return torch.nextafter(t, torch.tensor(float("inf"))).item()


def _check_k(k: int, total: int, what: str = "budget k") -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    if k > total:
        raise ValueError(f"{what}={k:,} is larger than the model: it has only {total:,} "
                         "selectable entries in scope")


# --------------------------------------------------------------------------------------------
# public API


def select(model: nn.Module, threshold: float | None = None, k: int | None = None,
           rule: str | None = None, params: ParamSpec = None, seed: int = 0) -> Selection:
    """Select the entries to train.

    ``rule`` defaults to ``"threshold"`` when ``threshold`` is given and to ``"smallest"`` when
    only ``k`` is. ``"threshold"`` selects ``|W0| < threshold``; the other rules select exactly
    ``k`` entries ranked over the whole scope. ``params`` restricts the scope (regex, names or
    predicate). ``seed`` drives ``"random"``.
    """
    if rule is None:
        rule = "threshold" if threshold is not None or k is None else "smallest"
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; expected one of {RULES}")
    named = resolve_params(model, params)
    shapes = {n: tuple(p.shape) for n, p in named}
    total = sum(p.numel() for _, p in named)

    if rule == "threshold":
        if threshold is None:
            raise ValueError("rule='threshold' needs a threshold (or pass k= for a budget)")
        if k is not None:
            raise ValueError("pass either threshold or k, not both, for rule='threshold'")
        threshold = float(threshold)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        indices = {}
        for n, p in named:
            flat = p.detach().reshape(-1)
            # Compare in float32 so the rule means the same for every storage dtype.
            idx = torch.nonzero(flat.abs().float() < threshold).squeeze(1)
            indices[n] = idx.to(index_dtype(p.numel()))
        count = sum(int(i.numel()) for i in indices.values())
        if count == 0:
            smallest = min(float(p.detach().abs().min()) for _, p in named)
            raise ValueError(f"threshold {threshold:g} selects 0 of {total:,} entries; the "
                             f"smallest |w| is {smallest:.6g}")
        return Selection(indices, shapes, "threshold", threshold, None, None)

    if k is None:
        raise ValueError(f"rule={rule!r} needs a budget k (number of entries)")
    _check_k(k, total)
    k = int(k)
    if rule == "smallest":
        key_fn = _abs_keys
    elif rule == "largest":
        key_fn = _neg_abs_keys
    else:
        key_fn = _random_keys(seed)
    indices, kth = _select_k(named, key_fn, k)
    eff = threshold
    if rule == "smallest":
        # Every selected |w| is <= the k-th value: the effective θ is just above it.
        eff = _next_up(key_to_float(kth))
    return Selection(indices, shapes, rule, eff, k, seed if rule == "random" else None)


def select_from_scores(model: nn.Module, scores: dict[str, Tensor], k: int) -> Selection:
    """The ``k`` entries with the largest scores (ties: earliest in model order). ``scores``
    maps parameter names to tensors of the parameter's shape; the scope is its keys."""
    named_all = dict(resolve_params(model))
    unknown = [n for n in scores if n not in named_all]
    if unknown:
        raise ValueError(f"scores for unknown parameter names: {unknown[:5]}")
    named = [(n, p) for n, p in named_all.items() if n in scores]
    for n, p in named:
        if tuple(scores[n].shape) != tuple(p.shape):
            raise ValueError(f"scores[{n!r}] has shape {tuple(scores[n].shape)} but the "
                             f"parameter has shape {tuple(p.shape)}")
    _check_k(k, sum(p.numel() for _, p in named))

    def key_fn(i: int, n: str, p: Tensor) -> Tensor:
        return (2**32 - 1) - order_keys(scores[n].to(p.device))

    indices, _ = _select_k(named, key_fn, k)
    return Selection(indices, {n: tuple(p.shape) for n, p in named}, "scores", None, k, None)


def _theta_for(key: int, n_less: int, n_eq: int, n: int) -> float:
    """θ whose count ``|w| < θ`` is closest to ``n``, given the n-th smallest |w| (``key``),
    the entries below it and the entries equal to it."""
    v = key_to_float(key)
    up = _next_up(v)
    # θ = v admits n_less entries, θ just above v admits n_less + n_eq.
    if n_less == 0 or (n_less + n_eq - n) <= (n - n_less):
        return up
    return v


def _inside_zeros(key: int, n_less: int, n_eq: int, n: int) -> bool:
    """Whether the n smallest |w| are all exactly 0 and more entries than n are: no θ > 0
    selects n entries then (θ just above 0 selects every zero, θ = 0 none)."""
    return n_less == 0 and n_eq > n and key_to_float(key) == 0.0


def _zeros_report(named, n: int, n_zero: int) -> str:
    per = sorted(((int((p.detach() == 0).sum()), name) for name, p in named), reverse=True)
    shown = ", ".join(f"{name} {c:,}" for c, name in per[:4] if c)
    more = sum(1 for c, _ in per[4:] if c)
    return (f"the {n:,} smallest |w| are all exactly 0: {n_zero:,} entries in scope are exactly 0 "
            f"({shown}{f', and {more} more tensors' if more else ''}): zero-initialised layers or "
            f"biases")


def threshold_for_budget(model: nn.Module, n: int, params: ParamSpec = None) -> float:
    """θ such that ``count(|w| < θ)`` over the scope is as close to ``n`` as the model's values
    allow (exactly ``n`` unless several entries share the n-th value, e.g. zero biases).

    When more than ``n`` entries are exactly 0 no θ > 0 selects ``n``: the θ returned (just above
    0) selects every zero, with a warning; :func:`select_for_budget` selects exactly ``n`` then."""
    named = resolve_params(model, params)
    _check_k(n, sum(p.numel() for _, p in named), "budget n")
    key, n_less, n_eq = _kth_key(named, _abs_keys, n)
    if _inside_zeros(key, n_less, n_eq, n):
        warnings.warn(f"threshold_for_budget: {_zeros_report(named, n, n_eq)}; no θ > 0 selects "
                      f"{n:,} entries, the θ returned selects all {n_eq:,}. For exactly {n:,} use "
                      f"select_for_budget(model, {n}) (the first zeros in model order) or a budget "
                      f"of at least {n_eq:,}.", stacklevel=2)
    return _theta_for(key, n_less, n_eq, n)


def select_for_budget(model: nn.Module, n: int, params: ParamSpec = None) -> Selection:
    """SaRA's selection for a budget of ``n`` entries: ``|W0| < θ`` at the θ of
    :func:`threshold_for_budget` (the same selection, bit for bit, whenever a θ > 0 can give
    the count).

    When more than ``n`` entries are exactly 0 (zero-initialised layers: AnimateDiff's motion
    modules' output projections, ControlNet's zero convolutions, zeroed biases) every θ > 0
    selects all of them; then the ``n`` selected entries are the first ``n`` zeros in model
    order (rule ``"smallest"``, exactly ``n``; ``threshold`` is the smallest float above 0 and
    ``meta["zero_ties"]`` the number of zeros in scope)."""
    named = resolve_params(model, params)
    _check_k(n, sum(p.numel() for _, p in named), "budget n")
    key, n_less, n_eq = _kth_key(named, _abs_keys, n)
    if _inside_zeros(key, n_less, n_eq, n):
        sel = select(model, k=int(n), rule="smallest", params=params)
        sel.meta["zero_ties"] = n_eq
        return sel
    return select(model, threshold=_theta_for(key, n_less, n_eq, n), params=params)
