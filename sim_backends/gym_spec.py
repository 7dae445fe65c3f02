"""How one Gymnasium environment becomes one Dojo task: :class:`GymTaskConfig`, and the
conversions it specifies (import paths, the proprioception selection, rendered frames,
the success value). The adapter that uses them is ``sim_backends.gym_backend``; import
everything from ``sim_backends.gym_adapter`` (module docstring there)."""
from __future__ import annotations

import os

# Headless rendering for MuJoCo-based environments must be chosen before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import importlib  # noqa: E402
import re  # noqa: E402
import string  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Mapping  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from sim_backends.base import BackendError  # noqa: E402

INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-!?()/:;"
INFO_STEP = "step"
INFO_INSTRUCTION = "instruction"

_SLICE = re.compile(r"^\s*-?\d*\s*:\s*-?\d*\s*(:\s*-?\d*\s*)?$")


def resolve(obj: Any, what: str) -> Any:
    """``"package.module:attr"`` -> the object; anything else is returned unchanged."""
    if not isinstance(obj, str):
        return obj
    mod, sep, attr = obj.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"{what}={obj!r}: expected a callable or an import path 'package.module:name'")
    try:
        target = importlib.import_module(mod)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}={obj!r} cannot be imported: {e}") from e
    return target


@dataclass(frozen=True)
class GymTaskConfig:
    """How one Gymnasium environment becomes one Dojo task. All fields are JSON-friendly
    except the callables, which may also be given as ``"package.module:name"`` strings."""

    env_id: str | None = None
    """Gymnasium id for ``gymnasium.make`` (made with ``render_mode="rgb_array"``)."""
    factory: Callable[..., gym.Env] | str | None = None
    """Or a callable returning the environment (called with ``make_kwargs``); it must render
    RGB frames from ``render()`` (``render_mode="rgb_array"``) unless ``render_fn`` is given."""
    make_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make`` / the factory."""
    instruction: str = ""
    """The task's instruction (the canonical phrasing); required."""
    phrasings: tuple[str, ...] = ()
    """Other phrasings of the same instruction; with ``random_phrasing`` one of
    (instruction, *phrasings) is drawn per episode from the reset seed."""
    random_phrasing: bool = True
    """False: always the canonical ``instruction``."""
    camera: str | int | None = None
    """Camera for ``gymnasium.make``: a name is passed as ``camera_name``, an int as
    ``camera_id`` (MuJoCo environments take these). None: the environment's default."""
    image_size: int = 64
    """Side of the square RGB frame given to the policy; other sizes are resized."""
    render_fn: Callable[[gym.Env], np.ndarray] | str | None = None
    """Custom frame grabber ``render_fn(raw_env) -> uint8 [H, W, 3]`` instead of ``raw_env.render()``."""
    proprio: Any = None
    """Which part of the env observation is proprioception: None = the whole (flat) observation;
    ``"a:b"`` = a slice; a list of indices; or a callable ``proprio(raw_obs) -> vector``."""
    proprio_key: str | None = None
    """For dict observations: the key holding the proprioception (then ``proprio`` applies to it)."""
    proprio_low: tuple[float, ...] | None = None
    """With ``proprio_high``: map proprioception from [low, high] to [-1, 1] (clipped)."""
    proprio_high: tuple[float, ...] | None = None
    action_low: tuple[float, ...] | None = None
    """Override the action space's lower bounds (needed when they are infinite)."""
    action_high: tuple[float, ...] | None = None
    max_steps: int = 100
    """Dojo's episode step limit (truncation); the env's own truncation also ends an episode."""
    success_key: str = "success"
    """Key of ground-truth success in the ``info`` dict returned by ``step()``."""
    terminate_on_success: bool = True
    """End the episode (terminated) at the first step whose info reports success."""
    expert: Callable[[gym.Env, Any], np.ndarray] | str | None = None
    """Scripted expert ``expert(raw_env, raw_obs) -> action`` in the env's own action units;
    if the object has ``reset()`` it is called at each episode start."""
    expert_noise: float = 0.0
    """Std of Gaussian noise added to expert actions, in the policy's [-1, 1] units."""
    demo_hold_steps: int = 0
    """Expert demonstrations go on for up to this many steps after the goal is first reached,
    while it holds; those frames get steps-to-go 0 (``goal_step`` in the dataset). With
    demos that stop at the goal, each demo shows the goal state once, and the steps-to-go
    head may never predict d near 0, so no threshold s separates success from near-misses."""
    name: str = ""
    """A label for logs and ``env.goal`` (defaults to env_id or the factory's name)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "phrasings", tuple(self.phrasings))
        object.__setattr__(self, "make_kwargs", dict(self.make_kwargs))
        for name in ("proprio_low", "proprio_high", "action_low", "action_high"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if isinstance(self.proprio, list):
            object.__setattr__(self, "proprio", tuple(self.proprio))
        if (self.env_id is None) == (self.factory is None):
            raise ValueError("GymTaskConfig needs exactly one of env_id (a gymnasium id) or factory "
                             f"(a callable or 'module:function'); got env_id={self.env_id!r}, "
                             f"factory={self.factory!r}")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError("GymTaskConfig.instruction is empty; give the task's goal text, e.g. "
                             "instruction='open the drawer' (the policy is conditioned on it)")
        for text in (self.instruction, *self.phrasings):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"GymTaskConfig.phrasings has an empty or non-str entry: {text!r}")
            bad = sorted(set(text) - set(INSTRUCTION_CHARSET))
            if bad or len(text) > 256:
                raise ValueError(f"instruction {text!r}: use at most 256 letters, digits, spaces and "
                                 f"simple punctuation ({INSTRUCTION_CHARSET[62:]!r}); bad: {bad}")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 512):
            raise ValueError(f"GymTaskConfig.image_size={self.image_size!r}; expected an int 16..512")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"GymTaskConfig.max_steps={self.max_steps!r}; expected an int >= 1")
        if not (isinstance(self.expert_noise, (int, float)) and 0.0 <= self.expert_noise <= 2.0):
            raise ValueError(f"GymTaskConfig.expert_noise={self.expert_noise!r}; expected 0..2 "
                             "(std in [-1, 1] action units)")
        if not (isinstance(self.demo_hold_steps, int) and 0 <= self.demo_hold_steps <= 1000):
            raise ValueError(f"GymTaskConfig.demo_hold_steps={self.demo_hold_steps!r}; expected an int >= 0")
        if (self.proprio_low is None) != (self.proprio_high is None):
            raise ValueError("GymTaskConfig: give both proprio_low and proprio_high, or neither")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("GymTaskConfig: give both action_low and action_high, or neither")
        if self.camera is not None and not isinstance(self.camera, (str, int)):
            raise ValueError(f"GymTaskConfig.camera={self.camera!r}; expected a camera name, an id or None")
        if isinstance(self.proprio, str) and not _is_import_path(self.proprio):
            _parse_slice(self.proprio)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.env_id:
            return self.env_id
        f = self.factory
        return f if isinstance(f, str) else getattr(f, "__qualname__", repr(f))

    @property
    def instructions(self) -> tuple[str, ...]:
        return (self.instruction, *self.phrasings)


def _is_import_path(spec: str) -> bool:
    return spec != "all" and not _SLICE.match(spec)


def _parse_slice(spec: str) -> slice:
    if spec == "all":
        return slice(None)
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        raise ValueError(f"proprio={spec!r}: expected a slice like '0:4', ':7', '3:' or 'all'") from None


def make_raw_env(config: GymTaskConfig) -> gym.Env:
    """Build the environment ``config`` names (before adaptation)."""
    kwargs = dict(config.make_kwargs)
    if config.camera is not None:
        kwargs.setdefault("camera_name" if isinstance(config.camera, str) else "camera_id", config.camera)
    if config.env_id is not None:
        kwargs.setdefault("render_mode", "rgb_array")
        try:
            return gym.make(config.env_id, **kwargs)
        except gym.error.Error as e:
            raise BackendError(f"gymnasium.make({config.env_id!r}, **{kwargs}) failed: {e}") from e
    factory = resolve(config.factory, "GymTaskConfig.factory")
    if not callable(factory):
        raise ValueError(f"GymTaskConfig.factory={config.factory!r} is not callable")
    env = factory(**kwargs)
    if not isinstance(env, gym.Env):
        raise BackendError(f"factory {config.label!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def extract_proprio(config: GymTaskConfig, raw_obs: Any) -> np.ndarray:
    """The proprioception vector ``config`` selects from a raw observation (float32, 1-D)."""
    obs = raw_obs
    if config.proprio_key is not None:
        if not isinstance(obs, Mapping) or config.proprio_key not in obs:
            keys = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise BackendError(f"proprio_key={config.proprio_key!r} not in the observation ({keys})")
        obs = obs[config.proprio_key]
    elif isinstance(obs, Mapping):
        raise BackendError(f"the observation is a dict with keys {sorted(obs)}; set "
                           "GymTaskConfig.proprio_key to the entry holding proprioception")
    spec = config.proprio
    if callable(spec) or (isinstance(spec, str) and _is_import_path(spec)):
        fn = resolve(spec, "GymTaskConfig.proprio")
        vec = np.asarray(fn(obs), dtype=np.float64)
    else:
        arr = np.asarray(obs, dtype=np.float64).reshape(-1)
        if spec is None:
            vec = arr
        elif isinstance(spec, str):
            vec = arr[_parse_slice(spec)]
        else:
            idx = np.asarray(spec, dtype=np.int64)
            if idx.size and (idx.max() >= arr.size or idx.min() < -arr.size):
                raise BackendError(f"proprio indices {list(spec)} out of range for an observation of size {arr.size}")
            vec = arr[idx]
    vec = vec.reshape(-1)
    if vec.size == 0:
        raise BackendError(f"proprio={spec!r} selects nothing from an observation of shape "
                           f"{np.shape(obs)}")
    if config.proprio_low is not None:
        lo, hi = np.asarray(config.proprio_low), np.asarray(config.proprio_high)
        if lo.shape != vec.shape:
            raise BackendError(f"proprio_low/high have {lo.size} entries; proprioception has {vec.size}")
        vec = np.clip(2.0 * (vec - lo) / np.maximum(hi - lo, 1e-12) - 1.0, -1.0, 1.0)
    return vec.astype(np.float32)


def to_uint8_rgb(frame: Any, size: int, who: str = "render()") -> np.ndarray:
    """Validate a rendered frame and bring it to uint8 [size, size, 3]."""
    if frame is None:
        raise BackendError(f"{who} returned None: make the environment with render_mode='rgb_array' "
                           "(or give GymTaskConfig.render_fn)")
    img = np.asarray(frame)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < 1:
        raise BackendError(f"{who} returned an array of shape {img.shape}; expected an RGB frame [H, W, 3]")
    if img.dtype != np.uint8:
        raise BackendError(f"{who} returned dtype {img.dtype}; expected uint8 RGB in 0..255 (convert "
                           "floats with (img * 255).astype(np.uint8) in a render_fn)")
    img = img[:, :, :3]
    if img.shape[:2] != (size, size):
        from PIL import Image

        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(img)


def _bool_success(value: Any) -> bool:
    try:
        return bool(np.asarray(value).item())
    except (ValueError, TypeError):
        raise BackendError(f"info success value {value!r} is not a bool or 0/1 number") from None



__all__ = [
    "INFO_INSTRUCTION", "INFO_STEP", "INSTRUCTION_CHARSET", "GymTaskConfig", "extract_proprio", "make_raw_env",
    "resolve", "to_uint8_rgb",
]
