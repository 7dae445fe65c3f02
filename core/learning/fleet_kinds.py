"""Which fleet a practice run gets: the simulated kinds by name (``PracticeConfig.fleet_kind``,
the worker's ``fleet.kind``). Its own module, because it knows every fleet and
``core.learning.ray_fleet`` builds on ``core.learning.fleets``."""
from __future__ import annotations

from typing import Any

from core.learning.fleets import LocalFleet, ProcessFleet

SIM_FLEET_KINDS = ("process", "local", "ray")


def make_sim_fleet(kind: str, backend: str, env_config: dict[str, Any], size: int, *,
                   ray_address: str | None = None) -> Any:
    """A fleet of ``size`` simulators of ``backend``: one process each on this machine
    ("process"), all in this process ("local"), or Ray actors on a cluster ("ray")."""
    if kind == "process":
        return ProcessFleet(backend, env_config, size)
    if kind == "local":
        from sim_backends.registry import make_env

        return LocalFleet(lambda: make_env(backend, env_config), size)
    if kind == "ray":
        from core.learning.ray_fleet import RayFleet

        return RayFleet(backend, env_config, size, address=ray_address)
    raise ValueError(f"fleet kind {kind!r}: use one of {SIM_FLEET_KINDS} (or 'remote' in the worker)")
