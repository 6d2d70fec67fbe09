"""Figs. 21–24 and Eq. 12 — hyper-parameter grids of SaRA and the learning-rate-from-threshold fit.

Grids (the `hyper` experiment; the grid name is the first part of the run variant):
``lr_theta`` (learning rate × threshold, Fig. 21), ``lr_piter`` (learning rate × progressive
iteration, Fig. 23), ``rank_piter`` (λ_rank × progressive iteration, Fig. 24). For each grid:
heatmaps of FID, CLIP and VLHI (Eq. 8 within the grid), the best VLHI of each column boxed in red.
Fig. 22 / Eq. 12: for every θ of the lr × θ grid the lr with the best VLHI, fitted with
``lr = a · exp(b · θ)`` (scipy ``curve_fit``), next to the paper's ``1e-3 · exp(−350 θ)``.
Writes ``fig21_24_hyper_<grid>.{png,pdf}``, ``fig22_lr_fit.{png,pdf}``, ``fig21_24_hyper.{md,tex}``
and ``eq12_fit.json``.

    python -m analysis.fig21_24_hyper --results results.csv --out outputs/analysis/hyper
"""
from __future__ import annotations

import numpy as np

from .common import (arg_parser, dump_json, fmt, has_metric, load, mean_over_seeds, num, out_dir, pyplot,
                     rows_of, save_fig, sci, vlhi_groups, write_missing, write_tables)
from .verdicts import NOT_RUN, Claim, evaluate, spearman, verdict

NAME = "fig21_24_hyper"
KNOBS = ["lr", "threshold", "progressive_iter", "lambda_rank"]
LABEL = {"lr": "learning rate", "threshold": "threshold θ", "progressive_iter": "progressive iteration",
         "lambda_rank": "λ_rank"}
# grid name → (x knob, y knob, figure)
GRIDS = {"lr_theta": ("threshold", "lr", "Fig. 21"), "lr_piter": ("progressive_iter", "lr", "Fig. 23"),
         "rank_piter": ("progressive_iter", "lambda_rank", "Fig. 24")}
PAPER_A, PAPER_B = 1e-3, -350.0


def grid_name(variant: str) -> str:
    return str(variant).split("--")[0] if variant else "grid"


def grid_frames(df):
    """{grid: mean-over-seeds frame with x, y, fid, clip_score, vlhi}."""
    d = df.copy()
    d["grid"] = [grid_name(v) for v in d["variant"]]
    out = {}
    for g, h in d.groupby("grid", sort=True):
        if g in GRIDS:
            x, y, _ = GRIDS[g]
        else:  # unknown grid: the two knobs that vary
            vary = [k for k in KNOBS if num(h, k).nunique() > 1]
            if len(vary) < 2:
                continue
            x, y = vary[1], vary[0]
        h = h.assign(**{x: num(h, x), y: num(h, y)})
        h = h[h[x].notna() & h[y].notna()]
        if h.empty:
            continue
        m = mean_over_seeds(h, ["backbone", "dataset", x, y], ["fid", "clip_score"])
        m = vlhi_groups(m, ["backbone", "dataset"], "fid", "clip_score", "vlhi")
        out[g] = (x, y, m)
    return out


def best_per_column(m, x, y):
    """For each x value, the y value with the highest VLHI."""
    rows = []
    for xv, h in m.groupby(x, sort=True):
        h = h[np.isfinite(h["vlhi"])]
        if len(h):
            r = h.loc[h["vlhi"].idxmax()]
            rows.append((float(xv), float(r[y]), float(r["vlhi"])))
    return rows


def fit_eq12(thetas, lrs):
    """``lr = a·exp(b·θ)`` by least squares (scipy curve_fit, started from the log-linear fit)."""
    from scipy.optimize import curve_fit

    t = np.asarray(thetas, dtype=float)
    y = np.asarray(lrs, dtype=float)
    if len(t) < 2 or len(np.unique(t)) < 2:
        raise ValueError("the Eq. 12 fit needs at least two thresholds")
    b0, loga0 = np.polyfit(t, np.log(y), 1)
    f = lambda th, a, b: a * np.exp(b * th)  # noqa: E731
    try:
        (a, b), cov = curve_fit(f, t, y, p0=(np.exp(loga0), b0), maxfev=20000)
    except RuntimeError:
        a, b, cov = float(np.exp(loga0)), float(b0), np.full((2, 2), np.nan)
    pred = f(t, a, b)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"a": float(a), "b": float(b), "a_std": float(np.sqrt(abs(cov[0, 0]))) if np.isfinite(cov[0, 0]) else None,
            "b_std": float(np.sqrt(abs(cov[1, 1]))) if np.isfinite(cov[1, 1]) else None,
            "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None, "log_linear": {"a": float(np.exp(loga0)), "b": float(b0)},
            "points": [{"threshold": float(a_), "lr": float(b_)} for a_, b_ in zip(t, y)],
            "paper": {"a": PAPER_A, "b": PAPER_B}}


def main(argv=None):
    args = arg_parser(__doc__.split("\n\n")[0], "outputs/analysis/hyper").parse_args(argv)
    out = out_dir(args.out)
    df = rows_of(load(args.results), args.experiment or "hyper", prefix=True)
    if df.empty or not has_metric(df, "fid", "clip_score"):
        return write_missing(out, NAME, "no `hyper` runs with FID and CLIP in the results table")
    grids = grid_frames(df)
    if not grids:
        return write_missing(out, NAME, "hyper runs lack two varying knobs (lr, threshold, progressive_iter, lambda_rank)")
    plt = pyplot()
    from matplotlib.patches import Rectangle

    files, sections, fit = [], [], None
    for g, (x, y, m) in grids.items():
        for (bb, ds), h in m.groupby(["backbone", "dataset"], sort=True):
            xs, ys = sorted(set(h[x])), sorted(set(h[y]))
            fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6))
            best = {bx: by for bx, by, _ in best_per_column(h, x, y)}
            for ax, (col, lab, cmap) in zip(axes, (("fid", "FID ↓", "viridis_r"), ("clip_score", "CLIP ↑", "viridis"),
                                                   ("vlhi", "VLHI ↑", "viridis"))):
                a = np.full((len(ys), len(xs)), np.nan)
                for _, r in h.iterrows():
                    a[ys.index(r[y]), xs.index(r[x])] = r[col]
                im = ax.imshow(a, cmap=cmap, origin="lower", aspect="auto")
                ax.grid(False)
                lo, hi = np.nanmin(a), np.nanmax(a)
                for i in range(len(ys)):
                    for j in range(len(xs)):
                        if np.isfinite(a[i, j]):
                            z = (a[i, j] - lo) / (hi - lo) if hi > lo else 0.5
                            bright = z > 0.6 if not cmap.endswith("_r") else z < 0.4
                            ax.text(j, i, fmt(a[i, j]), ha="center", va="center", fontsize=6,
                                    color="k" if bright else "w")
                for bx, by in best.items():
                    ax.add_patch(Rectangle((xs.index(bx) - 0.5, ys.index(by) - 0.5), 1, 1, fill=False, ec="red", lw=1.6))
                ax.set_xticks(range(len(xs)), [sci(v) for v in xs], fontsize=7)
                ax.set_yticks(range(len(ys)), [sci(v) for v in ys], fontsize=7)
                ax.set_xlabel(LABEL.get(x, x))
                ax.set_ylabel(LABEL.get(y, y))
                ax.set_title(lab)
                fig.colorbar(im, ax=ax, shrink=0.8)
            figname = GRIDS.get(g, (None, None, "Figs. 21–24"))[2]
            fig.suptitle(f"{figname} — {LABEL.get(y, y)} × {LABEL.get(x, x)} ({bb}/{ds}); red: best VLHI per column")
            files += save_fig(fig, out, f"{NAME}_{g}" + ("" if len(m.groupby(['backbone', 'dataset'])) == 1 else f"_{bb}_{ds}"))
            cells = []
            for col, lab in (("fid", "FID"), ("clip_score", "CLIP"), ("vlhi", "VLHI")):
                for yv in ys:
                    row = [lab, sci(yv)]
                    for xv in xs:
                        v = h[(h[x] == xv) & (h[y] == yv)][col]
                        s = fmt(float(v.iloc[0])) if len(v) else "–"
                        row.append(s)
                    cells.append(row)
            bold = []
            for c in cells:
                yv = ys[[sci(v) for v in ys].index(c[1])]
                bold.append([False, False] + [c[0] == "VLHI" and best.get(xv) == yv for xv in xs])
            sections.append({"title": f"{figname}: grid {g} ({bb}/{ds})", "header": ["metric", f"{LABEL.get(y, y)} \\ {LABEL.get(x, x)}"] +
                             [sci(v) for v in xs], "cells": cells, "bold": bold, "n_index": 2,
                             "caption": f"{figname}: {LABEL.get(y, y)} × {LABEL.get(x, x)}, {bb}/{ds}; bold: best VLHI per column"})
            if (x, y) == ("threshold", "lr") and fit is None and len(best) >= 2:
                pts = sorted(best.items())
                fit = fit_eq12([p[0] for p in pts], [p[1] for p in pts])
                fit.update({"backbone": bb, "dataset": ds})
    if fit is not None:
        fig, ax = plt.subplots(figsize=(4.6, 3.3))
        t = np.array([p["threshold"] for p in fit["points"]])
        lr = np.array([p["lr"] for p in fit["points"]])
        tt = np.linspace(0, max(t.max() * 1.1, 1e-2), 200)
        ax.plot(t, lr, "o", color="C3", label="best lr per θ (VLHI)")
        ax.plot(tt, fit["a"] * np.exp(fit["b"] * tt), "-", color="C0",
                label=f"fit: {fit['a']:.2e}·exp({fit['b']:.0f}·θ)")
        ax.plot(tt, PAPER_A * np.exp(PAPER_B * tt), "--", color="0.4", label="paper Eq. 12: 1e-3·exp(−350·θ)")
        ax.set_yscale("log")
        ax.set_xlabel("threshold θ")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=7)
        ax.set_title("Fig. 22 / Eq. 12 — learning rate from threshold")
        files += save_fig(fig, out, "fig22_lr_fit")
        files.append(dump_json(out / "eq12_fit.json", fit))
        sections.append({"title": "Eq. 12 fit: lr = a·exp(b·θ)", "header": ["", "a", "b", "R²"],
                         "cells": [["this suite", f"{fit['a']:.3e}", f"{fit['b']:.1f}", fmt(fit["r2"], 3) if fit["r2"] is not None else "–"],
                                   ["paper", f"{PAPER_A:.0e}", f"{PAPER_B:.0f}", "–"]],
                         "caption": "Eq. 12 exponential fit of the best learning rate per threshold"})
    files += write_tables(out, NAME, sections, "Figs. 21–24 — hyper-parameters")
    return files


# --------------------------------------------------------------------------- claims (collected by analysis.claims)


def _hyper_lr_theta(df):
    d = rows_of(df, "hyper", prefix=True)
    if d.empty or not has_metric(d, "fid", "clip_score"):
        return NOT_RUN, "no `hyper` runs"
    g = grid_frames(d).get("lr_theta")
    if g is None:
        return NOT_RUN, "no lr × θ grid"
    x, y, m = g
    best = best_per_column(m, x, y)
    if len(best) < 2:
        return NOT_RUN, "fewer than two thresholds"
    fit = fit_eq12([b[0] for b in best], [b[1] for b in best])
    rho = spearman([b[0] for b in best], [b[1] for b in best])
    # A best lr that is the same for every θ fits b ≈ 0 of either sign: ask for a falling rank order too.
    ok = fit["b"] < 0 and rho < 0  # rho is NaN (False) when the best lr does not vary
    top = float(m[y].max())
    edge = [t for t, lr, _ in best if lr == top]
    note = (f"; the best lr is the grid's largest ({sci(top)}) at θ = {', '.join(sci(t) for t in edge)}: "
            "the optimum there may lie above the grid") if edge else ""
    return verdict(ok), ("best lr per θ: " + ", ".join(f"θ={sci(t)}: {sci(lr)}" for t, lr, _ in best) +
                          f"; fit lr = {fit['a']:.2e}·exp({fit['b']:.0f}·θ) (paper 1e-3·exp(−350·θ)); ρ = {fmt(rho)}"
                          + note)


def _grid_trend(df, grid, knob, fid_sign, clip_sign):
    """Spearman ρ of FID and of CLIP against one knob of a `hyper` grid (mean over the other knob);
    reproduced when both have the claimed signs (−1: falls as the knob grows, +1: rises)."""
    d = rows_of(df, "hyper", prefix=True)
    if d.empty or not has_metric(d, "fid", "clip_score"):
        return NOT_RUN, "no `hyper` runs"
    g = grid_frames(d).get(grid)
    if g is None:
        return NOT_RUN, f"no {grid} grid"
    x, y, m = g
    other = x if knob == y else y
    m = m.groupby(knob, as_index=False)[["fid", "clip_score"]].mean()
    name = LABEL.get(knob, knob)
    if len(m) < 3:
        return NOT_RUN, f"the {grid} grid has {len(m)} value(s) of {name} so far; a trend needs 3"
    rf, rc = spearman(m[knob], m["fid"]), spearman(m[knob], m["clip_score"])
    ok = np.sign(rf) == fid_sign and np.sign(rc) == clip_sign
    per = "; ".join(f"{sci(k)}: {fmt(f)} / {fmt(c)}" for k, f, c in zip(m[knob], m["fid"], m["clip_score"]))
    return verdict(ok), (f"over {name} (mean over {LABEL.get(other, other)}): ρ({name}, FID) {fmt(rf)}, "
                          f"ρ({name}, CLIP) {fmt(rc)}; FID / CLIP per {name}: {per}")


def _hyper_rank(df):
    return _grid_trend(df, "rank_piter", "lambda_rank", +1, +1)


def _hyper_lr(df):
    return _grid_trend(df, "lr_piter", "lr", -1, -1)


def _hyper_piter(df):
    return _grid_trend(df, "lr_piter", "progressive_iter", -1, -1)


CLAIMS = [
    Claim("C25", "The best learning rate decreases as θ grows (Eq. 12: lr = a·exp(b·θ), b < 0)", "Figs. 21, 22",
          "hyper", _hyper_lr_theta),
    Claim("C26", "A larger λ_rank worsens FID and improves CLIP", "Fig. 24", "hyper", _hyper_rank),
    Claim("C29", "A larger learning rate improves FID and worsens CLIP", "Fig. 23", "hyper", _hyper_lr),
    Claim("C30", "A later progressive iteration improves FID and worsens CLIP", "Fig. 23", "hyper", _hyper_piter),
]


def claims(df) -> list[dict]:
    """The records of C25, C26, C29, C30 on the results table ``df`` (see ``analysis.claims``)."""
    return evaluate(df, CLAIMS)


if __name__ == "__main__":
    for f in main():
        print(f)
