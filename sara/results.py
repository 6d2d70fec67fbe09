"""The results store, read side: every ``result.json`` under a root gathered into one table.

Runs live in ``outputs/runs/<experiment>/<backbone>/<dataset>/<method>/<budget>/seed<seed>/``
(:mod:`sara.record` defines the layout and the record). A finished run has ``result.json``; a failed run has
``failed.json`` (and no ``result.json``). This module turns a tree of them into

- :func:`load_results` → one row per finished run (pandas), with the canonical columns of
  :data:`CANONICAL` first, then every metric (flattened, ``metrics.fid`` → ``fid``), then the
  whole record flattened with dotted names (``config.train.lr``, ``time.train_s``, ...);
- :func:`load_failed` → one row per failed run (identity, error, run dir).

Lists and nested structures a run records for the analysis (migration curves, subspace grids,
amplification records) are kept as JSON strings in their cells (:func:`decode` reads them back),
so the table round-trips through CSV.

A corrupt or partial ``result.json`` (not JSON, not an object) is skipped with a
:class:`ResultWarning` naming the file; it never stops the load.

Command line::

    python -m sara.results --root outputs/runs --csv results.csv [--failed-csv failed.csv]
                           [--parquet results.parquet] [--experiment style]
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from sara.record import FAILED_FILE, RESULT_FILE, identity_from_parts

__all__ = [
    "ResultWarning",
    "CANONICAL",
    "ID_COLUMNS",
    "METRIC_ALIASES",
    "find_run_dirs",
    "read_record",
    "record_to_row",
    "load_results",
    "load_failed",
    "failed_table_path",
    "merge_failed",
    "merge_tables",
    "read_table",
    "write_table",
    "decode",
    "parse_budget",
    "parse_run_dir",
    "split_experiment",
    "main",
]


ID_COLUMNS = ["experiment", "variant", "backbone", "dataset", "method", "budget", "seed"]

# Canonical columns and where each may be found in a record (first hit wins; dotted paths into
# the flattened record). The run directory supplies the identity columns when the record lacks
# them. Keep these lists generous: the record's layout belongs to sara.record.
_CANDIDATES: dict[str, list[str]] = {
    "experiment": ["experiment", "experiment_name", "config.experiment_name"],
    "backbone": ["backbone", "config.backbone.name"],
    "dataset": ["dataset", "config.data.name", "config.dataset.name"],
    "method": ["method", "method_record.method", "config.method.name"],
    "budget": ["budget", "config.budget.name"],
    "seed": ["seed", "config.seed"],
    "trainable_params": ["trainable_params", "method_record.trainable_params", "num_trainable"],
    "target_params": ["target_params", "method_record.target_params"],
    "denoiser_params": ["denoiser_params"],
    "knob": ["method_record.knob", "knob"],
    "knob_value": ["method_record.knob_value", "knob_value"],
    "wall_time_s": ["wall_time_s", "time.wall_s", "time_s.wall"],
    "setup_time_s": ["time.setup_s", "time_s.setup"],
    "train_time_s": ["train_time_s", "time.train_s", "time_s.train"],
    "sample_time_s": ["sample_time_s", "time.sample_s", "time_s.sample"],
    "eval_time_s": ["eval_time_s", "time.eval_s", "time_s.eval"],
    "session_time_s": ["time.total_this_session_s", "time_s.total_this_session"],
    "peak_memory_bytes": ["peak_memory_bytes", "peak_memory.bytes"],
    "peak_memory_kind": ["peak_memory.kind"],
    "steps": ["steps", "train.steps", "config.train.steps"],
    "final_loss": ["final_loss", "train.final_loss"],
    # hyper-parameters the analysis sweeps over
    "threshold": ["method_record.threshold", "config.method.threshold"],
    # the learning rate used: as resolved (train.lr=eq12/tuned), else train.lr, else the method's
    # lr, else its default (SaRA: Eq. 12); and the policy that chose it
    "lr": ["train.lr.lr", "config.train.lr", "method_record.lr", "config.method.lr", "method_record.lr_default"],
    "lr_policy": ["train.lr.policy"],
    "progressive_iter": ["method_record.progressive_iter", "config.method.progressive_iter"],
    "lambda_rank": ["method_record.lambda_rank", "config.method.lambda_rank"],
    "alpha": ["config.delta.alpha"],
    "beta1": ["config.delta.beta1"],
    "beta2": ["config.delta.beta2"],
    "merge_with": ["config.delta.merge_with"],
    "prune_threshold": ["diagnostics.prune.threshold", "config.diagnostics.prune_threshold"],
    "prune_fraction": ["diagnostics.prune.fraction"],
    "share_below": ["diagnostics.share_below"],
    "compat": ["config.method.compat"],
    "git_commit": ["git_commit", "env.git.commit"],
    # structured diagnostics (JSON cells)
    "migration": ["diagnostics.migration"],
    "subspace": ["diagnostics.subspace"],
    "amplification": ["diagnostics.amplification"],
}

CANONICAL = ID_COLUMNS + [c for c in _CANDIDATES if c not in ID_COLUMNS] + ["status", "run_dir"]

# metric name in a record → canonical column
METRIC_ALIASES = {
    "fid": "fid", "FID": "fid",
    "clip": "clip_score", "CLIP": "clip_score", "clip_score": "clip_score", "clipscore": "clip_score",
    "bvqa": "bvqa", "b_vqa": "bvqa", "B-VQA": "bvqa", "b-vqa": "bvqa",
    "clip_i": "clip_i", "CLIP-I": "clip_i", "clip_t": "clip_t", "CLIP-T": "clip_t",
    "vlhi": "vlhi_record", "VLHI": "vlhi_record",
}
METRIC_PREFIXES = ("metrics", "eval.metrics", "evaluation")

_JSON_COLUMNS = {"migration", "subspace", "amplification", "betas", "merge_with"}


class ResultWarning(UserWarning):
    """A result/failed record that could not be read (it is skipped)."""


# --------------------------------------------------------------------------- helpers


# Keys whose value is a dict keyed by module name: one JSON column, not a column per module (a
# per-module rank pattern would otherwise add a column for every module of every backbone).
MODULE_KEYED = frozenset({"knob_pattern"})


def _flatten(obj: Any, prefix: str = "", out: dict | None = None, max_depth: int = 6) -> dict:
    """Dotted-key flattening of nested dicts; lists, dicts keyed by module (``MODULE_KEYED``) and
    deeper structures become JSON strings."""
    out = {} if out is None else out
    if isinstance(obj, Mapping) and max_depth > 0 and prefix.rpartition(".")[2] not in MODULE_KEYED:
        if not obj and prefix:
            out[prefix] = "{}"
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            _flatten(v, key, out, max_depth - 1)
    elif isinstance(obj, (list, tuple, Mapping)):
        out[prefix] = json.dumps(obj, sort_keys=True, default=str)
    else:
        out[prefix] = obj
    return out


def _lookup(flat: Mapping[str, Any], raw: Mapping[str, Any], keys: Iterable[str], scalar: bool = False) -> Any:
    """First value found under one of ``keys`` (dotted paths). With ``scalar``, structured
    values are read as config groups (their ``name``) and skipped when they have none."""
    for k in keys:
        if k in flat and flat[k] is not None:
            return flat[k]
        # a structured value stays structured (JSON) under its own key
        node: Any = raw
        ok = True
        for part in k.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                ok = False
                break
        if ok and node is not None:
            if scalar:
                node = _name_of(node)
                if node is None or isinstance(node, (list, tuple, Mapping)):
                    continue
                return node
            return json.dumps(node, sort_keys=True, default=str) if isinstance(node, (list, tuple, Mapping)) else node
    return None


def _name_of(v: Any) -> Any:
    """A config group's name when the value is a dict/JSON of a group (``{"name": ...}``)."""
    if isinstance(v, str) and v.startswith("{"):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    if isinstance(v, Mapping):
        for k in ("name", "id", "_name_"):
            if k in v:
                return v[k]
        return None
    return v


VARIANT_SEP = "--"


def split_experiment(name: Any) -> tuple[Any, str]:
    """``"threshold--th0.002"`` → ``("threshold", "th0.002")``: an experiment name may carry a
    variant after ``--`` (the values of swept knobs that are not part of the run-dir layout)."""
    if not isinstance(name, str) or VARIANT_SEP not in name:
        return name, ""
    exp, _, var = name.partition(VARIANT_SEP)
    return exp, var


def parse_run_dir(run_dir: Path, root: Path) -> dict[str, Any]:
    """Identity from the path ``<experiment>[--<variant>]/<backbone>/<dataset>/<method>/<budget>/seed<N>``
    relative to ``root``."""
    try:
        parts = list(run_dir.resolve().relative_to(root.resolve()).parts)
    except ValueError:
        parts = list(run_dir.parts)
    ident = identity_from_parts(parts)
    if "experiment" in ident:
        ident["experiment"], ident["variant"] = split_experiment(ident["experiment"])
    return ident


def parse_budget(b: Any) -> float:
    """``"5M"`` → 5e6, ``"20k"`` → 2e4, ``"1.5B"`` → 1.5e9, numbers as they are; NaN otherwise
    ("full", "none", …)."""
    if b is None:
        return math.nan
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return float(b)
    s = str(b).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMbBgG]?)", s)
    if not m:
        return math.nan
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * mult


# --------------------------------------------------------------------------- reading


def find_run_dirs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(finished, failed)`` run directories under ``root`` (a finished run wins over a stale
    ``failed.json`` in the same directory)."""
    root = Path(root)
    finished = sorted({p.parent for p in root.rglob(RESULT_FILE)})
    done = set(finished)
    failed = sorted({p.parent for p in root.rglob(FAILED_FILE)} - done)
    return finished, failed


def read_record(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None (with a :class:`ResultWarning` naming the file) when
    it is unreadable, partial or not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        warnings.warn(f"skipping {path}: cannot read it ({e})", ResultWarning, stacklevel=2)
        return None
    try:
        rec = json.loads(text)
    except ValueError as e:
        warnings.warn(f"skipping {path}: not valid JSON, partial or corrupt ({e})", ResultWarning, stacklevel=2)
        return None
    if not isinstance(rec, dict):
        warnings.warn(f"skipping {path}: expected a JSON object, got {type(rec).__name__}",
                      ResultWarning, stacklevel=2)
        return None
    return rec


def _metrics(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Metric columns: ``metrics.<name>`` (scalars) under canonical names; nested dicts as
    ``<name>.<sub>`` (e.g. per-dataset FID of a merged model: ``fid.BarbieCore``)."""
    out: dict[str, Any] = {}
    for pref in METRIC_PREFIXES:
        node: Any = rec
        for part in pref.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        for k, v in _flatten(node).items():
            head, _, tail = k.partition(".")
            name = METRIC_ALIASES.get(head, head)
            col = f"{name}.{tail}" if tail else name
            # a metric dict {"value": x, ...} collapses to its value
            if tail in ("value", "mean") and name not in out:
                out[name] = v
            out.setdefault(col, v)
    return out


def record_to_row(rec: Mapping[str, Any], run_dir: Path, root: Path, status: str = "finished") -> dict:
    """One table row from a record: canonical columns, metrics, then the flattened record."""
    flat = _flatten(rec)
    ident = parse_run_dir(run_dir, root)
    row: dict[str, Any] = {}
    for col, keys in _CANDIDATES.items():
        row[col] = _lookup(flat, rec, keys, scalar=col in ID_COLUMNS)
    if isinstance(row.get("experiment"), str):
        row["experiment"], row["variant"] = split_experiment(row["experiment"])
    for col in ID_COLUMNS:  # the directory layout is the contract for identity
        if col in ident and ident[col] is not None:
            row[col] = ident[col]
    if row.get("variant") is None:
        row["variant"] = ""
    if row.get("seed") is not None:
        try:
            row["seed"] = int(row["seed"])
        except (TypeError, ValueError):
            pass
    if row.get("budget") is not None:
        row["budget"] = str(row["budget"])
    if row.get("threshold") is None and row.get("knob") == "threshold":
        row["threshold"] = row.get("knob_value")
    if row.get("wall_time_s") is None:
        parts = [row.get(k) for k in ("setup_time_s", "train_time_s", "sample_time_s", "eval_time_s")]
        parts = [float(v) for v in parts if isinstance(v, (int, float)) and not isinstance(v, bool)]
        row["wall_time_s"] = sum(parts) if parts else None
    row["budget_params"] = parse_budget(row.get("budget"))
    row["status"] = status
    row["run_dir"] = str(run_dir)
    row.update({k: v for k, v in _metrics(rec).items() if k not in row})
    for k, v in flat.items():
        row.setdefault(k, v)
    return row


def _frame(rows: list[dict], front: list[str]):
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=front)
    cols = [c for c in front if c in df.columns]
    metric_cols = [c for c in df.columns if c not in cols and c in set(METRIC_ALIASES.values())]
    rest = [c for c in df.columns if c not in cols and c not in metric_cols]
    df = df[cols + metric_cols + rest]
    sort = [c for c in ("experiment", "variant", "backbone", "dataset", "method", "budget", "seed") if c in df]
    return df.sort_values(sort, kind="stable", na_position="last").reset_index(drop=True)


def load_results(root: str | Path = "outputs/runs", experiment: str | None = None):
    """Every finished run under ``root`` as one pandas DataFrame (see the module doc)."""
    root = Path(root)
    finished, _ = find_run_dirs(root)
    rows = []
    for d in finished:
        rec = read_record(d / RESULT_FILE)
        if rec is None:
            continue
        status = rec.get("status", "complete")
        if status != "complete":
            warnings.warn(f"skipping {d / RESULT_FILE}: status is {status!r}, not 'complete' (partial record)",
                          ResultWarning, stacklevel=2)
            continue
        row = record_to_row(rec, d, root)
        if experiment is not None and row.get("experiment") != experiment:
            continue
        rows.append(row)
    return _frame(rows, CANONICAL + ["budget_params"])


def failed_table_path(table: str | Path) -> Path:
    """Where the failed runs of the results table ``table`` are written: ``<stem>_failed.csv`` beside it."""
    table = Path(table)
    return table.with_name(f"{table.stem}_failed.csv")


def load_failed(root: str | Path = "outputs/runs", experiment: str | None = None):
    """Every failed run (``failed.json`` without ``result.json``): identity, ``error``,
    ``error_type``, ``traceback`` (last 2,000 characters), ``run_dir``."""
    root = Path(root)
    _, failed = find_run_dirs(root)
    rows = []
    for d in failed:
        rec = read_record(d / FAILED_FILE)
        if rec is None:
            continue
        flat = _flatten(rec)
        row = {col: None for col in ID_COLUMNS}
        for col in ID_COLUMNS:
            if col in _CANDIDATES:
                row[col] = _lookup(flat, rec, _CANDIDATES[col], scalar=True)
        if isinstance(row.get("experiment"), str):
            row["experiment"], row["variant"] = split_experiment(row["experiment"])
        row.update(parse_run_dir(d, root))
        row["variant"] = row.get("variant") or ""
        row["error_type"] = _lookup(flat, rec, ["exception", "error_type", "exception_type"])
        row["error"] = _lookup(flat, rec, ["message", "error", "error.message"])
        tb = _lookup(flat, rec, ["traceback_tail", "traceback", "error.traceback"])
        row["traceback"] = tb[-2000:] if isinstance(tb, str) else tb
        row["status"] = "failed"
        row["run_dir"] = str(d)
        if experiment is not None and row.get("experiment") != experiment:
            continue
        rows.append(row)
    return _frame(rows, ID_COLUMNS + ["error_type", "error", "traceback", "status", "run_dir"])


# --------------------------------------------------------------------------- table files


WEIGHTS_KEY = "config.backbone.weights_id"


def _row_keys(df) -> list[tuple[str, str]]:
    """A row's identity in the table: its run directory and the backbone weights it used (a run
    directory rerun on re-trained weights is another result, kept beside the earlier one)."""
    weights = df[WEIGHTS_KEY] if WEIGHTS_KEY in df else [None] * len(df)
    return [(str(d), "" if w is None or w != w else str(w)) for d, w in zip(df["run_dir"], weights)]


def _relative_run_dirs(dirs, root: str | Path) -> list[str]:
    """Run directories as stored in a committed table: relative to the runs root they were found under."""
    root = Path(root).resolve()
    return [Path(d).resolve().relative_to(root).as_posix() if Path(d).resolve().is_relative_to(root) else d
            for d in dirs]


def merge_tables(old, new, root: str | Path):
    """``new`` (runs found under ``root``; run_dir made relative to it) plus the rows of ``old``
    whose (run_dir, backbone weights) is not among them, sorted: the same runs give the same table."""
    import pandas as pd

    new = new.copy()
    new["run_dir"] = _relative_run_dirs(new["run_dir"], root)
    if old is not None and len(old):
        replaced = set(_row_keys(new))
        old = old[[k not in replaced for k in _row_keys(old)]]
        new = pd.concat([old, new], ignore_index=True) if len(new) else old
    cols = [c for c in CANONICAL if c in new] + sorted(c for c in new if c not in CANONICAL)
    keys = _row_keys(new)
    order = sorted(range(len(new)), key=keys.__getitem__)
    return new[cols].iloc[order].reset_index(drop=True)


def merge_failed(old, new, finished, root: str | Path):
    """The failed-runs table under ``--merge``: ``new`` (runs failed under ``root`` now) plus the
    rows of ``old`` whose run has neither failed again nor finished under ``root`` now, so a
    failure recorded on another machine is kept and a rerun that finished clears it.
    ``finished``: the finished runs' directories under ``root``."""
    if old is not None and len(old):
        done = set(_relative_run_dirs(finished, root))
        old = old[~old["run_dir"].astype(str).isin(done)]
    return merge_tables(old, new, root)


def write_table(df, path: str | Path) -> Path:
    """Write ``df`` as CSV (``.csv``) or parquet (``.parquet``/``.pq``, needs pyarrow)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix in (".parquet", ".pq"):
        try:
            df.to_parquet(tmp, index=False)
        except ImportError as e:
            raise SystemExit(f"writing {path} needs pyarrow (pip install pyarrow), or use --csv: {e}")
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def read_table(path: str | Path):
    """Read a results table written by :func:`write_table` (CSV or parquet)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results table {path} not found (build it with "
                                f"`python -m sara.results --root outputs/runs --csv {path}`)")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    # only empty cells are missing: "none" / "None" are names here (budget=none)
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for c in ("variant", "budget", "dataset", "method", "backbone", "experiment"):
        if c in df.columns:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    if "variant" in df.columns:
        df["variant"] = df["variant"].fillna("")
    return df


def decode(value: Any) -> Any:
    """A JSON cell (diagnostic series, grids) back to Python; NaN/None → None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, dict)):
        return value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sara.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="outputs/runs", help="runs root (default outputs/runs)")
    ap.add_argument("--csv", help="write the results table as CSV here")
    ap.add_argument("--parquet", help="write the results table as parquet here (needs pyarrow)")
    ap.add_argument("--failed-csv", help="write the failed runs here (default: next to --csv as *_failed.csv)")
    ap.add_argument("--experiment", help="only this experiment id")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of an existing --csv (and of its failed-runs table) whose run is not under "
                         "--root now (the committed results table gathers runs from several machines); run_dir is "
                         "stored relative to --root")
    args = ap.parse_args(argv)

    root = Path(args.root)
    if not root.is_dir():
        print(f"no runs root at {root}", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResultWarning)
        df = load_results(root, args.experiment)
        failed = load_failed(root, args.experiment)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    fpath = args.failed_csv or (str(failed_table_path(args.csv)) if args.csv else None)
    if args.merge:
        if not args.csv:
            ap.error("--merge needs --csv")
        failed = merge_failed(read_table(fpath) if Path(fpath).is_file() else None, failed, df["run_dir"], root)
        df = merge_tables(read_table(args.csv) if Path(args.csv).is_file() else None, df, root)
    if args.csv:
        write_table(df, args.csv)
    if args.parquet:
        write_table(df, args.parquet)
    if fpath:
        write_table(failed, fpath)
    n_exp = df["experiment"].nunique() if len(df) and "experiment" in df else 0
    print(f"{len(df)} finished run(s) in {n_exp} experiment(s), {len(failed)} failed, "
          f"{len(caught)} unreadable record(s) skipped, under {root}")
    if len(df):
        show = [c for c in ("experiment", "backbone", "dataset", "method", "budget") if c in df]
        print(df.groupby(show[:2], dropna=False).size().to_string())
    if len(failed):
        print("failed runs:")
        for _, r in failed.iterrows():
            print(f"  {r['run_dir']}: {r.get('error_type') or ''} {str(r.get('error') or '')[:200]}")
    if not (args.csv or args.parquet):
        print("(nothing written: give --csv or --parquet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
