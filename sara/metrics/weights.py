"""Where evaluator weights live, and the error raised when they are missing.

Real-model evaluators (Stable Diffusion runs) are never downloaded implicitly: each is looked up,
in order, at

1. the explicit path passed by the caller (``eval.<metric>.weights`` in the Hydra config),
2. an environment variable (below),
3. ``$SARA_WEIGHTS_DIR/<folder>`` (``SARA_WEIGHTS_DIR`` defaults to ``~/.cache/sara/weights``),
4. for Inception only, clean-fid's own download location (``/tmp/inception-2015-12-05.pt``).

When none exists, :class:`MissingWeightsError` names the model to download, a command that does
it, and every place it may go. The embedded world's evaluators ship in ``sara/zoo/evaluators``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MissingWeightsError", "RealWeights", "REAL", "weights_dir", "resolve_real", "zoo_evaluators_dir"]


class MissingWeightsError(FileNotFoundError):
    """An evaluator's weights are not on this machine; the message says what to fetch and where."""


@dataclass(frozen=True)
class RealWeights:
    key: str  # short name used in messages
    what: str  # human description
    model_id: str  # what to download
    folder: str  # default folder (or file) name under $SARA_WEIGHTS_DIR
    env: str  # environment variable holding a path
    config_key: str  # Hydra config key holding a path
    download: str  # a command that fetches it
    is_file: bool = False  # a single file rather than a folder
    extra_locations: tuple[str, ...] = ()


REAL: dict[str, RealWeights] = {
    "inception": RealWeights(
        key="inception",
        what="FID Inception-V3 (clean-fid's TorchScript port of the TF-Inception used by FID)",
        model_id="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        folder="inception-2015-12-05.pt",
        env="SARA_INCEPTION_PATH",
        config_key="eval.fid.weights",
        download="wget -P {dir} https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        is_file=True,
        extra_locations=("/tmp/inception-2015-12-05.pt",),
    ),
    "clip": RealWeights(
        key="clip",
        what="CLIP ViT-L/14 (OpenAI weights, open_clip 'ViT-L-14' / 'openai'), the paper's CLIP-score model",
        model_id="hf-hub:timm/vit_large_patch14_clip_224.openai (open_clip ViT-L-14, pretrained='openai')",
        folder="clip-vit-large-patch14",
        env="SARA_CLIP_PATH",
        config_key="eval.clip_score.weights",
        download=(
            "huggingface-cli download timm/vit_large_patch14_clip_224.openai --local-dir {path}  "
            "(or put OpenAI's ViT-L-14.pt from "
            "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt "
            "into that folder)"
        ),
    ),
    "blip_vqa": RealWeights(
        key="blip_vqa",
        what="BLIP VQA (T2I-CompBench's B-VQA model), transformers BlipForQuestionAnswering",
        model_id="Salesforce/blip-vqa-base",
        folder="blip-vqa-base",
        env="SARA_BLIP_VQA_PATH",
        config_key="eval.bvqa.weights",
        download="huggingface-cli download Salesforce/blip-vqa-base --local-dir {path}",
    ),
}


def weights_dir() -> Path:
    return Path(os.environ.get("SARA_WEIGHTS_DIR", Path.home() / ".cache" / "sara" / "weights")).expanduser()


def _usable(p: Path, is_file: bool) -> bool:
    if is_file:
        return p.is_file()
    return p.is_dir() and any(p.iterdir())


def resolve_real(key: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of a real evaluator's weights (file or folder), or :class:`MissingWeightsError`."""
    spec = REAL[key]
    tried: list[str] = []
    if explicit:
        p = Path(explicit).expanduser()
        if _usable(p, spec.is_file):
            return p
        tried.append(f"{p} (given as {spec.config_key})")
    env = os.environ.get(spec.env)
    if env:
        p = Path(env).expanduser()
        if _usable(p, spec.is_file):
            return p
        tried.append(f"{p} (from ${spec.env})")
    default = weights_dir() / spec.folder
    if _usable(default, spec.is_file):
        return default
    tried.append(str(default))
    for extra in spec.extra_locations:
        if _usable(Path(extra), spec.is_file):
            return Path(extra)
        tried.append(extra)
    target = Path(explicit).expanduser() if explicit else default
    cmd = spec.download.format(dir=target.parent, path=target)
    raise MissingWeightsError(
        f"{spec.what}: weights not found (this suite never downloads them implicitly).\n"
        f"  Download: {spec.model_id}\n"
        f"  e.g.:     {cmd}\n"
        f"  Put it at {default}, or point the config key `{spec.config_key}=PATH` or the environment "
        f"variable {spec.env}=PATH at it (SARA_WEIGHTS_DIR moves the default folder).\n"
        f"  Looked in: {', '.join(tried)}.\n"
        f"  For the embedded (tiny) world use evaluators=embedded, which needs no download."
    )


def zoo_evaluators_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "zoo" / "evaluators"


def require_zoo_file(name: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root) if root is not None else zoo_evaluators_dir()
    p = root / name
    if not p.exists():
        raise MissingWeightsError(
            f"embedded evaluator '{name}' not found at {p}. The embedded world's evaluators are shipped in "
            f"sara/zoo/evaluators/; regenerate them with `python scripts/train_evaluators.py` "
            f"(see sara/zoo/evaluators/manifest.json for the exact command)."
        )
    return p
