"""Live telemetry: the worker's websocket endpoint, and what it publishes per robot.

The worker runs one websocket server (``WebsocketServer``, the ``websockets`` package on an
asyncio loop in a daemon thread). It serves two paths:

- ``/telemetry``: live feeds for browsers (this module, ``TelemetryHub``);
- ``/robot``: remote robots joining the fleet (``core/worker/remote.py``, docs/remote_protocol.md).

URL: ``ws://HOST:PORT/telemetry?ticket=TICKET`` (default port 8765). The ticket is a viewer
ticket (storage/credentials.py: read-only, short-lived, minted by the web app for its logged-in
user); it may instead be sent as the first message, ``{"ticket": "..."}``, within 5 s. A
missing, forged or expired ticket gets an ``error`` saying why and the socket is closed with
code 4401 (after the handshake, so a browser can tell "refused" from "worker down").

Messages (server -> browser) are JSON **text** frames; images are base64 JPEG inside them, so
browser JS needs only ``JSON.parse`` and ``img.src = "data:image/jpeg;base64," + m.jpeg``.

``{"type": "hello", "protocol": 1, "robots": ["w1/sim-0", ...]}``
    once, after authentication: the robots seen so far.

``{"type": "frame", ...}``: one control step of one robot, at the control rate::

    robot          robot name (str; unique, the robots table's name)
    robot_id       robots.id or null
    slot           index of the robot in the fleet
    job_id, session_id, task_id      (int or null)
    checkpoint_id  checkpoints.id of the policy acting (null if not registered yet)
    episode_uid    episodes.uid of the running episode (null while parked/held before start)
    episode_id     episodes.id or null (set once the episode row exists)
    seed, instruction
    step           t, the frame index within the episode (0 = after reset)
    d              d(o_t, g): steps-to-go estimate of the frozen reward model (float)
    reward         d(o_{t-1}, g) - d(o_t, g), the progress reward of the last action (null at t=0)
    detector       {"count": consecutive frames with d <= s, "patience": p, "threshold": s,
                    "fired": count >= patience}
    status         "running" | "paused" | "stopped" | "session_paused" | "parked" | "evaluating"
                   (parked: the robot is unavailable, e.g. a remote robot that disconnected;
                   evaluating: practice is scoring its policy on the selection seeds: one
                   message per robot with step, d and episode null and detector "evaluating"
                   when it starts, then the evaluation's frames, with episode_uid
                   "eval-<seed>", episode_id null, d from the policy's own steps-to-go head
                   and detector "evaluating": ground truth ends those episodes)
    time           server wall time when the message was sent (a kept last message: when it
                   was published), seconds since the epoch
    seq            per-robot message counter (gaps = frames this client did not get)
    jpeg           base64 JPEG of the camera image (omitted when the producer had none)

``{"type": "episode", "robot": ..., "episode_uid": ..., "episode_id": ..., "end_reason": ...,
"length": T, "detector_success": bool, "override": bool|null, "gt_success": bool|null,
"return": float}``: an episode ended (never dropped for slow clients, up to 64 queued).

Browser -> server (optional): ``{"type": "subscribe", "robots": ["name", ...]}`` restricts the
feed (``null`` or ``[]`` = all robots, the default). Anything else gets ``{"type": "error",
"code", "message", "request_id": null}`` and the connection stays (``parse_viewer_message``;
limits in core/worker/message_guard.py).

A client that connects, or subscribes, gets each (subscribed) robot's last message first, so
a card is not blank while a robot is between frames (an evaluation, a paused session); when a
job ends its robots' last message says ``"status": "offline"``.

Slow or stalled clients never slow the control loop: ``publish`` only stores the message in
a dict and wakes the event loop; each client keeps at most ONE pending frame per robot (a
newer frame replaces an unsent one, counted in ``dropped``), and sending happens on the loop
thread, where a stalled socket only blocks that client's own sender task.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

# (send_error is imported from here by core/worker/remote.py too.)
from core.worker.message_guard import (ProtocolError, internal_error, json_type, load_message, log_failure,
                                       refuse, send_error)

log = logging.getLogger("dojo.telemetry")
# The websockets library logs every connection's opening and closing at INFO: two lines a
# connection, free for anyone who can reach the port (no credential is needed to connect), so
# they are kept at DEBUG level and below. Set this logger to DEBUG to see them.
CONNECTION_LOG = logging.getLogger("dojo.websocket.connections")
CONNECTION_LOG.setLevel(logging.WARNING)

PROTOCOL = 1
DEFAULT_PORT = 8765
CLOSE_UNAUTHORIZED = 4401
AUTH_TIMEOUT_S = 5.0

Handler = Callable[[Any, "str | None"], Awaitable[None]]  # (connection, the URL's credential or None)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """uint8 HxWx3 -> JPEG bytes (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def query_credential(path: str) -> str | None:
    """The credential given in the URL: ``?ticket=`` (browsers) or ``?token=`` (robots)."""
    q = parse_qs(urlsplit(path).query)
    vals = q.get("ticket") or q.get("token")
    return vals[0] if vals else None


class WebsocketServer:
    """A websockets server on its own asyncio loop in a daemon thread, routing by path.

    ``routes`` maps a path ("/telemetry") to ``async handler(connection, credential)``, where
    ``credential`` is the URL's ``?ticket=`` / ``?token=`` or None. Each route checks its own
    kind of credential (docs/security.md): the server knows no secret."""

    def __init__(self, routes: dict[str, Handler], host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, max_message_bytes: int = 8 * 2**20):
        self.routes = dict(routes)
        self.host, self.port = host, int(port)
        self.max_message_bytes = int(max_message_bytes)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "WebsocketServer":
        self._thread = threading.Thread(target=self._run, name="dojo-websocket", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"websocket server did not start on {self.host}:{self.port} within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"cannot serve websockets on {self.host}:{self.port}: {self._error}. Fix: pick "
                               "another port (--telemetry-port) or stop what is using it") from self._error
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()
        finally:
            try:  # background tasks (a hub's token re-check) end with the server, not mid-await
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for t in pending:
                    t.cancel()
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            except Exception:  # noqa: BLE001
                pass
            self.loop.close()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        # The transport limit is above our own per-message check (max_message_bytes), so an
        # oversized message reaches the handler and gets an error reply instead of a hard close.
        async with serve(self._dispatch, self.host, self.port, process_request=self._process_request,
                         compression=None, max_size=self.max_message_bytes * 4 + 2**20,
                         ping_interval=20, ping_timeout=20, write_limit=2**16, logger=CONNECTION_LOG) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop is not None and self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def url(self, path: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"ws://{host}:{self.port}{path}"

    def call(self, coro, timeout: float | None = None) -> Any:
        """Run a coroutine on the server loop from another thread and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- handshake and routing ---------------------------------------------------------
    def _process_request(self, connection, request):
        path = urlsplit(request.path).path
        if path not in self.routes:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no endpoint {path}; endpoints: {sorted(self.routes)}\n")
        return None

    async def _dispatch(self, connection) -> None:
        path = urlsplit(connection.request.path).path
        try:
            await self.routes[path](connection, query_credential(connection.request.path))
        except Exception as e:  # noqa: BLE001 - one connection's failure must not affect others
            from websockets.exceptions import ConnectionClosed

            # A client's bad input is answered inside the handlers; anything else is one
            # rate-limited line, no traceback: a client that can trigger it must not fill the log.
            if not isinstance(e, (ConnectionClosed, ProtocolError)):
                log_failure(path, connection, e)



async def first_message_credential(connection, key: str) -> str | None:
    """The credential ``key`` ("ticket") of the first message, waited for ``AUTH_TIMEOUT_S``;
    None when it does not come or is not there (the caller refuses)."""
    try:
        raw = await asyncio.wait_for(connection.recv(), AUTH_TIMEOUT_S)
        msg = load_message(raw, VIEWER_MAX_MESSAGE_BYTES)  # size/depth-checked: nobody is known yet
    except (asyncio.TimeoutError, ValueError, TypeError):
        return None
    value = msg.get(key)
    return value if isinstance(value, str) else None


async def refuse_credential(connection, reason: str) -> None:
    """An ``unauthorized`` error saying why, then close 4401."""
    await send_error(connection, "unauthorized", reason)
    await connection.close(CLOSE_UNAUTHORIZED, "unauthorized")


# /telemetry limits: a browser sends only a ticket and subscriptions (docs/remote_protocol.md).
VIEWER_MAX_MESSAGE_BYTES = 64 * 1024
MAX_SUBSCRIBE_ROBOTS = 1024  # names in one subscribe message
MAX_VIEWER_NAME_CHARS = 200  # telemetry robot names ("worker/robot")


def parse_viewer_message(raw: Any) -> dict[str, Any]:
    """A /telemetry message -> {"type": "subscribe", "robots": [names] | None} or
    {"type": "ticket"} (a redundant ticket message); ProtocolError for anything else."""
    msg = load_message(raw, VIEWER_MAX_MESSAGE_BYTES)
    kind = msg.get("type")
    if kind is None and "ticket" in msg:
        return {"type": "ticket"}
    if kind != "subscribe":
        got = json.dumps(kind)[:40] if isinstance(kind, str) else json_type(kind)
        raise ProtocolError("unknown_type", f'type must be "subscribe" (the only message understood on '
                            f"/telemetry), got {got}")
    robots = msg.get("robots")
    if robots is None:
        return {"type": "subscribe", "robots": None}
    if not isinstance(robots, list):
        raise ProtocolError("bad_subscribe", f"subscribe.robots must be null or an array of robot names, "
                            f"got {json_type(robots)}")
    if len(robots) > MAX_SUBSCRIBE_ROBOTS:
        raise ProtocolError("bad_subscribe", f"subscribe.robots has {len(robots)} names; at most "
                            f"{MAX_SUBSCRIBE_ROBOTS}")
    for i, r in enumerate(robots):
        if not isinstance(r, str) or not 1 <= len(r) <= MAX_VIEWER_NAME_CHARS:
            raise ProtocolError("bad_subscribe", f"subscribe.robots[{i}] must be a robot name (a string of "
                                f"1..{MAX_VIEWER_NAME_CHARS} characters), got {json_type(r)}")
    return {"type": "subscribe", "robots": list(robots) or None}


@dataclass
class _Client:
    connection: Any
    robots: set[str] | None = None  # None = all
    pending: dict[str, str] = field(default_factory=dict)  # robot -> latest unsent frame (JSON)
    events: deque = field(default_factory=lambda: deque(maxlen=64))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    dropped: int = 0
    replayed: set[str] = field(default_factory=set)  # robots whose kept last message was queued
    errors: int = 0  # malformed messages answered with an error
    consecutive_errors: int = 0


class TelemetryHub:
    """Per-robot live telemetry for browsers. ``publish`` is thread-safe, O(1) and never
    blocks; call it from the control loop. Attach ``handler`` to a WebsocketServer route.
    ``access.check(ticket)`` accepts a viewer ticket or raises (core/worker/access.py)."""

    def __init__(self, access):
        self.access = access
        self.server: WebsocketServer | None = None
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[dict[str, Any], bytes | None]] = {}
        # Every robot's last message, kept even with nobody watching: a browser that connects
        # (or subscribes) later starts from it instead of a blank card, e.g. during a long
        # evaluation that announced itself once. Replaced by each publish; O(1).
        self._snapshot: dict[str, tuple[dict[str, Any], bytes | None, float]] = {}
        self._events: list[dict[str, Any]] = []
        self._scheduled = False
        self._clients: list[_Client] = []
        self._seq: dict[str, int] = {}
        self.robots: list[str] = []
        self.published = 0

    def attach(self, server: WebsocketServer) -> None:
        self.server = server

    @property
    def n_clients(self) -> int:
        return len(self._clients)

    def client_stats(self) -> list[dict[str, int]]:
        return [{"sent": c.sent, "dropped": c.dropped, "pending": len(c.pending)} for c in list(self._clients)]

    # --- producer side (control thread) ------------------------------------------------
    def publish(self, robot: str, message: dict[str, Any], jpeg: bytes | None = None) -> None:
        """Queue the latest frame of ``robot`` for every subscribed client (never blocks)."""
        self.published += 1
        if robot not in self._seq:
            self._seq[robot] = 0
            self.robots.append(robot)
        self._seq[robot] += 1
        framed = {**message, "type": "frame", "robot": robot, "seq": self._seq[robot]}
        with self._lock:
            self._snapshot[robot] = (framed, jpeg, time.time())
        if not self._clients or self.server is None or self.server.loop is None:
            return
        with self._lock:
            self._latest[robot] = (dict(framed), jpeg)
            if self._scheduled:
                return
            self._scheduled = True
        self.server.loop.call_soon_threadsafe(self._drain)

    def publish_event(self, robot: str, message: dict[str, Any]) -> None:
        """An episode event: kept (up to 64 per client), not replaced by newer frames."""
        if not self._clients or self.server is None or self.server.loop is None:
            return
        with self._lock:
            self._events.append({"type": "episode", **message, "robot": robot})
            if self._scheduled:
                return
            self._scheduled = True
        self.server.loop.call_soon_threadsafe(self._drain)

    # --- loop side ---------------------------------------------------------------------
    def _drain(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, {}
            events, self._events = self._events, []
            self._scheduled = False
        now = time.time()
        for robot, (msg, jpeg) in latest.items():
            text = _encode_frame(msg, jpeg, now)  # encoded once, shared by all clients
            for c in self._clients:
                if c.robots is None or robot in c.robots:
                    if robot in c.pending:
                        c.dropped += 1
                    c.pending[robot] = text
                    c.wake.set()
        for ev in events:
            text = json.dumps(ev, default=_json_default)
            for c in self._clients:
                if c.robots is None or ev["robot"] in c.robots:
                    c.events.append(text)
                    c.wake.set()

    async def handler(self, connection, credential: str | None) -> None:
        assert self.server is not None
        ticket = credential if credential is not None else await first_message_credential(connection, "ticket")
        try:
            self.access.check(ticket)
        except ValueError as e:  # storage.credentials.CredentialError: the reason goes to the browser
            await refuse_credential(connection, str(e) if ticket else "a viewer ticket is required: connect "
                                    'with ?ticket=... or send {"ticket": "..."} first; the Live page has one')
            return
        client = _Client(connection)
        await connection.send(json.dumps({"type": "hello", "protocol": PROTOCOL, "robots": list(self.robots)}))
        self._clients.append(client)
        self._replay(client)
        sender = asyncio.create_task(self._sender(client))
        try:
            async for raw in connection:
                await self._on_message(client, raw)
        finally:
            self._clients.remove(client)
            sender.cancel()

    async def _on_message(self, client: _Client, raw: Any) -> None:
        """One browser message; a bad one gets an error reply and the connection stays open."""
        try:
            msg = parse_viewer_message(raw)
            if msg["type"] == "subscribe":  # (a redundant ticket message needs nothing)
                client.robots = set(msg["robots"]) if msg["robots"] else None
                client.pending = {r: t for r, t in client.pending.items()
                                  if client.robots is None or r in client.robots}
                self._replay(client)
        except ProtocolError as e:
            await refuse(client.connection, client, e.code, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must cost this message, not the connection
            await refuse(client.connection, client, *internal_error("/telemetry", client.connection, e))
        else:
            client.consecutive_errors = 0

    def forget(self, robots: list[str] | None = None) -> None:
        """Drop the kept last messages of ``robots`` (all when None): they are no longer live."""
        with self._lock:
            for r in (list(self._snapshot) if robots is None else robots):
                self._snapshot.pop(r, None)

    def _replay(self, client: _Client) -> None:
        """Queue each (subscribed) robot's last message for a client that just joined or
        subscribed, unless a newer one is already queued for it. Runs on the loop thread."""
        with self._lock:
            snap = dict(self._snapshot)
        for robot, (msg, jpeg, at) in snap.items():
            if (client.robots is None or robot in client.robots) and robot not in client.pending \
                    and robot not in client.replayed:
                client.pending[robot] = _encode_frame(dict(msg), jpeg, at)
                client.replayed.add(robot)
        if client.pending:
            client.wake.set()

    async def _sender(self, client: _Client) -> None:
        while True:
            await client.wake.wait()
            client.wake.clear()
            while client.events:
                await client.connection.send(client.events.popleft())
                client.sent += 1
            while client.pending:
                robot = next(iter(client.pending))
                text = client.pending.pop(robot)
                await client.connection.send(text)  # waits only on THIS client's socket
                client.sent += 1


def _encode_frame(msg: dict[str, Any], jpeg: bytes | None, at: float) -> str:
    msg["time"] = at
    if jpeg is not None:
        msg["jpeg"] = base64.b64encode(jpeg).decode("ascii")
    return json.dumps(msg, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
