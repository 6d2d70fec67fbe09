"""The claim record: one qualitative claim of the SaRA paper, its verdict on the results table
(**reproduced**, **not reproduced** or **not yet run**, with the numbers behind it) and whether the
paper's own reported tables bear it out.

Each figure/table module states its claims as :class:`Claim` objects next to the code that draws
the figure and returns their records from ``claims(df)`` (:func:`evaluate`); ``analysis.claims``
collects every module's records into one report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .common import method_label

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not yet run"
HOLDS, DOES_NOT_HOLD = "holds", "does not hold"  # the check on the paper's own numbers


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

    def record(self, df: pd.DataFrame) -> dict:
        """The claim's row of the report (``claims.json``)."""
        try:
            verdict, evidence = self.check(df)
        except Exception as e:  # noqa: BLE001 - a broken check must not hide the others
            verdict, evidence = NOT_RUN, f"check failed: {type(e).__name__}: {e}"
        p = ("–", "")
        if self.paper is not None:
            try:
                p = self.paper()
            except Exception as e:  # noqa: BLE001
                p = ("?", f"{type(e).__name__}: {e}")
        return {"id": self.id, "claim": self.text, "source": self.source, "experiment": self.experiment,
                "verdict": verdict, "evidence": evidence, "paper_check": p[0], "paper_evidence": p[1]}


def evaluate(df: pd.DataFrame, claims: list[Claim]) -> list[dict]:
    """The records of ``claims`` on the results table ``df``, in order."""
    return [c.record(df) for c in claims]


def verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


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
