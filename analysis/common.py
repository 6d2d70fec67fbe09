"""Shared helpers of the analysis modules (``analysis/<id>.py``).

The scripts read ONLY the results table (``python -m sara.results --root outputs/runs --csv
results.csv``), never model code, and write PNG + PDF figures and Markdown + LaTeX tables into an
output directory. Each one is ``python -m analysis.<id> --results results.csv --out DIR`` and
also importable (``main(argv) -> list[Path]`` of the files written).

Conventions of the results table (``sara.results``): identity columns ``experiment, variant,
backbone, dataset, method, budget, seed``; metrics ``fid, clip_score, bvqa``; swept knobs
``threshold, lr, progressive_iter, lambda_rank, alpha, betas, merge_with, prune_threshold,
prune_fraction``; structured diagnostics ``migration, subspace, amplification`` as JSON cells.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from sara.results import decode, parse_budget, read_table

_REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MPLBACKEND", "Agg")

DATASETS = ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")
MEAN = "Mean"

METHOD_LABELS = {
    "sara": "SaRA", "lora": "LoRA", "dora": "DoRA", "adaptformer": "AdaptFormer", "lt_sft": "LT-SFT",
    "lt_sft_ub": "LT-SFT (UB)", "diffpruning": "DiffPruning", "fishmask": "FishMask", "full": "Full",
    "largest": "Largest", "random": "Random", "sara_no_ppa": "SaRA w/o PPA",
    "sara_no_rank": "SaRA w/o rank loss", "sara_plain": "SaRA w/o PPA, w/o rank loss",
    "shira": "SHiRA", "super_tuning": "Super-Tuning", "none": "Pre-trained", "pretrained": "Pre-trained", "base": "Pre-trained",
}
METHOD_ORDER = ["none", "pretrained", "base", "full", "lora", "dora", "adaptformer", "lt_sft", "lt_sft_ub",
                "diffpruning", "fishmask", "shira", "super_tuning", "largest", "random", "sara_plain", "sara_no_rank",
                "sara_no_ppa", "sara"]
BASELINE_METHODS = {"none", "pretrained", "base"}
# paper method name → suite method id
PAPER_TO_SUITE = {"SaRA": "sara", "LoRA": "lora", "DoRA": "dora", "AdaptFormer": "adaptformer",
                  "LT-SFT": "lt_sft", "DiffPruning": "diffpruning", "FishMask": "fishmask", "Full": "full"}
# paper backbone → suite backbone id
PAPER_BACKBONES = {"SD1.5": "sd15", "SD2.0": "sd2", "SD3.0": "sd3", "SDXL": "sdxl"}

QUALITY_LABEL = {"clip_score": "CLIP", "bvqa": "B-VQA"}


# --------------------------------------------------------------------------- CLI and loading


def arg_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--results", required=True, help="results table (CSV or parquet) from `python -m sara.results`")
    ap.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    ap.add_argument("--experiment", default=None, help="experiment id to read (default: the script's own)")
    return ap


def load(path: str | Path, keep_superseded: bool = False) -> pd.DataFrame:
    """The results table with the identity columns every analysis expects and ``weights``.

    A run directory rerun on re-trained embedded weights keeps its earlier row in the table
    (``sara.results.merge_tables``); an analysis reads only the newest result of each run directory
    unless ``keep_superseded`` (the learnability table compares the weights side by side)."""
    df = read_table(path)
    for c in ("experiment", "variant", "backbone", "dataset", "method", "budget"):
        if c not in df.columns:
            df[c] = None
    df["variant"] = df["variant"].fillna("")
    if "seed" not in df.columns:
        df["seed"] = 0
    if "budget_params" not in df.columns:
        df["budget_params"] = [parse_budget(b) for b in df["budget"]]
    # which embedded weights a run used (runs recorded before the id was: "unrecorded")
    df = df.copy()  # defragment: the table has hundreds of columns
    wid = df["config.backbone.weights_id"] if "config.backbone.weights_id" in df else pd.Series(None, index=df.index)
    df["weights"] = wid.astype(str).str[:8].where(wid.notna(), "unrecorded")
    return df if keep_superseded else newest_per_run(df)


def newest_per_run(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run directory: the one with recorded weights over an unrecorded one, then the
    latest ``finished_at`` (rows without a run directory are all kept)."""
    if "run_dir" not in df.columns or df["run_dir"].isna().all():
        return df
    order = pd.DataFrame({"recorded": df["weights"].ne("unrecorded"),
                          "finished": df["finished_at"].astype(str) if "finished_at" in df else "",
                          "pos": range(len(df))}, index=df.index)
    newest = order.sort_values(["recorded", "finished", "pos"]).groupby(df["run_dir"], dropna=False).tail(1).index
    keep = df.index.isin(newest) | df["run_dir"].isna()
    return df[keep]


def rows_of(df: pd.DataFrame, experiment: str | Sequence[str] | None, prefix: bool = False) -> pd.DataFrame:
    """Rows of one experiment id (or several; ``prefix`` matches ``hyper*`` style ids)."""
    if experiment is None:
        return df
    exps = [experiment] if isinstance(experiment, str) else list(experiment)
    col = df["experiment"].astype(str)
    m = col.isin(exps)
    if prefix:
        for e in exps:
            m |= col.str.startswith(e)
    return df[m].copy()


def split_base(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of an experiment's ``<id>--base`` runs (the pre-trained model sampled with the
    experiment's prompts, ``train.steps=0``, recorded as ``method=full budget=none``) and the
    others, so a table never averages the pre-trained model into full fine-tuning."""
    is_base = df["variant"].astype(str).eq("base") if "variant" in df else pd.Series(False, index=df.index)
    return df[is_base], df[~is_base]


def num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df.columns else pd.Series(np.nan, index=df.index)


def has_metric(df: pd.DataFrame, *cols: str) -> bool:
    return all(c in df.columns and num(df, c).notna().any() for c in cols)


def mean_over_seeds(df: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean (and std, n) of ``metrics`` over seeds for each ``keys`` combination."""
    keys = [k for k in keys if k in df.columns]
    d = df.copy()
    present = [m for m in metrics if m in d.columns]
    for m in present:
        d[m] = num(d, m)
    for k in keys:  # groupby drops NaN keys unless told; keep them as strings
        if d[k].isna().any() and d[k].dtype == object:
            d[k] = d[k].fillna("")
    g = d.groupby(keys, dropna=False, sort=False)
    out = g[present].mean()
    if present:
        sd = g[present].std(ddof=1).add_suffix("_std")
        out = out.join(sd)
    out["n_seeds"] = g.size()
    return out.reset_index()


def method_label(m: Any) -> str:
    return METHOD_LABELS.get(str(m), str(m))


def method_sort_key(m: Any) -> tuple:
    m = str(m)
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def budget_sort_key(b: Any) -> tuple:
    v = parse_budget(b)  # budget-less rows (full fine-tuning: "none") first, as in the paper
    return (0, 0.0, str(b)) if math.isnan(v) else (1, v, str(b))


def sort_rows(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Sort by budget (numeric), then method (paper order), then the rest as strings."""
    keys = []
    for c in cols:
        if c == "budget":
            keys.append(df[c].map(budget_sort_key))
        elif c == "method":
            keys.append(df[c].map(method_sort_key))
        elif c == "dataset":
            keys.append(df[c].map(lambda d: (DATASETS.index(d) if d in DATASETS else (99 if d == MEAN else 50), str(d))))
        else:
            keys.append(df[c].map(lambda v: (0, float(v)) if _isnum(v) else (1, str(v))))
    order = sorted(range(len(df)), key=lambda i: tuple(k.iloc[i] for k in keys))
    return df.iloc[order].reset_index(drop=True)


def _isnum(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def fmt(v: Any, nd: int = 2, sci_small: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if abs(v) >= 1e7 or (sci_small and v != 0 and abs(v) < 10 ** (-nd)):
            return f"{v:.2e}"
        return f"{v:.{nd}f}"
    return str(v)


def fmt_mean_std(row: Any, col: str, nd: int = 2) -> str:
    """``mean ± std`` over seeds from a `mean_over_seeds` row (a std needs two seeds), else the mean."""
    v = row.get(col, np.nan)
    sd = row.get(f"{col}_std", np.nan)
    text = fmt(v, nd)
    return f"{text} ± {fmt(sd, nd)}" if text != "–" and isinstance(sd, float) and np.isfinite(sd) else text


# --------------------------------------------------------------------------- VLHI (metrics engineer's)


def vlhi_groups(df: pd.DataFrame, group_by: Sequence[str], fid_col: str = "fid",
                q_col: str = "clip_score", out_col: str = "vlhi") -> pd.DataFrame:
    """VLHI (SPEC Eq. 8, ``sara.metrics.vlhi``) within each group; a group on which Eq. 8 is
    undefined (one entry, a constant metric, NaN) gets NaN instead of an error."""
    from sara.metrics.vlhi import VLHIError, vlhi

    out = df.copy()
    out[out_col] = np.nan
    if out.empty:
        return out
    for _, g in out.groupby(list(group_by), dropna=False, sort=False):
        f = num(g, fid_col).to_numpy()
        q = num(g, q_col).to_numpy()
        ok = np.isfinite(f) & np.isfinite(q)
        if ok.sum() < 2:
            continue
        try:
            out.loc[g.index[ok], out_col] = vlhi(f[ok], q[ok])
        except VLHIError:
            continue
    return out


def style_long(df: pd.DataFrame, quality: str = "clip_score", datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """The Table 1 computation on a results table (already filtered to one experiment).

    Mean over seeds per (backbone, budget, method, dataset); Mean rows (each row's mean FID and
    mean quality over the datasets — only for rows that have every dataset); VLHI within each
    (backbone, dataset) group over all methods and budgets, the Mean rows forming their own group
    per backbone (the paper's convention). Columns: backbone, budget, method, dataset, fid,
    <quality>, vlhi, n_seeds.
    """
    keys = ["backbone", "budget", "method", "dataset"]
    m = mean_over_seeds(df, keys, ["fid", quality])
    m = m[num(m, "fid").notna() & num(m, quality).notna()]
    if m.empty:
        return m.assign(vlhi=np.nan)
    ds = list(datasets) if datasets else [d for d in dict.fromkeys(m["dataset"]) if d != MEAN]
    rows = []
    for (bb, bu, me), g in m.groupby(["backbone", "budget", "method"], dropna=False, sort=False):
        if set(ds) <= set(g["dataset"]):
            gg = g[g["dataset"].isin(ds)]
            rows.append({"backbone": bb, "budget": bu, "method": me, "dataset": MEAN,
                         "fid": gg["fid"].mean(), quality: gg[quality].mean(),
                         "n_seeds": int(gg["n_seeds"].min())})
    if rows:
        m = pd.concat([m, pd.DataFrame(rows)], ignore_index=True)
    m = vlhi_groups(m, ["backbone", "dataset"], "fid", quality, "vlhi")
    return sort_rows(m, ["backbone", "budget", "method", "dataset"])


# --------------------------------------------------------------------------- output


def out_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def save_fig(fig, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=100)
        paths.append(p)
    plt.close(fig)
    return paths


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def _tex_escape(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("θ", r"$\theta$"), ("λ", r"$\lambda$"),
                 ("α", r"$\alpha$"), ("β", r"$\beta$"), ("φ", r"$\phi$"), ("–", "--"), ("≤", r"$\le$"),
                 ("·", r"$\cdot$"), ("‖", r"$\|$"), ("ᵀ", r"$^\top$"), ("×", r"$\times$"), ("Δ", r"$\Delta$"),
                 ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("±", r"$\pm$")):
        s = s.replace(a, b)
    return s


def markdown_table(cells: Sequence[Sequence[str]], header: Sequence[str],
                   bold: Sequence[Sequence[bool]] | None = None) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(cells):
        out = []
        for j, c in enumerate(row):
            c = _md_escape(c)
            if bold is not None and bold[i][j]:
                c = f"**{c}**"
            out.append(c)
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def latex_table(cells: Sequence[Sequence[str]], header: Sequence[str], caption: str = "", label: str = "",
                bold: Sequence[Sequence[bool]] | None = None, n_index: int = 1,
                header_groups: Sequence[tuple[str, int]] | None = None,
                midrule_before: Iterable[int] = ()) -> str:
    ncol = len(header)
    spec = "l" * n_index + "r" * (ncol - n_index)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + _tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if header_groups:
        parts, rules, col = [], [], 1
        for name, span in header_groups:
            parts.append(r"\multicolumn{%d}{c}{%s}" % (span, _tex_escape(name)) if span > 1 else _tex_escape(name))
            if name and span > 1:
                rules.append(r"\cmidrule(lr){%d-%d}" % (col, col + span - 1))
            col += span
        lines.append(" & ".join(parts) + r" \\")
        if rules:
            lines.append(" ".join(rules))
    lines.append(" & ".join(_tex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    mids = set(midrule_before)
    for i, row in enumerate(cells):
        if i in mids and i:
            lines.append(r"\midrule")
        out = []
        for j, c in enumerate(row):
            c = _tex_escape(c)
            if bold is not None and bold[i][j]:
                c = r"\textbf{" + c + "}"
            out.append(c)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def write_tables(out: Path, name: str, sections: Sequence[dict], title: str = "", note: str = "") -> list[Path]:
    """Write ``name.md`` and ``name.tex``. Each section: ``{"title", "header", "cells", "bold",
    "caption", "label", "n_index", "header_groups", "midrule_before"}``."""
    md = [f"# {title}" if title else ""]
    tex = []
    if note:
        md.append(note)
        tex.append("% " + note.replace("\n", "\n% "))
    for s in sections:
        if s.get("title"):
            md.append(f"## {s['title']}")
        md.append(markdown_table(s["cells"], s["header"], s.get("bold")))
        if s.get("footer"):
            md.append(s["footer"])
        tex.append(latex_table(s["cells"], s["header"], s.get("caption", s.get("title", "")),
                               s.get("label", ""), s.get("bold"), s.get("n_index", 1),
                               s.get("header_groups"), s.get("midrule_before", ())))
    p_md, p_tex = out / f"{name}.md", out / f"{name}.tex"
    p_md.write_text("\n\n".join(x for x in md if x) + "\n", encoding="utf-8")
    p_tex.write_text("\n\n".join(tex) + "\n", encoding="utf-8")
    return [p_md, p_tex]


def write_missing(out: Path, name: str, what: str) -> list[Path]:
    """Nothing to show: write a note (Markdown + LaTeX comment) saying so."""
    msg = f"No results yet: {what}."
    (out / f"{name}.md").write_text(f"# {name}\n\n{msg}\n", encoding="utf-8")
    (out / f"{name}.tex").write_text(f"% {msg}\n", encoding="utf-8")
    print(f"{name}: {msg}", file=sys.stderr)
    return [out / f"{name}.md", out / f"{name}.tex"]


def record_report(argv, doc: str, name: str, title: str, default_json: str, default_out: str, make_by: str,
                  lines) -> list[Path]:
    """``main`` of a module that turns one committed measurement record (JSON) into
    ``<name>.md``: ``--json`` / ``--out`` options, "No results yet" naming ``make_by`` (the command
    that writes the record) when it is absent, else ``# title`` and ``lines(record)``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--json", default=default_json, help="the measurement record")
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    path = Path(args.json)
    if not path.is_file():
        return write_missing(out, name, f"no record at {path} ({make_by})")
    res = json.loads(path.read_text(encoding="utf-8"))
    (out / f"{name}.md").write_text("\n".join([f"# {title}", "", *lines(res)]) + "\n", encoding="utf-8")
    return [out / f"{name}.md"]


def best_mask(values: Sequence[float], lower_is_better: bool) -> list[bool]:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if len(a) < 2 or not np.isfinite(a).any():
        return [False] * len(a)
    best = np.nanmin(a) if lower_is_better else np.nanmax(a)
    return [bool(np.isfinite(v) and np.isclose(v, best, rtol=0, atol=1e-12)) for v in a]


def decode_col(df: pd.DataFrame, col: str) -> list[Any]:
    if col not in df.columns:
        return [None] * len(df)
    return [decode(v) for v in df[col]]


def run_main(main: Callable[[list[str] | None], list[Path]]) -> None:
    files = main(None)
    for f in files:
        print(f)


def dump_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- plotting and diagnostics


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
                         "figure.constrained_layout.use": True})
    return plt


def migration_frame(obj: Any) -> pd.DataFrame:
    """A migration record (``sara.core.diagnostics.MigrationTracker.as_dict()``:
    ``{"threshold", "history": [{"step", "still_below", "new_below", ...}]}``, or a dict of
    equal-length lists, or a list of rows) as a DataFrame sorted by step."""
    if obj is None:
        return pd.DataFrame()
    if isinstance(obj, dict) and "history" in obj:
        obj = obj["history"]
    if isinstance(obj, dict):
        obj = pd.DataFrame(obj)
    df = pd.DataFrame(obj)
    for k in ("step", "steps", "iteration", "iter"):
        if k in df.columns:
            df = df.rename(columns={k: "step"})
            break
    if "step" not in df.columns:
        df["step"] = range(len(df))
    return df.sort_values("step").reset_index(drop=True)


def sci(v: Any) -> str:
    """Short label of a knob value (1e-3 → '1e-03', 0.002 → '2e-03', 200 → '200')."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f == int(f) and abs(f) >= 1:
        return str(int(f))
    if f == 0:
        return "0"
    return f"{f:.0e}" if abs(f) < 0.01 else f"{f:g}"


# --------------------------------------------------------------------------- the paper's numbers


def paper_dir() -> Path:
    """The repo's copy of the paper's reported numbers (``paper/``)."""
    return _REPO / "paper"


def load_paper_long(path: str | Path | None = None) -> pd.DataFrame:
    from sara.metrics.vlhi import load_reported

    return load_reported(path)


def paper_wide(table: str, path: str | Path | None = None) -> pd.DataFrame:
    """One reported table (table1/4/5/6) as one row per (backbone, params, method, dataset)."""
    from sara.metrics.vlhi import long_to_wide

    df = load_paper_long(path)
    return long_to_wide(df[df["table"] == table]).reset_index(drop=True)


def parse_markdown_tables(text: str) -> dict[str, pd.DataFrame]:
    """Every pipe table of a Markdown text, keyed by the heading above it (``"Table 2 — ..."``)."""
    out: dict[str, pd.DataFrame] = {}
    heading, lines = None, text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        if ln.startswith("#"):
            heading = ln.lstrip("#").strip()
        elif ln.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            header = [c.strip() for c in ln.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out[heading or f"table{len(out)}"] = pd.DataFrame(rows, columns=header)
            continue
        i += 1
    return out


def paper_other(path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The tables of ``paper/reported_other.md`` keyed by ``"table2"``, ``"table8"``, ..."""
    p = Path(path) if path else paper_dir() / "reported_other.md"
    if not p.is_file():
        return {}
    out = {}
    for head, df in parse_markdown_tables(p.read_text(encoding="utf-8")).items():
        words = head.split()
        if len(words) >= 2 and words[0].lower() == "table":
            out["table" + words[1]] = df
    return out


def to_float(s: Any) -> float:
    try:
        return float(str(s).replace(",", "."))
    except ValueError:
        return float("nan")
