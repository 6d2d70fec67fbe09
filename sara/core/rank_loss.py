"""Nuclear-norm low-rank constraint on the trained sparse matrices (SPEC §1.3, Eq. 4-5).

For a selected 2-D weight ``P = W ⊙ M`` (conv weights viewed as ``[out, -1]`` only when asked,
``conv=True``: the specification and the authors' code constrain 2-D weights) the loss is
``λ ||P||_*`` and its subgradient ``λ U Vᵀ`` (reduced SVD ``P = U Σ Vᵀ``, Watson 1992), masked
by ``M``. The optimizer adds it analytically to ``values.grad`` (no autograd graph through the
model), which is exactly what autograd of ``torch.linalg.matrix_norm(P, "nuc")`` gives.
Following the authors' code, the default is one randomly chosen eligible matrix per step
(``min(shape) > 64``) so the per-step cost stays bounded on large models.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .sparse import SparseParameters


def matrix_shape(shape) -> tuple[int, int]:
    """2-D view used for the nuclear norm: ``[out, prod(rest)]``."""
    rest = 1
    for s in shape[1:]:
        rest *= int(s)
    return int(shape[0]), rest


def eligible_matrices(sparse: "SparseParameters", min_side: int = 64,
                      conv: bool = False) -> list[str]:
    """2-D weights (and, with ``conv``, conv weights viewed as ``[out, -1]``) whose matrix
    view has ``min(shape) > min_side`` and at least one active entry."""
    out = []
    for n in sparse.names:
        shape = sparse.shapes[n]
        if len(shape) < 2 or (not conv and len(shape) != 2) or sparse.count(n) == 0:
            continue
        if min(matrix_shape(shape)) > min_side:
            out.append(n)
    return out


def sparse_matrix(sparse: "SparseParameters", name: str, values: Tensor | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``P = W ⊙ M`` as a dense matrix built from the values (differentiable in ``values``)."""
    v = sparse.values if values is None else values
    part = v[sparse.slice(name)].to(dtype)
    rows, cols = matrix_shape(sparse.shapes[name])
    idx = sparse.indices[name].to(part.device).long()
    flat = torch.zeros(rows * cols, dtype=dtype, device=part.device).index_put((idx,), part)
    return flat.view(rows, cols)


#: Smallest aspect ratio (long side / short side) at which the Gram route is taken: on CPU, for
#: sparse SD 1.5 matrices at 50M entries, it beats the SVD from 4:1 (ff 5120 x 640: 0.17 s vs
#: 0.28 s, one thread) but loses on square ones (640 x 640: 0.17 s vs 0.07 s).
GRAM_MIN_ASPECT = 2.0

#: Largest λ_max / λ_min of the Gram matrix (κ(P)²) for which a float32 Gram is accurate enough
#: (its rounding moves λ_min by ~1e-7·λ_max; at κ² ≤ 100 that is ≤ ~1e-5 of any component).
FP32_GRAM_MAX_COND = 100.0


@torch.no_grad()
def nuclear_norm_and_subgradient(p: Tensor) -> tuple[Tensor, Tensor]:
    """(||P||_*, U Vᵀ). For an elongated ``P`` (long side ≥ :data:`GRAM_MIN_ASPECT` x the short
    one) without an SVD, from the eigendecomposition of the smaller Gram matrix; for a near-square
    one from the reduced SVD of its tall view. For ``P`` [m, n], m ≥ n: ``PᵀP = Q Λ Qᵀ``, ``σ = √λ``, ``U Vᵀ = P (PᵀP)^(-1/2)
    = P Q Λ^(-1/2) Qᵀ`` (and the transpose for m < n). The eigendecomposition runs in float64 on
    the ``n x n`` Gram, so its cost is that of a ``min(m, n)``-sized problem (SD 1.5's 10240 x
    1280 feed-forward weight: ~4x less than the float32 SVD on CPU). The Gram itself is formed in
    float32 when P is well conditioned (κ² ≤ :data:`FP32_GRAM_MAX_COND`, the usual case for a
    tall sparse matrix), else again in float64, so small singular values keep their accuracy.

    Singular values below ``n · eps64 · σ_max²`` (in λ) count as 0 and contribute nothing: the
    minimum-norm subgradient. Where ``P`` has full rank this is the gradient autograd gives for
    ``torch.linalg.matrix_norm(P, "nuc")`` (tests pin it); at exact zeros any completion is a
    valid subgradient and autograd's is arbitrary.
    """
    wide = p.shape[-2] < p.shape[-1]
    a = p.mT if wide else p  # tall: [m, n], m >= n
    if a.shape[-2] < GRAM_MIN_ASPECT * a.shape[-1]:
        # near square: the Gram saves little and its conditioning (κ²) is poor; LAPACK's SVD
        # of the tall view (faster than the wide one on CPU) is the cheaper exact route
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        g = u @ vh
        return s.sum().to(torch.float32), (g.mT if wide else g)
    nuc, g = _tall_polar(a, torch.float32 if p.dtype != torch.float64 else torch.float64)
    if g is None:  # ill conditioned: the Gram again in float64
        nuc, g = _tall_polar(a, torch.float64)
    g = g.to(p.dtype)
    return nuc.to(torch.float32), (g.mT if wide else g)


def _tall_polar(a: Tensor, gram_dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """(Σσ, A (AᵀA)^(-1/2)) of a tall ``a``; (Σσ, None) if the Gram in ``gram_dtype`` is too
    coarse for A's conditioning."""
    x = a.to(gram_dtype)
    lam, q = torch.linalg.eigh((x.mT @ x).to(torch.float64))
    top = lam[-1].clamp_min(0)
    tol = top * lam.shape[-1] * torch.finfo(torch.float64).eps
    live = lam > tol
    nuc = lam.clamp_min(0).sqrt()[live].sum()
    if gram_dtype != torch.float64 and not (bool(live.all())
                                            and top <= FP32_GRAM_MAX_COND * lam[0]):
        return nuc, None
    inv_sqrt = torch.where(live, lam.clamp_min(tol if tol > 0 else 1).rsqrt(), torch.zeros_like(lam))
    m = ((q * inv_sqrt) @ q.mT).to(gram_dtype)
    return nuc, x @ m


@torch.no_grad()
def add_rank_grad(sparse: "SparseParameters", names: Iterable[str], lambda_rank: float,
                  inert: bool = False) -> Tensor:
    """Add ``λ (U Vᵀ)[M]`` of each named matrix to ``values.grad``; return the loss
    ``λ Σ ||P||_*`` (a 0-dim tensor). With ``inert`` only the loss is computed (the authors'
    optimizer: its rank loss never reaches the trained values)."""
    values = sparse.values
    total = torch.zeros((), dtype=torch.float32, device=values.device)
    for n in names:
        p = sparse_matrix(sparse, n, values.detach())
        nuc, g = nuclear_norm_and_subgradient(p)
        total += nuc
        if inert or lambda_rank == 0:
            continue
        if values.grad is None:
            values.grad = torch.zeros_like(values)
        idx = sparse.indices[n].to(g.device).long()
        values.grad[sparse.slice(n)] += (lambda_rank * g.reshape(-1)[idx]).to(values.dtype)
    return lambda_rank * total


def nuclear_norm_loss(sparse: "SparseParameters", names: Iterable[str] | None = None,
                      min_side: int = 0, conv: bool = False) -> Tensor:
    """Differentiable ``Σ ||P||_*`` over ``names`` (default: every eligible matrix with
    ``min(shape) > min_side``), for users who add the rank loss to their own loss."""
    if names is None:
        names = eligible_matrices(sparse, min_side=min_side, conv=conv)
    terms = [torch.linalg.matrix_norm(sparse_matrix(sparse, n), ord="nuc") for n in names]
    if not terms:
        return sparse.values.sum() * 0
    return torch.stack(terms).sum()


class RankLoss:
    """Chooses the matrices each step (seeded, recorded) and applies the subgradient.

    ``targets="random"``: one eligible matrix per step (the authors' code); ``"all"``: every
    eligible matrix. ``conv``: conv weights (viewed as ``[out, -1]``) are eligible too. The
    choice of the last step is in :attr:`last_targets`, its wall time in :attr:`last_seconds`.
    """

    def __init__(self, lambda_rank: float, targets: str = "random", min_side: int = 64,
                 seed: int = 0, conv: bool = False):
        if not isinstance(conv, bool):
            raise TypeError(f"rank_conv must be true or false, got {conv!r}")
        if targets not in ("random", "all"):
            raise ValueError(f"rank_targets must be 'random' or 'all', got {targets!r}")
        if lambda_rank < 0:
            raise ValueError(f"lambda_rank must be >= 0, got {lambda_rank}")
        self.lambda_rank = float(lambda_rank)
        self.targets = targets
        self.min_side = int(min_side)
        self.conv = conv
        self.generator = torch.Generator().manual_seed(int(seed))
        self.last_targets: list[str] = []
        self.last_seconds = 0.0

    def choose(self, sparse: "SparseParameters") -> list[str]:
        names = eligible_matrices(sparse, self.min_side, self.conv)
        if self.targets == "all" or not names:
            return names
        i = int(torch.randint(len(names), (1,), generator=self.generator))
        return [names[i]]

    def step(self, sparse: "SparseParameters", inert: bool = False) -> Tensor | None:
        """Apply one step's rank loss; returns the loss (None when disabled or nothing is
        eligible)."""
        self.last_seconds = 0.0
        if self.lambda_rank == 0:
            self.last_targets = []
            return None
        t0 = time.perf_counter()
        self.last_targets = self.choose(sparse)
        if not self.last_targets:
            return None
        loss = add_rank_grad(sparse, self.last_targets, self.lambda_rank, inert=inert)
        self.last_seconds = time.perf_counter() - t0
        return loss

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "last_targets": list(self.last_targets)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.last_targets = list(state.get("last_targets", []))
