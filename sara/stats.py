"""Noise-aware comparisons: when is one method's metric really better than another's?

A difference between two means decides a comparison only when it exceeds twice its standard error
(Welch's, unequal variances: ``SE = sqrt(s_a²/n_a + s_b²/n_b)``, ``s`` the sample standard
deviation over seeds); otherwise the comparison is **inconclusive**. Two standard errors is the
usual ≈95% two-sided threshold for a normal difference. With one value on a side, that side's
spread is unknown: pass ``borrowed_sd`` (a spread measured elsewhere, e.g. by the seeds
experiment) or the comparison stays inconclusive.

The verdicts every claim check returns are the constants below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not_reproduced"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not_run"
NOT_TESTABLE = "not_testable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, NOT_TESTABLE)

SE_MULTIPLE = 2.0
TEST_NAME = "difference of means > 2 Welch standard errors"


def _finite(values: Iterable[float]) -> list[float]:
    out = [float(v) for v in values]
    return [v for v in out if math.isfinite(v)]


def mean_sd(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (ddof 1; None for fewer than 2 values) and count."""
    v = _finite(values)
    if not v:
        raise ValueError("mean_sd: no finite values")
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return m, sd, len(v)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric. ``better`` is "a", "b" or None (inside the noise)."""
    mean_a: float
    mean_b: float
    diff: float            # mean_a - mean_b
    se: float | None       # None: the spread is unknown
    better: str | None
    lower_is_better: bool

    @property
    def decided(self) -> bool:
        return self.better is not None

    def describe(self, metric: str = "", names: tuple[str, str] = ("a", "b")) -> str:
        se = "unknown" if self.se is None else f"{self.se:.4g}"
        who = {"a": names[0], "b": names[1], None: "neither (inside 2 SE)"}[self.better]
        return (f"{metric + ': ' if metric else ''}{names[0]} {self.mean_a:.4g} vs {names[1]} {self.mean_b:.4g}, "
                f"difference {self.diff:+.4g}, SE {se} → better: {who}")


def decide(diff: float, se: float | None, lower_is_better: bool) -> str | None:
    """The rule itself, for a difference ``diff = mean_a - mean_b`` with standard error ``se``:
    "a" or "b" (the better one) when ``|diff| > 2 se``, else None (also when ``se`` is unknown)."""
    if se is None or not math.isfinite(se) or abs(diff) <= SE_MULTIPLE * se:
        return None
    return "a" if (diff < 0 if lower_is_better else diff > 0) else "b"


def compare(a: Sequence[float], b: Sequence[float], lower_is_better: bool,
            borrowed_sd: float | None = None) -> Comparison:
    """Compare per-seed values ``a`` and ``b``; see the module docstring for the rule."""
    ma, sa, na = mean_sd(a)
    mb, sb, nb = mean_sd(b)
    if borrowed_sd is not None and (not math.isfinite(borrowed_sd) or borrowed_sd < 0):
        raise ValueError(f"compare: borrowed_sd must be a finite number >= 0, got {borrowed_sd!r}")
    sa = sa if sa is not None else borrowed_sd
    sb = sb if sb is not None else borrowed_sd
    diff = ma - mb
    if sa is None or sb is None:
        return Comparison(ma, mb, diff, None, None, lower_is_better)
    se = math.sqrt(sa * sa / na + sb * sb / nb)
    return Comparison(ma, mb, diff, se, decide(diff, se, lower_is_better), lower_is_better)


def verdict_better(c: Comparison, claimed: str = "a") -> str:
    """The verdict of the claim "``claimed`` is better": reproduced, not_reproduced or inconclusive."""
    if claimed not in ("a", "b"):
        raise ValueError(f"verdict_better: claimed must be 'a' or 'b', got {claimed!r}")
    if not c.decided:
        return INCONCLUSIVE
    return REPRODUCED if c.better == claimed else NOT_REPRODUCED
