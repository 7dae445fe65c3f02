"""Property-based fuzzing of the websocket message parsers (security issue, item 4): fed
arbitrary JSON-like values, text and bytes, the robot parsers (core/worker/robot_messages.py)
and the /telemetry parser raise ProtocolError (the error reply) and nothing else, so no
input can kill a connection's handler. A few hundred examples each in the default suite;
``-m slow`` runs 20,000.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.worker.message_guard import ProtocolError, load_message
from core.worker.robot_messages import (RobotSpec, decode_image, parse_observation, parse_register,
                                        request_id_of)
from core.worker.telemetry import parse_viewer_message

QUICK, LONG = 100, 20_000
SPEC = RobotSpec("arm-1", 4, 4, 2, np.full(2, -1.0), np.full(2, 1.0), proprio_dim=2, max_steps=20)

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats() | st.text(max_size=30) | st.sampled_from(["\ud800", "a\udfffb", "<img src=x>", "\x00"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
keys_register = st.sampled_from(["name", "protocol", "camera", "action", "proprio_dim", "max_steps", "tasks",
                                 "token", "type"])
keys_observation = st.sampled_from(["request_id", "image", "proprio", "instruction", "success", "terminated",
                                    "truncated", "reward", "info", "type"])


def _encoded(fmt: str, size: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(size * size * 3) % 251).astype(np.uint8).reshape(size, size, 3)).save(buf, fmt)
    return buf.getvalue()


PNG, JPEG = _encoded("PNG"), _encoded("JPEG")
# Valid files with a few bytes overwritten: the paths inside Pillow's decoders.
corrupted = st.builds(lambda base, pos, junk: base[:pos % len(base)] + junk + base[pos % len(base) + len(junk):],
                      st.sampled_from([PNG, JPEG]), st.integers(0, 10**6), st.binary(min_size=1, max_size=8))


def _register_base() -> dict:
    return {"type": "register", "token": "t", "protocol": 1, "name": "arm-1", "camera": {"height": 4, "width": 4},
            "action": {"dim": 2, "low": -1.0, "high": 1.0}, "proprio_dim": 2, "max_steps": 20, "tasks": []}


def _observation_base() -> dict:
    raw = base64.b64encode(np.zeros((4, 4, 3), np.uint8).tobytes()).decode()
    return {"type": "observation", "request_id": 3, "image": {"encoding": "raw", "data": raw}, "proprio": [0.0, 0.5],
            "instruction": "push", "success": None, "terminated": False, "truncated": False, "reward": 0.0,
            "info": {}}


def _only_protocol_errors(fn, *args):
    try:
        return fn(*args)
    except ProtocolError as e:
        assert e.code and isinstance(str(e), str)
        return None


def _deep_text(n: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    return (opener if opener == "[" else '{"a":') * n + closer * n


texts = (st.text(max_size=200) | json_values.map(json.dumps)
         | st.builds(_deep_text, st.integers(0, 3000), st.sampled_from(["[", "{"]))
         | st.text(alphabet='[]{}"\\:,0123456789eE-+.NaInfity ', max_size=300))
raw_messages = texts | st.binary(max_size=200)


def check_load(raw):
    msg = _only_protocol_errors(load_message, raw, 4096)
    assert msg is None or isinstance(msg, dict)


def check_viewer(raw):
    msg = _only_protocol_errors(parse_viewer_message, raw)
    assert msg is None or msg["type"] in ("subscribe", "token")


def check_register_any(msg):
    _only_protocol_errors(parse_register, msg)


def check_register_field(key, value):
    spec = _only_protocol_errors(parse_register, {**_register_base(), key: value})
    assert spec is None or isinstance(spec, RobotSpec)


def check_register_nested(where, key, value):
    base = _register_base()
    base[where] = {**base[where], key: value}
    _only_protocol_errors(parse_register, base)


def check_observation_any(msg):
    _only_protocol_errors(parse_observation, msg, SPEC)


def check_observation_field(key, value):
    out = _only_protocol_errors(parse_observation, {**_observation_base(), key: value}, SPEC)
    if out is not None:  # accepted: then it is what the learner expects
        obs, extra = out
        assert obs["proprio"].dtype == np.float32 and np.all(np.isfinite(obs["proprio"]))
        assert isinstance(extra["reward"], float) and np.isfinite(extra["reward"])
        assert isinstance(extra["terminated"], bool) and isinstance(extra["truncated"], bool)
        json.dumps(extra["info"], allow_nan=False, ensure_ascii=False).encode("utf-8")  # storable as-is
        obs["instruction"].encode("utf-8")


def check_request_id(value):
    rid = _only_protocol_errors(request_id_of, {"request_id": value})
    assert rid is None or (type(rid) is int and rid >= 0)


def check_image(encoding, data):
    img = {"encoding": encoding, "data": base64.b64encode(data).decode() if isinstance(data, bytes) else data}
    arr = _only_protocol_errors(decode_image, img, SPEC)
    assert arr is None or arr.shape == (4, 4, 3)


CASES = {
    "load_message": (check_load, raw_messages),
    "viewer": (check_viewer, raw_messages),
    "register_any": (check_register_any, json_values),
    "register_field": (check_register_field, keys_register, json_values),
    "register_nested": (check_register_nested, st.sampled_from(["camera", "action"]),
                        st.sampled_from(["height", "width", "dim", "low", "high"]), json_values),
    "observation_any": (check_observation_any, json_values),
    "observation_field": (check_observation_field, keys_observation, json_values),
    "request_id": (check_request_id, json_values),
    "image": (check_image, st.sampled_from(["png", "jpeg", "jpg", "raw", "gif"]) | json_values,
              st.binary(max_size=300) | corrupted | st.sampled_from([PNG, JPEG]) | json_values),
}


def _fuzz(check, *strategies, n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(given(*strategies)(check))


@pytest.mark.parametrize("case", sorted(CASES))
def test_parsers_raise_only_protocol_errors(case):
    check, *strategies = CASES[case]
    _fuzz(check, *strategies, n=QUICK)()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_parsers_raise_only_protocol_errors_long(case):
    check, *strategies = CASES[case]
    _fuzz(check, *strategies, n=LONG)()


def test_a_png_claiming_50000x50000_pixels_is_refused_before_decoding():
    """A decompression bomb's header: refused from the header, in milliseconds."""
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = PNG[:8] + chunk + PNG[8 + len(chunk):]
    with pytest.raises(ProtocolError) as e:
        decode_image({"encoding": "png", "data": base64.b64encode(bomb).decode()}, SPEC)
    assert e.value.code == "bad_shape" and "observation.image" in str(e.value)
    assert decode_image({"encoding": "png", "data": base64.b64encode(PNG).decode()}, SPEC).shape == (4, 4, 3)
