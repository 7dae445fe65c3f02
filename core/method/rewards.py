"""Stage-2 rewards and returns (METHOD.md): pure functions, no model or simulator."""
from __future__ import annotations

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


def reinforce_loss(log_probs, returns, c: float = 0.05):
    """On-policy REINFORCE without a baseline (METHOD.md): mean of -c * R_t * log pi(a_t|o_t,g).

    ``log_probs`` is a torch tensor [B] (differentiable), ``returns`` [B] (constants)."""
    import torch

    r = torch.as_tensor(returns, dtype=log_probs.dtype, device=log_probs.device)
    if r.shape != log_probs.shape:
        raise ValueError(f"returns {tuple(r.shape)} and log_probs {tuple(log_probs.shape)} must match")
    return -(c * r.detach() * log_probs).mean()
