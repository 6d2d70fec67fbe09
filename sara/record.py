"""The run directory and its records: the layout (defined here once), the result record built
from its sections, the failure record and the wrapper that writes it.

Every run of ``run.py`` owns one directory::

    <output_root>/<experiment>/<backbone>/<dataset>/<method>/<budget>/seed<seed>/
        result.json        the result record (written last, atomically; its presence = done)
        failed.json        written instead when the run raised (removed by a later success)
        train_log.jsonl    one line per optimizer step: step, loss, lr, elapsed seconds
        checkpoint/state.pt  resumable training state (see :mod:`sara.train`; none when
                           train.steps=0: nothing is trained)
        migration.json     the migration curve so far (diagnostics.migration_*; kept on resume)
        samples/           00000.png ... + prompts.jsonl (same format as a dataset folder)
        .hydra/            Hydra's own record of the composed config and overrides

``conf/config.yaml``'s ``hydra.run.dir`` spells the same layout for Hydra (a test checks that it
agrees with :func:`run_dir_for`); :mod:`sara.results` reads it back (:func:`identity_from_parts`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from sara.env import now_iso
from sara.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
FAILED_FILE = "failed.json"
TRAIN_LOG_FILE = "train_log.jsonl"
SAMPLES_DIR = "samples"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_NAME = "state.pt"
MIGRATION_FILE = "migration.json"
RESULT_SCHEMA = 1
DEFAULT_OUTPUT_ROOT = "outputs/runs"

#: The levels of a run directory under the output root: (identity column, config group whose
#: ``name`` fills it). The last level is ``seed<seed>``.
RUN_DIR_LEVELS: tuple[tuple[str, str], ...] = (
    ("experiment", "experiment_name"), ("backbone", "backbone"), ("dataset", "data"),
    ("method", "method"), ("budget", "budget"), ("seed", "seed"))
SEED_PREFIX = "seed"
_SEED_RE = re.compile(rf"^{SEED_PREFIX}(-?\d+)$")


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------
def _label(value: Any) -> str:
    s = "none" if value is None else str(value)
    return s.replace(os.sep, "_").replace(" ", "_") or "none"


def run_dir_for(cfg: Mapping, root: str | os.PathLike | None = None) -> Path:
    """The deterministic run directory of a composed config (same rule as ``hydra.run.dir``)."""
    root = Path(root if root is not None else cfg.get("output_root", DEFAULT_OUTPUT_ROOT))

    def g(group: str) -> Any:
        node = cfg.get(group, None)
        return None if node is None else node.get("name", None)

    groups = [_label(g(group)) for _, group in RUN_DIR_LEVELS[1:-1]]
    return (root / _label(cfg.get("experiment_name", "default")) / Path(*groups)
            / f"{SEED_PREFIX}{cfg.get('seed', 0)}")


def identity_from_parts(parts: Sequence[str]) -> dict[str, Any]:
    """Identity columns from the parts of a run directory relative to the output root:
    ``seed`` from the last part, then budget, method, dataset, backbone; whatever is left (one or
    more folders) is the experiment. A path shorter than the layout gives what it has."""
    ident: dict[str, Any] = {}
    parts = list(parts)
    m = _SEED_RE.match(parts[-1]) if parts else None
    if m:
        ident["seed"] = int(m.group(1))
        rest = parts[:-1]
        n = len(RUN_DIR_LEVELS) - 2  # backbone .. budget
        if len(rest) >= n:
            for (col, _), value in zip(RUN_DIR_LEVELS[1:-1], rest[-n:]):
                ident[col] = value
            if rest[:-n]:
                ident["experiment"] = "/".join(rest[:-n])
    return ident


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """The training checkpoint of a run directory (see :mod:`sara.train`)."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME


# ------------------------------------------------------------------------------------------------
# reading and writing records
# ------------------------------------------------------------------------------------------------
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


def iter_results(root: str | os.PathLike = DEFAULT_OUTPUT_ROOT, include_failed: bool = False
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
# failures
# ------------------------------------------------------------------------------------------------
def _is_main_process() -> bool:
    try:
        from accelerate.state import PartialState

        return PartialState().is_main_process
    except Exception:  # noqa: BLE001
        return True


def records_failure(run: Callable[[Any, dict, Path], dict]) -> Callable[[Any, dict, Path], dict]:
    """Decorate ``run(cfg, plain, run_dir) -> record``: an exception (other than Ctrl-C) writes
    ``failed.json`` (on the main process) and then, by ``plain["on_failure"]``, is re-raised
    (``raise``, the default) or answered with the failure record (``record``)."""
    @functools.wraps(run)
    def wrapper(cfg: Any, plain: dict, run_dir: Path) -> dict:
        try:
            return run(cfg, plain, run_dir)
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            if isinstance(exc, KeyboardInterrupt):
                raise
            failed = Path(run_dir) / FAILED_FILE
            if _is_main_process():
                write_failed(run_dir, exc, extra={"config": plain, "run_dir": str(run_dir)})
            log.error("run failed: %s: %s (recorded in %s)", type(exc).__name__, exc, failed)
            if plain.get("on_failure", "raise") == "record":
                return read_json(failed) if failed.exists() else {
                    "status": "failed", "exception": type(exc).__name__, "message": str(exc)}
            raise

    return wrapper


# ------------------------------------------------------------------------------------------------
# the result record, section by section
# ------------------------------------------------------------------------------------------------
def run_section(plain: Mapping, backbone_name: str, method: Any, n_denoiser: int,
                budget: int | None) -> dict:
    """What was run: identity (the run-directory levels), parameter counts, the method's record."""
    n_trainable = method.num_trainable()
    return {
        "experiment": plain.get("experiment_name"),
        "backbone": backbone_name,
        "dataset": (plain.get("data") or {}).get("name"),
        "method": getattr(method, "name", None),
        "budget": (plain.get("budget") or {}).get("name") if plain.get("budget") else "none",
        "seed": int(plain.get("seed", 0)),
        "denoiser_params": n_denoiser,
        "target_params": budget,
        "trainable_params": int(n_trainable),
        "trainable_fraction": n_trainable / n_denoiser if n_denoiser else None,
        "method_record": method.record(),
    }


def train_section(tres: Any, tcfg: Any, lr_record: dict) -> dict:
    """The trainer's outcome (a :class:`sara.train.TrainResult`) and the settings that shaped it."""
    return {
        "train": {"steps": tres.steps, "final_loss": tres.final_loss,
                  "final_loss_mean": tres.final_loss_mean, "resumed_from": tres.resumed_from,
                  "batch_size": tcfg.batch_size, "grad_accum": tcfg.grad_accum,
                  "lr": lr_record,
                  "num_processes": tres.num_processes, "mixed_precision": tres.mixed_precision,
                  "device": tres.device},
        "steps": tres.steps,
        "final_loss": tres.final_loss,
    }


def time_section(*, setup_s: float, tres: Any, sample_s: float, eval_s: float,
                 wall_s: float) -> dict:
    return {
        "wall_time_s": wall_s,
        "train_time_s": tres.train_time_s,
        "sample_time_s": sample_s,
        "eval_time_s": eval_s,
        "time": {"setup_s": setup_s, "train_s": tres.train_time_s,
                 "train_this_session_s": tres.session_time_s, "sample_s": sample_s,
                 "eval_s": eval_s, "total_this_session_s": wall_s},
    }


def memory_section(tres: Any, process_max_rss_bytes: int | None = None) -> dict:
    """Peak memory of training (``process_max_rss_bytes``: the CPU side too, on a GPU run)."""
    peak = {"bytes": tres.peak_memory_bytes, "kind": tres.peak_memory_kind}
    if process_max_rss_bytes is not None:
        peak["process_max_rss_bytes"] = process_max_rss_bytes
    return {"peak_memory_bytes": tres.peak_memory_bytes, "peak_memory": peak}


def eval_section(samples: Mapping, metrics: dict, metrics_note: str | None,
                 eval_info: Any) -> dict:
    return {
        "samples": {"num_images": samples["num_images"], "resumed": samples["skipped"]},
        "metrics": metrics,
        "metrics_note": metrics_note,
        "eval_info": eval_info,
    }


def paths_section(run_dir: Path, tres: Any, dataset_dir: Path | None, weights: Path | None = None) -> dict:
    return {"run_dir": str(run_dir), "samples": str(run_dir / SAMPLES_DIR),
            "checkpoint": tres.checkpoint, "train_log": tres.train_log,
            "weights": str(weights) if weights else None,
            "dataset": str(dataset_dir) if dataset_dir else None}


def build_record(*, run: dict, train: dict, time: dict, memory: dict, evaluation: dict,
                 paths: dict, diagnostics: dict | None, delta: dict | None, config: dict,
                 env: dict, started_at: str) -> dict:
    """The result record of a finished run from its sections (``run_section`` ... and
    :func:`sara.env.environment`); keys in the order of ``result.json``."""
    return {
        "schema": RESULT_SCHEMA,
        "status": "complete",
        **run,
        **train,
        **time,
        **memory,
        "git_commit": env["git"]["commit"],
        "git_dirty": env["git"]["dirty"],
        **evaluation,
        "paths": paths,
        "diagnostics": diagnostics or None,
        "delta": delta,
        "config": config,
        "env": env,
        "started_at": started_at,
        "finished_at": now_iso(),
    }
