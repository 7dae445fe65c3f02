"""The fleet as Ray actors: each robot one actor owning one simulator, on any node of a Ray
cluster (docs/cluster.md). The learner stays in the caller's process (the worker's): only
observations and actions travel, as numpy, through Ray's object store.

``RayFleet`` is ``ProcessFleet``'s twin behind the same interface (``reset``, ``step`` and the
split-phase ``submit``/``collect`` the pipelined rollout uses), so a practice run on it takes
the same seeds to the same episodes. Placement: a robot takes one unit of the ``dojo_robot``
resource when the cluster offers it (``ray start --resources '{"dojo_robot": 8}'`` on the robot
nodes), else a share of the cluster's CPUs, spread over the nodes.

Faults: an actor that dies (its simulator crashed, its node was lost) answers ``RobotFailure``:
the rollout aborts that robot's episode and the rest go on. Ray restarts the actor
(``max_restarts=-1``) on a node with room, or when its node comes back; ``available(i)`` pings it
without blocking, so the worker's supervised fleet keeps the robot parked until it answers, then
it rejoins. A cluster that cannot be reached is refused at start with the address and the fix.
Nothing here starts Ray unless a ``RayFleet`` is made.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.learning.fleets import RobotFailure, SplitPhaseFleet, StepResult

ROBOT_RESOURCE = "dojo_robot"
"""The custom resource a node offers per robot it may host (docs/cluster.md)."""
START_TIMEOUT_S = 180.0
STEP_TIMEOUT_S = 120.0
ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("dojo.worker")


class RayClusterError(RuntimeError):
    """The Ray cluster cannot be reached or cannot host the fleet; the message says the fix."""


def connect_ray(address: str | None) -> dict[str, float]:
    """Join the Ray cluster at ``address`` ('auto', 'HOST:PORT'), or start a one-node Ray in this
    process when it is None or 'local'; returns the cluster's resources."""
    import ray

    if not ray.is_initialized():
        local = address in (None, "", "local")
        if not local and address != "auto":
            _probe(address)  # ray.init waits minutes on an address where no cluster answers
        # Workers on this machine import Dojo from this checkout; on a cluster every node runs the
        # Docker image, whose PYTHONPATH already has it (docs/cluster.md).
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
               "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
               "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", os.environ.get("MUJOCO_GL", "egl"))}
        try:
            ray.init(address=None if local else address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env={"env_vars": env},
                     configure_logging=False)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError depending on the cause
            raise RayClusterError(f"cannot reach the Ray cluster at {address!r} ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300]}). {_fix(address)}") from None
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _fix(address: str | None) -> str:
    return (f"Fix: start it on the head node with `ray start --head --port 6379 --num-cpus 0` and on each robot "
            f"node with `ray start --address HEAD:6379 --resources '{{\"{ROBOT_RESOURCE}\": N}}'` (docs/cluster.md), "
            "then pass that address (HEAD:6379, or 'auto' on a node of the cluster); or use --fleet process "
            "on one machine")


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once when nothing listens at ``address`` (HOST:PORT, or ray://HOST:PORT)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayClusterError(f"the Ray address {address!r} is not HOST:PORT or 'auto'. {_fix(address)}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayClusterError(f"cannot reach the Ray cluster at {address!r}: nothing answers there "
                              f"({type(e).__name__}: {e}). {_fix(address)}") from None


class _RobotActor:
    """One robot: a simulator of any Dojo backend, in its own Ray worker process."""

    def __init__(self, backend: str, env_config: dict[str, Any]):
        os.environ.setdefault("MUJOCO_GL", "egl")
        import torch

        torch.set_num_threads(1)
        from sim_backends.registry import make_env

        self.env = make_env(backend, env_config)

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "max_steps": int(self.env.max_steps)}

    def reset(self, seed: int):
        return self.env.reset(seed=int(seed))

    def step(self, action: np.ndarray) -> StepResult:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


class RayFleet(SplitPhaseFleet):
    """``size`` robots as Ray actors; see the module docstring."""

    pipelined = True  # robots step while the learner works (core.learning.rollout.rollout_groups)

    def __init__(self, backend: str, env_config: dict[str, Any], size: int, *, address: str | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, step_timeout_s: float = STEP_TIMEOUT_S):
        import ray

        self.size = max(1, int(size))
        self.address, self.step_timeout_s = address, float(step_timeout_s)
        resources = connect_ray(address)
        placement = self._placement(resources)
        # No per-call task events (they feed Ray's dashboard and state API): ~10k calls a second on a big fleet.
        cls = ray.remote(max_restarts=-1, max_task_retries=0, enable_task_events=False)(_RobotActor)
        self.actors = [cls.options(**placement).remote(backend, dict(env_config)) for _ in range(self.size)]
        infos = [a.info.remote() for a in self.actors]
        ready, _ = ray.wait(infos, num_returns=len(infos), timeout=start_timeout_s)
        if len(ready) < len(infos):
            self.close()
            raise RayClusterError(
                f"only {len(ready)} of {self.size} robots started within {start_timeout_s:.0f} s on the Ray cluster "
                f"at {address or 'local'} (it offers {resources.get(ROBOT_RESOURCE, 0):g} {ROBOT_RESOURCE} and "
                f"{resources.get('CPU', 0):g} CPUs). Fix: start more robot nodes, raise their --resources "
                f"'{{\"{ROBOT_RESOURCE}\": N}}', or ask for fewer robots")
        try:
            self.nodes = [i["node_ip"] + "/" + i["node_id"][:8] for i in ray.get(infos)]
            self.max_steps = int(ray.get(infos[0])["max_steps"])
        except Exception as e:  # noqa: BLE001 - a simulator that cannot be built on the nodes
            self.close()
            raise RayClusterError(f"a robot could not start its simulator on the Ray cluster: "
                                  f"{str(e).splitlines()[-1][:500]}") from None
        self.node_ids = [n.split("/")[1] for n in self.nodes]
        self._out: dict[int, Any] = {}  # robot -> the object ref of its submitted command
        self._failed: dict[int, RobotFailure] = {}
        self._ping: dict[int, Any] = {}  # robot -> an outstanding ``info`` call (``available``)
        self.down: set[int] = set()  # robots whose actor died and has not answered since
        log.info("ray fleet: %d robots on %d node(s) %s", self.size, len(set(self.nodes)), sorted(set(self.nodes)))

    def _placement(self, resources: dict[str, float]) -> dict[str, Any]:
        if resources.get(ROBOT_RESOURCE, 0) >= 1:
            return {"resources": {ROBOT_RESOURCE: 1}, "num_cpus": 0}
        # No robot nodes declared: a share of the CPUs each (several robots per core, as the
        # process fleet runs them), spread over the nodes.
        per = max(0.01, min(1.0, resources.get("CPU", 1.0) / self.size))
        return {"num_cpus": round(per, 2), "scheduling_strategy": "SPREAD"}

    def node(self, i: int) -> str:
        return self.nodes[i]

    # --- commands ------------------------------------------------------------------------
    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        for i, (cmd, arg) in cmds.items():
            try:
                if cmd == "reset":
                    self._out[i] = self.actors[i].reset.remote(int(arg))
                else:
                    self._out[i] = self.actors[i].step.remote(np.asarray(arg, np.float32))
            except Exception as e:  # noqa: BLE001 - the actor handle is unusable
                self._failed[i] = RobotFailure(i, f"robot {i} (Ray actor) unreachable: {type(e).__name__}: {e}")

    def collect(self, indices) -> dict[int, Any]:
        """The replies of ``indices``, fetched in one ``ray.get`` (one round trip to the object
        store, not one per robot); a robot whose reply is an error is then read alone."""
        import ray

        indices = list(indices)
        out = {i: self._failed.pop(i) for i in indices if i in self._failed}
        refs = {i: self._out.pop(i) for i in indices if i not in out and i in self._out}
        out.update({i: RobotFailure(i, f"robot {i}: nothing was submitted") for i in indices
                    if i not in out and i not in refs})
        if refs:
            try:
                out.update(zip(refs, ray.get(list(refs.values()), timeout=self.step_timeout_s)))
                self.down.difference_update(refs)
            except Exception:  # noqa: BLE001 - one robot failed (or timed out): read each on its own
                out.update({i: self._result(i, ref) for i, ref in refs.items()})
        return {i: out[i] for i in indices}

    def _result(self, i: int, ref: Any) -> Any:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            out = ray.get(ref, timeout=self.step_timeout_s)
        except RayActorError as e:  # the actor died: its simulator, its process or its node
            self.down.add(i)
            return RobotFailure(i, f"robot {i} on node {self.nodes[i]} died ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:200]})")
        except RayTaskError as e:  # the simulator raised: reported, the actor goes on
            return RobotFailure(i, f"robot {i}: {str(e).strip().splitlines()[-1][:500]}")
        except GetTimeoutError:
            self.down.add(i)
            return RobotFailure(i, f"robot {i} on node {self.nodes[i]} did not answer within {self.step_timeout_s:.0f} s")
        self.down.discard(i)
        return out

    def available(self, i: int) -> bool:
        """Without blocking: False while robot ``i``'s actor is down (its ping unanswered); True
        once it answers again, its node updated (Ray may have restarted it elsewhere)."""
        import ray

        if i not in self.down:
            return True
        ref = self._ping.get(i)
        if ref is None:
            ref = self._ping[i] = self.actors[i].info.remote()
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return False
        del self._ping[i]
        try:
            info = ray.get(ref)
        except Exception:  # noqa: BLE001 - still down (or restarting): ask again next time
            return False
        self.nodes[i], self.node_ids[i] = info["node_ip"] + "/" + info["node_id"][:8], info["node_id"][:8]
        self.down.discard(i)
        log.info("ray fleet: robot %d is back on node %s", i, self.nodes[i])
        return True

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []

