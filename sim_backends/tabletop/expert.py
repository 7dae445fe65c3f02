"""A scripted pushing expert that plays like a (somewhat clumsy) human demonstrator.

Why not optimal: behavioral cloning on clean scripted demos scales far more steeply with
data than on human demos (docs/method.md, "Prototype notes"), which would hide the point of
self-improvement. So each episode draws a style (speed, noise, wobble, detours, pauses,
approach margin, overshoot) from the rng, while staying >= 95% successful.

Strategy (classic pushing): the target is a point (the region point, or a spot beside the
target block on the pushed block's side). Go to a pre-push point behind the block, opposite
the target, circling around the block when on the wrong side; then push along the
block-to-target line, correcting sideways drift; stop once the goal is reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO
from sim_backends.tabletop.instructions import BLOCK2BLOCK

DEFAULT_NOISE = 1.0
# Where Block2Block aims: the pushed block's centre this far from the target block's centre.
BLOCK2BLOCK_AIM_DISTANCE = 0.055


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _segment_hits_disc(p: np.ndarray, q: np.ndarray, c: np.ndarray, r: float) -> bool:
    d = q - p
    t = float(np.clip(np.dot(c - p, d) / max(float(np.dot(d, d)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p + t * d - c)) < r


@dataclass(frozen=True)
class ExpertStyle:
    """One demonstrator's habits for one episode."""

    approach_speed: float  # fraction of max_delta when moving freely
    push_speed: float  # fraction of max_delta when pushing
    lateral_gain: float  # how hard sideways drift is corrected while pushing
    margin: float  # extra clearance of the pre-push point behind the block, metres
    noise: float  # Gaussian action noise (action units)
    wobble: float  # Ornstein-Uhlenbeck wobble scale (0 = steady hand)
    hesitate_prob: float  # per-step chance of pausing for a few steps
    detour: bool  # first visits a random waypoint on the way to the block
    overshoot: bool  # first overshoots the pre-push point sideways, then corrects

    @classmethod
    def sample(cls, rng: np.random.Generator, noise: float) -> ExpertStyle:
        return cls(
            approach_speed=float(rng.uniform(0.8, 1.0)),
            push_speed=float(rng.uniform(0.7, 0.95)),
            lateral_gain=float(rng.uniform(0.3, 0.8)),
            margin=float(rng.uniform(0.01, 0.04)),
            noise=float(rng.uniform(0.03, 0.15) * noise),
            wobble=float(rng.uniform(0.04, 0.12) * noise) if rng.random() < 0.4 else 0.0,
            hesitate_prob=float(rng.uniform(0.02, 0.05)) if rng.random() < 0.15 else 0.0,
            detour=bool(rng.random() < 0.35),
            overshoot=bool(rng.random() < 0.25),
        )


class ScriptedExpert:
    """``act()`` returns the next action in [-1, 1]^2 from ``env.privileged_state()``.

    A fresh style is drawn from ``rng`` at the start of every episode of ``env``.
    ``noise`` scales all randomness of the hand (0 = steady, 1 = default human-like).
    """

    def __init__(self, env: Any, rng: np.random.Generator, noise: float = DEFAULT_NOISE) -> None:
        self.env = env
        self.rng = rng
        self.noise = float(noise)
        self._episode_id: int | None = None
        self.style: ExpertStyle | None = None

    def _new_episode(self) -> None:
        rng = self.rng
        self.style = ExpertStyle.sample(rng, self.noise)
        self._ou = np.zeros(2)
        self._pause = 0
        self._pushing = False
        self._detour_point: np.ndarray | None = None
        self._overshoot_side: float | None = float(rng.choice([-1.0, 1.0])) if self.style.overshoot else None
        self._overshoot_amount = float(rng.uniform(0.025, 0.05))
        self._circle_side: float = float(rng.choice([-1.0, 1.0]))
        if self.style.detour:
            s = self.env.privileged_state()
            p, b = s["pusher"], s["objects"][s["block"]]["xy"]
            mid = (p + b) / 2
            perp = np.array([-(b - p)[1], (b - p)[0]])
            offset = _unit(perp) * rng.uniform(0.05, 0.14) * rng.choice([-1.0, 1.0])
            lim = s["table_half_size"] - 0.04
            self._detour_point = np.clip(mid + offset + rng.normal(0, 0.02, 2), -lim, lim)
        self._episode_id = self.env.episode_id

    def act(self) -> np.ndarray:
        if self._episode_id != self.env.episode_id:
            self._new_episode()
        style, rng = self.style, self.rng
        s = self.env.privileged_state()
        command = self._command(s)  # metres
        action = command / s["max_delta"]
        n = float(np.linalg.norm(action))
        if n > 1.0:
            action = action / n
        if self._pause > 0:
            self._pause -= 1
            action = action * 0.05
        elif style.hesitate_prob and rng.random() < style.hesitate_prob:
            self._pause = int(rng.integers(2, 5))
        self._ou += -0.2 * self._ou + style.wobble * rng.normal(size=2)
        # A hand in contact with the block is steadier than one moving through free space.
        steadiness = 0.5 if self._pushing else 1.0
        action = action + steadiness * (self._ou + rng.normal(0.0, style.noise, size=2))
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ planning
    def _aim_point(self, s: dict[str, Any]) -> np.ndarray:
        goal = s["goal"]
        block = s["objects"][s["block"]]["xy"]
        if goal.family == BLOCK2BLOCK:
            target = s["objects"][goal.target_block]["xy"]
            return target + _unit(block - target) * BLOCK2BLOCK_AIM_DISTANCE
        return s["target"]

    def _command(self, s: dict[str, Any]) -> np.ndarray:
        style = self.style
        p = s["pusher"]
        obj = s["objects"][s["block"]]
        b, r_block = obj["xy"], obj["radius"]
        goal = s["goal"]
        dist_to_goal = float(np.linalg.norm(b - s["target"]))
        if dist_to_goal < s["success_distance"] * 0.9:
            return np.zeros(2)  # done: stop
        aim = self._aim_point(s)
        d = _unit(aim - b)
        contact = r_block + s["pusher_radius"]
        v = p - b
        along = float(np.dot(v, d))
        lateral = v - along * d
        lat = float(np.linalg.norm(lateral))
        step = s["max_delta"]

        # Pushing: stay on the line behind the block, move along it.
        if self._pushing and (along > -0.25 * contact or lat > 0.8 * contact):
            self._pushing = False
        if not self._pushing and along < -0.75 * contact and lat < 0.35 * contact \
                and along > -(contact + style.margin + 0.03):
            self._pushing = True
            self._detour_point = None
            self._overshoot_side = None
        if self._pushing:
            remaining = float(np.linalg.norm(aim - b))
            speed = min(style.push_speed * step, remaining + 0.01)
            back = (-(contact - 0.006) - along) * d  # keep in touch
            return -style.lateral_gain * lateral + 0.5 * back + speed * d

        # Approaching the pre-push point behind the block.
        q = b - d * (contact + style.margin)
        if self._detour_point is not None:
            if np.linalg.norm(self._detour_point - p) < 0.03:
                self._detour_point = None
            else:
                return self._move_towards(p, self._detour_point, style.approach_speed * step, s)
        if self._overshoot_side is not None:
            over = q + np.array([-d[1], d[0]]) * self._overshoot_side * self._overshoot_amount
            if np.linalg.norm(over - p) < 0.012:
                self._overshoot_side = None
            else:
                return self._circle_or_go(p, b, over, d, contact, style, step, s)
        return self._circle_or_go(p, b, q, d, contact, style, step, s)

    def _circle_or_go(self, p, b, q, d, contact, style, step, s) -> np.ndarray:
        avoid = contact + 0.012
        if _segment_hits_disc(p, q, b, avoid):
            rel = p - b
            phi_p = math.atan2(rel[1], rel[0])
            phi_q = math.atan2(-d[1], -d[0])
            dphi = _wrap(phi_q - phi_p)
            if abs(dphi) > 0.9 * math.pi:  # either way round: keep this episode's habit
                dphi = self._circle_side * abs(dphi)
            turn = math.copysign(min(abs(dphi), 0.7), dphi)
            radius = avoid + 0.012
            way = b + radius * np.array([math.cos(phi_p + turn), math.sin(phi_p + turn)])
            return self._move_towards(p, way, style.approach_speed * step, s)
        return self._move_towards(p, q, style.approach_speed * step, s)

    @staticmethod
    def _move_towards(p: np.ndarray, point: np.ndarray, speed: float, s: dict[str, Any]) -> np.ndarray:
        lim = s["table_half_size"]
        point = np.clip(point, -lim, lim)
        delta = point - p
        n = float(np.linalg.norm(delta))
        return delta if n <= speed else delta * (speed / n)


def run_expert_episode(env: Any, seed: int, rng: np.random.Generator, noise: float = DEFAULT_NOISE,
                       options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One expert demonstration: T+1 observations (images, proprio) and T actions and infos."""
    expert = ScriptedExpert(env, rng, noise=noise)
    obs, info = env.reset(seed=seed, options=options)
    images, proprio, actions, infos = [obs[OBS_IMAGE]], [obs[OBS_PROPRIO]], [], []
    keypoints = [env.goal_keypoints()]
    while True:
        action = expert.act()
        obs, _, terminated, truncated, info = env.step(action)
        images.append(obs[OBS_IMAGE])
        proprio.append(obs[OBS_PROPRIO])
        actions.append(action)
        infos.append(info)
        keypoints.append(env.goal_keypoints())
        if terminated or truncated:
            break
    return {
        "images": images, "proprio": proprio, "actions": actions, "infos": infos,
        "success": bool(info[INFO_SUCCESS]), "goal": env.goal, "instruction": obs[OBS_INSTRUCTION],
        "length": len(actions), "style": expert.style, "keypoints": keypoints,
    }
