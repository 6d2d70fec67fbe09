"""SaRA reproduction suite: the method as a library (``from sara import SaRA``) plus the
embedded world, baselines, metrics and experiments of the paper."""
__version__ = "0.1.0"

#: the library API (sara.core), imported on first use so that `import sara.<module>` (run.py's
#: config checks, the results store) does not load torch
API = (
    "MigrationTracker",
    "RankLoss",
    "SaRA",
    "Selection",
    "SparseParameters",
    "delta",
    "eligible_matrices",
    "get_sparse",
    "load_sparse",
    "lr_from_threshold",
    "merge",
    "merge_sparse",
    "model_fingerprint",
    "nuclear_norm_loss",
    "per_layer_counts",
    "read_sparse",
    "save_sparse",
    "select",
    "select_for_budget",
    "select_from_scores",
    "share_below",
    "sparse_state_dict",
    "threshold_for_budget",
    "wrap",
)


def __getattr__(name: str):
    if name in API:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'sara' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(API))


__all__ = list(API)
