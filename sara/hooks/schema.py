"""The experiment hooks' settings: the optional top-level groups ``diagnostics`` and ``delta`` of
a run's config (``conf/config.yaml`` spells the same defaults; a test checks they agree), checked
once before a run starts: an unknown key, a wrong type or an inconsistent combination fails
naming the key."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

from sara.analysis_math import DEFAULT_LAYER_PATTERNS


class HookConfigError(ValueError):
    """A ``diagnostics.*`` / ``delta.*`` setting that is unknown or of the wrong type."""


#: key -> (kind, default, what). Kinds: number>=0, number>0, number, int>=0, int>=1, bool,
#: strings (list of str), ints>=1 (list of int >= 1), str (or null).
DIAGNOSTICS_KEYS: dict[str, tuple[str, Any, str]] = {
    "prune_threshold": ("number>=0", None, "zero every |w| < θ before sampling (Fig. 2)"),
    "migration_every": ("int>=1", None, "record the migration shares every N steps (Fig. 3)"),
    "migration_threshold": ("number>0", None, "θ of the migration tracker (Fig. 3)"),
    "share_below": ("bool", False, "share of the trained entries still below θ at the end"),
    "share_below_threshold": ("number>0", None, "θ of share_below (default: the method's)"),
    "subspace": ("bool", False, "subspace similarity + amplification of ΔW vs W0 (Figs. 19/20, "
                                "Table 10)"),
    "subspace_patterns": ("strings", list(DEFAULT_LAYER_PATTERNS), "fnmatch patterns of the weights"),
    "subspace_max_dim": ("int>=1", 64, "largest subspace dimension i, j of φ"),
    "delta_u_dim": ("int>=0", 0, "left singular vectors of ΔW kept per layer (Fig. 20)"),
    "amplification_ranks": ("ints>=1", [1, 4, 16, 64], "ranks r of Table 10"),
}
DELTA_KEYS: dict[str, tuple[str, Any, str]] = {
    "source": ("str", None, "run directory whose trained ΔP is loaded (needs train.steps=0)"),
    "alpha": ("number", 1.0, "scale of ΔP (App. F): W = W0 + β1·α·ΔP"),
    "merge_with": ("str", None, "dataset name of the second delta (a label; App. G)"),
    "merge_source": ("str", None, "run directory of a second delta, added with β2"),
    "beta1": ("number", 1.0, "weight of delta.source's ΔP"),
    "beta2": ("number", 1.0, "weight of delta.merge_source's ΔP"),
}


def _check_value(key: str, kind: str, v: Any) -> Any:
    def bad(want: str):
        return HookConfigError(f"{key} must be {want}, got {v!r} ({type(v).__name__})")

    if v is None:
        if kind in ("bool", "strings", "ints>=1"):
            raise bad({"bool": "true or false", "strings": "a list of strings",
                       "ints>=1": "a list of integers >= 1"}[kind])
        return None
    isnum = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind.startswith("number"):
        want = {"number": "a number", "number>=0": "a number >= 0", "number>0": "a number > 0"}[kind]
        if not isnum or not math.isfinite(float(v)):
            raise bad(want)
        if (kind == "number>=0" and v < 0) or (kind == "number>0" and v <= 0):
            raise bad(want)
        return float(v)
    if kind in ("int>=0", "int>=1"):
        lo = int(kind[-1])
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise bad(f"an integer >= {lo}")
        return int(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if kind == "str":
        if not isinstance(v, (str, os.PathLike)) or not str(v):
            raise bad("a non-empty string or null")
        return str(v)
    if kind == "strings":
        if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v \
                or not all(isinstance(x, str) and x for x in v):
            raise bad("a non-empty list of strings")
        return list(v)
    if kind == "ints>=1":
        if isinstance(v, str) or not isinstance(v, (list, tuple)) or not v or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
            raise bad("a non-empty list of integers >= 1")
        return [int(x) for x in v]
    raise AssertionError(kind)  # pragma: no cover


def _check_group(group: str, node: Any, spec: dict[str, tuple[str, Any, str]]) -> dict:
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise HookConfigError(f"{group} must be a mapping of settings ({', '.join(spec)}), "
                              f"got {node!r} ({type(node).__name__})")
    unknown = [k for k in node if k not in spec]
    if unknown:
        import difflib

        k = str(unknown[0])
        close = difflib.get_close_matches(k, list(spec), n=1)
        hint = f" (did you mean {group}.{close[0]}?)" if close else ""
        raise HookConfigError(f"{group}.{k}: unknown key{hint}; the keys run.py acts on are "
                              + ", ".join(f"{group}.{x}" for x in spec))
    return {k: _check_value(f"{group}.{k}", kind, node.get(k, default))
            for k, (kind, default, _) in spec.items()}


def validate_hooks(plain: Mapping) -> tuple[dict, dict | None]:
    """``(diagnostics, delta)`` of a resolved config, checked and with defaults filled in;
    ``delta`` is None when no ``delta.source`` is set. Raises :class:`HookConfigError` naming the
    key for an unknown key, a wrong type or an inconsistent combination."""
    diag = _check_group("diagnostics", plain.get("diagnostics"), DIAGNOSTICS_KEYS)
    if (diag["migration_every"] is None) != (diag["migration_threshold"] is None):
        have, miss = (("migration_every", "migration_threshold") if diag["migration_threshold"] is None
                      else ("migration_threshold", "migration_every"))
        raise HookConfigError(f"diagnostics.{have} is set but diagnostics.{miss} is not: the "
                              "migration tracker needs both (every N steps, threshold θ)")
    delta = _check_group("delta", plain.get("delta"), DELTA_KEYS)
    if delta["source"] is None:
        if delta["merge_source"] is not None:
            raise HookConfigError("delta.merge_source is set but delta.source is not: merging adds a "
                                  "second delta to the first (set delta.source)")
        return diag, None
    if delta["merge_with"] is not None and delta["merge_source"] is None:
        raise HookConfigError(f"delta.merge_with={delta['merge_with']!r} needs delta.merge_source "
                              "(the run directory of that dataset's delta)")
    steps = (plain.get("train") or {}).get("steps")
    if steps not in (0, None):
        raise HookConfigError(f"delta.source loads a trained delta instead of training: it needs "
                              f"train.steps=0 (got train.steps={steps})")
    return diag, delta


def hooks_filled(plain: Any) -> Any:
    """``plain`` with its ``diagnostics`` / ``delta`` groups completed by their defaults, so that
    a record written before conf/config.yaml listed the groups compares equal to one with the
    defaults spelled out; groups that do not validate are left as they are."""
    if not isinstance(plain, Mapping):
        return plain
    out = dict(plain)
    for group, spec in (("diagnostics", DIAGNOSTICS_KEYS), ("delta", DELTA_KEYS)):
        try:
            out[group] = _check_group(group, plain.get(group), spec)
        except HookConfigError:
            pass
    return out
