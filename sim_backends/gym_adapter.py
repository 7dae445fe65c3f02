"""Any Gymnasium environment as a Dojo backend, and a checker that says what is missing.

Dojo's backends all speak one small protocol (``sim_backends.base``): observations are a
dict with an RGB image, a proprioception vector and the instruction text, actions are
vectors in [-1, 1]^A, ``info["success"]`` is the simulator's ground truth. A Gymnasium
environment that can render an RGB frame and reports success in its ``info`` becomes such
a backend with one :class:`GymTaskConfig`::

    from sim_backends.gym_adapter import GymBackend, GymTaskConfig, check_backend

    cfg = GymTaskConfig(
        env_id="MyRobot-v0",                     # or factory=my_module.make_env / "my_module:make_env"
        instruction="open the drawer",           # the goal text the policy is conditioned on
        phrasings=("pull the drawer open",),     # alternatives, one drawn per episode from the seed
        camera="frontview",                      # passed to gymnasium.make as camera_name (int: camera_id)
        image_size=64,                           # square frames, resized if the env renders another size
        proprio="0:4",                           # which part of the env observation is proprioception
        max_steps=150,                           # Dojo's step limit (truncation)
        success_key="is_success",                # where the env puts ground-truth success in info
        expert=my_scripted_policy,               # optional: (raw_env, raw_obs) -> action in env units
        expert_noise=0.1,                        # Gaussian noise on expert actions, in [-1, 1] units
    )
    check_backend(gymnasium.make("MyRobot-v0", render_mode="rgb_array"), cfg)  # what is wrong, if anything
    env = GymBackend(cfg)

or, from anywhere that stores configs as JSON (datasets, the demos CLI), through the
registry: ``make_env("gym", {"env_id": "MyRobot-v0", "instruction": "open the drawer", ...})``
with callables given as ``"package.module:name"`` import paths.

Action discretisation into bins is the policy's business; rescaling the policy's [-1, 1]
to the environment's ``Box(low, high)`` is the adapter's.

The code lives in three modules, all of it importable from here: ``sim_backends.gym_spec``
(the config and what it parses), ``sim_backends.gym_backend`` (the adapter and its expert
episodes) and ``sim_backends.gym_check`` (the checker).
"""
from __future__ import annotations

import os

# Headless rendering for MuJoCo-based environments must be chosen before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from sim_backends.gym_spec import (  # noqa: E402, F401 - the constants for callers of this module
    INFO_INSTRUCTION, INFO_STEP, INSTRUCTION_CHARSET, GymTaskConfig, extract_proprio, make_raw_env, resolve,
    to_uint8_rgb,
)
from sim_backends.gym_backend import ActionError, GymBackend, run_gym_expert_episode  # noqa: E402
from sim_backends.gym_check import BackendCheckError, CheckReport, check_backend  # noqa: E402

__all__ = [
    "ActionError", "BackendCheckError", "CheckReport", "GymBackend", "GymTaskConfig", "check_backend",
    "extract_proprio", "make_raw_env", "resolve", "run_gym_expert_episode", "to_uint8_rgb",
]
