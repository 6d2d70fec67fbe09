"""Maths the analysis experiments need that is not an evaluation metric (SPEC §3, §4).

Pure numpy, apart from :func:`prune_small`, which works on a copy of a torch module (torch is
imported only there). Everything returned by the ``*_report`` helpers is JSON-serialisable, so a
run can put it straight into its ``result.json`` and the analysis scripts (which read only the
results table) can plot it.

- :func:`subspace_similarity` — SPEC Eq. 11, as in the LoRA paper (Hu et al. 2021, §7)::

      φ(A, B, i, j) = ||U_A[:, :i]ᵀ U_B[:, :j]||_F² / min(i, j)

  with ``U`` the left singular vectors (columns ordered by decreasing singular value). φ is in
  [0, 1]; φ(A, A, i, i) = 1; φ = 0 for orthogonal column spaces.
- :func:`subspace_similarity_grid` — φ for every ``1 ≤ i ≤ I, 1 ≤ j ≤ J`` at once (the heatmaps of
  Figs. 19, 20, 25–27).
- :func:`amplification_factor` — Table 10 (LoRA paper §7.3): ``U, V`` the top-``r`` left/right
  singular vectors of ``ΔW``; ``||ΔW||_F / ||Uᵀ W V||_F``.
- :func:`prune_small` / :func:`prune_array` — zero every entry with ``|w| < θ`` (Fig. 2).

Weights of more than two dimensions (conv kernels ``[out, in, kh, kw]``) are read as matrices
``[out, in·kh·kw]``, the usual convention.
"""
from __future__ import annotations

import copy
import fnmatch
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "as_matrix",
    "left_singular_vectors",
    "subspace_similarity",
    "subspace_similarity_from_u",
    "subspace_similarity_grid",
    "amplification_factor",
    "amplification_report",
    "subspace_report",
    "prune_array",
    "prune_small",
    "DEFAULT_LAYER_PATTERNS",
]

# Fig. 19/20 use the key and value projections of the mid block's attention (SD 1.5 naming;
# the tiny backbone is a diffusers UNet2DConditionModel, so the names are the same).
DEFAULT_LAYER_PATTERNS = ("*mid_block*attn*to_k.weight", "*mid_block*attn*to_v.weight")


# --------------------------------------------------------------------------- basics


def _to_numpy(x: Any) -> np.ndarray:
    """numpy float64 view of an array-like or a torch tensor (without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


def as_matrix(w: Any) -> np.ndarray:
    """A weight as a 2-D float64 matrix: vectors become ``[n, 1]``, ``[out, ...]`` becomes
    ``[out, prod(rest)]``."""
    a = _to_numpy(w)
    if a.ndim == 0:
        raise ValueError("a scalar has no subspace; give a matrix")
    if a.ndim == 1:
        return a[:, None]
    if a.ndim > 2:
        return a.reshape(a.shape[0], -1)
    return a


def left_singular_vectors(w: Any, k: int | None = None) -> np.ndarray:
    """Left singular vectors of ``w`` as columns, by decreasing singular value (first ``k``)."""
    m = as_matrix(w)
    u, _, _ = np.linalg.svd(m, full_matrices=False)
    return u if k is None else u[:, :k]


def _check_dims(u: np.ndarray, i: int, name: str) -> None:
    if not isinstance(i, (int, np.integer)) or i < 1:
        raise ValueError(f"subspace dimension {name} must be a positive integer, got {i!r}")
    if i > u.shape[1]:
        raise ValueError(f"subspace dimension {name}={i} exceeds the rank bound {u.shape[1]} of the matrix")


# --------------------------------------------------------------------------- Eq. 11


def subspace_similarity_from_u(u_a: np.ndarray, u_b: np.ndarray, i: int, j: int) -> float:
    """φ from precomputed left singular vectors (columns), SPEC Eq. 11."""
    u_a = np.asarray(u_a, dtype=np.float64)
    u_b = np.asarray(u_b, dtype=np.float64)
    if u_a.shape[0] != u_b.shape[0]:
        raise ValueError(f"subspaces live in different spaces: {u_a.shape[0]} vs {u_b.shape[0]} rows")
    _check_dims(u_a, i, "i")
    _check_dims(u_b, j, "j")
    g = u_a[:, :i].T @ u_b[:, :j]
    return float(np.sum(g * g) / min(i, j))


def subspace_similarity(a: Any, b: Any, i: int, j: int) -> float:
    """φ(A, B, i, j) = ||U_Aⁱᵀ U_Bʲ||_F² / min(i, j) (SPEC Eq. 11), ``U`` = left singular vectors."""
    return subspace_similarity_from_u(left_singular_vectors(a), left_singular_vectors(b), i, j)


def subspace_similarity_grid(a: Any, b: Any, max_i: int | None = None, max_j: int | None = None,
                             *, u_given: bool = False) -> np.ndarray:
    """``phi[i-1, j-1] = φ(A, B, i, j)`` for ``i ≤ max_i``, ``j ≤ max_j`` (one SVD each).

    With ``u_given=True``, ``a`` and ``b`` are already left-singular-vector matrices."""
    u_a = np.asarray(a, dtype=np.float64) if u_given else left_singular_vectors(a)
    u_b = np.asarray(b, dtype=np.float64) if u_given else left_singular_vectors(b)
    if u_a.shape[0] != u_b.shape[0]:
        raise ValueError(f"subspaces live in different spaces: {u_a.shape[0]} vs {u_b.shape[0]} rows")
    max_i = u_a.shape[1] if max_i is None else max_i
    max_j = u_b.shape[1] if max_j is None else max_j
    _check_dims(u_a, max_i, "max_i")
    _check_dims(u_b, max_j, "max_j")
    g = u_a[:, :max_i].T @ u_b[:, :max_j]
    s = np.cumsum(np.cumsum(g * g, axis=0), axis=1)
    ii = np.arange(1, max_i + 1)[:, None]
    jj = np.arange(1, max_j + 1)[None, :]
    return s / np.minimum(ii, jj)


# --------------------------------------------------------------------------- Table 10


def amplification_factor(delta: Any, w: Any, r: int) -> dict[str, float]:
    """Table 10 quantities for one matrix and rank ``r``.

    ``U, V``: top-``r`` left/right singular vectors of ``delta`` (= ΔW). Returns
    ``delta_norm = ||ΔW||_F``, ``proj_norm = ||Uᵀ W V||_F`` (W projected onto ΔW's top-r
    subspace), ``own_proj_norm`` (W projected onto its *own* top-r subspace = the root of the
    sum of its r largest squared singular values, the "W" column of Table 10) and
    ``amplification = delta_norm / proj_norm``.
    """
    d = as_matrix(delta)
    m = as_matrix(w)
    if d.shape != m.shape:
        raise ValueError(f"ΔW and W must have the same shape, got {d.shape} and {m.shape}")
    if not isinstance(r, (int, np.integer)) or r < 1 or r > min(d.shape):
        raise ValueError(f"rank r must be an integer in [1, {min(d.shape)}], got {r!r}")
    u, _, vt = np.linalg.svd(d, full_matrices=False)
    proj = u[:, :r].T @ m @ vt[:r].T
    proj_norm = float(np.linalg.norm(proj))
    delta_norm = float(np.linalg.norm(d))
    sw = np.linalg.svd(m, compute_uv=False)
    own = float(np.sqrt(np.sum(sw[:r] ** 2)))
    amp = delta_norm / proj_norm if proj_norm > 0 else float("inf")
    return {"r": int(r), "delta_norm": delta_norm, "proj_norm": proj_norm,
            "own_proj_norm": own, "amplification": amp}


def _select_names(names: Iterable[str], patterns: Sequence[str] | None) -> list[str]:
    names = list(names)
    if not patterns:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _matrix_pairs(w0: Mapping[str, Any], w1: Mapping[str, Any], patterns):
    """(name, W0, W1) as matrices for every name matched by ``patterns`` in both, at least 2×2."""
    for name in _select_names(w0.keys(), patterns):
        if name not in w1:
            continue
        a0 = as_matrix(w0[name])
        if min(a0.shape) >= 2:
            yield name, a0, as_matrix(w1[name])


def amplification_report(w0: Mapping[str, Any], w1: Mapping[str, Any],
                         patterns: Sequence[str] | None = DEFAULT_LAYER_PATTERNS,
                         ranks: Sequence[int] = (1, 4, 16, 64)) -> list[dict]:
    """Table 10 for every matrix named by ``patterns`` (fnmatch; all 2-D+ if empty).

    ``w0``/``w1``: name → weight before/after fine-tuning (state dicts, tensors or arrays),
    ``ΔW = w1 - w0`` and the projected ``W`` is ``w0`` (as in the LoRA paper). Ranks larger
    than a matrix allows are skipped. Returns records
    ``{"layer", "shape", "r", "delta_norm", "proj_norm", "own_proj_norm", "amplification"}``.
    """
    out = []
    for name, a0, a1 in _matrix_pairs(w0, w1, patterns):
        d = a1 - a0
        for r in ranks:
            if r > min(a0.shape):
                continue
            rec = amplification_factor(d, a0, int(r))
            out.append({"layer": name, "shape": list(a0.shape), **rec})
    return out


def subspace_report(w0: Mapping[str, Any], w1: Mapping[str, Any],
                    patterns: Sequence[str] | None = DEFAULT_LAYER_PATTERNS,
                    max_dim: int = 64, seed: int = 0, delta_u_dim: int = 0) -> list[dict]:
    """Fig. 19 data for every matrix named by ``patterns``: per layer the grid
    ``phi[i-1][j-1] = φ(W0, W1, i, j)`` and two random references: ``phi_random`` =
    ``φ(W0, R, i, j)`` with ``R`` an independent Gaussian matrix of W0's shape (the reference
    the LoRA paper uses; a random update that dominates ``W0``), and ``phi_w0_random`` =
    ``φ(W0, W0 + R', i, j)`` with ``R'`` Gaussian scaled to this run's update norm ``‖W1 − W0‖_F``
    (a random update as large as the learned one; the paper's "randomly updated parameters").
    ``max_dim`` caps i and j.

    With ``delta_u_dim > 0`` each record also carries ``delta_u``: the first ``delta_u_dim``
    left singular vectors of ``ΔW = W1 - W0`` (list of columns' rows), so ΔW learned in two runs
    (two thresholds, Figs. 20, 25–27) can be compared from the results table alone.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name, a0, a1 in _matrix_pairs(w0, w1, patterns):
        k = min(max_dim, min(a0.shape))
        u0 = left_singular_vectors(a0)
        u1 = left_singular_vectors(a1)
        ur = left_singular_vectors(rng.standard_normal(a0.shape))
        delta = a1 - a0
        update = np.linalg.norm(delta)
        r = rng.standard_normal(a0.shape)
        uw = left_singular_vectors(a0 + r * (update / np.linalg.norm(r)))
        rec = {
            "layer": name,
            "shape": list(a0.shape),
            "max_dim": int(k),
            "phi": np.round(subspace_similarity_grid(u0, u1, k, k, u_given=True), 6).tolist(),
            "phi_random": np.round(subspace_similarity_grid(u0, ur, k, k, u_given=True), 6).tolist(),
            "phi_w0_random": np.round(subspace_similarity_grid(u0, uw, k, k, u_given=True), 6).tolist(),
            "update_norm": float(update),
            "w0_norm": float(np.linalg.norm(a0)),
        }
        if delta_u_dim:
            du = left_singular_vectors(delta, min(delta_u_dim, min(a0.shape)))
            rec["delta_u"] = np.round(du, 7).tolist()
        out.append(rec)
    return out


# --------------------------------------------------------------------------- Fig. 2 pruning


def prune_array(w: Any, threshold: float) -> tuple[np.ndarray, int]:
    """Copy of ``w`` with every ``|w| < threshold`` set to 0, and the number of entries zeroed
    (entries already 0 count when ``threshold > 0``)."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    a = np.array(_to_numpy(w), copy=True)
    mask = np.abs(a) < threshold
    a[mask] = 0.0
    return a, int(mask.sum())


def prune_small(model: Any, threshold: float, inplace: bool = False,
                params: Sequence[str] | None = None) -> tuple[Any, dict]:
    """Zero every parameter entry with ``|w| < threshold`` on a copy of a torch module.

    Every parameter tensor counts (linear, conv, norm, bias, embedding), as in SPEC §1, unless
    ``params`` (fnmatch patterns on parameter names) restricts it. The original module is left
    untouched unless ``inplace``. Returns ``(module, info)`` with
    ``info = {"threshold", "pruned", "total", "fraction"}``.
    """
    import torch

    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    m = model if inplace else copy.deepcopy(model)
    pruned = total = 0
    with torch.no_grad():
        for name, p in m.named_parameters():
            if params and not any(fnmatch.fnmatchcase(name, pat) for pat in params):
                continue
            mask = p.abs() < threshold
            pruned += int(mask.sum())
            total += p.numel()
            p.masked_fill_(mask, 0)
    frac = pruned / total if total else 0.0
    return m, {"threshold": float(threshold), "pruned": pruned, "total": total, "fraction": frac}
