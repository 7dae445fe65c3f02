"""What practice tells the outside world, as typed events sent to one observer (in the spirit
of Stable-Baselines3's callbacks). The worker's recorder (``core.worker.practice_recorder``)
turns them into database rows and live telemetry; it records what the events carry and never
recomputes rewards, detector counts or thresholds, nor reads the run directory.

The observer also answers three questions practice asks while it runs: a supervisor's
``control`` verdict for a robot, a supervisor's ``outcome_override`` of an episode, and
``interrupt`` (which may raise to abandon the current rollout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.learning.rollout import EpisodeRecord
from core.method.detector import DetectorSpec

PHASE_EVALUATING = "evaluating"
PHASE_PRACTISING = "practising"


@dataclass(frozen=True)
class DetectorReady:
    """The detector practice's episodes run with from now on: sent once before the first
    practice episode, and again whenever a periodic refinement re-calibrates s. ``check``: the
    pre-practice detector check's figures (precision, recall, counts, how s was chosen; with
    ``before`` when the reward model was refined first), None when there was none."""

    spec: DetectorSpec
    check: dict[str, Any] | None = None


@dataclass(frozen=True)
class PhaseChanged:
    """``PHASE_EVALUATING`` before a greedy evaluation on the selection seeds (the fleet runs
    those episodes; they are never stored), ``PHASE_PRACTISING`` after it."""

    phase: str


@dataclass(frozen=True)
class StepTaken:
    """A frame of a running episode, before the robot's next action: ``record`` holds the
    episode so far (its last d, and its detector count where a detector runs);
    ``evaluating``: a greedy evaluation episode, not a practice one."""

    robot: int
    record: EpisodeRecord
    observation: dict[str, Any]
    evaluating: bool = False


@dataclass(frozen=True)
class EpisodeEnded:
    """A practice episode ended and joined the iteration's buffer. ``rewards[t]`` and
    ``returns[t]`` belong to action t (after a supervisor's override, if any); ``detector`` is
    the rule it ran with (``record.detector_counts`` and ``record.detector_step`` its
    verdict); ``ground_truth``: the simulator's success, None where the fleet cannot know it
    (real robots)."""

    record: EpisodeRecord
    iteration: int
    rewards: np.ndarray
    returns: np.ndarray
    d_observed: list[float]
    """d(o_t, g) as the reward model read it, frame by frame (``record.d``'s last value is
    replaced by a supervisor's override; this curve never is)."""
    detector: DetectorSpec
    override: bool | None
    ground_truth: bool | None
    buffer_full: bool = False
    """With this episode the iteration's buffer holds its tuples: the learner starts no new
    episode and waits only for the ones under way."""

    @property
    def total_return(self) -> float:
        return float(np.sum(self.rewards))


@dataclass(frozen=True)
class EpisodeDropped:
    """An episode under way when the iteration's buffer filled, dropped by the learner
    (``finish_running_episodes`` False): it is not learned from."""

    robot: int
    record: EpisodeRecord


@dataclass(frozen=True)
class StartEvaluated:
    """The starting checkpoint's greedy success on the selection seeds (iteration 0). Sent
    when measured and again when a run resumes, so a recorder that missed it catches up."""

    success: float
    episodes: int


@dataclass(frozen=True)
class IterationEnded:
    """An iteration is complete: its checkpoint is on disk and its metrics row written.
    ``replayed``: a completed iteration announced again when a run resumes (a recorder
    killed between the iteration and its own write catches up; recording must be
    idempotent)."""

    iteration: int
    checkpoint: str
    metrics: dict[str, Any]
    episodes_total: int
    reward_checkpoint: str
    replayed: bool = False


PracticeEvent = DetectorReady | PhaseChanged | StepTaken | EpisodeEnded | EpisodeDropped | StartEvaluated | IterationEnded


class PracticeObserver:
    """Receives practice's events and answers its questions; this base does nothing and lets
    everything run."""

    def on_event(self, event: PracticeEvent) -> None:
        """Called for every event, in the order they happen."""

    def control(self, robot: int, record: EpisodeRecord) -> str | None:
        """Asked before every practice step: None (go on), an end reason (``END_STOPPED``;
        ``END_DETECTOR`` to end it as a success) or ``HOLD`` (a paused robot: skip this frame)."""
        return None

    def outcome_override(self, record: EpisodeRecord) -> bool | None:
        """A supervisor's verdict on this episode, if any: asked when it ends and again before
        the iteration's update, while it is still in the buffer."""
        return None

    def interrupt(self) -> None:
        """Asked at every step of practice's other rollouts (the detector check, the
        refinement's, the evaluations'); may raise to abandon them (the iteration is redone
        on resume)."""

    def keep_going(self) -> bool:
        """Asked after each iteration: False ends practice there (its state is saved)."""
        return True
