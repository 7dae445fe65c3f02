"""Tests for the LanguageTable-like MuJoCo tabletop backend."""
from __future__ import annotations

import numpy as np
import pytest

from sim_backends.base import (
    INFO_OFF_TABLE, INFO_PHYSICS_ERROR, INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO,
    Backend,
)
from sim_backends.tabletop import (
    BLOCK2BLOCK, BLOCK2LOCATION, COLOURS, REGIONS, SHAPES, Goal, InstructionError, TabletopConfig,
    TabletopEnv, parse_instruction, render_instruction, run_expert_episode, sample_goal,
)
from sim_backends.tabletop.instructions import BLOCK2BLOCK_TEMPLATES, BLOCK2LOCATION_TEMPLATES

BLOCKS = ("red moon", "blue cube", "green star", "yellow pentagon")


@pytest.fixture(scope="module")
def env():
    with TabletopEnv(TabletopConfig(family=BLOCK2LOCATION)) as e:
        yield e


# ---------------------------------------------------------------- instructions
def test_parse_round_trips_every_phrasing():
    for i in range(len(BLOCK2BLOCK_TEMPLATES)):
        goal = Goal(BLOCK2BLOCK, "red moon", target_block="yellow pentagon")
        assert parse_instruction(render_instruction(goal, phrasing=i), BLOCKS) == goal
    for i in range(len(BLOCK2LOCATION_TEMPLATES)):
        for region in REGIONS:
            goal = Goal(BLOCK2LOCATION, "green star", region=region)
            assert parse_instruction(render_instruction(goal, phrasing=i), BLOCKS) == goal
    assert len(BLOCK2BLOCK_TEMPLATES) >= 4 and len(BLOCK2LOCATION_TEMPLATES) >= 4


def test_sampled_goals_round_trip():
    rng = np.random.default_rng(0)
    for family in (BLOCK2BLOCK, BLOCK2LOCATION):
        for _ in range(50):
            goal = sample_goal(rng, BLOCKS, family)
            assert parse_instruction(render_instruction(goal, rng).upper() + ".", BLOCKS) == goal


@pytest.mark.parametrize("text, bad_word", [
    ("push the purple moon to the blue cube", "purple"),
    ("push the red triangle to the blue cube", "triangle"),
    ("push the red moon to the top middle of the table", "top middle"),
    ("push the red pentagon to the blue cube", "red pentagon"),  # a catalog block, not in scene
])
def test_unknown_names_list_the_valid_ones(text, bad_word):
    with pytest.raises(InstructionError) as err:
        parse_instruction(text, BLOCKS)
    msg = str(err.value)
    assert bad_word in msg
    for name in (*COLOURS, *SHAPES, *BLOCKS, *REGIONS):
        assert name in msg, f"{name!r} missing from {msg!r}"


def test_unparseable_text_names_phrasings():
    with pytest.raises(InstructionError, match="push the"):
        parse_instruction("do a dance", BLOCKS)


def test_banana_goal_parses_when_in_scene():
    goal = parse_instruction("push the banana to the top left of the table", ("banana",))
    assert goal == Goal(BLOCK2LOCATION, "banana", region="top left")
    with pytest.raises(InstructionError, match="banana"):
        parse_instruction("push the banana to the top left of the table", BLOCKS)


def test_generic_noun_parses_only_when_the_object_is_alone():
    goal = parse_instruction("move the object to the top left", ("red moon",))
    assert goal == Goal(BLOCK2LOCATION, "red moon", region="top left")
    assert parse_instruction("push the thing to the center of the table", ("banana",)).block == "banana"
    with pytest.raises(InstructionError, match="ambiguous"):
        parse_instruction("push the object to the top left of the table", BLOCKS)


def test_generic_names_in_single_object_scenes():
    cfg = dict(family=BLOCK2LOCATION, blocks=("blue cube",))
    texts = []
    with TabletopEnv(TabletopConfig(**cfg, generic_name_prob=0.5, image_size=32)) as e:
        for seed in range(24):
            obs, info = e.reset(seed=seed)
            assert info["goal"].block == "blue cube"
            # every instruction, generic or not, parses back to the episode's goal
            assert parse_instruction(obs[OBS_INSTRUCTION], ("blue cube",)) == info["goal"]
            texts.append(obs[OBS_INSTRUCTION])
    generic = [t for t in texts if "blue cube" not in t]
    assert 4 <= len(generic) <= 20, texts
    # a scene with several objects never uses a generic noun, and the option leaves the
    # seeded episodes of the default config unchanged
    with TabletopEnv(TabletopConfig(family=BLOCK2LOCATION, generic_name_prob=1.0, image_size=32)) as a, \
            TabletopEnv(TabletopConfig(family=BLOCK2LOCATION, image_size=32)) as b:
        for seed in range(5):
            oa, _ = a.reset(seed=seed)
            ob, _ = b.reset(seed=seed)
            assert oa[OBS_INSTRUCTION] == ob[OBS_INSTRUCTION]
            assert np.array_equal(oa[OBS_IMAGE], ob[OBS_IMAGE])
    with pytest.raises(ValueError, match="generic_name_prob"):
        TabletopConfig(generic_name_prob=1.5)
    with pytest.raises(ValueError, match="lone_nouns"):
        TabletopConfig(lone_nouns="fruit")


def test_household_nouns_stand_in_for_a_lone_block_and_never_name_food():
    from sim_backends.tabletop.instructions import HOUSEHOLD_NOUNS

    assert "banana" not in HOUSEHOLD_NOUNS and not {"apple", "fruit", "orange"} & set(HOUSEHOLD_NOUNS)
    assert parse_instruction("push the cup to the bottom right", ("green star",)).block == "green star"
    with TabletopEnv(TabletopConfig(family=BLOCK2LOCATION, blocks=("green star",), generic_name_prob=1.0,
                                    lone_nouns="household", image_size=32)) as e:
        nouns = set()
        for seed in range(30):
            obs, info = e.reset(seed=seed)
            assert parse_instruction(obs[OBS_INSTRUCTION], ("green star",)) == info["goal"]
            nouns |= {w for w in obs[OBS_INSTRUCTION].split() if w in HOUSEHOLD_NOUNS}
    assert len(nouns) > 10, nouns


# ---------------------------------------------------------------- config
def test_config_errors_quote_the_bad_value():
    with pytest.raises(ValueError, match="'block2nowhere'"):
        TabletopConfig(family="block2nowhere")
    with pytest.raises(ValueError, match="'purple cube'"):
        TabletopConfig(blocks=("purple cube", "red moon"))
    with pytest.raises(ValueError, match="7"):
        TabletopConfig(image_size=7)


# ---------------------------------------------------------------- env
def test_obs_shapes_and_dtypes(env):
    assert isinstance(env, Backend)
    obs, info = env.reset(seed=3)
    assert obs[OBS_IMAGE].shape == env.image_shape == (64, 64, 3)
    assert obs[OBS_IMAGE].dtype == np.uint8
    assert obs[OBS_IMAGE].mean() > 40, "image is dark: no light or camera misplaced"
    assert obs[OBS_PROPRIO].shape == (env.proprio_dim,) and obs[OBS_PROPRIO].dtype == np.float32
    assert np.all(np.abs(obs[OBS_PROPRIO]) <= 1.0)
    assert isinstance(obs[OBS_INSTRUCTION], str) and obs[OBS_INSTRUCTION]
    assert env.observation_space.contains(obs)
    for key in (INFO_SUCCESS, INFO_OFF_TABLE, INFO_PHYSICS_ERROR, "goal", "distance", "step"):
        assert key in info
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5]))
    assert env.observation_space.contains(obs)
    assert reward in (0.0, 1.0) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert info["step"] == 1


def test_same_seed_same_episode_bit_for_bit():
    actions = np.random.default_rng(7).uniform(-1, 1, size=(15, 2))
    runs = []
    for _ in range(2):
        with TabletopEnv(TabletopConfig()) as e:
            obs, _ = e.reset(seed=42)
            frames, texts = [obs[OBS_IMAGE]], [obs[OBS_INSTRUCTION]]
            for a in actions:
                obs, *_ = e.step(a)
                frames.append(obs[OBS_IMAGE])
            runs.append((np.stack(frames), texts, e.privileged_state()["pusher"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert np.array_equal(runs[0][2], runs[1][2])
    assert not np.array_equal(runs[0][0][0], runs[0][0][-1]), "the pusher never moved"


def test_reset_options_instruction_and_goal(env):
    obs, info = env.reset(seed=1, options={"instruction": "slide the blue cube towards the center"})
    assert info["goal"] == Goal(BLOCK2LOCATION, "blue cube", region="center")
    assert obs[OBS_INSTRUCTION] == "slide the blue cube towards the center"
    goal = Goal(BLOCK2BLOCK, "red moon", target_block="green star")
    obs, info = env.reset(seed=1, options={"goal": goal})
    assert info["goal"] == goal and parse_instruction(obs[OBS_INSTRUCTION], BLOCKS) == goal


@pytest.mark.parametrize("action, fragment", [
    (np.array([np.nan, 0.0]), "not finite"),
    (np.array([np.inf, 0.0]), "not finite"),
    (np.zeros(3), "shape (3,)"),
    (np.zeros((1, 2)), "shape (1, 2)"),
])
def test_bad_actions_raise_clear_value_errors(env, action, fragment):
    env.reset(seed=0)
    with pytest.raises(ValueError) as err:
        env.step(action)
    assert fragment in str(err.value) and "(2,)" in str(err.value) and "[-1, 1]" in str(err.value)


def test_out_of_range_actions_are_clipped_and_pusher_stays_on_table(env):
    env.reset(seed=0)
    for _ in range(30):
        obs, *_ = env.step(np.array([5.0, -5.0]))
    assert np.allclose(obs[OBS_PROPRIO], [1.0, -1.0])


def test_block_pushed_off_the_table_ends_episode(env):
    env.reset(seed=0, options={"goal": Goal(BLOCK2LOCATION, "blue cube", region="top left")})
    env.set_state(pusher_xy=(0.18, 0.0), objects={"blue cube": (0.24, 0.0, 0.0),
                                                   "red moon": (-0.2, -0.2, 0.0),
                                                   "green star": (-0.2, 0.2, 0.0),
                                                   "yellow pentagon": (0.0, -0.2, 0.0)})
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
        if terminated:
            break
    assert terminated and info[INFO_OFF_TABLE] and not info[INFO_SUCCESS] and reward == 0.0


@pytest.mark.parametrize("bad", [np.nan, 1e12, 1e4])
def test_physics_blow_up_ends_episode_without_raising(env, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs its instability warning to ./MUJOCO_LOG.TXT
    env.reset(seed=0)
    env.data.qvel[:] = bad
    obs, reward, terminated, truncated, info = env.step(np.zeros(2))
    assert terminated and info[INFO_PHYSICS_ERROR] and not info[INFO_SUCCESS]
    assert obs[OBS_IMAGE].shape == env.image_shape
    obs, info = env.reset(seed=1)
    obs, _, terminated, _, info = env.step(np.zeros(2))
    assert not info[INFO_PHYSICS_ERROR] and np.isfinite(info["distance"])


def test_truncates_at_step_limit():
    with TabletopEnv(TabletopConfig(max_steps=3)) as e:
        e.reset(seed=0)
        results = [e.step(np.zeros(2)) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]


def test_banana_scene_runs():
    with TabletopEnv(TabletopConfig(family=BLOCK2LOCATION, blocks=(), objects=("banana",))) as e:
        obs, info = e.reset(seed=0)
        assert info["goal"].block == "banana" and "banana" in obs[OBS_INSTRUCTION]
        e.step(np.array([0.3, 0.3]))


# ---------------------------------------------------------------- expert
@pytest.mark.parametrize("family", [BLOCK2BLOCK, BLOCK2LOCATION])
def test_expert_succeeds(family):
    rng = np.random.default_rng(0)
    with TabletopEnv(TabletopConfig(family=family, image_size=32)) as e:
        episodes = [run_expert_episode(e, seed, rng) for seed in range(20)]
    assert sum(ep["success"] for ep in episodes) >= 19
    ep = episodes[0]
    assert len(ep["images"]) == len(ep["proprio"]) == len(ep["actions"]) + 1 == len(ep["infos"]) + 1
    assert all(np.all(np.abs(a) <= 1.0) and a.shape == (2,) for ep in episodes for a in ep["actions"])
    # Human-like: not every demo the same length, style or speed.
    assert len({ep["length"] for ep in episodes}) > 5
