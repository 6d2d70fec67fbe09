"""The Fréchet distance between two Gaussians fitted to feature sets — pure numpy/scipy.

    d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})

Same maths as clean-fid's ``frechet_distance`` (Heusel et al. 2017; stable version by
D. Sutherland): ``scipy.linalg.sqrtm`` of ``Σ1 Σ2``, a diagonal offset ``eps`` when the product is
singular, and the real part when rounding leaves a tiny imaginary one. Statistics are float64,
``np.cov(rowvar=False)`` (unbiased), as clean-fid computes them.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

__all__ = ["feature_stats", "frechet_distance", "fid_from_features"]


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``feats`` [N, D] (N >= 2)."""
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {feats.shape[0]}")
    if not np.isfinite(feats).all():
        raise ValueError("features contain NaN/inf (a broken image or extractor)")
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # clean-fid calls sqrtm(..., disp=False); SciPy >= 1.16 deprecates `disp` (same result).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return linalg.sqrtm(a, disp=False)[0]
        except TypeError:  # SciPy without `disp`
            return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances differ in shape: {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))
