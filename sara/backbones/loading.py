"""Resolving ``backbone.pretrained`` and loading diffusers/transformers components from it.

Everything goes through ``from_pretrained(model_id_or_local_path, subfolder=...)``. A local folder
is read with ``local_files_only=True``; a model id is read from the Hugging Face cache only when
``HF_HUB_OFFLINE=1`` (or ``backbone.local_files_only=true``), else the cache is tried first and the
Hub second. Any failure raises one :class:`MissingWeightsError` that says what to do.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

#: what a diffusers-format folder holds, per backbone kind (shown in the error message)
LAYOUTS = {
    "tiny": "model_index.json, unet/, text_encoder/, tokenizer/, scheduler/ (no vae: pixel space)",
    "stable_diffusion": "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/",
    "sdxl": "model_index.json, unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/",
    "sd3": "model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/, text_encoder_3/ (T5; optional with "
           "backbone.drop_t5=true), tokenizer/, tokenizer_2/, tokenizer_3/, scheduler/",
}


class MissingWeightsError(RuntimeError):
    """The backbone's weights are not available (offline, not cached, or a wrong local path)."""


def hub_offline() -> bool:
    v = os.environ.get("HF_HUB_OFFLINE", "")
    if v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:  # the value huggingface_hub read at import time
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def looks_like_model_id(source: str) -> bool:
    return bool(_MODEL_ID.match(source)) and not os.path.exists(source)


def missing_weights_message(cfg: dict, source: str, subfolder: str | None, reason: str) -> str:
    name = cfg.get("name") or cfg.get("kind")
    model_id = cfg.get("model_id") or (source if looks_like_model_id(source) else None)
    kind = cfg.get("kind", "stable_diffusion")
    stem = (model_id or "model").split("/")[-1]
    local = f"/path/to/{stem}"
    what = f"local path {source!r}" if not looks_like_model_id(source) else f"model id {source!r}"
    lines = [
        f"Cannot load the weights of backbone '{name}' from {what}"
        + (f" (component '{subfolder}/')" if subfolder else "") + f": {reason}",
    ]
    if looks_like_model_id(source) and source != cfg.get("model_id"):
        lines.append(f"(If {source!r} is meant as a local folder: there is no such folder here.)")
    if model_id:
        lines.append(f"Model id: {model_id}" + ("  [HF_HUB_OFFLINE=1: only the local cache is read]" if hub_offline() else ""))
    lines += [
        f"Point the config at a local copy: backbone.pretrained={local}   (e.g. python run.py backbone={name} "
        f"backbone.pretrained={local})",
        f"Expected folder layout (diffusers format, as on the Hub): {local}/{LAYOUTS.get(kind, LAYOUTS['stable_diffusion'])}"
        ", each model subfolder with config.json + *.safetensors.",
    ]
    if model_id:
        gated = " (gated model: run `hf auth login` and accept its licence on the Hub first)" if cfg.get("gated") else ""
        lines.append(f"To get it, on a machine with internet{gated}: huggingface-cli download {model_id} --local-dir {local} "
                     f"(or: hf download {model_id} --local-dir {local}), then copy the folder here.")
    return "\n".join(lines)


def resolve_source(cfg: dict) -> str:
    src = cfg.get("pretrained") or cfg.get("model_id")
    if not src:
        raise MissingWeightsError(f"backbone '{cfg.get('name')}': neither backbone.pretrained nor backbone.model_id is set")
    src = os.path.expanduser(str(src))
    if not looks_like_model_id(src) and not Path(src).is_dir():
        raise MissingWeightsError(missing_weights_message(cfg, src, None, "the folder does not exist"))
    return src


def zoo_source(cfg: dict, root: Path, parts, command: str) -> str:
    """The folder of a backbone whose weights ship in the zoo: ``cfg["pretrained"]`` when set, else
    ``root``. A missing part raises :class:`MissingWeightsError` naming ``command``, the
    pre-training that writes ``root``."""
    src = cfg.get("pretrained") or str(root)
    missing = [d for d in parts if not (Path(src) / d).is_dir()]
    if not missing:
        return src
    name = cfg.get("world") or cfg.get("name")
    gone = ", ".join(m + "/" for m in missing)
    layout = ", ".join(p + "/" for p in parts)
    if cfg.get("pretrained"):
        raise MissingWeightsError(f"{name} backbone: backbone.pretrained={src} has no {gone} folder; expected a "
                                  f"diffusers folder with {layout}")
    what = "are not there yet" if len(missing) == len(parts) else f"are incomplete (no {gone})"
    raise MissingWeightsError(f"{name} backbone: the weights in {src} {what}. Pre-train them with {command}, "
                              "or set backbone.pretrained=/path/to/folder (a diffusers folder of this backbone).")


def load_component(cls, cfg: dict, source: str, subfolder: str | None, *, is_transformers: bool = False,
                   dtype=None, **kw):
    """``cls.from_pretrained(source, subfolder=subfolder)`` with the offline rules above."""
    local = not looks_like_model_id(source)
    if local and subfolder and not (Path(source) / subfolder).is_dir():
        raise MissingWeightsError(missing_weights_message(cfg, source, subfolder, f"there is no '{subfolder}/' folder in it"))
    only_local = local or hub_offline() or bool(cfg.get("local_files_only"))
    args = dict(kw)
    if cfg.get("revision") and not local:
        args["revision"] = cfg["revision"]
    if cfg.get("variant") and "Tokenizer" not in getattr(cls, "__name__", ""):
        args["variant"] = cfg["variant"]  # e.g. fp16: *.fp16.safetensors (diffusers and transformers models)
    if dtype is not None:
        args["dtype" if is_transformers else "torch_dtype"] = dtype
    if subfolder:
        args["subfolder"] = subfolder
    attempts = [True] if only_local else [True, False]  # cache first, then the Hub
    err = None
    for local_only in attempts:
        try:
            return cls.from_pretrained(source, local_files_only=local_only, **args)
        except Exception as e:  # OSError, EnvironmentError, HF errors, ValueError ...
            err = e
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    if not local and only_local:
        reason = "not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1). " + reason
    raise MissingWeightsError(missing_weights_message(cfg, source, subfolder, reason)) from err
