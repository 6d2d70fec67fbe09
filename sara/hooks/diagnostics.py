"""``diagnostics.*`` measured on the trained model: the share of the trained entries still below θ
(Sec. 4.3), the subspace similarity and amplification of ΔW against W0 (Figs. 19/20, Table 10)
and pruning small weights before sampling (Fig. 2). Migration (Fig. 3) is in
:mod:`sara.hooks.migration`."""
from __future__ import annotations

import fnmatch
import logging
from typing import Any, Sequence

from sara.hooks.schema import HookConfigError

log = logging.getLogger(__name__)


def matching_state(module, patterns: Sequence[str]) -> dict:
    """CPU copies of the parameters whose names match one of ``patterns`` (fnmatch)."""
    return {n: p.detach().float().cpu().clone() for n, p in module.named_parameters()
            if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)}


def subspace_weights_before(denoiser, diag: dict, backbone_name: str) -> dict | None:
    """W0 of the weights ``diagnostics.subspace`` analyses (None when it is off); taken before the
    method touches the denoiser. Fails naming the patterns when they match nothing."""
    if not diag["subspace"]:
        return None
    w0 = matching_state(denoiser, diag["subspace_patterns"])
    if not w0:
        raise HookConfigError(f"diagnostics.subspace_patterns={diag['subspace_patterns']} match no "
                              f"parameter of the {backbone_name} denoiser")
    return w0


def share_below_report(method, theta: float | None) -> dict:
    """``{"share_below", "share_below_threshold"}`` of the method's sparse selection."""
    from sara.core.diagnostics import share_below

    sp = getattr(method, "sparse", None)
    if sp is None:
        raise HookConfigError(f"diagnostics.share_below: method {getattr(method, 'name', '?')!r} "
                              "trains no sparse selection (SaRA and its ablations do)")
    if theta is None:
        theta = getattr(method, "_lr_theta", None) or (method.record() or {}).get("threshold")
    if theta is None:
        raise HookConfigError("diagnostics.share_below: the method has no threshold; set "
                              "diagnostics.share_below_threshold")
    return {"share_below": share_below(sp, float(theta)), "share_below_threshold": float(theta)}


def subspace_reports(w0_sub: dict, module, diag: dict, seed: int) -> dict[str, Any]:
    """``{"subspace", "amplification"}`` of the analysed weights of ``module`` against W0."""
    from sara.analysis_math import amplification_report, subspace_report

    w1_sub = matching_state(module, diag["subspace_patterns"])
    return {
        "subspace": subspace_report(w0_sub, w1_sub, diag["subspace_patterns"],
                                    max_dim=diag["subspace_max_dim"], seed=seed,
                                    delta_u_dim=diag["delta_u_dim"]),
        "amplification": amplification_report(w0_sub, w1_sub, diag["subspace_patterns"],
                                               ranks=diag["amplification_ranks"]),
    }


def prune(module, threshold: float) -> dict:
    """Zero every |w| < ``threshold`` of ``module`` in place; what was pruned."""
    from sara.analysis_math import prune_small

    _, info = prune_small(module, threshold, inplace=True)
    log.info("pruned |w| < %g: %d of %d entries (%.4f%%)", threshold, info["pruned"],
             info["total"], 100 * info["fraction"])
    return info
