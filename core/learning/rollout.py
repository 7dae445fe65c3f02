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
from core.learning.policy import DojoPolicy, make_obs_batch
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
    d: list[float] = field(default_factory=list)
    gt: list[bool] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
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


def run_episodes(policy: DojoPolicy, make_env: Callable[[], Any] | None, seeds: Sequence[int], *,
                 n_envs: int = 8, greedy: bool = True, reward_model: DojoPolicy | None = None,
                 stop_on_ground_truth: bool = True, detector: DetectorSpec | None = None,
                 keep_frames: bool = False, generator: torch.Generator | None = None,
                 on_episode: Callable[[EpisodeRecord], bool | None] | None = None,
                 fleet: Fleet | None = None,
                 control: Callable[[int, EpisodeRecord], str | None] | None = None,
                 on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                 groups: int | None = None, discard_on_stop: bool = False,
                 on_discard: Callable[[int, EpisodeRecord], None] | None = None,
                 may_start: Callable[[list[int]], bool] | None = None,
                 ) -> list[EpisodeRecord]:
    """Roll out one episode per seed; returns records in seed order.

    Either ``make_env`` (a LocalFleet of ``n_envs`` is built and closed here) or a
    ``fleet`` (owned by the caller, left open). ``on_episode`` is called as each episode
    ends; returning False stops early. ``control(robot, record)`` is asked before every
    step; returning END_STOPPED ends that robot's episode (a supervisor's stop), or
    END_DETECTOR / END_GROUND_TRUTH to end it as a success (an override), or HOLD to skip
    this robot for one loop (paused: the frame is not recorded and no action is sent).
    ``groups``: see ``rollout_groups`` (1 = every robot in lock-step).

    When ``on_episode`` stops the rollout, the episodes under way run to their end and are
    returned too (default), or, with ``discard_on_stop``, are dropped at the end of that
    round of the fleet (``on_discard(robot, record)`` is told, ``end_reason`` END_DISCARDED):
    the rollout then ends without the robots idling while the last episodes finish.

    ``may_start(steps)``, if given, is asked before each new episode with the steps taken so
    far by the episodes under way (0 for one resetting); False leaves the robot idle until a
    later round, when it is asked again. It is asked once per round of the whole fleet, in
    robot order (the same decisions for any group count), and never when nothing is under
    way (the rollout cannot stall).
    """
    policy.eval()
    if reward_model is not None:
        reward_model.eval()
    n_frames = policy.config.n_frames
    queue = list(seeds)
    own = fleet is None
    if fleet is None:
        fleet = LocalFleet(make_env, max(1, min(n_envs, len(queue))))
    ops = SplitPhase(fleet)
    slots = [_Slot(i) for i in range(min(fleet.size, max(1, len(queue))))]
    n_groups = min(rollout_groups(fleet, groups), len(slots))
    per = -(-len(slots) // n_groups)
    group_slots = [slots[g * per:(g + 1) * per] for g in range(n_groups)]
    done: dict[int, EpisodeRecord] = {}
    order = {s: i for i, s in enumerate(seeds)}
    stop = False

    def finish(slot: _Slot) -> None:
        nonlocal stop
        done[slot.rec.seed] = slot.rec
        if on_episode is not None and on_episode(slot.rec) is False:
            stop = True

    idle: list[_Slot] = []  # robots waiting for ``may_start`` (asked at the end of each round)

    def start(slot: _Slot, cmds: dict[int, tuple[str, Any]]) -> None:
        """The slot's next seed, if any: its reset goes out with the group's commands."""
        slot.rec = None
        if may_start is not None:
            idle.append(slot)
        elif queue and not stop:
            cmds[slot.index] = ("reset", int(queue.pop(0)))

    def start_idle() -> None:
        """Start the idle robots ``may_start`` allows, in robot order (end of a round)."""
        cmds: dict[int, tuple[str, Any]] = {}
        idle.sort(key=lambda sl: sl.index)
        while idle and queue and not stop:
            steps = [len(sl.rec.actions) if sl.rec is not None else 0
                     for sl in slots if sl.rec is not None or sl.pending is not None or sl.index in cmds]
            if steps and not may_start(steps):
                break
            cmds[idle.pop(0).index] = ("reset", int(queue.pop(0)))
        submit(cmds)

    def reset_done(slot: _Slot, seed: int, res: Any, cmds: dict[int, tuple[str, Any]]) -> None:
        if isinstance(res, RobotFailure):
            slot.rec = EpisodeRecord(seed=seed, instruction="", end_reason=END_ABORTED, error=res.message)
            finish(slot)
            start(slot, cmds)
            return
        obs, info = res
        slot.obs, slot.finishing = obs, False
        slot.detector = DetectorRun(detector) if detector is not None else None
        slot.prev_image, slot.prev_proprio = obs[OBS_IMAGE], obs[OBS_PROPRIO]
        slot.rec = EpisodeRecord(seed=seed, instruction=obs[OBS_INSTRUCTION], task=str(info.get("task_name", "")))
        slot.rec.gt.append(bool(info.get(INFO_SUCCESS, False)))

    def step_done(slot: _Slot, action: np.ndarray, res: Any, cmds: dict[int, tuple[str, Any]]) -> None:
        rec = slot.rec
        if isinstance(res, RobotFailure):
            rec.end_reason, rec.error = END_ABORTED, res.message
            finish(slot)
            start(slot, cmds)
            return
        obs, _r, terminated, truncated, info = res
        rec.actions.append(action)
        rec.gt.append(bool(info.get(INFO_SUCCESS, False)))
        slot.prev_image, slot.prev_proprio = slot.obs[OBS_IMAGE], slot.obs[OBS_PROPRIO]
        slot.obs = obs
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
            slot.finishing = True

    def submit(cmds: dict[int, tuple[str, Any]]) -> None:
        for i, cmd in cmds.items():
            slots[i].pending = cmd
        if cmds:
            ops.submit(cmds)

    def run_group(group: list[_Slot]) -> None:
        cmds: dict[int, tuple[str, Any]] = {}
        waiting = [s for s in group if s.pending is not None]
        results = ops.collect([s.index for s in waiting]) if waiting else {}
        for s in waiting:
            (cmd, arg), s.pending = s.pending, None
            if cmd == "reset":
                reset_done(s, arg, results[s.index], cmds)
            else:
                step_done(s, arg, results[s.index], cmds)
        active = [s for s in group if s.rec is not None and s.index not in cmds]
        if active:
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
            if s.detector is not None:
                rec.detector_counts.append(s.detector.update(float(d[i])))
                if s.detector.fired and rec.detector_step is None:
                    rec.detector_step = s.detector.fired_at
                    if not s.finishing:
                        rec.end_reason = END_DETECTOR
                        s.finishing = True
            if on_step is not None:
                on_step(s.index, rec, s.obs)
            if not s.finishing and control is not None:
                verdict = control(s.index, rec)
                if verdict == HOLD:  # paused: forget this frame, do not step; asked again next loop
                    rec.d.pop()
                    if keep_frames:
                        rec.frames.pop()
                        rec.proprio.pop()
                    if s.detector is not None:
                        s.detector.retract()
                        rec.detector_counts.pop()
                    continue
                if verdict:
                    rec.end_reason = verdict
                    s.finishing = True
            if s.finishing:
                finish(s)
                start(s, cmds)
                continue
            cmds[s.index] = ("step", actions[i])
        submit(cmds)

    try:
        first: dict[int, tuple[str, Any]] = {}
        for s in slots:
            start(s, first)
        submit(first)
        start_idle()
        while any(s.rec is not None or s.pending is not None for s in slots):
            for group in group_slots:
                run_group(group)
            if idle:
                start_idle()
            if stop and discard_on_stop:  # checked once per round: the same for any group count
                for s in slots:
                    if s.rec is not None:
                        s.rec.end_reason = END_DISCARDED
                        if on_discard is not None:
                            on_discard(s.index, s.rec)
                        s.rec = None
                break
    finally:
        out = [s.index for s in slots if s.pending is not None]
        if out:  # left by an exception (a stop raised by ``control``) or a discarding stop: read
            ops.discard(out)  # the replies, so the next rollout on this fleet does not get them
        if own:
            fleet.close()
    return sorted(done.values(), key=lambda r: order[r.seed])
