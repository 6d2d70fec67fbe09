"""The claim record: one qualitative claim of the SaRA paper, the paper's sentence that makes it
(verbatim, from ``paper/claim_quotes.yaml``), its verdict on the results table — ``reproduced``,
``not_reproduced``, ``inconclusive`` (a difference inside the noise, :mod:`sara.stats`),
``not_run`` or ``not_testable`` — with the numbers behind it, and whether the paper's own reported
tables bear it out.

A check that cannot fail by construction is marked ``trivial``: its verdict is shown but not
counted.

Each figure/table module states its claims as :class:`Claim` objects next to the code that draws
the figure and returns their records from ``claims(df)`` (:func:`evaluate`); ``analysis.claims``
collects every module's records into one report.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

from sara.stats import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, REPRODUCED, VERDICTS,  # noqa: F401
                        compare, verdict_better)

from .common import method_label

HOLDS, DOES_NOT_HOLD = "holds", "does not hold"  # the check on the paper's own numbers
QUOTES = Path(__file__).resolve().parent.parent / "paper" / "claim_quotes.yaml"


@functools.lru_cache(maxsize=1)
def paper_quotes() -> dict:
    """``{claim id: {quote, source, line, note}}`` from ``paper/claim_quotes.yaml``."""
    return yaml.safe_load(QUOTES.read_text(encoding="utf-8")) or {}


@dataclass
class Claim:
    """``check(df) -> (verdict, evidence)`` judges the claim on a results table; ``paper() ->
    (holds / does not hold, evidence)`` on the paper's reported numbers (None: a text or figure
    claim with no table to check)."""

    id: str
    text: str
    source: str
    experiment: str
    check: Callable[[pd.DataFrame], tuple[str, str]]
    paper: Callable[[], tuple[str, str]] | None = None
    trivial: str = ""  # why the check cannot fail as written (then it is shown, not counted)

    def record(self, df: pd.DataFrame) -> dict:
        """The claim's row of the report (``claims.json``)."""
        try:
            verdict, evidence = self.check(df)
        except Exception as e:  # noqa: BLE001 - a broken check must not hide the others
            verdict, evidence = NOT_RUN, f"check failed: {type(e).__name__}: {e}"
        if verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {verdict!r} is not one of {VERDICTS}")
        p = ("–", "")
        if self.paper is not None:
            try:
                p = self.paper()
            except Exception as e:  # noqa: BLE001
                p = ("?", f"{type(e).__name__}: {e}")
        q = paper_quotes().get(self.id) or {}
        return {"id": self.id, "claim": self.text, "source": self.source, "experiment": self.experiment,
                "paper_quote": q.get("quote"), "paper_source": q.get("source"), "paper_line": q.get("line"),
                "verdict": verdict, "evidence": evidence, "trivial": self.trivial or None,
                "counted": not self.trivial, "paper_check": p[0], "paper_evidence": p[1]}


def evaluate(df: pd.DataFrame, claims: list[Claim]) -> list[dict]:
    """The records of ``claims`` on the results table ``df``, in order."""
    return [c.record(df) for c in claims]


def verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def combine(verdicts: list[str]) -> str:
    """One verdict from several decided parts (e.g. one per budget): any ``not_reproduced`` wins,
    then ``inconclusive``; ``reproduced`` only when every part is."""
    if not verdicts:
        return NOT_RUN
    for v in (NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, NOT_TESTABLE):
        if v in verdicts:
            return v
    return REPRODUCED


SPREAD_SOURCES = ("seeds", "style")  # experiments whose seed spread a one-seed experiment borrows, in order


def borrowed_spread(df: pd.DataFrame, col: str, method: str = "sara") -> tuple[float | None, str]:
    """The seed-to-seed standard deviation of ``col`` for ``method``, for experiments that run one
    seed: the mean over the (dataset, budget, learning rate) cells with several seeds of the first
    of :data:`SPREAD_SOURCES` that has such cells (the `seeds` experiment, else the style
    comparison's trained runs); ``(None, why)`` when none has. The second item says where it came from."""
    for exp in SPREAD_SOURCES:
        d = df[(df["experiment"] == exp) & (df["method"] == method)] if "experiment" in df else df.iloc[:0]
        if "variant" in d:
            d = d[d["variant"].fillna("").astype(str).eq("")]  # probes and pre-trained rows: other settings
        if d.empty or col not in d:
            continue
        keys = [k for k in ("dataset", "budget", "lr") if k in d]
        sds = [float(g[col].astype(float).std(ddof=1)) for _, g in d.groupby(keys, dropna=False) if len(g) > 1]
        sds = [v for v in sds if np.isfinite(v)]
        if sds:
            sd = float(np.mean(sds))
            return sd, (f"{col} seed spread {sd:.4g} of {method_label(method)} borrowed from the `{exp}` runs "
                        f"(mean std over {len(sds)} cell{'s' if len(sds) != 1 else ''})")
    return None, f"no {col} seed spread of {method_label(method)} measured (seeds 0, 1, 2 of `style` or `seeds`)"


def better_by_seeds(per_seed: pd.DataFrame, col: str, a: str, b: str, lower: bool) -> tuple[str, str]:
    """Is method ``a`` better than ``b`` on ``col``, given one value per seed (rows: method, seed,
    col)? The noise rule of :mod:`sara.stats` (2 Welch standard errors); one seed is inconclusive."""
    va = per_seed.loc[per_seed["method"] == a, col].astype(float).dropna().tolist()
    vb = per_seed.loc[per_seed["method"] == b, col].astype(float).dropna().tolist()
    if not va or not vb:
        return NOT_RUN, f"no {col} of {method_label(a) if not va else method_label(b)}"
    c = compare(va, vb, lower_is_better=lower)
    return verdict_better(c, "a"), c.describe(col, (method_label(a), method_label(b))) + f" (n = {len(va)}, {len(vb)})"


def paper_verdict(ok: bool) -> str:
    return HOLDS if ok else DOES_NOT_HOLD


def method_names(methods) -> str:
    return ", ".join(method_label(m) for m in methods)


def value_of(frame: pd.DataFrame, method: str, col: str) -> float:
    """``col`` of ``method``'s (first) row of ``frame``; NaN when the method has no row."""
    v = frame[frame["method"] == method][col]
    return float(v.iloc[0]) if len(v) else np.nan


def spearman(a, b) -> float:
    """Spearman's ρ; NaN for fewer than 3 points or a constant series."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(spearmanr(a, b).statistic) if len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
