"""Where ``W0`` at the trained entries is kept while training (``SparseParameters.initial``).

``W0`` is read only off the training path: for deltas, checkpoints, ``restore_base`` and the
exact-resume check, never by a step. Keeping it beside the values costs 4 bytes per trained
entry of the memory that bounds the batch size (0.19 GiB at SD 1.5's 50M budget), so by default
it lives where it does not count: on the host for an accelerator, in a temporary file for a CPU
run (the page cache, not the process, holds it). ``"device"`` keeps the old behaviour.
"""
from __future__ import annotations

import copy
import os
import tempfile
import weakref

import torch
from torch import Tensor

STORAGES = ("auto", "device", "host", "disk")


def resolve_storage(storage: str, device: torch.device) -> str:
    if storage not in STORAGES:
        raise ValueError(f"initial_storage must be one of {STORAGES}, got {storage!r}")
    if storage != "auto":
        return storage
    return "disk" if torch.device(device).type == "cpu" else "host"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class InitialStore:
    """One flat tensor kept on the device, on the host or in a temporary file; :meth:`get`
    returns it on ``device`` (a fresh read for ``"disk"``)."""

    def __init__(self, tensor: Tensor, storage: str, device: torch.device):
        self.storage, self.device = storage, torch.device(device)
        self.shape, self.dtype = tuple(tensor.shape), tensor.dtype
        t = tensor.detach()
        self._tensor, self._path = None, None
        if storage == "device":
            self._tensor = t.to(self.device).clone()
        elif storage == "host":
            t = t.to("cpu").clone()
            if self.device.type == "cuda" and torch.cuda.is_available():
                t = t.pin_memory()
            self._tensor = t
        else:
            fd, self._path = tempfile.mkstemp(prefix="sara_w0_", suffix=".pt")
            os.close(fd)
            self._finalizer = weakref.finalize(self, _remove, self._path)
            torch.save(t.to("cpu").contiguous(), self._path)

    def get(self) -> Tensor:
        if self._path is not None:
            return torch.load(self._path, map_location=self.device, weights_only=True)
        return self._tensor.to(self.device, non_blocking=False)

    @property
    def device_bytes(self) -> int:
        """Bytes it occupies in the training device's memory (0 unless ``"device"``, or
        ``"host"`` on a CPU run)."""
        if self._tensor is None or self._tensor.device != self.device:
            return 0
        return self._tensor.numel() * self._tensor.element_size()

    def __deepcopy__(self, memo):
        return InitialStore(self.get(), self.storage, self.device)

    def __reduce__(self):
        return (InitialStore, (self.get(), self.storage, self.device))

    def __copy__(self):
        return copy.deepcopy(self)
