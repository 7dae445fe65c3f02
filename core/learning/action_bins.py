"""Continuous actions <-> per-dimension bins (RT-2 style), pure functions."""
from __future__ import annotations

import numpy as np
import torch


def action_bin_centers(n_bins: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Centres of ``n_bins`` evenly spaced bins whose end centres sit on low and high."""
    if n_bins < 2:
        raise ValueError(f"need at least 2 action bins, got {n_bins}")
    return np.linspace(low, high, n_bins, dtype=np.float32)


def action_to_bins(actions, n_bins: int, low: float = -1.0, high: float = 1.0):
    """Nearest bin index per dimension; values outside [low, high] are clipped first."""
    if isinstance(actions, torch.Tensor):
        if not torch.isfinite(actions).all():
            raise ValueError(f"actions contain NaN or inf: {actions[~torch.isfinite(actions)][:4].tolist()}")
        x = (actions.clamp(low, high) - low) / (high - low) * (n_bins - 1)
        return torch.round(x).long()
    a = np.asarray(actions, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"actions contain NaN or inf: {a[~np.isfinite(a)][:4]}")
    x = (np.clip(a, low, high) - low) / (high - low) * (n_bins - 1)
    return np.rint(x).astype(np.int64)


def bins_to_action(bins, n_bins: int, low: float = -1.0, high: float = 1.0):
    """Inverse of action_to_bins: the bin centre per dimension."""
    if isinstance(bins, torch.Tensor):
        return low + bins.float() * (high - low) / (n_bins - 1)
    b = np.asarray(bins)
    return (low + b.astype(np.float32) * (high - low) / (n_bins - 1)).astype(np.float32)
