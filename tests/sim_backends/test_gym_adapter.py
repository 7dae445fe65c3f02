"""The Gymnasium adapter wraps a plain env end to end; the checker names what a broken env lacks."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO, BackendError
from sim_backends.gym_adapter import (
    ActionError, BackendCheckError, GymBackend, GymTaskConfig, check_backend, run_gym_expert_episode,
)
from sim_backends.registry import expert_episode, make_env

ENV_ID = "DojoTestPoint-v0"


class PointEnv(gym.Env):
    """A point on a 2-D plane moves towards a goal disc; success when inside it.

    Actions are velocities in [-0.05, 0.05]^2 (not [-1, 1]: the adapter rescales). The observation
    is (x, y, goal_x, goal_y); the frame (48x32, not square: the adapter resizes) shows both.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array", goal_radius: float = 0.1) -> None:
        self.render_mode = render_mode
        self.goal_radius = goal_radius
        self.action_space = gym.spaces.Box(-0.05, 0.05, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float64)
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal])

    def _success(self) -> bool:
        return bool(np.linalg.norm(self.pos - self.goal) < self.goal_radius)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        return self._obs(), {"success": self._success()}

    def step(self, action):
        self.pos = np.clip(self.pos + np.clip(action, -0.05, 0.05), -1.0, 1.0)
        return self._obs(), float(self._success()), False, False, {"success": self._success()}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        img = np.full((32, 48, 3), 40, np.uint8)
        for p, colour in ((self.goal, (0, 200, 0)), (self.pos, (220, 30, 30))):
            c, r = int((p[0] + 1) / 2 * 47), int((1 - p[1]) / 2 * 31)
            img[max(0, r - 2):r + 3, max(0, c - 2):c + 3] = colour
        return img


def point_expert(raw_env, obs):
    """Head for the goal at full speed (in the env's own action units)."""
    return np.clip(obs[2:] - obs[:2], -0.05, 0.05)


def make_point_env(**kwargs):
    return PointEnv(**kwargs)


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=PointEnv)

CONFIG = dict(factory="tests.sim_backends.test_gym_adapter:make_point_env", instruction="move the dot to the goal",
              phrasings=["go to the green square", "reach the goal"], image_size=32, proprio="0:2",
              max_steps=60, expert="tests.sim_backends.test_gym_adapter:point_expert", expert_noise=0.1,
              name="point")


# ---------------------------------------------------------------------- adapter
def test_adapter_wraps_plain_env_end_to_end():
    env = make_env("gym", CONFIG)
    try:
        assert (env.action_dim, env.proprio_dim, env.image_shape, env.max_steps) == (2, 2, (32, 32, 3), 60)
        obs, info = env.reset(seed=1)
        assert obs[OBS_IMAGE].dtype == np.uint8 and obs[OBS_IMAGE].shape == (32, 32, 3)
        assert obs[OBS_PROPRIO].dtype == np.float32 and obs[OBS_PROPRIO].shape == (2,)
        assert obs[OBS_INSTRUCTION] in ("move the dot to the goal", "go to the green square", "reach the goal")
        assert info[INFO_SUCCESS] is False
        # [-1, 1] -> the env's [-0.05, 0.05]: a full action moves the point 0.05 per axis.
        before = env.raw_env.unwrapped.pos.copy()
        env.step(np.array([1.0, -1.0], np.float32))
        np.testing.assert_allclose(env.raw_env.unwrapped.pos - before, [0.05, -0.05], atol=1e-6)
        np.testing.assert_allclose(env.to_env_action(np.array([0.0, 0.5])), [0.0, 0.025], atol=1e-7)
        np.testing.assert_allclose(env.from_env_action(np.array([0.05, -0.1])), [1.0, -1.0])

        ep = expert_episode("gym", env, 3, np.random.default_rng(0))
        assert set(ep) >= {"images", "proprio", "actions", "infos", "success", "goal", "instruction",
                           "length", "style"}
        assert ep["success"] and ep["infos"][-1][INFO_SUCCESS]
        assert len(ep["images"]) == len(ep["proprio"]) == ep["length"] + 1 == len(ep["actions"]) + 1
        assert all(np.all(np.abs(a) <= 1.0) and a.dtype == np.float32 for a in ep["actions"])
        assert ep["style"] == {"noise": 0.1} and ep["goal"] == "point"
        # Success ends the episode (terminated); stepping on is refused.
        with pytest.raises(BackendError, match="call reset"):
            env.step(np.zeros(2, np.float32))
    finally:
        env.close()


def test_step_limit_truncates_and_bad_actions_raise():
    env = GymBackend(GymTaskConfig(**{**CONFIG, "max_steps": 3}))
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(2,\)"):
        env.step(np.zeros(3))
    with pytest.raises(BackendError, match="not finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError):  # ActionError is also a ValueError, like the tabletop backend's
        env.step("left")
    ends = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    env.close()


def test_same_seed_same_episode_and_phrasing_from_seed():
    env = GymBackend(GymTaskConfig(**CONFIG))
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=7)
        frames = [obs[OBS_IMAGE]]
        for a in np.random.default_rng(1).uniform(-1, 1, (5, 2)):
            frames.append(env.step(a.astype(np.float32))[0][OBS_IMAGE])
        runs.append((obs[OBS_INSTRUCTION], obs[OBS_PROPRIO], np.stack(frames)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    phrasings = {env.reset(seed=s)[0][OBS_INSTRUCTION] for s in range(30)}
    assert len(phrasings) == 3
    env.close()
    canonical = GymBackend(GymTaskConfig(**{**CONFIG, "random_phrasing": False}))
    assert {canonical.reset(seed=s)[0][OBS_INSTRUCTION] for s in range(10)} == {"move the dot to the goal"}
    assert canonical.reset(seed=0, options={"instruction": "custom words"})[0][OBS_INSTRUCTION] == "custom words"
    canonical.close()


def test_gymnasium_id_proprio_normalisation_and_config_is_json():
    cfg = dict(env_id=ENV_ID, instruction="reach the goal", proprio=[0, 1], proprio_low=[-1, -1],
               proprio_high=[1, 3], image_size=16)
    json.dumps(cfg)  # what datasets store
    env = make_env("gym", cfg)
    obs, _ = env.reset(seed=0)
    raw = env.raw_obs
    np.testing.assert_allclose(obs[OBS_PROPRIO], [raw[0], (raw[1] + 1) / 2 - 1], atol=1e-6)
    assert obs[OBS_IMAGE].shape == (16, 16, 3)
    with pytest.raises(BackendError, match="no scripted expert"):
        expert_episode("gym", env, 0, np.random.default_rng(0))
    env.close()


def test_demos_pipeline_writes_episodes(tmp_path):
    from core.learning.dataset import list_episode_files
    from core.learning.demos import generate_demos

    out = generate_demos(tmp_path / "demos", 2, backend="gym", env_config=CONFIG, progress=False)
    assert out["episodes"] == 2 and len(list_episode_files(tmp_path / "demos")) == 2


def test_demos_that_hold_the_goal_label_its_frames_steps_to_go_zero(tmp_path):
    from core.learning.dataset import FrameTable, load_episodes
    from core.learning.demos import generate_demos

    env = make_env("gym", {**CONFIG, "demo_hold_steps": 4, "expert_noise": 0.0})
    try:
        ep = expert_episode("gym", env, 3, np.random.default_rng(0))
        g = ep["goal_step"]
        assert ep["success"] and g is not None and ep["length"] == g + 4
        assert not any(i[INFO_SUCCESS] for i in ep["infos"][:g - 1])  # frames 1..g-1: not yet
        assert all(i[INFO_SUCCESS] for i in ep["infos"][g - 1:])  # frame g on: the goal, held
        env.reset(seed=5)  # the hold is undone: success ends an episode again
        plain = run_gym_expert_episode(env, 3, np.random.default_rng(0), hold_steps=0)
        assert plain["goal_step"] is None and plain["length"] == g
    finally:
        env.close()
    out = tmp_path / "held"
    generate_demos(out, 2, backend="gym", env_config={**CONFIG, "demo_hold_steps": 3}, progress=False)
    _, eps = load_episodes(out)
    table = FrameTable.from_episodes(eps)
    for k, e in enumerate(eps):
        assert e.goal_step is not None and e.length - e.goal_step <= 3
        labels = table.stg[table.episode_id == k]
        assert labels[e.goal_step] == 0 and labels[0] == e.goal_step and (labels[e.goal_step:] == 0).all()


@pytest.mark.parametrize("bad, message", [
    (dict(instruction=""), "instruction is empty"),
    (dict(env_id=ENV_ID), "exactly one of env_id"),
    (dict(proprio="zero to four"), "import path"),
    (dict(proprio="pkg.nope:fn"), "cannot be imported"),
    (dict(image_size=8), "image_size"),
    (dict(demo_hold_steps=-1), "demo_hold_steps"),
    (dict(proprio_low=[0, 0]), "both proprio_low and proprio_high"),
    (dict(instruction="push the <b>"), "bad"),
])
def test_config_errors_are_clear(bad, message):
    with pytest.raises(ValueError, match=message):
        GymBackend(GymTaskConfig(**{**CONFIG, **bad}))


def test_bad_config_key_through_registry():
    with pytest.raises(ValueError, match="bad config for backend 'gym'"):
        make_env("gym", {**CONFIG, "colour": "red"})


# ---------------------------------------------------------------------- checker
class NoRender(PointEnv):
    def __init__(self):
        super().__init__(render_mode=None)


class FloatFrames(PointEnv):
    def render(self):
        return super().render().astype(np.float32) / 255.0


class GreyFrames(PointEnv):
    def render(self):
        return super().render()[:, :, 0]


class BlankFrames(PointEnv):
    def render(self):
        return np.zeros((32, 32, 3), np.uint8)


class NoSuccess(PointEnv):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r, term, trunc, {"distance": 1.0}


class GlobalRng(PointEnv):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = np.random.uniform(-0.8, 0.8, 2)  # ignores the seed
        return self._obs(), {"success": False}


class DiscreteActions(PointEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Discrete(4)


class UnboundedActions(PointEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class OldGymStep(PointEnv):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r, term or trunc, info


class DictObs(PointEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"robot": gym.spaces.Box(-1, 1, (2,)),
                                                  "goal": gym.spaces.Box(-1, 1, (2,))})

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return {"robot": obs[:2], "goal": obs[2:]}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return {"robot": obs[:2], "goal": obs[2:]}, *rest


@pytest.mark.parametrize("env_cls, message", [
    (NoRender, "render_mode is None"),
    (FloatFrames, "dtype float32"),
    (GreyFrames, r"shape \(32, 48\)"),
    (BlankFrames, "blank frame"),
    (NoSuccess, "no 'success' key"),
    (GlobalRng, "different observations on two calls"),
    (DiscreteActions, "not a gymnasium.spaces.Box"),
    (UnboundedActions, "not finite"),
    (OldGymStep, "old gym's 4-tuple"),
    (DictObs, "proprio_key"),
])
def test_checker_names_what_is_wrong(env_cls, message):
    env = env_cls()
    with pytest.raises(BackendCheckError, match=message) as err:
        check_backend(env)
    assert not err.value.report.ok
    report = check_backend(env_cls(), raise_error=False)
    assert any(message.replace("\\", "") in e for e in report.errors), report


def test_checker_passes_good_envs_and_fixes_through_config():
    report = check_backend(PointEnv())
    assert report.ok and len(report.passed) >= 6, report
    assert report.warnings == ["render() frames are 48x32; they are resized to a square (aspect changes)"]
    assert check_backend(UnboundedActions(), {"action_low": [-0.05, -0.05], "action_high": [0.05, 0.05]}).ok
    assert check_backend(NoSuccess(), {"success_key": "distance"}).ok
    assert check_backend(DictObs(), {"proprio_key": "robot"}).ok
    assert check_backend(GymBackend(GymTaskConfig(**CONFIG))).ok


def test_checker_catches_a_backend_that_accepts_nan():
    class Lenient(GymBackend):
        def _check_action(self, action):
            return np.nan_to_num(np.asarray(action, np.float64).reshape(-1)[:2])

    report = check_backend(Lenient(GymTaskConfig(**CONFIG)), raise_error=False)
    assert any("NaN action was accepted silently" in e for e in report.errors)


def test_checker_accepts_the_tabletop_backend():
    env = make_env("tabletop", {"image_size": 32})
    try:
        assert check_backend(env, n_steps=3).ok
    finally:
        env.close()
