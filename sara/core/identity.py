"""Base-model identity: a fingerprint that tells whether sparse values belong to a model.

The fingerprint is a sha256 over the sorted (name, shape, dtype) of every floating-point
parameter plus a deterministic sample of their values (``SAMPLE_PER_TENSOR`` evenly spaced
entries per tensor, read as float32). The sample itself is kept too, so that a checkpoint can
be checked against a model whose dtype differs (fp16 sampling of an fp32-trained delta) with a
tolerance instead of an exact hash.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

SAMPLE_PER_TENSOR = 8


def sample_positions(numel: int) -> Tensor:
    """Evenly spaced flat positions (first and last included), the same for every model."""
    m = min(SAMPLE_PER_TENSOR, numel)
    return torch.linspace(0, numel - 1, m, dtype=torch.float64).round().long().unique()


def base_params(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every floating-point parameter, in model order."""
    return [(n, tuple(p.shape), str(p.dtype).replace("torch.", ""))
            for n, p in model.named_parameters() if p.is_floating_point() and p.numel() > 0]


def base_sample(model: nn.Module, overrides: dict[str, tuple[Tensor, Tensor]] | None = None
                ) -> Tensor:
    """Concatenated float32 samples in model order. ``overrides[name] = (sorted flat indices,
    values)`` substitutes the base values of entries the model no longer holds (trained)."""
    parts = []
    for n, p in model.named_parameters():
        if not p.is_floating_point() or p.numel() == 0:
            continue
        pos = sample_positions(p.numel())
        vals = p.detach().reshape(-1)[pos.to(p.device)].float().cpu()
        if overrides and n in overrides:
            idx, init = overrides[n]
            idx = idx.long().cpu()
            if idx.numel():
                at = torch.searchsorted(idx, pos).clamp(max=idx.numel() - 1)
                hit = idx[at] == pos
                vals[hit] = init.detach().float().cpu()[at[hit]]
        parts.append(vals)
    return torch.cat(parts) if parts else torch.zeros(0)


def fingerprint_of(params: list[tuple[str, tuple[int, ...], str]], sample: Tensor) -> str:
    """sha256 over the sorted structure and the sample (independent of parameter order)."""
    offsets, off = {}, 0
    for n, shape, _ in params:
        m = int(sample_positions(_prod(shape)).numel())
        offsets[n] = (off, off + m)
        off += m
    h = hashlib.sha256()
    s = sample.detach().float().cpu().contiguous()
    for n, shape, dtype in sorted(params):
        h.update(f"{n}|{list(shape)}|{dtype}\n".encode())
        a, b = offsets[n]
        h.update(s[a:b].numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: nn.Module, overrides=None) -> tuple[str, list, Tensor]:
    params = base_params(model)
    sample = base_sample(model, overrides)
    return fingerprint_of(params, sample), params, sample


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def sample_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for comparing samples of a base stored in another dtype."""
    if dtype in (torch.float16,):
        return 1e-3
    if dtype in (torch.bfloat16,):
        return 8e-3
    return 1e-6
