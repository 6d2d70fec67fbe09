"""VLHI — the paper's Visual-Linguistic Harmony Index (SaRA, ICLR 2025, Eq. 8).

Within one group (one backbone and one dataset: all methods and budgets of a table)::

    VLHI_i = (FID_max - FID_i) / (FID_max - FID_min) + (CLIP_i - CLIP_min) / (CLIP_max - CLIP_min)

Range [0, 2], higher is better. Table 6 puts B-VQA in place of CLIP. The "Mean" column of the
paper's tables is the group formed by each row's *mean* FID and *mean* CLIP over the datasets
(VLHI is computed within that Mean group, not averaged over the per-dataset VLHIs).

Pure numpy (+ pandas for the table helpers). Applied to the paper's Table 1 FID/CLIP cells
grouped by (backbone, dataset) this reproduces all 234 reported VLHI cells within 0.01
(``tests/test_metrics_vlhi.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "VLHIError",
    "vlhi",
    "add_vlhi",
    "add_mean_rows",
    "long_to_wide",
    "load_reported",
    "reproduce_reported",
    "DATASETS",
]

DATASETS = ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")
MEAN = "Mean"
GROUP_KEYS = ("backbone", "dataset")
ROW_KEYS = ("backbone", "params", "method")


class VLHIError(ValueError):
    """Raised for inputs on which Eq. 8 is undefined (group of one, NaN, unequal lengths, ...)."""


def _as_1d(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise VLHIError(f"VLHI: {name} must be a sequence of numbers ({e})") from None
    if a.ndim != 1:
        raise VLHIError(f"VLHI: {name} must be one-dimensional (one value per method/budget), got shape {a.shape}")
    return a


def vlhi(fid: Sequence[float], clip: Sequence[float]) -> np.ndarray:
    """VLHI of each entry of one group (SPEC Eq. 8).

    ``fid`` and ``clip`` are the group's FID values (lower is better) and CLIP scores (or B-VQA,
    higher is better), one per method/budget, in the same order. Returns a float64 array of
    the same length with values in [0, 2].

    Raises :class:`VLHIError` (a ``ValueError``) for unequal lengths, a group of fewer than two
    entries, NaN/inf values, or a metric that takes one value across the whole group (its
    normalisation ``max - min`` would be zero).
    """
    f = _as_1d(fid, "fid")
    c = _as_1d(clip, "clip")
    if f.shape != c.shape:
        raise VLHIError(f"VLHI: fid and clip must have equal lengths, got {f.size} FID and {c.size} CLIP values")
    if f.size < 2:
        raise VLHIError(
            f"VLHI: a group needs at least two entries (methods/budgets compared on one backbone and "
            f"dataset), got {f.size}; VLHI normalises by the group's max - min"
        )
    for name, a in (("fid", f), ("clip", c)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise VLHIError(f"VLHI: {name} has NaN/inf at position(s) {bad.tolist()}: {a[bad].tolist()}")
    f_rng = f.max() - f.min()
    c_rng = c.max() - c.min()
    for name, rng, a in (("fid", f_rng, f), ("clip", c_rng, c)):
        if rng == 0:
            raise VLHIError(
                f"VLHI: every {name} value of the group equals {a[0]!r}; max - min = 0, so Eq. 8 is undefined"
            )
    return (f.max() - f) / f_rng + (c - c.min()) / c_rng


# --------------------------------------------------------------------------- pandas helpers


def add_vlhi(
    df,
    group_by: Iterable[str] = GROUP_KEYS,
    fid_col: str = "FID",
    clip_col: str = "CLIP",
    out_col: str = "VLHI",
):
    """Return a copy of a wide results table with a VLHI column filled group by group.

    ``df`` has one row per (backbone, dataset, method, budget, ...) and columns ``fid_col`` and
    ``clip_col`` (use ``clip_col="B-VQA"`` for Table 6). Groups are formed by ``group_by``
    (default: backbone and dataset, as in the paper). A group of one raises :class:`VLHIError`
    naming the group.
    """
    import pandas as pd  # noqa: F401  (pandas is a hard dependency of the helpers only)

    group_by = list(group_by)
    missing = [c for c in [*group_by, fid_col, clip_col] if c not in df.columns]
    if missing:
        raise VLHIError(f"VLHI: results table lacks column(s) {missing}; it has {list(df.columns)}")
    out = df.copy()
    out[out_col] = np.nan
    for key, g in out.groupby(group_by, sort=False, dropna=False):
        try:
            v = vlhi(g[fid_col].to_numpy(), g[clip_col].to_numpy())
        except VLHIError as e:
            key = key if isinstance(key, tuple) else (key,)
            raise VLHIError(f"{e} [group {dict(zip(group_by, key))}]") from None
        out.loc[g.index, out_col] = v
    return out


def add_mean_rows(
    df,
    row_keys: Iterable[str] = ROW_KEYS,
    dataset_col: str = "dataset",
    metrics: Iterable[str] = ("FID", "CLIP"),
    datasets: Iterable[str] | None = None,
    mean_name: str = MEAN,
):
    """Append the paper's "Mean" rows: for each row key (backbone, params, method) the mean of
    each metric over the datasets (default: every dataset present except an existing Mean).

    Existing ``mean_name`` rows are replaced. Run :func:`add_vlhi` afterwards: the Mean rows then
    form their own group per backbone, which is the paper's convention (Table 1 "Mean").
    A row key that lacks one of the datasets raises :class:`VLHIError`.
    """
    import pandas as pd

    row_keys = list(row_keys)
    metrics = list(metrics)
    base = df[df[dataset_col] != mean_name]
    ds = list(datasets) if datasets is not None else list(dict.fromkeys(base[dataset_col]))
    base = base[base[dataset_col].isin(ds)]
    rows = []
    for key, g in base.groupby(row_keys, sort=False, dropna=False):
        have = set(g[dataset_col])
        if have != set(ds):
            raise VLHIError(
                f"VLHI: cannot form the Mean row of {dict(zip(row_keys, key))}: missing dataset(s) "
                f"{sorted(set(ds) - have)}"
            )
        row = dict(zip(row_keys, key))
        row[dataset_col] = mean_name
        for m in metrics:
            row[m] = float(g[m].mean())
        rows.append(row)
    return pd.concat([df[df[dataset_col] != mean_name], pd.DataFrame(rows)], ignore_index=True)


def long_to_wide(df, index=("table", "backbone", "params", "method", "dataset")):
    """Long form (…, metric, value) — the layout of ``paper/reported_style_finetuning.csv`` —
    to one row per index with one column per metric."""
    index = [c for c in index if c in df.columns]
    wide = df.pivot_table(index=index, columns="metric", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    return wide


def _paper_dir() -> Path:
    # <repo>/paper (the reported numbers, copied from the paper)
    return Path(__file__).resolve().parents[2] / "paper"


def load_reported(path: str | Path | None = None):
    """The paper's reported Tables 1, 4, 5, 6 in long form (table, backbone, params, method,
    dataset, metric, value)."""
    import pandas as pd

    p = Path(path) if path is not None else _paper_dir() / "reported_style_finetuning.csv"
    if not p.is_file():
        raise FileNotFoundError(f"reported numbers not found at {p} (expected the repo's paper/ folder)")
    return pd.read_csv(p)


def reproduce_reported(table: str = "table1", df=None, recompute_mean: bool = False):
    """Recompute a reported table's VLHI cells from its FID and CLIP (or B-VQA) cells.

    Returns the wide table with columns ``VLHI`` (reported), ``VLHI_recomputed`` and
    ``abs_err``. With ``recompute_mean`` the Mean rows' FID/CLIP are recomputed from the five
    datasets (unrounded) instead of taking the reported Mean cells.
    """
    df = load_reported() if df is None else df
    w = long_to_wide(df[df["table"] == table])
    q = "CLIP" if "CLIP" in w.columns else "B-VQA"
    if recompute_mean:
        reported = w[[*ROW_KEYS, "dataset", "VLHI"]]
        w = add_mean_rows(w.drop(columns=["VLHI"]), metrics=["FID", q])
        w = w.merge(reported, on=[*ROW_KEYS, "dataset"], how="left")
        w["table"] = table
    r = add_vlhi(w, clip_col=q, out_col="VLHI_recomputed")
    r["abs_err"] = (r["VLHI_recomputed"] - r["VLHI"]).abs()
    return r
