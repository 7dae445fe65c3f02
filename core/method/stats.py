"""Statistics shared by the learner, the worker, the UI and the benches: success intervals,
paired gains, detector scores, latency percentiles. Pure Python (numpy only for
percentiles), so the web app uses them without importing the learner."""
from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (well behaved at 0 and n)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def f_beta(precision: float, recall: float, beta: float = 1.0) -> float:
    """F-beta score: beta < 1 weighs precision more (beta = 0.5: precision counts twice as
    much as recall), beta = 1 is F1; 0 where both are 0."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b2 = beta * beta
    denom = b2 * precision + recall
    return (1 + b2) * precision * recall / denom if denom else 0.0


def paired_gain(before, after, z: float = 1.96) -> dict:
    """The change in success rate when the same seeds are run twice (a checkpoint before and
    after practice): ``gain = rate(after) - rate(before)``, with Newcombe's hybrid-score
    interval for a difference of paired proportions (Newcombe 1998, method 10: Wilson
    intervals of both rates, combined with the phi correlation of the paired table) and the
    exact two-sided McNemar p-value (a binomial test on the seeds that changed outcome).

    Pairing removes the seed-to-seed spread both evaluations share (easy seeds succeed twice),
    so the interval of the gain is narrower than the two rates' own intervals suggest: a rise
    of 10 points on 100 seeds can be beyond noise when the two rates' intervals overlap.

    ``before`` and ``after``: outcomes per seed, same length and order (truthy = success).
    Returns n, gain, ci (lo, hi), p, gained (failed before, succeeded after), lost."""
    b = [bool(x) for x in before]
    a = [bool(x) for x in after]
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same seeds: {len(b)} before, {len(a)} after")
    n = len(a)
    if n == 0:
        return {"n": 0, "gain": 0.0, "ci": (-1.0, 1.0), "p": 1.0, "gained": 0, "lost": 0}
    both = sum(x and y for x, y in zip(a, b))
    gained = sum(x and not y for x, y in zip(a, b))
    lost = sum(y and not x for x, y in zip(a, b))
    neither = n - both - gained - lost
    p1, p2 = (both + gained) / n, (both + lost) / n  # after, before
    l1, u1 = wilson_interval(both + gained, n, z)
    l2, u2 = wilson_interval(both + lost, n, z)
    margins = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    phi = (both * neither - gained * lost) / math.sqrt(margins) if margins else 0.0
    theta = p1 - p2
    down = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    up = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"n": n, "gain": theta, "ci": (max(-1.0, theta - down), min(1.0, theta + up)),
            "p": mcnemar_exact_p(gained, lost), "gained": gained, "lost": lost}


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar test: under no change, each of the ``gained + lost`` seeds that
    changed outcome went either way with probability 1/2."""
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0, got {gained}, {lost}")
    m, k = gained + lost, min(gained, lost)
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def format_points(x: float) -> str:
    """A change in success rate as signed points: +10, -3, and one decimal near zero so that an
    interval bound just below zero reads -0.4 rather than -0."""
    pts = 100 * x
    return f"{pts:+.1f}" if abs(pts) < 1 else f"{pts:+.0f}"


def precision_recall_f1(counts) -> tuple[float, float, float]:
    """Precision, recall and F1 from an object with tp/fp/fn; 0 where undefined."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def percentiles_ms(seconds, qs=(50, 99)) -> dict[str, float]:
    """Latency percentiles in milliseconds, keys like 'p50'."""
    import numpy as np

    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}
