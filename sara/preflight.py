"""Checks a run makes before anything heavy (no torch, no hub call): the config's required
values, settings outside their meaning, and whether the backbone's weights are on this machine.

Each problem raises a :class:`UsageError` whose message is one short paragraph naming the setting
and the fix; ``run.py`` prints it on stderr without a traceback and exits with status 2.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

#: a budget.params between these is neither a share of the denoiser nor a plausible count
_SHARE_MAX, _COUNT_MIN = 1.0, 1000.0


#: backbone kinds whose weights come from a diffusers folder or the Hugging Face Hub
HUB_KINDS = ("tiny", "stable_diffusion", "sd", "sd15", "sd2", "sdxl", "sd3")


class UsageError(ValueError):
    """A setting the run cannot use; the message says which and what to do."""


def check_config(cfg: Any) -> None:
    """Required values and settings outside their meaning (``cfg``: the composed config, a
    DictConfig whose ``???`` values are still unresolved, or a plain dict)."""
    _check_data_name(cfg)
    plain = _plain(cfg)
    _check_budget(plain.get("budget"))
    _check_eval(plain.get("eval") or {})


def _check_data_name(cfg: Any) -> None:
    data = cfg.get("data") if hasattr(cfg, "get") else None
    if data is None:
        raise UsageError("no data group: choose one, e.g. data=style data.name=BarbieCore")
    try:
        from omegaconf import DictConfig, OmegaConf

        missing = isinstance(data, DictConfig) and OmegaConf.is_missing(data, "name")
    except ImportError:  # pragma: no cover
        missing = False
    if missing or data.get("name") in (None, "", "???"):
        kind = data.get("kind", "style")
        example = ("data.name=BarbieCore (BarbieCore | Cyberpunk | ElementFire | Expedition | "
                   "Hornify)" if kind == "style" else "data.name=<folder under data.root>")
        raise UsageError(f"data.name is not set (data.kind={kind}): add {example}")


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def _check_budget(budget: Mapping | None) -> None:
    if not budget or budget.get("params") is None:
        return
    raw = budget["params"]
    from sara.budget import parse_budget

    try:
        v = parse_budget(raw)
    except ValueError as e:
        raise UsageError(f"budget.params={raw!r}: {e}") from None
    ref = budget.get("reference_params")
    if v is None:
        return
    if v <= 0 or (_SHARE_MAX < v < _COUNT_MIN and ref):
        raise UsageError(
            f"budget.params={raw!r} is outside both of its meanings: a number in (0, 1] is a "
            f"share of the denoiser (0.01 = 1%), a number >= {_COUNT_MIN:g} a count of trainable "
            f"parameters at the scale of budget.reference_params={ref} (5e6 = the paper's 5M)")


def _check_eval(ecfg: Mapping) -> None:
    metrics = list(ecfg.get("metrics") or [])
    n = int(ecfg.get("num_prompts") or 0)
    if metrics and n <= 0:
        raise UsageError(f"eval.metrics={metrics} needs sampled images but eval.num_prompts={n}: "
                         "set eval.num_prompts > 0, or eval.metrics=[] to train without metrics")


# --- weights --------------------------------------------------------------------------------------
def stamp_weights_id(plain: dict) -> None:
    """Set ``backbone.weights_id`` (:func:`sara.backbones.factory.weights_id`) in a plain run config,
    so the stale-run check and the results tables tell runs on re-trained embedded weights apart."""
    if isinstance(plain.get("backbone"), dict):
        from sara.backbones.factory import weights_id

        plain["backbone"]["weights_id"] = weights_id(plain["backbone"])


def check_weights(bcfg: Mapping) -> None:
    """The backbone's weights are a local folder or in the Hugging Face cache (no network).
    Downloading is opt-in: ``backbone.local_files_only=false``."""
    kind = bcfg.get("kind", "stable_diffusion")
    src = bcfg.get("pretrained") or bcfg.get("model_id")
    name = bcfg.get("name") or kind
    if kind not in HUB_KINDS or ((kind == "tiny" or bcfg.get("world")) and not bcfg.get("pretrained")):
        return  # weights shipped in sara/zoo (the loader reports a missing zoo folder), stand-ins
    if not src:
        raise UsageError(f"backbone '{name}': set backbone.pretrained to a local diffusers folder")
    src = os.path.expanduser(str(src))
    if Path(src).is_dir():
        if not (Path(src) / "model_index.json").is_file():
            raise UsageError(f"backbone.pretrained={src} has no model_index.json: point it at a "
                             "diffusers-format folder (model_index.json, unet/, text_encoder/, ...)")
        return
    from sara.backbones.loading import hub_offline, looks_like_model_id

    if not looks_like_model_id(src):
        raise UsageError(f"backbone.pretrained={src}: no such folder; point it at a local copy of "
                         f"the weights (diffusers format)")
    if _in_hf_cache(src, bcfg.get("revision")):
        return
    if bcfg.get("local_files_only") is False and not hub_offline():
        return  # explicitly allowed to download
    local = f"/path/to/{src.split('/')[-1]}"
    raise UsageError(
        f"backbone '{name}': the weights of {src} are not on this machine (no local folder, not "
        f"in the Hugging Face cache{'; HF_HUB_OFFLINE=1' if hub_offline() else ''}). Download "
        f"them (`hf download {src} --local-dir {local}`) and set backbone.pretrained={local}"
        + ("" if hub_offline() else ", or let the run download them: backbone.local_files_only=false"))


def _in_hf_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    hit = try_to_load_from_cache(repo_id, "model_index.json", revision=revision)
    return isinstance(hit, str) and os.path.isfile(hit)
