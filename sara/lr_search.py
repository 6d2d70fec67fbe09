"""Per-method learning rates: pick each method's rate from a log-spaced grid, store and look it up.

The paper states SaRA's rate (Eq. 12) but not its baselines'. A fair comparison runs every method
at its own rate, chosen by the same rule: for one backbone, method and budget, the grid's runs
(validation prompts, seeds averaged) are scored by VLHI over the grid — the paper's own way to
pick the best rate ("the VLHI metric ... balancing FID and CLIP scores ... The optimal learning
rate for each threshold is marked with a red box", App. K, Fig. 21) — and the highest VLHI wins
(ties: the smaller rate). A winner at either end of the grid is flagged: the grid should be
widened there.

The table lives in a YAML file per backbone (``results/lr/<backbone>.yaml``):

    rates:            # backbone -> method -> budget label -> learning rate
      sara: {5M: 0.001, 20M: 0.0003}
    scores: ...       # the per-rate FID, CLIP and VLHI the choice was made from
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from sara.metrics.vlhi import VLHIError, vlhi

DEFAULT_GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
MIN_GRID_POINTS = 5
MIN_GRID_SPAN = 30.0
REPO_ROOT = Path(__file__).resolve().parent.parent
LR_TABLE_DIR = REPO_ROOT / "results" / "lr"


class LRTableError(ValueError):
    """A learning-rate table is missing, malformed, or lacks the asked-for entry."""


def check_grid(grid: Iterable[float]) -> tuple[float, ...]:
    """A valid search grid: at least 5 distinct positive rates spanning at least 30x."""
    g = tuple(sorted({float(v) for v in grid}))
    if any(not math.isfinite(v) or v <= 0 for v in g):
        raise ValueError(f"learning-rate grid: every rate must be a positive number, got {list(g)}")
    if len(g) < MIN_GRID_POINTS or g[-1] / g[0] < MIN_GRID_SPAN:
        raise ValueError(f"learning-rate grid: need >= {MIN_GRID_POINTS} rates spanning >= {MIN_GRID_SPAN:g}x, "
                         f"got {len(g)} spanning {g[-1] / g[0]:.3g}x: {list(g)}")
    return g


def select_learning_rates(records: Iterable[Mapping[str, Any]]) -> tuple[dict, dict]:
    """Choose a rate per (backbone, method, budget) from result rows.

    Each row needs ``backbone, method, budget, lr, fid, clip_score`` (``seed`` optional: rows of one
    rate are averaged over seeds first). Returns ``(rates, scores)``: ``rates[backbone][method][budget]
    = lr`` and ``scores`` with, per group, every rate's mean FID, CLIP, VLHI, seed count, and
    ``at_edge`` (the winner is the grid's smallest or largest rate). A group whose rates do not
    yet form a valid grid (:func:`check_grid`) gets no rate: its ``scores`` entry has ``chosen =
    None`` and ``incomplete`` (why), so one method's unfinished search does not stop the others.
    """
    groups: dict[tuple, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        missing = [k for k in ("backbone", "method", "budget", "lr", "fid", "clip_score") if r.get(k) is None]
        if missing:
            raise ValueError(f"select_learning_rates: a row lacks {missing}: {dict(r)}")
        fid, clip = float(r["fid"]), float(r["clip_score"])
        if math.isfinite(fid) and math.isfinite(clip):
            groups[(str(r["backbone"]), str(r["method"]), str(r["budget"]))][float(r["lr"])].append((fid, clip))
    rates: dict = {}
    scores: dict = {}
    for (backbone, method, budget), by_lr in sorted(groups.items()):
        lrs = sorted(by_lr)
        fid = [sum(f for f, _ in by_lr[lr]) / len(by_lr[lr]) for lr in lrs]
        clip = [sum(c for _, c in by_lr[lr]) / len(by_lr[lr]) for lr in lrs]
        try:
            check_grid(lrs)
        except ValueError as e:  # a grid still running, or cut short: no rate is chosen from it
            scores.setdefault(backbone, {}).setdefault(method, {})[budget] = {
                "grid": [{"lr": lr, "fid": f, "clip_score": c, "vlhi": None, "n_seeds": len(by_lr[lr])}
                         for lr, f, c in zip(lrs, fid, clip)],
                "chosen": None, "at_edge": False, "incomplete": str(e).split(": ", 1)[-1]}
            continue
        try:
            v = [float(x) for x in vlhi(fid, clip)]
        except VLHIError as e:
            raise ValueError(f"select_learning_rates: {backbone}/{method}/{budget}: {e}") from None
        best = max(range(len(lrs)), key=lambda i: (v[i], -lrs[i]))
        rates.setdefault(backbone, {}).setdefault(method, {})[budget] = lrs[best]
        scores.setdefault(backbone, {}).setdefault(method, {})[budget] = {
            "grid": [{"lr": lr, "fid": f, "clip_score": c, "vlhi": s, "n_seeds": len(by_lr[lr])}
                     for lr, f, c, s in zip(lrs, fid, clip, v)],
            "chosen": lrs[best],
            "at_edge": best in (0, len(lrs) - 1),
        }
    return rates, scores


def write_lr_table(path: str | Path, rates: Mapping, scores: Mapping, meta: Mapping | None = None) -> Path:
    """Write one backbone's table (``rates``/``scores`` for that backbone only) as YAML."""
    from sara.io import atomic_write_text

    doc = {"meta": dict(meta or {}), "rates": _plain(rates), "scores": _plain(scores)}
    return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=True))


def _plain(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o


def lr_table_path(backbone: str, root: str | Path | None = None) -> Path:
    return Path(LR_TABLE_DIR if root is None else root) / f"{backbone}.yaml"


def tuned_lr(backbone: str, method: str, budget: str, root: str | Path | None = None) -> float:
    """The tuned rate of ``method`` at ``budget`` on ``backbone``; a clear error when absent."""
    path = lr_table_path(backbone, root)
    if not path.is_file():
        raise LRTableError(f"train.lr=tuned: no learning-rate table for backbone {backbone!r} at {path}; "
                           f"run `bash experiments/lr_search.sh backbone={backbone}` or set train.lr to a number")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LRTableError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rates"), dict):
        raise LRTableError(f"{path}: expected a mapping with key 'rates' (method -> budget -> lr)")
    by_budget = doc["rates"].get(method)
    if not isinstance(by_budget, dict) or str(budget) not in {str(k) for k in by_budget}:
        have = {m: sorted(map(str, b)) for m, b in doc["rates"].items() if isinstance(b, dict)}
        raise LRTableError(f"{path}: no tuned rate for method {method!r} at budget {budget!r}; "
                           f"the table has {have}. Run the learning-rate search for it or set train.lr")
    value = {str(k): v for k, v in by_budget.items()}[str(budget)]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LRTableError(f"{path}: rates.{method}.{budget} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise LRTableError(f"{path}: rates.{method}.{budget} must be a positive number, got {value!r}")
    return value



# ------------------------------------------------------------------------------------------------
# widening the grid where the best rate is at its edge
# ------------------------------------------------------------------------------------------------
def next_rate(lr: float, up: bool) -> float:
    """The neighbour of ``lr`` on the 1-3-10 ladder of the default grid (3e-3 -> 1e-2 -> 3e-2 up)."""
    e = math.floor(math.log10(lr) + 1e-9)
    m = lr / 10**e
    if math.isclose(m, 1.0, rel_tol=1e-6):
        return 3 * 10**e if up else 3 * 10 ** (e - 1)
    if math.isclose(m, 3.0, rel_tol=1e-6):
        return 10 ** (e + 1) if up else 10**e
    return lr * 3 if up else lr / 3


def widen(scores: Mapping, max_lr: float = 1.0, min_lr: float = 1e-7) -> list[tuple[str, str, str, float]]:
    """``[(backbone, method, budget, rate)]``: for every group whose chosen rate is the grid's largest
    (smallest), the next rate above (below) it, so the search goes on until its best rate is inside
    the grid (bounded by ``min_lr``/``max_lr``)."""
    out = []
    for backbone, by_method in scores.items():
        for method, by_budget in by_method.items():
            for budget, s in by_budget.items():
                if s.get("chosen") is None or not s.get("at_edge"):
                    continue
                lrs = [g["lr"] for g in s["grid"]]
                up = s["chosen"] == max(lrs)
                lr = next_rate(max(lrs) if up else min(lrs), up)
                if min_lr <= lr <= max_lr:
                    out.append((str(backbone), str(method), str(budget), lr))
    return out
