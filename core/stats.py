"""Small statistics used in reports: intervals, detector scores, latency percentiles."""
from __future__ import annotations


import numpy as np

from storage.stats import f_beta, format_points, mcnemar_exact_p, paired_gain, wilson_interval  # noqa: F401 - re-exported: core's reports use them


def precision_recall_f1(counts) -> tuple[float, float, float]:
    """Precision, recall and F1 from an object with tp/fp/fn; 0 where undefined."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def percentiles_ms(seconds, qs=(50, 99)) -> dict[str, float]:
    """Latency percentiles in milliseconds, keys like 'p50'."""
    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}
