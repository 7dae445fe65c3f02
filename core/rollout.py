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

from core.policy import DojoPolicy, make_obs_batch
from sim_backends.base import (INFO_OFF_TABLE, INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE,
                               OBS_INSTRUCTION, OBS_PROPRIO)

END_GROUND_TRUTH = "ground_truth"
END_DETECTOR = "detector"
END_STEP_LIMIT = "step_limit"
END_OFF_TABLE = "off_table"
END_PHYSICS_ERROR = "physics_error"


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
    def __init__(self, env):
        self.env = env
        self.rec: EpisodeRecord | None = None
        self.obs: dict[str, Any] | None = None
        self.prev_image = self.prev_proprio = None
        self.finishing = False  # final frame still needs its d(o, g)
        self.run = 0


def run_episodes(policy: DojoPolicy, make_env: Callable[[], Any], seeds: Sequence[int], *,
                 n_envs: int = 8, greedy: bool = True, reward_model: DojoPolicy | None = None,
                 stop_on_ground_truth: bool = True, detector: DetectorSpec | None = None,
                 keep_frames: bool = False, generator: torch.Generator | None = None,
                 on_episode: Callable[[EpisodeRecord], bool | None] | None = None,
                 ) -> list[EpisodeRecord]:
    """Roll out one episode per seed; returns records in seed order.

    ``on_episode`` is called as each episode ends; returning False stops early.
    """
    policy.eval()
    if reward_model is not None:
        reward_model.eval()
    n_frames = policy.config.n_frames
    queue = list(seeds)
    slots = [_Slot(make_env()) for _ in range(max(1, min(n_envs, len(queue))))]
    done: dict[int, EpisodeRecord] = {}
    order = {s: i for i, s in enumerate(seeds)}
    stop = False

    def start(slot: _Slot) -> bool:
        if not queue or stop:
            slot.rec = None
            return False
        seed = queue.pop(0)
        obs, info = slot.env.reset(seed=int(seed))
        slot.obs, slot.finishing, slot.run = obs, False, 0
        slot.prev_image, slot.prev_proprio = obs[OBS_IMAGE], obs[OBS_PROPRIO]
        slot.rec = EpisodeRecord(seed=int(seed), instruction=obs[OBS_INSTRUCTION])
        slot.rec.gt.append(bool(info.get(INFO_SUCCESS, False)))
        return True

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
            for i, s in enumerate(active):
                rec = s.rec
                rec.d.append(float(d[i]))
                if keep_frames:
                    rec.frames.append(s.obs[OBS_IMAGE])
                    rec.proprio.append(np.asarray(s.obs[OBS_PROPRIO], np.float32))
                if detector is not None:
                    s.run = s.run + 1 if d[i] <= detector.threshold_s else 0
                    if s.run >= detector.patience and rec.detector_step is None:
                        rec.detector_step = len(rec.d) - 1
                        if not s.finishing:
                            rec.end_reason = END_DETECTOR
                            s.finishing = True
                if s.finishing:
                    done[rec.seed] = rec
                    if on_episode is not None and on_episode(rec) is False:
                        stop = True
                    start(s)
                    continue
                a = actions[i]
                obs, _r, terminated, truncated, info = s.env.step(a)
                rec.actions.append(a)
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
                elif terminated and not stop_on_ground_truth:
                    pass  # ground-truth termination ignored: the detector decides
                elif terminated:
                    rec.end_reason = END_GROUND_TRUTH
                if rec.end_reason or len(rec.actions) >= s.env.max_steps:
                    rec.end_reason = rec.end_reason or END_STEP_LIMIT
                    s.finishing = True
    finally:
        for s in slots:
            s.env.close()
    return sorted(done.values(), key=lambda r: order[r.seed])
