"""The policy acts in [-1, 1] per action dimension; a robot (or a recorded dataset) has its own
units. One rule maps between them, used by the LeRobot import (dataset -> policy units) and by the
rollout (policy -> robot units, the bounds kept in the checkpoint's PolicyConfig). Pure numpy."""
from __future__ import annotations

import numpy as np


def unit_to_bounds(a, low, high) -> np.ndarray:
    """A policy action in [-1, 1] per dimension -> the robot's units: low + (a + 1) / 2 * (high - low)."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    return low + (np.clip(np.asarray(a, np.float64), -1.0, 1.0) + 1.0) / 2.0 * (high - low)


def bounds_to_unit(a, low, high) -> np.ndarray:
    """Inverse of ``unit_to_bounds``, clipped to [-1, 1]; 0 for a dimension whose bounds are equal."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    u = np.where(span > 0, 2.0 * (np.asarray(a, np.float64) - low) / safe - 1.0, 0.0)
    return np.clip(u, -1.0, 1.0).astype(np.float32)


def check_bounds(low, high, dim: int, what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bounds as tuples of floats, or ValueError naming ``what`` and the problem."""
    lo = np.asarray(low, np.float64).reshape(-1)
    hi = np.asarray(high, np.float64).reshape(-1)
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise ValueError(f"{what}: action_low/action_high need {dim} values each (the action size), got "
                         f"{lo.size} and {hi.size}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo > hi):
        raise ValueError(f"{what}: action bounds must be finite with low <= high, got {lo.tolist()} .. {hi.tolist()}")
    return tuple(float(x) for x in lo), tuple(float(x) for x in hi)
