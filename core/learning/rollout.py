"""Run a policy in a set of environments with inference batched across them.

One process steps ``n_envs`` environments and calls the model once per control step for
all of them (lock-step), or, split into ``groups``, once per group: while one group's
simulators step, the next group's observations go through the model (a pipeline). Groups
take their turns in robot order and draw from the one sampling stream in that order, so
any number of groups gives the lock-step episodes (up to float rounding between batch
sizes): a speed setting only. It records, per episode, d(o, g) at every frame (from the
policy's own steps-to-go head or from a separate frozen reward model), ground truth, and
why the episode ended. Used by evaluation (Stage 1) and by
practice (Stage 2, where the detector ends episodes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.method.detector import DetectorRun, DetectorSpec
from core.learning.fleets import Fleet, LocalFleet, RobotFailure, SplitPhase
from core.learning.policy import FEATURES, DojoPolicy, make_obs_batch, share_frozen_features, shared_feature_key
from sim_backends.base import (INFO_OFF_TABLE, INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE,
                               OBS_INSTRUCTION, OBS_PROPRIO)

END_GROUND_TRUTH = "ground_truth"
END_DETECTOR = "detector"
END_STEP_LIMIT = "step_limit"
END_OFF_TABLE = "off_table"
END_PHYSICS_ERROR = "physics_error"
END_STOPPED = "stopped"  # a supervisor stopped the robot
END_ABORTED = "aborted"  # the robot failed or disconnected mid-episode
END_DISCARDED = "discarded"  # under way when the rollout stopped (``discard_on_stop``); not returned
HOLD = "hold"  # control verdict (not an end reason): a paused robot; this frame is dropped, no step


@dataclass
class EpisodeRecord:
    """One rollout. Frame t has d[t] and gt[t]; actions[t] led from frame t to t+1."""

    seed: int
    instruction: str
    robot: int = -1
    """The fleet slot that ran it (-1: not run on a fleet)."""
    d: list[float] = field(default_factory=list)
    gt: list[bool] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)
    """Frame t's frozen-backbone features, kept with the frames when the rollout computed them
    (a policy and reward model sharing a frozen backbone): practice's update reuses them."""
    end_reason: str = ""
    detector_step: int | None = None
    detector_counts: list[int] = field(default_factory=list)
    """Frame t's count of frames in a row with d <= s (``core.method.detector``); empty when
    the rollout ran without a detector."""
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


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.rec: EpisodeRecord | None = None
        self.obs: dict[str, Any] | None = None
        self.prev_image = self.prev_proprio = None
        self.features: tuple[Any, torch.Tensor] | None = None  # (an image, its frozen-backbone features)
        self.finishing = False  # final frame still needs its d(o, g)
        self.detector: DetectorRun | None = None
        self.pending: tuple[str, Any] | None = None  # the command out to the robot, not yet answered


def rollout_groups(fleet: Fleet, groups: int | None = None) -> int:
    """How many groups ``run_episodes`` splits ``fleet`` into: ``groups`` if given, else the
    ``DOJO_ROLLOUT_GROUPS`` environment variable, else 2 for a fleet whose robots step while
    the learner works (``fleet.pipelined``: simulator processes, remote robots) with at least
    4 robots, else 1 (lock-step)."""
    if groups is None:
        env = os.environ.get("DOJO_ROLLOUT_GROUPS", "").strip()
        if env:
            try:
                groups = int(env)
            except ValueError:
                raise ValueError(f"DOJO_ROLLOUT_GROUPS={env!r}: expected a whole number of groups, e.g. 2 "
                                 "(1 = lock-step)") from None
        else:
            groups = 2 if getattr(fleet, "pipelined", False) and fleet.size >= 4 else 1
    return max(1, min(int(groups), int(fleet.size)))


def rollout_batch(fleet: Fleet, groups: int | None = None) -> int:
    """The largest batch one model call sees in ``run_episodes`` (what to compile for)."""
    g = rollout_groups(fleet, groups)
    return -(-int(fleet.size) // g)


@dataclass
class RolloutHooks:
    """What a caller sees and steers while ``run_episodes`` runs (each optional).

    ``on_episode(record)`` as each episode ends; returning False stops the rollout.
    ``control(robot, record)`` before every step: END_STOPPED ends that robot's episode (a
    supervisor's stop), END_DETECTOR / END_GROUND_TRUTH end it as a success (an override),
    HOLD skips this robot for one loop (paused: the frame is not recorded, no action sent).
    ``on_step(robot, record, observation)`` at every frame, after its d and detector count.
    ``on_discard(robot, record)``: an episode under way dropped when the rollout stopped
    (``discard_on_stop``). ``may_start(steps)`` before each new episode, with the steps taken
    so far by the episodes under way (0 for one resetting); False leaves the robot idle until
    a later round. It is asked once per round of the whole fleet, in robot order (the same
    decisions for any group count), and never when nothing is under way (no stall)."""

    on_episode: Callable[[EpisodeRecord], bool | None] | None = None
    control: Callable[[int, EpisodeRecord], str | None] | None = None
    on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None
    on_discard: Callable[[int, EpisodeRecord], None] | None = None
    may_start: Callable[[list[int]], bool] | None = None


def run_episodes(policy: DojoPolicy, make_env: Callable[[], Any] | None, seeds: Sequence[int], *,
                 n_envs: int = 8, greedy: bool = True, reward_model: DojoPolicy | None = None,
                 stop_on_ground_truth: bool = True, detector: DetectorSpec | None = None,
                 keep_frames: bool = False, generator: torch.Generator | None = None,
                 fleet: Fleet | None = None, groups: int | None = None, discard_on_stop: bool = False,
                 hooks: RolloutHooks | None = None) -> list[EpisodeRecord]:
    """Roll out one episode per seed; returns records in seed order.

    Either ``make_env`` (a LocalFleet of ``n_envs`` is built and closed here) or a
    ``fleet`` (owned by the caller, left open). d(o, g) comes from ``reward_model`` if given,
    else from the policy's own head; ``detector`` ends an episode when it fires (the rule of
    ``core.method.detector``), ``stop_on_ground_truth`` when the simulator reports success.
    ``groups``: see ``rollout_groups`` (1 = every robot in lock-step). ``hooks``: see
    ``RolloutHooks``. When ``on_episode`` stops the rollout, the episodes under way run to
    their end and are returned too (default), or, with ``discard_on_stop``, are dropped at
    the end of that round of the fleet (``on_discard`` is told, ``end_reason``
    END_DISCARDED): the rollout then ends without the robots idling while the last finish.
    """
    own = fleet is None
    if fleet is None:
        fleet = LocalFleet(make_env, max(1, min(n_envs, len(seeds))))
    run = _Rollout(policy, fleet, seeds, greedy=greedy, reward_model=reward_model,
                   stop_on_ground_truth=stop_on_ground_truth, detector=detector, keep_frames=keep_frames,
                   generator=generator, groups=groups, hooks=hooks or RolloutHooks())
    try:
        run.run(discard_on_stop)
    finally:
        run.read_pending()
        if own:
            fleet.close()
    return sorted(run.done.values(), key=lambda r: run.order[r.seed])


def policy_and_reward(policy: DojoPolicy, reward_model: DojoPolicy | None, batch: dict[str, Any], greedy: bool,
                      generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One control step's inference for a batch of robots: actions from the policy and d(o, g)
    from the frozen reward model (the policy's own head without one). A frozen image backbone
    the two share encodes each frame once for both."""
    share_frozen_features(batch, policy, reward_model)
    actions, d = policy.act(batch, greedy=greedy, generator=generator)
    if reward_model is not None:
        with torch.no_grad():
            d = reward_model.steps_to_go(batch).cpu().numpy()
    return actions, d


class _Rollout:
    def __init__(self, policy: DojoPolicy, fleet: Fleet, seeds: Sequence[int], *, greedy: bool,
                 reward_model: DojoPolicy | None, stop_on_ground_truth: bool, detector: DetectorSpec | None,
                 keep_frames: bool, generator: torch.Generator | None, groups: int | None, hooks: RolloutHooks):
        policy.eval()
        if reward_model is not None:
            reward_model.eval()
        self.policy, self.fleet, self.reward_model = policy, fleet, reward_model
        self.greedy, self.stop_on_ground_truth, self.detector = greedy, stop_on_ground_truth, detector
        self.keep_frames, self.generator, self.hooks = keep_frames, generator, hooks
        self.n_frames = policy.config.n_frames
        self.queue = list(seeds)
        self.ops = SplitPhase(fleet)
        self.slots = [_Slot(i) for i in range(min(fleet.size, max(1, len(self.queue))))]
        n_groups = min(rollout_groups(fleet, groups), len(self.slots))
        per = -(-len(self.slots) // n_groups)
        self.group_slots = [self.slots[g * per:(g + 1) * per] for g in range(n_groups)]
        self.done: dict[int, EpisodeRecord] = {}
        self.order = {s: i for i, s in enumerate(seeds)}
        self.stop = False
        self.idle: list[_Slot] = []  # robots waiting for ``may_start`` (asked at the end of each round)

    def run(self, discard_on_stop: bool) -> None:
        first: dict[int, tuple[str, Any]] = {}
        for s in self.slots:
            self.start(s, first)
        self.submit(first)
        self.start_idle()
        while any(s.rec is not None or s.pending is not None for s in self.slots):
            for group in self.group_slots:
                self.run_group(group)
            if self.idle:
                self.start_idle()
            if self.stop and discard_on_stop:  # checked once per round: the same for any group count
                self.discard_running()
                break

    def discard_running(self) -> None:
        for s in self.slots:
            if s.rec is not None:
                s.rec.end_reason = END_DISCARDED
                if self.hooks.on_discard is not None:
                    self.hooks.on_discard(s.index, s.rec)
                s.rec = None

    def read_pending(self) -> None:
        """Replies still out (an exception from ``control``, a discarding stop) are read, so the
        next rollout on this fleet does not get them."""
        out = [s.index for s in self.slots if s.pending is not None]
        if out:
            self.ops.discard(out)

    def finish(self, slot: _Slot) -> None:
        self.done[slot.rec.seed] = slot.rec
        if self.hooks.on_episode is not None and self.hooks.on_episode(slot.rec) is False:
            self.stop = True

    def start(self, slot: _Slot, cmds: dict[int, tuple[str, Any]]) -> None:
        """The slot's next seed, if any: its reset goes out with the group's commands."""
        slot.rec = None
        if self.hooks.may_start is not None:
            self.idle.append(slot)
        elif self.queue and not self.stop:
            cmds[slot.index] = ("reset", int(self.queue.pop(0)))

    def start_idle(self) -> None:
        """Start the idle robots ``may_start`` allows, in robot order (end of a round)."""
        cmds: dict[int, tuple[str, Any]] = {}
        self.idle.sort(key=lambda sl: sl.index)
        while self.idle and self.queue and not self.stop:
            steps = [len(sl.rec.actions) if sl.rec is not None else 0
                     for sl in self.slots if sl.rec is not None or sl.pending is not None or sl.index in cmds]
            if steps and not self.hooks.may_start(steps):
                break
            cmds[self.idle.pop(0).index] = ("reset", int(self.queue.pop(0)))
        self.submit(cmds)

    def reset_done(self, slot: _Slot, seed: int, res: Any, cmds: dict[int, tuple[str, Any]]) -> None:
        if isinstance(res, RobotFailure):
            slot.rec = EpisodeRecord(seed=seed, instruction="", robot=slot.index, end_reason=END_ABORTED,
                                     error=res.message)
            self.finish(slot)
            self.start(slot, cmds)
            return
        obs, info = res
        slot.obs, slot.finishing = obs, False
        slot.detector = DetectorRun(self.detector) if self.detector is not None else None
        slot.prev_image, slot.prev_proprio = obs[OBS_IMAGE], obs[OBS_PROPRIO]
        slot.rec = EpisodeRecord(seed=seed, instruction=obs[OBS_INSTRUCTION], robot=slot.index,
                                 task=str(info.get("task_name", "")))
        slot.rec.gt.append(bool(info.get(INFO_SUCCESS, False)))

    def step_done(self, slot: _Slot, action: np.ndarray, res: Any, cmds: dict[int, tuple[str, Any]]) -> None:
        rec = slot.rec
        if isinstance(res, RobotFailure):
            rec.end_reason, rec.error = END_ABORTED, res.message
            self.finish(slot)
            self.start(slot, cmds)
            return
        obs, _r, terminated, truncated, info = res
        rec.actions.append(action)
        rec.gt.append(bool(info.get(INFO_SUCCESS, False)))
        slot.prev_image, slot.prev_proprio = slot.obs[OBS_IMAGE], slot.obs[OBS_PROPRIO]
        slot.obs = obs
        rec.end_reason = _end_reason(info, rec.gt[-1], terminated, truncated, self.stop_on_ground_truth)
        if rec.end_reason or len(rec.actions) >= self.fleet.max_steps:
            rec.end_reason = rec.end_reason or END_STEP_LIMIT
            slot.finishing = True

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        for i, cmd in cmds.items():
            self.slots[i].pending = cmd
        if cmds:  # the pending command keeps the policy's action (recorded, trained on); the robot gets its units
            self.ops.submit({i: (c, self.policy.config.to_robot_units(a) if c == "step" else a)
                             for i, (c, a) in cmds.items()})

    def infer(self, active: list[_Slot]) -> tuple[Any, Any]:
        """Actions and d(o, g) for the active robots, in one batched call per model."""
        n = self.n_frames
        frames = np.stack([np.stack([s.obs[OBS_IMAGE], s.prev_image])[:n] for s in active])
        prop = np.stack([np.stack([s.obs[OBS_PROPRIO], s.prev_proprio])[:n] for s in active])
        batch = make_obs_batch(frames, prop, [s.rec.instruction for s in active])
        if shared_feature_key(self.policy, self.reward_model) is not None:
            batch[FEATURES] = self.frame_features(active)
        return policy_and_reward(self.policy, self.reward_model, batch, self.greedy, self.generator)

    def frame_features(self, active: list[_Slot]) -> torch.Tensor:
        """The frozen backbone's features [B, n_frames, ...] of each robot's current and previous
        frame: the current ones in one batched call, the previous ones kept from the robot's last
        step (its current frame then), so each frame is encoded once."""
        cur = self.policy.frozen_features(torch.from_numpy(np.stack([s.obs[OBS_IMAGE] for s in active]))[:, None])
        rows = []
        for s, c in zip(active, cur[:, 0]):
            row = [c]
            if self.n_frames == 2:
                if s.prev_image is s.obs[OBS_IMAGE]:  # an episode's first frame is its own previous one
                    row.append(c)
                elif s.features is not None and s.features[0] is s.prev_image:
                    row.append(s.features[1])
                else:
                    row.append(self.policy.frozen_features(torch.from_numpy(s.prev_image)[None, None])[0, 0])
            s.features = (s.obs[OBS_IMAGE], c)
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def run_group(self, group: list[_Slot]) -> None:
        cmds: dict[int, tuple[str, Any]] = {}
        waiting = [s for s in group if s.pending is not None]
        results = self.ops.collect([s.index for s in waiting]) if waiting else {}
        for s in waiting:
            (cmd, arg), s.pending = s.pending, None
            if cmd == "reset":
                self.reset_done(s, arg, results[s.index], cmds)
            else:
                self.step_done(s, arg, results[s.index], cmds)
        active = [s for s in group if s.rec is not None and s.index not in cmds]
        if active:
            actions, d = self.infer(active)
        for i, s in enumerate(active):
            if self.observe(s, float(d[i]), cmds):
                cmds[s.index] = ("step", actions[i])
        self.submit(cmds)

    def observe(self, s: _Slot, d: float, cmds: dict[int, tuple[str, Any]]) -> bool:
        """Record frame and d, run the detector, ask ``control``; True when the robot steps on
        (False: it holds this frame, or its episode ended and its next reset joins ``cmds``)."""
        rec, hooks = s.rec, self.hooks
        rec.d.append(d)
        if self.keep_frames:
            rec.frames.append(s.obs[OBS_IMAGE])
            rec.proprio.append(np.asarray(s.obs[OBS_PROPRIO], np.float32))
            if s.features is not None and s.features[0] is s.obs[OBS_IMAGE]:
                rec.features.append(s.features[1])
        if s.detector is not None:
            rec.detector_counts.append(s.detector.update(d))
            if s.detector.fired and rec.detector_step is None:
                rec.detector_step = s.detector.fired_at
                if not s.finishing:
                    rec.end_reason = END_DETECTOR
                    s.finishing = True
        if hooks.on_step is not None:
            hooks.on_step(s.index, rec, s.obs)
        if not s.finishing and hooks.control is not None:
            verdict = hooks.control(s.index, rec)
            if verdict == HOLD:  # paused: forget this frame, do not step; asked again next loop
                self._forget_frame(s)
                return False
            if verdict:
                rec.end_reason = verdict
                s.finishing = True
        if s.finishing:
            self.finish(s)
            self.start(s, cmds)
            return False
        return True

    def _forget_frame(self, s: _Slot) -> None:
        rec = s.rec
        rec.d.pop()
        if self.keep_frames:
            rec.frames.pop()
            rec.proprio.pop()
            if len(rec.features) > len(rec.frames):
                rec.features.pop()
        if s.detector is not None:
            s.detector.retract()
            rec.detector_counts.pop()


def _end_reason(info: dict[str, Any], success: bool, terminated: bool, truncated: bool,
                stop_on_ground_truth: bool) -> str:
    """Why the simulator's step ends the episode ("" if it does not)."""
    if info.get(INFO_PHYSICS_ERROR):
        return END_PHYSICS_ERROR
    if info.get(INFO_OFF_TABLE):
        return END_OFF_TABLE
    if stop_on_ground_truth and success:
        return END_GROUND_TRUTH
    if truncated:
        return END_STEP_LIMIT
    if terminated:
        # the simulator ended it: a success where ground truth ends episodes, else nothing more to see
        return END_GROUND_TRUTH if stop_on_ground_truth else END_STEP_LIMIT
    return ""
