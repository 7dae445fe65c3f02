"""The fleet as the learner sees it while the worker supervises it: robots that cannot
reset are parked instead of burning through the seed queue."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from core.learning.fleets import RobotFailure, SplitPhase


class SupervisedFleet:
    """Wraps the job's fleet (local, process or remote). A robot that cannot reset (a remote
    robot that is gone, a dead simulator) is *parked*: it gets a placeholder observation and
    the worker holds it (``HOLD``) instead of letting the rollout burn through the seed queue;
    once it is available again its placeholder episode is ended (length 0, ignored by the
    learner) and it resets for real. Failures of a running episode are reported to
    ``on_failure(slot, RobotFailure)`` (the worker marks that episode aborted)."""

    def __init__(self, inner: Any, *, on_failure: Callable[[int, Any], None] | None = None,
                 on_status: Callable[[int, bool], None] | None = None, retry_s: float = 2.0):
        self.inner = inner
        self.on_status = on_status  # (robot, online): told when a robot is parked (False) and when it rejoins
        self.size = inner.size
        self.max_steps = inner.max_steps
        self.on_failure = on_failure
        self.retry_s = retry_s
        self.parked = [False] * self.size
        self.park_reason = [""] * self.size
        self._parked_at = [0.0] * self.size
        self._template: dict[str, Any] | None = None
        self._ops: Any = None  # SplitPhase over inner, made on first use
        self._out: dict[int, tuple[str, Any]] = {}  # submitted, not collected
        self._sent: set[int] = set()  # ...of which went out to the inner fleet

    @property
    def knows_success(self) -> bool:
        return bool(getattr(self.inner, "knows_success", True))

    @property
    def pipelined(self) -> bool:
        return bool(getattr(self.inner, "pipelined", False))

    def robot_name(self, i: int) -> str | None:
        f = getattr(self.inner, "robot_name", None)
        return f(i) if f is not None else None

    def available(self, i: int) -> bool:
        f = getattr(self.inner, "available", None)
        return True if f is None else bool(f(i))

    def retry_ready(self, i: int) -> bool:
        if not self.parked[i]:
            return False
        if hasattr(self.inner, "available"):
            return self.available(i)
        return time.monotonic() - self._parked_at[i] >= self.retry_s

    def reset(self, i: int, seed: int):
        res = self.inner.reset(i, seed) if self.available(i) else RobotFailure(i, "robot unavailable")
        if isinstance(res, RobotFailure):
            if self._template is None:
                return res
            was = self.parked[i]
            self.parked[i], self.park_reason[i], self._parked_at[i] = True, res.message, time.monotonic()
            if not was and self.on_status is not None:
                self.on_status(i, False)
            obs = dict(self._template)
            obs["image"] = np.zeros_like(obs["image"])
            return obs, {"parked": res.message}
        if self.parked[i] and self.on_status is not None:
            self.on_status(i, True)
        self.parked[i] = False
        self._template = res[0]
        return res

    def step(self, actions: dict[int, np.ndarray]):
        self.submit({i: ("step", a) for i, a in actions.items()})
        return self.collect(list(actions))

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        """Steps of robots that are not parked go out to the inner fleet at once (its own
        ``submit`` where it has one); resets wait for ``collect`` (parking needs their reply)."""
        if self._ops is None:
            self._ops = SplitPhase(self.inner)
        self._out.update(cmds)
        live = {i: c for i, c in cmds.items() if c[0] == "step" and not self.parked[i]}
        if live:
            self._ops.submit(live)
            self._sent.update(live)

    def collect(self, indices) -> dict[int, Any]:
        indices = list(indices)
        sent = [i for i in indices if i in self._sent]
        got = self._ops.collect(sent) if sent else {}
        out: dict[int, Any] = {}
        for i in indices:
            cmd, arg = self._out.pop(i)
            self._sent.discard(i)
            if cmd == "reset":
                out[i] = self.reset(i, arg)
            elif i in got:
                out[i] = got[i]
                if isinstance(out[i], RobotFailure) and self.on_failure is not None:
                    self.on_failure(i, out[i])
            else:
                out[i] = RobotFailure(i, f"robot unavailable: {self.park_reason[i]}")
        return out

    def close(self) -> None:
        self.inner.close()
