"""The tabletop backend: a MuJoCo re-creation of Google's LanguageTable setting.

A round pusher moves in x-y over a bounded table with coloured, shaped blocks; the goal
is a language instruction (Block2Block or Block2Location). Physics, task (goals and
success) and environment (gym API, observations) are kept apart: ``scene.py`` builds the
physics, ``instructions.py`` owns the task words and thresholds, this file wires them.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import math  # noqa: E402
import string  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim_backends.base import (  # noqa: E402
    INFO_OFF_TABLE, INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO,
    BackendError,
)
from sim_backends.tabletop import scene  # noqa: E402
from sim_backends.tabletop.paraphrases import render_paraphrase  # noqa: E402
from sim_backends.tabletop.instructions import (  # noqa: E402
    BLOCK2BLOCK, BLOCK2BLOCK_SUCCESS_DISTANCE, BLOCK2LOCATION_SUCCESS_DISTANCE, CATALOG_BLOCKS,
    DEFAULT_BLOCKS, EXTRA_OBJECTS, FAMILIES, LONE_NOUNS, REGIONS, Goal, InstructionError, parse_instruction,
    render_instruction, sample_goal,
)

INFO_GOAL = "goal"
INFO_DISTANCE = "distance"
INFO_STEP = "step"

# Objects start inside this square so the expert can always get behind them.
SPAWN_HALF_SIZE = 0.2
PUSHER_SPAWN_HALF_SIZE = 0.25
# A block "falls off" once its centre leaves the table top or it drops below the surface.
FALL_Z = -0.01
MAX_SANE_SPEED = 50.0  # m/s or rad/s; anything faster is a blow-up, not a push
_BAD_STATE_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                       mujoco.mjtWarning.mjWARN_BADQACC)
PHRASINGS = ("templates", "paraphrases")
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


@dataclass(frozen=True)
class TabletopConfig:
    family: str = BLOCK2BLOCK
    """Instruction family: "block2block" or "block2location"."""
    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    """Blocks on the table, from LanguageTable's 8 (e.g. "red moon", "blue cube")."""
    objects: tuple[str, ...] = ()
    """Extra non-block objects, e.g. ("banana",); instructions may name them."""
    image_size: int = 64
    """Side of the square top-down RGB image, pixels."""
    max_steps: int = 80
    """Episode step limit (truncation)."""
    max_delta: float = 0.03
    """Pusher displacement in metres per step for an action of 1.0 along an axis."""
    substeps: int = 20
    """Physics steps per control step (the pusher is interpolated across them)."""
    timestep: float = 0.005
    """Physics timestep, seconds."""
    block2block_success_distance: float = BLOCK2BLOCK_SUCCESS_DISTANCE
    """Block2Block success: the two object centres are closer than this (metres)."""
    block2location_success_distance: float = BLOCK2LOCATION_SUCCESS_DISTANCE
    """Block2Location success: the object centre is closer than this to the region point."""
    terminate_on_success: bool = True
    """End the episode when the goal is reached. Practice (Stage 2) turns this off: there
    the learned success detector decides, and ground truth is only recorded beside it."""
    generic_name_prob: float = 0.0
    """When one object is alone on the table, the probability that a sampled instruction
    calls it by a generic noun ("push the object to the top left") instead of its name.
    Stage-1 data with such scenes teaches a model to find the thing to push when the words
    do not name a block it knows (the new-object experiment, ``bench.self_improvement``)."""
    lone_nouns: str = "generic"
    """The words ``generic_name_prob`` draws from: "generic" (object, thing, item, block) or
    "household" (those and ~24 household object words: cup, ball, toy, ...)."""
    domain: str = "sim"
    """How the table looks and behaves: "sim" (Dojo's tabletop) or "lab" (another table, light,
    camera pose and field of view, block size and friction; ``scene.DOMAINS``), for Real2Sim."""
    phrasing: str = "templates"
    """How sampled goals are worded: "templates" (the generator's phrasings, what demonstrations
    use) or "paraphrases" (the held-out set in ``paraphrases.py``, for evaluation only: the same
    scenes and goals seed for seed, other words)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"TabletopConfig.family={self.family!r}; expected one of {FAMILIES}")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "objects", tuple(self.objects))
        for b in self.blocks:
            if b not in CATALOG_BLOCKS:
                raise ValueError(f"TabletopConfig.blocks has {b!r}; choose from {CATALOG_BLOCKS}")
        for o in self.objects:
            if o not in EXTRA_OBJECTS:
                raise ValueError(f"TabletopConfig.objects has {o!r}; choose from {EXTRA_OBJECTS}")
        names = self.blocks + self.objects
        if len(set(names)) != len(names):
            raise ValueError(f"TabletopConfig.blocks/objects repeat a name: {names}")
        need = 2 if self.family == BLOCK2BLOCK else 1
        if len(names) < need:
            raise ValueError(f"family {self.family!r} needs at least {need} objects; got {names}")
        if len(names) > 8:
            raise ValueError(f"at most 8 objects fit on the table; got {len(names)}: {names}")
        if not (16 <= self.image_size <= 512):
            raise ValueError(f"TabletopConfig.image_size={self.image_size!r}; expected 16..512")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"TabletopConfig.max_steps={self.max_steps!r}; expected an int >= 1")
        if not (0.0 < self.max_delta <= 0.1):
            raise ValueError(f"TabletopConfig.max_delta={self.max_delta!r}; expected 0 < m <= 0.1 metres")
        if not (isinstance(self.substeps, int) and self.substeps >= 1):
            raise ValueError(f"TabletopConfig.substeps={self.substeps!r}; expected an int >= 1")
        if not (0.0 < self.timestep <= 0.02):
            raise ValueError(f"TabletopConfig.timestep={self.timestep!r}; expected 0 < dt <= 0.02 s")
        if not (0.0 <= self.generic_name_prob <= 1.0):
            raise ValueError(f"TabletopConfig.generic_name_prob={self.generic_name_prob!r}; expected 0..1")
        if self.domain not in scene.DOMAINS:
            raise ValueError(f"TabletopConfig.domain={self.domain!r}; expected one of {list(scene.DOMAINS)}")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"TabletopConfig.phrasing={self.phrasing!r}; expected one of {PHRASINGS}")
        if self.lone_nouns not in LONE_NOUNS:
            raise ValueError(f"TabletopConfig.lone_nouns={self.lone_nouns!r}; expected one of {list(LONE_NOUNS)}")
        for name in ("block2block_success_distance", "block2location_success_distance"):
            v = getattr(self, name)
            if not (0.0 < v < 0.3):
                raise ValueError(f"TabletopConfig.{name}={v!r}; expected 0 < d < 0.3 metres")

    @property
    def object_names(self) -> tuple[str, ...]:
        return self.blocks + self.objects

    def success_distance(self, family: str) -> float:
        return (self.block2block_success_distance if family == BLOCK2BLOCK
                else self.block2location_success_distance)


@dataclass
class _Episode:
    goal: Goal
    instruction: str
    step: int = 0
    done: bool = False
    last_obs: dict[str, Any] = field(default_factory=dict)


class TabletopEnv(gym.Env):
    """LanguageTable-like pushing. Actions are x-y pusher displacements in [-1, 1]."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_dim = 2
    proprio_dim = 2

    def __init__(self, config: TabletopConfig | None = None) -> None:
        self.config = config or TabletopConfig()
        self.render_mode = "rgb_array"
        cfg = self.config
        self.max_steps = cfg.max_steps
        self.image_shape = (cfg.image_size, cfg.image_size, 3)
        self.object_names = cfg.object_names
        self.model = mujoco.MjModel.from_xml_string(
            scene.build_mjcf(self.object_names, cfg.image_size, cfg.timestep, cfg.domain))
        self.data = mujoco.MjData(self.model)
        self._qadr = {n: self.model.jnt_qposadr[self.model.body(scene.body_name(n)).jntadr[0]]
                      for n in self.object_names}
        self._camera = self.model.camera("top").id
        try:
            self._renderer = mujoco.Renderer(self.model, cfg.image_size, cfg.image_size)
        except Exception as e:  # noqa: BLE001 - re-raised with the fix
            raise BackendError(
                f"cannot open a MuJoCo renderer ({e}); headless machines need MUJOCO_GL=egl "
                f"(or osmesa) set before mujoco is imported; MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}"
            ) from e
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        s = cfg.image_size
        self.observation_space = gym.spaces.Dict({
            OBS_IMAGE: gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
            OBS_PROPRIO: gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            OBS_INSTRUCTION: gym.spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.episode_id = 0
        self._episode: _Episode | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        goal: Goal | None = options.get("goal")
        instruction: str | None = options.get("instruction")
        if instruction is not None and goal is None:
            goal = parse_instruction(instruction, self.object_names)
        if goal is not None:
            for name in (goal.block, goal.target_block):
                if name is not None and name not in self.object_names:
                    raise InstructionError(f"goal names {name!r}, not in this scene {self.object_names}")
        for _ in range(100):
            self._place_everything(rng)
            episode_goal = goal or sample_goal(rng, self.object_names, self.config.family)
            # Never start an episode that is already (almost) solved.
            if self._goal_distance(episode_goal) > self.config.success_distance(episode_goal.family) + 0.04:
                break
        if instruction is None:
            name = None
            # Drawn only when it can apply, so seeded episodes of other configs are unchanged.
            if len(self.object_names) == 1 and self.config.generic_name_prob > 0.0 \
                    and rng.random() < self.config.generic_name_prob:
                nouns = LONE_NOUNS[self.config.lone_nouns]
                name = nouns[int(rng.integers(len(nouns)))]
            instruction = render_instruction(episode_goal, rng, name=name)
            if self.config.phrasing == "paraphrases":
                # Drawn from a copy of the generator: the episode (scene, goal, physics) stays
                # the templates' one for this seed, so the two are compared seed for seed.
                words = np.random.default_rng()
                words.bit_generator.state = rng.bit_generator.state
                instruction = render_paraphrase(episode_goal, words)
        self.episode_id += 1
        self._episode = _Episode(goal=episode_goal, instruction=instruction)
        obs = self._observe()
        info = self._info(success=False, off_table=False, physics_error=False)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._episode
        if ep is None or ep.done:
            raise BackendError("step() called before reset() or after the episode ended; call reset()")
        a = self._check_action(action)
        start = self.data.mocap_pos[0, :2].copy()
        lim = scene.TABLE_HALF_SIZE
        target = np.clip(start + a * self.config.max_delta, -lim, lim)
        warnings_before = self._bad_warning_count()
        for i in range(1, self.config.substeps + 1):
            self.data.mocap_pos[0, :2] = start + (target - start) * (i / self.config.substeps)
            mujoco.mj_step(self.model, self.data)
        ep.step += 1
        physics_error = self._physics_broken(warnings_before)
        if physics_error:
            success = off_table = False
            obs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in ep.last_obs.items()}
        else:
            off_table = self._any_off_table()
            success = (not off_table) and self._goal_distance(ep.goal) < self.config.success_distance(
                ep.goal.family)
            obs = self._observe()
        terminated = bool((success and self.config.terminate_on_success) or off_table or physics_error)
        truncated = bool(not terminated and ep.step >= self.max_steps)
        ep.done = terminated or truncated
        info = self._info(success=success, off_table=off_table, physics_error=physics_error)
        return obs, float(success), terminated, truncated, info

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - GL may already be gone at interpreter exit
            pass

    def __enter__(self) -> TabletopEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def goal(self) -> Goal:
        if self._episode is None:
            raise BackendError("no episode yet; call reset()")
        return self._episode.goal

    @property
    def instruction(self) -> str:
        if self._episode is None:
            raise BackendError("no episode yet; call reset()")
        return self._episode.instruction

    @property
    def step_count(self) -> int:
        return 0 if self._episode is None else self._episode.step

    def object_xy(self, name: str) -> np.ndarray:
        adr = self._qadr[name]
        return self.data.qpos[adr:adr + 2].copy()

    def object_yaw(self, name: str) -> float:
        adr = self._qadr[name]
        w, x, y, z = self.data.qpos[adr + 3:adr + 7]
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def pusher_xy(self) -> np.ndarray:
        return self.data.mocap_pos[0, :2].copy()

    def set_state(self, pusher_xy: np.ndarray | None = None,
                  objects: dict[str, tuple[float, float, float]] | None = None) -> None:
        """Place the pusher and/or objects ({name: (x, y, yaw)}) mid-episode: for tests and
        constructed scenarios, not for policies."""
        if pusher_xy is not None:
            self.data.mocap_pos[0, :2] = pusher_xy
        for name, (x, y, yaw) in (objects or {}).items():
            adr = self._qadr[name]
            self.data.qpos[adr:adr + 3] = (x, y, scene.object_half_height(name) + 0.0005)
            self.data.qpos[adr + 3:adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
            self.data.qvel[self.model.jnt_dofadr[self.model.body(scene.body_name(name)).jntadr[0]]
                           + np.arange(6)] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def goal_target(self, goal: Goal | None = None) -> np.ndarray:
        """Region point (Block2Location) or the target object's centre (Block2Block)."""
        goal = goal or self.goal
        if goal.region is not None:
            return np.array(REGIONS[goal.region], dtype=np.float64)
        return self.object_xy(goal.target_block)

    def privileged_state(self) -> dict[str, Any]:
        """Ground-truth state for scripted experts only (policies see observations)."""
        goal = self.goal
        return {
            "pusher": self.pusher_xy(),
            "objects": {n: {"xy": self.object_xy(n), "yaw": self.object_yaw(n),
                            "radius": scene.FOOTPRINT_RADIUS[scene.object_kind(n)]}
                        for n in self.object_names},
            "goal": goal,
            "block": goal.block,
            "target": self.goal_target(goal),
            "success_distance": self.config.success_distance(goal.family),
            "table_half_size": scene.TABLE_HALF_SIZE,
            "max_delta": self.config.max_delta,
            "pusher_radius": scene.PUSHER_RADIUS,
        }

    def goal_keypoints(self) -> np.ndarray:
        """Privileged: where the pushed object and its target appear in the camera image,
        float32 [2, 2] of (u, v) in [-1, 1] (u left to right, v top to bottom).

        Stored with demonstrations as an optional auxiliary label: it teaches the
        policy's image encoder where the named objects are (the policy never sees it)."""
        goal = self.goal
        pts = [(*self.object_xy(goal.block), 0.0), (*self.goal_target(goal), 0.0)]
        return np.asarray(scene.project(scene.DOMAINS[self.config.domain], pts), np.float32)

    # ------------------------------------------------------------------ internals
    def _check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"action must be a float array of shape (2,) in [-1, 1]; got {action!r}") from e
        if a.shape != (2,):
            raise ValueError(f"action has shape {a.shape} ({action!r}); expected shape (2,) "
                             f"(dx, dy) with values in [-1, 1]")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action {a.tolist()} is not finite; expected shape (2,) with finite "
                             f"values in [-1, 1]")
        return np.clip(a, -1.0, 1.0)

    def _place_everything(self, rng: np.random.Generator) -> None:
        mujoco.mj_resetData(self.model, self.data)
        placed: list[tuple[np.ndarray, float]] = []
        for name in self.object_names:
            r = scene.FOOTPRINT_RADIUS[scene.object_kind(name)]
            for _ in range(1000):
                xy = rng.uniform(-SPAWN_HALF_SIZE, SPAWN_HALF_SIZE, size=2)
                if all(np.linalg.norm(xy - p) > r + q + 0.02 for p, q in placed):
                    break
            placed.append((xy, r))
            yaw = rng.uniform(-math.pi, math.pi)
            adr = self._qadr[name]
            self.data.qpos[adr:adr + 3] = (xy[0], xy[1], scene.object_half_height(name) + 0.0005)
            self.data.qpos[adr + 3:adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        for _ in range(1000):
            p = rng.uniform(-PUSHER_SPAWN_HALF_SIZE, PUSHER_SPAWN_HALF_SIZE, size=2)
            if all(np.linalg.norm(p - q) > r + scene.PUSHER_RADIUS + 0.02 for q, r in placed):
                break
        self.data.mocap_pos[0] = (p[0], p[1], 0.0)
        mujoco.mj_forward(self.model, self.data)

    def _goal_distance(self, goal: Goal) -> float:
        return float(np.linalg.norm(self.object_xy(goal.block) - self.goal_target(goal)))

    def _any_off_table(self) -> bool:
        lim = scene.TABLE_HALF_SIZE
        for name in self.object_names:
            adr = self._qadr[name]
            x, y, z = self.data.qpos[adr:adr + 3]
            if abs(x) > lim or abs(y) > lim or z < FALL_Z:
                return True
        return False

    def _bad_warning_count(self) -> int:
        return int(sum(self.data.warning[w].number for w in _BAD_STATE_WARNINGS))

    def _physics_broken(self, warnings_before: int) -> bool:
        if self._bad_warning_count() != warnings_before:
            return True
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            return True
        return bool(np.max(np.abs(self.data.qvel), initial=0.0) > MAX_SANE_SPEED)

    def _observe(self) -> dict[str, Any]:
        proprio = (self.pusher_xy() / scene.TABLE_HALF_SIZE).astype(np.float32)
        obs = {OBS_IMAGE: self.render(), OBS_PROPRIO: np.clip(proprio, -1.0, 1.0),
               OBS_INSTRUCTION: self._episode.instruction}
        self._episode.last_obs = obs
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}

    def _info(self, *, success: bool, off_table: bool, physics_error: bool) -> dict[str, Any]:
        ep = self._episode
        distance = float("nan") if physics_error else self._goal_distance(ep.goal)
        return {INFO_SUCCESS: bool(success), INFO_OFF_TABLE: bool(off_table),
                INFO_PHYSICS_ERROR: bool(physics_error), INFO_GOAL: ep.goal,
                INFO_DISTANCE: distance, INFO_STEP: ep.step, "instruction": ep.instruction}
