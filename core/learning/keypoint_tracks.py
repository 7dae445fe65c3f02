"""Keypoint labels from one click per demonstration: points marked on the first frame,
followed through the rest by template matching.

A reviewer clicks the object to push and its target on a demonstration's first frame;
``track_points`` carries each click through the following frames by the patch around it
(the sum of squared differences in a window around the last position, with a small pull to
stay put, so a point on a featureless table, such as a region target, does not wander).
This stands in for the simulator's per-frame labels (``SFTConfig.keypoint_labels``).
Pure numpy: no simulator, no model.
"""
from __future__ import annotations

import numpy as np

PATCH = 1
"""Half-size of the template (pixels): a 3x3 patch, inside a 64-pixel frame's block (~5 px). A 7x7
patch (the first choice) took in the table around the block, lost it as it moved over other
background and near the pusher, and ended 9 px off on average at the last frame, in half the
demonstrations; 3x3 ends 0.6 px off (measured on Stage-1 demonstrations against the simulator's
labels, both domains: docs/experiments/pretraining.md, "The tracker lost the block")."""
SEARCH = 5
"""How far a point may move between frames (pixels): blocks move at most ~1.5 px a step."""
STAY = 2.0
"""Penalty per squared pixel of movement, in the units of the mean squared colour difference."""


def _to_px(uv: np.ndarray, size: int) -> np.ndarray:
    """(u, v) in [-1, 1] at the image's edges (the keypoint convention: scene.project) -> pixel
    coordinates, pixel i's centre at i."""
    return (np.asarray(uv, np.float64) + 1.0) / 2.0 * size - 0.5


def track_points(frames: np.ndarray, points0: np.ndarray) -> np.ndarray:
    """frames uint8 [T, H, W, 3] (square), points0 [K, 2] image (u, v) in [-1, 1] on frame 0
    -> [T, K, 2], the points on every frame (frame 0's as given)."""
    t_len, h, w, _ = frames.shape
    if h != w:
        raise ValueError(f"track_points needs square frames, got {h}x{w}")
    img = np.pad(frames.astype(np.float32), ((0, 0), (PATCH + SEARCH,) * 2, (PATCH + SEARCH,) * 2, (0, 0)),
                 mode="edge")
    off = PATCH + SEARCH
    out = np.empty((t_len, len(points0), 2), np.float32)
    out[0] = points0
    dy, dx = np.mgrid[-SEARCH:SEARCH + 1, -SEARCH:SEARCH + 1]
    stay = STAY * (dx * dx + dy * dy)
    side = 2 * (PATCH + SEARCH) + 1
    for k, p in enumerate(np.asarray(points0)):
        x, y = x0, y0 = np.clip(np.rint(_to_px(p, w)).astype(int), 0, w - 1)
        template = img[0, y + off - PATCH:y + off + PATCH + 1, x + off - PATCH:x + off + PATCH + 1]
        for t in range(1, t_len):
            # Every candidate patch of the search window at once: [2S+1, 2S+1, 2P+1, 2P+1, 3].
            window = img[t, y + off - PATCH - SEARCH:y + off - PATCH - SEARCH + side,
                         x + off - PATCH - SEARCH:x + off - PATCH - SEARCH + side]
            views = np.lib.stride_tricks.sliding_window_view(window, template.shape)[:, :, 0]
            cost = ((views - template) ** 2).mean(axis=(2, 3, 4)) + stay
            i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
            x, y = min(max(x + int(dx[i, j]), 0), w - 1), min(max(y + int(dy[i, j]), 0), h - 1)
            out[t, k] = p + np.array([x - x0, y - y0], np.float64) * 2.0 / w  # the click's sub-pixel place kept
    return out
