"""Remote robots over websocket: the server side (``RemoteHub``) and a ``Fleet`` view of the
connected robots (``RemoteFleet``), so ``run_practice`` drives real robots unchanged.

Protocol v1 (full text with examples: docs/remote_protocol.md). All messages are JSON text
frames; the robot is the websocket client.

1. Connect to ``ws://WORKER:8765/robot`` (optionally ``?token=T``; T is a robot token,
   storage/credentials.py and docs/security.md).
2. Robot -> server, first message::

       {"type": "register", "token": "T", "protocol": 1, "name": "arm-1",
        "camera": {"height": 64, "width": 64},            # RGB frames of this size
        "action": {"dim": 2, "low": -1.0, "high": 1.0},   # scalars or per-dimension lists
        "proprio_dim": 2, "max_steps": 80,
        "tasks": ["tabletop:block2block"]}                  # [] = any task

   Server -> robot: ``{"type": "registered", "name": "arm-1", "protocol": 1}`` or an
   ``error``. A wrong token closes the socket (4401); a name already connected: 4409.
3. Server -> robot: ``{"type": "reset", "request_id": 7, "seed": 123, "task": "..."}`` and
   ``{"type": "action", "request_id": 8, "action": [0.1, -0.3]}`` (clipped to low/high).
   Robot -> server, the reply to each (same request_id)::

       {"type": "observation", "request_id": 8,
        "image": {"encoding": "png" | "jpeg" | "raw", "data": "<base64>"},
        "proprio": [0.1, 0.2], "instruction": "push the red moon to the blue cube",
        "success": null, "terminated": false, "truncated": false, "info": {}}

   ``raw`` is the HxWx3 uint8 array's bytes. ``success`` is ground truth if the robot knows it
   (a simulator), else null; Dojo never rewards with it.
4. Errors: a malformed message (not JSON, unknown type, a missing or mistyped field, nested
   over 64 levels, NaN; parsed in core/worker/robot_messages.py), an image of the
   wrong shape, or one over ``max_message_bytes`` gets ``{"type": "error", "code": ...,
   "message": ..., "request_id": ...}`` on THAT connection only; the request stays open, so
   the robot may send a corrected observation before the step timeout. Other robots are not
   affected. A robot that disconnects or times out mid-episode fails that step
   (``RobotFailure``): its episode is aborted, the rest of the fleet goes on, and the slot
   waits for the same (or another compatible) robot to connect again.

Threads: the hub lives on the worker's websocket loop (core/telemetry.WebsocketServer); the
fleet is called from the control thread and waits on futures, sending every robot its action
before waiting for any reply, so robots step in parallel.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from typing import Any, Callable

import numpy as np

from core.learning.fleets import RobotFailure, StepResult
from core.worker.message_guard import ErrorTally, internal_error, json_type, load_message, log_failure, refuse
# The message parsing lives in robot_messages.py; MAX_SIDE, ROBOT_NAME_RULE and decode_image
# are re-exported for code that imports them from here.
from core.worker.robot_messages import (MAX_SIDE, REGISTER_MAX_BYTES, ROBOT_NAME_RULE,  # noqa: F401
                                        ProtocolError, RobotSpec, decode_image,  # noqa: F401
                                        parse_observation, parse_register, request_id_of,
                                        robot_matches_task)
from core.worker.telemetry import PROTOCOL, WebsocketServer, refuse_credential, send_error

CLOSE_DUPLICATE = 4409
REGISTER_TIMEOUT_S = 10.0


class RemoteRobot:
    """One connected robot (loop-thread object; the fleet uses it through the hub)."""

    def __init__(self, spec: RobotSpec, connection):
        self.spec = spec
        self.name = spec.name
        self.connection = connection
        self.connected = True
        self.connected_at = time.time()
        self.pending: dict[int, asyncio.Future] = {}
        self.errors = 0  # malformed messages answered with an error
        self.consecutive_errors = 0  # closed at message_guard.MAX_CONSECUTIVE_ERRORS
        self.knows_success = False
        self.token_id: int | None = None  # the robot token it registered with (revocation re-check)


class RemoteHub:
    """Accepts robots on the ``/robot`` route of a WebsocketServer and keeps the registry.

    ``access`` checks robot tokens (core/worker/access.py ``RobotAccess``: ``check(token, name)``
    -> token id, ``revoked(ids)`` -> ids no longer valid, ``recheck_s``); both block on the
    database, so they run in the loop's thread pool, never on the loop itself.
    ``max_message_bytes`` (default 2 MiB): a larger message gets an ``oversized`` error.
    ``on_change(name, connected)`` is called on the loop thread when a robot (dis)connects."""

    def __init__(self, access, *, max_message_bytes: int = 2 * 2**20,
                 on_change: Callable[[str, bool], None] | None = None):
        self.access = access
        self._watcher: asyncio.Task | None = None
        self.server: WebsocketServer | None = None
        self.max_message_bytes = int(max_message_bytes)
        self.robots: dict[str, RemoteRobot] = {}
        self.on_change = on_change
        self._rid = 0
        self._changed = threading.Condition()

    def attach(self, server: WebsocketServer) -> None:
        self.server = server

    # --- registry, read from any thread ----------------------------------------------
    def connected(self) -> list[RemoteRobot]:
        return [r for r in list(self.robots.values()) if r.connected]

    def get(self, name: str) -> RemoteRobot | None:
        r = self.robots.get(name)
        return r if r is not None and r.connected else None

    def wait_for(self, n: int, timeout: float, predicate: Callable[[RemoteRobot], bool] = lambda r: True
                 ) -> list[RemoteRobot]:
        """Block until ``n`` connected robots satisfy ``predicate`` (or the timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ok = [r for r in self.connected() if predicate(r)]
                left = deadline - time.monotonic()
                if len(ok) >= n or left <= 0:
                    return ok
                self._changed.wait(min(left, 0.5))

    def _notify(self, name: str, connected: bool) -> None:
        with self._changed:
            self._changed.notify_all()
        if self.on_change is not None:
            try:
                self.on_change(name, connected)
            except Exception:  # noqa: BLE001
                pass

    # --- loop side ---------------------------------------------------------------------
    async def handler(self, connection, credential: str | None) -> None:
        robot = await self._register(connection, credential)
        if robot is None:
            return
        try:
            async for raw in connection:
                await self._on_message(robot, raw)
        finally:
            robot.connected = False
            for fut in robot.pending.values():
                if not fut.done():
                    fut.set_result(RobotFailure(-1, f"robot {robot.name} disconnected"))
            robot.pending.clear()
            if self.robots.get(robot.name) is robot:
                self._notify(robot.name, False)

    async def _register(self, connection, credential: str | None) -> RemoteRobot | None:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        tally = ErrorTally()  # bad messages before registering count towards the same bound
        while True:
            try:
                raw = await asyncio.wait_for(connection.recv(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await send_error(connection, "register_timeout", f"send a register message within "
                                 f"{REGISTER_TIMEOUT_S:.0f} s of connecting")
                await connection.close(1008, "register timeout")
                return None
            try:
                msg = self._parse(raw, min(REGISTER_MAX_BYTES, self.max_message_bytes))
            except ProtocolError as e:
                await refuse(connection, tally, e.code, str(e))
                continue
            if msg.get("type") != "register":
                await refuse(connection, tally, "not_registered", "the first message must be a register message")
                continue
            try:
                spec = parse_register(msg)
            except ProtocolError as e:
                await refuse(connection, tally, e.code, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a bug must cost this message, not the connection
                await refuse(connection, tally, *internal_error("/robot", connection, e))
                continue
            # The token is checked once the name is known: a token may be bound to one robot name.
            token = credential if credential is not None else msg.get("token")
            try:
                token_id = await asyncio.get_running_loop().run_in_executor(None, self.access.check, token, spec.name)
            except ValueError as e:  # storage.credentials.CredentialError
                await refuse_credential(connection, str(e))
                return None
            old = self.robots.get(spec.name)
            if old is not None and old.connected:
                await send_error(connection, "duplicate_name", f"a robot named {spec.name!r} is already connected")
                await connection.close(CLOSE_DUPLICATE, "duplicate name")
                return None
            robot = RemoteRobot(spec, connection)
            robot.token_id = token_id
            self.robots[spec.name] = robot
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.create_task(self._watch_revocations())
            await connection.send(json.dumps({"type": "registered", "name": spec.name, "protocol": PROTOCOL}))
            self._notify(spec.name, True)
            return robot

    async def _watch_revocations(self) -> None:
        """Every ``access.recheck_s``: robots whose token was revoked are told so and closed (4401)."""
        loop = asyncio.get_running_loop()
        while any(r.connected for r in self.robots.values()):
            await asyncio.sleep(self.access.recheck_s)
            robots = [r for r in self.connected() if r.token_id is not None]
            try:
                revoked = await loop.run_in_executor(None, self.access.revoked, [r.token_id for r in robots])
            except Exception as e:  # noqa: BLE001 - a database hiccup: keep the robots, try again next time
                log_failure("/robot (token re-check)", None, e)
                continue
            for r in robots:
                if r.token_id in revoked:
                    await refuse_credential(r.connection, f"robot {r.name}: its token was revoked; ask a "
                                            "supervisor for a new one")

    def _parse(self, raw: Any, max_bytes: int | None = None) -> dict[str, Any]:
        return load_message(raw, self.max_message_bytes if max_bytes is None else max_bytes)

    async def _on_message(self, robot: RemoteRobot, raw: Any) -> None:
        """One message from a registered robot. A bad one is answered with an error naming the
        field, on this connection only; the robot's open requests stay open."""
        rid = None
        try:
            msg = self._parse(raw)
            rid = request_id_of(msg)
            kind = msg.get("type")
            if kind == "observation":
                fut = robot.pending.get(rid) if rid is not None else None
                if fut is None or fut.done():
                    raise ProtocolError("unexpected", "observation.request_id is missing" if rid is None else
                                        f"observation.request_id {rid} is not an open request")
                obs, extra = parse_observation(msg, robot.spec)
                robot.knows_success = robot.knows_success or extra["knows_success"]
                fut.set_result((obs, extra))
            elif kind in ("ping", "log"):
                if kind == "ping":
                    await robot.connection.send(json.dumps({"type": "pong", "time": time.time()}))
            elif kind == "error":  # the robot cannot serve that request: fail it now
                fut = robot.pending.get(rid) if rid is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(RobotFailure(-1, f"robot {robot.name}: {str(msg.get('message'))[:500]}"))
            else:
                got = json.dumps(kind)[:40] if isinstance(kind, str) else json_type(kind)
                raise ProtocolError("unknown_type", f"type must be observation, ping, log or error, got {got}")
        except ProtocolError as e:
            await refuse(robot.connection, robot, e.code, str(e), request_id=rid)
        except Exception as e:  # noqa: BLE001 - a bug must cost this message, not the robot's episode
            await refuse(robot.connection, robot, *internal_error("/robot", robot.connection, e), request_id=rid)
        else:
            robot.consecutive_errors = 0

    async def request(self, name: str, msg: dict[str, Any], timeout: float) -> Any:
        """Send ``msg`` with a fresh request_id to robot ``name``; the parsed reply, or a
        RobotFailure (index -1; the fleet fills it in)."""
        robot = self.get(name)
        if robot is None:
            return RobotFailure(-1, f"robot {name} is not connected")
        self._rid += 1
        rid = self._rid
        fut = asyncio.get_running_loop().create_future()
        robot.pending[rid] = fut
        try:
            await robot.connection.send(json.dumps({**msg, "request_id": rid}))
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return RobotFailure(-1, f"robot {name} did not answer {msg.get('type')} within {timeout:.0f} s")
        except Exception as e:  # noqa: BLE001 - connection closed while sending
            return RobotFailure(-1, f"robot {name} disconnected ({type(e).__name__})")
        finally:
            robot.pending.pop(rid, None)


class RemoteFleet:
    """The connected robots as a ``core.learning.fleets.Fleet`` of ``size`` slots.

    A slot is bound to a robot by name; a robot that reconnects with the same name gets its
    slot back, and a slot whose robot stays away is given to another compatible robot.
    ``image_size`` (H, W) resizes observations to what the policy expects. ``task_spec``: the
    env_config of a remote-robot task; then a robot is compatible when its registered spec
    matches it (``robot_matches_task``), else when it can do ``task`` with ``action_dim``.
    """

    def __init__(self, hub: RemoteHub, size: int, *, task: str | None = None, action_dim: int | None = None,
                 image_size: tuple[int, int] | None = None, max_steps: int | None = None,
                 wait_s: float = 60.0, min_robots: int | None = None, step_timeout_s: float = 10.0,
                 reset_timeout_s: float = 60.0, task_spec: dict[str, Any] | None = None):
        if hub.server is None or hub.server.loop is None:
            raise RuntimeError("the remote hub is not being served; start the worker with its websocket "
                               "server (no --no-server) to use remote robots")
        self.hub, self.task, self.action_dim, self.task_spec = hub, task, action_dim, task_spec
        self.image_size = tuple(image_size) if image_size else None
        self.size = max(1, int(size))
        self.step_timeout_s, self.reset_timeout_s = float(step_timeout_s), float(reset_timeout_s)
        need = self.size if min_robots is None else max(1, min(self.size, int(min_robots)))
        robots = hub.wait_for(need, wait_s, self.compatible)
        if len(robots) < need:
            raise RuntimeError(f"waited {wait_s:.0f} s for {need} remote robot(s) able to do task {task!r} "
                               f"with action dim {action_dim}; {len(robots)} connected. Fix: start the robots' "
                               "clients (python -m sim_backends.remote.client --url ws://HOST:PORT/robot "
                               "--token-file T ...) or lower the fleet size")
        robots.sort(key=lambda r: r.connected_at)
        self.slots: list[str | None] = [r.name for r in robots[: self.size]] + [None] * (self.size - len(robots))
        steps = {r.spec.max_steps for r in robots if r.spec.max_steps}
        self.max_steps = int(max_steps or (min(steps) if steps else 80))
        self.reply_timeout_s = self.step_timeout_s
        self._pending: dict[int, tuple[str, Any]] = {}  # submitted commands (a reset's seed, a step's reply)

    pipelined = True  # robots act while the learner works (see ``core.learning.rollout.rollout_groups``)

    def compatible(self, robot: RemoteRobot) -> bool:
        if self.task_spec is not None:  # a remote-robot task: the robot's whole spec must match it
            return robot_matches_task(self.task_spec, robot.spec.to_json(), self.task)
        return robot.spec.can_do(self.task) and (self.action_dim is None or robot.spec.action_dim == self.action_dim)

    @property
    def knows_success(self) -> bool:
        return any(r.knows_success for r in (self.hub.robots.get(n) for n in self.slots if n) if r is not None)

    def robot_name(self, i: int) -> str | None:
        return self.slots[i]

    def robot_spec(self, i: int) -> RobotSpec | None:
        r = self.hub.robots.get(self.slots[i]) if self.slots[i] else None
        return r.spec if r is not None else None

    def available(self, i: int) -> bool:
        """A robot is connected in slot i (rebinding a free compatible robot if its own is gone)."""
        name = self.slots[i]
        if name is not None and self.hub.get(name) is not None:
            return True
        taken = {n for n in self.slots if n}
        for r in sorted(self.hub.connected(), key=lambda r: r.connected_at):
            if r.name not in taken and self.compatible(r):
                self.slots[i] = r.name
                return True
        return False

    def _to_obs(self, reply: Any, i: int):
        if isinstance(reply, RobotFailure):
            return RobotFailure(i, reply.message)
        obs, extra = reply
        if self.image_size and obs["image"].shape[:2] != self.image_size:
            from PIL import Image

            h, w = self.image_size
            obs["image"] = np.asarray(Image.fromarray(obs["image"]).resize((w, h), Image.BILINEAR), np.uint8)
        return obs, extra

    def reset(self, i: int, seed: int):
        if not self.available(i):
            return RobotFailure(i, f"no robot connected in slot {i}")
        msg = {"type": "reset", "seed": int(seed), "task": self.task}
        res = self._to_obs(self.hub.server.call(self.hub.request(self.slots[i], msg, self.reset_timeout_s)), i)
        if isinstance(res, RobotFailure):
            return res
        obs, extra = res
        return obs, extra["info"]

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, StepResult | RobotFailure]:
        self.submit({i: ("step", a) for i, a in actions.items()})
        return self.collect(list(actions))

    def submit(self, cmds: dict[int, tuple[str, Any]]) -> None:
        """Actions go out to the robots at once; a reset waits for ``collect`` (it may rebind the slot)."""
        for i, (cmd, arg) in cmds.items():
            if cmd == "reset":
                self._pending[i] = ("reset", arg)
            else:
                self._pending[i] = ("step", self._send_action(i, arg))

    def collect(self, indices) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for i in indices:
            kind, val = self._pending.pop(i)
            out[i] = self.reset(i, val) if kind == "reset" else self._step_reply(i, val)
        return out

    def _send_action(self, i: int, a: np.ndarray) -> concurrent.futures.Future | RobotFailure:
        name = self.slots[i]
        robot = self.hub.get(name) if name else None
        if robot is None:
            return RobotFailure(i, f"robot {name} disconnected")
        a = np.asarray(a, np.float64).reshape(-1)
        if a.shape[0] != robot.spec.action_dim or not np.all(np.isfinite(a)):
            return RobotFailure(i, f"action {a.tolist()} does not fit robot {name} (dim {robot.spec.action_dim})")
        a = np.clip(a, robot.spec.action_low, robot.spec.action_high)
        return asyncio.run_coroutine_threadsafe(
            self.hub.request(name, {"type": "action", "action": a.tolist()}, self.step_timeout_s), self.hub.server.loop)

    def _step_reply(self, i: int, fut: concurrent.futures.Future | RobotFailure) -> StepResult | RobotFailure:
        if isinstance(fut, RobotFailure):
            return fut
        try:
            res = self._to_obs(fut.result(self.step_timeout_s + 5), i)
        except concurrent.futures.TimeoutError:
            res = RobotFailure(i, f"robot {self.slots[i]} timed out")
        if isinstance(res, RobotFailure):
            return res
        obs, extra = res
        return obs, extra["reward"], extra["terminated"], extra["truncated"], extra["info"]

    def close(self) -> None:
        pass  # robots stay connected to the hub for the next job
