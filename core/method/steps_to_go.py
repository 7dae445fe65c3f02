"""Steps-to-go labels in bins, and the expected value d(o, g) (docs/method.md, "Steps-to-go").

Bins cover 0..cap in bins of ``bin_width`` steps: bin k holds labels [k*w, (k+1)*w).
Labels above the cap are clipped into the last bin. The functions take numpy arrays or
torch tensors (the learner's) and return the same kind; this module never imports torch.
"""
from __future__ import annotations

import numpy as np


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def num_bins(cap: int, bin_width: int = 1) -> int:
    """Number of steps-to-go bins for labels 0..cap (inclusive)."""
    if cap < 0 or bin_width < 1:
        raise ValueError(f"need cap >= 0 and bin_width >= 1, got cap={cap}, bin_width={bin_width}")
    return cap // bin_width + 1


def stg_to_bin(steps, cap: int, bin_width: int = 1):
    """Map steps-to-go labels (ints >= 0) to bin indices; labels above ``cap`` go to the last bin."""
    if _is_tensor(steps):
        if (steps < 0).any():
            raise ValueError(f"steps-to-go labels must be >= 0, got min {int(steps.min())}")
        return steps.clamp(max=cap) // bin_width
    arr = np.asarray(steps)
    if (arr < 0).any():
        raise ValueError(f"steps-to-go labels must be >= 0, got min {int(arr.min())}")
    return np.minimum(arr, cap) // bin_width


def bin_centers(cap: int, bin_width: int = 1) -> np.ndarray:
    """Representative steps-to-go of each bin: the mean of the integer labels it holds.

    With bin_width=1 the centre of bin k is k; with width 2 bin 0 holds {0, 1} -> 0.5.
    The last bin holds only the labels up to ``cap``.
    """
    n = num_bins(cap, bin_width)
    lo = np.arange(n) * bin_width
    hi = np.minimum(lo + bin_width - 1, cap)
    return ((lo + hi) / 2.0).astype(np.float32)


def expected_steps_to_go(logits_or_probs, centers, *, from_logits: bool = True):
    """d(o, g) = E[steps-to-go] under the predicted distribution over bins.

    ``logits_or_probs``: [..., n_bins]; ``centers``: [n_bins]. Returns [...].
    """
    if _is_tensor(logits_or_probs):
        c = logits_or_probs.new_tensor(np.asarray(centers, dtype=np.float64))
        p = logits_or_probs.softmax(dim=-1) if from_logits else logits_or_probs
        return (p * c).sum(-1)
    x = np.asarray(logits_or_probs, dtype=np.float64)
    if from_logits:
        x = np.exp(x - x.max(axis=-1, keepdims=True))
        x = x / x.sum(axis=-1, keepdims=True)
    return (x * np.asarray(centers, dtype=np.float64)).sum(-1)
