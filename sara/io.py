"""Files written so that a kill at any moment leaves either the old or the new one, never a torn
one; strict JSON; a lock for folders that parallel jobs share.

Every writer goes through a temporary name in the same folder and ``os.replace`` (files:
:func:`atomic_write_bytes` and the helpers built on it; folders: :func:`atomic_dir`). The lowest
layer of the package: it imports nothing from ``sara``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays, tensors, paths, sets, OmegaConf containers
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(o, (DictConfig, ListConfig)):
            return OmegaConf.to_container(o, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "tolist"):  # numpy / torch
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return repr(o)


def _sanitize(o: Any) -> Any:
    """Replace non-finite floats by None so the file is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _sanitize(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_sanitize(v) for v in o]
    return o


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data: paths, tensors, arrays and configs converted, NaN/inf -> None."""
    return _sanitize(json.loads(json.dumps(obj, default=_json_default)))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Strict JSON (:func:`to_jsonable`) of ``obj``, atomically, with a final newline."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to memory, then :func:`atomic_write_bytes`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_safetensors(tensors: dict, path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> Path:
    """``safetensors`` serialisation of ``tensors`` (+ ``metadata``), written atomically."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final``; on success swap it in (an old
    ``final`` is moved aside first, then deleted), on error delete it and leave ``final`` as it
    was::

        with atomic_dir(out / "BarbieCore") as tmp:
            (tmp / "0000.png").write_bytes(...)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.parent / f".{final.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{tag}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; a no-op where unavailable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
