"""Where and with what a run was made: package versions, git commit, device, peak memory (measured
here and only here), timestamps, and the optional wandb run."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

#: The repository holding the suite (git commit of the record; conf/ of the commands it prints).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Packages whose versions go into every result record.
RECORDED_PACKAGES = (
    "sara-repro", "torch", "torchvision", "diffusers", "transformers", "accelerate", "peft",
    "hydra-core", "omegaconf", "numpy", "safetensors", "clean-fid", "open_clip_torch",
    "torchmetrics", "pillow", "scipy", "pandas", "wandb",
)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def git_info(repo: str | os.PathLike = REPO_ROOT) -> dict:
    """Commit hash and dirty flag of the repository holding the suite (None when not a repo)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"commit": commit, "dirty": dirty}


def device_info() -> dict:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_device_count"] = torch.cuda.device_count()
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    except ImportError:  # pragma: no cover
        pass
    return info


def environment() -> dict:
    """What the result record keeps about where and with what a run was made."""
    return {
        "python": sys.version.split()[0],
        "hostname": socket.gethostname(),
        "packages": package_versions(),
        "git": git_info(),
        "device": device_info(),
        "argv": list(sys.argv),
    }


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
def cpu_peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage``; KiB on Linux, B on macOS)."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
    except (ImportError, OSError):  # pragma: no cover - Windows
        import psutil

        mi = psutil.Process().memory_info()
        return int(getattr(mi, "peak_wset", mi.rss))


def cpu_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        return cpu_peak_rss_bytes()


def peak_memory(device) -> tuple[int, str]:
    """``(bytes, kind)``: the peak of what this process held on ``device`` so far: CUDA's
    ``max_memory_allocated`` (``cuda_max_allocated``) or the CPU peak RSS (``cpu_max_rss``)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return cpu_peak_rss_bytes(), "cpu_max_rss"


# ------------------------------------------------------------------------------------------------
# wandb
# ------------------------------------------------------------------------------------------------
def start_wandb(cfg_logger: Mapping | None, run_dir: Path, config: dict, name: str):
    """The wandb run of ``logger.wandb`` (None unless enabled); one id per run directory, so a
    resumed run continues the same wandb run."""
    w = (cfg_logger or {}).get("wandb") or {}
    if not w.get("enabled"):
        return None
    import hashlib

    import wandb

    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return wandb.init(project=w.get("project", "sara-repro"), entity=w.get("entity"),
                      mode=w.get("mode", "offline"), dir=str(run_dir), name=name,
                      group=w.get("group"), tags=list(w.get("tags") or []), config=config,
                      id=run_id, resume="allow")
