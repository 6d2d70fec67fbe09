"""SaRA reproduction suite: the method as a library (``from sara import SaRA``) plus the
embedded world, baselines, metrics and experiments of the paper."""
__version__ = "0.1.0"

from .core import (  # noqa: E402  (the library API, re-exported)
    MigrationTracker,
    RankLoss,
    SaRA,
    Selection,
    SparseParameters,
    delta,
    eligible_matrices,
    get_sparse,
    load_sparse,
    lr_from_threshold,
    merge,
    merge_sparse,
    model_fingerprint,
    nuclear_norm_loss,
    per_layer_counts,
    read_sparse,
    save_sparse,
    select,
    select_from_scores,
    share_below,
    sparse_state_dict,
    threshold_for_budget,
    wrap,
)
