"""The Gymnasium adapter itself: :class:`GymBackend` wraps one Gymnasium environment as a
Dojo backend as its :class:`~sim_backends.gym_spec.GymTaskConfig` says, and
:func:`run_gym_expert_episode` records a scripted expert's demonstration on it. Import
them from ``sim_backends.gym_adapter`` (module docstring there)."""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from sim_backends.base import (
    INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO, BackendError,
)
from sim_backends.gym_spec import (
    INFO_INSTRUCTION, INFO_STEP, INSTRUCTION_CHARSET, GymTaskConfig, _bool_success, extract_proprio, make_raw_env,
    resolve, to_uint8_rgb,
)


class ActionError(BackendError, ValueError):
    """A bad action (wrong shape, NaN). Also a ValueError, as the tabletop backend raises."""



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


__all__ = ["ActionError", "GymBackend", "run_gym_expert_episode"]
