"""A run's trained weights outside the suite: where they are, how they are read back, and safe
loading of training checkpoints.

Every finished training run holds its weights next to ``result.json`` in the format of the
ecosystem the method belongs to (``method.weights_name``, written by ``method.save_weights``):

==========================  ============================  ==========================================
methods                     file / folder                 read with
==========================  ============================  ==========================================
SaRA, ablations, LT-SFT,    ``delta.safetensors``         ``sara.load_sparse(plain_unet, path)``
DiffPruning, FishMask
LoRA, DoRA, SHiRA,          ``adapter/`` (peft)           ``PeftModel.from_pretrained(unet, path)``
Super-Tuning
AdaptFormer                 ``adaptformer.safetensors``   ``AdaptFormer().load_weights(unet, run)``
full fine-tuning            ``denoiser/`` (diffusers)     ``UNet2DConditionModel.from_pretrained``
==========================  ============================  ==========================================

Nothing here unpickles arbitrary objects: weights are safetensors, and the resumable training
checkpoint (``checkpoint/state.pt``) is read with ``torch.load(weights_only=True)``
(:func:`load_checkpoint_file`), which refuses a pickle that would run code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

RESULT_FILE = "result.json"


class CorruptCheckpointError(RuntimeError):
    """A training checkpoint that cannot be read (torn, foreign, or holding code)."""


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """A training checkpoint's contents, read with ``weights_only=True`` (tensors, numbers,
    strings and containers only). Any failure names the file and the two ways out."""
    path = Path(path)
    try:
        # numpy's array constructors are data only: checkpoints written before the RNG state was
        # stored as tensors hold numpy's state as an array
        with torch.serialization.safe_globals(_numpy_globals()):
            st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torn file, foreign pickle, unsafe global
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CorruptCheckpointError(
            f"cannot read the training checkpoint {path} ({type(e).__name__}: {first[:200]}); "
            "delete it, or rerun with train.resume=false (start training again, keep the run "
            "directory) or overwrite=true (clear the run directory)") from None
    if not isinstance(st, dict):
        raise CorruptCheckpointError(f"{path} is not a training checkpoint of this suite "
                                     "(set train.resume=false or overwrite=true)")
    return st


def _numpy_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def run_record(run_dir: str | os.PathLike) -> dict:
    """The complete ``result.json`` of a run directory (a clear error otherwise)."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir}: no {RESULT_FILE} (the run has not finished)")
    rec = json.loads(p.read_text(encoding="utf-8"))
    if rec.get("status") != "complete" or not isinstance(rec.get("config"), dict):
        raise ValueError(f"{p} is not the record of a complete run")
    return rec


def method_of(config: Mapping) -> Any:
    """The (unapplied) method object of a run's resolved config."""
    import hydra.utils

    return hydra.utils.instantiate(dict(config["method"]), _convert_="all")


def trained_denoiser(run_dir: str | os.PathLike, denoiser: nn.Module,
                     config: Mapping | None = None, budget: int | None = None
                     ) -> tuple[nn.Module, Any]:
    """``(module, method)``: ``denoiser`` (the base model, consumed) with the run's trained
    weights, merged into plain weights where the method can be merged (all but AdaptFormer)."""
    rec = None
    if config is None or budget is None:
        rec = run_record(run_dir)
        config = config or rec["config"]
        budget = rec.get("target_params") if budget is None else budget
    method = method_of(config)
    module = method.load_weights(denoiser, run_dir, budget=budget)
    return method.merged(module), method


def read_run_weights(run_dir: str | os.PathLike) -> dict:
    """What another run needs of a finished run's trained weights (``delta.source``):
    ``{"path", "sparse", "tensors", "meta", "method", "config", "record"}``; a sparse delta's
    tensors and metadata are read from ``delta.safetensors``, other methods' weights are read
    when they are applied (:meth:`Method.load_weights`)."""
    rec = run_record(run_dir)
    method = method_of(rec["config"])
    path = Path(run_dir) / method.weights_name
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: the run finished but wrote no trained weights "
                                f"({path} is missing; runs with train.steps=0 train nothing)")
    from sara.methods.selective import SparseMethod

    sparse = isinstance(method, SparseMethod)
    tensors, meta = None, None
    if sparse:
        from sara.core.checkpoint import read_sparse

        tensors, meta = read_sparse(path)
    return {"path": str(path), "sparse": sparse, "tensors": tensors, "meta": meta,
            "method": getattr(method, "name", None), "config": rec["config"], "record": rec}


def backfill(run_dir: str | os.PathLike) -> Path:
    """Write the weights file of a finished run made before runs wrote one, from its training
    checkpoint (read with ``weights_only=True``)."""
    from sara.backbones import load_backbone

    rec = run_record(run_dir)
    method = method_of(rec["config"])
    path = Path(run_dir) / method.weights_name
    if path.exists():
        return path
    ckpt = Path(run_dir) / "checkpoint" / "state.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: no weights file and no training checkpoint ({ckpt}): "
                                "the run trained nothing (train.steps=0)")
    st = load_checkpoint_file(ckpt)
    backbone = load_backbone(rec["config"]["backbone"])
    method.restore(backbone.denoiser, st["trained"], budget=rec.get("target_params"))
    return method.save_weights(run_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m sara.weights RUN_DIR ...``: write the weights file of finished runs that have
    none (runs made before the suite wrote them)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m sara.weights", description=main.__doc__)
    ap.add_argument("run_dirs", nargs="+")
    args = ap.parse_args(argv)
    status = 0
    for d in args.run_dirs:
        try:
            print(f"{d}: {backfill(d)}")
        except (OSError, ValueError, RuntimeError) as e:
            print(f"{d}: error: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
