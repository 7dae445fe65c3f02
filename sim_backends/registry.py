"""Backends by name, so datasets and checkpoints can say which simulator made them.

A task is (backend name, backend config dict); both are stored with each dataset
and run, and ``make_env`` rebuilds the environment from them.
"""
from __future__ import annotations

from typing import Any, Callable


def _tabletop(config: dict[str, Any]):
    from sim_backends.tabletop import TabletopConfig, TabletopEnv

    return TabletopEnv(TabletopConfig(**config))


def _tabletop_expert(env, seed: int, rng):
    from sim_backends.tabletop import run_expert_episode

    return run_expert_episode(env, seed, rng)


def _gym(config: dict[str, Any]):
    from sim_backends.gym_adapter import GymBackend, GymTaskConfig

    return GymBackend(GymTaskConfig(**config))


def _gym_expert(env, seed: int, rng):
    from sim_backends.gym_adapter import run_gym_expert_episode

    return run_gym_expert_episode(env, seed, rng)


def _metaworld(config: dict[str, Any]):
    from sim_backends.metaworld_backend import MetaWorldConfig, MetaWorldEnv

    return MetaWorldEnv(MetaWorldConfig(**config))


def _multitask(config: dict[str, Any]):
    from sim_backends.multitask import MultiTaskConfig, MultiTaskEnv

    return MultiTaskEnv(MultiTaskConfig(**config), make_env=make_env)


def _multitask_expert(env, seed: int, rng):
    from sim_backends.multitask import run_multitask_expert_episode

    return run_multitask_expert_episode(env, seed, rng, expert_episode)


BACKENDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tabletop": _tabletop, "gym": _gym, "metaworld": _metaworld, "multitask": _multitask}
EXPERTS: dict[str, Callable] = {
    "tabletop": _tabletop_expert, "gym": _gym_expert, "metaworld": _gym_expert,
    "multitask": _multitask_expert}


def make_env(backend: str, config: dict[str, Any] | None = None):
    """Build a backend environment; unknown names list the valid ones."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {sorted(BACKENDS)}")
    try:
        return BACKENDS[backend](dict(config or {}))
    except TypeError as e:
        raise ValueError(f"bad config for backend {backend!r}: {e}") from e


def expert_episode(backend: str, env, seed: int, rng):
    """Run the backend's scripted expert for one episode (see run_expert_episode)."""
    if backend not in EXPERTS:
        raise ValueError(f"backend {backend!r} has no scripted expert; backends with one: {sorted(EXPERTS)}")
    return EXPERTS[backend](env, seed, rng)
