"""MuJoCo re-creation of Google's LanguageTable: a round pusher, shaped blocks, language goals."""
import os

# Headless rendering must be chosen before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from sim_backends.tabletop.env import TabletopConfig, TabletopEnv  # noqa: E402
from sim_backends.tabletop.expert import ScriptedExpert, run_expert_episode  # noqa: E402
from sim_backends.tabletop.instructions import (  # noqa: E402
    BLOCK2BLOCK, BLOCK2LOCATION, CATALOG_BLOCKS, COLOURS, DEFAULT_BLOCKS, REGIONS, SHAPES, Goal,
    InstructionError, parse_instruction, render_instruction, sample_goal,
)

__all__ = [
    "BLOCK2BLOCK", "BLOCK2LOCATION", "CATALOG_BLOCKS", "COLOURS", "DEFAULT_BLOCKS", "REGIONS",
    "SHAPES", "Goal", "InstructionError", "ScriptedExpert", "TabletopConfig", "TabletopEnv",
    "parse_instruction", "render_instruction", "run_expert_episode", "sample_goal",
]
