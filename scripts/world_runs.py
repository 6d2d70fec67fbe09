"""Helpers of the embedded-world measurement script ``measure_fid_noise.py``:
run one ``run.py`` job into a given directory and read its record; embedded FID of the first N
samples of a run.

A job is ``python run.py <overrides> hydra.run.dir=<dir>``; a finished run is skipped by run.py
itself (its result.json exists), so a stopped measurement resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_job(run_dir: Path, overrides: list[str], log=print) -> dict:
    """Run (or skip, when finished) one run.py job in ``run_dir``; return its result.json."""
    run_dir = Path(run_dir)
    result = run_dir / "result.json"
    if not result.is_file():
        cmd = [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"]
        log("$ " + " ".join(cmd))
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0 or not result.is_file():
            raise RuntimeError(f"run.py failed for {run_dir} (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(result.read_text())


def samples_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "samples"


def fid_first_n(run_dir: Path, n: int, dataset_dir: Path, device: str = "cpu") -> float:
    """Embedded FID of the first ``n`` samples of a run (listed in samples/prompts.jsonl) against
    ``dataset_dir``; the first N of a run's samples are the sample of N prompts (a prompt's noise
    does not depend on how many prompts are sampled)."""
    from sara.metrics.fid import compute_fid

    sdir = samples_dir(run_dir)
    rows = [json.loads(x) for x in (sdir / "prompts.jsonl").read_text().splitlines() if x.strip()]
    if len(rows) < n:
        raise ValueError(f"{sdir} holds {len(rows)} samples, fewer than the {n} asked for")
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(rows[:n]):
            os.symlink((sdir / r["file_name"]).resolve(), Path(tmp) / f"{i:05d}.png")
        return float(compute_fid(tmp, dataset_dir, "embedded", device))


def dataset_dir(name: str) -> Path:
    from sara.evaluate import resolve_dataset

    return resolve_dataset(name)


def mean_std(xs) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(list(xs), float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def add_common_args(p, datasets: str, out: str) -> None:
    """The arguments every measurement script takes."""
    p.add_argument("--backbone", default="tiny", help="backbone config (tiny | tiny_latent | ...)")
    p.add_argument("--datasets", default=datasets)
    p.add_argument("--out", default=str(ROOT / "outputs" / out))
    p.add_argument("--extra", nargs="*", default=[], help="more run.py overrides for every job (e.g. torch_threads=1)")


def write_report(out: Path, name: str, res: dict, lines: list[str]) -> dict:
    """``<out>/<name>.json`` (the numbers) and ``<out>/<name>.md`` (the table), printed too."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res
