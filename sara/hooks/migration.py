"""``diagnostics.migration_*`` (Fig. 3): the migration tracker of sara.core driven by the trainer,
its history kept in the run directory across resumed sessions."""
from __future__ import annotations

import contextlib
from pathlib import Path

from sara.io import atomic_write_json, read_json
from sara.record import MIGRATION_FILE


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
