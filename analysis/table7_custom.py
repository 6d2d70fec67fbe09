"""Table 7 and Fig. 14 (image customisation) from the runs of ``+experiment=custom``, with the
paper's numbers beside ours and Table 7's claims (App. D) checked.

Reads the customisation rows of a results table (``--results``, e.g. the committed
``results/embedded/runs.csv``; experiment ``custom``: the DreamBooth rows and Textual Inversion; its
``base`` variant, the runs of ``custom--base``: the pre-trained model sampled with the same
prompts), or without one the result records under ``--root``, and writes into ``--out``:

* ``table7.md`` / ``table7.csv``: CLIP-I, CLIP-T and VLHI per subject and their Mean (VLHI over the
  six rows of a subject, the Mean column its own group of mean CLIP-I / mean CLIP-T, as the paper
  computes it; :func:`sara.metrics.clip_i_t.vlhi_custom`), the paper's Table 7 beside it, the
  ground-truth table (subject fidelity and language drift per row, the pre-trained model
  included, and over the subjects), and each row's settings and wall time;
* with ``--root`` only (they need the runs' samples): ``subjects.png``, the embedded subjects'
  reference images, and ``fig14_custom.png``, a Fig. 14-like grid, per subject one reference image
  and, per row, the first seed of three evaluation prompts;
* ``table7_claims.md`` / ``table7_claims.json``: each claim of App. D quoted verbatim with its
  verdict on the embedded world (and whether the paper's own Table 7 bears it out).

Noise: one training seed per cell; a metric's spread is its standard error over the evaluation
images (``clip_i_se``, ``clip_t_se``; a proportion's binomial SE). Differences decide a claim only
beyond 2 standard errors (the rule of :mod:`sara.stats`); VLHI claims use a parametric bootstrap
of CLIP-I / CLIP-T (share of draws in which the claim holds: >= 95% reproduced, <= 5% not).

    python -m analysis.table7_custom --results results/embedded/runs.csv     # tables and claims
    python -m analysis.table7_custom --root outputs/runs                     # from the run directories, with figures
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sara.data.subjects import GROUND_TRUTH
from sara.metrics.clip_i_t import load_reported_custom, reproduce_table7, vlhi_custom
from sara.stats import INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, decide

from .common import load, num
from .verdicts import Claim, evaluate, paper_verdict

EXPERIMENT, BASE_EXPERIMENT = "custom", "custom--base"
ROWS = ["textual_inversion", "full", "lora", "adaptformer", "lt_sft", "sara"]
LABELS = {"textual_inversion": "Textual Inversion", "full": "DreamBooth + Full", "lora": "DreamBooth + LoRA",
          "adaptformer": "DreamBooth + AdaptFormer", "lt_sft": "DreamBooth + LT-SFT",
          "sara": "DreamBooth + SaRA", "base": "Pre-trained (no fine-tuning)"}
PAPER_SUBJECTS = ("Dog", "Clock", "Backpack")
MEAN = "Mean"
PAPER_SOURCE = "App. D, Table 7 / Fig. 14"


# --------------------------------------------------------------------------- loading
GROUND_TRUTH_COLUMNS = ("subject_fidelity", "subject_score", "language_drift")


def current_ground_truth(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ground-truth columns emptied where another detector version than
    :data:`sara.data.subjects.GROUND_TRUTH` (or none recorded) scored them (rescore: ``python -m
    sara.customisation_checks ground-truth RUN_DIR``)."""
    cols = [c for c in GROUND_TRUTH_COLUMNS if c in df]
    version = df["ground_truth"] if "ground_truth" in df else pd.Series(np.nan, index=df.index)
    return df.assign(**{c: df[c].where(version.eq(GROUND_TRUTH)) for c in cols})


def runs_from_results(results: pd.DataFrame) -> pd.DataFrame:
    """The customisation rows of a results table (``python -m sara.results``; the committed
    ``results/embedded/runs.csv``), one per subject and row: ``subject`` (the dataset), ``row``
    (the method, or ``base`` for the pre-trained model: the ``base`` variant), the metrics
    (:func:`current_ground_truth`); runs of any other variant (``experiment_name=custom--<variant>``)
    are left out. A cell run with several seeds keeps its last seed (one training seed per cell)."""
    d = results[results["experiment"] == EXPERIMENT] if "experiment" in results else results.iloc[:0]
    d = current_ground_truth(d)
    if "clip_i" in d:
        d = d[d["clip_i"].notna()]
    variant = d["variant"].fillna("") if "variant" in d else pd.Series("", index=d.index)
    keep = variant.isin(["", "base"])  # another variant (custom--steps300, a tuning probe) is not Table 7's cell
    d, variant = d[keep], variant[keep]
    d = d.copy().assign(subject=d["dataset"], row=np.where(variant == "base", "base", d["method"]))
    if d.empty or "seed" not in d:
        return d
    return d.sort_values(["subject", "row", "seed"]).drop_duplicates(["subject", "row"], keep="last")


def load_runs(results: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """:func:`runs_from_results` of the results table ``results``, or, without one, of the runs
    found under ``root`` (their ``result.json`` records)."""
    if results is not None:
        return runs_from_results(load(results))
    from sara.results import load_results

    df = load_results(root or "outputs/runs")
    return runs_from_results(df.assign(variant=df["variant"].fillna("")) if "variant" in df else df)


def run_path(run_dir, root: str | os.PathLike | None) -> Path | None:
    """A run directory of the table (absolute, or relative to the runs root it was gathered from)."""
    if not isinstance(run_dir, str) or not run_dir:
        return None
    for p in (Path(run_dir), Path(root) / run_dir if root else None):
        if p is not None and (p / "samples").is_dir():
            return p
    return None


def table7(df: pd.DataFrame) -> pd.DataFrame:
    """Ours: per subject and Mean, CLIP-I / CLIP-T / VLHI of the rows present (VLHI needs >= 2)."""
    rows = df[df["row"].isin(ROWS)]
    out = []
    for subject, g in rows.groupby("subject", sort=True):
        g = g.set_index("row").reindex([r for r in ROWS if r in set(g["row"])])
        v = vlhi_custom(g["clip_i"], g["clip_t"]) if len(g) >= 2 else [np.nan] * len(g)
        for (row, x), vv in zip(g.iterrows(), v):
            out.append({"subject": subject, "row": row, "clip_i": x["clip_i"], "clip_t": x["clip_t"], "vlhi": vv,
                        "clip_i_se": x.get("clip_i_se"), "clip_t_se": x.get("clip_t_se")})
    t = pd.DataFrame(out)
    if t.empty:
        return t
    n_subj = t["subject"].nunique()
    full = t.groupby("row").filter(lambda g: len(g) == n_subj)  # Mean over rows run on every subject
    means = full.groupby("row").agg(clip_i=("clip_i", "mean"), clip_t=("clip_t", "mean")).reindex(
        [r for r in ROWS if r in set(full["row"])])
    se = full.groupby("row").agg(clip_i_se=("clip_i_se", lambda s: math.sqrt((s ** 2).sum()) / len(s)),
                                 clip_t_se=("clip_t_se", lambda s: math.sqrt((s ** 2).sum()) / len(s)))
    if len(means) >= 2:
        means["vlhi"] = vlhi_custom(means["clip_i"], means["clip_t"])
        means = means.join(se)
        t = pd.concat([t, means.reset_index().assign(subject=MEAN)], ignore_index=True)
    return t


# --------------------------------------------------------------------------- noise-aware checks
def _decide(a: float, sa: float, b: float, sb: float) -> str | None:
    """'a', 'b' or None: which mean is higher beyond 2 combined standard errors (sara.stats' rule)."""
    return decide(a - b, math.sqrt((sa or 0.0) ** 2 + (sb or 0.0) ** 2), lower_is_better=False)


def _all_better(t: pd.DataFrame, who: str, others, col: str, higher: bool = True) -> tuple[str, str]:
    m = t[t["subject"] == MEAN].set_index("row")
    if who not in m.index or not set(others) <= set(m.index):
        return NOT_RUN, "needs every row on every subject"
    wins, losses, parts = 0, 0, []
    for o in others:
        d = _decide(m.at[who, col], m.at[who, col + "_se"], m.at[o, col], m.at[o, col + "_se"])
        good = d == ("a" if higher else "b")
        bad = d == ("b" if higher else "a")
        wins, losses = wins + good, losses + bad
        parts.append(f"{LABELS[o].replace('DreamBooth + ', '')} {m.at[o, col]:.4g}{'' if d else ' (within 2 SE)'}")
    verdict = REPRODUCED if wins == len(others) else NOT_REPRODUCED if losses else INCONCLUSIVE
    return verdict, f"{LABELS[who]} Mean {col} {m.at[who, col]:.4g} vs " + ", ".join(parts)


def _vlhi_best_share(t: pd.DataFrame, who: str, draws: int = 400, seed: int = 0) -> tuple[str, str]:
    m = t[t["subject"] == MEAN].set_index("row")
    subj = t[(t["subject"] != MEAN) & t["row"].isin(m.index)]
    if who not in m.index or len(m) < len(ROWS):
        return NOT_RUN, "needs every row on every subject"
    rng = np.random.default_rng(seed)
    rows = list(m.index)
    hits = 0
    for _ in range(draws):
        ci = {r: [] for r in rows}
        ct = {r: [] for r in rows}
        for _, x in subj.iterrows():
            ci[x["row"]].append(rng.normal(x["clip_i"], x["clip_i_se"] or 0.0))
            ct[x["row"]].append(rng.normal(x["clip_t"], x["clip_t_se"] or 0.0))
        v = vlhi_custom([np.mean(ci[r]) for r in rows], [np.mean(ct[r]) for r in rows])
        hits += int(np.argmax(v) == rows.index(who))
    share = hits / draws
    verdict = REPRODUCED if share >= 0.95 else NOT_REPRODUCED if share <= 0.05 else INCONCLUSIVE
    best = m["vlhi"].idxmax()
    return verdict, (f"Mean VLHI: {LABELS[who]} {m.at[who, 'vlhi']:.2f}, best {LABELS[best]} {m.at[best, 'vlhi']:.2f}; "
                     f"{LABELS[who]} best in {share:.0%} of {draws} bootstrap draws of CLIP-I/CLIP-T")


def _prop_se(p: float, n: float) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def fidelity_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["subject_fidelity", "subject_score", "language_drift", "clip_i", "clip_t"]
    have = [c for c in cols if c in df.columns]
    keep = ["subject", "row", *have] + [c for c in ("n_images", "n_class_images") if c in df.columns]
    t = df[df["row"].isin(ROWS + ["base"])][keep].copy()
    for c in ("n_images", "n_class_images"):
        if c in t:
            t[c] = num(t, c).astype("Int64")
    order = {r: i for i, r in enumerate(["base"] + ROWS)}
    return t.sort_values(["subject", "row"], key=lambda s: s.map(order) if s.name == "row" else s)


def _fidelity_claim(df: pd.DataFrame, who: str, what: str = "subject_fidelity") -> tuple[str, str]:
    f = fidelity_table(df)
    if what not in f.columns or "n_images" not in f.columns:
        return NOT_RUN, "no subject-fidelity numbers"
    p = f.groupby("row").agg(v=(what, "mean"), n=("n_images", "sum"))
    if who not in p.index or "base" not in p.index:
        return NOT_RUN, f"needs the {LABELS[who]} and the pre-trained runs"
    a, b = p.at[who, "v"], p.at["base", "v"]
    d = _decide(a, _prop_se(a, p.at[who, "n"]), b, _prop_se(b, p.at["base", "n"]))
    verdict = REPRODUCED if d == "a" else NOT_REPRODUCED if d == "b" else INCONCLUSIVE
    return verdict, f"subject fidelity (share of subject prompts showing the subject, all subjects): {LABELS[who]} {a:.2f} vs pre-trained {b:.2f}"


def _drift_claim(df: pd.DataFrame) -> tuple[str, str]:
    f = fidelity_table(df)
    if "language_drift" not in f.columns or "n_class_images" not in f.columns:
        return NOT_RUN, "no language-drift numbers"
    p = f.groupby("row").agg(v=("language_drift", "mean"), n=("n_class_images", "sum"))
    if "sara" not in p.index or "full" not in p.index:
        return NOT_RUN, "needs the SaRA and full fine-tuning runs"
    a, b = p.at["sara", "v"], p.at["full", "v"]
    d = _decide(a, _prop_se(a, p.at["sara", "n"]), b, _prop_se(b, p.at["full", "n"]))
    verdict = REPRODUCED if d == "b" else NOT_REPRODUCED if d == "a" else INCONCLUSIVE
    return verdict, (f"language drift (share of plain class-prompt samples showing the subject): SaRA {a:.2f} vs "
                     f"full fine-tuning {b:.2f} (prior kept = less drift)")


# --------------------------------------------------------------------------- claims (App. D, verbatim)
def _paper_rows() -> pd.DataFrame:
    w = reproduce_table7()
    return w[w["subject"] == MEAN].set_index("method")


def table7_claims(df: pd.DataFrame) -> list[dict]:
    """App. D's claims, quoted verbatim, judged on the customisation runs (the per-run table read
    from the run directories, with per-image spreads); written beside Table 7 as table7_claims.*"""
    t = table7(df)
    p = _paper_rows()
    peft_low = ["full", "adaptformer", "lt_sft"]

    def paper(cond: bool) -> str:
        return "bears it out" if cond else "does not bear it out"

    out = []

    def add(cid, text, check, paper_ok):
        verdict, evidence = check() if not t.empty else (NOT_RUN, "no customisation runs found")
        out.append({"id": cid, "claim": text, "source": PAPER_SOURCE, "verdict": verdict, "evidence": evidence,
                    "paper_table": paper_ok})

    add("custom-lora-overfits",
        "As shown in Tab. 7, LoRA achieves a high CLIP-IMG score but the lowest CLIP-Text score, indicating a "
        "severe overfitting problem.",
        lambda: _combine(_all_better(t, "lora", [r for r in ROWS if r != "lora"], "clip_i"),
                         _all_better(t, "lora", [r for r in ROWS if r != "lora"], "clip_t", higher=False)),
        paper(p["CLIP-I"].idxmax() == "lora" and p["CLIP-T"].idxmin() == "lora"))
    add("custom-others-low",
        "Other PEFT methods, including full-parameter fine-tuning, achieve relatively low CLIP-IMG and CLIP-Text "
        "scores.",
        lambda: _combine(*[_all_better(t, "lora", [o], "clip_i") for o in peft_low],
                         *[_all_better(t, "sara", [o], "clip_t") for o in peft_low]),
        paper(all(p.at[o, "CLIP-I"] < p.at["lora", "CLIP-I"] and p.at[o, "CLIP-T"] < p.at["sara", "CLIP-T"]
                  for o in peft_low)))
    add("custom-sara-best-clip-t",
        "In contrast, our method achieves the best CLIP-Text score",
        lambda: _all_better(t, "sara", [r for r in ROWS if r != "sara"], "clip_t"),
        paper(p["CLIP-T"].idxmax() == "sara"))
    add("custom-sara-clip-i-second",
        "a competitive CLIP-IMG score (only lower than the overfitted LoRA)",
        lambda: _combine(_all_better(t, "sara", [r for r in ROWS if r not in ("sara", "lora")], "clip_i"),
                         _all_better(t, "lora", ["sara"], "clip_i")),
        paper(p["CLIP-I"].drop("lora").idxmax() == "sara" and p.at["lora", "CLIP-I"] > p.at["sara", "CLIP-I"]))
    add("custom-sara-best-vlhi",
        "and the best average VLHI score across three datasets, demonstrating its effectiveness in image "
        "customization tasks.",
        lambda: _vlhi_best_share(t, "sara"),
        paper(p["VLHI"].idxmax() == "sara"))
    out.append({"id": "custom-sara-learns-subject",
                "claim": "As shown in Fig. 14, our method can learn the subject content well while preserving the "
                         "prior information of the diffusion model, thereby improving the consistency between the "
                         "generated images and the given texts",
                "source": PAPER_SOURCE, **dict(zip(("verdict", "evidence"), _combine(
                    _fidelity_claim(df, "sara"), _drift_claim(df)))),
                "paper_table": "– (a figure)"})
    return out


def _combine(*results: tuple[str, str]) -> tuple[str, str]:
    verdicts = [v for v, _ in results]
    ev = "; ".join(e for _, e in results)
    if NOT_RUN in verdicts:
        return NOT_RUN, ev
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED, ev
    if INCONCLUSIVE in verdicts:
        return INCONCLUSIVE, ev
    return REPRODUCED, ev


# --------------------------------------------------------------------------- figure
def fig14(df: pd.DataFrame, path: Path, root: str | os.PathLike | None = None, n_prompts: int = 3) -> Path | None:
    """Per subject: a reference image, then per row (pre-trained first) the first seed of three
    evaluation prompts: the plain subject prompt, the plain class prompt (language drift) and a
    recontextualisation. ``[V]`` stands for the identifier (``sks``; ``<sks>`` for Textual
    Inversion). Needs the runs' samples: run directories as recorded, or relative to ``root``;
    None when none of them is here."""
    df = df.assign(run_path=[run_path(d, root) for d in df["run_dir"]]) if "run_dir" in df else df.iloc[:0]
    df = df[df["run_path"].notna()]
    if df.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import re

    import matplotlib.pyplot as plt
    from PIL import Image

    from sara.data.subjects import subject_images

    rows = [r for r in ["base"] + ROWS if r in set(df["row"])]
    subjects = sorted(df["subject"].unique())
    if not rows or not subjects:
        return None

    def generic(text: str) -> str:
        return re.sub(r"(<sks>|\bsks\b)", "[V]", text)

    ncols = 1 + len(rows)
    fig, axes = plt.subplots(len(subjects) * n_prompts, ncols,
                             figsize=(1.1 * ncols + 1.2, 1.15 * len(subjects) * n_prompts), squeeze=False)
    for si, subject in enumerate(subjects):
        runs = df[df["subject"] == subject].set_index("row")
        picks = None
        for ci, row in enumerate(rows):
            if row not in runs.index:
                continue
            sdir = runs.at[row, "run_path"] / "samples"
            recs = [json.loads(x) for x in (sdir / "prompts.jsonl").read_text().splitlines() if x.strip()]
            firsts: dict[str, int] = {}
            for k, rr in enumerate(recs):
                firsts.setdefault(generic(rr["text"]), k)
            if picks is None:  # the plain subject prompt, the class prompt, then a recontextualisation
                order = sorted(firsts, key=lambda t: (len(t.split()) > 3, "[V]" not in t, firsts[t]))
                picks = [order[0], order[1], order[2]][:n_prompts] if len(order) >= 3 else order
                picks = [p for p in picks if "[V]" in p and len(p.split()) <= 3] + \
                        [p for p in picks if "[V]" not in p] + [p for p in picks if len(p.split()) > 3]
            for pi, text in enumerate(picks):
                if text not in firsts:
                    continue
                ax = axes[si * n_prompts + pi, ci + 1]
                ax.imshow(Image.open(sdir / recs[firsts[text]]["file_name"]).convert("RGB"), interpolation="nearest")
                if si == 0 and pi == 0:
                    ax.set_title(LABELS[row].replace("DreamBooth + ", "DB + ").replace(" (no fine-tuning)", ""),
                                 fontsize=6)
                if ci == 0:
                    ax.set_ylabel(text.replace(" above", "\nabove").replace(" left", "\nleft")
                                  .replace(" below", "\nbelow").replace(" right", "\nright"), fontsize=5,
                                  rotation=0, ha="right", va="center")
        refdir = _subject_dir(df[df["subject"] == subject])
        if refdir is not None:
            axes[si * n_prompts, 0].imshow(Image.open(subject_images(refdir)[0]).convert("RGB"),
                                           interpolation="nearest")
            axes[si * n_prompts, 0].set_title(f"{subject}\n(reference)", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=200)
    plt.close(fig)
    return path


def subjects_figure(path: Path, seed: int = 0) -> Path:
    """The embedded subjects' reference images (as written by sara.data.subjects), one row each."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from sara.data.subjects import N_IMAGES, SUBJECT_NAMES, SUBJECTS, subject_images, write_subjects

    with tempfile.TemporaryDirectory() as tmp:
        write_subjects(tmp, seed)
        fig, axes = plt.subplots(len(SUBJECT_NAMES), N_IMAGES, figsize=(1.0 * N_IMAGES, 1.1 * len(SUBJECT_NAMES)),
                                 squeeze=False)
        for i, name in enumerate(SUBJECT_NAMES):
            for j, f in enumerate(subject_images(Path(tmp) / name)):
                axes[i, j].imshow(Image.open(f).convert("RGB"), interpolation="nearest")
            axes[i, 0].set_ylabel(f"{name}\n('{SUBJECTS[name].class_noun}')", fontsize=6, rotation=0, ha="right",
                                  va="center")
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout(pad=0.2, rect=(0.16, 0, 1, 1))
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return path


def _subject_dir(runs: pd.DataFrame) -> Path | None:
    for d in runs["run_path"]:
        rec = d / "result.json"
        if rec.is_file():
            info = (json.loads(rec.read_text()).get("eval_info") or {})
            if info.get("subject_dir") and Path(info["subject_dir"]).is_dir():
                return Path(info["subject_dir"])
    return None


# --------------------------------------------------------------------------- output
def _md(df: pd.DataFrame, floatfmt: dict | None = None) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("–" if not math.isfinite(v) else (floatfmt or {}).get(c, "{:.3f}").format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _wide(t: pd.DataFrame, subjects) -> pd.DataFrame:
    rows = []
    for r in ROWS:
        line = {"method": LABELS[r]}
        for s in subjects:
            x = t[(t["subject"] == s) & (t["row"] == r)]
            for k, c in (("CLIP-I", "clip_i"), ("CLIP-T", "clip_t"), ("VLHI", "vlhi")):
                line[f"{s} {k}"] = float(x[c].iloc[0]) if len(x) else float("nan")
        rows.append(line)
    return pd.DataFrame(rows)


def overall_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per row, over every subject: subject fidelity and language drift as counts of images (k of
    n), mean CLIP-I and CLIP-T."""
    f = fidelity_table(df)
    if not {"subject_fidelity", "language_drift", "n_images", "n_class_images"} <= set(f.columns):
        return pd.DataFrame()
    out = []
    for row, g in f.groupby("row", sort=False):
        (k, n), (kc, nc) = pooled_count(g, "subject_fidelity", "n_images"), pooled_count(g, "language_drift",
                                                                                           "n_class_images")
        out.append({"method": LABELS[row], "subjects": len(g),
                    "subject_fidelity": f"{k / n:.2f} ({int(k)} of {int(n)})",
                    "language_drift": f"{kc / nc:.2f} ({int(kc)} of {int(nc)})",
                    "clip_i": num(g, "clip_i").mean(), "clip_t": num(g, "clip_t").mean()})
    return pd.DataFrame(out)


def pooled_count(g: pd.DataFrame, share: str, count: str) -> tuple[float, float]:
    """(k, n) over the runs of ``g``: images showing it (each run's ``share`` × its ``count``) and images."""
    n = num(g, count)
    return (num(g, share) * n).round().sum(), n.sum()


def _rate(g: pd.DataFrame) -> pd.Series:
    """The learning rate a run trained at: the resolved rate, else the method's own (a policy such
    as ``eq12`` with ``budget=none`` falls back to it)."""
    lr = num(g, "lr")
    return lr.fillna(num(g, "config.method.lr"))


def settings_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per row: trainable parameters, learning rate, steps, prior-loss weight and wall time of its
    runs (one value, or the range over the subjects where they differ)."""
    rows = df[df["row"].isin(["base"] + ROWS)]
    if rows.empty:
        return pd.DataFrame()

    def span(v: pd.Series, fmt: str) -> str:
        v = v.dropna()
        if v.empty:
            return "–"
        lo, hi = fmt.format(v.min()), fmt.format(v.max())
        return lo if lo == hi else f"{lo}–{hi}"

    out = []
    order = {r: i for i, r in enumerate(["base"] + ROWS)}
    for row, g in sorted(rows.groupby("row"), key=lambda x: order[x[0]]):
        # the weight the run used (eval_info), else its config's; none without prior preservation
        prior = num(g, "eval_info.prior_loss_weight").fillna(num(g, "config.custom.prior_loss_weight")).where(
            g.get("eval_info.prior_preservation", pd.Series(True, index=g.index)).astype(str) != "False")
        out.append({"method": LABELS[row], "trainable params": span(num(g, "trainable_params"), "{:,.0f}"),
                    "lr": span(_rate(g), "{:.2g}") if row != "base" else "–",
                    "steps": span(num(g, "steps"), "{:.0f}"),
                    "prior loss weight": span(prior, "{:g}") if row != "base" else "–",
                    "wall time (s)": span(num(g, "wall_time_s"), "{:.0f}")})
    return pd.DataFrame(out)


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(prog="python -m analysis.table7_custom", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=None,
                    help="results table (python -m sara.results; results/embedded/runs.csv); without it the runs "
                         "under --root are read")
    ap.add_argument("--root", default=None,
                    help="run directories (default outputs/runs when no --results): Fig. 14 needs their samples")
    ap.add_argument("--out", default="outputs/analysis/custom")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = args.root if args.root or args.results else "outputs/runs"
    df = load_runs(args.results, root)
    source = f"results table `{args.results}`" if args.results else f"runs under `{root}`"
    written = []
    paper = load_reported_custom().pivot_table(index=["method", "subject"], columns="metric", values="value").reset_index()
    paper_wide = []
    for r in ROWS:
        line = {"method": LABELS[r]}
        for s in (*PAPER_SUBJECTS, MEAN):
            x = paper[(paper["method"] == r) & (paper["subject"] == s)]
            for k in ("CLIP-I", "CLIP-T", "VLHI"):
                line[f"{s} {k}"] = float(x[k].iloc[0])
        paper_wide.append(line)
    paper_wide = pd.DataFrame(paper_wide)
    md = ["# Table 7 — image customisation (DreamBooth subjects)", ""]
    clip_fmt = {"clip_i": "{:.3f}", "clip_t": "{:.2f}"}
    if df.empty:
        md.append(f"No customisation runs in the {source} yet: `bash experiments/custom.sh`.")
    else:
        t = table7(df)
        subjects = [s for s in sorted(t["subject"].unique()) if s != MEAN] + ([MEAN] if MEAN in set(t["subject"]) else [])
        ours = _wide(t, subjects)
        ours.to_csv(out / "table7.csv", index=False)
        written.append(out / "table7.csv")
        md += ["## Ours (embedded world)",
               "CLIP-I: raw cosine; CLIP-T: 100 x cosine (embedded CLIP); VLHI over the six rows of a subject "
               "(Mean: over the rows' mean CLIP-I / CLIP-T). One training seed per cell.", "",
               _md(ours, {c: "{:.2f}" if ("CLIP-T" in c or "VLHI" in c) else "{:.3f}" for c in ours.columns}), ""]
        f = fidelity_table(df).rename(columns={"row": "method"})
        f["method"] = f["method"].map(LABELS)
        md += ["## Ground truth: subject fidelity and language drift",
               "subject_fidelity: share of subject-prompt samples in which the subject's detector finds it; "
               "language_drift: share of plain class-prompt samples that show the subject.", "", _md(f), ""]
        overall = overall_table(df)
        if not overall.empty:
            md += ["### Over the subjects", "Images counted over every subject a row was run on.", "",
                   _md(overall, clip_fmt), ""]
        settings = settings_table(df)
        md += ["## Settings and wall time of the runs",
               "Per row as recorded by its runs (a range where the subjects' runs differ); lr: the rate the "
               "optimizer used; prior loss weight: DreamBooth's prior-preservation weight (– without prior "
               "preservation).", "", _md(settings), ""]
    md += ["## Paper (Table 7, SD 1.5)", "",
           _md(paper_wide, {c: "{:.2f}" if ("CLIP-T" in c or "VLHI" in c) else "{:.3f}" for c in paper_wide.columns}),
           "", "The paper's VLHI cells recompute from its CLIP-I / CLIP-T cells within "
           f"{reproduce_table7()['abs_err'].max():.3f} (all 24)."]
    (out / "table7.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written.append(out / "table7.md")
    if args.root:  # figures: the subjects' reference images, and samples of the runs found under --root
        written.append(subjects_figure(out / "subjects.png"))
        g = fig14(df, out / "fig14_custom.png", root) if not df.empty else None
        if g is not None:
            written.append(g)
    res = table7_claims(df) if not df.empty else []
    (out / "table7_claims.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    cm = ["# Table 7's claims (App. D) on the embedded world", ""]
    if res:
        cm += ["| id | claim (verbatim) | verdict | paper's Table 7 |", "|---|---|---|---|"]
        cm += [f"| {r['id']} | {r['claim']} | {r['verdict']} | {r['paper_table']} |" for r in res]
        cm += ["", "## Evidence", ""] + [f"- **{r['id']}** ({r['verdict']}): {r['evidence']}" for r in res]
    else:
        cm.append(f"No customisation runs in the {source} yet: every claim is not run.")
    (out / "table7_claims.md").write_text("\n".join(cm) + "\n", encoding="utf-8")
    written += [out / "table7_claims.json", out / "table7_claims.md"]
    return written


if __name__ == "__main__":
    for p in main():
        print(p)


# --------------------------------------------------------------------------- in the claims report (C31–C36)
#: the claims report's ids of App. D's claims, in the order table7_claims states them
REPORT_IDS = {"custom-lora-overfits": "C31", "custom-others-low": "C32", "custom-sara-best-clip-t": "C33",
              "custom-sara-clip-i-second": "C34", "custom-sara-best-vlhi": "C35", "custom-sara-learns-subject": "C36"}


def claims(df: pd.DataFrame) -> list[dict]:
    """C31–C36 (App. D, verbatim) on the results table ``df`` (see ``analysis.claims``)."""
    runs = runs_from_results(df)
    by_key = {r["id"]: r for r in table7_claims(runs)} if len(runs) else {}
    out = []
    for key, cid in REPORT_IDS.items():
        r = by_key.get(key)
        check = (lambda r=r: (r["verdict"], r["evidence"])) if r else (lambda: (NOT_RUN, "no customisation runs"))
        paper_ok = (r or {}).get("paper_table", "")
        paper = None if not paper_ok or paper_ok.startswith("–") else \
            (lambda ok=paper_ok: (paper_verdict(ok == "bears it out"), "Table 7 Mean row"))
        text = (r or {}).get("claim") or key
        out.append(Claim(cid, text, "Table 7 / Fig. 14", "custom", lambda _d, c=check: c(), paper))
    return evaluate(df, out)
