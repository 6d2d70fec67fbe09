"""Run directories, atomic writes, result records and environment capture.

Every run of ``run.py`` owns one directory::

    outputs/runs/<experiment>/<backbone>/<dataset>/<method>/<budget>/seed<seed>/
        result.json        the result record (written last, atomically; its presence = done)
        failed.json        written instead when the run raised (removed by a later success)
        train_log.jsonl    one line per optimizer step: step, loss, lr, elapsed seconds
        checkpoint/state.pt  resumable training state (see :mod:`sara.train`)
        samples/           00000.png ... + prompts.jsonl (same format as a dataset folder)
        .hydra/            Hydra's own record of the composed config and overrides

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
        diff = [k for k in config_diff(done.get("config", {}), plain)
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
    seed = int(plain.get("seed", 0))
    tcfg = TrainConfig.from_mapping(plain.get("train"), seed=seed)
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
    dataset, dataset_dir = build_dataset(plain["data"], backbone.resolution, accelerator)
    log.info("run %s: backbone %s (%d denoiser params), %d training items, budget %s",
             run_dir, backbone.name, n_denoiser, len(dataset), budget)

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
    model = method.apply(backbone.denoiser, budget=budget, ctx=ctx)
    optimizer = method.make_optimizer(lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                      betas=tuple(tcfg.betas))
    setup_s = time.perf_counter() - t0

    wb = start_wandb(plain.get("logger"), run_dir, plain,
                     name="/".join(run_dir.parts[-6:])) if main else None
    log_fns = [lambda m, s: wb.log(m, step=s)] if wb is not None else []
    try:
        # --- train ----------------------------------------------------------------------------
        def loss_fn(module, batch, generator=None):
            return backbone.training_loss(module, batch, generator=generator)

        trainer = Trainer(model, method, optimizer, loss_fn, dataset, tcfg, run_dir=run_dir,
                          accelerator=accelerator, log_fns=log_fns)
        tres = trainer.train()

        # --- sample -----------------------------------------------------------------------------
        ecfg = plain.get("eval") or {}
        prompts = eval_prompt_list(ecfg)
        samples = {"num_images": 0, "skipped": True, "time_s": 0.0, "dir": None}
        texts: list[str] = []
        t0 = time.perf_counter()
        if prompts and main:
            sampler_module = method.merged(model)
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
