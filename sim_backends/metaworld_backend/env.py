"""Meta-World (PyPI ``metaworld`` 3.1.1, MuJoCo 3.3.0) as a Dojo backend.

Built on the Gymnasium adapter (``sim_backends.gym_adapter``): ``MetaWorldRaw`` fixes what
Meta-World itself leaves to the user, and ``GymTaskConfig`` does the rest.

- Task and goal from the seed: Meta-World 3 samples a task's random vector (object and goal
  positions) in ``reset()`` from ``self.np_random`` when ``seeded_rand_vec`` is set and the
  vector is not frozen; ``reset(seed=s)`` calls ``env.seed(s)`` first, so a seed fixes the
  episode. ``mj_resetData`` before every reset clears the solver warm start left over from the
  previous episode, so two episodes with one seed match bit for bit. (The MT1/ML1 ``Task``
  objects would limit each task to 50 pre-drawn goals and draw them from the global RNG.)
- Observations: the goal-observable 39-d vector (hand xyz, gripper opening, object poses,
  the previous frame of those, goal xyz) that the scripted policies parse; Dojo's proprio is
  the hand position and gripper opening (first 4 entries), mapped to [-1, 1], and with
  ``goal_observable`` also the goal xyz (the last 3: Meta-World's "goal-observable" setting,
  for tasks whose goal is a point in the air no camera frame can place, like reach-v3).
- Images: an offscreen ``mujoco.Renderer`` at the requested size, shadows, reflections and
  multisampling off (4x faster on software GL, the default on CPU machines). Meta-World's
  corner cameras are defined upside down (they were made for mujoco-py, which flipped
  frames); a camera whose up axis points below the horizon is turned 180 degrees, so the
  table is at the bottom of the frame (``upright`` overrides).
- Ground truth: ``info["success"]``; an episode ends at success (terminated) or the step limit.
- Experts: ``metaworld.policies`` (one per task) with Gaussian action noise.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim_backends.base import BackendError  # noqa: E402
from sim_backends.gym_adapter import GymBackend, GymTaskConfig, run_gym_expert_episode  # noqa: E402
from sim_backends.metaworld_backend.tasks import INSTRUCTIONS, MAX_STEPS, check_task  # noqa: E402

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
DEFAULT_CAMERA = "corner4"
DEFAULT_NOISE = 0.1
# Sawyer hand workspace (SawyerXYZEnv._HAND_SPACE) and gripper opening in [0, 1]: proprio scale.
PROPRIO_LOW = (-0.525, 0.348, -0.0525, 0.0)
PROPRIO_HIGH = (0.525, 1.025, 0.7, 1.0)
GOAL_OBS = (36, 37, 38)
"""Indices of the goal xyz in Meta-World's goal-observable 39-d observation."""


@dataclass(frozen=True)
class MetaWorldConfig:
    task: str = "reach-v3"
    """A Meta-World v3 task name, e.g. "push-v3" (``tasks.TASK_NAMES`` lists all 50)."""
    image_size: int = 64
    """Side of the square RGB frame, pixels."""
    camera: str = DEFAULT_CAMERA
    """A camera of the Meta-World scene: corner, corner2, corner3, corner4 (default: the
    common close-up view of visual Meta-World work), topview, behindGripper, gripperPOV."""
    upright: bool | None = None
    """Turn the frame 180 degrees: None = when the camera's up axis points downwards."""
    max_steps: int | None = None
    """Step limit; None = the task's default (``tasks.MAX_STEPS``, 100 to 460)."""
    expert_noise: float = DEFAULT_NOISE
    """Std of Gaussian noise on the scripted expert's actions (in [-1, 1] units)."""
    random_phrasing: bool = True
    """Draw the instruction's phrasing per episode from the seed (False: the canonical one)."""
    terminate_on_success: bool = True
    """End an episode at the first successful step."""
    demo_hold_steps: int = 5
    """Expert demonstrations go on this many steps after success while it holds, labelled
    steps-to-go 0 (``GymTaskConfig.demo_hold_steps``). Stopping at the goal left the
    steps-to-go head with a floor of d ~ 3 on success and near-miss frames alike (25 demos
    per task), so no threshold separated them (detector precision 0.33-0.42)."""
    goal_observable: bool = False
    """Append the goal xyz to the proprioception (Meta-World's goal-observable setting; the
    goal of reach-v3 is a ~1 px dot at 64 px floating at an unseen depth, so from the image
    alone the policy cannot know where to reach). Mapped with the hand's bounds."""
    goal_marker_radius: float | None = None
    """Draw the task's goal marker (its ``goal`` site: reach, push, pick-place, drawer...) as
    a ball of this radius in metres, for the camera only (sites do not collide). None: the
    scene's 2 cm, ~1 px at 64 px. reach-v3 succeeds within 5 cm of its goal, so 0.05 draws
    the region that counts as reached. A task without a goal site refuses it (BackendError)."""
    mesh_cell: float | None = 0.01
    """Render the scene's meshes coarsened to this grid size in metres
    (``sim_backends.mesh_lod``): the Sawyer arm's ~68,000 triangles become ~13,000 and a
    64-px step costs ~2.9 ms instead of ~5.9 on a CPU renderer, for frames that differ from
    the full meshes by < 1 grey level in 255 on average (measured on drawer-close and
    pick-place). Physics is untouched. None: the full meshes (before 2026-12-05)."""

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.camera not in CAMERAS:
            raise ValueError(f"MetaWorldConfig.camera={self.camera!r}; choose from {CAMERAS}")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 512):
            raise ValueError(f"MetaWorldConfig.image_size={self.image_size!r}; expected an int 16..512")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and 1 <= self.max_steps <= 500):
            raise ValueError(f"MetaWorldConfig.max_steps={self.max_steps!r}; expected None or an int 1..500")
        if not (0.0 <= float(self.expert_noise) <= 2.0):
            raise ValueError(f"MetaWorldConfig.expert_noise={self.expert_noise!r}; expected 0..2")
        if self.goal_marker_radius is not None and not (0.001 <= float(self.goal_marker_radius) <= 0.2):
            raise ValueError(f"MetaWorldConfig.goal_marker_radius={self.goal_marker_radius!r}; expected None or "
                             f"a radius in metres, 0.001..0.2 (reach-v3's success radius is 0.05)")
        if self.mesh_cell is not None and not (0.0005 <= float(self.mesh_cell) <= 0.05):
            raise ValueError(f"MetaWorldConfig.mesh_cell={self.mesh_cell!r}; expected None (full meshes) or a grid "
                             f"size in metres, 0.0005..0.05 (0.01 is invisible at 64 px)")

    @property
    def step_limit(self) -> int:
        return self.max_steps if self.max_steps is not None else MAX_STEPS[self.task]


class MetaWorldRaw(gym.Wrapper):
    """A Meta-World task env that seeds its goal from ``reset(seed=...)`` and renders offscreen."""

    def __init__(self, task: str, image_size: int = 64, camera: str = DEFAULT_CAMERA,
                 upright: bool | None = None, max_steps: int = 500,
                 goal_marker_radius: float | None = None, mesh_cell: float | None = None) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        check_task(task)
        if task not in ALL_V3_ENVIRONMENTS:
            raise BackendError(f"the installed metaworld has no {task!r}; requirements.txt pins metaworld==3.1.1")
        env = ALL_V3_ENVIRONMENTS[task](width=image_size, height=image_size)
        # Goal-observable observations (the scripted experts parse the goal from them).
        env.__dict__.pop("sawyer_observation_space", None)
        env._partially_observable = False
        env.observation_space = env.sawyer_observation_space
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.max_path_length = max_steps
        super().__init__(env)
        self.task = task
        self.image_size = image_size
        model = env.model
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        try:
            self._camera = model.camera(camera).id
        except KeyError:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise BackendError(f"{task}: no camera {camera!r}; this scene has {names}") from None
        if goal_marker_radius is not None:
            try:
                site = model.site("goal").id
            except KeyError:
                raise BackendError(f"{task} has no goal marker (no 'goal' site in its scene) to draw larger; "
                                   f"leave goal_marker_radius unset for this task") from None
            model.site_size[site, 0] = float(goal_marker_radius)
        if mesh_cell is not None:
            from sim_backends.mesh_lod import simplify_visual_meshes

            self.mesh_stats = simplify_visual_meshes(model, float(mesh_cell))
        mujoco.mj_forward(model, env.data)
        up_z = float(env.data.cam_xmat[self._camera].reshape(3, 3)[2, 1])
        self.upright_flip = (up_z < 0) if upright is None else bool(upright)
        self._renderer: mujoco.Renderer | None = None
        self._seeded = False

    @property
    def render_mode(self) -> str:
        return "rgb_array"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        env = self.env.unwrapped
        if seed is not None:
            env.seed(int(seed))
            self._seeded = True
        elif not self._seeded:
            env.seed(int(np.random.SeedSequence().generate_state(1)[0]))
            self._seeded = True
        mujoco.mj_resetData(env.model, env.data)
        return env.reset()

    def render(self) -> np.ndarray:
        env = self.env.unwrapped
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
            except Exception as e:  # noqa: BLE001 - re-raised with the fix
                raise BackendError(
                    f"cannot open a MuJoCo renderer ({e}); headless machines need MUJOCO_GL=egl (or "
                    f"osmesa) set before mujoco is first imported (import sim_backends.metaworld_backend "
                    f"before metaworld or mujoco); MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}") from e
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._renderer.update_scene(env.data, camera=self._camera)
        img = self._renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1]) if self.upright_flip else img.copy()

    @property
    def target_pos(self) -> np.ndarray:
        return np.array(self.env.unwrapped._target_pos, dtype=np.float64)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [N, 3] -> where they appear in ``render()``'s image, float32 [N, 2] of
        (u, v) in [-1, 1] at the image edges (u left to right, v top to bottom), pinhole model
        of the camera (MuJoCo cameras look along their -z axis, y up)."""
        env = self.env.unwrapped
        pos = env.data.cam_xpos[self._camera]
        rot = env.data.cam_xmat[self._camera].reshape(3, 3)
        rel = (np.asarray(points, np.float64) - pos) @ rot  # camera frame: x right, y up, z back
        depth = np.maximum(-rel[:, 2], 1e-6)
        t = np.tan(np.deg2rad(float(env.model.cam_fovy[self._camera])) / 2.0)
        uv = np.stack([rel[:, 0] / depth / t, -rel[:, 1] / depth / t], 1)
        return (-uv if self.upright_flip else uv).astype(np.float32)

    def goal_keypoints(self) -> np.ndarray:
        """Privileged label like the tabletop's: image positions of the task's first object
        and of its goal, float32 [2, 2] (stored with demonstrations; the policy never sees it)."""
        env = self.env.unwrapped
        obj = np.asarray(env._get_pos_objects(), np.float64).reshape(-1)[:3]
        return self.project(np.stack([obj, self.target_pos]))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


def expert_policy(task: str) -> Any:
    """The ``metaworld.policies`` scripted policy for ``task``."""
    import metaworld.policies as policies

    check_task(task)
    wanted = task.replace("-", "")
    aliases = {"peginsertsidev3": "peginsertionsidev3"}
    wanted = aliases.get(wanted, wanted)
    for name in dir(policies):
        if name.startswith("Sawyer") and name.endswith("Policy") and \
                name[len("Sawyer"):-len("Policy")].lower() == wanted:
            return getattr(policies, name)()
    raise BackendError(f"metaworld.policies has no scripted policy for {task!r}")


class MetaWorldExpert:
    """``expert(raw_env, raw_obs)`` -> the scripted policy's action (Meta-World units = [-1, 1])."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.policy = expert_policy(task)

    def __call__(self, raw_env: gym.Env, raw_obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Constant(s) may be too high": the env clips
            action = self.policy.get_action(np.asarray(raw_obs, dtype=np.float64))
        return np.clip(action, -1.0, 1.0)


def task_config(cfg: MetaWorldConfig) -> GymTaskConfig:
    """The adapter config for a Meta-World task."""
    instruction, *phrasings = INSTRUCTIONS[cfg.task]
    return GymTaskConfig(
        factory=partial(MetaWorldRaw, cfg.task, cfg.image_size, cfg.camera, cfg.upright, cfg.step_limit,
                        cfg.goal_marker_radius, cfg.mesh_cell),
        instruction=instruction, phrasings=tuple(phrasings), random_phrasing=cfg.random_phrasing,
        image_size=cfg.image_size, proprio=(0, 1, 2, 3, *GOAL_OBS) if cfg.goal_observable else "0:4",
        proprio_low=PROPRIO_LOW + (PROPRIO_LOW[:3] if cfg.goal_observable else ()),
        proprio_high=PROPRIO_HIGH + (PROPRIO_HIGH[:3] if cfg.goal_observable else ()),
        max_steps=cfg.step_limit, success_key="success", terminate_on_success=cfg.terminate_on_success,
        expert=MetaWorldExpert(cfg.task), expert_noise=float(cfg.expert_noise), name=cfg.task,
        demo_hold_steps=int(cfg.demo_hold_steps),
    )


class MetaWorldEnv(GymBackend):
    """One Meta-World task as a Dojo backend: 4-d actions (dx, dy, dz, gripper) in [-1, 1],
    64x64 RGB, proprio = normalised hand xyz + gripper opening."""

    def __init__(self, config: MetaWorldConfig | None = None) -> None:
        self.metaworld_config = config or MetaWorldConfig()
        self.task = self.metaworld_config.task
        super().__init__(task_config(self.metaworld_config))

    @property
    def goal(self) -> str:
        return self.task

    def goal_keypoints(self) -> np.ndarray:
        return self.raw_env.goal_keypoints()

    def privileged_state(self) -> dict[str, Any]:
        """Ground truth for scripted experts and tests (policies see observations)."""
        obs = np.asarray(self.raw_obs, dtype=np.float64)
        return {"task": self.task, "hand": obs[:3].copy(), "gripper": float(obs[3]),
                "goal": self.raw_env.target_pos, "raw_obs": obs.copy()}


def run_expert_episode(env: MetaWorldEnv, seed: int, rng: np.random.Generator, noise: float | None = None,
                       options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One noisy scripted demonstration (format of ``tabletop.run_expert_episode``)."""
    return run_gym_expert_episode(env, seed, rng, noise=noise, options=options)


__all__ = ["CAMERAS", "DEFAULT_CAMERA", "DEFAULT_NOISE", "MetaWorldConfig", "MetaWorldEnv", "MetaWorldExpert",
           "MetaWorldRaw", "expert_policy", "run_expert_episode", "task_config"]
