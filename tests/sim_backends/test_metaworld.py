"""Meta-World backend: every task builds, renders upright and runs its expert; seeds fix episodes."""
from __future__ import annotations

import numpy as np
import pytest

# Imported before metaworld: it picks headless rendering (MUJOCO_GL) before mujoco loads.
from sim_backends.metaworld_backend import (
    INSTRUCTIONS, MAX_STEPS, MT10, TASK_NAMES, MetaWorldConfig, MetaWorldEnv, MetaWorldRaw, expert_policy,
    resolve_tasks,
)
from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO
from sim_backends.gym_adapter import check_backend
from sim_backends.registry import expert_episode, make_env

def test_task_table_matches_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert set(TASK_NAMES) == set(ALL_V3_ENVIRONMENTS) and len(TASK_NAMES) == 50
    assert set(MT10) == set(MT10_V3)
    assert set(MAX_STEPS) == set(TASK_NAMES)
    texts = [t for phr in INSTRUCTIONS.values() for t in phr]
    assert len(texts) == len(set(texts)), "an instruction text names two tasks"
    assert all(len(p) >= 3 for p in INSTRUCTIONS.values())
    for task in TASK_NAMES:
        assert expert_policy(task) is not None
    assert resolve_tasks("MT10") == MT10 and resolve_tasks("push-v3, reach-v3") == ("push-v3", "reach-v3")


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown Meta-World task 'push-v2' \(Meta-World 3 renamed it 'push-v3'\)"
                                         r".*assembly-v3, basketball-v3"):
        make_env("metaworld", {"task": "push-v2"})
    with pytest.raises(ValueError, match="did you mean 'reach-v3'"):
        MetaWorldConfig(task="reach")
    with pytest.raises(ValueError, match="camera"):
        MetaWorldConfig(task="reach-v3", camera="nope")


def _build_render_expert(task: str, steps: int = 5) -> None:
    env = make_env("metaworld", {"task": task, "image_size": 64})
    try:
        assert (env.action_dim, env.proprio_dim, env.image_shape) == (4, 4, (64, 64, 3))
        assert env.max_steps == MAX_STEPS[task]
        obs, info = env.reset(seed=0)
        img = obs[OBS_IMAGE]
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
        assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50, f"{task}: frame looks blank"
        assert obs[OBS_INSTRUCTION] in INSTRUCTIONS[task]
        assert obs[OBS_PROPRIO].dtype == np.float32 and np.all(np.abs(obs[OBS_PROPRIO]) <= 1)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            a = env.expert_action(rng)
            assert a.shape == (4,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
            obs, _, term, trunc, info = env.step(a)
            assert isinstance(info[INFO_SUCCESS], bool) and not trunc
    finally:
        env.close()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_builds_renders_and_runs_expert(task):
    """About 0.5-1 s a task (building the MuJoCo model dominates); 50 tasks in well under a minute."""
    _build_render_expert(task)


def test_seed_fixes_the_episode():
    env = MetaWorldEnv(MetaWorldConfig(task="pick-place-v3", image_size=32))
    try:
        runs = []
        for seed in (5, 6, 5):
            obs, _ = env.reset(seed=seed)
            goal = env.privileged_state()["goal"]
            rng = np.random.default_rng(0)
            frames, props = [obs[OBS_IMAGE]], [obs[OBS_PROPRIO]]
            for _ in range(8):
                obs = env.step(env.expert_action(rng))[0]
                frames.append(obs[OBS_IMAGE])
                props.append(obs[OBS_PROPRIO])
            runs.append((obs[OBS_INSTRUCTION], goal, np.stack(frames), np.stack(props)))
        (i5, g5, f5, p5), (_, g6, _, _), (i5b, g5b, f5b, p5b) = runs
        assert i5 == i5b
        np.testing.assert_array_equal(g5, g5b)
        np.testing.assert_array_equal(f5, f5b)
        np.testing.assert_array_equal(p5, p5b)
        assert not np.allclose(g5, g6), "different seeds should draw different goals"
        assert check_backend(env, n_steps=3).ok
    finally:
        env.close()


def _wood_fraction(img: np.ndarray) -> tuple[float, float]:
    f = img.astype(int)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    wood = (r > g + 15) & (g > b + 5) & (r > 60) & (r < 200)
    h = img.shape[0] // 2
    return float(wood[:h].mean()), float(wood[h:].mean())


@pytest.mark.parametrize("camera", ["corner", "corner4"])
def test_frames_are_upright(camera):
    """The wooden table is in the lower half of the frame; Meta-World's raw corner cameras show it on top."""
    for task in ("door-open-v3",):
        for upright, table_low in ((None, True), (False, False)):
            raw = MetaWorldRaw(task, 64, camera, upright=upright)
            raw.reset(seed=0)
            top, bottom = _wood_fraction(raw.render())
            raw.close()
            assert (bottom > top) == table_low, (task, camera, upright, top, bottom)
    topview = MetaWorldRaw("push-v3", 32, "topview")
    assert topview.upright_flip is False
    topview.close()


@pytest.mark.parametrize("camera", ["corner", "corner4"])
def test_goal_keypoints_land_on_the_object_in_the_image(camera):
    """The projected puck position is a puck pixel (dark red, no green), upright or not."""
    raw = MetaWorldRaw("push-v3", 128, camera)
    try:
        raw.reset(seed=3)
        img = raw.render().astype(int)
        obj = np.asarray(raw.env.unwrapped._get_pos_objects()).reshape(-1)[:3]
        (u, v), _goal = raw.project(np.stack([obj, raw.target_pos]))
        x, y = int((u + 1) / 2 * 128), int((v + 1) / 2 * 128)
        r, g, _b = img[y, x]
        assert r > 70 and g < 30, (camera, (x, y), img[y, x])
        # a point 10 cm away along the table is elsewhere in the image
        far = raw.project((obj + [0.1, 0.0, 0.0])[None])[0]
        assert np.abs(far - (u, v)).max() > 0.05
    finally:
        raw.close()


def test_expert_demo_succeeds_and_holds_the_goal_a_few_steps():
    env = make_env("metaworld", {"task": "reach-v3", "image_size": 32})
    try:
        ep = expert_episode("metaworld", env, 0, np.random.default_rng(0))
        g = ep["goal_step"]  # frame of the first success; the demo goes on 5 steps holding it
        assert ep["success"] and g is not None and ep["length"] == g + 5
        assert not any(i[INFO_SUCCESS] for i in ep["infos"][:g - 1]) and all(i[INFO_SUCCESS] for i in ep["infos"][g - 1:])
        assert ep["length"] < env.max_steps and ep["goal"] == "reach-v3" and ep["style"] == {"noise": 0.1}
        assert len(ep["images"]) == ep["length"] + 1 and ep["images"][0].shape == (32, 32, 3)
        kp = np.stack(ep["keypoints"])  # the optional goal-keypoint label, one per observation
        assert kp.shape == (ep["length"] + 1, 2, 2) and np.isfinite(kp).all()
        # A step limit truncates.
        short = make_env("metaworld", {"task": "push-v3", "image_size": 32, "max_steps": 4})
        ep = expert_episode("metaworld", short, 0, np.random.default_rng(0))
        assert not ep["success"] and ep["length"] == 4
        short.close()
        # Without the hold, the demo stops at the first success.
        plain = make_env("metaworld", {"task": "reach-v3", "image_size": 32, "demo_hold_steps": 0})
        ep = expert_episode("metaworld", plain, 0, np.random.default_rng(0))
        assert ep["goal_step"] is None and ep["length"] == g and ep["infos"][-1][INFO_SUCCESS]
        plain.close()
    finally:
        env.close()


def test_demos_pipeline(tmp_path):
    from core.learning.dataset import list_episode_files
    from core.learning.demos import generate_demos

    out = generate_demos(tmp_path / "mw", 1, backend="metaworld",
                         env_config={"task": "reach-v3", "image_size": 32}, progress=False)
    assert out["episodes"] == 1 and len(list_episode_files(tmp_path / "mw")) == 1


def test_goal_observable_puts_the_goal_in_the_proprioception():
    """reach-v3's goal is a point in the air no frame can place: goal_observable appends it
    (mapped with the hand's bounds) to the 4 proprio entries, and it follows the seed."""
    plain = MetaWorldEnv(MetaWorldConfig(task="reach-v3", image_size=32))
    env = MetaWorldEnv(MetaWorldConfig(task="reach-v3", image_size=32, goal_observable=True))
    try:
        goals = []
        for seed in (3, 4):
            o_plain, _ = plain.reset(seed=seed)
            obs, _ = env.reset(seed=seed)
            assert o_plain[OBS_PROPRIO].shape == (4,) and obs[OBS_PROPRIO].shape == (7,)
            np.testing.assert_allclose(obs[OBS_PROPRIO][:4], o_plain[OBS_PROPRIO])
            goal = env.privileged_state()["goal"]
            lo, hi = np.array([-0.525, 0.348, -0.0525]), np.array([0.525, 1.025, 0.7])
            np.testing.assert_allclose(obs[OBS_PROPRIO][4:], 2 * (goal - lo) / (hi - lo) - 1, atol=1e-5)
            goals.append(obs[OBS_PROPRIO][4:])
            obs = env.step(env.expert_action(np.random.default_rng(0)))[0]
            np.testing.assert_allclose(obs[OBS_PROPRIO][4:], goals[-1], atol=1e-5)  # the goal holds still
        assert not np.allclose(goals[0], goals[1])
        assert check_backend(env, n_steps=3).ok
    finally:
        plain.close()
        env.close()


def test_goal_marker_radius_draws_reach_goal_larger_and_only_in_the_image():
    """At 64 px the 2 cm goal ball of reach-v3 is ~1 px; drawn at its 5 cm success radius
    it covers several pixels around the projected goal, and the episode is unchanged."""
    def red_pixels_near_goal(radius):
        raw = MetaWorldRaw("reach-v3", 64, "corner4", goal_marker_radius=radius)
        try:
            obs, _ = raw.reset(seed=3)
            img = raw.render().astype(int)
            (u, v), = raw.project(raw.target_pos[None])
            x, y = int((u + 1) / 2 * 64), int((v + 1) / 2 * 64)
            patch = img[max(0, y - 4):y + 5, max(0, x - 4):x + 5]
            red = (patch[..., 0] > 120) & (patch[..., 1] < 60) & (patch[..., 2] < 60)
            return int(red.sum()), obs
        finally:
            raw.close()

    small, obs_small = red_pixels_near_goal(None)
    big, obs_big = red_pixels_near_goal(0.05)
    assert big >= 6 and big >= 3 * max(1, small), (small, big)
    np.testing.assert_array_equal(obs_small, obs_big)  # the physics and observations do not change
    with pytest.raises(Exception, match="no goal marker"):
        MetaWorldRaw("button-press-topdown-v3", 32, goal_marker_radius=0.05)
    with pytest.raises(ValueError, match="goal_marker_radius"):
        MetaWorldConfig(task="reach-v3", goal_marker_radius=2.0)
    env = make_env("metaworld", {"task": "reach-v3", "image_size": 32, "goal_marker_radius": 0.05})
    try:
        assert check_backend(env, n_steps=3).ok
    finally:
        env.close()
