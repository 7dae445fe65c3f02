"""Meta-World's 50 manipulation tasks (PyPI ``metaworld`` 3.1.1) as Dojo backends.

``make_env("metaworld", {"task": "push-v3", "image_size": 64})``; see ``env.py`` for how
seeding, cameras and experts work and ``tasks.py`` for the task names and instructions.
The task list is importable without MuJoCo: ``from sim_backends.metaworld_backend.tasks import TASK_NAMES``.
"""
import os

# Headless rendering must be chosen before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from sim_backends.metaworld_backend.env import (  # noqa: E402
    CAMERAS, DEFAULT_CAMERA, DEFAULT_NOISE, MetaWorldConfig, MetaWorldEnv, MetaWorldExpert, MetaWorldRaw,
    expert_policy, run_expert_episode, task_config,
)
from sim_backends.metaworld_backend.tasks import (  # noqa: E402
    INSTRUCTIONS, MAX_STEPS, MT10, MT50, TASK_NAMES, check_task, resolve_tasks,
)

__all__ = [
    "CAMERAS", "DEFAULT_CAMERA", "DEFAULT_NOISE", "INSTRUCTIONS", "MAX_STEPS", "MT10", "MT50", "MetaWorldConfig",
    "MetaWorldEnv", "MetaWorldExpert", "MetaWorldRaw", "TASK_NAMES", "check_task", "expert_policy",
    "resolve_tasks", "run_expert_episode", "task_config",
]
