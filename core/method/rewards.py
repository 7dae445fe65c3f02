"""Stage-2 rewards and returns (docs/method.md, "Rewards and returns"): pure functions, no
model, simulator or torch."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def progress_rewards(d_seq) -> np.ndarray:
    """r_t = d(o_t, g) - d(o_{t+1}, g) for a sequence d_0..d_T; returns T rewards."""
    d = np.asarray(d_seq, dtype=np.float64)
    if d.ndim != 1 or len(d) < 1:
        raise ValueError(f"d_seq must be a 1-D sequence of >= 1 values, got shape {d.shape}")
    return d[:-1] - d[1:]


def discounted_returns(rewards, gamma: float = 0.9) -> np.ndarray:
    """R_t = sum_{i>=t} gamma^(i-t) r_i for one episode."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out


def batch_baseline(returns, kind: str = "none") -> float:
    """The constant subtracted from every R_t of one update: 0 for 'none', the mean R_t of
    the iteration's tuples for 'mean'."""
    if kind == "none":
        return 0.0
    if kind == "mean":
        r = np.asarray(returns, dtype=np.float64)
        return float(r.mean()) if r.size else 0.0
    raise ValueError(f"unknown baseline {kind!r}: use 'none' or 'mean'")


def ground_truth_rewards(gt: Sequence[bool], length: int) -> np.ndarray:
    """The oracle ablation's rewards (``ground_truth_reward``): +1 on the action that first
    reached ground-truth success (frame t+1 holds it), 0 elsewhere; ``gt[t]`` is frame t's."""
    r = np.zeros(length)
    if length and any(gt[1:]):
        r[min(length - 1, list(gt[1:]).index(True))] = 1.0
    return r


def override_final_d(d: list[float], success: bool) -> None:
    """A supervisor's verdict replaces the detector's for an episode's rewards: success sets the
    final d to 0 (all remaining progress earned); failure removes any progress credited on the
    final step (the final d is set back to the one before). In place; no-op under 2 frames."""
    if len(d) < 2:
        return
    d[-1] = 0.0 if success else max(d[-1], d[-2])
