"""Reference remote-robot client: wraps a local simulator as a "remote robot" that joins a
Dojo worker's fleet over websocket (protocol: docs/remote_protocol.md, core/worker/remote.py).

    python -m sim_backends.remote.client --url ws://WORKER:8765/robot --token-file T.txt \\
        --name sim-arm-1 --backend tabletop --family block2block [--encoding png]

A real robot's client does the same with its camera and controller in place of ``env``:
answer ``reset`` with the first observation and each ``action`` with the next one. The
client reconnects after a dropped connection (``--reconnect``) with the same name, so the
worker gives it back its fleet slot.

The simulator is built with ``terminate_on_success`` False whatever ``--env-config`` says
(``make_robot_env``): a remote robot's episode ends by the worker's detector, the step limit
or a person (docs/remote_protocol.md); the simulator's ground truth is only reported beside
it (``success``), as a real robot's client cannot know it.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO

PROTOCOL = 1


def encode_image(image: np.ndarray, encoding: str = "png", quality: int = 90) -> dict[str, str]:
    image = np.asarray(image, np.uint8)
    if encoding == "raw":
        data = image.tobytes()
    else:
        from PIL import Image

        buf = io.BytesIO()
        if encoding == "png":
            Image.fromarray(image).save(buf, "PNG")
        elif encoding == "jpeg":
            Image.fromarray(image).save(buf, "JPEG", quality=quality)
        else:
            raise ValueError(f"encoding must be png, jpeg or raw, got {encoding!r}")
        data = buf.getvalue()
    return {"encoding": encoding, "data": base64.b64encode(data).decode("ascii")}


class RemoteRobotClient:
    """Serves one environment (anything with reset(seed=)/step(action) returning the
    sim_backends observation dict) to a worker."""

    def __init__(self, url: str, token: str, name: str, env: Any, *, tasks: list[str] | None = None,
                 encoding: str = "png", action_low: float = -1.0, action_high: float = 1.0):
        self.url, self.token, self.name, self.env = url, token, name, env
        self.tasks = list(tasks or [])
        self.encoding = encoding
        self.action_low, self.action_high = action_low, action_high
        self.conn = None
        self.errors: list[dict[str, Any]] = []  # error messages the server sent us
        self.steps = 0
        self.resets = 0

    def register_message(self) -> dict[str, Any]:
        h, w = self.env.image_shape[:2]
        return {"type": "register", "token": self.token, "protocol": PROTOCOL, "name": self.name,
                "camera": {"height": int(h), "width": int(w)},
                "action": {"dim": int(self.env.action_dim), "low": self.action_low, "high": self.action_high},
                "proprio_dim": int(self.env.proprio_dim), "max_steps": int(self.env.max_steps),
                "tasks": self.tasks}

    def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        from websockets.sync.client import connect

        self.conn = connect(self.url, open_timeout=timeout, compression=None, max_size=64 * 2**20, legacy=True)
        self.conn.send(json.dumps(self.register_message()))
        while True:
            reply = json.loads(self.conn.recv(timeout))
            if reply.get("type") == "registered":
                return reply
            if reply.get("type") == "error":
                self.errors.append(reply)
                raise ConnectionError(f"registration refused: {reply.get('code')}: {reply.get('message')}")

    def observation(self, request_id: int, obs: dict[str, Any], info: dict[str, Any], *,
                    terminated: bool = False, truncated: bool = False, reward: float = 0.0) -> dict[str, Any]:
        return {"type": "observation", "request_id": request_id,
                "image": encode_image(obs[OBS_IMAGE], self.encoding),
                "proprio": np.asarray(obs[OBS_PROPRIO], np.float64).tolist(),
                "instruction": obs[OBS_INSTRUCTION],
                "success": bool(info[INFO_SUCCESS]) if INFO_SUCCESS in info else None,
                "terminated": bool(terminated), "truncated": bool(truncated), "reward": float(reward),
                "info": {k: bool(v) for k, v in info.items() if k in ("off_table", "physics_error")}}

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to one server message (None: nothing to send)."""
        kind, rid = msg.get("type"), msg.get("request_id")
        if kind == "reset":
            obs, info = self.env.reset(seed=int(msg["seed"]))
            self.resets += 1
            return self.observation(rid, obs, info)
        if kind == "action":
            obs, reward, terminated, truncated, info = self.env.step(np.asarray(msg["action"], np.float32))
            self.steps += 1
            return self.observation(rid, obs, info, terminated=terminated, truncated=truncated, reward=reward)
        if kind == "error":
            self.errors.append(msg)
        return None

    def serve(self, stop: Any = None, max_seconds: float | None = None) -> None:
        """Answer requests until the connection closes (or ``stop.is_set()``)."""
        from websockets.exceptions import ConnectionClosed

        t0 = time.monotonic()
        while not (stop is not None and stop.is_set()):
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                break
            try:
                raw = self.conn.recv(0.5)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            msg = json.loads(raw)
            try:
                reply = self.handle(msg)
            except Exception as e:  # noqa: BLE001 - tell the worker, keep serving
                reply = {"type": "error", "request_id": msg.get("request_id"),
                         "message": f"{type(e).__name__}: {e}"}
            if reply is not None:
                self.conn.send(json.dumps(reply))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def make_robot_env(backend: str, config: dict[str, Any] | None = None) -> Any:
    """The simulator a reference client serves: ``make_env(backend, config)`` with
    ``terminate_on_success`` False, whatever ``config`` says. Its episodes end by the worker
    (the detector, the step limit, a person's stop) or by the simulator's own failures (an
    object off the table, a physics error), never at ground-truth success."""
    from sim_backends.registry import make_env

    return make_env(backend, {**(config or {}), "terminate_on_success": False})


def main(argv: list[str] | None = None) -> int:
    # allow_abbrev off: an old "--token SECRET" must fail, not be taken as --token-file (a path).
    ap = argparse.ArgumentParser(prog="python -m sim_backends.remote.client", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="ws://HOST:PORT/robot")
    # The token from a file or the environment, never the command line (ps shows it to every user).
    ap.add_argument("--token-file", default=os.environ.get("DOJO_ROBOT_TOKEN_FILE"),
                    help="file holding this robot's token (default: DOJO_ROBOT_TOKEN, else DOJO_ROBOT_TOKEN_FILE); "
                    "a supervisor creates tokens on Tasks & fleet or with: python -m storage robot-token create")
    ap.add_argument("--name", required=True, help="unique robot name")
    ap.add_argument("--backend", default="tabletop")
    ap.add_argument("--family", default="block2block")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--env-config", default=None, help="JSON env config (overrides --family/--image-size; "
                    "its terminate_on_success is always False)")
    ap.add_argument("--task", action="append", default=[], help="task name this robot can do (repeatable)")
    ap.add_argument("--encoding", default="png", choices=["png", "jpeg", "raw"])
    ap.add_argument("--reconnect", action="store_true", help="reconnect after a dropped connection")
    args = ap.parse_args(argv)
    token = os.environ.get("DOJO_ROBOT_TOKEN", "").strip()
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            ap.error(f"cannot read --token-file {args.token_file}: {e.strerror}")
    if not token:
        ap.error("no robot token: give --token-file PATH or set DOJO_ROBOT_TOKEN")

    cfg = json.loads(args.env_config) if args.env_config else {"family": args.family}
    if args.image_size and not args.env_config:
        cfg["image_size"] = args.image_size
    if cfg.get("terminate_on_success"):
        print(f"{args.name}: terminate_on_success is overridden to False (remote episodes end by the worker's "
              "detector, the step limit or a person)", file=sys.stderr, flush=True)
    env = make_robot_env(args.backend, cfg)
    client = RemoteRobotClient(args.url, token, args.name, env, tasks=args.task, encoding=args.encoding)
    try:
        while True:
            try:
                client.connect()
                print(f"{args.name}: registered with {args.url}", flush=True)
                client.serve()
                print(f"{args.name}: connection closed", flush=True)
            except (OSError, ConnectionError) as e:
                print(f"{args.name}: {e}", file=sys.stderr, flush=True)
                if "refused" in str(e) and "registration" in str(e):
                    return 2
            if not args.reconnect:
                return 0
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
        env.close()


if __name__ == "__main__":
    sys.exit(main())
