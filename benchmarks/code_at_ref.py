"""A module of ``sara.core`` as it is at another git revision, loaded beside the current one, so
a benchmark can time old and new code in one process under the same load."""
from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_at(ref: str, name: str):
    """``sara.core.<name>`` as it is at git ``ref`` (its relative imports resolve in the current
    ``sara.core``)."""
    src = subprocess.run(["git", "show", f"{ref}:sara/core/{name}.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"sara.core._{name}_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
