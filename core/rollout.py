"""Run a policy in a set of environments with inference batched across them.

One process steps ``n_envs`` environments in lock-step and calls the model once
per control step for all of them. It records, per episode, d(o, g) at every frame
(from the policy's own steps-to-go head or from a separate frozen reward model),
ground truth, and why the episode ended. Used by evaluation (Stage 1) and by
practice (Stage 2, where the detector ends episodes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.fleet import Fleet, LocalFleet, RobotFailure
from core.policy import DojoPolicy, make_obs_batch
from sim_backends.base import (INFO_OFF_TABLE, INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE,
                               OBS_INSTRUCTION, OBS_PROPRIO)

END_GROUND_TRUTH = "ground_truth"
END_DETECTOR = "detector"
END_STEP_LIMIT = "step_limit"
END_OFF_TABLE = "off_table"
END_PHYSICS_ERROR = "physics_error"
END_STOPPED = "stopped"  # a supervisor stopped the robot
END_ABORTED = "aborted"  # the robot failed or disconnected mid-episode
HOLD = "hold"  # control verdict (not an end reason): a paused robot; this frame is dropped, no step


@dataclass
class EpisodeRecord:
    """One rollout. Frame t has d[t] and gt[t]; actions[t] led from frame t to t+1."""

    seed: int
    instruction: str
    d: list[float] = field(default_factory=list)
    gt: list[bool] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
    end_reason: str = ""
    detector_step: int | None = None
    error: str = ""
    task: str = ""
    """The task's name when the backend holds several (``info["task_name"]``), else ""."""

    @property
    def success(self) -> bool:
        """Ground truth reached at some frame."""
        return any(self.gt)

    @property
    def length(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class DetectorSpec:
    """Ends an episode when d <= threshold_s has held for ``patience`` consecutive frames."""

    threshold_s: float
    patience: int = 1


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.rec: EpisodeRecord | None = None
        self.obs: dict[str, Any] | None = None
        self.prev_image = self.prev_proprio = None
        self.finishing = False  # final frame still needs its d(o, g)
        self.run = 0


def run_episodes(policy: DojoPolicy, make_env: Callable[[], Any] | None, seeds: Sequence[int], *,
                 n_envs: int = 8, greedy: bool = True, reward_model: DojoPolicy | None = None,
                 stop_on_ground_truth: bool = True, detector: DetectorSpec | None = None,
                 keep_frames: bool = False, generator: torch.Generator | None = None,
                 on_episode: Callable[[EpisodeRecord], bool | None] | None = None,
                 fleet: Fleet | None = None,
                 control: Callable[[int, EpisodeRecord], str | None] | None = None,
                 on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                 ) -> list[EpisodeRecord]:
    """Roll out one episode per seed; returns records in seed order.

    Either ``make_env`` (a LocalFleet of ``n_envs`` is built and closed here) or a
    ``fleet`` (owned by the caller, left open). ``on_episode`` is called as each episode
    ends; returning False stops early. ``control(robot, record)`` is asked before every
    step; returning END_STOPPED ends that robot's episode (a supervisor's stop), or
    END_DETECTOR / END_GROUND_TRUTH to end it as a success (an override), or HOLD to skip
    this robot for one loop (paused: the frame is not recorded and no action is sent).
    """
    policy.eval()
    if reward_model is not None:
        reward_model.eval()
    n_frames = policy.config.n_frames
    queue = list(seeds)
    own = fleet is None
    if fleet is None:
        fleet = LocalFleet(make_env, max(1, min(n_envs, len(queue))))
    slots = [_Slot(i) for i in range(min(fleet.size, max(1, len(queue))))]
    done: dict[int, EpisodeRecord] = {}
    order = {s: i for i, s in enumerate(seeds)}
    stop = False

    def finish(slot: _Slot) -> None:
        nonlocal stop
        done[slot.rec.seed] = slot.rec
        if on_episode is not None and on_episode(slot.rec) is False:
            stop = True

    def start(slot: _Slot) -> None:
        while queue and not stop:
            seed = queue.pop(0)
            res = fleet.reset(slot.index, int(seed))
            if isinstance(res, RobotFailure):
                slot.rec = EpisodeRecord(seed=int(seed), instruction="", end_reason=END_ABORTED,
                                         error=res.message)
                finish(slot)
                continue
            obs, info = res
            slot.obs, slot.finishing, slot.run = obs, False, 0
            slot.prev_image, slot.prev_proprio = obs[OBS_IMAGE], obs[OBS_PROPRIO]
            slot.rec = EpisodeRecord(seed=int(seed), instruction=obs[OBS_INSTRUCTION],
                                     task=str(info.get("task_name", "")))
            slot.rec.gt.append(bool(info.get(INFO_SUCCESS, False)))
            return
        slot.rec = None

    try:
        for s in slots:
            start(s)
        while any(s.rec is not None for s in slots):
            active = [s for s in slots if s.rec is not None]
            frames = np.stack([np.stack([s.obs[OBS_IMAGE], s.prev_image])[:n_frames] for s in active])
            prop = np.stack([np.stack([s.obs[OBS_PROPRIO], s.prev_proprio])[:n_frames] for s in active])
            batch = make_obs_batch(frames, prop, [s.rec.instruction for s in active])
            actions, d = policy.act(batch, greedy=greedy, generator=generator)
            if reward_model is not None:
                with torch.no_grad():
                    d = reward_model.steps_to_go(batch).cpu().numpy()
            to_step: dict[int, np.ndarray] = {}
            for i, s in enumerate(active):
                rec = s.rec
                rec.d.append(float(d[i]))
                if on_step is not None:
                    on_step(s.index, rec, s.obs)
                if keep_frames:
                    rec.frames.append(s.obs[OBS_IMAGE])
                    rec.proprio.append(np.asarray(s.obs[OBS_PROPRIO], np.float32))
                run_before = s.run
                if detector is not None:
                    s.run = s.run + 1 if d[i] <= detector.threshold_s else 0
                    if s.run >= detector.patience and rec.detector_step is None:
                        rec.detector_step = len(rec.d) - 1
                        if not s.finishing:
                            rec.end_reason = END_DETECTOR
                            s.finishing = True
                if not s.finishing and control is not None:
                    verdict = control(s.index, rec)
                    if verdict == HOLD:  # paused: forget this frame, do not step; asked again next loop
                        rec.d.pop()
                        if keep_frames:
                            rec.frames.pop()
                            rec.proprio.pop()
                        s.run = run_before
                        continue
                    if verdict:
                        rec.end_reason = verdict
                        s.finishing = True
                if s.finishing:
                    finish(s)
                    start(s)
                    continue
                to_step[s.index] = actions[i]
            results = fleet.step(to_step) if to_step else {}
            for s in active:
                if s.index not in results:
                    continue
                rec, res = s.rec, results[s.index]
                if isinstance(res, RobotFailure):
                    rec.end_reason, rec.error = END_ABORTED, res.message
                    finish(s)
                    start(s)
                    continue
                obs, _r, terminated, truncated, info = res
                rec.actions.append(to_step[s.index])
                rec.gt.append(bool(info.get(INFO_SUCCESS, False)))
                s.prev_image, s.prev_proprio = s.obs[OBS_IMAGE], s.obs[OBS_PROPRIO]
                s.obs = obs
                if info.get(INFO_PHYSICS_ERROR):
                    rec.end_reason = END_PHYSICS_ERROR
                elif info.get(INFO_OFF_TABLE):
                    rec.end_reason = END_OFF_TABLE
                elif stop_on_ground_truth and rec.gt[-1]:
                    rec.end_reason = END_GROUND_TRUTH
                elif truncated:
                    rec.end_reason = END_STEP_LIMIT
                elif terminated and stop_on_ground_truth:
                    rec.end_reason = END_GROUND_TRUTH
                elif terminated:
                    rec.end_reason = END_STEP_LIMIT  # the simulator ended it; nothing more to see
                if rec.end_reason or len(rec.actions) >= fleet.max_steps:
                    rec.end_reason = rec.end_reason or END_STEP_LIMIT
                    s.finishing = True
    finally:
        if own:
            fleet.close()
    return sorted(done.values(), key=lambda r: order[r.seed])
