"""Run directories, atomic writes, result records and environment capture.

Every run of ``run.py`` owns one directory::

    outputs/runs/<experiment>/<backbone>/<dataset>/<method>/<budget>/seed<seed>/
        result.json        the result record (written last, atomically; its presence = done)
        failed.json        written instead when the run raised (removed by a later success)
        train_log.jsonl    one line per optimizer step: step, loss, lr, elapsed seconds
        checkpoint/state.pt  resumable training state (see :mod:`sara.train`; none when
                           train.steps=0: nothing is trained)
        migration.json     the migration curve so far (diagnostics.migration_*; kept on resume)
        samples/           00000.png ... + prompts.jsonl (same format as a dataset folder)
        .hydra/            Hydra's own record of the composed config and overrides

Experiment hooks (``conf/experiment/*.yaml``, table in ``experiments/README.md``): the optional
top-level groups ``diagnostics`` (``prune_threshold``, ``migration_every`` +
``migration_threshold``, ``share_below``, ``subspace`` + ``subspace_patterns`` /
``subspace_max_dim`` / ``delta_u_dim`` / ``amplification_ranks``) and ``delta`` (``source``,
``alpha``, ``merge_with``, ``merge_source``, ``beta1``, ``beta2``) are checked first
(:func:`validate_hooks`: an unknown key or a wrong type fails naming the key) and recorded under
``diagnostics`` / ``delta`` of ``result.json``. ``data=pretrain`` runs compute FID against a fixed
reference folder of the domain's validation split (:func:`ensure_pretrain_reference`).

Every file here is written through a temporary file in the same folder and ``os.replace``, so a
kill at any moment leaves either the old or the new file, never a torn one.

This module has no Hydra and no torch import at module level beyond what is needed, so the
results store (``iter_results``) can be used from analysis scripts cheaply.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
FAILED_FILE = "failed.json"
TRAIN_LOG_FILE = "train_log.jsonl"
SAMPLES_DIR = "samples"
CHECKPOINT_DIR = "checkpoint"
RESULT_SCHEMA = 1

#: Number of parameters of the Stable Diffusion 1.5 UNet, the paper's reference for budgets.
SD15_UNET_PARAMS = 859_520_964

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Packages whose versions go into every result record.
RECORDED_PACKAGES = (
    "sara-repro", "torch", "torchvision", "diffusers", "transformers", "accelerate", "peft",
    "hydra-core", "omegaconf", "numpy", "safetensors", "clean-fid", "open_clip_torch",
    "torchmetrics", "pillow", "scipy", "pandas", "wandb",
)


# ------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


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
    return _sanitize(json.loads(json.dumps(obj, default=_json_default)))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------
# budgets
# ------------------------------------------------------------------------------------------------
def resolve_lr(lr: Any, denoiser: Any, budget: int | None) -> tuple[float | None, dict]:
    """``train.lr``: a number, ``null`` (the method's own default) or ``eq12``: Eq. 12's rate
    ``1e-3 · exp(-350 θ)`` at the θ that gives SaRA this run's budget on this denoiser, so every
    method of one budget trains at the same rate (the paper derives the initial rate from the
    threshold). Returns ``(lr, record)``; with ``eq12`` and ``budget: none`` the method's default."""
    if lr is None or isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return lr, {"policy": "fixed" if lr is not None else "method_default", "lr": lr}
    if str(lr).lower() != "eq12":
        raise ValueError(f"train.lr: expected a number, null or 'eq12', got {lr!r}")
    if budget is None:
        log.warning("train.lr=eq12 with budget=none: using the method's own default rate")
        return None, {"policy": "eq12", "lr": None, "threshold": None}
    from sara.budget import eq12_lr_for_budget

    theta, value = eq12_lr_for_budget(denoiser, budget)
    return value, {"policy": "eq12", "lr": value, "threshold": theta}


def resolve_budget(cfg_budget: Mapping | None, n_denoiser_params: int) -> int | None:
    """Trainable-parameter target of a budget config for a denoiser with ``n_denoiser_params``.

    A budget config (``conf/budget/*.yaml``) gives ``params`` (the count at the paper's scale, e.g.
    5,000,000) and ``reference_params`` (the denoiser it refers to, SD 1.5's UNet:
    859,520,964). The target for another denoiser keeps the *fraction*:
    ``round(params / reference_params * n_denoiser_params)``, at least 1. ``params`` in (0, 1] is
    read as a fraction of the denoiser directly (``budget.params=0.01`` = 1%); with
    ``reference_params: null`` it is an absolute count. ``budget: none`` (a null group, or
    ``params: null``) gives ``None`` = the method's own default knob. Same rule as
    :func:`sara.budget.budget_target`, which is used when present.
    """
    if cfg_budget is None:
        return None
    try:  # the budget module's rule (same semantics; also reads "5M"-style strings)
        from sara.budget import budget_target
    except ImportError:
        budget_target = None
    if budget_target is not None:
        return budget_target(cfg_budget, int(n_denoiser_params))
    params = cfg_budget.get("params", None)
    if params is None:
        return None
    params = float(params)
    if not params > 0:
        raise ValueError(f"budget params must be positive, got {params}")
    if n_denoiser_params <= 0:
        raise ValueError(f"denoiser has no parameters ({n_denoiser_params})")
    ref = cfg_budget.get("reference_params", SD15_UNET_PARAMS)
    if params <= 1:
        target = params * n_denoiser_params
    elif ref:
        target = params / float(ref) * n_denoiser_params
    else:  # reference_params: null -> an absolute count
        target = params
    return max(1, int(round(target)))


# ------------------------------------------------------------------------------------------------
# run directories and records
# ------------------------------------------------------------------------------------------------
def _label(value: Any) -> str:
    s = "none" if value is None else str(value)
    return s.replace(os.sep, "_").replace(" ", "_") or "none"


def run_dir_for(cfg: Mapping, root: str | os.PathLike | None = None) -> Path:
    """The deterministic run directory of a composed config (same rule as ``hydra.run.dir``)."""
    root = Path(root if root is not None else cfg.get("output_root", "outputs/runs"))

    def g(group: str) -> Any:
        node = cfg.get(group, None)
        return None if node is None else node.get("name", None)

    return (root / _label(cfg.get("experiment_name", "default")) / _label(g("backbone"))
            / _label(g("data")) / _label(g("method")) / _label(g("budget"))
            / f"seed{cfg.get('seed', 0)}")


def load_result(run_dir: str | os.PathLike) -> dict | None:
    """The run's result record if it exists and is complete, else None."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        rec = read_json(p)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("status") != "complete":
        return None
    return rec


def is_complete(run_dir: str | os.PathLike) -> bool:
    return load_result(run_dir) is not None


def write_result(run_dir: str | os.PathLike, record: dict) -> Path:
    record = dict(record)
    record.setdefault("schema", RESULT_SCHEMA)
    record.setdefault("status", "complete")
    record.setdefault("finished_at", now_iso())
    path = atomic_write_json(Path(run_dir) / RESULT_FILE, record)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(run_dir) / FAILED_FILE)
    return path


def write_failed(run_dir: str | os.PathLike, exc: BaseException, extra: dict | None = None,
                 tail_lines: int = 40) -> Path:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tail = "\n".join(tb.rstrip().splitlines()[-tail_lines:])
    rec = {"schema": RESULT_SCHEMA, "status": "failed", "exception": type(exc).__name__,
           "message": str(exc), "traceback_tail": tail, "failed_at": now_iso(),
           "hostname": socket.gethostname()}
    if extra:
        rec.update(extra)
    return atomic_write_json(Path(run_dir) / FAILED_FILE, rec)


def iter_results(root: str | os.PathLike = "outputs/runs", include_failed: bool = False
                 ) -> Iterator[dict]:
    """Every complete result record under ``root`` (and failed ones if asked), sorted by path."""
    root = Path(root)
    names = [RESULT_FILE] + ([FAILED_FILE] if include_failed else [])
    for name in names:
        for p in sorted(root.rglob(name)):
            try:
                rec = read_json(p)
            except (OSError, ValueError):
                continue
            if name == RESULT_FILE and rec.get("status") != "complete":
                continue
            rec.setdefault("paths", {})
            rec["paths"].setdefault("run_dir", str(p.parent))
            yield rec


# ------------------------------------------------------------------------------------------------
# environment capture
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# the pipeline of one run (what run.py calls)
# ------------------------------------------------------------------------------------------------
def hydra_run_dir() -> Path | None:
    """The output directory Hydra chose for this job, or None outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # pragma: no cover
        pass
    return None


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return cfg


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


#: Keys whose change does not make a finished run stale.
VOLATILE_KEYS = ("logger", "overwrite", "on_failure", "output_root", "torch_threads",
                 "train.progress",
                 "train.num_workers", "eval.batch_size", "eval.device", "train.device")


def _hooks_filled(plain: Any) -> Any:
    """``plain`` with its ``diagnostics`` / ``delta`` groups completed by their defaults, so that
    a record written before conf/config.yaml listed the groups compares equal to one with the
    defaults spelled out; groups that do not validate are left as they are."""
    if not isinstance(plain, Mapping):
        return plain
    out = dict(plain)
    for group, spec in (("diagnostics", DIAGNOSTICS_KEYS), ("delta", DELTA_KEYS)):
        try:
            out[group] = _check_group(group, plain.get(group), spec)
        except HookConfigError:
            pass
    return out


def _clear_run_dir(run_dir: Path) -> None:
    import shutil

    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.name == ".hydra" or p.name.endswith(".log"):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def execute(cfg: Any, run_dir: str | os.PathLike | None = None) -> dict:
    """Run one configured job end to end; return its result record.

    ``run_dir``: default = Hydra's output dir inside a Hydra job, else :func:`run_dir_for`.
    A directory with a complete ``result.json`` is not run again ("already done"). A failure
    writes ``failed.json`` and re-raises (``on_failure=raise``) or returns the failure record
    (``on_failure=record``).
    """
    run_dir = Path(run_dir) if run_dir is not None else (hydra_run_dir() or run_dir_for(cfg))
    plain = _plain(cfg)
    if plain.get("overwrite"):
        log.warning("overwrite=true: clearing %s", run_dir)
        _clear_run_dir(run_dir)
    done = load_result(run_dir)
    if done is not None:
        diff = [k for k in config_diff(_hooks_filled(done.get("config", {})), _hooks_filled(plain))
                if not k.startswith(VOLATILE_KEYS)]
        if diff:
            log.warning("already done: %s holds a finished run whose config differs in %s; "
                        "kept as is (set overwrite=true or another experiment_name to rerun)",
                        run_dir, diff[:10])
        else:
            log.info("already done: %s", run_dir / RESULT_FILE)
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _execute(cfg, plain, run_dir)
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        if _is_main_process():
            write_failed(run_dir, exc, extra={"config": plain, "run_dir": str(run_dir)})
        log.error("run failed: %s: %s (recorded in %s)", type(exc).__name__, exc,
                  run_dir / FAILED_FILE)
        if plain.get("on_failure", "raise") == "record":
            return read_json(run_dir / FAILED_FILE) if (run_dir / FAILED_FILE).exists() else {
                "status": "failed", "exception": type(exc).__name__, "message": str(exc)}
        raise


def _is_main_process() -> bool:
    try:
        from accelerate.state import PartialState

        return PartialState().is_main_process
    except Exception:  # noqa: BLE001
        return True


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock (POSIX ``flock``; a no-op where unavailable)."""
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


def build_dataset(cfg_data: Mapping, resolution: int, accelerator=None):
    """The training dataset of a ``data`` config and the folder metrics compare against."""
    kind = cfg_data.get("kind", "style")
    root = Path(cfg_data.get("root", "data"))
    name = cfg_data.get("name")
    prefix = cfg_data.get("caption_prefix") or None
    seed = int(cfg_data.get("seed", 0))
    if kind in ("camera_motion", "video_folder"):  # clips for a video backbone
        from sara.data.camera_motion import build_video_dataset

        return build_video_dataset(cfg_data, resolution)
    if kind == "pretrain":
        from sara.data.domain import PretrainDomain

        return PretrainDomain(resolution, split=cfg_data.get("split", "train"), seed=seed), None
    if kind == "style":
        from sara.data.styles import STYLE_SIZES, ensure_style_datasets

        if name not in STYLE_SIZES:
            raise ValueError(f"data.name={name!r} is not an embedded style dataset "
                             f"({', '.join(STYLE_SIZES)}); for your own folder use data=folder")
        main = accelerator is None or accelerator.is_main_process
        if main:  # only the set this run needs (about 10 s each on a CPU)
            with _file_lock(root / f".{name}.lock"):  # parallel jobs of a sweep share data/
                ensure_style_datasets(root, seed, names=[name])
        if accelerator is not None:
            accelerator.wait_for_everyone()
    elif kind != "folder":
        raise ValueError(f"unknown data.kind {kind!r} (style | folder | pretrain)")
    from sara.data.folder import ImageCaptionFolder

    folder = root / str(name)
    return ImageCaptionFolder(folder, resolution, caption_prefix=prefix), folder


def eval_prompt_list(cfg_eval: Mapping) -> list[str]:
    n = int(cfg_eval.get("num_prompts", 0) or 0)
    if n <= 0:
        return []
    if cfg_eval.get("prompts_file"):
        with open(cfg_eval["prompts_file"], encoding="utf-8") as f:
            prompts = [l.strip() for l in f if l.strip()]
    else:
        from sara.data.prompts import eval_prompts

        prompts = list(eval_prompts(seed=int(cfg_eval.get("prompt_seed", 0))))
    if n > len(prompts):
        log.warning("eval.num_prompts=%d but only %d prompts exist; using all", n, len(prompts))
    return prompts[:n]


def _autocast_dtype(name: str | None, device) -> Any:
    import torch

    name = (name or "none").lower()
    if name == "auto":
        if getattr(device, "type", str(device)) != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"none": None, "no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def start_wandb(cfg_logger: Mapping | None, run_dir: Path, config: dict, name: str):
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


# ------------------------------------------------------------------------------------------------
# experiment hooks: diagnostics.* and delta.* (experiments/README.md, "hooks in sara.runs")
# ------------------------------------------------------------------------------------------------
class HookConfigError(ValueError):
    """A ``diagnostics.*`` / ``delta.*`` setting that is unknown or of the wrong type."""


#: The analysis layers of Figs. 19/20 and Table 10 (same as sara.analysis_math).
_DEFAULT_PATTERNS = ("*mid_block*attn*to_k.weight", "*mid_block*attn*to_v.weight")

#: key -> (kind, default, what). Kinds: number>=0, number>0, number, int>=0, int>=1, bool,
#: strings (list of str), ints>=1 (list of int >= 1), str (or null).
DIAGNOSTICS_KEYS: dict[str, tuple[str, Any, str]] = {
    "prune_threshold": ("number>=0", None, "zero every |w| < θ before sampling (Fig. 2)"),
    "migration_every": ("int>=1", None, "record the migration shares every N steps (Fig. 3)"),
    "migration_threshold": ("number>0", None, "θ of the migration tracker (Fig. 3)"),
    "share_below": ("bool", False, "share of the trained entries still below θ at the end"),
    "share_below_threshold": ("number>0", None, "θ of share_below (default: the method's)"),
    "subspace": ("bool", False, "subspace similarity + amplification of ΔW vs W0 (Figs. 19/20, "
                                "Table 10)"),
    "subspace_patterns": ("strings", list(_DEFAULT_PATTERNS), "fnmatch patterns of the weights"),
    "subspace_max_dim": ("int>=1", 64, "largest subspace dimension i, j of φ"),
    "delta_u_dim": ("int>=0", 0, "left singular vectors of ΔW kept per layer (Fig. 20)"),
    "amplification_ranks": ("ints>=1", [1, 4, 16, 64], "ranks r of Table 10"),
}
DELTA_KEYS: dict[str, tuple[str, Any, str]] = {
    "source": ("str", None, "run directory whose trained ΔP is loaded (needs train.steps=0)"),
    "alpha": ("number", 1.0, "scale of ΔP (App. F): W = W0 + β1·α·ΔP"),
    "merge_with": ("str", None, "dataset name of the second delta (a label; App. G)"),
    "merge_source": ("str", None, "run directory of a second delta, added with β2"),
    "beta1": ("number", 1.0, "weight of delta.source's ΔP"),
    "beta2": ("number", 1.0, "weight of delta.merge_source's ΔP"),
}


def _check_value(key: str, kind: str, v: Any) -> Any:
    def bad(want: str):
        return HookConfigError(f"{key} must be {want}, got {v!r} ({type(v).__name__})")

    if v is None:
        if kind in ("bool", "strings", "ints>=1"):
            raise bad({"bool": "true or false", "strings": "a list of strings",
                       "ints>=1": "a list of integers >= 1"}[kind])
        return None
    isnum = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind.startswith("number"):
        want = {"number": "a number", "number>=0": "a number >= 0", "number>0": "a number > 0"}[kind]
        if not isnum or not math.isfinite(float(v)):
            raise bad(want)
        if (kind == "number>=0" and v < 0) or (kind == "number>0" and v <= 0):
            raise bad(want)
        return float(v)
    if kind in ("int>=0", "int>=1"):
        lo = int(kind[-1])
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise bad(f"an integer >= {lo}")
        return int(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if kind == "str":
        if not isinstance(v, (str, os.PathLike)) or not str(v):
            raise bad("a non-empty string or null")
        return str(v)
    if kind == "strings":
        if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v \
                or not all(isinstance(x, str) and x for x in v):
            raise bad("a non-empty list of strings")
        return list(v)
    if kind == "ints>=1":
        if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
            raise bad("a non-empty list of integers >= 1")
        return [int(x) for x in v]
    raise AssertionError(kind)  # pragma: no cover


def _check_group(group: str, node: Any, spec: dict[str, tuple[str, Any, str]]) -> dict:
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise HookConfigError(f"{group} must be a mapping of settings ({', '.join(spec)}), "
                              f"got {node!r} ({type(node).__name__})")
    unknown = [k for k in node if k not in spec]
    if unknown:
        import difflib

        k = str(unknown[0])
        close = difflib.get_close_matches(k, list(spec), n=1)
        hint = f" (did you mean {group}.{close[0]}?)" if close else ""
        raise HookConfigError(f"{group}.{k}: unknown key{hint}; the keys sara.runs acts on are "
                              + ", ".join(f"{group}.{x}" for x in spec))
    return {k: _check_value(f"{group}.{k}", kind, node.get(k, default))
            for k, (kind, default, _) in spec.items()}


def validate_hooks(plain: Mapping) -> tuple[dict, dict | None]:
    """``(diagnostics, delta)`` of a resolved config, checked and with defaults filled in;
    ``delta`` is None when no ``delta.source`` is set. Raises :class:`HookConfigError` naming the
    key for an unknown key, a wrong type or an inconsistent combination."""
    diag = _check_group("diagnostics", plain.get("diagnostics"), DIAGNOSTICS_KEYS)
    if (diag["migration_every"] is None) != (diag["migration_threshold"] is None):
        have, miss = (("migration_every", "migration_threshold") if diag["migration_threshold"] is None
                      else ("migration_threshold", "migration_every"))
        raise HookConfigError(f"diagnostics.{have} is set but diagnostics.{miss} is not: the "
                              "migration tracker needs both (every N steps, threshold θ)")
    delta = _check_group("delta", plain.get("delta"), DELTA_KEYS)
    if delta["source"] is None:
        if delta["merge_source"] is not None:
            raise HookConfigError("delta.merge_source is set but delta.source is not: merging adds a "
                                  "second delta to the first (set delta.source)")
        return diag, None
    if delta["merge_with"] is not None and delta["merge_source"] is None:
        raise HookConfigError(f"delta.merge_with={delta['merge_with']!r} needs delta.merge_source "
                              "(the run directory of that dataset's delta)")
    steps = (plain.get("train") or {}).get("steps")
    if steps not in (0, None):
        raise HookConfigError(f"delta.source loads a trained delta instead of training: it needs "
                              f"train.steps=0 (got train.steps={steps})")
    return diag, delta


# --- delta.* (App. F scaling, App. G merging) ---------------------------------------------------
def _source_command(run_dir: Path, output_root: str | os.PathLike | None) -> str:
    """The ``run.py`` command that makes the run in ``run_dir`` (from its path layout)."""
    root = Path(output_root or "outputs/runs")
    parts = None
    try:
        parts = run_dir.resolve().relative_to(root.resolve()).parts
    except ValueError:
        parts = run_dir.parts[-6:] if len(run_dir.parts) >= 6 else None
    if not parts or len(parts) != 6 or not parts[5].startswith("seed"):
        return "the run that writes it (e.g. bash experiments/style.sh)"
    exp, bb, ds, m, b, s = parts
    base = exp.split("--")[0]
    exp_arg = (f"+experiment={base}" if (REPO_ROOT / "conf/experiment" / f"{base}.yaml").is_file()
               else f"experiment_name={exp}")
    cmd = (f"python run.py {exp_arg} backbone={bb} data.name={ds} method={m} budget={b} "
           f"seed={s[4:]}")
    if str(output_root or "outputs/runs") != "outputs/runs":
        cmd += f" output_root={output_root}"
    return cmd


def _read_source_config(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(resolved config, result record) of a run directory, whatever of them exists."""
    rec = load_result(run_dir)
    if rec is not None and isinstance(rec.get("config"), dict):
        return rec["config"], rec
    for name in (FAILED_FILE,):
        with contextlib.suppress(OSError, ValueError):
            cfg = read_json(run_dir / name).get("config")
            if isinstance(cfg, dict):
                return cfg, None
    p = run_dir / ".hydra" / "config.yaml"
    if p.is_file():
        with contextlib.suppress(Exception):
            from omegaconf import OmegaConf

            return OmegaConf.to_container(OmegaConf.load(p), resolve=True), None
    return None, None


def load_delta_source(key: str, run_dir: str | os.PathLike, output_root=None,
                      backbone_name: str | None = None) -> dict:
    """The trained state of a finished run for ``delta.source`` / ``delta.merge_source``:
    ``{"key", "run_dir", "checkpoint", "trained", "sparse", "step", "method", "config", "record"}``.
    Errors name the path and the command that makes the run."""
    import torch

    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_DIR / "state.pt"
    if not ckpt.is_file():
        why = ("the run failed (see its failed.json)" if (run_dir / FAILED_FILE).is_file() else
               "the directory does not exist" if not run_dir.is_dir() else
               "it holds no training checkpoint")
        raise FileNotFoundError(
            f"{key}={run_dir}: no trained checkpoint at {ckpt} ({why}). Make it first: "
            f"{_source_command(run_dir, output_root)}")
    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    if not isinstance(st, dict) or "trained" not in st:
        raise ValueError(f"{key}: {ckpt} is not a training checkpoint of this suite")
    total = (st.get("settings") or {}).get("steps")
    step = int(st.get("step", -1))
    if total is not None and step < int(total):
        raise ValueError(f"{key}: the run in {run_dir} has not finished training (checkpoint at step "
                         f"{step} of {total}); finish it first: {_source_command(run_dir, output_root)}")
    cfg, rec = _read_source_config(run_dir)
    src_bb = ((cfg or {}).get("backbone") or {}).get("name")
    if backbone_name is not None and src_bb is not None and src_bb != backbone_name:
        raise ValueError(f"{key}: the run in {run_dir} fine-tuned backbone {src_bb!r}, this run "
                         f"samples backbone {backbone_name!r}")
    trained = st["trained"]
    sparse = any(str(k).startswith("indices/") for k in trained)
    return {"key": key, "run_dir": str(run_dir), "checkpoint": str(ckpt), "trained": trained,
            "sparse": sparse, "step": step, "method": st.get("method"), "config": cfg,
            "record": rec}


def _sparse_meta(model, trained: Mapping) -> dict[str, str]:
    """sara.core checkpoint metadata for a trained sparse state taken from a training checkpoint
    (which stores the tensors only). The base check compares the checkpoint's stored base-model
    sample (``__sara__/base_sample``) with ``model``."""
    import json as _json

    from sara.core.checkpoint import FORMAT, _SAMPLE_KEY
    from sara.core.identity import base_params, sample_positions

    params = dict(model.named_parameters())
    shapes = {}
    for k in trained:
        if str(k).startswith("indices/"):
            n = str(k)[len("indices/"):]
            if n not in params:
                raise ValueError(f"the delta's tensor {n!r} is not in this denoiser (another backbone?)")
            shapes[n] = list(params[n].shape)
    here = base_params(model)
    if _SAMPLE_KEY in trained:
        want = sum(int(sample_positions(int(math.prod(s))).numel()) for _, s, _ in here)
        if int(trained[_SAMPLE_KEY].numel()) != want:
            raise ValueError("the delta was made for another base model (its base-model sample has "
                             f"{int(trained[_SAMPLE_KEY].numel())} values, this denoiser's {want})")
    return {"format": FORMAT, "shapes": _json.dumps(shapes),
            "base_params": _json.dumps([[n, list(s), d] for n, s, d in here]),
            "base_fingerprint": "unknown"}


def _dense_delta(src: dict, base) -> dict:
    """name -> W1 - W0 of a non-sparse trained state (LoRA, DoRA, full, ...): the source run's
    method is restored on a copy of ``base`` and merged."""
    import copy

    import hydra.utils
    import torch

    cfg = src["config"]
    if not cfg or not cfg.get("method"):
        raise ValueError(f"{src['key']}: {src['run_dir']} has no readable config (result.json or "
                         ".hydra/config.yaml): the method that made its trained state is unknown")
    method = hydra.utils.instantiate(cfg["method"], _convert_="all")
    n = sum(p.numel() for p in base.parameters())
    budget = (src.get("record") or {}).get("target_params")
    if budget is None:
        budget = resolve_budget(cfg.get("budget"), n)
    module = method.restore(copy.deepcopy(base), src["trained"], budget=budget)
    module = method.merged(module)
    w0 = dict(base.named_parameters())
    w1 = dict(module.named_parameters())
    if set(w0) != set(w1):
        extra = sorted(set(w1) - set(w0))[:2]
        raise ValueError(f"{src['key']}: method {getattr(method, 'name', '?')!r} does not change the "
                         f"denoiser's own weights only (it adds {extra}); its change is not a weight "
                         "delta that can be scaled or merged")
    with torch.no_grad():
        return {k: (w1[k].detach().float() - w0[k].detach().float())
                for k in w0 if not torch.equal(w1[k], w0[k])}


def apply_delta(model, dcfg: Mapping, sources: list[dict]) -> dict:
    """Write ``W0 + β1·α·ΔP [+ β2·ΔP2]`` into the plain ``model`` (which holds W0). Sparse deltas
    (SaRA and the selective methods) go through sara.core's ``load_sparse`` (one delta: an exact
    lerp, α=0 the base, α=1 the trained values) / ``merge_sparse``; other methods' states are
    restored and merged densely. Returns what the record keeps about it."""
    import tempfile

    import torch

    from sara.core import load_sparse, merge_sparse

    weights = [float(dcfg["alpha"]) * float(dcfg["beta1"])]
    if len(sources) > 1:
        weights.append(float(dcfg["beta2"]))
    info = {"alpha": dcfg["alpha"], "beta1": dcfg["beta1"],
            "beta2": dcfg["beta2"] if len(sources) > 1 else None, "merge_with": dcfg["merge_with"],
            "sources": []}
    for src, w in zip(sources, weights):
        entries = (sum(int(v.numel()) for k, v in src["trained"].items() if str(k).startswith("indices/"))
                   if src["sparse"] else None)
        info["sources"].append({"key": src["key"], "run_dir": src["run_dir"],
                                "checkpoint": src["checkpoint"], "weight": w, "step": src["step"],
                                "method": src["method"], "kind": "sparse" if src["sparse"] else "dense",
                                "entries": entries})
    if all(s["sparse"] for s in sources):
        metas = [_sparse_meta(model, s["trained"]) for s in sources]
        if len(sources) == 1:
            load_sparse(model, dict(sources[0]["trained"]), alpha=weights[0], metadata=metas[0])
        else:
            from safetensors.torch import save_file

            with tempfile.TemporaryDirectory(prefix="sara-delta-") as tmp:
                items = []
                for i, (s, meta, w) in enumerate(zip(sources, metas, weights)):
                    p = Path(tmp) / f"delta{i}.safetensors"
                    save_file({k: v.detach().cpu().contiguous().clone() for k, v in s["trained"].items()},
                              str(p), metadata=meta)
                    items.append((p, w))
                merge_sparse(model, items)
        return info
    deltas = [(_dense_delta(s, model), w) for s in sources]  # all against W0, before writing
    params = dict(model.named_parameters())
    with torch.no_grad():
        for d, w in deltas:
            for k, v in d.items():
                p = params[k]
                p.copy_((p.float() + w * v.to(p.device)).to(p.dtype))
    return info


# --- diagnostics.migration_* (Fig. 3) ------------------------------------------------------------
MIGRATION_FILE = "migration.json"


class MigrationHook:
    """``sara.core.diagnostics.MigrationTracker`` driven by the trainer: ``record(0)`` now, every
    ``every`` optimizer steps (``method.on_step_end``) and at the end. The history is also kept
    in ``run_dir/migration.json`` so a resumed run keeps the rows of its earlier sessions."""

    def __init__(self, model, threshold: float, every: int, run_dir: Path | None, main: bool = True):
        from sara.core.diagnostics import MigrationTracker

        self.tracker = MigrationTracker(model, threshold)  # the initial selection: W0, now
        self.every = int(every)
        self.path = run_dir / MIGRATION_FILE if run_dir is not None else None
        self.main = main
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                old = read_json(self.path)
                if float(old["threshold"]) == self.tracker.threshold:
                    self.tracker.history = [dict(r) for r in old["history"]]

    def record(self, step: int) -> None:
        """Measure now as ``step``. During training the rows a killed session wrote from this
        step on are dropped (a resumed run redoes them); ``step=0`` (before training, when the
        weights are W0 even in a resumed run) replaces only the first row."""
        old = self.tracker.history
        keep = [r for r in old if (r["step"] > 0 if step == 0 else r["step"] < step)]
        self.tracker.history = []
        row = self.tracker.record(step)
        self.tracker.history = [row] + keep if step == 0 else keep + [row]
        if self.main and self.path is not None:
            atomic_write_json(self.path, self.tracker.as_dict())

    def install(self, method) -> None:
        """Chain into the trainer's ``method.on_step_end(step, total)`` (an instance attribute,
        so the method's class, and with it checkpoint compatibility, is unchanged)."""
        prev = getattr(method, "on_step_end", None)

        def on_step_end(step: int, total: int) -> None:
            if prev is not None:
                prev(step, total)
            if step % self.every == 0 or step == total:
                self.record(step)

        method.on_step_end = on_step_end

    def finish(self, steps: int) -> dict:
        if not self.tracker.history or self.tracker.history[-1]["step"] != steps:
            self.record(steps)
        self.tracker.history = [r for r in self.tracker.history if r["step"] <= steps]
        return self.tracker.as_dict()


# --- FID reference of the pre-training domain -----------------------------------------------------
PRETRAIN_REFERENCE_VERSION = 1


def pretrain_reference_dir(cfg_data: Mapping, resolution: int) -> Path:
    """Where the FID reference folder of ``data=pretrain`` lives: the first
    ``data.reference_images`` (default 1,000 = all) items of the domain's fixed validation split,
    at the backbone's resolution, under ``<data.root>/pretrain_val/``."""
    n = int(cfg_data.get("reference_images", 1000) or 1000)
    seed = int(cfg_data.get("seed", 0))
    return Path(cfg_data.get("root", "data")) / "pretrain_val" / f"seed{seed}_{int(resolution)}px_n{n}"


def ensure_pretrain_reference(cfg_data: Mapping, resolution: int) -> Path:
    """Write the reference folder of :func:`pretrain_reference_dir` if it is missing or
    incomplete (images + ``metadata.jsonl``, the dataset folder format; deterministic from the
    seed; atomic: built under a temporary name, then renamed; locked against parallel jobs)."""
    import shutil
    import uuid

    from sara.data.domain import DEFAULT_LENGTHS, PretrainDomain
    from sara.data.procedural import caption, render
    from sara.data.styles import png_bytes

    folder = pretrain_reference_dir(cfg_data, resolution)
    n = int(cfg_data.get("reference_images", 1000) or 1000)
    if not 2 <= n <= DEFAULT_LENGTHS["val"]:
        raise ValueError(f"data.reference_images must be in [2, {DEFAULT_LENGTHS['val']}] (the "
                         f"validation split's size), got {n}")
    seed = int(cfg_data.get("seed", 0))
    marker = {"kind": "pretrain_val", "seed": seed, "resolution": int(resolution), "count": n,
              "version": PRETRAIN_REFERENCE_VERSION, "complete": True}

    def ok() -> bool:
        with contextlib.suppress(OSError, ValueError):
            if read_json(folder / ".sara_data.json") == marker:
                return len(list(folder.glob("*.png"))) == n
        return False

    if ok():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{folder.name}.lock"):
        if ok():
            return folder
        ds = PretrainDomain(resolution, split="val", seed=seed)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            lines = []
            for i in range(n):
                scene = ds.scene(i)
                fn = f"{i:04d}.png"
                (tmp / fn).write_bytes(png_bytes(render(scene, int(resolution))))
                lines.append(json.dumps({"file_name": fn, "text": caption(scene)}))
            (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (tmp / ".sara_data.json").write_text(json.dumps(marker) + "\n", encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote the FID reference of the pre-training domain: %s (%d images)", folder, n)
    return folder


def _matching_state(module, patterns) -> dict:
    """CPU copies of the parameters whose names match one of ``patterns`` (fnmatch)."""
    import fnmatch

    return {n: p.detach().float().cpu().clone() for n, p in module.named_parameters()
            if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)}



def _no_training(accelerator, device) -> Any:
    """The trainer's result for ``train.steps=0``: nothing trained, nothing checkpointed."""
    import torch

    from sara.train import TrainResult

    if device.type == "cuda":
        peak, kind = int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    else:
        peak, kind = cpu_peak_rss_bytes(), "cpu_max_rss"
    return TrainResult(steps=0, final_loss=None, final_loss_mean=None, resumed_from=None,
                       train_time_s=0.0, session_time_s=0.0, peak_memory_bytes=peak,
                       peak_memory_kind=kind, mixed_precision=accelerator.mixed_precision,
                       device=str(device), checkpoint=None, train_log=None,
                       num_processes=accelerator.num_processes)


def _share_below(method, theta: float | None) -> dict:
    from sara.core.diagnostics import share_below

    sp = getattr(method, "sparse", None)
    if sp is None:
        raise HookConfigError(f"diagnostics.share_below: method {getattr(method, 'name', '?')!r} "
                              "trains no sparse selection (SaRA and its ablations do)")
    if theta is None:
        theta = getattr(method, "_lr_theta", None) or (method.record() or {}).get("threshold")
    if theta is None:
        raise HookConfigError("diagnostics.share_below: the method has no threshold; set "
                              "diagnostics.share_below_threshold")
    return {"share_below": share_below(sp, float(theta)), "share_below_threshold": float(theta)}


def _execute(cfg: Any, plain: dict, run_dir: Path) -> dict:
    import time

    import hydra.utils
    import torch

    from sara.methods.base import PrepareContext
    from sara.sample import sample_to_folder
    from sara.train import (TrainConfig, Trainer, endless_batches, make_accelerator,
                            seed_everything)

    t_all = time.perf_counter()
    started = now_iso()
    diag, dcfg = validate_hooks(plain)  # before anything heavy: a bad key fails at once
    seed = int(plain.get("seed", 0))
    tcfg = TrainConfig.from_mapping(plain.get("train"), seed=seed)
    sources: list[dict] = []
    if dcfg is not None:  # fail fast when a delta to load is missing
        bb_name = (plain.get("backbone") or {}).get("name")
        sources.append(load_delta_source("delta.source", dcfg["source"], plain.get("output_root"),
                                         bb_name))
        if dcfg["merge_source"] is not None:
            sources.append(load_delta_source("delta.merge_source", dcfg["merge_source"],
                                             plain.get("output_root"), bb_name))
    if plain.get("torch_threads"):
        torch.set_num_threads(int(plain["torch_threads"]))
    seed_everything(seed)
    accelerator = make_accelerator(tcfg.mixed_precision, tcfg.device)
    device = accelerator.device
    main = accelerator.is_main_process

    # --- setup: backbone, data, method --------------------------------------------------------
    t0 = time.perf_counter()
    from sara.backbones import load_backbone

    backbone = load_backbone(plain["backbone"])
    backbone.to(device)
    n_denoiser = int(sum(p.numel() for p in backbone.denoiser.parameters()))
    budget = resolve_budget(plain.get("budget"), n_denoiser)
    tcfg.lr, lr_record = resolve_lr(tcfg.lr, backbone.denoiser, budget)
    dataset, dataset_dir = build_dataset(plain["data"], backbone.resolution, accelerator)
    log.info("run %s: backbone %s (%d denoiser params), %d training items, budget %s",
             run_dir, backbone.name, n_denoiser, len(dataset), budget)
    # W0 of the analysed weights, before the method touches the denoiser (calibration phases too)
    w0_sub = (_matching_state(backbone.denoiser, diag["subspace_patterns"])
              if diag["subspace"] else None)
    if diag["subspace"] and not w0_sub:
        raise HookConfigError(f"diagnostics.subspace_patterns={diag['subspace_patterns']} match no "
                              f"parameter of the {backbone.name} denoiser")

    def ctx_loss(module, batch):
        with accelerator.autocast():
            return backbone.training_loss(module, batch)

    ctx = PrepareContext(
        loss_fn=ctx_loss,
        batches=endless_batches(dataset, tcfg.batch_size, seed + 7919, device=device,
                                shuffle=tcfg.shuffle),
        steps=tcfg.steps, seed=seed,
        extra={"backbone": backbone, "accelerator": accelerator, "run_dir": run_dir,
               "batch_size": tcfg.batch_size, "lr": tcfg.lr,
               "max_grad_norm": tcfg.max_grad_norm})
    method = hydra.utils.instantiate(plain["method"], _convert_="all")
    migration = None
    if diag["migration_every"] is not None:  # the initial selection is taken from W0
        migration = MigrationHook(backbone.denoiser, diag["migration_threshold"],
                                  diag["migration_every"], run_dir, main=main)
    model = method.apply(backbone.denoiser, budget=budget, ctx=ctx)
    optimizer = method.make_optimizer(lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                      betas=tuple(tcfg.betas))
    setup_s = time.perf_counter() - t0

    wb = start_wandb(plain.get("logger"), run_dir, plain,
                     name="/".join(run_dir.parts[-6:])) if main else None
    log_fns = [lambda m, s: wb.log(m, step=s)] if wb is not None else []
    diagnostics: dict = {}
    delta_info = None
    try:
        # --- train ----------------------------------------------------------------------------
        def loss_fn(module, batch, generator=None):
            return backbone.training_loss(module, batch, generator=generator)

        if migration is not None:
            migration.record(0)
            migration.install(method)
        if tcfg.steps == 0:  # nothing to train (pruning, scaling, merging, pre-trained baselines)
            tres = _no_training(accelerator, device)
        else:
            trainer = Trainer(model, method, optimizer, loss_fn, dataset, tcfg, run_dir=run_dir,
                              accelerator=accelerator, log_fns=log_fns)
            tres = trainer.train()
        if migration is not None:
            diagnostics["migration"] = migration.finish(tres.steps)
        if diag["share_below"]:
            diagnostics.update(_share_below(method, diag["share_below_threshold"]))

        # --- the model that is sampled: merged, then delta / pruning --------------------------
        ecfg = plain.get("eval") or {}
        prompts = eval_prompt_list(ecfg)
        sampler_module = None
        if (prompts and main) or diag["subspace"] or dcfg is not None \
                or diag["prune_threshold"] is not None:
            sampler_module = method.merged(model)
        if dcfg is not None:
            delta_info = apply_delta(sampler_module, dcfg, sources)
            sources.clear()  # free the loaded states
        if diag["subspace"]:
            from sara.analysis_math import amplification_report, subspace_report

            w1_sub = _matching_state(sampler_module, diag["subspace_patterns"])
            diagnostics["subspace"] = subspace_report(
                w0_sub, w1_sub, diag["subspace_patterns"], max_dim=diag["subspace_max_dim"],
                seed=seed, delta_u_dim=diag["delta_u_dim"])
            diagnostics["amplification"] = amplification_report(
                w0_sub, w1_sub, diag["subspace_patterns"], ranks=diag["amplification_ranks"])
        if diag["prune_threshold"] is not None:
            from sara.analysis_math import prune_small

            _, diagnostics["prune"] = prune_small(sampler_module, diag["prune_threshold"],
                                                  inplace=True)
            log.info("pruned |w| < %g: %d of %d entries (%.4f%%)", diag["prune_threshold"],
                     diagnostics["prune"]["pruned"], diagnostics["prune"]["total"],
                     100 * diagnostics["prune"]["fraction"])

        # --- sample -----------------------------------------------------------------------------
        samples = {"num_images": 0, "skipped": True, "time_s": 0.0, "dir": None}
        texts: list[str] = []
        t0 = time.perf_counter()
        if prompts and main:
            prefix = ecfg.get("prefix") or ""
            texts = [prefix + p for p in prompts]
            samples = sample_to_folder(
                backbone, prompts, run_dir / SAMPLES_DIR, denoiser=sampler_module,
                prefix=prefix, num_inference_steps=ecfg.get("num_inference_steps"),
                guidance_scale=ecfg.get("guidance_scale"), seed=int(ecfg.get("seed", seed)),
                batch_size=int(ecfg.get("batch_size", 16)),
                autocast_dtype=_autocast_dtype(ecfg.get("autocast"), device),
                progress=tcfg.progress)
        sample_s = time.perf_counter() - t0
        accelerator.wait_for_everyone()

        # --- evaluate ---------------------------------------------------------------------------
        metrics: dict = {}
        eval_info = None
        metrics_note = None
        t0 = time.perf_counter()
        wanted = list(ecfg.get("metrics") or [])
        if wanted and texts and main:
            try:
                from sara.evaluate import evaluate
            except ModuleNotFoundError as e:
                if e.name not in ("sara.evaluate",):
                    raise
                evaluate = None
                metrics_note = "sara.evaluate is not installed: metrics skipped"
                log.warning(metrics_note)
            if evaluate is not None:
                if (dataset_dir is None and "fid" in wanted
                        and (plain.get("data") or {}).get("kind") == "pretrain"):
                    # FID of the pre-training domain: against its fixed validation split
                    dataset_dir = ensure_pretrain_reference(plain["data"], backbone.resolution)
                edev = ecfg.get("device", "auto")
                edev = str(device) if edev in (None, "auto") else edev
                out = dict(evaluate(run_dir / SAMPLES_DIR, texts,
                                    str(dataset_dir) if dataset_dir else None, wanted, edev) or {})
                eval_info = out.pop("eval_info", None)
                metrics = out
        eval_s = time.perf_counter() - t0

        if wb is not None:
            wb.log({f"eval/{k}": v for k, v in metrics.items()
                    if isinstance(v, (int, float))}, step=tres.steps)
    finally:
        if wb is not None:
            wb.finish()

    # --- result record --------------------------------------------------------------------------
    mrec = method.record()
    env = environment()
    if device.type == "cuda":
        peak = {"bytes": tres.peak_memory_bytes, "kind": tres.peak_memory_kind,
                "process_max_rss_bytes": cpu_peak_rss_bytes()}
    else:
        peak = {"bytes": tres.peak_memory_bytes, "kind": tres.peak_memory_kind}
    record = {
        "schema": RESULT_SCHEMA,
        "status": "complete",
        "experiment": plain.get("experiment_name"),
        "backbone": backbone.name,
        "dataset": (plain.get("data") or {}).get("name"),
        "method": getattr(method, "name", None),
        "budget": (plain.get("budget") or {}).get("name") if plain.get("budget") else "none",
        "seed": seed,
        "denoiser_params": n_denoiser,
        "target_params": budget,
        "trainable_params": int(method.num_trainable()),
        "trainable_fraction": method.num_trainable() / n_denoiser if n_denoiser else None,
        "method_record": mrec,
        "train": {"steps": tres.steps, "final_loss": tres.final_loss,
                  "final_loss_mean": tres.final_loss_mean, "resumed_from": tres.resumed_from,
                  "batch_size": tcfg.batch_size, "grad_accum": tcfg.grad_accum,
                  "lr": lr_record,
                  "num_processes": tres.num_processes, "mixed_precision": tres.mixed_precision,
                  "device": tres.device},
        "steps": tres.steps,
        "final_loss": tres.final_loss,
        "wall_time_s": time.perf_counter() - t_all,
        "train_time_s": tres.train_time_s,
        "sample_time_s": sample_s,
        "eval_time_s": eval_s,
        "time": {"setup_s": setup_s, "train_s": tres.train_time_s,
                 "train_this_session_s": tres.session_time_s, "sample_s": sample_s,
                 "eval_s": eval_s, "total_this_session_s": time.perf_counter() - t_all},
        "peak_memory_bytes": tres.peak_memory_bytes,
        "peak_memory": peak,
        "git_commit": env["git"]["commit"],
        "git_dirty": env["git"]["dirty"],
        "samples": {"num_images": samples["num_images"], "resumed": samples["skipped"]},
        "metrics": metrics,
        "metrics_note": metrics_note,
        "eval_info": eval_info,
        "paths": {"run_dir": str(run_dir), "samples": str(run_dir / SAMPLES_DIR),
                  "checkpoint": tres.checkpoint, "train_log": tres.train_log,
                  "dataset": str(dataset_dir) if dataset_dir else None},
        "diagnostics": diagnostics or None,
        "delta": delta_info,
        "config": plain,
        "env": env,
        "started_at": started,
        "finished_at": now_iso(),
    }
    if main:
        write_result(run_dir, record)
        log.info("done: %s (train %.0f s, sample %.0f s, eval %.0f s)", run_dir / RESULT_FILE,
                 tres.train_time_s, sample_s, eval_s)
    accelerator.wait_for_everyone()
    return to_jsonable(record)
