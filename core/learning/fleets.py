"""A fleet of robots behind one small interface, stepped in lock-step by the rollout loop.

The learner and the rollout code only see ``Fleet``: ``reset(i, seed)``, ``step({i: action})``,
``close()``. Implementations:

- ``LocalFleet``: the environments live in this process (tests, evaluation, one core).
- ``ProcessFleet``: one simulator process per robot (the default for practice), so
  physics and rendering run in parallel while inference stays batched here.
- remote robots over a websocket and Ray actors plug in behind the same interface
  (a robot is anything that answers reset/step), without touching the learner.

A robot that fails (simulator error, crashed process, disconnect) answers with a
``RobotFailure`` instead of an observation; the rollout loop aborts that robot's episode
and the rest of the fleet goes on.

A fleet may also offer the split-phase pair ``submit({i: ("reset", seed) | ("step", action)})``
then ``collect(indices)``: commands go out without waiting, so the rollout loop can run
inference for one group of robots while another group's simulators step (``ProcessFleet``,
``RemoteFleet`` for steps). ``SplitPhase`` gives every fleet that pair, running the commands
at ``collect`` time for a fleet without it (no overlap then, same results).
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


@dataclass
class RobotFailure:
    """Why robot ``index`` could not reset or step; its episode is aborted."""

    index: int
    message: str


class Fleet(Protocol):
    size: int
    max_steps: int

    def reset(self, i: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]] | RobotFailure: ...

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, StepResult | RobotFailure]: ...

    def close(self) -> None: ...


class LocalFleet:
    """Environments stepped one after another in this process."""

    pipelined = False

    def __init__(self, make_env: Callable[[], Any], size: int):
        self.envs = [make_env() for _ in range(max(1, size))]
        self.size = len(self.envs)
        self.max_steps = int(self.envs[0].max_steps)

    def reset(self, i: int, seed: int):
        try:
            return self.envs[i].reset(seed=int(seed))
        except Exception as e:  # noqa: BLE001 - a robot's failure must not stop the fleet
            return RobotFailure(i, f"reset failed: {type(e).__name__}: {e}")

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, StepResult | RobotFailure]:
        out: dict[int, StepResult | RobotFailure] = {}
        for i, a in actions.items():
            try:
                out[i] = self.envs[i].step(a)
            except Exception as e:  # noqa: BLE001
                out[i] = RobotFailure(i, f"step failed: {type(e).__name__}: {e}")
        return out

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _robot_process(conn, backend: str, env_config: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    from sim_backends.registry import make_env

    try:
        env = make_env(backend, env_config)
        conn.send(("ready", int(env.max_steps)))
    except Exception as e:  # noqa: BLE001
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, OSError):
            break
        if cmd == "close":
            break
        try:
            if cmd == "reset":
                conn.send(("ok", env.reset(seed=int(arg))))
            elif cmd == "step":
                conn.send(("ok", env.step(arg)))
        except Exception as e:  # noqa: BLE001 - report, keep serving
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=2)}"))
    env.close()


class SplitPhaseFleet:
    """``reset`` and ``step`` for a fleet whose own pair is ``submit`` / ``collect``."""

    def reset(self, i: int, seed: int):
        self.submit({i: ("reset", seed)})
        return self.collect([i])[i]

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, StepResult | RobotFailure]:
        self.submit({i: ("step", a) for i, a in actions.items()})
        return self.collect(list(actions))


class ProcessFleet(SplitPhaseFleet):
    """One simulator process per robot; commands go out to all robots before any reply is
    read, so the robots step in parallel."""

    pipelined = True  # robots step while the learner works (see ``core.learning.rollout.rollout_groups``)

    def __init__(self, backend: str, env_config: dict[str, Any], size: int):
        ctx = mp.get_context("spawn")  # MuJoCo/GL contexts must not be forked
        self.size = max(1, int(size))
        self.conns, self.procs = [], []
        for _ in range(self.size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_robot_process, args=(child, backend, dict(env_config)), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        steps = []
        for i, c in enumerate(self.conns):
            try:
                kind, val = c.recv()
            except (EOFError, OSError):
                self.procs[i].join(timeout=5)
                code = self.procs[i].exitcode
                self.close()
                raise RuntimeError(
                    f"robot {i}'s simulator process exited while starting (exit code {code}); its traceback "
                    f"is on stderr above. A process started with 'spawn' re-imports the parent's __main__ "
                    f"({getattr(sys.modules.get('__main__'), '__file__', None)}): that script must guard its "
                    f"top-level code with `if __name__ == '__main__':`") from None
            if kind != "ready":
                self.close()
                raise RuntimeError(f"robot {i} could not start its simulator: {val}")
            steps.append(val)
        self.max_steps = steps[0]
        self._failed: dict[int, RobotFailure] = {}  # submitted commands that could not be sent

    def _ask(self, i: int) -> Any:
        try:
            kind, val = self.conns[i].recv()
        except (EOFError, OSError) as e:
            return RobotFailure(i, f"robot process died ({type(e).__name__})")
        return val if kind == "ok" else RobotFailure(i, str(val))

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        """Send ``("reset", seed)`` or ``("step", action)`` to robots without waiting for replies."""
        for i, (cmd, arg) in cmds.items():
            arg = int(arg) if cmd == "reset" else np.asarray(arg, np.float32)
            try:
                self.conns[i].send((cmd, arg))
            except (BrokenPipeError, OSError):
                self._failed[i] = RobotFailure(i, "robot process died")

    def collect(self, indices) -> dict[int, Any]:
        """The replies to the commands submitted to ``indices`` (in that order)."""
        return {i: self._failed.pop(i) if i in self._failed else self._ask(i) for i in indices}

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


class SplitPhase:
    """``submit`` / ``collect`` for any fleet. A fleet with its own pair is used as is (its
    commands run while the caller works); for one without, the commands are kept and run at
    ``collect``: resets one by one, steps together through ``fleet.step``."""

    def __init__(self, fleet: Any):
        self.fleet = fleet
        self.native = callable(getattr(fleet, "submit", None)) and callable(getattr(fleet, "collect", None))
        self._held: dict[int, tuple[str, Any]] = {}

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        if self.native:
            self.fleet.submit(cmds)
        else:
            self._held.update(cmds)

    def collect(self, indices) -> dict[int, Any]:
        indices = list(indices)
        if self.native:
            return self.fleet.collect(indices)
        cmds = {i: self._held.pop(i) for i in indices}
        out = {i: self.fleet.reset(i, arg) for i, (cmd, arg) in cmds.items() if cmd == "reset"}
        steps = {i: arg for i, (cmd, arg) in cmds.items() if cmd == "step"}
        if steps:
            out.update(self.fleet.step(steps))
        return {i: out[i] for i in indices}

    def discard(self, indices) -> None:
        """Forget the commands out to ``indices``: replies are read and dropped (never run,
        for a fleet without its own pair)."""
        if self.native:
            self.fleet.collect(list(indices))
        else:
            for i in indices:
                self._held.pop(i, None)

