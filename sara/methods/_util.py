"""Small helpers shared by the method implementations (no Hydra, no diffusers imports)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def resolve_steps(value: int | float | None, total: int, name: str = "steps") -> int:
    """A phase length: ``None`` -> ``total``; a float in (0, 1] -> that fraction of ``total``
    (rounded); an int (or a float > 1) -> that many steps."""
    if value is None:
        return int(total)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and 0 < value <= 1:
        return int(round(value * total))
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def split_batch(batch: Any) -> list[Any]:
    """Split a batch (dict / tuple / list / tensor, first dimension = samples) into single-sample
    batches of the same structure (lists and tensors are sliced, other values shared)."""
    n = _batch_len(batch)
    if n is None:
        return [batch]
    return [_slice(batch, i) for i in range(n)]


def _batch_len(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() > 0 else None
    if isinstance(batch, dict):
        for v in batch.values():
            n = _batch_len(v)
            if n is not None:
                return n
        return None
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(x, str) for x in batch):
            return len(batch)
        for v in batch:
            n = _batch_len(v)
            if n is not None:
                return n
    return None


def _slice(batch: Any, i: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[i:i + 1] if batch.dim() > 0 else batch
    if isinstance(batch, dict):
        return {k: _slice(v, i) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(x, str) for x in batch):
            return type(batch)(batch[i:i + 1])
        return type(batch)(_slice(v, i) for v in batch)
    return batch


def need_ctx(ctx, method: str, what: str) -> tuple:
    """``(loss_fn, batches)`` from a PrepareContext or one clear error."""
    if ctx is None or ctx.loss_fn is None or ctx.batches is None:
        raise ValueError(f"method {method!r} runs a {what} inside apply(): it needs "
                         "ctx=PrepareContext(loss_fn=..., batches=..., steps=...)")
    return ctx.loss_fn, ctx.batches


def phase_steps(ctx, steps: int, desc: str) -> Iterator[int]:
    """``range(steps)`` for a calibration phase inside ``apply``, with a progress bar when the
    trainer shows one (``ctx.extra["progress"]``): such a phase is as long as the training itself."""
    if not (ctx is not None and ctx.extra.get("progress")):
        return iter(range(steps))
    from tqdm.auto import tqdm

    return iter(tqdm(range(steps), desc=desc, dynamic_ncols=True, mininterval=1.0))


def next_batch(batches: Iterator[Any]) -> Any:
    try:
        return next(batches)
    except TypeError:  # an iterable that is not an iterator
        raise TypeError("ctx.batches must be an (endless) iterator of batches")
    except StopIteration:
        raise ValueError("ctx.batches ran out: it must be an endless iterator of training batches")


def spread_indices(n: int, m: int) -> list[int]:
    """``m`` of ``range(n)``, evenly spread over it: ``floor((j + 1/2) n / m)`` for ``j < m``."""
    return [int((2 * j + 1) * n // (2 * m)) for j in range(m)]


def spread_subset(sizes: list[int], amount: int, max_size: int | None = None) -> list[int]:
    """The indices of an evenly spread subset of ``sizes`` (:func:`spread_indices` of ``m``
    items, ``m = 0 .. max_size``) whose sizes sum nearest to ``amount``; on a tie the smaller
    subset. Deterministic: it depends on the sizes and their order only."""
    n = len(sizes)
    top = n if max_size is None else min(n, max_size)
    best, best_m = abs(amount), 0
    for m in range(1, top + 1):
        err = abs(sum(sizes[i] for i in spread_indices(n, m)) - amount)
        if err < best:
            best, best_m = err, m
    return spread_indices(n, best_m) if best_m else []


def per_module_int_knob(target: int, consts: list[int], per_units: list[int],
                        lo: int = 1) -> tuple[int, list[int]]:
    """Per-module integer knobs that fill ``target``: module ``i`` counts
    ``consts[i] + per_units[i] * u_i``. Every module gets the base value ``u`` (the largest
    ``u >= lo`` whose total stays at or under ``target``; ``lo`` when even that is over) and an
    evenly spread subset of modules gets ``u + 1``, the subset whose extra count brings the total
    nearest to ``target`` (every module: ``u + 1`` is the base). Returns ``(u, indices of the
    modules at u + 1)``."""
    per = sum(per_units)
    if per <= 0:
        raise ValueError("the method's knob does not change its parameter count (no target modules?)")
    const = sum(consts)
    u = max(lo, (int(target) - const) // per)
    rest = int(target) - (const + per * u)
    up = spread_subset(per_units, rest) if rest > 0 else []
    return (u + 1, []) if len(up) == len(per_units) else (u, up)  # all at u + 1: that is the base


def check_int_pattern(pattern: Any, method: str, attr: str, lo: int = 1) -> dict[str, int]:
    """A per-module knob (``rank_pattern``, ``bottleneck_pattern``) as a plain
    ``{module name: integer >= lo}`` dict (None -> {}), or one clear error."""
    if pattern is None:
        return {}
    if not hasattr(pattern, "items"):
        raise ValueError(f"{method}: {attr} must map module names to integers, got {pattern!r}")
    out = {}
    for k, v in pattern.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or int(v) < lo:
            raise ValueError(f"{method}: {attr}[{k!r}] must be an integer >= {lo}, got {v!r}")
        out[str(k)] = int(v)
    return out


def reject_nonfinite(loss: torch.Tensor, method: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{method}: non-finite loss {loss.item()} at calibration step {step}")


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a finished temporary folder to ``final`` (replacing an older one)."""
    import os
    import shutil

    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
