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
"""
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

from sim_backends.base import (  # noqa: E402
    INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO, BackendError,
)

INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-!?()/:;"
INFO_STEP = "step"
INFO_INSTRUCTION = "instruction"

_SLICE = re.compile(r"^\s*-?\d*\s*:\s*-?\d*\s*(:\s*-?\d*\s*)?$")


class ActionError(BackendError, ValueError):
    """A bad action (wrong shape, NaN). Also a ValueError, as the tabletop backend raises."""


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


class GymBackend(gym.Env):
    """A Gymnasium environment adapted to Dojo's backend protocol (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: GymTaskConfig, raw_env: gym.Env | None = None) -> None:
        self.config = config
        self._terminate_on_success = config.terminate_on_success  # off while a demo holds the goal
        self.render_mode = "rgb_array"
        self.raw_env = raw_env if raw_env is not None else make_raw_env(config)
        self._render_fn = resolve(config.render_fn, "GymTaskConfig.render_fn")
        self._expert = resolve(config.expert, "GymTaskConfig.expert")
        space = self.raw_env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise BackendError(f"{config.label}: action space is {space}; Dojo needs a continuous "
                               "gymnasium.spaces.Box (policies emit vectors in [-1, 1]^A)")
        if len(space.shape) != 1:
            raise BackendError(f"{config.label}: action space shape {space.shape}; expected a 1-D Box")
        low = np.asarray(config.action_low if config.action_low is not None else space.low, np.float64)
        high = np.asarray(config.action_high if config.action_high is not None else space.high, np.float64)
        if low.shape != space.shape or high.shape != space.shape:
            raise BackendError(f"action_low/high have shape {low.shape}; the action space has {space.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise BackendError(f"{config.label}: action bounds are not finite (low={low}, high={high}); "
                               "give GymTaskConfig.action_low/action_high to rescale [-1, 1] into")
        if np.any(high <= low):
            raise BackendError(f"{config.label}: action bounds are empty (low={low}, high={high})")
        self._act_low, self._act_high = low, high
        self._act_dtype = space.dtype if np.issubdtype(space.dtype, np.floating) else np.float32
        self.action_dim = int(space.shape[0])
        probe = self.raw_env.observation_space.sample() if self.raw_env.observation_space is not None else None
        self.proprio_dim = int(extract_proprio(config, probe).shape[0]) if probe is not None else 0
        self.max_steps = config.max_steps
        s = config.image_size
        self.image_shape = (s, s, 3)
        self.observation_space = gym.spaces.Dict({
            OBS_IMAGE: gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
            OBS_PROPRIO: gym.spaces.Box(-np.inf, np.inf, (self.proprio_dim,), np.float32),
            OBS_INSTRUCTION: gym.spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.episode_id = 0
        self._step = 0
        self._done = True
        self._started = False
        self._instruction = config.instruction
        self._raw_obs: Any = None
        self._last_obs: dict[str, Any] | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        instruction = options.pop("instruction", None)
        raw_options = options.pop("env_options", None)
        if options:
            raise BackendError(f"unknown reset options {sorted(options)}; known: instruction, env_options")
        out = self.raw_env.reset(seed=seed, options=raw_options)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise BackendError(f"{self.config.label}: reset() must return (obs, info) (Gymnasium API); "
                               f"got {type(out).__name__}")
        raw_obs, raw_info = out
        if instruction is None:
            choices = self.config.instructions
            instruction = (choices[int(self.np_random.integers(len(choices)))]
                           if self.config.random_phrasing and len(choices) > 1 else choices[0])
        self._instruction = str(instruction)
        self.episode_id += 1
        self._step, self._done, self._started = 0, False, True
        self._raw_obs = raw_obs
        if self._expert is not None and hasattr(self._expert, "reset"):
            self._expert.reset()
        obs = self._observe(raw_obs)
        info = self._info(raw_info, success=_bool_success(raw_info.get(self.config.success_key, False))
                          if isinstance(raw_info, Mapping) else False)
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self._started or self._done:
            raise BackendError("step() called before reset() or after the episode ended; call reset()")
        a = self._check_action(action)
        out = self.raw_env.step(self.to_env_action(a))
        if not (isinstance(out, tuple) and len(out) == 5):
            raise BackendError(f"{self.config.label}: step() must return (obs, reward, terminated, "
                               f"truncated, info) (Gymnasium API); got {len(out) if isinstance(out, tuple) else type(out).__name__} items")
        raw_obs, reward, raw_term, raw_trunc, raw_info = out
        self._step += 1
        self._raw_obs = raw_obs
        if not isinstance(raw_info, Mapping):
            raise BackendError(f"{self.config.label}: step() info is {type(raw_info).__name__}, not a dict")
        success = _bool_success(raw_info.get(self.config.success_key, False))
        physics_error = bool(raw_info.get(INFO_PHYSICS_ERROR, False)) or not _all_finite(raw_obs)
        if physics_error and self._last_obs is not None:
            obs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._last_obs.items()}
            success = False
        else:
            obs = self._observe(raw_obs)
        terminated = bool(raw_term or physics_error or (success and self._terminate_on_success))
        truncated = bool(not terminated and (raw_trunc or self._step >= self.max_steps))
        self._done = terminated or truncated
        info = self._info(raw_info, success=success, physics_error=physics_error)
        return obs, float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        frame = self._render_fn(self.raw_env) if self._render_fn is not None else self.raw_env.render()
        return to_uint8_rgb(frame, self.config.image_size,
                            "render_fn" if self._render_fn is not None else f"{self.config.label}.render()")

    def close(self) -> None:
        raw = getattr(self, "raw_env", None)
        if raw is not None:
            raw.close()
            self.raw_env = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - GL may already be gone at interpreter exit
            pass

    def __enter__(self) -> GymBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def instruction(self) -> str:
        if not self._started:
            raise BackendError("no episode yet; call reset()")
        return self._instruction

    @property
    def goal(self) -> Any:
        """What the episode is about (the task label); datasets keep the instruction itself."""
        return self.config.label

    @property
    def step_count(self) -> int:
        return self._step

    @property
    def raw_obs(self) -> Any:
        """The wrapped environment's latest observation (for scripted experts, not policies)."""
        return self._raw_obs

    @property
    def has_expert(self) -> bool:
        return self._expert is not None

    def to_env_action(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1]^A -> the environment's Box(low, high)."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return (self._act_low + (a + 1.0) * 0.5 * (self._act_high - self._act_low)).astype(self._act_dtype)

    def from_env_action(self, env_action: Any) -> np.ndarray:
        """The environment's action units -> [-1, 1]^A (clipped)."""
        e = np.asarray(env_action, np.float64).reshape(-1)
        a = 2.0 * (e - self._act_low) / (self._act_high - self._act_low) - 1.0
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def expert_action(self, rng: np.random.Generator, noise: float | None = None) -> np.ndarray:
        """The scripted expert's next action in [-1, 1]^A, with Gaussian noise (config default)."""
        if self._expert is None:
            raise BackendError(f"{self.config.label} has no scripted expert; set GymTaskConfig.expert")
        if not self._started:
            raise BackendError("no episode yet; call reset()")
        a = self.from_env_action(self._expert(self.raw_env, self._raw_obs))
        if a.shape != (self.action_dim,):
            raise BackendError(f"expert returned {a.shape[0]} action values; the env takes {self.action_dim}")
        sigma = self.config.expert_noise if noise is None else float(noise)
        if sigma > 0:
            a = a + rng.normal(0.0, sigma, size=a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ internals
    def _check_action(self, action: Any) -> np.ndarray:
        shape = f"({self.action_dim},)"
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ActionError(f"action must be a float array of shape {shape} in [-1, 1]; got {action!r}") from e
        if a.shape != (self.action_dim,):
            raise ActionError(f"action has shape {a.shape}; {self.config.label} expects shape {shape} "
                              "with values in [-1, 1]")
        if not np.all(np.isfinite(a)):
            raise ActionError(f"action {a.tolist()} is not finite; expected shape {shape} with finite "
                              "values in [-1, 1]")
        return np.clip(a, -1.0, 1.0)

    def _observe(self, raw_obs: Any) -> dict[str, Any]:
        obs = {OBS_IMAGE: self.render(), OBS_PROPRIO: extract_proprio(self.config, raw_obs),
               OBS_INSTRUCTION: self._instruction}
        self._last_obs = obs
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}

    def _info(self, raw_info: Any, *, success: bool, physics_error: bool = False) -> dict[str, Any]:
        info = dict(raw_info) if isinstance(raw_info, Mapping) else {}
        info[INFO_SUCCESS] = bool(success)
        info[INFO_PHYSICS_ERROR] = bool(physics_error)
        info[INFO_STEP] = self._step
        info[INFO_INSTRUCTION] = self._instruction
        return info


def _all_finite(obs: Any) -> bool:
    if isinstance(obs, Mapping):
        return all(_all_finite(v) for v in obs.values())
    try:
        arr = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError):
        return True
    return bool(np.all(np.isfinite(arr)))


def run_gym_expert_episode(env: GymBackend, seed: int, rng: np.random.Generator, noise: float | None = None,
                           options: dict[str, Any] | None = None, hold_steps: int | None = None) -> dict[str, Any]:
    """One noisy expert demonstration, in the format of ``tabletop.run_expert_episode``:
    T+1 observations (images, proprio), T actions (in [-1, 1]) and infos.

    ``hold_steps`` (default ``config.demo_hold_steps``): after the goal is first reached
    (``goal_step``, a frame index) the expert goes on for up to that many steps while
    success holds; a step that loses it is dropped and ends the episode."""
    if not env.has_expert:
        raise BackendError(f"{env.config.label} has no scripted expert; set GymTaskConfig.expert")
    sigma = env.config.expert_noise if noise is None else float(noise)
    hold = env.config.demo_hold_steps if hold_steps is None else int(hold_steps)
    obs, info = env.reset(seed=seed, options=options)
    images, proprio, actions, infos = [obs[OBS_IMAGE]], [obs[OBS_PROPRIO]], [], []
    # Backends that can say where the goal's objects are in the image (goal_keypoints())
    # get them stored as the optional keypoint label, as the tabletop does.
    kp_fn = getattr(env, "goal_keypoints", None)
    keypoints = [kp_fn()] if callable(kp_fn) else None
    goal_step = None
    env._terminate_on_success = env.config.terminate_on_success and hold == 0
    try:
        while goal_step is None or len(actions) - goal_step < hold:
            action = env.expert_action(rng, sigma)
            obs, _, terminated, truncated, info = env.step(action)
            if goal_step is not None and not info[INFO_SUCCESS]:
                break  # the goal no longer holds: not a goal frame
            images.append(obs[OBS_IMAGE])
            proprio.append(obs[OBS_PROPRIO])
            if keypoints is not None:
                keypoints.append(kp_fn())
            actions.append(action)
            infos.append(info)
            if goal_step is None and info[INFO_SUCCESS]:
                goal_step = len(actions)
            if terminated or truncated:
                break
    finally:
        env._terminate_on_success = env.config.terminate_on_success
    success = goal_step is not None
    return {
        "images": images, "proprio": proprio, "actions": actions, "infos": infos,
        "success": success, "goal": env.goal, "instruction": obs[OBS_INSTRUCTION],
        "length": len(actions), "style": {"noise": sigma}, "keypoints": keypoints,
        "goal_step": goal_step if success and goal_step < len(actions) else None,
    }


# ---------------------------------------------------------------------- checker
@dataclass
class CheckReport:
    """What :func:`check_backend` found: ``errors`` must be fixed, ``warnings`` should be read."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        lines = [f"backend check: {len(self.errors)} error(s), {len(self.warnings)} warning(s), "
                 f"{len(self.passed)} check(s) passed"]
        lines += [f"  ERROR: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class BackendCheckError(BackendError):
    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _is_dojo_backend(env: Any) -> bool:
    return isinstance(env, GymBackend) or all(
        hasattr(env, a) for a in ("action_dim", "proprio_dim", "image_shape", "max_steps"))


def check_backend(env: Any, config: GymTaskConfig | Mapping[str, Any] | None = None, *, seed: int = 0,
                  n_steps: int = 5, raise_error: bool = True) -> CheckReport:
    """Check that ``env`` can serve as a Dojo backend; say exactly what is missing or wrong.

    ``env`` is either a plain Gymnasium environment you want to adapt (then ``config`` says
    how: success key, proprio slice, render function ...; a placeholder instruction is used
    if it has none), or an existing Dojo backend (``GymBackend``, tabletop, Meta-World ...),
    which is checked against the protocol in ``sim_backends.base``. A plain env that passes
    is also wrapped and checked as a backend. Raises :class:`BackendCheckError` listing every
    error when ``raise_error`` (the default); returns the :class:`CheckReport` otherwise.
    The environment is reset and stepped (with random actions); close it afterwards.
    """
    report = CheckReport()
    if isinstance(config, Mapping):
        config = dict(config)
        config.setdefault("instruction", "check")
        if "env_id" not in config and "factory" not in config:
            config["factory"] = lambda: env
        config = GymTaskConfig(**config)
    if _is_dojo_backend(env):
        _check_dojo(env, report, seed, n_steps)
    else:
        if config is None:
            config = GymTaskConfig(factory=lambda: env, instruction="check")
        if _check_raw(env, config, report, seed, n_steps):
            try:
                backend = GymBackend(config, raw_env=env)
            except Exception as e:  # noqa: BLE001 - reported, not raised
                report.errors.append(f"GymBackend(config) fails on this env: {type(e).__name__}: {e}")
            else:
                _check_dojo(backend, report, seed, n_steps)
    if raise_error and report.errors:
        raise BackendCheckError(report)
    return report


def _check_raw(env: Any, config: GymTaskConfig, report: CheckReport, seed: int, n_steps: int) -> bool:
    """Checks on a plain Gymnasium env; True when it is sound enough to wrap."""
    E, W, P = report.errors.append, report.warnings.append, report.passed.append
    name = type(getattr(env, "unwrapped", env)).__name__
    if not isinstance(env, gym.Env):
        E(f"{name} is not a gymnasium.Env (subclass gymnasium.Env, implement reset/step/render)")
        return False
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        E(f"action space is {space!r}, not a gymnasium.spaces.Box: Dojo policies emit continuous "
          "vectors in [-1, 1]^A; give the env a Box action space (e.g. wrap a Discrete one)")
    elif len(space.shape) != 1:
        E(f"action space has shape {space.shape}; Dojo needs a 1-D Box (flatten it in a wrapper)")
    else:
        low = np.asarray(config.action_low if config.action_low is not None else space.low)
        high = np.asarray(config.action_high if config.action_high is not None else space.high)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            E(f"action space bounds are not finite (low={space.low}, high={space.high}); the adapter "
              "rescales [-1, 1] into them: set GymTaskConfig.action_low/action_high")
        else:
            P("action space is a finite 1-D Box")
    if config.render_fn is None and getattr(env, "render_mode", None) != "rgb_array":
        E(f"render_mode is {getattr(env, 'render_mode', None)!r}; make the env with render_mode='rgb_array' "
          "(gymnasium.make(id, render_mode='rgb_array')) or give GymTaskConfig.render_fn")
    if report.errors:
        return False
    try:
        out = env.reset(seed=seed)
    except Exception as e:  # noqa: BLE001
        E(f"reset(seed={seed}) raised {type(e).__name__}: {e}")
        return False
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        E(f"reset(seed=...) returned {type(out).__name__}; the Gymnasium API returns (obs, info: dict)")
        return False
    obs0, info0 = out
    try:
        extract_proprio(config, obs0)
        P("proprioception extracted")
    except Exception as e:  # noqa: BLE001
        E(f"proprioception: {e}")
    render_fn = resolve(config.render_fn, "render_fn")
    try:
        frame0 = render_fn(env) if render_fn is not None else env.render()
    except Exception as e:  # noqa: BLE001
        E(f"render() raised {type(e).__name__}: {e} (headless machines need MUJOCO_GL=egl or osmesa)")
        frame0 = None
    else:
        frame0 = _check_frame(frame0, report, "render()" if render_fn is None else "render_fn")
    if config.success_key not in info0:
        W(f"info from reset() has no {config.success_key!r} (keys {sorted(info0)}); success is taken "
          "as False at reset")
    rng = np.random.default_rng(seed)
    actions = [space.sample() if np.all(np.isfinite(space.low)) else rng.normal(size=space.shape).astype(space.dtype)
               for _ in range(n_steps)]
    trace: list[Any] = []
    for i, a in enumerate(actions):
        try:
            out = env.step(a)
        except Exception as e:  # noqa: BLE001
            E(f"step({a!r}) raised {type(e).__name__}: {e}")
            return False
        if not (isinstance(out, tuple) and len(out) == 5):
            E(f"step() returned {len(out) if isinstance(out, tuple) else type(out).__name__} items; the "
              "Gymnasium API returns (obs, reward, terminated, truncated, info) (old gym's 4-tuple is not supported)")
            return False
        o, r, term, trunc, info = out
        trace.append(o)
        if i == 0:
            if not isinstance(info, Mapping):
                E(f"step() info is {type(info).__name__}, not a dict")
                return False
            if config.success_key not in info:
                E(f"step() info has no {config.success_key!r} key (keys: {sorted(info)}): Dojo needs "
                  "ground-truth success; set GymTaskConfig.success_key to the key your env uses "
                  "(e.g. 'is_success') or add info['success'] in a wrapper")
            else:
                try:
                    _bool_success(info[config.success_key])
                    P("success key present in step() info")
                except BackendError as e:
                    E(f"info[{config.success_key!r}]: {e}")
            if not np.isscalar(r) and np.asarray(r).shape != ():
                E(f"step() reward is {type(r).__name__} {np.shape(r)}; expected a scalar")
        if term or trunc:
            break
    # Determinism: the same seed and actions must give the same observations and frames.
    try:
        obs1, _ = env.reset(seed=seed)
        frame1 = render_fn(env) if render_fn is not None else env.render()
        trace1 = []
        for a in actions[:len(trace)]:
            trace1.append(env.step(a)[0])
        if not _same(obs0, obs1):
            E(f"reset(seed={seed}) gave different observations on two calls: the env ignores the seed "
              "or draws from a global RNG (np.random, random); use self.np_random from "
              "super().reset(seed=seed)")
        elif frame0 is not None and not _same(np.asarray(frame0), np.asarray(frame1)):
            E(f"reset(seed={seed}) gave the same observation but a different rendered frame twice")
        elif not _same(trace, trace1):
            E(f"the same seed and the same actions gave different observations after reset(seed={seed}): "
              "stepping is not deterministic (state left over from the previous episode?)")
        else:
            P("reset(seed) and step are deterministic")
        obs2, _ = env.reset(seed=seed + 1)
        if _same(obs0, obs2):
            W(f"reset(seed={seed}) and reset(seed={seed + 1}) start identically: no variation between "
              "episodes, so practice sees one situation only")
    except Exception as e:  # noqa: BLE001
        E(f"determinism check failed with {type(e).__name__}: {e}")
    return not report.errors


def _check_frame(frame: Any, report: CheckReport, who: str) -> Any:
    E, W, P = report.errors.append, report.warnings.append, report.passed.append
    if frame is None:
        E(f"{who} returned None: no RGB rendering (make the env with render_mode='rgb_array')")
        return None
    img = np.asarray(frame)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        E(f"{who} returned shape {img.shape}; expected an RGB frame [H, W, 3]")
        return None
    if img.shape[2] == 4:
        W(f"{who} returns RGBA; the alpha channel is dropped")
    if img.dtype != np.uint8:
        E(f"{who} returned dtype {img.dtype}; expected uint8 in 0..255")
        return None
    if int(img[:, :, :3].max()) == int(img[:, :, :3].min()):
        E(f"{who} returned a blank frame (every pixel {img.reshape(-1, img.shape[2])[0].tolist()}): the "
          "camera sees nothing, or offscreen GL is not working (MUJOCO_GL=egl/osmesa)")
        return frame
    if img.shape[0] != img.shape[1]:
        W(f"{who} frames are {img.shape[1]}x{img.shape[0]}; they are resized to a square (aspect changes)")
    P(f"{who} gives uint8 RGB frames")
    return frame


def _check_dojo(env: Any, report: CheckReport, seed: int, n_steps: int) -> None:
    """Checks of the Dojo backend protocol (``sim_backends.base``)."""
    E, P = report.errors.append, report.passed.append
    for attr, typ in (("action_dim", int), ("proprio_dim", int), ("max_steps", int), ("image_shape", tuple)):
        v = getattr(env, attr, None)
        if not isinstance(v, typ):
            E(f"backend attribute {attr} is {v!r}; expected {typ.__name__}")
    if report.errors:
        return
    if tuple(env.image_shape)[2:] != (3,) or len(env.image_shape) != 3:
        E(f"image_shape {env.image_shape}; expected (H, W, 3)")

    def check_obs(obs: Any, when: str) -> bool:
        if not isinstance(obs, Mapping) or not {OBS_IMAGE, OBS_PROPRIO, OBS_INSTRUCTION} <= set(obs):
            E(f"{when}: observation must be a dict with keys {OBS_IMAGE!r}, {OBS_PROPRIO!r}, "
              f"{OBS_INSTRUCTION!r}; got {sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__}")
            return False
        img, prop, text = obs[OBS_IMAGE], obs[OBS_PROPRIO], obs[OBS_INSTRUCTION]
        ok = True
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != tuple(env.image_shape):
            E(f"{when}: obs[{OBS_IMAGE!r}] is {getattr(img, 'dtype', type(img).__name__)} "
              f"{getattr(img, 'shape', '')}; expected uint8 {tuple(env.image_shape)}")
            ok = False
        elif int(img.max()) == int(img.min()):
            E(f"{when}: obs[{OBS_IMAGE!r}] is blank (one colour): camera or offscreen GL problem")
            ok = False
        if (not isinstance(prop, np.ndarray) or prop.dtype != np.float32 or prop.shape != (env.proprio_dim,)
                or not np.all(np.isfinite(prop))):
            E(f"{when}: obs[{OBS_PROPRIO!r}] is {getattr(prop, 'dtype', type(prop).__name__)} "
              f"{getattr(prop, 'shape', '')}; expected finite float32 ({env.proprio_dim},)")
            ok = False
        if not isinstance(text, str) or not text.strip():
            E(f"{when}: obs[{OBS_INSTRUCTION!r}] is {text!r}; expected a non-empty instruction string")
            ok = False
        return ok

    try:
        obs0, info0 = env.reset(seed=seed)
    except Exception as e:  # noqa: BLE001
        E(f"reset(seed={seed}) raised {type(e).__name__}: {e}")
        return
    if not check_obs(obs0, "reset"):
        return
    if not isinstance(info0, Mapping) or INFO_SUCCESS not in info0:
        E(f"reset() info must be a dict with {INFO_SUCCESS!r}; got {info0!r:.200}")
    rng = np.random.default_rng(seed)
    actions = [rng.uniform(-1, 1, env.action_dim).astype(np.float32) for _ in range(n_steps)]
    trace = []
    for a in actions:
        try:
            obs, r, term, trunc, info = env.step(a)
        except Exception as e:  # noqa: BLE001
            E(f"step(action in [-1, 1]^{env.action_dim}) raised {type(e).__name__}: {e}")
            return
        trace.append(obs)
        if not check_obs(obs, "step"):
            return
        if not isinstance(info, Mapping) or not isinstance(info.get(INFO_SUCCESS), (bool, np.bool_)):
            E(f"step() info[{INFO_SUCCESS!r}] must be a bool; got "
              f"{info.get(INFO_SUCCESS) if isinstance(info, Mapping) else info!r}")
            return
        if term or trunc:
            break
    P("observations and info follow the protocol")
    obs1, _ = env.reset(seed=seed)
    same = _same(obs0, obs1)
    for a, o in zip(actions, trace):
        if not same:
            break
        same = _same(env.step(a)[0], o)
    if not same:
        E(f"two episodes with reset(seed={seed}) and the same actions differ (image, proprio or "
          "instruction): the backend is not deterministic for a seed")
    else:
        P("deterministic for a seed")
    for bad, what in ((np.full(env.action_dim, np.nan, np.float32), "a NaN action"),
                      (np.zeros(env.action_dim + 1, np.float32), "an action of the wrong shape")):
        env.reset(seed=seed)
        try:
            env.step(bad)
        except (BackendError, ValueError):
            P(f"{what} is refused")
        except Exception as e:  # noqa: BLE001
            E(f"{what} raised {type(e).__name__} ({e}); raise sim_backends.base.BackendError with a "
              "clear message instead")
        else:
            E(f"{what} was accepted silently; raise sim_backends.base.BackendError with a clear message")


__all__ = [
    "ActionError", "BackendCheckError", "CheckReport", "GymBackend", "GymTaskConfig", "check_backend",
    "extract_proprio", "make_raw_env", "resolve", "run_gym_expert_episode", "to_uint8_rgb",
]
