"""What a person sees when ``run.py`` ends: the run's metrics on the last line, and one short
message on stderr (no traceback, exit status 2) for a problem they can fix: a setting, missing
weights, a checkpoint that cannot be read, another process on the same run directory. Ctrl-C
says where training stopped and how to go on."""
from __future__ import annotations

import sys
from typing import Any, Callable


#: (module, class) of the exceptions whose message is the whole story (no traceback needed)
USER_ERRORS = (("sara.preflight", "UsageError"), ("sara.backbones.loading", "MissingWeightsError"),
               ("sara.weights", "CorruptCheckpointError"), ("sara.rundir", "RunDirBusyError"),
               ("sara.rundir", "StaleRunError"), ("sara.train", "CheckpointMismatchError"),
               ("sara.hooks.schema", "HookConfigError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """The classes of :data:`USER_ERRORS` whose modules are loaded (an exception of a module
    that was never imported cannot have been raised; importing it would load torch)."""
    return tuple(getattr(sys.modules[m], c) for m, c in USER_ERRORS
                 if m in sys.modules and hasattr(sys.modules[m], c))


def final_line(record: dict) -> str:
    """``<status>: <run dir> | fid=… clip_score=… | train … s`` for the end of a run."""
    run_dir = (record.get("paths") or {}).get("run_dir") or record.get("run_dir") or "?"
    if record.get("status") != "complete":
        return f"failed: {run_dir} ({record.get('exception')}: {record.get('message')})"
    metrics = record.get("metrics") or {}
    shown = [f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
             for k, v in metrics.items() if not isinstance(v, (dict, list))]
    what = " ".join(shown) if shown else "no metrics (eval.metrics=[])"
    how = "already done" if record.get("_already_done") else "done"
    return f"{how}: {run_dir} | {what}"


def run_or_exit(fn: Callable[[Any], dict], cfg: Any) -> dict:
    """``fn(cfg)`` with the run's outcome on the last line; user errors and Ctrl-C end the
    process with a short message instead of a traceback."""
    try:
        record = fn(cfg)
    except KeyboardInterrupt as e:
        step = getattr(e, "sara_step", None)
        where = f"at step {step}" if step is not None else "before training finished"
        print(f"interrupted {where}; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(final_line(record), flush=True)
    return record
