"""Several tasks behind one backend: the seed picks the task, shapes must agree."""
from __future__ import annotations

import numpy as np
import pytest

from sim_backends.base import BackendError
from sim_backends.multitask import MultiTaskConfig
from sim_backends.registry import expert_episode, make_env

B2B = {"backend": "tabletop", "env_config": {"family": "block2block", "image_size": 32}}
B2L = {"backend": "tabletop", "env_config": {"family": "block2location", "image_size": 32, "max_steps": 50}}


def test_seed_picks_the_task_and_info_names_it():
    env = make_env("multitask", {"tasks": [B2B, B2L]})
    try:
        assert env.max_steps == 80 and env.image_shape == (32, 32, 3) and env.proprio_dim == 2
        names = []
        for seed in range(4):
            obs, info = env.reset(seed=seed)
            names.append(info["task_name"])
            assert info["task"] == seed % 2
            _, _, _, _, info = env.step(np.zeros(2, np.float32))
            assert info["task_name"] == names[-1]
        assert names == ["block2block", "block2location"] * 2
        # the same seed on its own task's env gives the same instruction (episodes are reproducible)
        single = make_env("tabletop", B2L["env_config"])
        try:
            assert single.reset(seed=3)[0]["instruction"] == env.reset(seed=3)[0]["instruction"]
        finally:
            single.close()
        # a task can be asked for by name, whatever the seed
        _, info = env.reset(seed=0, options={"task": "block2location"})
        assert info["task"] == 1
        with pytest.raises(BackendError, match="unknown task 'push'"):
            env.reset(seed=0, options={"task": "push"})
    finally:
        env.close()


def test_expert_runs_the_chosen_tasks_expert_and_live_envs_are_bounded():
    env = make_env("multitask", {"tasks": [B2B, B2L, {**B2B, "name": "again"}], "max_live": 1})
    try:
        for seed in range(3):
            res = expert_episode("multitask", env, seed, np.random.default_rng(seed))
            assert res["success"], seed
            assert len(env._live) == 1
    finally:
        env.close()


def test_terminate_on_success_override_reaches_every_task():
    env = make_env("multitask", {"tasks": [B2B, B2L], "terminate_on_success": False})
    try:
        for i in range(2):
            assert env.select(i).config.terminate_on_success is False
    finally:
        env.close()


def test_bad_configs_say_what_to_fix():
    with pytest.raises(ValueError, match="tasks is empty"):
        MultiTaskConfig(tasks=())
    with pytest.raises(ValueError, match="has no 'backend'"):
        MultiTaskConfig(tasks=({"env_config": {}},))
    with pytest.raises(BackendError, match="image_shape.*same image_size"):
        make_env("multitask", {"tasks": [B2B, {"backend": "tabletop", "env_config": {"image_size": 48}}]})
    with pytest.raises(ValueError, match="bad config for backend 'multitask'"):
        make_env("multitask", {"tasks": [B2B], "colour": "red"})


def test_every_task_stays_open_while_memory_allows_and_two_when_short(monkeypatch):
    import sim_backends.multitask as mt

    tasks = [B2B, B2L, {**B2B, "name": "again"}]
    env = make_env("multitask", {"tasks": tasks})  # max_live None: memory decides
    try:
        monkeypatch.setattr(mt, "memory_is_short", lambda env_mb=mt.ENV_MB: False)
        opened = [env.select(i) for i in range(3)]
        for seed in range(6):  # tasks drawn in turn: nothing rebuilt once all are open
            env.reset(seed=seed)
            assert env._live[seed % 3] is opened[seed % 3]
        assert len(env._live) == 3
        monkeypatch.setattr(mt, "memory_is_short", lambda env_mb=mt.ENV_MB: True)
        env.close()
        for seed in range(6):
            env.reset(seed=seed)
            assert len(env._live) <= 2
    finally:
        env.close()


def test_memory_rule_reads_the_machine():
    import sim_backends.multitask as mt

    mem = mt.memory_mb()
    if mem is None:
        pytest.skip("no /proc/meminfo here")
    available, total = mem
    assert 0 < available <= total
    assert mt.reserve_mb(4096) == 1024 and mt.reserve_mb(64_000) == pytest.approx(9600)
    # asking for more than the machine has is short; nothing extra is not, on a machine with room
    assert mt.memory_is_short(env_mb=total + 1)
    assert mt.memory_is_short(env_mb=0) == (available < mt.reserve_mb(total))
    with pytest.raises(ValueError, match="max_live"):
        MultiTaskConfig(tasks=(B2B,), max_live=0)
