"""Camera-motion metric: estimate a clip's global camera motion and compare it with the trained one.

For a clip of frames ``[F, H, W, 3]`` the estimator aligns every pair of consecutive frames with
a zoom about the frame centre followed by a shift: for each candidate scale change (a grid of
:data:`LOG_SCALES`, refined by a parabola through the best three) the zoom is undone on the later
frame and the remaining **shift is measured by phase correlation**; the candidate whose aligned
frames differ least wins. The clip's motion is the median over pairs times ``F - 1`` (total log
scale change ``log_scale``, total content shift ``dx``, ``dy`` in frame sides).

``classify_motion`` turns the estimate into a label of :data:`MOTIONS`: each motion is compared
with its threshold (``scale_threshold`` for ``|log_scale|``, ``shift_threshold`` for the shift);
neither above: ``static``; else the larger ratio decides zoom vs pan/tilt. A camera that pans
right moves the content left (``dx < 0``); zooming in makes it grow (``log_scale > 0``).

``camera_motion_accuracy(clips, motion)``: the share of clips whose label equals ``motion``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

#: Labels of the estimator (camera motion; the content moves the opposite way).
MOTIONS = ("static", "zoom_in", "zoom_out", "pan_right", "pan_left", "tilt_up", "tilt_down")

#: Defaults of :func:`classify_motion` (validated by ``scripts/validate_camera_motion.py``).
SCALE_THRESHOLD = 0.18   # |log(total scale change)| (exp(0.18) = 1.2)
SHIFT_THRESHOLD = 0.09   # |total shift|, a share of the frame side


@dataclass(frozen=True)
class MotionEstimate:
    log_scale: float  # log of the total scale change, first -> last frame (> 0: content grows)
    dx: float         # total content shift, first -> last frame, in frame sides (> 0: right)
    dy: float         # total content shift in frame sides (> 0: down)
    label: str


def _gray(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame, dtype=np.float64)
    if f.ndim == 3:
        f = f[..., :3] @ np.array([0.299, 0.587, 0.114])
    return f - f.mean()


def _hann2d(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w))


def _subpixel(c: np.ndarray, i: int, axis: int) -> float:
    """Parabolic peak refinement of a (circular) correlation surface along ``axis``."""
    n = c.shape[axis]
    idx = [0, 0]
    other = 1 - axis
    peak = np.unravel_index(np.argmax(c), c.shape)
    idx[other] = peak[other]
    vals = []
    for d in (-1, 0, 1):
        idx[axis] = (i + d) % n
        vals.append(c[tuple(idx)])
    den = vals[0] - 2 * vals[1] + vals[2]
    return float(i + (0.5 * (vals[0] - vals[2]) / den if abs(den) > 1e-12 else 0.0))


def phase_correlation(a: np.ndarray, b: np.ndarray, window: bool = True) -> tuple[float, float]:
    """``(dy, dx)`` in pixels such that ``b(x) ~ a(x - d)`` (content of ``a`` moved by ``d``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"phase_correlation needs two 2-d arrays of one shape, got {a.shape} and {b.shape}")
    if window:
        w = _hann2d(*a.shape)
        a, b = a * w, b * w
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    r = fb * np.conj(fa)
    r /= np.abs(r) + 1e-12
    c = np.real(np.fft.ifft2(r))
    py, px = np.unravel_index(np.argmax(c), c.shape)
    dy, dx = _subpixel(c, py, 0), _subpixel(c, px, 1)
    h, w_ = a.shape
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w_ if dx > w_ / 2 else dx
    return dy, dx


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(img, [y, x], order=1, mode="constant", cval=0.0)


def _shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return _bilinear(img, yy - dy, xx - dx)


def align(a: np.ndarray, b: np.ndarray, log_scales: np.ndarray) -> tuple[float, float, float, float]:
    """Best ``(log_s, dy, dx, residual)`` with ``b`` ~ ``a`` zoomed by ``s`` about the centre, then
    shifted: for every candidate scale, undo it on ``b`` and measure the rest by phase correlation;
    keep the candidate whose aligned frames differ least (mean squared error where both are
    defined)."""
    h, w = a.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    best, curve = None, []
    for ls in log_scales:
        s = float(np.exp(ls))
        ys, xs = cy + (yy - cy) * s, cx + (xx - cx) * s
        b_s = _bilinear(b, ys, xs)
        valid = (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
        dy, dx = phase_correlation(a, np.where(valid, b_s, 0.0))
        a_t = _shift(a, dy, dx)
        ok = valid & (yy - dy >= 0) & (yy - dy <= h - 1) & (xx - dx >= 0) & (xx - dx <= w - 1)
        res = float(np.mean((a_t[ok] - b_s[ok]) ** 2)) if ok.sum() >= 0.25 * h * w else np.inf
        curve.append(res)
        if best is None or res < best[3]:
            best = (float(ls), dy, dx, res)
    if best is None or not np.isfinite(best[3]):
        return 0.0, 0.0, 0.0, float("inf")
    i = int(np.argmin(curve))
    if 0 < i < len(curve) - 1 and np.isfinite(curve[i - 1]) and np.isfinite(curve[i + 1]):
        # parabolic refinement between grid points (the grid step would bias a sum over frames)
        den = curve[i - 1] - 2 * curve[i] + curve[i + 1]
        if den > 0:
            step = float(log_scales[i + 1] - log_scales[i])
            best = (best[0] + step * 0.5 * (curve[i - 1] - curve[i + 1]) / den,) + best[1:]
    return best


#: Candidate scale changes between consecutive frames (log scale, about 1/1.16 ... 1.16).
LOG_SCALES = np.linspace(-0.15, 0.15, 21)


def estimate_motion(clip, scale_threshold: float = SCALE_THRESHOLD,
                    shift_threshold: float = SHIFT_THRESHOLD) -> MotionEstimate:
    """Global motion of ``clip`` (``[F, H, W, 3]`` or ``[F, H, W]``, any numeric range): the median
    of the motions between consecutive frames (robust to a frame where content leaves), times
    ``F - 1``."""
    frames = np.asarray(clip)
    if frames.ndim not in (3, 4) or frames.shape[0] < 2:
        raise ValueError(f"a clip is [F, H, W(, C)] with F >= 2 frames, got shape {frames.shape}")
    gray = [_gray(f) for f in frames]
    h, w = gray[0].shape
    steps = []
    for a, b in zip(gray[:-1], gray[1:]):
        log_s, dy, dx, _ = align(a, b, LOG_SCALES)
        # b(p) ~ a(c + (p - c)/s - d): the content's own shift, in frame sides
        steps.append((log_s, dx * np.exp(log_s) / w, dy * np.exp(log_s) / h))
    log_s, dx, dy = (np.median(np.array(steps), axis=0) * (len(frames) - 1)).tolist()
    return MotionEstimate(log_s, dx, dy, classify_motion(log_s, dx, dy, scale_threshold, shift_threshold))


def classify_motion(log_scale: float, dx: float, dy: float, scale_threshold: float = SCALE_THRESHOLD,
                    shift_threshold: float = SHIFT_THRESHOLD) -> str:
    """A label of :data:`MOTIONS` from the estimated content scale change and shift."""
    zoom = abs(log_scale) / scale_threshold
    pan = max(abs(dx), abs(dy)) / shift_threshold
    if max(zoom, pan) <= 1.0:
        return "static"
    if zoom >= pan:  # the larger motion relative to its threshold decides
        return "zoom_in" if log_scale > 0 else "zoom_out"
    if abs(dx) >= abs(dy):
        return "pan_right" if dx < 0 else "pan_left"
    return "tilt_down" if dy < 0 else "tilt_up"


def check_motion(motion: str) -> str:
    if motion not in MOTIONS:
        raise ValueError(f"unknown camera motion {motion!r}; expected one of {', '.join(MOTIONS)}")
    return motion


def camera_motion_labels(clips: Iterable, **kw) -> list[str]:
    return [estimate_motion(c, **kw).label for c in clips]


def camera_motion_accuracy(clips: Sequence, motion: str, **kw) -> float:
    """Share of ``clips`` whose estimated camera motion is ``motion``."""
    check_motion(motion)
    labels = camera_motion_labels(clips, **kw)
    if not labels:
        raise ValueError("camera_motion_accuracy: no clips")
    return float(np.mean([lab == motion for lab in labels]))
