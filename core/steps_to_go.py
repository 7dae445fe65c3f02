"""Steps-to-go: label binning, the expected value d(o, g), and the success detector.

Pure functions on numpy arrays or torch tensors; no model, simulator or database.
Bins cover 0..cap in bins of ``bin_width`` steps: bin k holds labels
[k*w, (k+1)*w). Labels above the cap are clipped into the last bin (METHOD.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


def num_bins(cap: int, bin_width: int = 1) -> int:
    """Number of steps-to-go bins for labels 0..cap (inclusive)."""
    if cap < 0 or bin_width < 1:
        raise ValueError(f"need cap >= 0 and bin_width >= 1, got cap={cap}, bin_width={bin_width}")
    return cap // bin_width + 1


def stg_to_bin(steps, cap: int, bin_width: int = 1):
    """Map steps-to-go labels (ints >= 0) to bin indices; labels above ``cap`` go to the last bin."""
    if isinstance(steps, torch.Tensor):
        if (steps < 0).any():
            raise ValueError(f"steps-to-go labels must be >= 0, got min {int(steps.min())}")
        return torch.clamp(steps, max=cap) // bin_width
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


def soft_stg_targets(labels: torch.Tensor, cap: int, bin_width: int, sigma: float) -> torch.Tensor:
    """Target distributions over bins for steps-to-go ``labels`` [B] -> [B, n_bins].

    sigma = 0 gives the one-hot bin(T - t) of METHOD.md's loss. sigma > 0 spreads the
    label as a Gaussian (in steps) integrated over each bin ("HL-Gauss", Imani & White
    2018; Farebrother et al. 2024): neighbouring steps-to-go share credit, which
    the ordinal target rewards, while the head stays a categorical.
    """
    n = num_bins(cap, bin_width)
    y = torch.clamp(labels, max=cap).to(torch.float32)
    if sigma <= 0:
        return torch.nn.functional.one_hot(stg_to_bin(labels, cap, bin_width), n).to(torch.float32)
    edges = torch.arange(n + 1, dtype=torch.float32, device=labels.device) * bin_width - 0.5
    edges[-1] = float(cap) + 0.5
    cdf = 0.5 * (1 + torch.erf((edges.unsqueeze(0) - y.unsqueeze(1)) / (sigma * 2 ** 0.5)))
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(1, keepdim=True).clamp(min=1e-12)


def expected_steps_to_go(logits_or_probs, centers, *, from_logits: bool = True):
    """d(o, g) = E[steps-to-go] under the predicted distribution over bins.

    ``logits_or_probs``: [..., n_bins]; ``centers``: [n_bins]. Returns [...].
    """
    if isinstance(logits_or_probs, torch.Tensor):
        c = torch.as_tensor(centers, dtype=logits_or_probs.dtype, device=logits_or_probs.device)
        p = torch.softmax(logits_or_probs, dim=-1) if from_logits else logits_or_probs
        return (p * c).sum(-1)
    x = np.asarray(logits_or_probs, dtype=np.float64)
    if from_logits:
        x = np.exp(x - x.max(axis=-1, keepdims=True))
        x = x / x.sum(axis=-1, keepdims=True)
    return (x * np.asarray(centers, dtype=np.float64)).sum(-1)


def is_success(d, threshold_s: float):
    """The success test d(o, g) <= s."""
    return d <= threshold_s


def first_detection(d_seq: Sequence[float], threshold_s: float, patience: int = 1) -> int | None:
    """Index of the step at which the detector fires, or None.

    It fires at the first step t where d <= s has held for ``patience`` consecutive
    steps ending at t (patience=1 is the plain test).
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    run = 0
    for t, d in enumerate(d_seq):
        run = run + 1 if d <= threshold_s else 0
        if run >= patience:
            return t
    return None


@dataclass(frozen=True)
class DetectorCounts:
    """Episode-level confusion counts of the detector against ground truth."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "DetectorCounts") -> "DetectorCounts":
        return DetectorCounts(self.tp + other.tp, self.fp + other.fp,
                              self.fn + other.fn, self.tn + other.tn)


def score_episode(d_seq: Sequence[float], gt_success: Sequence[bool], threshold_s: float,
                  patience: int = 1, tolerance: int = 0) -> DetectorCounts:
    """Score one episode as if the detector had ended it.

    The verdict is taken at the detector's first firing, step t: a true positive if
    ground truth holds at some frame in t..t+tolerance, else a false positive (in
    practice it would have ended a failed episode as a success). ``tolerance`` = a
    few steps accepts a detector that fires just before the goal is reached, which is
    what d <= s with s of a few steps means. If it never fires: a false negative when
    ground truth was reached at some step, else a true negative.
    """
    if len(d_seq) != len(gt_success):
        raise ValueError(f"d_seq has {len(d_seq)} steps but gt_success has {len(gt_success)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 steps, got {tolerance}")
    t = first_detection(d_seq, threshold_s, patience)
    if t is not None:
        return DetectorCounts(tp=1) if any(gt_success[t:t + tolerance + 1]) else DetectorCounts(fp=1)
    return DetectorCounts(fn=1) if any(gt_success) else DetectorCounts(tn=1)


def calibrate_threshold(episodes: Sequence[tuple[Sequence[float], Sequence[bool]]],
                        candidates: Sequence[float] | None = None, patience: int = 1,
                        tolerance: int = 0, beta: float = 1.0, tie: str = "smallest"
                        ) -> tuple[float, DetectorCounts]:
    """Pick s maximising episode-level F-beta on held-out (d_seq, gt_success) episodes.

    ``beta`` = 1 is F1. On the policy's own rollouts, where most episodes may succeed,
    F1 can prefer a detector that fires in every episode (precision = the success rate,
    recall 1); beta = 0.5 weighs precision twice as much, which suits practice: a false
    positive rewards a failure, a miss only costs the rest of the step budget.
    Ties go to the smaller s (a stricter detector) with ``tie="smallest"``. With
    ``tie="middle"`` they go to the middle of the run of tied candidates that starts at
    the smallest: on a few dozen rollouts a whole range of s often scores the same (every
    success's d below it, every failure's above), and the smallest sits on the edge of the
    successes seen, so new successes miss it; the middle keeps the margin on both sides
    (Meta-World quick, a refined reward model, 15 calibration rollouts: the tied run was
    s 1.0-1.5, the smallest gave held-out recall 0.12, the middle 0.25, precision 1.00
    both). Demonstration episodes end at
    their first success, so their last frame is the positive and every earlier frame
    a negative: a threshold that fires before the end is penalised as a false positive.
    """
    from core.stats import f_beta, precision_recall_f1

    if not episodes:
        raise ValueError("calibrate_threshold needs at least one held-out episode")
    if tie not in ("smallest", "middle"):
        raise ValueError(f"tie must be 'smallest' or 'middle', got {tie!r}")
    if candidates is None:
        candidates = np.round(np.arange(0.25, 8.01, 0.25), 2)
    scored = []  # (s, score, counts) in increasing s
    for s in sorted(float(c) for c in candidates):
        counts = DetectorCounts()
        for d_seq, gt in episodes:
            counts = counts + score_episode(d_seq, gt, s, patience, tolerance)
        p, r, _ = precision_recall_f1(counts)
        scored.append((s, f_beta(p, r, beta), counts))
    top = max(score for _, score, _ in scored)
    first = next(i for i, (_, score, _) in enumerate(scored) if score >= top - 1e-12)
    last = first
    while tie == "middle" and last + 1 < len(scored) and scored[last + 1][1] >= top - 1e-12:
        last += 1
    s, _, counts = scored[(first + last) // 2]
    return s, counts
