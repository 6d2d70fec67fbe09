"""Sparse-delta checkpoints (SPEC §1.7-1.9): only the trained entries and their indices.

File layout (safetensors): ``indices/<name>`` (sorted flat int32/int64) and ``values/<name>``
for every tensor with trained entries (retired ones included), ``__sara__/base_sample`` (the
base-model value sample behind the fingerprint). Metadata: ``format``, ``threshold``, ``rule``,
``k``, ``count``, ``active_count``, ``compat``, ``base_fingerprint``, ``base_params`` (JSON list
of [name, shape, dtype]), ``shapes`` (JSON of the stored tensors), plus user metadata.

Loading onto a base model: ``W[idx] = lerp(W0[idx], values, α)`` (App. F, Eq. 9; α=1 gives the
values and α=0 the base, exactly); merging: ``W = W0 + Σ β_i (values_i - W0)`` (App. G, Eq. 10).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from sara.io import atomic_save_safetensors

from .identity import base_params as _base_params
from .identity import model_fingerprint, sample_positions, sample_tolerance
from .selection import index_dtype
from .sparse import SparseParameters, get_sparse, read_entries, write_entries

FORMAT = "sara-sparse/1"
_SAMPLE_KEY = "__sara__/base_sample"
Source = Union[str, os.PathLike, dict]


def _as_sparse(source) -> SparseParameters:
    if isinstance(source, SparseParameters):
        return source
    sp = getattr(source, "sparse", None)  # the SaRA optimizer
    if isinstance(sp, SparseParameters):
        return sp
    if isinstance(source, nn.Module):
        sp = get_sparse(source)
        if sp is not None:
            return sp
    raise ValueError(f"expected SparseParameters, a SaRA optimizer or a wrapped model, got "
                     f"{type(source).__name__}")


def sparse_state_dict(source, metadata: dict | None = None
                      ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint, without writing it."""
    sp = _as_sparse(source)
    tensors: dict[str, Tensor] = {}
    shapes = {}
    count = 0
    for n, (idx, vals, _) in sp.trained_entries(effective=True).items():
        numel = 1
        for s in sp.shapes[n]:
            numel *= s
        # clone: safetensors refuses views sharing one storage
        tensors[f"indices/{n}"] = idx.to(index_dtype(numel)).cpu().clone()
        tensors[f"values/{n}"] = vals.detach().cpu().clone()
        shapes[n] = list(sp.shapes[n])
        count += int(idx.numel())
    tensors[_SAMPLE_KEY] = sp.base_sample.detach().float().cpu().clone()
    m = sp.meta
    meta = {
        "format": FORMAT,
        "threshold": json.dumps(m.get("threshold")),
        "rule": str(m.get("rule")),
        "k": json.dumps(m.get("k")),
        "count": str(count),
        "active_count": str(sp.count()),
        "compat": str(m.get("compat", "ours")),
        "base_fingerprint": sp.fingerprint,
        "base_params": json.dumps([[n, list(s), d] for n, s, d in sp.base_params]),
        "shapes": json.dumps(shapes),
    }
    for key, v in (metadata or {}).items():
        if key in meta:
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[str(key)] = v if isinstance(v, str) else json.dumps(v)
    return tensors, meta


def save_sparse(path, source, metadata: dict | None = None) -> Path:
    """Write the trained entries of ``source`` (SparseParameters, SaRA or wrapped model) to
    ``path`` (atomically)."""
    return write_sparse(path, *sparse_state_dict(source, metadata))


def write_sparse(path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write a ``(tensors, metadata)`` pair of this format to ``path`` (atomically)."""
    return atomic_save_safetensors(tensors, path, metadata=metadata)


def read_sparse(source: Source, metadata: dict | None = None
                ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) from a path or from a ``sparse_state_dict`` pair."""
    if isinstance(source, dict):
        if metadata is None:
            raise ValueError("loading from a dict of tensors needs its metadata")
        return source, metadata
    path = str(source)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    return load_file(path), meta


def _check(model: nn.Module, tensors: dict[str, Tensor], meta: dict[str, str],
           check_base: bool, where: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Validate a checkpoint against ``model``; return name -> (indices, values)."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where} is not a sara sparse checkpoint (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    if get_sparse(model) is not None:
        raise ValueError("the model is wrapped by sara; load checkpoints onto a plain model "
                         "(call sara.merge(model) first)")
    params = dict(model.named_parameters())
    shapes = json.loads(meta["shapes"])
    entries = {}
    for n, shape in shapes.items():
        if n not in params:
            raise ValueError(f"{where}: tensor {n!r} (shape {tuple(shape)}) is not in the model")
        if tuple(params[n].shape) != tuple(shape):
            raise ValueError(f"{where}: tensor {n!r} has shape {tuple(shape)} in the checkpoint "
                             f"but {tuple(params[n].shape)} in the model")
        idx, vals = tensors[f"indices/{n}"], tensors[f"values/{n}"]
        if idx.numel() != vals.numel() or (idx.numel() and int(idx.max()) >= params[n].numel()):
            raise ValueError(f"{where}: corrupt entries for tensor {n!r}")
        entries[n] = (idx, vals)
    if check_base:
        _check_base(model, tensors, meta, entries, where)
    return entries


def _check_base(model, tensors, meta, entries, where) -> None:
    saved = [(n, tuple(s), d) for n, s, d in json.loads(meta["base_params"])]
    here = _base_params(model)
    saved_shapes = {n: s for n, s, _ in saved}
    here_shapes = {n: s for n, s, _ in here}
    for n, s in saved_shapes.items():
        if n not in here_shapes:
            raise ValueError(f"{where} was made for another base model: its tensor {n!r} "
                             f"(shape {s}) is not in this model")
        if here_shapes[n] != s:
            raise ValueError(f"{where} was made for another base model: tensor {n!r} has shape "
                             f"{s} in the checkpoint's base but {here_shapes[n]} in this model")
    extra = [n for n in here_shapes if n not in saved_shapes]
    if extra:
        raise ValueError(f"{where} was made for another base model: this model has "
                         f"{len(extra)} tensors the checkpoint's base lacks, e.g. {extra[0]!r}")
    fp, _, sample = model_fingerprint(model)
    if fp == meta["base_fingerprint"]:
        return
    # Not the exact base: compare the sample, skipping entries the checkpoint itself writes
    # (they may hold an earlier load) and allowing for a base stored in another dtype.
    ref = tensors[_SAMPLE_KEY].float()
    off = 0
    params = dict(model.named_parameters())
    order = [n for n, _, _ in saved]  # the sample is in the checkpoint's base order
    here_off = {}
    o = 0
    for n, s, _ in here:
        m = int(sample_positions(_prod(s)).numel())
        here_off[n] = (o, o + m)
        o += m
    for n in order:
        pos = sample_positions(_prod(saved_shapes[n]))
        a, b = here_off[n]
        x, y = sample[a:b], ref[off:off + pos.numel()]
        off += pos.numel()
        ok = torch.isclose(x, y, rtol=sample_tolerance(params[n].dtype), atol=0)
        if n in entries:
            ok |= torch.isin(pos, entries[n][0].long().cpu())
        if not bool(ok.all()):
            j = int(torch.nonzero(~ok)[0])
            raise ValueError(
                f"{where} was made for another base model (fingerprint "
                f"{meta['base_fingerprint'][:16]} != {fp[:16]}): {n}[{int(pos[j])}] is "
                f"{float(x[j]):.6g} in this model but {float(y[j]):.6g} in the checkpoint's base")


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@torch.no_grad()
def load_sparse(model: nn.Module, source: Source, alpha: float = 1.0, *,
                metadata: dict | None = None, check_base: bool = True) -> dict[str, str]:
    """Write a checkpoint onto a (plain) base model, scaled by ``alpha`` (App. F):
    ``W[idx] = lerp(W0[idx], values, alpha)``. Returns the checkpoint's metadata."""
    tensors, meta = read_sparse(source, metadata)
    where = f"checkpoint {source}" if not isinstance(source, dict) else "checkpoint"
    entries = _check(model, tensors, meta, check_base, where)
    params = dict(model.named_parameters())
    alpha = float(alpha)
    for n, (idx, vals) in entries.items():
        w = params[n]
        if alpha == 0.0:
            continue
        vals = vals.to(device=w.device, dtype=w.dtype)
        if alpha != 1.0:
            vals = torch.lerp(read_entries(w, idx), vals, alpha)
        write_entries(w, idx, vals)
    return meta


@torch.no_grad()
def merge_sparse(model: nn.Module, items: Iterable[tuple[Source, float]], *,
                 check_base: bool = True) -> nn.Module:
    """``W = W0 + Σ β_i (values_i - W0)`` for checkpoints trained from the same base (App. G).
    All deltas are taken against the model as it is on entry."""
    items = list(items)
    if not items:
        raise ValueError("merge_sparse needs at least one (checkpoint, beta) pair")
    params = dict(model.named_parameters())
    loaded = []
    for src, beta in items:
        tensors, meta = read_sparse(src)
        entries = _check(model, tensors, meta, check_base, f"checkpoint {src}")
        loaded.append((entries, float(beta)))
    # Read every base entry before writing anything (the checkpoints' indices may overlap).
    deltas = []
    for entries, beta in loaded:
        for n, (idx, vals) in entries.items():
            w0 = read_entries(params[n], idx).float()
            deltas.append((n, idx, beta * (vals.to(w0.device).float() - w0)))
    for n, idx, d in deltas:
        w = params[n]
        write_entries(w, idx, read_entries(w, idx).float() + d)
    return model
