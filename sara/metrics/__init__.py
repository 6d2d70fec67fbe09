"""Metrics of the SaRA paper: FID, CLIP score, VLHI, B-VQA, CLIP-I / CLIP-T.

One file per metric. ``from sara.metrics import vlhi`` gives the Eq. 8 function; heavy modules
(torch, clean-fid, open_clip, transformers) are imported only by the metric that needs them.

Note: ``sara.metrics.vlhi`` is the *function* (the package attribute shadows the submodule), so
``import sara.metrics.vlhi as m`` gives the function; import helpers with
``from sara.metrics.vlhi import add_vlhi, reproduce_reported``.
"""
from .vlhi import VLHIError, add_mean_rows, add_vlhi, vlhi

__all__ = ["vlhi", "add_vlhi", "add_mean_rows", "VLHIError"]
