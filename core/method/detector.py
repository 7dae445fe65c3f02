"""The success detector (docs/method.md, "The success detector"): an episode has succeeded
once d(o, g) <= s has held for ``patience`` consecutive frames. This module is the one place
that rule is written; the rollout loop, the worker's records and telemetry, Stage-1
calibration, evaluation and the web app's replay of stored curves all use it.

Pure Python: no model, simulator or database.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from core.method.stats import f_beta, precision_recall_f1

DEFAULT_TOLERANCE = 3
"""Steps: a detector firing this close before ground truth counts as right when rollouts are
scored (an s of a few steps fires a few steps before the goal by design)."""

DEFAULT_CANDIDATES = tuple(round(0.25 * k, 2) for k in range(1, 33))
"""The thresholds s tried when calibrating: 0.25 to 8 steps."""

WIDE_CANDIDATES = tuple(round(0.25 * k, 2) for k in range(1, 81))
"""0.25 to 20 steps: for a refined reward model, which can read the goal at d ~ 8-15 (its
failure frames were pushed far above)."""


@dataclass(frozen=True)
class DetectorSpec:
    """Fires when d <= threshold_s has held for ``patience`` consecutive frames."""

    threshold_s: float
    patience: int = 1

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")


class DetectorRun:
    """The detector over one episode, one frame at a time: ``update(d)`` returns how many
    frames in a row d has been <= s (the count shown live and stored with each step);
    ``fired_at`` is the first frame where that count reached the patience. A missing d
    (None) counts as above s."""

    def __init__(self, spec: DetectorSpec):
        self.spec = spec
        self.count = 0
        self.frames = 0
        self.fired_at: Optional[int] = None
        self._before: tuple[int, int, Optional[int]] | None = None

    def update(self, d: Optional[float]) -> int:
        self._before = (self.count, self.frames, self.fired_at)
        self.count = self.count + 1 if d is not None and d <= self.spec.threshold_s else 0
        if self.count >= self.spec.patience and self.fired_at is None:
            self.fired_at = self.frames
        self.frames += 1
        return self.count

    def retract(self) -> None:
        """Forget the last ``update`` (a paused robot's frame that is not recorded)."""
        if self._before is not None:
            self.count, self.frames, self.fired_at = self._before
            self._before = None

    @property
    def fired(self) -> bool:
        return self.fired_at is not None


def detector_counts(d_seq: Sequence[Optional[float]], spec: DetectorSpec) -> list[int]:
    """The running count of frames with d <= s, frame by frame."""
    run = DetectorRun(spec)
    return [run.update(d) for d in d_seq]


def first_detection(d_seq: Sequence[Optional[float]], threshold_s: float, patience: int = 1) -> int | None:
    """Index of the frame at which the detector fires, or None: the first t where d <= s has
    held for ``patience`` consecutive frames ending at t (patience 1 is the plain test)."""
    run = DetectorRun(DetectorSpec(threshold_s, patience))
    for d in d_seq:
        run.update(d)
        if run.fired:
            return run.fired_at
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


def false_positive(detector_step: int | None, gt: Sequence[bool], tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """A fire that ground truth does not confirm within ``tolerance`` frames before it or any
    frame after (practice's per-iteration count of the detector's false positives)."""
    return detector_step is not None and not any(gt[max(0, detector_step - tolerance):])


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
    both). Demonstration episodes end at their first success, so their last frame is the
    positive and every earlier frame a negative: a threshold that fires before the end is
    penalised as a false positive.
    """
    if not episodes:
        raise ValueError("calibrate_threshold needs at least one held-out episode")
    if tie not in ("smallest", "middle"):
        raise ValueError(f"tie must be 'smallest' or 'middle', got {tie!r}")
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    scored = []  # (threshold, score, counts) in increasing threshold
    for threshold in sorted(float(c) for c in candidates):
        counts = DetectorCounts()
        for d_seq, gt in episodes:
            counts = counts + score_episode(d_seq, gt, threshold, patience, tolerance)
        p, r, _ = precision_recall_f1(counts)
        scored.append((threshold, f_beta(p, r, beta), counts))
    top = max(score for _, score, _ in scored)
    first = next(i for i, (_, score, _) in enumerate(scored) if score >= top - 1e-12)
    last = first
    while tie == "middle" and last + 1 < len(scored) and scored[last + 1][1] >= top - 1e-12:
        last += 1
    threshold, _, counts = scored[(first + last) // 2]
    return threshold, counts


def replay_detector(d_seq: Sequence[Optional[float]], fired: bool, threshold_s: float,
                    patience: int = 1) -> Optional[bool]:
    """Would a detector with ``threshold_s`` / ``patience`` have fired on this stored d(o,g)
    curve? None when the curve cannot tell: the episode ended because the live detector
    fired (``fired``), so its curve stops there, and the replayed detector had not fired
    by then; what the robot would have done next was never seen (a right-censored episode).
    Without this, a stricter s than the one it ran with would count every such episode as a
    miss."""
    if first_detection(d_seq, threshold_s, patience) is not None:
        return True
    return None if fired else False


def sweep_judged(curves: Sequence[Sequence[Optional[float]]], truths: Sequence[bool], fired: Sequence[bool],
                 candidates: Iterable[float], patience: int = 1, beta: float = 0.5,
                 min_decided: float = 0.5, current: Optional[float] = None) -> dict[str, object]:
    """Replay the detector at each candidate s on stored d(o,g) curves of human-judged
    episodes (``truths``: the human's success/failure; ``fired``: the live detector ended the
    episode) and score it: tp/fp/fn/tn, censored (cannot tell, see replay_detector),
    precision, recall, F-beta. ``best``: the highest F-beta among candidates where at least
    ``min_decided`` of the episodes could be decided (ties: fewer undecided, then the s
    closest to ``current``, the s in use, then the smaller s), else None. A stricter s than
    the one the session ran with is judged on fewer episodes (those its live detector ended
    are undecided): only a session run with it verifies it."""
    if not len(curves) == len(truths) == len(fired):
        raise ValueError(f"curves, truths and fired differ in length: {len(curves)}, {len(truths)}, {len(fired)}")
    rows: list[dict[str, object]] = []
    for c in candidates:
        n = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "censored": 0}
        for d_seq, truth, fr in zip(curves, truths, fired):
            pred = replay_detector(d_seq, bool(fr), float(c), patience)
            key = "censored" if pred is None else ("tp" if truth else "fp") if pred else ("fn" if truth else "tn")
            n[key] += 1
        p = n["tp"] / (n["tp"] + n["fp"]) if n["tp"] + n["fp"] else None
        r = n["tp"] / (n["tp"] + n["fn"]) if n["tp"] + n["fn"] else None
        rows.append({"threshold": round(float(c), 4), **n, "precision": p, "recall": r,
                     "f_beta": f_beta(p or 0.0, r or 0.0, beta)})
    total = len(curves)
    eligible = [r for r in rows if total and total - int(r["censored"]) >= min_decided * total and
                r["tp"] + r["fp"] + r["fn"]]
    # Ties: the fewest episodes it cannot tell, then the s closest to ``current`` (no change the
    # labels do not ask for), then the smaller s.
    best = max(eligible, key=lambda r: (round(float(r["f_beta"]), 12), -int(r["censored"]),
                                        -abs(float(r["threshold"]) - current) if current is not None else 0.0,
                                        -float(r["threshold"])), default=None)
    return {"rows": rows, "best": best, "beta": beta, "patience": patience, "judged": total}
