"""Floating-point precision names, parsed in one place: weight dtypes (``float32`` / ``fp16`` /
``bf16`` ...), the half precision a CUDA device runs best, and the autocast dtype of sampling."""
from __future__ import annotations

from typing import Any

import torch

#: Names of weight / autocast dtypes in configs (None and ``auto``: leave as is).
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, None: None,
          "auto": None}

#: Autocast settings of ``eval.autocast`` besides ``auto``.
AUTOCAST = {"none": None, "no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(d: Any) -> torch.dtype | None:
    """A dtype from a config value (a ``torch.dtype``, a name of :data:`DTYPES` or None)."""
    if isinstance(d, torch.dtype) or d is None:
        return d
    return DTYPES[str(d).lower()]


def cuda_half_precision() -> str:
    """``bf16`` where the CUDA device supports it, else ``fp16``."""
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_dtype(name: str | None, device: Any) -> torch.dtype | None:
    """The autocast dtype of ``eval.autocast`` on ``device``: ``auto`` = the CUDA half precision
    (none on a CPU), ``none`` / ``no`` = none, ``fp16`` / ``bf16``."""
    name = (name or "none").lower()
    if name == "auto":
        if getattr(device, "type", str(device)) != "cuda":
            return None
        return AUTOCAST[cuda_half_precision()]
    if name not in AUTOCAST:
        raise ValueError(f"eval.autocast: expected auto, none, fp16 or bf16, got {name!r}")
    return AUTOCAST[name]
