"""Tabletop domains (Real2Sim): "lab" looks and behaves otherwise than "sim", the keypoint
labels follow each domain's camera, and "sim" is the tabletop it always was."""
from __future__ import annotations

import numpy as np
import pytest

from sim_backends.registry import make_env
from sim_backends.tabletop import scene

CFG = {"family": "block2block", "image_size": 96, "max_steps": 20}


@pytest.fixture(scope="module")
def envs():
    sim, lab = make_env("tabletop", CFG), make_env("tabletop", {**CFG, "domain": "lab"})
    yield sim, lab
    sim.close()
    lab.close()


def test_sim_keypoints_are_the_orthographic_top_view(envs):
    sim, _ = envs
    sim.reset(seed=11)
    goal = sim.goal
    pts = np.stack([sim.object_xy(goal.block), sim.goal_target(goal)])
    half = scene.CAMERA_EXTENT / 2
    np.testing.assert_allclose(sim.goal_keypoints(), np.stack([pts[:, 0] / half, -pts[:, 1] / half], 1), atol=1e-6)


@pytest.mark.parametrize("seed", [3, 7, 19])
def test_lab_keypoints_land_on_the_objects_in_its_own_image(envs, seed):
    """The projection through the lab's tilted, rolled perspective camera hits the pushed
    block's pixels: its colour is there."""
    _, lab = envs
    obs, _ = lab.reset(seed=seed)
    (u, v), _target = lab.goal_keypoints()
    s = CFG["image_size"]
    x, y = int(round((u + 1) / 2 * (s - 1))), int(round((v + 1) / 2 * (s - 1)))
    pixel = obs["image"][y, x].astype(float)
    colour = np.array([float(c) for c in scene.RGBA[lab.goal.block.split()[0]].split()[:3]]) * 255
    # Lit, not flat: the channel that makes the colour is the largest one at that pixel.
    assert int(np.argmax(pixel)) == int(np.argmax(colour)) or lab.goal.block.startswith("yellow"), (pixel, colour)


def test_lab_differs_from_sim_in_looks_and_physics(envs):
    sim, lab = envs
    (o1, _), (o2, _) = sim.reset(seed=5), lab.reset(seed=5)
    assert sim.goal == lab.goal  # the same scene and goal, seen and pushed otherwise
    assert np.abs(o1["image"].astype(int) - o2["image"].astype(int)).mean() > 20
    geom = lambda env: env.model.geom_friction[env.model.geom("table").id][0]  # noqa: E731
    assert geom(sim) == 0.5 and geom(lab) == 0.8


def test_expert_demonstrations_work_in_the_lab():
    from sim_backends.registry import expert_episode

    env = make_env("tabletop", {"family": "block2block", "domain": "lab"})
    try:
        ok = [expert_episode("tabletop", env, s, np.random.default_rng(s))["success"] for s in range(6)]
    finally:
        env.close()
    assert sum(ok) >= 4


def test_an_unknown_domain_names_the_valid_ones():
    with pytest.raises(ValueError, match="'lab'"):
        make_env("tabletop", {"domain": "mars"})
