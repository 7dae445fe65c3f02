"""The small interface every Dojo backend implements (simulated or real robot).

A backend is a Gymnasium-style environment whose observations are a dict with
three keys (see ``OBS_*``): a top-down RGB image, proprioception and the
instruction text. Ground-truth success, where the simulator knows it, is in
``info["success"]``; Dojo never uses it for reward or termination unless asked.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

OBS_IMAGE = "image"  # uint8 [H, W, 3]
OBS_PROPRIO = "proprio"  # float32 [P]
OBS_INSTRUCTION = "instruction"  # str

INFO_SUCCESS = "success"  # bool: ground truth, when the simulator knows it
INFO_OFF_TABLE = "off_table"  # bool: an object left the workspace
INFO_PHYSICS_ERROR = "physics_error"  # bool: the simulation blew up (episode over)


class BackendError(RuntimeError):
    """A backend cannot go on (bad config, bad action, simulator failure)."""


@runtime_checkable
class Backend(Protocol):
    """What the fleet, the dataset writer and the evaluator rely on."""

    action_dim: int
    proprio_dim: int
    image_shape: tuple[int, int, int]
    max_steps: int

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def step(self, action: np.ndarray
             ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]: ...

    def close(self) -> None: ...
