"""SaRA as a library: selection, unstructural backpropagation, rank loss, the SaRA optimizer,
sparse-delta checkpoints and diagnostics. Everything here is re-exported from ``sara``.

One line (the paper's API)::

    optimizer = SaRA(model, threshold=2e-3)          # replaces torch.optim.AdamW

Lower level (any optimizer)::

    sel = select(model, threshold=2e-3)              # or k=..., rule="smallest"/"largest"/"random"
    sparse = wrap(model, sel)                        # one flat leaf: sparse.values
    opt = torch.optim.SGD(sparse.parameters(), lr=1e-3)
    ...                                              # weights sync before each forward
    save_sparse("delta.safetensors", sparse); merge(model)
"""
from .checkpoint import load_sparse, merge_sparse, read_sparse, save_sparse, sparse_state_dict
from .diagnostics import MigrationTracker, delta, per_layer_counts, share_below
from .identity import model_fingerprint
from .optimizer import SaRA, lr_from_threshold
from .rank_loss import RankLoss, eligible_matrices, nuclear_norm_loss
from .selection import (Selection, select, select_for_budget, select_from_scores,
                        threshold_for_budget)
from .sparse import SparseParameters, get_sparse, merge, wrap

__all__ = [
    "SaRA", "lr_from_threshold",
    "Selection", "select", "select_for_budget", "select_from_scores", "threshold_for_budget",
    "SparseParameters", "wrap", "merge", "get_sparse",
    "RankLoss", "eligible_matrices", "nuclear_norm_loss",
    "save_sparse", "load_sparse", "merge_sparse", "read_sparse", "sparse_state_dict",
    "MigrationTracker", "delta", "per_layer_counts", "share_below", "model_fingerprint",
]
