"""What a remote robot sends on ``/robot`` (docs/remote_protocol.md), parsed and strictly
validated: booleans are JSON booleans, numbers finite numbers, lists flat lists of numbers,
strings length-limited, robot names from ``ROBOT_NAME_RULE``.

Pure functions: each returns the parsed value or raises ``ProtocolError``, whose code and text
(naming the field, e.g. "observation.reward must be a number, got string \"abc\"") go back to
that robot; nothing else may escape them (tests/security/test_fuzz_parsers.py). The hub in
``core/worker/remote.py`` re-exports these names.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.worker.message_guard import ProtocolError, clip, json_type, load_message
from core.worker.telemetry import PROTOCOL
# A robot's name appears in URLs, file names, log lines and web pages; one plain character set
# keeps it inert in all of them. One rule, shared with the robot tokens bound to a name.
from storage.credentials import ROBOT_NAME_RULE, ROBOT_NAME_RULE_TEXT

__all__ = ["ProtocolError", "RobotSpec", "ROBOT_NAME_RULE", "decode_image", "load_message", "parse_observation",
           "parse_register", "request_id_of"]

MAX_SIDE = 4096  # camera height/width
MAX_ACTION_DIM = 64
MAX_PROPRIO_DIM = 1024
MAX_EPISODE_STEPS = 1_000_000
MAX_TASKS = 128  # names in register.tasks
MAX_TASK_CHARS = 200
MAX_INSTRUCTION_CHARS = 1000
MAX_INFO_KEYS = 32
MAX_INFO_KEY_CHARS = 64
MAX_INFO_TEXT_CHARS = 200
MAX_REQUEST_ID = 2**53 - 1  # the worker's ids are small positive integers; exact in every JSON parser
# The register message is read before the token is checked, so it gets a small size limit.
REGISTER_MAX_BYTES = 64 * 1024
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "raw": None}  # encoding -> Pillow format
BOOL_INFO_FLAGS = ("success", "off_table", "physics_error")  # read as booleans by the rollout


@dataclass
class RobotSpec:
    name: str
    height: int
    width: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    proprio_dim: int | None = None
    max_steps: int | None = None
    tasks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"camera": {"height": self.height, "width": self.width},
                "action": {"dim": self.action_dim, "low": self.action_low.tolist(), "high": self.action_high.tolist()},
                "proprio_dim": self.proprio_dim, "max_steps": self.max_steps, "tasks": list(self.tasks)}

    def can_do(self, task: str | None) -> bool:
        return not task or not self.tasks or task in self.tasks or "*" in self.tasks


# --- field checks: ``where`` names the field in the error ------------------------------
def _show(v: Any) -> str:
    """A value for an error message: its JSON type, with a short preview of a scalar."""
    if isinstance(v, (bool, int, float, str)):
        try:
            return f"{json_type(v)} {clip(json.dumps(v), 40)}"
        except ValueError:  # an integer too long to print
            pass
    return json_type(v)


def _object(v: Any, where: str, code: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(code, f"{where} must be an object, got {_show(v)}")
    return v


def _need(d: dict[str, Any], key: str, where: str, code: str) -> Any:
    if key not in d:
        raise ProtocolError(code, f"{where}.{key} is missing")
    return d[key]


def _int(v: Any, where: str, code: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(code, f"{where} must be an integer in {lo}..{hi}, got {_show(v)}")
    return v


def _number(v: Any, where: str, code: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(code, f"{where} must be a number, got {_show(v)}")
    try:
        f = float(v)
    except OverflowError:  # an integer beyond float range
        f = math.inf
    if not math.isfinite(f):
        raise ProtocolError(code, f"{where} must be a finite number, got {_show(v)}")
    return f


def _numbers(v: Any, where: str, code: str, max_len: int) -> np.ndarray:
    if not isinstance(v, list):
        raise ProtocolError(code, f"{where} must be an array of numbers, got {_show(v)}")
    if len(v) > max_len:
        raise ProtocolError(code, f"{where} has {len(v)} values; at most {max_len}")
    return np.array([_number(x, f"{where}[{i}]", code) for i, x in enumerate(v)], np.float64)


def _bool(msg: dict[str, Any], key: str, where: str, code: str, default: bool | None,
          nullable: bool = False) -> bool | None:
    v = msg.get(key, default)
    if v is None and nullable:
        return None
    if not isinstance(v, bool):  # "false" or 0 would be truthy / ambiguous
        raise ProtocolError(code, f"{where} must be true or false{' or null' if nullable else ''}, got {_show(v)}")
    return v


def _unicode(v: str, where: str, code: str) -> str:
    # JSON's "\ud800" escapes give lone surrogates, which the database and UTF-8 writers refuse
    # later, far from here (a failed episode write instead of an error reply).
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(code, f"{where} must be valid Unicode text (it has a lone surrogate)") from None
    return v


def _text(v: Any, where: str, code: str, max_chars: int) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > max_chars:
        raise ProtocolError(code, f"{where} must be a non-empty string of at most {max_chars} characters, "
                            f"got {json_type(v) if not isinstance(v, str) else f'{len(v)} characters'}")
    return _unicode(v, where, code)


def request_id_of(msg: dict[str, Any]) -> int | None:
    """A message's request_id: None when absent or null, else an integer in 0..MAX_REQUEST_ID."""
    rid = msg.get("request_id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        raise ProtocolError("bad_request_id", f"request_id must be the integer id of the request answered, "
                            f"got {_show(rid)}")
    return rid


# --- register ----------------------------------------------------------------------------
def _bounds(v: Any, where: str, dim: int) -> np.ndarray:
    if isinstance(v, list):
        if len(v) != dim:
            raise ProtocolError("bad_register", f"{where} must be a number or an array of {dim} numbers, got an "
                                f"array of {len(v)}")
        return _numbers(v, where, "bad_register", dim)
    return np.full(dim, _number(v, where, "bad_register"))


def parse_register(msg: dict[str, Any]) -> RobotSpec:
    """Validate a register message (raises ProtocolError naming the bad field)."""
    code = "bad_register"
    msg = _object(msg, "register", code)
    name = _need(msg, "name", "register", code)
    if not isinstance(name, str) or not ROBOT_NAME_RULE.fullmatch(name):
        raise ProtocolError(code, f"register.name must be {ROBOT_NAME_RULE_TEXT}; got {_show(name)}")
    proto = msg.get("protocol", PROTOCOL)
    if isinstance(proto, bool) or not isinstance(proto, int) or proto != PROTOCOL:
        raise ProtocolError(code, f"register.protocol {_show(proto)} is not supported; this worker speaks "
                            f"protocol {PROTOCOL}")
    cam = _object(_need(msg, "camera", "register", code), "register.camera", code)
    h = _int(_need(cam, "height", "register.camera", code), "register.camera.height", code, 1, MAX_SIDE)
    w = _int(_need(cam, "width", "register.camera", code), "register.camera.width", code, 1, MAX_SIDE)
    act = _object(_need(msg, "action", "register", code), "register.action", code)
    dim = _int(_need(act, "dim", "register.action", code), "register.action.dim", code, 1, MAX_ACTION_DIM)
    low = _bounds(act.get("low", -1.0), "register.action.low", dim)
    high = _bounds(act.get("high", 1.0), "register.action.high", dim)
    if not np.all(low < high):
        raise ProtocolError(code, "register.action.low must be below register.action.high")
    pd = msg.get("proprio_dim")
    if pd is not None:
        pd = _int(pd, "register.proprio_dim", code, 0, MAX_PROPRIO_DIM)
    ms = msg.get("max_steps")
    if ms is not None:
        ms = _int(ms, "register.max_steps", code, 1, MAX_EPISODE_STEPS)
    tasks = msg.get("tasks")
    tasks = [] if tasks is None else tasks
    if not isinstance(tasks, list) or len(tasks) > MAX_TASKS:
        raise ProtocolError(code, f"register.tasks must be an array of at most {MAX_TASKS} task names, "
                            f"got {_show(tasks) if not isinstance(tasks, list) else f'{len(tasks)} names'}")
    for i, t in enumerate(tasks):
        _text(t, f"register.tasks[{i}]", code, MAX_TASK_CHARS)
    return RobotSpec(name, h, w, dim, low, high, pd, ms, list(tasks))


# --- observation ---------------------------------------------------------------------------
def decode_image(img: Any, spec: RobotSpec) -> np.ndarray:
    """An observation's image -> uint8 HxWx3, checked against the registered camera."""
    where, code = "observation.image", "bad_observation"
    if not isinstance(img, dict):
        raise ProtocolError(code, f'{where} must be an object {{"encoding": "png"|"jpeg"|"raw", "data": base64}}, '
                            f"got {_show(img)}")
    enc = img.get("encoding", "png")
    if not isinstance(enc, str) or enc not in IMAGE_FORMATS:
        raise ProtocolError(code, f"{where}.encoding must be png, jpeg or raw, got {_show(enc)}")
    data = img.get("data")
    if not isinstance(data, str):
        raise ProtocolError(code, f"{where}.data must be a base64 string, got {_show(data)}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(code, f"{where}.data is not valid base64") from None
    if enc == "raw":
        want = spec.height * spec.width * 3
        if len(raw) != want:
            raise ProtocolError("bad_shape", f"{where}: raw image has {len(raw)} bytes; the registered camera "
                                f"{spec.height}x{spec.width}x3 needs {want}")
        return np.frombuffer(raw, np.uint8).reshape(spec.height, spec.width, 3).copy()
    from PIL import Image

    try:
        # Only the claimed format: Pillow would otherwise try every decoder it has on robot bytes.
        with Image.open(io.BytesIO(raw), formats=[IMAGE_FORMATS[enc]]) as im:
            if (im.height, im.width) != (spec.height, spec.width):  # before decoding any pixels
                raise ProtocolError("bad_shape", f"{where} is {im.height}x{im.width}; the registered camera is "
                                    f"{spec.height}x{spec.width} (RGB)")
            arr = np.asarray(im.convert("RGB"), np.uint8)
    except ProtocolError:
        raise
    except Image.DecompressionBombError:  # Pillow refuses the header's size before we see it
        raise ProtocolError("bad_shape", f"{where} is far larger than the registered camera "
                            f"{spec.height}x{spec.width}") from None
    except Exception as e:  # noqa: BLE001 - crafted files raise many kinds (OSError, SyntaxError, bombs...)
        raise ProtocolError(code, f"{where} could not be decoded as {enc} ({type(e).__name__})") from None
    if arr.shape != (spec.height, spec.width, 3):
        raise ProtocolError("bad_shape", f"{where} is {arr.shape[0]}x{arr.shape[1]}; the registered camera is "
                            f"{spec.height}x{spec.width} (RGB)")
    return arr


def _info(v: Any) -> dict[str, Any]:
    """observation.info: flat flags. Values are scalars; the known flags must be booleans."""
    where, code = "observation.info", "bad_observation"
    if v is None:
        return {}
    if not isinstance(v, dict) or len(v) > MAX_INFO_KEYS:
        raise ProtocolError(code, f"{where} must be an object of at most {MAX_INFO_KEYS} flags, got {_show(v)}"
                            + (f" with {len(v)} keys" if isinstance(v, dict) else ""))
    out: dict[str, Any] = {}
    for k, x in v.items():
        if not isinstance(k, str) or not 1 <= len(k) <= MAX_INFO_KEY_CHARS:
            raise ProtocolError(code, f"{where} keys must be 1..{MAX_INFO_KEY_CHARS} characters")
        at = f"{where}.{clip(k, MAX_INFO_KEY_CHARS)}"
        _unicode(k, f"{where} key", code)
        if k in BOOL_INFO_FLAGS and not isinstance(x, bool):
            raise ProtocolError(code, f"{at} must be true or false, got {_show(x)}")
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            _number(x, at, code)
        elif isinstance(x, str):
            if len(x) > MAX_INFO_TEXT_CHARS:
                raise ProtocolError(code, f"{at} is {len(x)} characters; at most {MAX_INFO_TEXT_CHARS}")
            _unicode(x, at, code)
        elif x is not None and not isinstance(x, bool):
            raise ProtocolError(code, f"{at} must be a boolean, number, string or null, got {_show(x)}")
        out[k] = x
    return out


def parse_observation(msg: dict[str, Any], spec: RobotSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """An observation message -> (obs, extra) with obs = {image, proprio, instruction}."""
    from sim_backends.base import INFO_SUCCESS, OBS_IMAGE, OBS_INSTRUCTION, OBS_PROPRIO

    code = "bad_observation"
    msg = _object(msg, "observation", code)
    # The cheap fields first; the image (the costly part) last.
    proprio = _numbers(msg.get("proprio", []), "observation.proprio", code, MAX_PROPRIO_DIM)
    if spec.proprio_dim is not None and proprio.shape[0] != spec.proprio_dim:
        raise ProtocolError("bad_shape", f"observation.proprio has {proprio.shape[0]} values; registered "
                            f"proprio_dim is {spec.proprio_dim}")
    if np.any(np.abs(proprio) > np.finfo(np.float32).max):  # the policy reads float32
        raise ProtocolError(code, "observation.proprio values must fit a 32-bit float (|x| < 3.4e38)")
    proprio = proprio.astype(np.float32)
    instruction = _text(msg.get("instruction"), "observation.instruction", code, MAX_INSTRUCTION_CHARS)
    success = _bool(msg, "success", "observation.success", code, None, nullable=True)
    terminated = _bool(msg, "terminated", "observation.terminated", code, False)
    truncated = _bool(msg, "truncated", "observation.truncated", code, False)
    reward = msg.get("reward")
    reward = 0.0 if reward is None else _number(reward, "observation.reward", code)
    info = _info(msg.get("info"))
    image = decode_image(msg.get("image"), spec)
    if success is not None:
        info[INFO_SUCCESS] = success
    obs = {OBS_IMAGE: image, OBS_PROPRIO: proprio, OBS_INSTRUCTION: instruction}
    return obs, {"info": info, "terminated": terminated, "truncated": truncated, "reward": reward,
                 "knows_success": success is not None}


def robot_matches_task(env_config: dict[str, Any], robot_spec: dict[str, Any], task_name: str | None = None) -> bool:
    """Whether a robot that registered with ``robot_spec`` (``RobotSpec.to_json()``: camera,
    action, proprio_dim, max_steps, tasks) can be offered the remote task with ``env_config``."""
    import numpy as np

    try:
        cam, rcam = env_config["camera"], robot_spec["camera"]
        act, ract = env_config["action"], robot_spec["action"]
        if (int(cam["height"]), int(cam["width"])) != (int(rcam["height"]), int(rcam["width"])):
            return False
        dim = int(act["dim"])
        if dim != int(ract["dim"]):
            return False
        for side, default in (("low", -1.0), ("high", 1.0)):
            want = np.broadcast_to(np.asarray(act.get(side, default), float), (dim,))
            got = np.broadcast_to(np.asarray(ract.get(side, default), float), (dim,))
            if not np.allclose(want, got, atol=1e-6, rtol=0.0):
                return False
        if env_config.get("proprio_dim") is not None and robot_spec.get("proprio_dim") != env_config["proprio_dim"]:
            return False
        if env_config.get("max_steps") and robot_spec.get("max_steps") and \
                int(robot_spec["max_steps"]) < int(env_config["max_steps"]):
            return False
    except (KeyError, TypeError, ValueError):
        return False
    tasks = list(robot_spec.get("tasks") or [])
    return not tasks or "*" in tasks or (task_name is not None and task_name in tasks)
