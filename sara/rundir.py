"""One run directory, one process, one config.

* :func:`hold_run_dir`: an exclusive lock (``flock``) on ``.<run dir name>.lock`` beside the run
  directory, holding the owner's pid, for the whole run; a second process on the same directory
  (two overlapping sweeps, a command started twice) gets :class:`RunDirBusyError` naming the
  owner at once, instead of training the same run twice and both writing the record.
* :class:`StaleRunError`: a finished run whose recorded config differs from the one asked for in
  a setting that changes the result; it is never taken as done (set ``overwrite=true`` or use
  another ``experiment_name``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


class RunDirBusyError(RuntimeError):
    """Another process holds the run directory."""


class StaleRunError(RuntimeError):
    """The run directory holds a finished run made with another config."""

    def __init__(self, run_dir: Path, keys: list[str]):
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        super().__init__(
            f"{run_dir} holds a finished run made with another config (differs in [{shown}]); "
            "it is not this run's result. Rerun with overwrite=true to replace it, or give this "
            "run its own directory (experiment_name=<name>)")
        self.keys = keys


def lock_path(run_dir: Path) -> Path:
    """Beside the run directory, so clearing the directory (``overwrite=true``) keeps it."""
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``run_dir`` for this process (released on exit, also when the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no check
        yield Path(run_dir)
        return
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            raise RunDirBusyError(
                f"{run_dir} is in use by {owner}: the same run is already going on. Wait for it "
                "to end, then run the same command again (it is then done, or resumes)") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        try:
            yield run_dir
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()
