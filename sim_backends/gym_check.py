"""The backend checker: :func:`check_backend` says exactly what a Gymnasium environment (or
an existing Dojo backend) lacks to serve as a Dojo backend. Import it from
``sim_backends.gym_adapter`` (module docstring there)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO, BackendError
from sim_backends.gym_backend import GymBackend
from sim_backends.gym_spec import GymTaskConfig, _bool_success, extract_proprio, resolve


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
    if not _check_raw_interface(env, config, report):
        return False
    first = _check_raw_reset(env, config, report, seed)
    if first is None:
        return False
    obs0, frame0, render_fn = first
    space = env.action_space
    rng = np.random.default_rng(seed)
    actions = [space.sample() if np.all(np.isfinite(space.low)) else rng.normal(size=space.shape).astype(space.dtype)
               for _ in range(n_steps)]
    trace = _check_raw_steps(env, config, report, actions)
    if trace is None:
        return False
    _check_raw_determinism(env, report, seed, actions, obs0, frame0, trace, render_fn)
    return not report.errors


def _check_raw_interface(env: Any, config: GymTaskConfig, report: CheckReport) -> bool:
    """A gymnasium.Env with a finite 1-D Box action space that renders RGB frames."""
    E, P = report.errors.append, report.passed.append
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
    return not report.errors


def _check_raw_reset(env: Any, config: GymTaskConfig, report: CheckReport, seed: int
                     ) -> tuple[Any, Any, Any] | None:
    """reset(seed) and the first observation's proprioception and frame: (obs0, frame0,
    render_fn), or None when the env cannot be stepped further."""
    E, W, P = report.errors.append, report.warnings.append, report.passed.append
    try:
        out = env.reset(seed=seed)
    except Exception as e:  # noqa: BLE001
        E(f"reset(seed={seed}) raised {type(e).__name__}: {e}")
        return None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        E(f"reset(seed=...) returned {type(out).__name__}; the Gymnasium API returns (obs, info: dict)")
        return None
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
    return obs0, frame0, render_fn


def _check_raw_steps(env: Any, config: GymTaskConfig, report: CheckReport, actions: list[Any]
                     ) -> list[Any] | None:
    """Step ``actions`` (until the episode ends): the Gymnasium step API, the success key in
    info, a scalar reward. The observations, or None when stepping failed."""
    E, P = report.errors.append, report.passed.append
    trace: list[Any] = []
    for i, a in enumerate(actions):
        try:
            out = env.step(a)
        except Exception as e:  # noqa: BLE001
            E(f"step({a!r}) raised {type(e).__name__}: {e}")
            return None
        if not (isinstance(out, tuple) and len(out) == 5):
            E(f"step() returned {len(out) if isinstance(out, tuple) else type(out).__name__} items; the "
              "Gymnasium API returns (obs, reward, terminated, truncated, info) (old gym's 4-tuple is not supported)")
            return None
        o, r, term, trunc, info = out
        trace.append(o)
        if i == 0:
            if not isinstance(info, Mapping):
                E(f"step() info is {type(info).__name__}, not a dict")
                return None
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
    return trace


def _check_raw_determinism(env: Any, report: CheckReport, seed: int, actions: list[Any], obs0: Any, frame0: Any,
                           trace: list[Any], render_fn: Any) -> None:
    """The same seed and actions must give the same observations and frames; another seed
    should start another situation."""
    E, W, P = report.errors.append, report.warnings.append, report.passed.append
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


__all__ = ["BackendCheckError", "CheckReport", "check_backend"]
